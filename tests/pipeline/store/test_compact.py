"""`vidprep compact`: every row and query result kept; a kill leaves the catalog as before or as after."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.catalog.refilter import refilter
from pipeline.catalog.views import connect
from pipeline.kit.catalog import KEEP, write_output
from pipeline.store.commit import CommitLog
from pipeline.store.compact import compact

QUERIES = ["SELECT * EXCLUDE (clip_embedding), clip_embedding::FLOAT[] FROM clips ORDER BY clip_id, source_uri",
           "SELECT * FROM videos ORDER BY source_uri",
           "SELECT status, reason IS NULL, count(*), sum(clip_aesthetic) FROM clips GROUP BY ALL ORDER BY ALL",
           "SELECT sum(videos), sum(clips) FROM commits"]


def catalog(out):
    con = connect(out)
    return [con.sql(q).fetchall() for q in QUERIES]


@pytest.fixture
def made(tmp_path):
    write_output(tmp_path, "20260101T000000-abcdef", waves=6, videos_per_wave=5, clips_per_video=3, duplicates=0.2)
    refilter(tmp_path, KEEP, 0.05, 8, made_by="run", incremental=True)
    return tmp_path, catalog(tmp_path)


def test_compaction_keeps_every_row_and_query_result(made):
    out, before = made
    done = compact(out, target_rows=40)
    assert done.replaced == {"videos": 6, "clips": 6} and done.written == {"videos": 1, "clips": 2}
    assert catalog(out) == before
    assert len(CommitLog(out).files("clips")) == 2
    assert compact(out, target_rows=40).wave_id is None  # exactly once: nothing left to merge
    old = [p for p in (out / "catalog/clips").glob("*.parquet") if "compact" not in p.name]
    assert not old  # the next writer deleted the replaced files
    write_output(out, "20260102T000000-abcdef", waves=1, videos_per_wave=5, clips_per_video=3, seed=3)
    assert refilter(out, KEEP, 0.05, 8, made_by="run", incremental=True).incremental  # compaction is not new work
    assert connect(out).sql("SELECT count(*) FROM clips").fetchall() == [(105,)]


KILL = """
import sys
from pipeline.store.compact import compact
compact(sys.argv[1], target_rows=40)
"""


@pytest.mark.parametrize("crash,after", [("published:1", False), ("committed:1", True)])
def test_a_kill_during_compaction_leaves_before_or_after(made, crash, after):
    out, before = made
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3]), "VIDPREP_CRASH_AT": crash}
    assert subprocess.run([sys.executable, "-c", KILL, str(out)], env=env).returncode == -9
    assert catalog(out) == before
    assert len(CommitLog(out).files("clips")) == (2 if after else 6)
    compact(out, target_rows=40)  # the next writer cleans up; compacting again is harmless
    assert catalog(out) == before and len(CommitLog(out).files("clips")) == 2
