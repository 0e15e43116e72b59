"""Stage `filter` (1:1 rows, 1:0/1 accepted; CPU task): `keep` over stored scores, by DuckDB.

    keep: "clip_aesthetic >= 4.5 AND clip_text_overlay < 0.3"

Each batch's accepted clips are judged by DuckDB on the Arrow table (one
column per condition, stages/sql/keep.py). A clip failing one or more top-level
AND terms becomes `rejected` with reason `filter:<the failed terms>`; it keeps
every score, so `vidprep refilter` can change its mind later without
recomputing. Rows already rejected pass untouched.

Near-duplicates: which clip of a pair is "first" must not depend on which
worker finished first, so the driver decides them after the run commits
(pipeline/catalog/refilter.py, a status overlay over the committed catalog;
pipeline/catalog/dedup.py for the method): that pass is the arbiter. Before
it, so that caption, expand and encode do not work on clips it will reject,
this stage rejects (`near_duplicate_of:<clip_id>`) the accepted clips that
provably duplicate a clip kept by an earlier run's pass, when the runner
hands it those kept clips (`reject_against`, with
`near_duplicate_streaming: true`; pipeline/catalog/snapshot.py CommittedKept
says why the pass then makes the same decision, whatever the scheduling).
Pairs within one run stay with the end-of-run pass: whether the earlier clip
of such a pair is kept depends on clips the batch may not hold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.catalog import CLIPS, extend
from schemas.signals import NSFW_FIELDS, SIGNAL_FIELDS
from stages.sql.keep import DUPLICATE_REASON, KeepExpression
from stages.base import Resources, Stage, require
from stages.models.clip import DEFAULT_PROMPTS, FIXED


@dataclass
class Filter(Stage):
    name = "filter"
    inputs = ("status", "reason")
    outputs = ("status", "reason")

    keep: str | None = None  # SQL boolean expression over clip columns; null keeps every clip
    near_duplicate_distance: float | None = 0.05  # cosine distance (1 - cos) to an earlier kept clip; null: off
    dedup_bands: int = 32  # LSH bands (more: higher recall, more hashing); see pipeline/catalog/dedup.py
    # Reject, before caption/expand/encode, clips that duplicate a clip kept by an earlier run (the same
    # decision the end-of-run pass makes, made early so the model stages skip them); false: the pass alone.
    near_duplicate_streaming: bool = True
    resources: Resources = field(default_factory=lambda: Resources(cpus=0.25))  # tiny work; leave the CPU

    def __post_init__(self):
        if self.keep is not None:
            try:
                # Checked against the catalog's clip columns (clip_* prompt columns are configurable,
                # so those are allowed by prefix; a misspelt one fails on the first batch).
                self.expression = KeepExpression(self.keep, catalog_columns(), lenient_prefix="clip_")
            except ValueError as err:
                raise ValueError(f"keep: {err}") from None
        d = self.near_duplicate_distance
        require(d is None or 0 <= d < 2, "near_duplicate_distance", f"must be in [0, 2) or null (got {d})")
        require(1 <= self.dedup_bands <= 256, "dedup_bands", f"must be in 1..256 (got {self.dedup_bands})")
        require(isinstance(self.near_duplicate_streaming, bool), "near_duplicate_streaming",
                f"must be true or false (got {self.near_duplicate_streaming!r})")
        self.committed: Any = None  # set by reject_against; not a config field

    def reject_against(self, committed: Any) -> None:
        """Kept clips of decided waves (pipeline/catalog/snapshot.CommittedKept, or None): accepted clips
        that duplicate one of them are rejected in the stream. The runner calls this before the plan runs."""
        self.committed = committed if self.near_duplicate_streaming else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = self._judge(batch)
        return self._reject_committed_duplicates(batch)

    def _reject_committed_duplicates(self, batch: pa.Table) -> pa.Table:
        if self.committed is None or "clip_embedding" not in batch.column_names:
            return batch
        embeddings = batch.column("clip_embedding")
        accepted = pc.fill_null(pc.equal(batch.column("status"), "accepted"), False)
        rows = np.flatnonzero(pc.and_(accepted, pc.is_valid(embeddings)).to_numpy(zero_copy_only=False))
        if not len(rows):
            return batch
        vectors = embeddings.take(pa.array(rows, pa.int64())).combine_chunks()
        if len(pc.unique(pc.list_value_length(vectors))) != 1:
            return batch  # vectors of different lengths: the end-of-run pass reports it
        raw = vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(rows), -1)  # (n, D) as stored
        status = batch.column("status").to_pylist()
        reason = batch.column("reason").to_pylist()
        for row, of in zip(rows, self.committed.duplicates_of(raw)):
            if of is not None:
                status[row], reason[row] = "rejected", f"{DUPLICATE_REASON}:{of}"
        batch = batch.set_column(batch.schema.get_field_index("status"), "status", pa.array(status, pa.string()))
        return batch.set_column(batch.schema.get_field_index("reason"), "reason", pa.array(reason, pa.string()))

    def _judge(self, batch: pa.Table) -> pa.Table:
        """The keep expression: accepted clips failing it become `rejected`, `filter:<failed terms>`."""
        self.check_inputs(batch)
        rows = self.accepted(batch)
        if self.keep is None or not rows:
            return batch
        used = [c for c in self.expression.used if c in batch.column_names] or ["status"]  # never copy frames
        judged = self.expression.evaluate(batch.select(used).take(pa.array(rows, pa.int64())))
        status = batch.column("status").to_pylist()
        reason = batch.column("reason").to_pylist()
        for row, why in zip(rows, judged):
            if why is not None:
                status[row], reason[row] = "rejected", why
        batch = batch.set_column(batch.schema.get_field_index("status"), "status", pa.array(status, pa.string()))
        return batch.set_column(batch.schema.get_field_index("reason"), "reason", pa.array(reason, pa.string()))


def catalog_columns() -> pa.Schema:
    """What a keep expression may read: the clips table's columns plus clip_score's (default prompts),
    signals' and nsfw's."""
    measured = [f for group in SIGNAL_FIELDS.values() for f in group]
    return extend(CLIPS, [*_default_score_fields(), *measured, *NSFW_FIELDS])


def _default_score_fields() -> tuple[pa.Field, ...]:
    return (*(pa.field(f"clip_{k}", t) for k, t in FIXED.items()),
            *(pa.field(f"clip_{k}", pa.float32()) for k in DEFAULT_PROMPTS))
