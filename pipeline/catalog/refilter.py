"""`vidprep refilter` and the end-of-run pass: statuses from stored scores, as a status overlay.

    eligible   = clips the stream accepted, or rejected only by the filter (reason filter:… or filter_error:…,
                 or near_duplicate_of:… from the stream's own check against decided waves: this pass
                 stays the exact arbiter, and confirms those)
    keep       = eligible clips passing every condition of the keep expression (NULL fails)
    duplicates = keep clips within the cosine distance of an earlier kept clip (pipeline/catalog/dedup.py),
                 in (wave_id, source_uri, start_frame, clip_id) order: a later run's clips come after
                 every clip already decided, so a run decides only its own clips, against the kept
                 ones, through the index that lives with the output (pipeline/catalog/nearindex.py)
    status     = accepted for keep - duplicates; rejected filter:… / near_duplicate_of:<id>;
                 other rows keep the status and reason the stream wrote (too_short, errors, …)

Nothing is recomputed: only the committed catalog is read (no model, no video).
After a run only the waves not yet decided are read (none: nothing is opened);
`vidprep refilter` decides every wave again, in batches of waves (bounded memory).
The result is a function of the committed clips and the settings, so a crash
and rerun, or a rerun on another machine, gives the same statuses. It is
published as a new overlay version (pipeline/store/status.py) under the output lock.

Which settings: `refilter` takes them from its arguments (each defaults to the
output's current ones). After a run, the pass uses the output's current
settings if the newest overlay was made by `refilter` (a refilter sticks: new
clips are judged by it too), else the run config's filter stage.
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.catalog.bandjoin import band_actors
from pipeline.catalog.dedup import EXACT_BELOW
from pipeline.catalog.nearindex import NearIndex
from pipeline.catalog.snapshot import CommittedKept
from pipeline.catalog.views import arrow, connect, declared_scan, store_dataset
from pipeline.store.commit import CommitLog
from pipeline.store.lease import OutputLock, output_lock
from pipeline.store.location import Location
from pipeline.store.compact import grouped
from pipeline.store.manifest import Manifest, live_files
from pipeline.store.status import FILES, OWN_FILE, RECORDS, StatusLog, record_files
from stages.sql.keep import DUPLICATE_REASON, ERROR_REASON, REASON, KeepExpression

DUPLICATE = DUPLICATE_REASON
BATCH_CLIPS = 100_000  # clips decided at once: the pass's memory follows this, not the catalog
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
    streamed: int = 0  # of the clips decided, those the stream had already rejected as near-duplicates
    incremental: bool = False  # only waves the previous overlay had not decided (totals are theirs)


def current_settings(out: str | Path) -> dict[str, Any]:
    """keep / near_duplicate_distance / dedup_bands the output's statuses were last made with."""
    latest = StatusLog(out).latest()
    if latest:
        return {k: latest[k] for k in ("keep", "near_duplicate_distance", "dedup_bands")}
    import json

    loc = Location.of(out)
    stages = json.loads(loc.read_bytes("run.json"))["config"]["stages"] if loc.is_file("run.json") else {}
    settings = stages.get("filter") or {}
    return {"keep": settings.get("keep"), "near_duplicate_distance": settings.get("near_duplicate_distance"),
            "dedup_bands": settings.get("dedup_bands", 32)}


def after_run(out: str | Path, config, held: OutputLock | None = None,
              start_ray: Callable[[], None] | None = None) -> Outcome | None:
    """The end-of-run pass: near-duplicates (and a sticky refilter) over the waves not yet decided.

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
    return refilter(out, **settings, made_by="run", incremental=True, held=held, start_ray=start_ray)


def streaming_snapshot(out: str | Path, config, first_wave: str) -> tuple[CommittedKept | None, str]:
    """The kept clips a run's filter stage may reject new clips against (None: none), and a line saying so.

    Only when this run's end-of-run pass will go on from the newest overlay's index — the settings it
    will use are that overlay's, the run's waves (from `first_wave`) sort after every decided wave,
    the index is not due for a rebuild — is a kept clip of the snapshot still kept when the pass
    decides the run's clips (nearindex.CommittedKept says why that makes the stream's rejections the
    pass's own). Anything else: the stream rejects nothing and the pass decides alone."""
    stage = config.stages.get("filter")
    if stage is None or not getattr(stage, "near_duplicate_streaming", False):
        return None, "off (stages.filter.near_duplicate_streaming)"
    if not Location.of(out).local:  # workers read the index with DuckDB's read_parquet: local files only
        return None, "off: the output is on an object store (the end-of-run pass decides alone)"
    latest = StatusLog(out).latest()
    if not latest or not (latest.get("index") or {}).get("kept"):
        return None, "no kept clip decided yet: within this run, the end-of-run pass decides"
    if latest.get("made_by") == "refilter":
        settings = current_settings(out)
    else:
        settings = {"keep": stage.keep, "near_duplicate_distance": stage.near_duplicate_distance,
                    "dedup_bands": stage.dedup_bands}
    distance = settings["near_duplicate_distance"]
    if distance is None:
        return None, "off (near_duplicate_distance is null)"
    waves = Manifest(out).load()[0]
    committed = waves.filter(pc.equal(pc.list_value_length(waves.column("replaces")), 0)).column("wave_id")
    if not _continues(latest, settings["keep"], distance, int(settings["dedup_bands"]),
                      committed.to_pylist() + [first_wave]):
        return None, ("off: the end-of-run pass will decide every wave again (other settings, a wave given up, "
                      "a clock moved back, or an index due for a rebuild)")
    snapshot = CommittedKept(str(out), int(latest["version"]), float(distance), dict(latest["index"]))
    return snapshot, (f"against {snapshot.kept} kept clips of {len(latest['waves'])} decided waves "
                      f"(status v{snapshot.version})")


def has_clips(out: str | Path) -> bool:
    """Whether any committed clip row exists (videos that failed have a `videos` row only)."""
    return any(CommitLog(out).files("clips"))


def refilter(out: str | Path, keep: Any = UNCHANGED, near_duplicate_distance: Any = UNCHANGED,
             dedup_bands: Any = UNCHANGED, *, dry_run: bool = False, made_by: str = "refilter",
             incremental: bool = False, batch_clips: int = BATCH_CLIPS, exact_below: int = EXACT_BELOW,
             held: OutputLock | None = None, band_workers: int | None = None,
             start_ray: Callable[[], None] | None = None) -> Outcome:
    """Re-decide clips' statuses from stored scores; publish an overlay unless `dry_run`.

    `incremental`: decide only the waves the newest overlay has not decided, when it was made with the
    same settings and every new wave comes after the decided ones; else every wave is decided again.
    Waves are decided in order, in batches of about `batch_clips` clips: memory follows the batch; a pass of
    many batches looks up the band tables in Ray actors (bandjoin.band_actors: `band_workers`, `start_ray`).
    `held`: the output lock, when the caller holds it (a run's end-of-run pass)."""
    now = current_settings(out)
    keep = now["keep"] if keep is UNCHANGED else keep
    distance = now["near_duplicate_distance"] if near_duplicate_distance is UNCHANGED else near_duplicate_distance
    bands = int(now["dedup_bands"] if dedup_bands is UNCHANGED else dedup_bands)
    if distance is not None and not 0 <= distance < 2:
        raise ValueError(f"near_duplicate_distance: must be in [0, 2) (got {distance})")
    if not has_clips(out):
        raise ValueError(f"{out}: no clip committed yet (every source failed, or none was listed): "
                         "nothing to refilter")
    outcome = Outcome(str(out), keep, distance, bands, made_by)
    with output_lock(out, held), status_workspace(out) as root:
        # root: where overlay and index files are written and read: OUT itself, or for an output on a
        # store a local working copy of its status records and index, published back at the end.
        log = StatusLog(root)
        waves, schemas = Manifest(out).load()
        ordinary = pc.equal(pc.list_value_length(waves.column("replaces")), 0)
        committed = waves.filter(ordinary)  # a compaction wave brings no new clip
        ids = committed.column("wave_id").to_pylist()
        clip_counts = [json.loads(c).get("clips", 0) for c in committed.column("counts").to_pylist()]
        previous = log.latest() if incremental else None
        if not _continues(previous, keep, distance, bands, ids):
            previous = None
        decided = set(previous["waves"]) if previous else set()
        new = [(w, n) for w, n in zip(ids, clip_counts) if w not in decided]
        if previous is not None and not new:
            outcome.incremental = True
            return outcome  # nothing new: no catalog file is opened
        outcome.incremental = previous is not None
        con = connect(out)
        columns = arrow(con.sql("SELECT * FROM clips_written LIMIT 0")).schema
        try:
            expression = KeepExpression(keep, columns) if keep is not None else None
        except ValueError as err:
            raise ValueError(f"keep: {err}") from None
        version = log.next_version()
        index = None
        if distance is not None and "clip_embedding" in columns.names:
            index = NearIndex.load(root, previous["index"], exact_below) if previous and previous.get("index") \
                else NearIndex.new(root, bands, sum(n for _, n in new), exact_below)
        clip_files = live_files(waves).filter(pc.equal(live_files(waves).column("table"), "clips"))
        parts: list[str] = []
        log.recover()
        batches = list(grouped([w for w, _ in new], [n for _, n in new], batch_clips))
        with band_actors(str(out), index, len(batches), start_ray, band_workers):
            for batch in batches:
                part = decide(con, _batch_scan(out, con, clip_files, waves, schemas, batch), expression, distance,
                              index, outcome, version, log)
                if part:
                    parts.append(part)
        index_before = list(previous["index"]["files"]) if previous and previous.get("index") else []
        if index is not None:
            index.flush(version)
        written = parts + [f for f in (index.files if index else []) if f not in index_before]
        if parts:
            listing = "[" + ", ".join(_quote(str(Path(root) / p)) for p in parts) + "]"
            outcome.changes = con.execute(f"""
                SELECT c.status, split_part(c.reason, ':', 1), d.status, split_part(d.reason, ':', 1), count(*)
                FROM clips c JOIN read_parquet({listing}) d USING (clip_id, source_uri)
                WHERE c.status IS DISTINCT FROM d.status OR c.reason IS DISTINCT FROM d.reason
                GROUP BY ALL ORDER BY 5 DESC, 1, 2, 3, 4""").fetchall()
            outcome.totals = dict(con.execute(f"SELECT status, count(*) FROM read_parquet({listing}) "
                                              "GROUP BY 1 ORDER BY 1").fetchall())
        con.close()
        keeps_index = index is not None and index.kept > 0
        if dry_run or (made_by != "refilter" and not outcome.changes and not keeps_index):
            for rel in written:  # unlisted: nothing refers to them
                (Path(root) / rel).unlink(missing_ok=True)
            return outcome
        files = (record_files(previous) if previous else []) + parts
        record = log.publish(version, files, {
            "made_by": made_by, "keep": keep, "near_duplicate_distance": distance, "dedup_bands": bands,
            "waves": sorted(decided | {w for w, _ in new}), "duplicates": outcome.duplicates,
            "duplicates_total": (previous or {}).get("duplicates_total", 0) + outcome.duplicates,
            "index": index.state() if index is not None else None})
        if root is not out:  # a store: the new files first, the record last (it is what makes them visible)
            publish_to_store(Location.of(out), root, written, f"{RECORDS}/v{version:06d}.json")
        outcome.version = record["version"]
    return outcome


@contextlib.contextmanager
def status_workspace(out) -> Iterator:
    """OUT for a local output. For an output on a store: a local folder holding its status records and
    the current near-duplicate index (what a pass reads besides the catalog), deleted after; objects
    under status/ that no record lists (a pass that died before its record) are deleted from the store."""
    loc = Location.of(out)
    if loc.local:
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="vidprep-status-") as folder:
        root = Path(folder)
        records = [n for n in loc.names(RECORDS) if n.endswith(".json")]
        for name in records:
            (root / RECORDS).mkdir(exist_ok=True)
            (root / RECORDS / name).write_bytes(loc.read_bytes(f"{RECORDS}/{name}"))
        log = StatusLog(root)
        listed = {f for r in log.records() for f in record_files(r, with_index=True)}
        for rel in loc.files(FILES):
            if rel not in listed and OWN_FILE.fullmatch(rel.rsplit("/", 1)[-1]):
                loc.delete(rel)
        latest = log.latest()
        index = (latest or {}).get("index") or {}
        for rel in index.get("files", []):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(loc.read_bytes(rel))
        yield root


def publish_to_store(loc: Location, root: Path, files: list[str], record: str) -> None:
    for rel in files:
        loc.write_bytes(rel, (root / rel).read_bytes())
    loc.write_bytes(record, (root / record).read_bytes())


def _continues(previous: dict[str, Any] | None, keep, distance, bands: int, committed: list[str]) -> bool:
    """May the pass go on from `previous`: same settings, every new wave after every decided one."""
    if not previous or "waves" not in previous or "files" not in previous:
        return False  # an overlay from before incremental passes: decide everything once
    if (previous.get("keep"), previous.get("near_duplicate_distance"), previous.get("dedup_bands")) != \
            (keep, distance, bands):
        return False
    decided = set(previous["waves"])
    if not decided <= set(committed):
        return False  # a wave was given up: its kept clips may be in the index
    newer = [w for w in committed if w not in decided]
    if decided and newer and min(newer) < max(decided):
        return False  # a wave that sorts before decided ones (a clock moved back): decide everything again
    index = previous.get("index")
    if distance is not None and (index is None or NearIndex.load(".", index).too_full()):
        return False
    return True


def _batch_scan(out, con, clip_files: pa.Table, waves: pa.Table, schemas, batch: list[str]) -> str:
    """A relation over the clips of the waves in `batch`: their own files, and any compacted file."""
    compacted = set(waves.filter(pc.greater(pc.list_value_length(waves.column("replaces")), 0))
                    .column("wave_id").to_pylist())
    wanted = pa.array(sorted(set(batch) | compacted), pa.string())
    files = clip_files.filter(pc.is_in(clip_files.column("wave_id"), value_set=wanted))
    con.register("_batch_waves", pa.table({"wave_id": pa.array(batch, pa.string())}))
    if not files.num_rows:
        return "(SELECT * FROM clips_written LIMIT 0)"
    loc = Location.of(out)
    if loc.local:
        scan = declared_scan(con, Path(out), files, schemas)
    else:  # a store: the batch's files as an Arrow dataset (pipeline/catalog/views.py)
        keys = dict.fromkeys(files.column("schema_id").to_pylist())
        con.register("_arrow_batch", store_dataset(loc, files.column("path").to_pylist(),
                                                   [schemas[k] for k in keys if k in schemas]))
        scan = "SELECT * FROM _arrow_batch"
    return f"({scan}) WHERE wave_id IN (SELECT wave_id FROM _batch_waves)"


def decide(con, relation: str, expression: KeepExpression | None, distance: float | None,
           index: NearIndex | None, outcome: Outcome, version: int, log: StatusLog) -> str | None:
    """Decide the clips of `relation` (see the module docstring) inside DuckDB and write them as one overlay
    file (returns its path; None: no clip). Python holds only the kept clips' embeddings, for the index."""
    conditions = f", {expression.select_list()}" if expression else ""
    why = expression.reason_sql() if expression else "NULL"
    embedding = ", clip_embedding" if index is not None else ""
    stream_filtered = " OR ".join(f"starts_with(coalesce(reason, ''), '{code}:')"
                                  for code in (REASON, ERROR_REASON, DUPLICATE))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _judged AS
        SELECT *, eligible AND why IS NULL AS kept FROM (
            SELECT *, CASE WHEN eligible THEN {why} END AS why FROM (
                SELECT clip_id, source_uri, wave_id, start_frame, status, reason,
                       status = 'accepted' OR {stream_filtered} AS eligible,
                       {stream_filtered} AS was_filtered
                       {conditions}{embedding}
                FROM (SELECT * FROM {relation})))""")
    if not con.execute("SELECT count(*) FROM _judged").fetchall()[0][0]:
        return None
    con.execute("CREATE OR REPLACE TEMP TABLE _duplicates (clip_id VARCHAR, source_uri VARCHAR, of VARCHAR)")
    if index is not None:
        outcome.unscored += con.execute("SELECT count(*) FROM _judged WHERE kept AND clip_embedding IS NULL"
                                        ).fetchall()[0][0]
        kept = arrow(con.sql("""SELECT clip_id, source_uri, clip_embedding FROM _judged
                                WHERE kept AND clip_embedding IS NOT NULL
                                ORDER BY wave_id, source_uri, start_frame, clip_id"""))
        if kept.num_rows:
            vectors = kept.column("clip_embedding").combine_chunks()
            if len(set(pc.list_value_length(vectors).unique().to_pylist())) != 1:
                raise ValueError("clip_embedding has vectors of different lengths (runs with different models?)")
            of = index.decide(kept.column("clip_id").to_pylist(), kept.column("source_uri").to_pylist(),
                              vectors, distance, version)
            found = pa.table({"clip_id": kept.column("clip_id"), "source_uri": kept.column("source_uri"),
                              "of": pa.array(of, pa.string())}).filter(pc.is_valid(pa.array(of, pa.string())))
            outcome.duplicates += found.num_rows
            con.register("_found", found)
            con.execute("INSERT INTO _duplicates SELECT * FROM _found")
            con.unregister("_found")
    outcome.streamed += con.execute(f"""SELECT count(*) FROM _judged
                                         WHERE starts_with(coalesce(reason, ''), '{DUPLICATE}:')""").fetchall()[0][0]
    outcome.skipped_downstream += con.execute("""
        SELECT count(*) FROM _judged j ANTI JOIN _duplicates d USING (clip_id, source_uri)
        WHERE j.kept AND j.was_filtered""").fetchall()[0][0]
    tmp = log.temporary_part(version)
    con.execute(f"""COPY (
        SELECT j.clip_id, j.source_uri,
               CASE WHEN d.of IS NOT NULL THEN 'rejected' WHEN j.kept THEN 'accepted'
                    WHEN j.eligible THEN 'rejected' ELSE j.status END AS status,
               CASE WHEN d.of IS NOT NULL THEN '{DUPLICATE}:' || d.of WHEN j.kept THEN NULL
                    WHEN j.eligible THEN j.why ELSE j.reason END AS reason
        FROM _judged j LEFT JOIN _duplicates d USING (clip_id, source_uri)
        ORDER BY j.clip_id, j.source_uri) TO {_quote(str(tmp))} (FORMAT parquet, COMPRESSION zstd)""")
    con.execute("DROP TABLE _judged; DROP TABLE _duplicates")
    return log.adopt_part(tmp, version)


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def format_outcome(outcome: Outcome) -> str:
    """What a person reads after a refilter (or the end-of-run pass)."""
    dedup = (f"cosine distance <= {outcome.near_duplicate_distance} ({outcome.dedup_bands} LSH bands)"
             if outcome.near_duplicate_distance is not None else "off")
    written = f"status v{outcome.version}" if outcome.version else "nothing written"
    lines = [f"{outcome.made_by} {outcome.out} → {written}",
             f"  keep             {outcome.keep if outcome.keep is not None else '(every clip)'}",
             f"  near-duplicates  {dedup}: {outcome.duplicates} found"
             + (f" ({outcome.streamed} already in the stream, before the model stages)" if outcome.streamed else ""),
             ("  new clips        " if outcome.incremental else "  clips            ")
             + (", ".join(f"{k} {v}" for k, v in sorted(outcome.totals.items())) or "none")]
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
