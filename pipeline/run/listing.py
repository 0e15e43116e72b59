"""Streaming listing of source videos: a local folder, a single file, a text file of URIs, or a pyarrow.fs URI.

A generator, never a list: a bucket of millions of objects is walked lazily
and written to the run's pending table in chunks, so driver memory does not
grow with the input. A local name that is not valid UTF-8 is yielded as a
percent-encoded `file://` URI (`stages.video.source.path_uri`), so it can be
stored in Arrow and opened again as the same bytes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from stages.video.source import path_uri


def list_sources(root: str, extensions: list[str], recursive: bool = True,
                 follow_symlinks: bool = False) -> Iterator[str]:
    """Yield source URIs under `root` whose names end in one of `extensions`, in a stable order."""
    exts = tuple(e.lower() for e in extensions)
    if root.endswith(".txt") and os.path.isfile(root):  # a list of URIs, one a line
        seen: set[str] = set()  # a hand-written list may repeat a line; a walk never does
        with open(root, "rb") as handle:
            for raw in handle:
                line = _list_line(raw.strip())
                if line and not line.startswith("#") and line not in seen:
                    seen.add(line)
                    yield line
        return
    scheme = urlparse(root).scheme
    if scheme not in ("", "file"):
        yield from _list_remote(root, exts, recursive)
        return
    path = Path(root[len("file://"):] if root.startswith("file://") else root)
    if not path.exists() and not path.is_symlink():
        raise FileNotFoundError(f"input {root!r} does not exist")
    if not path.is_dir() or path.name.lower().endswith(exts):
        yield path_uri(str(path))
        return
    yield from _walk(path, exts, recursive, follow_symlinks, seen=set())


def _walk(folder: Path, exts: tuple[str, ...], recursive: bool, follow: bool, seen: set) -> Iterator[str]:
    try:
        key = os.stat(folder).st_ino, os.stat(folder).st_dev
    except OSError:
        return
    if key in seen:  # a symlink loop: each directory once
        return
    seen.add(key)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        name = entry.name.lower()
        if name.endswith(exts):
            # Anything named like a video is a source, even a directory or a broken
            # link: probe turns it into an error row instead of it vanishing.
            yield path_uri(entry.path)
        elif recursive and entry.is_dir(follow_symlinks=follow):
            yield from _walk(Path(entry.path), exts, recursive, follow, seen)


def _list_line(raw: bytes) -> str:
    """A line of a URI list: UTF-8, or else the bytes of a local path (made a storable URI)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return path_uri(os.fsdecode(raw))


def _list_remote(root: str, exts: tuple[str, ...], recursive: bool) -> Iterator[str]:
    from pyarrow import fs

    filesystem, base = fs.FileSystem.from_uri(root)
    parts = urlparse(root)
    selector = fs.FileSelector(base, recursive=recursive, allow_not_found=False)
    infos = sorted(filesystem.get_file_info(selector), key=lambda i: i.path)
    for info in infos:
        if info.type == fs.FileType.File and info.path.lower().endswith(exts):
            # The root's query (endpoint_override, scheme, region) stays on every source URI: a worker
            # opening it must reach the same server, never the default public endpoint.
            yield parts._replace(netloc="", path="//" + info.path).geturl()
