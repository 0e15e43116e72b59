"""`vidprep query` and pipeline.catalog.views.connect over a finished run."""
import csv
import io
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipeline.catalog.views import connect, query
from pipeline.run.runner import run
from schemas.catalog import CLIPS, VIDEOS


@pytest.fixture(scope="module")
def out(corpus_dir, demo_yaml, tmp_path_factory):
    from pipeline.config import load_config

    config = load_config(demo_yaml(), ["run.runner=sequential"])
    folder = tmp_path_factory.mktemp("out")
    run(config, corpus_dir, folder, progress=False)
    return folder


def cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "query", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_views_have_the_schemas_and_the_rows(out):
    con = connect(out)
    assert [d[0] for d in con.execute("SELECT * FROM clips LIMIT 0").description] == CLIPS.names
    assert [d[0] for d in con.execute("SELECT * FROM videos LIMIT 0").description] == VIDEOS.names
    assert con.execute("SELECT count(*) FROM videos").fetchone()[0] == 3
    per_video = con.execute("""SELECT v.num_clips, count(c.clip_id) FROM videos v JOIN clips c USING (video_id)
                               GROUP BY v.video_id, v.num_clips""").fetchall()
    assert all(a == b for a, b in per_video)
    assert con.execute("SELECT sum(videos), sum(clips) FROM commits").fetchone() == (
        3, con.execute("SELECT count(*) FROM clips").fetchone()[0])


def test_formats(out, tmp_path):
    sql = "SELECT clip_id, status FROM clips ORDER BY clip_id"
    expected = [(r["clip_id"], r["status"]) for r in query(out, sql).to_pylist()]
    table = cli(out, sql)
    assert table.returncode == 0 and f"({len(expected)} rows)" in table.stdout
    assert expected[0][0] in table.stdout
    rows = list(csv.DictReader(io.StringIO(cli(out, sql, "--format", "csv").stdout)))
    assert [(r["clip_id"], r["status"]) for r in rows] == expected
    assert [(r["clip_id"], r["status"]) for r in json.loads(cli(out, sql, "-f", "json").stdout)] == expected
    target = tmp_path / "r.parquet"
    assert cli(out, sql, "-f", "parquet", "--to", target).returncode == 0
    assert [tuple(r.values()) for r in pq.read_table(target).to_pylist()] == expected


@pytest.mark.parametrize("sql, fragment", [
    ("COPY (SELECT 1) TO 'x.csv'", "COPY statements are refused"),
    ("CREATE TABLE t AS SELECT 1", "CREATE statements are refused"),
    ("INSERT INTO clips SELECT * FROM clips", "INSERT statements are refused"),
    ("ATTACH 'other.db'", "ATTACH statements are refused"),
    ("SELECT 1; SELECT 2", "exactly one SQL statement"),
    ("SELECT * FROM read_csv('/etc/passwd')", "Permission"),
])
def test_query_is_read_only(out, sql, fragment):
    proc = cli(out, sql)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr


def test_not_an_output_is_a_clear_error(tmp_path):
    proc = cli(tmp_path, "SELECT 1")
    assert proc.returncode == 2 and "is not a vidprep output" in proc.stderr


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM clips",
    'SELECT count(*) FROM "Clips" c JOIN Videos v USING (video_id)',
    "WITH kept AS (SELECT * FROM clips WHERE status = 'accepted') SELECT count(*) FROM kept",
    "SELECT count(*), count(s.clip_id) FROM clips_written w LEFT JOIN clip_status s USING (clip_id)",
    "SELECT sum(clips) FROM main.commits",
    "SELECT (SELECT count(*) FROM videos) + (SELECT count(*) FROM clips)",
    "SELECT count(*) FROM query_table('clips')",
])
def test_a_query_makes_only_the_views_it_names_and_answers_as_the_full_catalog(out, sql):
    expected = connect(out).execute(sql).fetchall()
    assert expected[0][0] and [tuple(r.values()) for r in query(out, sql).to_pylist()] == expected


def test_a_query_may_read_only_the_files_of_the_views_it_names(out):
    videos_file = next((out / "catalog" / "videos").glob("*.parquet"))
    assert query(out, f"SELECT count(*) FROM videos, read_parquet('{videos_file}')").num_rows == 1
    with pytest.raises(PermissionError):  # names only clips: the videos files are not readable
        query(out, f"SELECT count(*) FROM clips, read_parquet('{videos_file}')")


def test_catalog_connections_draw_no_progress_bar(out):
    """DuckDB draws its bar on the console (or into the run log) for any statement past 2 s."""
    from pipeline.catalog.nearindex import NearIndex

    connections = [connect(out), NearIndex.new(out, bands=4, expected=10)._duckdb()]
    assert [c.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0] for c in connections] == [False] * 2
    assert query(out, "SELECT current_setting('enable_progress_bar') AS bar").column("bar").to_pylist() == [False]
