"""What the HTML report shows, as SQL over the catalog views (`pipeline.catalog.views.connect`).

Everything is aggregated in DuckDB (counts, histogram bins) so the report of
a catalog with millions of clips fetches only small tables; past SAMPLE_PAST
clips the thumbnails and rejected examples come from a sample of the files. Columns are
discovered from the `clips` view: a stage that adds a numeric column gets a
histogram without any change here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.store.location import Location
from schemas.catalog import CLIPS

NUMERIC = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
           "UBIGINT", "FLOAT", "REAL", "DOUBLE"}
CAPTIONS = ("caption_short", "caption_long", "caption_dense")  # text columns whose length is plotted
MAX_BINS = 30
SAMPLE_PAST = 200_000  # clips: past this, thumbnails and examples come from a sample of the catalog's files
SAMPLE_ROWS = 50_000  # about this many clips in the sample


@dataclass
class Histogram:
    edges: list[float]
    counts: dict[str, list[int]]  # status → count per bin
    n: int  # non-null finite values
    nulls: int  # null or not finite
    median: float
    lo: float
    hi: float

    @property
    def constant(self) -> bool:
        return self.lo == self.hi


@dataclass
class Funnel:
    videos: dict[str, int] = field(default_factory=dict)  # status → count
    video_errors: list[tuple[str, int]] = field(default_factory=list)  # error code → count
    clips: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # clip status → [(code, count)]
    video_hours: float = 0.0
    clip_hours: dict[str, float] = field(default_factory=dict)
    in_shards: int | None = None  # clips with a shard row; None when no shard was written


def columns(con, table: str = "clips") -> dict[str, str]:
    """Column name → DuckDB type of a view."""
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE {table}").fetchall()}


def is_numeric(duckdb_type: str) -> bool:
    return duckdb_type in NUMERIC or duckdb_type.startswith("DECIMAL")


def score_columns(cols: dict[str, str]) -> list[str]:
    """Numeric columns added by stages after split (scores, repetition, similarity …), in view order.

    Token counts (`<caption>_tokens`) are caption lengths: the captions section shows them.
    """
    return [c for c, t in cols.items() if is_numeric(t) and c not in CLIPS.names and not c.endswith("_tokens")]


def caption_columns(cols: dict[str, str]) -> list[str]:
    return [c for c in CAPTIONS if cols.get(c) == "VARCHAR"]


def words(column: str) -> str:
    """SQL: the number of whitespace-separated words of a text column (NULL stays NULL)."""
    return f"len(regexp_extract_all({column}, '\\S+'))"


def funnel(con) -> Funnel:
    result = Funnel()
    result.videos = dict(con.execute("SELECT status, count(*) FROM videos GROUP BY 1").fetchall())
    result.video_errors = con.execute("""SELECT coalesce(split_part(error, ':', 1), '(none)'), count(*) FROM videos
                                         WHERE status = 'error' GROUP BY 1 ORDER BY 2 DESC, 1""").fetchall()
    result.video_hours = (con.execute("SELECT sum(duration_s) FROM videos").fetchone()[0] or 0.0) / 3600
    # One scan of clips (each joins the status overlay): counts and hours per status and reason code.
    for status, code, n, seconds in con.execute("""
            SELECT status, coalesce(split_part(reason, ':', 1), '(none)') AS code, count(*), sum(duration_s)
            FROM clips GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2""").fetchall():
        result.clips[status] = result.clips.get(status, 0) + n
        result.clip_hours[status] = result.clip_hours.get(status, 0.0) + (seconds or 0.0) / 3600
        if status is not None and status != "accepted":
            result.reasons.setdefault(status, []).append((code, n))
    if con.execute("SELECT count(*) FROM shard_index").fetchone()[0]:
        result.in_shards = con.execute("SELECT count(DISTINCT clip_id) FROM shard_index").fetchone()[0]
    return result


def histogram(con, expr: str, table: str = "clips", bins: int = MAX_BINS) -> Histogram | None:
    """Bins of `expr` over `table`, counted per status; None when it has no finite value."""
    return histograms(con, [expr], table, bins)[expr]


def histograms(con, exprs: list[str], table: str = "clips", bins: int = MAX_BINS) -> dict[str, Histogram | None]:
    """Each expression's histogram (as `histogram`), all from two scans of `table`: on `clips` a scan joins
    the status overlay, a row per clip, so one scan per expression cost seconds each at 1M clips.

    Integer-valued data with a small range gets one bin per integer; a constant gets one bin.
    """
    exprs = list(dict.fromkeys(exprs))
    if not exprs:
        return {}
    base = "SELECT " + ", ".join(f"({e})::DOUBLE AS v{i}" for i, e in enumerate(exprs)) + f", status FROM {table}"
    finite = [f"FILTER (isfinite(v{i}))" for i in range(len(exprs))]
    stats = con.execute("SELECT count(*), " + ", ".join(
        f"min(v{i}) {f}, max(v{i}) {f}, count(v{i}) {f}, bool_and(v{i} = floor(v{i})) {f}, median(v{i}) {f}"
        for i, f in enumerate(finite)) + f" FROM ({base})").fetchone()
    total, shapes = stats[0], {}
    for i in range(len(exprs)):
        lo, hi, n, integral, median = stats[1 + 5 * i:6 + 5 * i]
        if not n:
            continue
        if integral and hi - lo <= 60:
            shapes[i] = (lo - 0.5, 1.0, int(hi - lo) + 1, n, median, lo, hi)
        elif lo == hi:
            shapes[i] = (lo - 0.5, 1.0, 1, n, median, lo, hi)
        else:
            shapes[i] = (lo, (hi - lo) / bins, bins, n, median, lo, hi)
    found: dict[str, Histogram | None] = {e: None for e in exprs}
    if not shapes:
        return found
    # One scan: every value's bin, unnested into (expression, bin) pairs, counted per status.
    binned = ", ".join(f"CASE WHEN isfinite(v{i}) THEN least(floor((v{i} - {start!r}) / {width!r})::BIGINT, "
                       f"{count - 1}) END" for i, (start, width, count, *_) in shapes.items())
    which = ", ".join(str(i) for i in shapes)
    rows = con.execute(f"""SELECT i, b, status, count(*) FROM (
                               SELECT unnest([{which}]) AS i, unnest([{binned}]) AS b, status FROM ({base}))
                           WHERE b IS NOT NULL GROUP BY ALL""").fetchall()
    counts: dict[int, dict[str, list[int]]] = {i: {} for i in shapes}
    for i, b, status, c in rows:
        counts[i].setdefault(status or "(none)", [0] * shapes[i][2])[b] += c
    for i, (start, width, count, n, median, lo, hi) in shapes.items():
        edges = [start + k * width for k in range(count + 1)]
        found[exprs[i]] = Histogram(edges, counts[i], n, total - n, median, lo=lo, hi=hi)
    return found


def buckets(con) -> list[tuple[str, int, int]]:
    """(bucket, accepted clips, clips in shards) by accepted count, largest first."""
    shards = dict(con.execute("SELECT bucket, count(DISTINCT clip_id) FROM shard_index GROUP BY 1").fetchall())
    accepted = con.execute("""SELECT bucket, count(*) FROM clips WHERE status = 'accepted' AND bucket IS NOT NULL
                              GROUP BY 1 ORDER BY 2 DESC, 1""").fetchall()
    names = [b for b, _ in accepted] + sorted(set(shards) - {b for b, _ in accepted})
    counts = dict(accepted)
    return [(b, counts.get(b, 0), shards.get(b, 0)) for b in names]


def camera_motion(con) -> list[tuple[str, int, int, int]]:
    """(camera_motion class, accepted, rejected, of which motion_frozen) over scored clips, most clips first."""
    return con.execute("""SELECT camera_motion, count(*) FILTER (status = 'accepted'),
                                 count(*) FILTER (status <> 'accepted'), count(*) FILTER (motion_frozen)
                          FROM clips WHERE camera_motion IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1""").fetchall()


def sample(con, out: Path, past: int | None = None, rows: int | None = None) -> tuple[str, int | None]:
    """(view, clips sampled or None): `clips`, or past `past` clips a view `clips_sample` over every k-th
    committed clips file (in wave order: a spread across runs), so the thumbnails and examples read a
    bounded part of the catalog while every count and histogram still covers all of it."""
    from pipeline.catalog.views import declared_scan
    from pipeline.store.manifest import Manifest, live_files
    from pipeline.store.status import overlaid

    past, rows = past or SAMPLE_PAST, rows or SAMPLE_ROWS
    total = con.execute("SELECT count(*) FROM clips_written").fetchall()[0][0]  # Parquet metadata only
    if total <= past:
        return "clips", None
    waves, schemas = Manifest(out).load()
    files = live_files(waves)
    files = files.filter(pc.equal(files.column("table"), "clips"))
    step = max(1, math.ceil(total / rows))
    chosen = files.take(pa.array(range(0, files.num_rows, step), pa.int64()))
    loc = Location.of(out)
    if loc.local:
        con.execute(f"CREATE OR REPLACE VIEW clips_sampled_written AS {declared_scan(con, out, chosen, schemas)}")
    else:  # a store: an Arrow dataset of the chosen files, as the views are (pipeline/catalog/views.py)
        from pipeline.catalog.views import store_dataset

        keys = dict.fromkeys(chosen.column("schema_id").to_pylist())
        con.register("_arrow_clips_sampled", store_dataset(loc, chosen.column("path").to_pylist(),
                                                           [schemas[k] for k in keys if k in schemas]))
        con.execute("CREATE OR REPLACE VIEW clips_sampled_written AS SELECT * FROM _arrow_clips_sampled")
    con.execute(f"CREATE OR REPLACE VIEW clips_sample AS {overlaid('clips_sampled_written')}")
    return "clips_sample", con.execute("SELECT count(*) FROM clips_sampled_written").fetchall()[0][0]


def thumbnails(con, cols: dict[str, str], limit: int, table: str = "clips") -> list[dict[str, Any]]:
    """Accepted clips with a thumbnail: a deterministic spread across sources (ordered by clip id)."""
    caption = "caption_short" if cols.get("caption_short") == "VARCHAR" else "NULL"
    return _dicts(con, f"""SELECT clip_id, source_uri, clip_index, start_s, duration_s, thumbnail,
                                  {caption} AS caption FROM {table}
                           WHERE status = 'accepted' AND thumbnail IS NOT NULL ORDER BY clip_id LIMIT ?""", [limit])


def examples(con, per_reason: int, table: str = "clips") -> list[dict[str, Any]]:
    """Up to `per_reason` clips for each (status, reason code) that is not accepted, by clip id."""
    return _dicts(con, f"""SELECT * FROM (
        SELECT clip_id, source_uri, clip_index, start_s, duration_s, thumbnail, status, reason,
               coalesce(split_part(reason, ':', 1), '(none)') AS code,
               row_number() OVER (PARTITION BY status, code ORDER BY clip_id) AS k
        FROM {table} WHERE status <> 'accepted') WHERE k <= ? ORDER BY status, code, k""", [per_reason])


def runs(out: Path) -> list[dict[str, Any]]:
    """Every run's record (`_runs/*.json`; `run.json` alone for outputs older than `_runs/`), oldest first."""
    loc = Location.of(out)
    paths = [f"_runs/{n}" for n in loc.names("_runs") if n.endswith(".json")] or \
        (["run.json"] if loc.is_file("run.json") else [])
    records = [json.loads(loc.read_bytes(p)) for p in paths]
    return sorted(records, key=lambda r: r.get("started_at", 0))


def commit_times(con, runs_: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[int]]]:
    """Per run: seconds from its start to each wave's commit, and clips committed so far."""
    started = {r["run_id"]: r.get("started_at") for r in runs_}
    timeline: dict[str, tuple[list[float], list[int]]] = {}
    for run_id, at, clips in con.execute("SELECT run_id, epoch(committed_at), clips FROM commits "
                                         "ORDER BY run_id, committed_at").fetchall():
        if started.get(run_id) is None:
            continue
        seconds, totals = timeline.setdefault(run_id, ([], []))
        seconds.append(max(0.0, at - started[run_id]))
        totals.append((totals[-1] if totals else 0) + clips)
    return timeline


def latest_decision(out: Path) -> dict[str, Any] | None:
    """The newest status overlay record (keep expression, near-duplicate settings), if any."""
    from pipeline.store.status import StatusLog

    return StatusLog(out).latest()


def _dicts(con, sql: str, params: list) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def hours(value: float) -> str:
    """Hours as h:mm:ss."""
    seconds = int(round(value * 3600)) if math.isfinite(value) else 0
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
