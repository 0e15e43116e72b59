"""The near-duplicate pass after each run decides only new clips, and decides them as a full pass would."""
import shutil

import numpy as np
import pytest

from pipeline.catalog.dedup import brute_force
from pipeline.catalog.refilter import refilter
from pipeline.catalog.views import connect
from pipeline.kit.catalog import KEEP, write_output
from pipeline.store.status import StatusLog

DISTANCE = 0.05


def expected_reasons(out):
    """The exact pass: every kept clip compared with every earlier kept clip, in decision order."""
    rows = connect(out).sql("""SELECT clip_id, clip_embedding FROM clips_written WHERE clip_frame_consistency >= 0.5
                               ORDER BY wave_id, source_uri, start_frame, clip_id""").fetchall()
    of = brute_force(np.array([r[1] for r in rows], np.float16), DISTANCE)
    return {r[0]: (f"near_duplicate_of:{rows[of[i]][0]}" if of[i] >= 0 else None) for i, r in enumerate(rows)}


@pytest.mark.parametrize("exact_below, chunks", [(0, None), (10_000, None), (0, (37, 5))],
                         ids=["lsh", "exact", "lsh-small-chunks"])
def test_runs_appended_to_one_output_decide_like_the_exact_pass(tmp_path, monkeypatch, exact_below, chunks):
    if chunks:  # candidate pairs streamed 37 at a time, kept embeddings fetched 5 at a time
        from pipeline.catalog import nearindex

        monkeypatch.setattr(nearindex, "PAIR_CHUNK", chunks[0])
        monkeypatch.setattr(nearindex, "FETCH_ORDS", chunks[1])
    pool = None
    for run in range(3):  # each run plants copies of its own and of earlier runs' clips
        written = write_output(tmp_path, f"2026010{run + 1}T000000-abcdef", waves=3, videos_per_wave=40,
                               clips_per_video=3, seed=run, duplicates=0.25, pool=pool)
        pool = np.concatenate(([pool] if pool is not None else []) + written.vectors)
        outcome = refilter(tmp_path, KEEP, DISTANCE, 8, made_by="run", incremental=True, batch_clips=200,
                           exact_below=exact_below)
        assert outcome.incremental == (run > 0) and outcome.version == run + 1
        assert sum(outcome.totals.values()) == 360  # only this run's clips were decided
    expected = expected_reasons(tmp_path)
    found = dict(connect(tmp_path).sql("SELECT clip_id, reason FROM clips WHERE clip_frame_consistency >= 0.5")
                 .fetchall())
    assert found == expected
    assert 60 < sum(r is not None for r in expected.values()) < 200  # the planted copies, caught
    full = refilter(tmp_path, KEEP, DISTANCE, 8, dry_run=True)  # everything again, from scratch
    assert full.changes == [] and full.duplicates == sum(r is not None for r in expected.values())


def test_a_rerun_with_nothing_new_opens_no_catalog_file(tmp_path):
    write_output(tmp_path, "20260101T000000-abcdef", waves=2, videos_per_wave=10, clips_per_video=2, duplicates=0.3)
    first = refilter(tmp_path, KEEP, DISTANCE, 8, made_by="run", incremental=True)
    assert first.version == 1 and first.duplicates > 0
    # Every data file the pass could read is moved away: opening any of them would fail.
    for folder in ("catalog", "status"):
        shutil.move(tmp_path / folder, tmp_path / f"away-{folder}")
    again = refilter(tmp_path, KEEP, DISTANCE, 8, made_by="run", incremental=True)
    assert again.version is None and again.incremental and again.totals == {}
    for folder in ("catalog", "status"):
        shutil.move(tmp_path / f"away-{folder}", tmp_path / folder)
    assert len(StatusLog(tmp_path).records()) == 1
    write_output(tmp_path, "20260102T000000-abcdef", waves=1, videos_per_wave=10, clips_per_video=2, seed=1)
    more = refilter(tmp_path, KEEP, DISTANCE, 8, made_by="run", incremental=True)
    assert more.incremental and more.version == 2 and sum(more.totals.values()) == 20
