"""The manifest equals the commit records after a kill at each point of the commit protocol."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.catalog.views import connect, query
from pipeline.store.commit import CommitLog
from pipeline.store.manifest import Manifest, records_to_rows

WRITE = """
import sys
import pipeline.store.manifest as manifest
manifest.MERGE_AT = 2  # merge often, so a kill can land mid-merge
from pipeline.kit.catalog import write_output
write_output(sys.argv[1], sys.argv[2], waves=4, videos_per_wave=2, clips_per_video=3, seed=int(sys.argv[3]))
"""


def write(out: Path, run_id: str, seed: int, crash: str | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    env.pop("VIDPREP_CRASH_AT", None)
    if crash:
        env["VIDPREP_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-c", WRITE, str(out), run_id, str(seed)], env=env).returncode


def assert_manifest_equals_records(out: Path):
    waves, _ = Manifest(out).load()
    truth, _ = records_to_rows(sorted(CommitLog(out).records(), key=lambda r: r["wave_id"]))
    assert waves.to_pylist() == truth.to_pylist()
    files_only, _ = Manifest(out).load(["files", "replaces"])  # what a query that names no `commits` reads
    assert files_only.to_pylist() == truth.select(["wave_id", "files", "replaces"]).to_pylist()
    clips = sum(r["counts"].get("clips", 0) for r in CommitLog(out).records())
    assert connect(out).sql("SELECT count(*) FROM clips").fetchall() == [(clips,)]
    assert connect(out).sql("SELECT count(*) FROM commits").fetchall() == [(len(truth),)]
    assert query(out, "SELECT count(*) FROM clips").to_pylist() == [{"count_star()": clips}]


@pytest.mark.parametrize("crash", ["published:2", "committed:2", "listed:3", "merged:1"])
def test_manifest_stays_equal_to_records_through_kills(tmp_path, crash):
    assert write(tmp_path, "20260101T000000-aaaaaa", 1, crash) == -9  # SIGKILL at the point
    assert_manifest_equals_records(tmp_path)  # readers see the records, whatever the manifest lacks
    assert write(tmp_path, "20260101T000100-bbbbbb", 2) == 0  # the next writer goes on from there
    assert_manifest_equals_records(tmp_path)
    assert len(Manifest(tmp_path).segment_paths()) <= 3


def test_a_lost_manifest_is_rebuilt_from_records_and_a_given_up_wave_disappears(tmp_path):
    assert write(tmp_path, "20260101T000000-aaaaaa", 1) == 0
    for segment in Manifest(tmp_path).segment_paths():
        segment.unlink()
    assert_manifest_equals_records(tmp_path)
    record = sorted((tmp_path / "_commits").glob("*.json"))[0]
    record.rename(tmp_path / record.name)  # a person gives the wave up
    assert_manifest_equals_records(tmp_path)
    assert connect(tmp_path).sql("SELECT count(*) FROM clips").fetchall() == [(18,)]
