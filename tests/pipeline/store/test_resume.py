"""Exactly-once: a run killed at any point, then rerun, equals an unbroken run."""
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.catalog.views import connect
from pipeline.store.commit import JOURNAL, STAGING, CommitLog, atomic_write_json
from pipeline.run.runner import run



def catalog_rows(out) -> tuple[list, list]:
    con = connect(out)
    clips = con.execute("SELECT clip_id, video_id, start_frame, end_frame, status, reason FROM clips ORDER BY 1").fetchall()
    videos = con.execute("SELECT source_uri, video_id, status, cuts FROM videos ORDER BY 1").fetchall()
    return clips, videos


def assert_no_orphans(out: Path):
    listed = set(CommitLog(out).files())
    on_disk = {str(p) for p in (out / "catalog").rglob("*") if p.is_file()}
    assert on_disk == listed
    assert not any((out / "_staging").rglob("*.parquet")) if (out / "_staging").exists() else True


def run_cli(config, corpus_dir, out, crash=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("VIDPREP_CRASH_AT", None)
    if crash:
        env["VIDPREP_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "-c", str(config),
                           "-i", corpus_dir, "-o", str(out), "--runner", "sequential",
                           "--set", "run.wave_size=1", "--set", "run.writer_rows=1"],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def unbroken(corpus_dir, demo_yaml, tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    assert run_cli(demo_yaml(), corpus_dir, out).returncode == 0
    return catalog_rows(out)


@pytest.mark.parametrize("crash", ["manifest:2", "published:1", "published:2", "committed:2"])
def test_killed_run_then_rerun_equals_unbroken_run(corpus_dir, demo_yaml, tmp_path, unbroken, crash):
    out = tmp_path / "out"
    killed = run_cli(demo_yaml(), corpus_dir, out, crash)
    assert killed.returncode == -9, killed.stderr[-2000:]
    committed_before = len(list(CommitLog(out).records()))
    assert committed_before < 3  # the kill really interrupted the run
    rerun = run_cli(demo_yaml(), corpus_dir, out)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"videos skipped (already committed)  {committed_before}" in rerun.stdout
    clips, videos = catalog_rows(out)
    assert (clips, videos) == unbroken
    assert len({c[0] for c in clips}) == len(clips)  # no duplicate clip ids
    assert_no_orphans(out)


@pytest.mark.parametrize("crash", ["published:1"])  # (a record without its manifest segment: test_object_store)
def test_killed_run_on_an_object_store_then_rerun_equals_unbroken_run(corpus_dir, demo_yaml, s3_bucket, unbroken,
                                                                        crash):
    """The same kill-and-rerun on an s3:// output (moto's server on 127.0.0.1): there files are written
    under their final names and a wave is visible only through its record (one object)."""
    out = s3_bucket("out")
    killed = run_cli(demo_yaml(), corpus_dir, out, crash)
    assert killed.returncode == -9, killed.stderr[-2000:]
    committed_before = len(list(CommitLog(out).records()))
    assert committed_before < 3
    if crash.startswith("published"):  # the dead wave's files are there, unrecorded, and invisible
        assert len(s3_bucket.keys("out/catalog/")) > sum(len(r["files"]) for r in CommitLog(out).records())
    rerun = run_cli(demo_yaml(), corpus_dir, out)  # the dead run's lease: same host, process gone → taken over
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"videos skipped (already committed)  {committed_before}" in rerun.stdout
    assert catalog_rows(out) == unbroken
    listed = {f"out/{f['path']}" for r in CommitLog(out).records() for f in r["files"]}
    assert set(s3_bucket.keys("out/catalog/")) == {k for k in listed if k.startswith("out/catalog/")}
    assert not s3_bucket.keys("out/_staging/")


def test_rerun_of_finished_output_does_nothing(corpus_dir, demo_config, tmp_path):
    first = run(demo_config, corpus_dir, tmp_path, progress=False)
    second = run(demo_config, corpus_dir, tmp_path, progress=False)
    assert (first.processed, second.processed, second.skipped) == (3, 0, 3)
    assert len(list(CommitLog(tmp_path).records())) == first.waves


def test_orphan_files_are_invisible_and_removed(corpus_dir, demo_config, tmp_path):
    run(demo_config, corpus_dir, tmp_path, progress=False)
    before = catalog_rows(tmp_path)
    some_file = CommitLog(tmp_path).files("clips")[0]
    orphan = Path(tmp_path, "catalog", "clips", "crashed-wave-part-0.parquet")
    pq.write_table(pq.read_table(some_file), orphan)  # published by a wave that never got its record:
    Path(tmp_path, STAGING, "crashed-wave").mkdir(parents=True)  # ... as its publish journal says
    atomic_write_json(Path(tmp_path, STAGING, "crashed-wave", JOURNAL), {"files": ["catalog/clips/" + orphan.name]})
    assert catalog_rows(tmp_path) == before  # the views read only recorded files
    result = run(demo_config, corpus_dir, tmp_path, progress=False)
    assert result.recovered["orphans"] == 1 and not orphan.exists()


def test_changed_stage_settings_are_refused(corpus_dir, demo_config, demo_yaml, tmp_path):
    from pipeline.config import load_config
    from pipeline.typed import ConfigError

    run(demo_config, corpus_dir, tmp_path, progress=False)
    other = load_config(demo_yaml(), ["run.runner=sequential", "stages.split.max_clip_s=3"])
    with pytest.raises(ConfigError, match="other stage settings"):
        run(other, corpus_dir, tmp_path, progress=False)
    run(other, corpus_dir, tmp_path, progress=False, allow_config_change=True)  # explicit opt-in works
