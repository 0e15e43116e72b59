"""Private helpers shared by the video stages: opening sources, sizes, rotation, JPEG."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tempfile
from typing import Iterator
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlparse

import numpy as np


class SourceError(Exception):
    """A source that can't be processed; str() is the catalog's `error`: "<code>: <detail>"."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


def is_local(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_name(uri: str) -> str:
    """The local path of a plain path or a `file://` URI (percent-decoded, as RFC 8089 and pyarrow read it)."""
    if not uri.startswith("file://"):
        return uri
    return os.fsdecode(unquote_to_bytes(urlparse(uri).path))


def path_uri(path: str) -> str:
    """A local path as a source URI Arrow can store: the path itself when it is valid UTF-8, else a
    percent-encoded `file://` URI of its bytes, which `local_name` turns back into the same path.

    POSIX names are bytes; one that is not UTF-8 (b"\\xff\\xfe.mp4") comes from os.scandir as a str
    with surrogate escapes, which Arrow refuses. Encoding only such names keeps every other URI as it was.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return "file://" + quote_from_bytes(os.fsencode(os.path.abspath(path)), safe="/")


def regular_file_size(path: str) -> int:
    """Size of a local regular file; a FIFO, socket, device or directory is refused before any open.

    Opening a FIFO blocks until a writer appears (forever, for a stray `x.mp4` pipe), and a device
    never ends: only regular files are read. Symlinks are followed (a link to a file is fine).
    """
    try:
        info = os.stat(path)
    except OSError as err:
        raise SourceError("unreadable", err.strerror or str(err)) from None
    if stat.S_ISDIR(info.st_mode):
        raise SourceError("not_a_file", "is a directory")
    if not stat.S_ISREG(info.st_mode):
        kind = ("fifo" if stat.S_ISFIFO(info.st_mode) else "socket" if stat.S_ISSOCK(info.st_mode)
                else "device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "special file")
        raise SourceError("not_a_file", f"is a {kind}")
    return info.st_size


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path for `uri`: the file itself (checked to be a regular file), or a temporary copy fetched
    through pyarrow.fs."""
    if is_local(uri):
        path = local_name(uri)
        regular_file_size(path)  # every stage opens through here: a file swapped for a FIFO is refused too
        yield path
        return
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    suffix = os.path.splitext(path)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix, prefix="vidprep-") as tmp:
        with filesystem.open_input_stream(path) as src:
            shutil.copyfileobj(src, tmp, length=8 << 20)
        tmp.flush()
        yield tmp.name


def decode_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Decoder output size keeping aspect: short side → `short_side` (never upscaled), even sides."""
    scale = min(1.0, short_side / max(1, min(width, height)))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def rotate(frames: np.ndarray, degrees: int) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees) to (..., H, W, C) frames."""
    turns = (int(degrees) // 90) % 4
    return np.ascontiguousarray(np.rot90(frames, k=turns, axes=(-3, -2))) if turns else frames


def jpeg(frame: np.ndarray, max_side: int, quality: int = 85) -> bytes:
    from PIL import Image

    image = Image.fromarray(frame)
    image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
