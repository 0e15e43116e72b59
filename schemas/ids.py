"""Content-derived ids: reruns and retries of the same bytes give the same ids.

video_id hashes the file size and three 256 KiB samples (start, middle, end),
so it costs three reads whatever the file's size. clip_id is
uuid5(video_id, "start:end") over the clip's frame span (end exclusive).
"""
from __future__ import annotations

import hashlib
import uuid
from typing import BinaryIO

SAMPLE_BYTES = 256 * 1024


def video_id_from_file(handle: BinaryIO, size: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(size.to_bytes(8, "little"))
    for offset in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
        handle.seek(offset)
        digest.update(handle.read(SAMPLE_BYTES))
    return str(uuid.UUID(bytes=digest.digest()))


def video_id_from_uri(uri: str) -> str:
    """Fallback id for a source whose bytes can't be read: stable for the same name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, uri))


def clip_id(video_id: str, start_frame: int, end_frame: int) -> str:
    return str(uuid.uuid5(uuid.UUID(video_id), f"{start_frame}:{end_frame}"))
