"""The near-duplicate pass with its band tables in Ray actors decides as the DuckDB join and the exact pass."""
import numpy as np
import pytest

from pipeline.catalog.bandjoin import BandJoin
from pipeline.catalog.dedup import brute_force
from pipeline.catalog.nearindex import NearIndex
from pipeline.catalog.refilter import refilter
from pipeline.catalog.views import connect
from pipeline.kit.catalog import KEEP, write_output
from pipeline.store.status import StatusLog

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
BANDS, DISTANCE = 8, 0.05


@pytest.fixture(scope="module")
def ray_up():
    """The running Ray instance if a test module left one, else an embedded one for this module."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def watched(monkeypatch):
    """Which index files the driver lists for DuckDB ('k': a band-table join), and what the actors held."""
    seen = {"listed": [], "held": []}
    listing, close = NearIndex._listing, BandJoin.close

    def counted_listing(self, kind):
        seen["listed"].append(kind)
        return listing(self, kind)

    def counted_close(self):
        seen["held"].append(self.size())
        close(self)

    monkeypatch.setattr(NearIndex, "_listing", counted_listing)
    monkeypatch.setattr(BandJoin, "close", counted_close)
    return seen


def append_run(out, run, pool):
    written = write_output(out, f"2026010{run + 1}T000000-abcdef", waves=3, videos_per_wave=40, clips_per_video=3,
                           seed=run, duplicates=0.25, pool=pool)
    return np.concatenate(([pool] if pool is not None else []) + written.vectors)


def expected_reasons(out):
    """The exact pass: every kept clip compared with every earlier kept clip, in decision order."""
    rows = connect(out).sql("""SELECT clip_id, clip_embedding FROM clips_written WHERE clip_frame_consistency >= 0.5
                               ORDER BY wave_id, source_uri, start_frame, clip_id""").fetchall()
    of = brute_force(np.array([r[1] for r in rows], np.float16), DISTANCE)
    return {r[0]: (f"near_duplicate_of:{rows[of[i]][0]}" if of[i] >= 0 else None) for i, r in enumerate(rows)}


def reasons(out):
    return dict(connect(out).sql("SELECT clip_id, reason FROM clips WHERE clip_frame_consistency >= 0.5").fetchall())


def test_actors_decide_as_the_duckdb_join_and_the_exact_pass(ray_up, watched, tmp_path):
    """Three runs appended to one output, each decided in 2 batches; the first batch of the first run in
    exact mode (fewer than exact_below kept clips), every later one in LSH mode."""
    outs = {workers: tmp_path / f"workers-{workers}" for workers in (0, 2)}
    pools = {workers: None for workers in outs}
    for run in range(3):
        for workers, out in outs.items():
            pools[workers] = append_run(out, run, pools[workers])
            watched["listed"].clear()
            outcome = refilter(out, KEEP, DISTANCE, BANDS, made_by="run", incremental=True, batch_clips=200,
                               exact_below=150, band_workers=workers)
            assert outcome.incremental == (run > 0) and sum(outcome.totals.values()) == 360
            assert ("k" in watched["listed"]) == (workers == 0)  # actors: the driver never reads a key file
    kept = StatusLog(outs[2]).latest()["index"]["kept"]
    assert watched["held"][-1] == kept * BANDS  # the last pass's actors held every kept clip's bands
    expected = expected_reasons(outs[0])
    assert reasons(outs[2]) == reasons(outs[0]) == expected
    assert 60 < sum(r is not None for r in expected.values()) < 200  # the planted copies, caught
    watched["listed"].clear()
    full = refilter(outs[2], KEEP, DISTANCE, BANDS, dry_run=True, batch_clips=200, exact_below=0,
                    band_workers=2)  # every wave again
    assert full.changes == [] and "k" not in watched["listed"]


def test_a_lost_actor_fails_the_pass_and_publishes_nothing(ray_up, monkeypatch, tmp_path):
    import ray

    append_run(tmp_path, 0, None)
    first = refilter(tmp_path, KEEP, DISTANCE, BANDS, made_by="run", incremental=True)
    append_run(tmp_path, 1, None)
    add = BandJoin.add

    def add_then_lose_an_actor(self, keys, ords):
        add(self, keys, ords)
        ray.kill(self.actors[0])

    monkeypatch.setattr(BandJoin, "add", add_then_lose_an_actor)
    with pytest.raises(RuntimeError, match="band-table actor was lost.*nothing was published"):
        refilter(tmp_path, KEEP, DISTANCE, BANDS, made_by="run", incremental=True, batch_clips=100,
                 exact_below=0, band_workers=2)
    assert [r["version"] for r in StatusLog(tmp_path).records()] == [first.version]
    monkeypatch.setattr(BandJoin, "add", add)
    again = refilter(tmp_path, KEEP, DISTANCE, BANDS, made_by="run", incremental=True, batch_clips=100,
                     exact_below=0, band_workers=2)
    assert again.incremental and sum(again.totals.values()) == 360
    assert reasons(tmp_path) == expected_reasons(tmp_path)


def test_vidprep_refilter_takes_the_band_workers(ray_up, watched, tmp_path, capsys):
    from pipeline.cli import EXIT_ERROR, main

    append_run(tmp_path, 0, None)
    assert main(["refilter", str(tmp_path), "--band-workers", "-1"]) == EXIT_ERROR
    assert "--band-workers: must be 0 or more (got -1)" in capsys.readouterr().err
    assert main(["refilter", str(tmp_path), "--keep", KEEP, "--near-duplicate-distance", str(DISTANCE),
                 "--band-workers", "2"]) == 0
    assert "near-duplicates  cosine distance <= 0.05" in capsys.readouterr().out
    assert watched["held"] and watched["held"][-1] == StatusLog(tmp_path).latest()["index"]["kept"] * 32
    assert reasons(tmp_path) == expected_reasons(tmp_path)


def test_actors_read_the_index_of_an_output_on_a_store(ray_up, watched, tmp_path, s3_bucket):
    """The second run's pass loads the first run's band tables from the store (its published index)."""
    decided = {}
    for where, workers in ((tmp_path, 0), (s3_bucket("out"), 2)):
        pool = None
        for run in range(2):
            written = write_output(where, f"2026010{run + 1}T000000-abcdef", waves=2, videos_per_wave=8,
                                   clips_per_video=2, seed=run, duplicates=0.6, pool=pool)
            pool = written.vectors[0]
            refilter(where, KEEP, DISTANCE, BANDS, made_by="run", incremental=True, batch_clips=16, exact_below=0,
                     band_workers=workers)
        decided[workers] = connect(where).sql("SELECT clip_id, status, reason FROM clips ORDER BY 1").fetchall()
    assert decided[2] == decided[0]
    assert any(reason and reason.startswith("near_duplicate_of:") for _, _, reason in decided[2])
    assert watched["held"][-1] == StatusLog(s3_bucket("out")).latest()["index"]["kept"] * BANDS
