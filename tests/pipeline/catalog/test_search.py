"""search's ranking at the catalog level: the status it filters on is the overlay's, found for a few
candidates at a time, and it must equal a ranking of every clip with its current status."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.catalog import search
from pipeline.catalog.refilter import refilter
from pipeline.catalog.views import connect
from pipeline.kit.catalog import write_output


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search") / "out"
    write_output(folder, "20260101T000000-aaaaaa", waves=2, videos_per_wave=50, clips_per_video=4, seed=3,
                 stream=without_some_embeddings)
    # The overlay turns most written 'accepted' clips into rejected ones (and some rejected ones back):
    # about 1 in 10 is accepted now, so the first candidates hold too few and the search must widen.
    refilter(out=folder, keep="clip_aesthetic >= 6.6", near_duplicate_distance=None)
    return folder


def without_some_embeddings(clips: pa.Table) -> pa.Table:
    """Every 5th clip unscored (too short to score): NULL lists in the files the ranking scans."""
    column = clips.column("clip_embedding").combine_chunks()
    unscored = pa.array([i % 5 == 0 for i in range(len(column))])
    return clips.set_column(clips.schema.get_field_index("clip_embedding"), "clip_embedding",
                            pc.if_else(unscored, pa.scalar(None, column.type), column))


def expected(out, query: np.ndarray, k: int, include_rejected: bool) -> list[tuple]:
    rows = connect(out).execute("""SELECT clip_id, source_uri, status, clip_embedding FROM clips
                                   WHERE clip_embedding IS NOT NULL""").fetchall()
    scores = np.array([np.dot(r[3], query) / np.linalg.norm(r[3]) for r in rows])
    pool = [i for i, r in enumerate(rows) if include_rejected or r[2] == "accepted"]
    return [(rows[i][0], rows[i][1], rows[i][2]) for i in sorted(pool, key=lambda i: (-scores[i], *rows[i][:2]))[:k]]


@pytest.mark.parametrize("widest", [search.WIDEST, 100])  # 100: no candidate round, the one-join fallback
@pytest.mark.parametrize("include_rejected", [False, True])
def test_the_ranking_equals_every_clip_ranked_with_its_current_status(out, monkeypatch, widest, include_rejected):
    monkeypatch.setattr(search, "WIDEST", widest)
    written = connect(out).execute("SELECT count(*) FILTER (status = 'accepted') FROM clips_written").fetchone()[0]
    now = connect(out).execute("SELECT count(*) FILTER (status = 'accepted') FROM clips").fetchone()[0]
    assert now < written / 3  # the overlay decides, not the written status
    query = np.random.default_rng(0).standard_normal(32)
    query /= np.linalg.norm(query)
    found = search.rank(out, query.tolist(), 20, include_rejected=include_rejected)
    assert list(zip(*(found.column(c).to_pylist() for c in ("clip_id", "source_uri", "status")))) == \
        expected(out, query, 20, include_rejected)
    assert found.column("rank").to_pylist() == list(range(1, 21))
