"""What a person sees while `vidprep run` works, and where everything else goes.

The console carries vidprep's own lines: at start what will be processed, one line per committed
wave, and a compact progress line per interval (videos done of listed, rows written, rows/s,
clips accepted and rejected so far, ETA). On a terminal, Ray Data's live bars show each stage
(operators are named after their stage). Everything else (Ray's internals, its workers' output,
libraries' logs and warnings) goes to the run's log file, OUT/logs/<run_id>.log, and shows on the
console too with `-v`. Warnings and errors logged by vidprep itself (in the driver or a worker)
stay on the console.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from pipeline.store.location import Location

log = logging.getLogger("vidprep")
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A worker line vidprep logged at WARNING or above ("WARNING msg" or "<date> <time> WARNING msg").
_WORKER_WARNING = re.compile(r"^(\S+ \S+ )?(WARNING|ERROR|CRITICAL) ")


def log_path(out: Path, run_id: str) -> Path:
    return Path(out) / "logs" / f"{run_id}.log"


class ConsoleFilter(logging.Filter):
    """On the console: vidprep's lines (all lines with -v). Ray's and the libraries' errors are in
    the log; what failed reaches the console as vidprep's one-line error when the run stops."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.name == "vidprep" or record.name.startswith("vidprep.")


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


class _RunLog(logging.FileHandler):
    """The run's log file; keeps its own format (ray.init re-formats every handler of the `ray` logger)."""

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        if self.formatter is None:
            super().setFormatter(fmt)

    def handleError(self, record: logging.LogRecord) -> None:
        """A full or read-only disk under the log: the line is lost, and no `--- Logging error ---`
        traceback buries the one line the run stops with at its next data write (pipeline/store/writable.py)."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handleError(record)


@contextmanager
def run_logging(path: Path, verbose: bool = False) -> Iterator[logging.Handler]:
    """For one run: every log line into `path`; the console filtered (ConsoleFilter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = _RunLog(path, encoding="utf-8")
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter(FORMAT))
    quiet = ConsoleFilter(verbose)
    root = logging.getLogger()
    if not any(_is_console(h) for h in root.handlers):  # a library caller without logging set up
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(console)
    try:
        import ray.data  # noqa: F401  (its loggers and their console handlers exist from here on)
    except ImportError:  # the sequential runner works without Ray
        pass

    loggers = [root] + [logging.getLogger(name) for name in RAY_LOGGERS if logging.getLogger(name).handlers]
    filtered = [h for lg in loggers for h in lg.handlers if _is_console(h)]
    levels = {lg.name: lg.level for lg in loggers}
    for handler in filtered:
        handler.addFilter(quiet)
    for lg in loggers:
        lg.addHandler(file_handler)
    root.setLevel(min(root.level or logging.WARNING, logging.INFO))
    logging.captureWarnings(True)  # library warnings are log records (py.warnings): file, or -v
    try:
        yield file_handler
    finally:
        logging.captureWarnings(False)
        for handler in filtered:
            handler.removeFilter(quiet)
        for lg in loggers:
            lg.removeHandler(file_handler)
            lg.setLevel(levels[lg.name])
        file_handler.close()


@contextmanager
def worker_output_logged() -> Iterator[None]:
    """Ray prints its workers' stdout/stderr on the driver's console; send those lines to logging
    instead (logger `workers`: the run's log file), except vidprep's own warnings and errors.

    Uses Ray's stdstream dispatcher (not a public API): if it is not there, Ray prints as before."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        from ray._private.worker import print_to_stdstream, _should_ignore_worker_log_prefix, global_worker
    except ImportError:
        yield
        return
    workers, own = logging.getLogger("workers"), logging.getLogger("vidprep.worker")  # not under "ray": its level

    def to_log(data: dict) -> None:
        who = f"({data.get('actor_name') or data.get('task_name') or 'worker'} pid={data.get('pid')})"
        for line in data.get("lines", []):
            (own.warning if _WORKER_WARNING.match(line) else workers.info)("%s %s", who, line)

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("vidprep_worker_output", to_log)
    try:
        yield
    finally:
        dispatcher.remove_handler("vidprep_worker_output")
        import functools

        import ray

        if ray.is_initialized():  # Ray lives on after the run (a caller's cluster): it prints again
            dispatcher.add_handler("ray_print_logs", functools.partial(
                print_to_stdstream, ignore_prefix=_should_ignore_worker_log_prefix(global_worker)))


@dataclass
class Progress:
    """Driver-side counts from the writer's manifests and the commit records: no extra pass over data."""

    listed: int  # sources to process in this run
    started: float = field(default_factory=time.monotonic)
    videos: int = 0  # sources with every row written
    rows: int = 0  # rows written (clips, and one per video without clips)
    waves: int = 0
    accepted: int = 0
    rejected: int = 0
    _open: dict = field(default_factory=dict)  # rows so far of sources not yet complete
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def manifest(self, manifest) -> None:
        """A writer manifest: rows written per source; a source is done when its rows meet `expected`."""
        with self._lock:
            for row in manifest.select(["source_uri", "rows", "expected"]).to_pylist():
                self.rows += row["rows"]
                seen = self._open.pop(row["source_uri"], 0) + row["rows"]
                if seen >= row["expected"]:
                    self.videos += 1
                else:
                    self._open[row["source_uri"]] = seen

    def committed(self, out: Path, files: list[dict]) -> None:
        """A wave was published: count its clips' statuses (one column of its few files)."""
        accepted = rejected = 0
        for info in files:
            if info.get("table") == "clips":
                status = pq.read_table(Location.of(out).full(info["path"]), columns=["status"], **Location.of(out).filesystem).column(
                    "status").to_pylist()
                accepted += status.count("accepted")
                rejected += status.count("rejected")
        with self._lock:
            self.waves += 1
            self.accepted += accepted
            self.rejected += rejected

    def line(self) -> str:
        with self._lock:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            rate = self.videos / elapsed
            eta = f"{(self.listed - self.videos) / rate:.0f}s" if self.videos else "-"
            return (f"progress: {self.videos}/{self.listed} videos, {self.rows} rows ({self.rows / elapsed:.2f}/s), "
                    f"{self.waves} waves committed, clips {self.accepted} accepted / {self.rejected} rejected, "
                    f"{elapsed:.0f}s elapsed, ETA {eta}")


@contextmanager
def progress_lines(progress: Progress, interval: float) -> Iterator[None]:
    """One compact progress line per `interval` seconds (a thread: the driver may wait on Ray)."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(interval):
            log.info("%s", progress.line())

    thread = threading.Thread(target=tick, name="vidprep-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1)
