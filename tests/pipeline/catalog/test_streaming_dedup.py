"""Near-duplicates of earlier runs' kept clips are rejected in the stream, as the end-of-run pass rejects them."""
import pickle
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
from pipeline.catalog import snapshot as snapshot_module
from pipeline.catalog.refilter import refilter, streaming_snapshot
from pipeline.catalog.views import connect
from pipeline.kit.catalog import KEEP, write_output
from stages.filter import Filter

DISTANCE = 0.05
RUNS = ("20260101T000000-abcdef", "20260102T000000-abcdef")


def config(streaming=True, distance=DISTANCE):
    return SimpleNamespace(stages={"filter": Filter(keep=KEEP, near_duplicate_distance=distance, dedup_bands=8,
                                                    near_duplicate_streaming=streaming)})


def two_runs(out, streaming, exact_below, batch=None):
    """Run 1, its end pass, run 2 through the filter stage (in batches of `batch` rows), its end pass."""
    first = write_output(out, RUNS[0], waves=2, videos_per_wave=30, clips_per_video=3, seed=0, duplicates=0.2)
    refilter(out, KEEP, DISTANCE, 8, made_by="run", incremental=True, exact_below=exact_below)
    stage = config(streaming).stages["filter"]
    snapshot, _ = streaming_snapshot(out, config(streaming), f"{RUNS[1]}-000000")
    stage.reject_against(snapshot)

    def stream(clips):
        size = batch or clips.num_rows
        return pa.concat_tables([stage(clips.slice(i, size)) for i in range(0, clips.num_rows, size)])

    write_output(out, RUNS[1], waves=2, videos_per_wave=30, clips_per_video=3, seed=1, duplicates=0.3,
                 pool=np.concatenate(first.vectors), stream=stream)
    refilter(out, KEEP, DISTANCE, 8, made_by="run", incremental=True, exact_below=exact_below)
    con = connect(out)
    rows = con.sql("SELECT clip_id, status, reason FROM clips").fetchall()
    final = {clip: (status, reason) for clip, status, reason in rows}
    streamed = dict(con.sql("""SELECT clip_id, reason FROM clips_written
                               WHERE starts_with(reason, 'near_duplicate_of:')""").fetchall())
    return final, streamed, snapshot


def test_the_stream_rejects_only_what_the_end_pass_rejects_and_the_result_is_the_same(tmp_path):
    exact_below = 0  # the pass's LSH mode: it finds only pairs sharing a band key (exact mode finds more)
    alone, none, _ = two_runs(tmp_path / "off", False, exact_below)
    assert none == {}  # streaming off: the stream rejects nothing as a duplicate
    final, streamed, snapshot = two_runs(tmp_path / "on", True, exact_below, batch=25)  # batches cut videos
    assert snapshot is not None and snapshot.kept > 0
    assert final == alone  # the end pass, the arbiter, decides as without streaming: statuses and reasons
    run1 = set(connect(tmp_path / "on").sql(f"SELECT clip_id FROM clips WHERE wave_id < '{RUNS[1]}'")
               .fetchnumpy()["clip_id"])
    of_run1 = {c: r for c, (_, r) in final.items() if r and c not in run1 and r.split(":", 1)[1] in run1}
    assert len(of_run1) >= 8 and streamed == of_run1  # every planted copy of run 1's kept clips, in the stream


def test_a_snapshot_decides_each_clip_alone(tmp_path, monkeypatch):
    """Order and batch make no difference: a clip's decision depends on the clip and the snapshot only
    (and on neither of the two ways a worker finds the candidates: band tables in memory, or in DuckDB)."""
    first = write_output(tmp_path, RUNS[0], waves=1, videos_per_wave=40, clips_per_video=3, seed=0)
    refilter(tmp_path, KEEP, DISTANCE, 8, made_by="run", incremental=True)
    snapshot, why = streaming_snapshot(tmp_path, config(), f"{RUNS[1]}-000000")
    vectors = first.vectors[0]
    rng = np.random.default_rng(3)
    copies = (vectors + rng.standard_normal(vectors.shape) * 2e-3).astype(np.float16)  # within the distance
    queries = np.concatenate([copies, rng.standard_normal((60, vectors.shape[1])).astype(np.float16)])
    together = snapshot.duplicates_of(queries)
    order = rng.permutation(len(queries))
    shuffled = [None] * len(queries)
    for start in range(0, len(order), 11):
        rows = order[start:start + 11]
        for row, of in zip(rows, snapshot.duplicates_of(queries[rows])):
            shuffled[row] = of
    assert shuffled == together
    monkeypatch.setattr(snapshot_module, "KEY_CACHE_ROWS", 0)  # a large index: band tables joined in DuckDB
    assert pickle.loads(pickle.dumps(snapshot)).duplicates_of(queries) == together
    kept = set(connect(tmp_path).sql("SELECT clip_id FROM clips WHERE status = 'accepted'").fetchnumpy()["clip_id"])
    assert all(of in kept for of in together if of is not None)
    assert sum(of is not None for of in together[:len(copies)]) > 0.8 * len(kept)  # copies of kept clips found
    assert all(of is None for of in together[len(copies):])  # unrelated vectors are not


def test_no_snapshot_where_the_end_pass_would_not_go_on_from_it(tmp_path):
    write_output(tmp_path, RUNS[0], waves=1, videos_per_wave=10, clips_per_video=2, seed=0)
    assert streaming_snapshot(tmp_path, config(), f"{RUNS[1]}-000000")[0] is None  # nothing decided yet
    refilter(tmp_path, KEEP, DISTANCE, 8, made_by="run", incremental=True)
    assert streaming_snapshot(tmp_path, config(), f"{RUNS[1]}-000000")[0] is not None
    assert streaming_snapshot(tmp_path, config(streaming=False), f"{RUNS[1]}-000000")[0] is None
    other, why = streaming_snapshot(tmp_path, config(distance=0.1), f"{RUNS[1]}-000000")
    assert other is None and "decide every wave again" in why  # other settings: the pass starts over
    early, why = streaming_snapshot(tmp_path, config(), "20251231T000000-abcdef-000000")
    assert early is None and "decide every wave again" in why  # a wave sorting before decided ones
