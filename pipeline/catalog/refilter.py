"""`vidprep refilter` and the end-of-run pass: statuses from stored scores, as a status overlay.

    eligible   = clips the stream accepted, or rejected only by the filter (reason filter:… or filter_error:…)
    keep       = eligible clips passing every condition of the keep expression (NULL fails)
    duplicates = keep clips within the cosine distance of an earlier kept clip (pipeline/catalog/dedup.py),
                 in (source_uri, start_frame, clip_id) order
    status     = accepted for keep - duplicates; rejected filter:… / near_duplicate_of:<id>;
                 other rows keep the status and reason the stream wrote (too_short, errors, …)

Nothing is recomputed: only the committed catalog is read (no model, no video).
The result is a function of the committed clips and the settings, so a crash
and rerun, or a rerun on another machine, gives the same statuses. It is
published as a new overlay version (pipeline/store/status.py) under the output lock.

Which settings: `refilter` takes them from its arguments (each defaults to the
output's current ones). After a run, the pass uses the output's current
settings if the newest overlay was made by `refilter` (a refilter sticks: new
clips are judged by it too), else the run config's filter stage.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.catalog.views import arrow, connect
from pipeline.store.commit import CommitLog, OutputLock
from pipeline.catalog.dedup import near_duplicates
from pipeline.store.status import StatusLog
from stages.sql.keep import ERROR_REASON, REASON, KeepExpression

DUPLICATE = "near_duplicate_of"
UNCHANGED: Any = ...  # a refilter argument left at the output's current value


@dataclass
class Outcome:
    out: str
    keep: str | None
    near_duplicate_distance: float | None
    dedup_bands: int
    made_by: str
    version: int | None = None  # the overlay written; None: nothing written
    totals: dict[str, int] = field(default_factory=dict)  # clips per new status
    changes: list[tuple] = field(default_factory=list)  # (from status, from code, to status, to code, clips)
    duplicates: int = 0
    unscored: int = 0  # kept clips without an embedding: not checked for duplicates
    skipped_downstream: int = 0  # accepted now, but filtered in the stream: later stages skipped them


def current_settings(out: str | Path) -> dict[str, Any]:
    """keep / near_duplicate_distance / dedup_bands the output's statuses were last made with."""
    latest = StatusLog(out).latest()
    if latest:
        return {k: latest[k] for k in ("keep", "near_duplicate_distance", "dedup_bands")}
    import json

    run_json = Path(out) / "run.json"
    stages = json.loads(run_json.read_text())["config"]["stages"] if run_json.exists() else {}
    settings = stages.get("filter") or {}
    return {"keep": settings.get("keep"), "near_duplicate_distance": settings.get("near_duplicate_distance"),
            "dedup_bands": settings.get("dedup_bands", 32)}


def after_run(out: str | Path, config) -> Outcome | None:
    """The end-of-run pass: near-duplicates (and a sticky refilter) over everything committed.

    None when there is nothing to decide: no filter stage, or no clip committed yet (an empty input,
    or only sources that failed): without clips the catalog has none of the score columns the keep
    expression names, and there is nothing to keep or to compare."""
    if not has_clips(out):
        logging.getLogger("vidprep").info("end-of-run pass skipped: %s holds no clip yet", out)
        return None
    latest = StatusLog(out).latest()
    stage = config.stages.get("filter")
    if latest and latest.get("made_by") == "refilter":
        settings = current_settings(out)
    elif stage is not None:
        settings = {"keep": stage.keep, "near_duplicate_distance": stage.near_duplicate_distance,
                    "dedup_bands": stage.dedup_bands}
    else:
        return None
    return refilter(out, **settings, made_by="run")


def has_clips(out: str | Path) -> bool:
    """Whether any committed clip row exists (videos that failed have a `videos` row only)."""
    return any(CommitLog(out).files("clips"))


def refilter(out: str | Path, keep: Any = UNCHANGED, near_duplicate_distance: Any = UNCHANGED,
             dedup_bands: Any = UNCHANGED, *, dry_run: bool = False, made_by: str = "refilter") -> Outcome:
    """Re-decide every clip's status from stored scores; publish an overlay unless `dry_run`."""
    now = current_settings(out)
    keep = now["keep"] if keep is UNCHANGED else keep
    distance = now["near_duplicate_distance"] if near_duplicate_distance is UNCHANGED else near_duplicate_distance
    bands = now["dedup_bands"] if dedup_bands is UNCHANGED else dedup_bands
    if distance is not None and not 0 <= distance < 2:
        raise ValueError(f"near_duplicate_distance: must be in [0, 2) (got {distance})")
    if not has_clips(out):
        raise ValueError(f"{out}: no clip committed yet (every source failed, or none was listed): "
                         "nothing to refilter")
    outcome = Outcome(str(out), keep, distance, int(bands), made_by)
    with OutputLock(out):
        con = connect(out)
        columns = arrow(con.sql("SELECT * FROM clips_written LIMIT 0")).schema
        try:
            expression = KeepExpression(keep, columns) if keep is not None else None
        except ValueError as err:
            raise ValueError(f"keep: {err}") from None
        table = decide(con, expression, distance, int(bands), outcome)
        con.register("_decided", table)
        outcome.changes = con.execute("""
            SELECT c.status, split_part(c.reason, ':', 1), d.status, split_part(d.reason, ':', 1), count(*)
            FROM clips c JOIN _decided d USING (clip_id, source_uri)
            WHERE c.status IS DISTINCT FROM d.status OR c.reason IS DISTINCT FROM d.reason
            GROUP BY ALL ORDER BY 5 DESC, 1, 2, 3, 4""").fetchall()
        outcome.totals = dict(con.execute("SELECT status, count(*) FROM _decided GROUP BY 1 ORDER BY 1").fetchall())
        con.close()
        if dry_run or (made_by != "refilter" and not outcome.changes):
            return outcome
        log = StatusLog(out)
        log.recover()
        waves = sorted(r["wave_id"] for r in CommitLog(out).records())
        record = log.write(table, {"made_by": made_by, "keep": keep, "near_duplicate_distance": distance,
                                   "dedup_bands": int(bands), "waves": waves, "duplicates": outcome.duplicates})
        outcome.version = record["version"]
    return outcome


def decide(con, expression: KeepExpression | None, distance: float | None, bands: int,
           outcome: Outcome) -> pa.Table:
    """clip_id, source_uri, status, reason for every committed clip (see the module docstring)."""
    has_embedding = "clip_embedding" in arrow(con.sql("SELECT * FROM clips_written LIMIT 0")).column_names
    conditions = f", {expression.select_list()}" if expression else ""
    embedding = ", clip_embedding" if distance is not None and has_embedding else ""
    rows = arrow(con.sql(f"""
        SELECT clip_id, source_uri, status, reason,
               status = 'accepted' OR starts_with(coalesce(reason, ''), '{REASON}:')
                   OR starts_with(coalesce(reason, ''), '{ERROR_REASON}:') AS eligible {conditions}{embedding}
        FROM clips_written ORDER BY source_uri, start_frame, clip_id"""))
    ids = rows.column("clip_id").to_pylist()
    status = rows.column("status").to_pylist()
    reason = rows.column("reason").to_pylist()
    eligible = rows.column("eligible").to_pylist()
    was_filtered = [r is not None and r.startswith((f"{REASON}:", f"{ERROR_REASON}:")) for r in reason]
    passes = [True] * len(ids)
    if expression:
        judged = [rows.column(f"k{i}").to_pylist() for i in range(len(expression.conditions))]
        for row in range(len(ids)):
            why = expression.reason([column[row] for column in judged]) if eligible[row] else None
            passes[row] = why is None
            if eligible[row] and why:
                status[row], reason[row] = "rejected", why
    kept = [row for row in range(len(ids)) if eligible[row] and passes[row]]
    for row in kept:
        status[row], reason[row] = "accepted", None
    if embedding:
        column = rows.column("clip_embedding")
        valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
        scored = [row for row in kept if valid[row]]
        outcome.unscored = len(kept) - len(scored)
        if scored:
            taken = column.take(pa.array(scored, pa.int64())).combine_chunks()
            if len(set(pc.list_value_length(taken).to_pylist())) != 1:
                raise ValueError("clip_embedding has vectors of different lengths (runs with different models?)")
            vectors = taken.flatten().to_numpy(zero_copy_only=False).reshape(len(scored), -1)  # (n, D)
            for row, of in zip(scored, near_duplicates(vectors, distance, bands)):
                if of >= 0:
                    status[row], reason[row] = "rejected", f"{DUPLICATE}:{ids[scored[of]]}"
                    outcome.duplicates += 1
    outcome.skipped_downstream = sum(1 for row in kept if was_filtered[row] and status[row] == "accepted")
    return pa.table({"clip_id": pa.array(ids, pa.string()), "source_uri": rows.column("source_uri"),
                     "status": pa.array(status, pa.string()), "reason": pa.array(reason, pa.string())})


def format_outcome(outcome: Outcome) -> str:
    """What a person reads after a refilter (or the end-of-run pass)."""
    dedup = (f"cosine distance <= {outcome.near_duplicate_distance} ({outcome.dedup_bands} LSH bands)"
             if outcome.near_duplicate_distance is not None else "off")
    written = f"status v{outcome.version}" if outcome.version else "nothing written"
    lines = [f"{outcome.made_by} {outcome.out} → {written}",
             f"  keep             {outcome.keep if outcome.keep is not None else '(every clip)'}",
             f"  near-duplicates  {dedup}: {outcome.duplicates} found",
             "  clips            " + ", ".join(f"{k} {v}" for k, v in sorted(outcome.totals.items()))]
    changed = sum(c[-1] for c in outcome.changes)
    lines.append(f"  changed          {changed} clip{'s' if changed != 1 else ''}")
    for old, old_code, new, new_code, count in outcome.changes:
        lines.append(f"    {_label(old, old_code)} → {_label(new, new_code)}  {count}")
    if outcome.unscored:
        lines.append(f"  not checked for duplicates (no clip_embedding): {outcome.unscored}")
    if outcome.skipped_downstream:
        lines.append(f"  accepted now but filtered out in the stream: {outcome.skipped_downstream} "
                     "(later stages skipped them: no captions or latents)")
    return "\n".join(lines)


def _label(status: str | None, code: str | None) -> str:
    return f"{status} ({code})" if code else str(status)
