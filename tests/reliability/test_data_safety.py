"""Issue 12's data-safety items: vidprep deletes only what it wrote, `query` can't write, duplicate bytes
keep every row, config values that would crash mid-run are refused first, and errors name the file/field."""
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.catalog.views import connect, query
from pipeline.config import load_config
from pipeline.run.runner import run
from pipeline.store.commit import STAGING, CommitLog
from pipeline.typed import ConfigError


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(proc, command="run") -> str:
    """The CLI failed with one `vidprep <command>: error: …` line, no traceback; returns that line."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith(f"vidprep {command}: error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --- item 1: cleanup deletes only what vidprep wrote; no output over the input or a stranger's folder ---

@pytest.fixture
def sources(corpus, tmp_path) -> Path:
    """An input folder holding a video, and a user's own `catalog/` and `shards/` folders of files."""
    folder = tmp_path / "videos"
    (folder / "catalog").mkdir(parents=True)
    (folder / "shards" / "bucket").mkdir(parents=True)
    shutil.copy(corpus["three_scenes.mp4"][0], folder / "a.mp4")
    shutil.copy(corpus["short_scene.mp4"][0], folder / "catalog" / "kept.mp4")
    (folder / "shards" / "bucket" / "dataset.tar").write_bytes(b"a user's dataset")
    return folder


@pytest.mark.parametrize("where, message", [
    ("input", "is the input"),
    ("parent", "contains the input"),
    ("inside", "is inside the input"),
])
def test_output_overlapping_the_input_is_refused_and_nothing_deleted(demo_yaml, sources, where, message):
    out = {"input": sources, "parent": sources.parent, "inside": sources / "catalog"}[where]
    before = tree(sources.parent)
    line = one_error_line(cli("run", "-c", demo_yaml(), "-i", sources, "-o", out, "--runner", "sequential"))
    assert f"output {out} {message}" in line
    assert tree(sources.parent) == before  # not a file deleted, added or changed


def test_a_folder_vidprep_did_not_make_is_refused(corpus_dir, demo_yaml, sources, tmp_path):
    before = tree(sources)
    line = one_error_line(cli("run", "-c", demo_yaml(), "-i", corpus_dir, "-o", sources, "--runner", "sequential"))
    assert f"output {sources} is a folder with other files in it and no _vidprep.json" in line
    assert tree(sources) == before


def test_recovery_deletes_only_files_its_journal_names(corpus_dir, demo_config, tmp_path):
    out = tmp_path / "out"
    run(demo_config, corpus_dir, out, progress=False)
    assert (out / "_vidprep.json").is_file()
    log = CommitLog(out)
    committed = tree(out / "catalog")
    # A user's files under catalog/ and shards/, one named like vidprep's own files.
    (out / "catalog" / "notes.txt").write_text("mine")
    (out / "shards").mkdir(exist_ok=True)
    (out / "shards" / "w1-part-0123abcd.parquet").write_bytes(b"mine too")
    # A wave that died between renaming its files into place and writing its record (as commit() leaves it).
    stage = out / STAGING / "dead-wave" / "catalog" / "clips"
    stage.mkdir(parents=True)
    shutil.copy(log.files("clips")[0], stage / "part-00000000000000ff.parquet")
    info = {"path": "catalog/clips/part-00000000000000ff.parquet", "table": "clips", "rows": 1, "bytes": 1,
            "blake2b": ""}
    with pytest.MonkeyPatch.context() as patch:  # stop where a SIGKILL at `published` would
        patch.setattr("pipeline.store.commit.crash_point", lambda point: (_ for _ in ()).throw(SystemExit(point)))
        with pytest.raises(SystemExit):
            log.commit("dead-wave", "r", ["x"], [info], "f")
    orphan = out / "catalog" / "clips" / "dead-wave-part-00000000000000ff.parquet"
    assert orphan.exists()
    result = run(demo_config, corpus_dir, out, progress=False)
    assert result.recovered["orphans"] == 1 and not orphan.exists()
    assert (out / "catalog" / "notes.txt").read_text() == "mine"
    assert (out / "shards" / "w1-part-0123abcd.parquet").read_bytes() == b"mine too"
    assert {k: v for k, v in tree(out / "catalog").items() if k != "notes.txt"} == committed


# --- item 2: `vidprep query` cannot write, read other files, or change settings ---

@pytest.fixture(scope="module")
def catalog(corpus_dir, demo_yaml, tmp_path_factory):
    out = tmp_path_factory.mktemp("catalog")
    run(load_config(demo_yaml(), ["run.runner=sequential"]), corpus_dir, out, progress=False)
    return out


def records(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "_commits").iterdir())}


@pytest.mark.parametrize("sql, message", [
    ("EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{record}' (FORMAT json)", "EXPLAIN is allowed only of one SELECT"),
    ("EXPLAIN COPY (SELECT 1 AS x) TO '{record}'", "EXPLAIN is allowed only of one SELECT"),
    ("EXPLAIN (ANALYZE) COPY (SELECT 1 AS x) TO '{record}'", "EXPLAIN is allowed only as EXPLAIN [ANALYZE] SELECT"),
    ("COPY (SELECT 1 AS x) TO '{record}' (FORMAT json)", "COPY statements are refused"),
    ("COPY clips FROM '{record}'", "COPY statements are refused"),
    ("ATTACH '{out}/x.db' AS x", "ATTACH statements are refused"),
    ("CREATE TABLE t AS SELECT 1", "CREATE statements are refused"),
    ("CREATE OR REPLACE VIEW clips AS SELECT 1", "CREATE statements are refused"),
    ("INSTALL httpfs", "LOAD statements are refused"),
    ("LOAD httpfs", "LOAD statements are refused"),
    ("SET enable_external_access = true", "SET statements are refused"),
    ("PRAGMA enable_profiling", "PRAGMA statements are refused"),
    ("CALL pragma_version()", "CALL statements are refused"),
    ("SELECT * FROM read_csv('/etc/passwd')", "may only read the catalog's files"),
    ("SELECT * FROM read_text('{record}')", "may only read the catalog's files"),
    ("EXPLAIN ANALYZE SELECT * FROM read_blob('/etc/passwd')", "may only read the catalog's files"),
    ("SELECT * FROM read_parquet('{out}/catalog/*/*.parquet')", "may only read the catalog's files"),
    ("SELECT 1; COPY (SELECT 1) TO '{record}'", "exactly one SQL statement"),
])
def test_query_refuses_what_is_not_a_read_of_the_catalog(catalog, sql, message):
    record = sorted((catalog / "_commits").iterdir())[0]
    before = records(catalog)
    with pytest.raises((PermissionError, ValueError)) as refused:
        query(catalog, sql.format(record=record, out=catalog))
    assert message in str(refused.value)
    assert records(catalog) == before and not (catalog / "x.db").exists()


def test_query_cli_refuses_explain_analyze_copy_over_a_commit_record(catalog):
    record = sorted((catalog / "_commits").iterdir())[0]
    before = records(catalog)
    line = one_error_line(cli("query", catalog, f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{record}' (FORMAT json)"),
                          "query")
    assert "the catalog is read-only: EXPLAIN is allowed only of one SELECT (this explains COPY)" in line
    assert records(catalog) == before


def test_query_still_reads_every_view(catalog):
    con = connect(catalog)
    for view in ("videos", "clips", "clips_written", "clip_status", "shards", "shard_index", "shard_stats",
                 "commits"):
        expected = con.execute(f"SELECT count(*) FROM {view}").fetchone()[0]
        assert query(catalog, f"SELECT count(*) AS n FROM {view}").column("n").to_pylist() == [expected]
    assert query(catalog, "SELECT count(*) AS n FROM clips c JOIN videos v USING (video_id)").num_rows == 1
    assert query(catalog, "EXPLAIN SELECT * FROM clips").num_rows >= 1
    assert query(catalog, "EXPLAIN ANALYZE SELECT count(*) FROM clips").num_rows >= 1
    assert query(catalog, "SUMMARIZE clips").num_rows > 0
    assert query(catalog, "DESCRIBE videos").num_rows > 0


# --- item 4: the same bytes under several names: one `videos` row per source, clip ids once ---

@pytest.fixture
def copies(corpus, tmp_path) -> Path:
    """Three copies of one good video and two of one broken file."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shutil.copy(corpus["three_scenes.mp4"][0], folder / name)
    for name in ("broken1.mp4", "broken2.mp4"):
        (folder / name).write_bytes(b"not a video" * 200)
    return folder


def assert_one_row_per_source(out: Path, names: list[str]):
    con = connect(out)
    videos = con.execute("SELECT source_uri, status, error FROM videos ORDER BY 1").fetchall()
    assert [Path(uri).name for uri, _, _ in videos] == sorted(names)  # every source exactly once
    by_name = {Path(uri).name: (status, error) for uri, status, error in videos}
    owners = [n for n, (status, _) in by_name.items() if status == "ok"]
    assert len(owners) == 1 and owners[0] in {"a.mp4", "b.mp4", "c.mp4"}  # one copy owns the bytes
    owner = str(out.parent / "in" / owners[0])
    for name in {"a.mp4", "b.mp4", "c.mp4", "d.mp4"} & set(names) - set(owners):
        assert by_name[name] == ("error", f"duplicate_of:{owner}")
    assert by_name["broken1.mp4"][0] == by_name["broken2.mp4"][0] == "error"
    assert by_name["broken1.mp4"][1].startswith("invalid_container")
    clip_ids = [r[0] for r in con.execute("SELECT clip_id FROM clips").fetchall()]
    assert clip_ids and len(clip_ids) == len(set(clip_ids))
    assert {Path(r[0]).name for r in con.execute("SELECT DISTINCT source_uri FROM clips").fetchall()} == set(owners)


@pytest.fixture
def ray_cluster():
    """An embedded Ray for one test, shut down after it (later tests start their own)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.mark.parametrize("runner", ["sequential", pytest.param("ray", marks=pytest.mark.ray)])
def test_copies_of_the_same_bytes_keep_every_row(demo_yaml, copies, tmp_path, runner, request):
    if runner == "ray":
        request.getfixturevalue("ray_cluster")
    out = tmp_path / "out"
    # One wave, one source per writer call: every copy lands in its own file of the same wave.
    settings = ["run.wave_size=16", "run.writer_rows=1"]
    run(load_config(demo_yaml(), settings + [f"run.runner={runner}"]), str(copies), out, progress=False)
    assert_one_row_per_source(out, ["a.mp4", "b.mp4", "c.mp4", "broken1.mp4", "broken2.mp4"])
    shutil.copy(copies / "a.mp4", copies / "d.mp4")  # a later copy, in a later run
    run(load_config(demo_yaml(), settings + ["run.runner=sequential"]), str(copies), out, progress=False)
    assert_one_row_per_source(out, ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "broken1.mp4", "broken2.mp4"])


# --- item 10: config values that used to crash a run midway ---

@pytest.mark.parametrize("setting", ["stages.split.max_clip_s=.inf", "stages.split.min_clip_s=.nan",
                                     "stages.filter.near_duplicate_distance=-.inf"])
def test_non_finite_numbers_are_refused_naming_the_field(setting):
    field = setting.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{field}: must be a finite number \(got -?(inf|nan)\)$"):
        load_config(None, [setting])


def test_non_finite_number_stops_the_cli_before_work(corpus_dir, tmp_path):
    line = one_error_line(cli("run", "-i", corpus_dir, "-o", tmp_path / "out", "--set", "stages.split.max_clip_s=.inf"))
    assert line == "vidprep run: error: stages.split.max_clip_s: must be a finite number (got inf)"
    assert not (tmp_path / "out").exists()


def test_keep_that_errors_on_a_row_is_a_coded_rejection(corpus_dir, demo_yaml, tmp_path):
    keep = "num_frames > 0 AND CAST(split_part(source_uri, '/', -1) AS INT) > 0"
    config = load_config(demo_yaml(("probe", "split", "filter")), ["run.runner=sequential", f"stages.filter.keep={keep}"])
    run(config, corpus_dir, tmp_path / "out", progress=False)
    con = connect(tmp_path / "out")
    assert con.execute("SELECT DISTINCT status FROM videos").fetchall() == [("ok",)]
    outcomes = dict(con.execute("SELECT reason, count(*) FROM clips GROUP BY 1").fetchall())
    error = "filter_error:CAST(split_part(source_uri, '/', -1) AS INTEGER) > 0"
    outcomes_errored = outcomes.pop(error)
    assert outcomes_errored > 0  # every clip split accepted: the condition raised on each of them
    assert set(outcomes) == {"too_short"}
    assert con.execute("SELECT DISTINCT status FROM clips WHERE reason = ?", [error]).fetchall() == [("rejected",)]
    from pipeline.catalog.refilter import refilter

    refilter(tmp_path / "out", keep="num_frames > 0")  # a corrected expression re-decides the errored clips
    after = dict(connect(tmp_path / "out").execute("SELECT coalesce(reason, status), count(*) FROM clips "
                                                   "GROUP BY 1").fetchall())
    assert after == {"accepted": outcomes_errored, "too_short": outcomes["too_short"]}


@pytest.mark.parametrize("keep, message", [
    ("CAST('abc' AS INT) > 0", "Conversion Error"),  # fails without any row: caught by the probe on a NULL row
    ("CASE WHEN num_frames > 1 THEN error('no') ELSE true END", "can't be guarded against errors on single rows"),
])
def test_keep_that_can_only_fail_is_refused_at_config_time(keep, message):
    with pytest.raises(ConfigError, match="^stages.filter.keep: ") as refused:
        load_config(None, [f"stages.filter.keep={keep}"])
    assert message in str(refused.value)


# --- item 13: errors name the file or the field ---

def test_damaged_commit_record_names_the_file_and_deletes_nothing(catalog, corpus_dir, demo_yaml, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(catalog, out)
    (out / "_commits" / "x.json").write_bytes(b"\x00garbage{")
    before = tree(out)
    for proc, command in [(cli("query", out, "SELECT count(*) FROM clips"), "query"),
                          (cli("run", "-c", demo_yaml(), "-i", corpus_dir, "-o", out, "--runner", "sequential"), "run")]:
        line = one_error_line(proc, command)
        assert f"{out}/_commits/x.json: damaged commit record (" in line
        assert "restore the file from a backup, or move it out of _commits/" in line
    def kept(files):  # the lock and run logs are the runs' own; every other byte must be as it was
        return {k: v for k, v in files.items() if k != ".lock" and not k.startswith("logs/")}

    assert kept(tree(out)) == kept(before) and set(before) <= set(tree(out)) | {".lock"}


@pytest.mark.parametrize("kind", ["png", "folder", "missing"])
def test_unusable_config_file_names_the_path(corpus_dir, tmp_path, kind):
    path = {"png": tmp_path / "config.png", "folder": tmp_path, "missing": tmp_path / "nope.yaml"}[kind]
    if kind == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    line = one_error_line(cli("run", "-c", path, "-i", corpus_dir, "-o", tmp_path / "out"))
    assert line.startswith(f"vidprep run: error: {path}: ")
    assert {"png": "not a text file", "folder": "is a folder", "missing": "no such config file"}[kind] in line


def test_python_tag_in_set_names_the_field(corpus_dir, tmp_path):
    line = one_error_line(cli("run", "-i", corpus_dir, "-o", tmp_path / "out",
                              "--set", "stages.split.max_clip_s=!!python/object/apply:os.getcwd []"))
    assert line.startswith("vidprep run: error: --set stages.split.max_clip_s: not a valid YAML value (")
    assert "python/object/apply:os.getcwd" in line
