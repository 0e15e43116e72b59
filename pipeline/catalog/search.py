"""`vidprep search OUT "a dog on a beach" -k 10`: text → clips, ranked by cosine inside DuckDB.

The text is embedded by the CLIP model the run used (its settings are read from
OUT/run.json: model, pretrained, model_config), and DuckDB ranks the stored
`clip_embedding`s with list_cosine_similarity over the catalog's clips (see
`rank` for how it stays in bounded memory without joining the status overlay
to every clip). Only accepted clips are searched unless `include_rejected`. Thumbnails of the
results are written as JPEG files, since a terminal can't show them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.catalog.views import arrow, connect

CAPTION_COLUMNS = ("caption_short", "caption_dense", "caption_long")  # shown first found, per clip
SEARCH_MEMORY = "256MB"  # DuckDB's limit for a search; past it, the overlay join spills to disk


def load_model_of(out: str | Path, device: str | None = None):
    """The CLIP model a run scored with (stages/models/clip.py's `Clip`), from OUT/run.json."""
    from stages.models.clip import load_clip

    from pipeline.store.location import Location

    loc = Location.of(out)
    if not loc.is_file("run.json"):
        raise FileNotFoundError(f"{loc.uri('run.json')} is missing: search needs the run's clip_score settings")
    settings = json.loads(loc.read_bytes("run.json"))["config"]["stages"].get("clip_score")
    if not settings:
        raise ValueError(f"{out} was made without stage clip_score: there are no embeddings to search")
    return load_clip(settings["model"], settings["pretrained"], model_config=settings.get("model_config"),
                     device=device, dtype="float32")


def search(out: str | Path, text: str, k: int = 10, *, include_rejected: bool = False, clip=None) -> pa.Table:
    """Top-k clips: rank, clip_id, score (cosine), caption, source_uri, start_s, end_s, thumbnail."""
    if k < 1:
        raise ValueError(f"-k must be >= 1 (got {k})")
    clip = clip or load_model_of(out)
    return rank(out, clip.encode_texts([text])[0].astype(float).tolist(), k, include_rejected=include_rejected)


def rank(out: str | Path, query: list[float], k: int, *, include_rejected: bool = False) -> pa.Table:
    """The k stored embeddings nearest to `query` (a unit vector), ranked by DuckDB in bounded memory.

    The status a search filters on comes from the overlay, a row per clip: joining it to every clip
    builds a hash table that grows with the catalog (~900 MB at 1M clips). So the ranking first takes the
    top `wanted` clips as written (one scan with a heap of `wanted` keys, no join), looks up the status of
    those only, and widens `wanted` until k of them are accepted; past WIDEST it falls back to one join
    under a memory limit (spilling to a temporary folder). Display columns are read for the k winners."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vidprep-spill-") as spill:  # not DuckDB's `.tmp` in the cwd
        con = connect(out)
        con.execute(f"SET memory_limit = '{SEARCH_MEMORY}'")
        con.execute(f"SET temp_directory = '{spill}'")
        try:
            return _ranked(con, query, k, include_rejected, out)
        except duckdb.Error as err:  # e.g. the stored vectors have another dimension than this model
            raise ValueError(f"search failed: {str(err).splitlines()[0]}") from None
        finally:
            con.close()


WIDEST = 1 << 16  # candidates looked up before one join does it instead (few accepted clips)
LISTED = 4096  # candidates named in a constant list; more: a semi-join (a list this long costs its parsing)
# As fixed-size arrays: DuckDB's list_cosine_similarity over a Parquet scan holding NULL lists (clips too short
# to score) fails with "can not contain NULL values" even where the filter removed them; the array form doesn't.
# A stored vector of another length fails the cast: "search failed", as a model with another width should.
SCORE = "array_cosine_similarity(clip_embedding::FLOAT[{dim}], $query::FLOAT[{dim}])"


def _order(alias: str = "") -> str:
    """Best first; ties by clip_id, source_uri (of relation `alias` in a join)."""
    return f"ORDER BY score DESC, {alias}clip_id, {alias}source_uri"


def _ranked(con, query: list[float], k: int, include_rejected: bool, out) -> pa.Table:
    names = set(arrow(con.sql("SELECT * FROM clips_written LIMIT 0")).column_names)
    if "clip_embedding" not in names:
        raise ValueError(f"{out} has no clip_embedding column: run it with stage clip_score")
    winners = _winners(con, query, k, include_rejected)
    con.register("_winners", winners)
    captions = [c for c in CAPTION_COLUMNS if c in names]
    nonempty = [f"nullif(trim(w.{c}), '')" for c in captions]
    caption = f"coalesce({', '.join(nonempty)})" if captions else "NULL::VARCHAR"  # the first non-empty one
    # A constant IN list is pushed into the Parquet scan: only the winners' rows are decoded (thumbnails).
    table = arrow(con.sql(f"""
        SELECT v.clip_id, v.score, {caption} AS caption, v.status, v.source_uri, w.start_s, w.end_s, w.thumbnail
        FROM _winners v JOIN (SELECT * FROM clips_written WHERE clip_id IN ({_listed(winners, "clip_id")})) w
             USING (clip_id, source_uri) {_order('v.')}"""))
    return table.add_column(0, "rank", pa.array(range(1, table.num_rows + 1), pa.int32()))


def _winners(con, query: list[float], k: int, include_rejected: bool) -> pa.Table:
    """(clip_id, source_uri, score, status) of the k best clips, best first."""
    params, score = {"query": query}, SCORE.format(dim=len(query))
    wanted = max(8 * k, 128)  # a heap this small costs what a heap of k does; most searches need one scan
    while wanted <= WIDEST:
        top = arrow(con.sql(f"""SELECT clip_id, source_uri, {score} AS score, status FROM clips_written
                                WHERE clip_embedding IS NOT NULL {_order()} LIMIT {wanted}""", params=params))
        con.register("_top", top)
        candidates = _listed(top, "clip_id") if top.num_rows <= LISTED else "SELECT clip_id FROM _top"
        # The status each candidate has now: the overlay's where it has one (looked up for these keys only).
        top = arrow(con.sql(f"""
            SELECT t.clip_id, t.source_uri, t.score, CASE WHEN s.clip_id IS NULL THEN t.status ELSE s.status END
                   AS status
            FROM _top t LEFT JOIN (SELECT * FROM clip_status WHERE clip_id IN ({candidates})) s
                 USING (clip_id, source_uri)
            {_order('t.')}"""))
        kept = top if include_rejected else top.filter(pc.equal(top.column("status"), "accepted"))
        if kept.num_rows >= k or top.num_rows < wanted:  # enough, or every clip was a candidate
            return kept.slice(0, k)
        wanted *= 8
    where = "" if include_rejected else "AND status = 'accepted'"
    return arrow(con.sql(f"""SELECT clip_id, source_uri, {score} AS score, status FROM clips
                             WHERE clip_embedding IS NOT NULL {where} {_order()} LIMIT {int(k)}""", params=params))


def _listed(table: pa.Table, column: str) -> str:
    """A column's distinct values as an SQL list of constants (which DuckDB pushes into a Parquet scan,
    unlike an IN (subquery))."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in set(table.column(column).to_pylist())) or "NULL"


def write_thumbnails(table: pa.Table, folder: str | Path) -> list[str | None]:
    """Write each result's thumbnail as <rank>-<clip_id>.jpg; returns the paths (None: no thumbnail)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[str | None] = []
    for rank, clip_id, jpeg in zip(*(table.column(c).to_pylist() for c in ("rank", "clip_id", "thumbnail"))):
        if jpeg is None:
            paths.append(None)
            continue
        path = folder / f"{rank:03d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', clip_id)}.jpg"
        path.write_bytes(jpeg)
        paths.append(str(path))
    return paths
