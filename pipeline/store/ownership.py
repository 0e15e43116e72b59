"""Which folders and files are vidprep's: the only ones it may clean up.

A run deletes files (staging leftovers, files published by a wave that died
before its record), so it must never run on a folder that holds anything
else. An output is vidprep's when it carries the marker `OUT/_vidprep.json`,
written when vidprep first uses the folder; vidprep takes a new or empty
folder, or one made by an older vidprep (with `_commits/` or `run.json`, the
marker is added then). Anything else is refused before a file is touched,
as is an output that overlaps the input (the same folder, or one inside the
other): recovery there could reach the sources.

Inside its own output, vidprep deletes a data file only if a publish journal
of its own lists it (pipeline/store/commit.py) and the name is one vidprep
gives (`<wave>-part-<hash>.parquet`); a file a person put there stays.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import urlparse

MARKER = "_vidprep.json"
LEGACY_SIGNS = ("_commits", "run.json")  # outputs of vidprep before the marker existed
DATA_FILE = re.compile(r"[0-9A-Za-z_.=-]+-part-[0-9a-f]+\.parquet")  # published wave files
DATA_DIRS = ("catalog", "shards")


class OutputRefused(ValueError):
    """An output folder vidprep will not write into; the message names the path and why."""


def claim_output(out, source: str | None = None):
    """Check `out` is safe to write and clean up, and mark it as vidprep's (before any file is touched)."""
    from pipeline.store.location import Location

    loc = Location.of(out)
    if not loc.local:
        if source is not None and "://" in source:
            check_no_overlap_store(loc, source)
        return _claim_store(loc)
    out = loc.path
    if source is not None:
        check_no_overlap(out, source)
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"output {out} exists and is not a folder")
    if is_claimed(out):
        return out
    if out.is_dir() and any(out.iterdir()) and not any((out / sign).exists() for sign in LEGACY_SIGNS):
        raise OutputRefused(
            f"output {out} is a folder with other files in it and no {MARKER}: vidprep writes only into a new "
            "or empty folder, or one it made, since a rerun deletes files it finds under catalog/ and shards/ "
            "that it wrote but never committed; choose a new output folder")
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(out)
    return out


def _claim_store(loc):
    """The same rule for a prefix on an object store: new, empty, or vidprep's."""
    if is_claimed(loc):
        return loc
    names = loc.names()
    if names and not any(sign in names for sign in LEGACY_SIGNS):
        raise OutputRefused(f"output {loc} holds other objects and no {MARKER}: vidprep writes only into a new "
                            "or empty prefix, or one it made, since a rerun deletes objects it finds under catalog/ "
                            "and shards/ that it wrote but never committed; choose a new output prefix")
    from pipeline.store.commit import write_json

    write_json(loc, MARKER, _marker())
    return loc


def is_claimed(out) -> bool:
    from pipeline.store.location import Location

    loc = Location.of(out)
    if not loc.is_file(MARKER):
        return False
    marker = loc.uri(MARKER)
    try:
        return json.loads(loc.read_bytes(MARKER)).get("vidprep_output") == 1
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise OutputRefused(f"{marker}: not a vidprep marker (damaged?); vidprep will not clean up this "
                            "folder: restore the file or choose a new output folder") from None


def require_claimed(out: str | Path) -> None:
    """Guard for code that deletes: the folder must be one vidprep marked as its own."""
    if not is_claimed(out):
        raise OutputRefused(f"output {out} has no {MARKER}: vidprep deletes nothing in a folder it did not make")


def check_no_overlap(out: str | Path, source: str) -> None:
    """Refuse an output that is the input, inside it, or contains it (local inputs only)."""
    if urlparse(source).scheme not in ("", "file"):
        return  # a remote input can't share a local folder with the output
    path = source[len("file://"):] if source.startswith("file://") else source
    src, dst = Path(os.path.realpath(path)), Path(os.path.realpath(out))
    if src == dst:
        why = "is the input"
    elif src in dst.parents:
        why = f"is inside the input {source}"
    elif dst in src.parents:
        why = f"contains the input {source}"
    else:
        return
    raise OutputRefused(f"output {out} {why}: choose an output folder apart from the input")


def check_no_overlap_store(loc, source: str) -> None:
    """The same refusal on a store: an output prefix that is the input's, inside it, or contains it."""
    from pipeline.store.location import Location

    src = Location.of(source)
    if type(src.fs) is not type(loc.fs):
        return
    a, b = src.root.rstrip("/") + "/", loc.root.rstrip("/") + "/"
    if a.startswith(b) or b.startswith(a):
        raise OutputRefused(f"output {loc} overlaps the input {source}: choose an output prefix apart from the input")


def is_own_data_file(out: Path, rel: str) -> bool:
    """A path a publish journal names: inside OUT/catalog or OUT/shards, a regular file, named like vidprep's."""
    path = out / rel
    if path.is_symlink() or not path.is_file() or not DATA_FILE.fullmatch(path.name):
        return False
    real, root = Path(os.path.realpath(path)), Path(os.path.realpath(out))
    return any(root / top in real.parents for top in DATA_DIRS)


def _write_marker(out: Path) -> None:
    from pipeline.store.commit import atomic_write_json

    atomic_write_json(out / MARKER, _marker())


def _marker() -> dict:
    return {"vidprep_output": 1, "created_at": time.time(),
            "note": "this folder is a vidprep output: vidprep may delete files it wrote here (never others)"}
