"""`vidprep run`: list sources, skip committed ones, stream them through the plan, commit waves.

    sources ─► pending table ─► probe ─► split ─► … ─► WaveWriter ─► manifests ─► commit per wave
    (listing,   (ordinal,        1:1      1:N          (task: staged   (driver:      (rename + record)
     streamed)   source, wave)                          Parquet)        WaveTracker)
"""
from __future__ import annotations

import json
import logging
import platform
import sys
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.commit import STAGING, CommitLog, WaveWriter, write_json
from pipeline.store.compact import compact_if_many
from pipeline.store.lease import OutputLock
from pipeline.config import Config
from pipeline.run.executors import RayExecutor, SequentialExecutor, init_ray
from pipeline.store.faults import crash_point
from pipeline.store.location import Location, with_endpoint
from pipeline.store.manifest import Manifest
from pipeline.store.ownership import claim_output
from pipeline.store.writable import probe as probe_writable, unwritable_as_error
from pipeline.run.registry import committed_owners
from pipeline.run.listing import list_sources
from pipeline.run.devices import summarise as summarise_devices
from pipeline.run.plan import fit as fit_plan, plan_record
from pipeline.run.visibility import check_nodes, local_paths
from pipeline.run.console import Progress, log_path, progress_lines, run_logging
from pipeline.run.terminal import exit_on_second_interrupt, stdin_detached
from pipeline.typed import ConfigError
from pipeline.run.waves import WaveTracker
from schemas.catalog import CLIPS, extend

log = logging.getLogger("vidprep")
PENDING_SCHEMA = pa.schema([("ordinal", pa.int64()), ("source_uri", pa.string()), ("wave_id", pa.string())])
PACKAGES = ("vidprep", "ray", "pyarrow", "duckdb", "decord", "scenedetect", "av", "numpy", "torch",
            "opencv-python-headless")


@dataclass
class RunResult:
    run_id: str
    out: Path
    listed: int = 0
    skipped: int = 0  # already committed by an earlier run
    processed: int = 0
    waves: int = 0
    clips: int = 0
    recovered: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    decisions: Any = None  # the end-of-run status pass (near-duplicates), pipeline.catalog.refilter.Outcome
    compaction: Any = None  # pipeline.store.compact.Compaction when run.compact_above_files was passed
    plan: list[dict[str, Any]] = field(default_factory=list)  # each stage as scheduled (run.json's "plan")
    devices: list[dict[str, Any]] = field(default_factory=list)  # what model stages ran on (run.json's "devices")
    source: str = ""  # the input as given (absolute for a local path)
    extensions: list[str] = field(default_factory=list)  # what the listing looked for
    recursive: bool = True

    @property
    def nothing_listed(self) -> bool:
        """The input held no file with a configured extension: nothing to do (exit 0)."""
        return self.listed == 0

    @property
    def no_clip_produced(self) -> bool:
        """Sources were processed, and every one of them became an error row (exit 4: NO_CLIPS)."""
        return self.processed > 0 and self.clips == 0


class RunInterrupted(Exception):
    """Ctrl-C during a run: what was committed before it (`result`); a rerun resumes from there."""

    def __init__(self, result: RunResult):
        super().__init__(f"interrupted after {result.waves} committed waves")
        self.result = result


def run(config: Config, source: str, output: str | Path, *, progress: bool = True,
        allow_config_change: bool = False, verbose: bool = False, interval: float = 10.0) -> RunResult:
    """One run. `progress`: Ray Data's per-stage bars, on a terminal only; `verbose`: Ray's and the
    libraries' lines on the console too (they always go to OUT/logs/<run_id>.log); `interval`:
    seconds between vidprep's progress lines."""
    # The pending table and staged files are read and written by workers: an absolute path, or a URI
    # that carries its endpoint (pipeline/store/location.py).
    loc = Location.of(output, config.storage.endpoint, config.storage.region)
    out = loc.path if loc.local else loc
    if "://" not in source:  # a local input: workers in other folders get absolute source paths
        source = str(Path(source).absolute())
    else:  # a store: its endpoint explicit in the URI, so every listed source URI carries it
        source = with_endpoint(source, config.storage.endpoint, config.storage.region)
    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + secrets.token_hex(3)
    result = RunResult(run_id=run_id, out=out, source=source, extensions=list(config.input.extensions),
                       recursive=config.input.recursive)
    with unwritable_as_error(str(out)):  # read-only, no permission, no space: one line naming the path (exit 3)
        return _run(config, source, out, result, started, progress, allow_config_change, verbose, interval)


def _run(config: Config, source: str, out: "Path | Location", result: RunResult, started: float, progress: bool,
         allow_config_change: bool, verbose: bool, interval: float) -> RunResult:
    claim_output(out, source)  # refuses a folder that is not vidprep's or overlaps the input, before any write
    probe_writable(out)  # a read-only or full output fails here, before any work
    run_id = result.run_id
    loc = Location.of(out)
    logs = log_path(out if loc.local else Path(tempfile.gettempdir(), "vidprep"), run_id)
    try:
        # vidprep reads nothing from a terminal; a child that does (scenedetect's ffmpeg probe) would hang
        # the run, so every process started during it (the embedded Ray cluster included) gets /dev/null.
        with stdin_detached(), OutputLock(out, run_id) as lock, run_logging(logs, verbose):
            commits = CommitLog(out)
            result.recovered = commits.recover()
            _check_fingerprint(commits, config, allow_config_change)
            pending_rel = f"{STAGING}/pending-{run_id}.parquet"
            pending = out / pending_rel if loc.local else loc.uri(pending_rel)
            wave_sizes, result.listed, result.skipped = write_pending(
                loc, pending_rel, list_sources(source, config.input.extensions, config.input.recursive,
                                      config.input.follow_symlinks),
                commits.committed_sources(), config.run.wave_size, run_id)
            result.processed = sum(wave_sizes.values())
            log.info("%d sources listed, %d already committed, %d to process in %d waves (log: %s)",
                     result.listed, result.skipped, result.processed, len(wave_sizes), logs)
            if result.processed:
                bars = progress and sys.stderr.isatty()  # off a terminal Ray's bars are a 20-line dump
                _execute(config, source, pending, result, wave_sizes, commits, bars, interval, lock)
            loc.delete(pending_rel)
            result.wall_s = time.time() - started
            _write_run_json(loc, config, result, started)
            _end_of_run(out, config, result, lock)  # under the lock: no writer between the commits and the pass
        if not loc.local:  # the log was written here; a copy goes beside the output's records
            loc.write_bytes(f"logs/{run_id}.log", logs.read_bytes())
    except KeyboardInterrupt:
        exit_on_second_interrupt()
        raise RunInterrupted(result) from None
    return result


def _end_of_run(out: "Path | Location", config: Config, result: RunResult, lock: OutputLock) -> None:
    """The status pass (near-duplicates need every committed clip: after the commits), then compaction,
    both under the run's own lock."""
    from pipeline.catalog.refilter import after_run

    # After the run's Ray stopped with its executor: a pass of many batches starts or joins Ray again (the
    # run's cluster, run.ray_address) for its band actors (pipeline/catalog/bandjoin.py).
    start_ray = (lambda: init_ray(config.run.ray_address, config.run.num_cpus)) if config.run.runner == "ray" else None
    result.decisions = after_run(out, config, held=lock, start_ray=start_ray)
    result.compaction = compact_if_many(out, config.run.compact_above_files, held=lock)
    if result.compaction:
        log.info("compacted %s catalog files into %s (%s)", sum(result.compaction.replaced.values()),
                 sum(result.compaction.written.values()), result.compaction.wave_id)


def _execute(config: Config, source: str, pending: Path, result: RunResult, wave_sizes: dict[str, int],
             commits: CommitLog, bars: bool, interval: float, lock: OutputLock) -> None:
    if config.run.runner == "ray":
        executor = RayExecutor(config.run.ray_address, config.run.num_cpus, config.run.videos_per_task,
                               config.run.writer_rows, bars, config.run.task_retries, config.run.actor_restarts,
                               config.run.wave_size)
    else:
        executor = SequentialExecutor(config.run.videos_per_task, config.run.writer_rows)
    tracker = WaveTracker(wave_sizes)
    counts = Progress(listed=result.processed)
    plan = config.plan()
    _stream_near_duplicates(config, plan, result)
    clips_schema = extend(CLIPS, [f for stage in plan for f in stage.catalog_fields])
    try:
        # gpus: auto → shares; a plan Ray could never schedule stops here, not in a hang
        fit_plan(plan, executor.cluster(), scheduled=config.run.runner == "ray")
        if config.run.runner == "ray":  # a node without the shared disk: stop here, naming field and node
            problems = check_nodes(local_paths(plan, source, result.out))
            if problems:
                raise ConfigError("; ".join(problems))
        result.plan = plan_record(plan)
        registry = executor.registry(committed_owners(result.out))
        devices = executor.device_log()
        # absolute, or the store's URI with its endpoint: workers may run elsewhere
        writer = WaveWriter(str(result.out.resolve()) if isinstance(result.out, Path) else str(result.out),
                            clips_schema, registry)
        fingerprint = config.fingerprint()
        with executor.worker_output(), progress_lines(counts, interval):
            try:
                for manifest in executor.execute(pending, result.processed, plan, writer, devices):
                    crash_point("manifest")
                    counts.manifest(manifest)
                    for wave_id in tracker.add(manifest):
                        sources, files = tracker.take(wave_id)
                        lock.check()  # a store lease another run took: stop before writing a record
                        record = commits.commit(wave_id, result.run_id, sources, files, fingerprint)
                        result.waves += 1
                        result.clips += record["counts"].get("clips", 0)
                        counts.committed(result.out, record["files"])
                        log.info("committed %s: %d videos, %d clips; %s", wave_id, len(sources),
                                 record["counts"].get("clips", 0), counts.line())
            finally:
                result.devices = summarise_devices(devices.all())  # before close: the log lives in Ray
                executor.close()  # still inside worker_output: Ray's last lines go to the log too
    finally:
        executor.close()  # an embedded Ray cluster stops with its run, Ctrl-C included
    missing = tracker.incomplete()
    if missing:  # a bug, not bad input: every source must come back as at least one row
        raise RuntimeError(f"waves not complete after the plan finished: {missing}")


def _stream_near_duplicates(config: Config, plan: list, result: RunResult) -> None:
    """Hand the filter stage the clips kept by earlier runs' end-of-run passes, read-only, so that it
    rejects their near-duplicates before caption, expand and encode (pipeline/catalog/nearindex.py
    CommittedKept). Read once here, at run start: every batch is judged against the same snapshot."""
    stage = next((s for s in plan if s.name == "filter"), None)
    if stage is None or stage.near_duplicate_distance is None:
        return
    from pipeline.catalog.refilter import streaming_snapshot

    snapshot, why = streaming_snapshot(result.out, config, f"{result.run_id}-{0:06d}")
    stage.reject_against(snapshot)
    log.info("near-duplicates in the stream: %s", why)


def write_pending(loc: Location, rel: str, sources, committed: set[str], wave_size: int, run_id: str,
                  chunk: int = 8192) -> tuple[dict[str, int], int, int]:
    """Stream the sources not yet committed into a Parquet table (OUT/`rel`); assign waves in listing order."""
    if loc.local:
        Path(loc.full(rel)).parent.mkdir(parents=True, exist_ok=True)
    wave_sizes: dict[str, int] = {}
    listed = skipped = ordinal = 0
    rows: list[tuple[int, str, str]] = []
    with pq.ParquetWriter(loc.full(rel), PENDING_SCHEMA, **loc.filesystem) as writer:
        def flush():
            if rows:
                columns = list(zip(*rows))
                writer.write_table(pa.table(dict(zip(PENDING_SCHEMA.names, columns)), schema=PENDING_SCHEMA))
                rows.clear()

        for uri in sources:
            listed += 1
            if uri in committed:
                skipped += 1
                continue
            wave_id = f"{run_id}-{ordinal // wave_size:06d}"
            wave_sizes[wave_id] = wave_sizes.get(wave_id, 0) + 1
            rows.append((ordinal, uri, wave_id))
            ordinal += 1
            if len(rows) >= chunk:
                flush()
        flush()
    return wave_sizes, listed, skipped


def _check_fingerprint(commits: CommitLog, config: Config, allow: bool) -> None:
    """Refuse to mix catalogs made with different split/scoring settings in one output."""
    previous = set(Manifest(commits.out).load()[0].column("config_fingerprint").to_pylist())  # no record read
    current = config.fingerprint()
    if previous and previous != {current} and not allow:
        raise ConfigError(f"{commits.out} was written with other stage settings (fingerprint "
                          f"{sorted(previous)} vs {current}); use a new output, or pass "
                          "--allow-config-change to mix them")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _write_run_json(loc: Location, config: Config, result: RunResult, started: float) -> None:
    totals: dict[str, int] = {}
    for counts in Manifest(loc).load()[0].column("counts").to_pylist():  # the records' counts, via the manifest
        for table, count in json.loads(counts).items():
            totals[table] = totals.get(table, 0) + count
    info: dict[str, Any] = {
        "run_id": result.run_id, "started_at": started, "wall_s": round(result.wall_s, 3),
        "config": config.as_dict(), "config_fingerprint": config.fingerprint(), "versions": versions(),
        "counts": {"listed": result.listed, "skipped_committed": result.skipped, "processed": result.processed,
                   "waves_committed": result.waves, "clips_committed": result.clips, "catalog_totals": totals},
        "recovered": result.recovered, "host": platform.node(), "plan": result.plan,
        "devices": result.devices,
    }
    write_json(loc, "run.json", info)
    write_json(loc, f"_runs/{result.run_id}.json", info)
