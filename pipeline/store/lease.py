"""One run per output: `OutputLock`, an flock on a local folder, and on an object store a lease taken
with a conditional create.

An object store has no flock. A run takes the output by creating the next lease object

    OUT/_lease/<generation>.json   {owner, host, pid, run, expires_at, released}

with a conditional PUT (S3's If-None-Match: *, pipeline/store/location.py): of two runs that try the
same generation, exactly one succeeds, atomically on the server. The holder renews its lease (rewrites
its own object with a later `expires_at`) every third of `ttl_s` from a thread, and marks it released
when it ends. A second run finds the newest generation active and refuses, naming the holder; it may
take the next generation only when that one is released, expired (the holder died `ttl_s` ago), or
held by a process of this same host that no longer exists (a killed run, rerun at once, waits for
nothing). A holder that finds a newer generation than its own has lost the output (it was paused
past its expiry) and stops before its next commit.

Why a lease and not only the conditional create: a run killed with SIGKILL can't delete its lock,
and an object store has no process to notice; the expiry frees it without a person.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time

from pipeline.store.location import Location

FOLDER = "_lease"
TTL_S = 120.0  # a dead holder on another host blocks the output this long
log = logging.getLogger("vidprep")


class OutputTaken(RuntimeError):
    """Another run holds the output; the message names it."""


class StoreLease:
    def __init__(self, loc: Location, ttl_s: float = TTL_S, run_id: str = ""):
        self.loc, self.ttl_s, self.run_id = loc, float(os.environ.get("VIDPREP_LEASE_TTL_S", ttl_s)), run_id
        self.owner = secrets.token_hex(8)
        self.generation: int | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "StoreLease":
        newest = self._newest()
        if newest is not None:
            generation, lease = newest
            if self._active(lease):
                raise OutputTaken(
                    f"another vidprep run is writing to {self.loc} (run {lease.get('run')!r} on host "
                    f"{lease.get('host')}, pid {lease.get('pid')}; its lease runs until "
                    f"{time.strftime('%H:%M:%S', time.localtime(lease['expires_at']))} unless renewed): wait for "
                    "it to end, or choose another output")
        self.generation = newest[0] + 1 if newest else 1
        if not self.loc.create_exclusive(self._name(self.generation), self._body(released=False)):
            raise OutputTaken(f"another vidprep run took {self.loc} at the same moment: choose another output, "
                              "or run again once it ends")
        for old in self._generations()[:-1]:  # the newest stays: the next run numbers after it
            if old < self.generation:
                self.loc.delete(self._name(old))
        self._thread = threading.Thread(target=self._renew, name="vidprep-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost:
            self.loc.write_bytes(self._name(self.generation), self._body(released=True))

    def check(self) -> None:
        """Raise if another run took the output (this one was paused past its lease)."""
        if self.lost:
            raise OutputTaken(f"{self.loc}: this run's lease expired and another run took the output; "
                              "stopping before the next commit (what was committed stays)")

    # -- internals ------------------------------------------------------------------------------
    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3) and self.renew():
            pass

    def renew(self) -> bool:
        """Push the expiry `ttl_s` ahead; False (and `lost`) when a newer generation exists."""
        if self._generations()[-1:] != [self.generation]:
            self.lost = True
            log.error("%s: another run took the output; this run stops before its next commit", self.loc)
            return False
        self.loc.write_bytes(self._name(self.generation), self._body(released=False))
        return True

    def _active(self, lease: dict) -> bool:
        if lease.get("released") or lease.get("expires_at", 0) < time.time():
            return False
        if lease.get("host") == socket.gethostname() and not _alive(int(lease.get("pid", 0))):
            return False  # a run killed on this machine: its process is gone, nothing else can hold it
        return True

    def _newest(self) -> tuple[int, dict] | None:
        generations = self._generations()
        if not generations:
            return None
        try:
            lease = json.loads(self.loc.read_bytes(self._name(generations[-1])))
        except (ValueError, FileNotFoundError):
            lease = {}  # damaged or deleted in between: expired
        return generations[-1], lease

    def _generations(self) -> list[int]:
        return sorted(int(n[:-5]) for n in self.loc.names(FOLDER) if n.endswith(".json") and n[:-5].isdigit())

    def _name(self, generation: int) -> str:
        return f"{FOLDER}/{generation:010d}.json"

    def _body(self, released: bool) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "run": self.run_id, "expires_at": time.time() + self.ttl_s,
                           "released": released}).encode()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """One run per output folder at a time (an advisory lock on OUT/.lock; a lease on a store,
    pipeline/store/lease.py)."""

    def __init__(self, out: "str | Path | Location", run_id: str = ""):
        loc = Location.of(out)
        self.lease = None if loc.local else StoreLease(loc, run_id=run_id)
        self.path = loc.path / ".lock" if loc.local else None

    def check(self) -> None:
        """Raise if the output was taken from this run (a store lease that expired while paused)."""
        if self.lease is not None:
            self.lease.check()

    def __enter__(self):
        if self.lease is not None:
            self.lease.__enter__()
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise RuntimeError(f"another vidprep run is writing to {self.path.parent}") from None
        return self

    def __exit__(self, *exc):
        if self.lease is not None:
            return self.lease.__exit__(*exc)
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def output_lock(out: "str | Path | Location", held: OutputLock | None = None):
    """The output's lock for a writer: taken here, or `held` by the caller (a run's end-of-run pass and
    compaction go on under the run's lock, so no other writer slips in between its commits and them)."""
    return contextlib.nullcontext(held) if held is not None else OutputLock(out)
