"""An output that can't be written stops the run with one line naming the path and the cause.

A read-only mount, a folder without write permission, a missing parent that can't be made, a full
disk or a quota: these are the user's setup, not bugs, so they get no traceback and their own exit
code (3, pipeline/cli.py). They are found at start where they can be (`probe`: the folder is made,
a block is written, synced and removed, before any work), else at the failing write, wherever it
happens: in the driver, in a sequential stage, or in a Ray worker (Ray wraps the error; pyarrow
keeps only the errno in its message). Nothing half-written becomes visible either way: a wave is
visible only through its commit record, written last (pipeline/store/commit.py), and a rerun after
the problem is fixed resumes from the last committed wave.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# errno → the cause as a person reads it. Space and quota are output problems whatever the path
# (a full disk is a full disk); the others only when the path is inside the output, since a source
# that can't be read is that source's error row, never a reason to stop the run.
NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
NOT_WRITABLE = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted"}
PROBE_BYTES = 4096  # one block: a full file system refuses it, an empty file it would accept
_ERRNO_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)  # pyarrow: "... Detail: [errno 28] No space left"
_QUOTED_PATH = re.compile(r"'(/[^']+)'")  # pyarrow names the file in quotes


class OutputUnwritable(Exception):
    """The output (or a file in it) can't be written; the message names the path, the cause and what to do."""


def probe(out: str | Path) -> None:
    """Make `out` if needed and write, sync and remove one block in it: fails at start, not mid-run."""
    from pipeline.store.location import Location

    loc = Location.of(out)
    if not loc.local:  # a store: one small object written and deleted (credentials, bucket, permissions)
        name = f".vidprep-probe-{secrets.token_hex(4)}"
        try:
            loc.write_bytes(name, b"\0" * PROBE_BYTES)
            loc.delete(name)
        except OSError as err:
            raise OutputUnwritable(f"cannot write {loc}: {str(err).splitlines()[0]}; check the bucket, the "
                                   "endpoint (storage.endpoint) and the credentials, then run again") from err
        return
    out = loc.path
    with unwritable_as_error(out):
        out.mkdir(parents=True, exist_ok=True)
        path = out / f".vidprep-probe-{secrets.token_hex(4)}"
        try:
            with open(path, "wb") as handle:
                handle.write(b"\0" * PROBE_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            try:
                path.unlink()
            except FileNotFoundError:
                pass


@contextmanager
def unwritable_as_error(out: str | Path) -> Iterator[None]:
    """Inside: an OSError that is an output problem (see `output_problem`) becomes OutputUnwritable."""
    try:
        yield
    except OutputUnwritable:
        raise
    except Exception as err:  # noqa: BLE001 - only output problems are translated; the rest re-raised
        if "://" in str(out):
            raise
        problem = output_problem(err, Path(out))
        if problem is None:
            raise
        raise problem from err


def output_problem(err: BaseException, out: Path) -> OutputUnwritable | None:
    """The output problem behind `err` (through causes, contexts and Ray's `.cause`), or None.

    An OSError's own errno and file name first; only then an errno in a message (pyarrow's, or the
    text of a worker's traceback that Ray carries when it can't carry the exception itself)."""
    chain = _chain(err)
    for current in chain:
        if isinstance(current, OSError) and current.errno is not None:
            found = _as_problem(current.errno, current.filename, out)
            if found is not None:
                return found
    for current in chain:
        text = str(current)
        match = _ERRNO_TEXT.search(text)
        if not match:
            continue
        code, paths = int(match.group(1)), _QUOTED_PATH.findall(text)  # Python and pyarrow quote the file
        ours = [p for p in paths if _inside(p, out)]
        if code not in NO_SPACE and not ours:  # a text naming no file of the output: not known to be ours
            continue
        found = _as_problem(code, ours[0] if ours else (paths[0] if paths else None), out)
        if found is not None:
            return found
    return None


def _chain(err: BaseException) -> list[BaseException]:
    seen: set[int] = set()
    found: list[BaseException] = []
    stack: list[BaseException | None] = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        stack += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return found


def _as_problem(code: int, path, out: Path) -> OutputUnwritable | None:
    if code in NO_SPACE:
        cause, advice = NO_SPACE[code], "free some space"
    elif code in NOT_WRITABLE and (path is None or _inside(path, out)):
        cause, advice = NOT_WRITABLE[code], "make it writable (or choose another output)"
    else:
        return None
    shown = path if path is not None else out
    return OutputUnwritable(
        f"cannot write {os.fsdecode(shown)}: {cause} ({errno.errorcode.get(code, code)}); {advice}, then run the "
        "same command again (waves committed so far are kept; nothing half-written is visible)")


def _inside(path: str | bytes, out: Path) -> bool:
    """Whether `path` is `out`, in it, or a parent of it (making a missing parent of OUT fails there)."""
    real = Path(os.path.abspath(os.fsdecode(path)))
    root = Path(os.path.abspath(out))
    return real == root or root in real.parents or real in root.parents
