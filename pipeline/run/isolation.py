"""Faults in a model stage cost a row, not the run.

A model stage's batch can fail for one row's sake: a CUDA out-of-memory on an
unusually long clip, a model error on one odd input. Ray does not retry stage
exceptions (they are not worker deaths), so one bad batch used to end the job.
`call_isolated` retries a failed batch in halves down to single rows; a row
that still fails becomes a clip with status `error` and a coded reason
(`oom`, or `model_error: <type>: <message>`), and the stage is called once more
on those rows so they carry its columns as nulls (a stage gives rows that are
not accepted nulls without running its model). Worker deaths are Ray's
business (bounded restarts, pipeline/run/executors.py).
"""
from __future__ import annotations

import gc
import logging

import pyarrow as pa
import pyarrow.compute as pc

from stages.base import Stage

log = logging.getLogger("vidprep")
MAX_DETAIL = 200  # characters of the exception kept in the reason


def call_isolated(stage: Stage, batch: pa.Table) -> pa.Table:
    """`stage(batch)`, with failing rows turned into error rows instead of failing the batch."""
    try:
        return stage(batch)
    except Exception as err:  # noqa: BLE001 - any model failure is isolated to the rows that cause it
        if batch.num_rows == 0 or not stage.needs_actor:
            raise  # cheap stages already turn bad input into rows; an exception there is a bug
        _free_device_memory()
        if batch.num_rows == 1:
            log.warning("stage %s: row failed, recorded as an error: %s", stage.name, _detail(err))
            return stage(_as_errors(batch, reason_for(err)))
        half = batch.num_rows // 2
        parts = [call_isolated(stage, batch.slice(0, half)), call_isolated(stage, batch.slice(half))]
        return pa.concat_tables(parts, promote_options="permissive")


def reason_for(err: BaseException) -> str:
    """`oom` for out-of-memory errors (CUDA's or the host's), else `model_error: <type>: <message>`."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, MemoryError) or "OutOfMemoryError" in type(err).__name__ or "out of memory" in text.lower():
        return "oom"
    return f"model_error: {_detail(err)}"


def _detail(err: BaseException) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 1] + "…"


def _as_errors(rows: pa.Table, reason: str) -> pa.Table:
    """Accepted clip rows → status error with `reason`; other rows (already decided) stay as they are."""
    accepted = pc.fill_null(pc.equal(rows.column("status"), "accepted"), False)
    status = pc.if_else(accepted, pa.scalar("error"), rows.column("status"))
    reason_col = pc.if_else(accepted, pa.scalar(reason), rows.column("reason"))
    rows = rows.set_column(rows.schema.get_field_index("status"), "status", status)
    return rows.set_column(rows.schema.get_field_index("reason"), "reason", reason_col)


def _free_device_memory() -> None:
    """After an OOM the allocator still holds the failed batch's blocks: give them back before retrying."""
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
