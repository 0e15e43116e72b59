"""The clips an export writes, one row each, grouped by source so each source is decoded once."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.catalog.views import arrow, connect

CAPTIONS = {"long": "caption_long", "short": "caption_short", "dense": "caption_dense"}
FIXED = ["clip_id", "source_uri", "start_frame", "end_frame", "start_s", "end_s", "fps", "width", "height"]


def select_clips(out: str | Path, where: str | None, caption: str) -> pa.Table:
    """Clips to export in (source, start) order: FIXED columns, rotation, bucket, caption, score columns.

    By default the clips accepted under the current status overlay (what the trainer reads); `where`
    is any SQL condition over the `clips` view instead (checked by DuckDB, read-only catalog)."""
    con = connect(out)
    columns = arrow(con.sql("SELECT * FROM clips LIMIT 0")).schema.names
    caption_column = CAPTIONS[caption]
    text = f"c.{caption_column}" if caption_column in columns else "NULL"
    if caption_column != "caption_dense" and "caption_dense" in columns:
        text = f"coalesce({text}, c.caption_dense)"  # an expand fallback row still has its dense caption
    bucket = "c.bucket" if "bucket" in columns else "NULL"
    scores = [c for c in columns if c.startswith("clip_") and c not in ("clip_id", "clip_index", "clip_embedding")]
    picked = ", ".join(f"c.{c}" for c in FIXED + scores)
    condition = where if where else "status = 'accepted'"  # over the clips view alone: no ambiguous names
    sql = (f"SELECT {picked}, coalesce(v.rotation, 0) AS rotation, {bucket} AS bucket, {text} AS caption "
           f"FROM (SELECT * FROM clips WHERE {condition}) c "
           "LEFT JOIN (SELECT video_id, any_value(rotation) AS rotation FROM videos GROUP BY video_id) v "
           "USING (video_id) ORDER BY c.source_uri, c.start_frame")
    return arrow(con.sql(sql))


def by_source(table: pa.Table) -> list[tuple[str, list[dict]]]:
    """[(source_uri, its clips as dicts in start order)] in source order."""
    groups: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        groups.setdefault(row["source_uri"], []).append(row)
    return list(groups.items())
