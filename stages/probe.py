"""Stage `probe` (1:1 video → video, CPU task): content id and container metadata.

Opens each source with PyAV, chooses its video stream (`stages/video/streams.py`;
the index is recorded as `stream_index` and every later stage decodes that
stream), reads its metadata and decodes its first frame (the display-matrix
rotation, and proof that the stream decodes at all). A
source that can't be used gets status `error` with a coded reason; the run goes on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from schemas.catalog import VIDEO_INFO
from schemas.ids import video_id_from_file, video_id_from_uri
from stages.video import streams
from stages.video.source import SourceError, is_local, local_copy, local_name, regular_file_size
from stages.video.watchdog import bounded
from stages.base import Stage, require


@dataclass
class Probe(Stage):
    name = "probe"
    inputs = ("source_uri",)
    outputs = ("video",)

    decode_stall_s: float = 120.0  # opening and decoding the first frame: longer is `decode_stalled`

    def __post_init__(self):
        require(self.decode_stall_s > 0, "decode_stall_s", f"must be > 0 (got {self.decode_stall_s})")

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_inputs(batch)
        infos = [probe_source(uri, self.decode_stall_s) for uri in batch.column("source_uri").to_pylist()]
        return batch.append_column("video", pa.array(infos, type=VIDEO_INFO))


def probe_source(uri: str, stall_s: float | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {name: None for name in VIDEO_INFO.names}
    info.update(source_uri=uri, status="ok")
    try:
        info["video_id"], info["size_bytes"] = _identify(uri)
        info.update(_metadata(uri, stall_s))
    except SourceError as err:
        info.update(status="error", error=str(err))
    except Exception as err:  # noqa: BLE001 - any failure on one source becomes its row
        info.update(status="error", error=f"probe_failed: {type(err).__name__}: {err}")
    if info["video_id"] is None:
        info["video_id"] = video_id_from_uri(uri)
    return info


def _identify(uri: str) -> tuple[str, int]:
    if is_local(uri):
        path = local_name(uri)
        size = regular_file_size(path)
        try:
            with open(path, "rb") as handle:
                video_id = video_id_from_file(handle, size)
        except OSError as err:
            raise SourceError("unreadable", err.strerror or str(err)) from None
    else:
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(uri)
        size = filesystem.get_file_info(path).size
        with filesystem.open_input_file(path) as handle:
            video_id = video_id_from_file(handle, size)
    if size == 0:
        raise SourceError("empty_file")
    return video_id, size


class _NeedsWholeFile(Exception):
    """A remote source with several video streams: choosing one reopens the file (a local copy does)."""


def _metadata(uri: str, stall_s: float | None) -> dict[str, Any]:
    """A local file directly; a remote one by byte ranges (the demuxer reads the header and the first
    frame, not the whole video), or from a local copy when several video streams must be compared."""
    if not is_local(uri):
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(uri)
        try:
            with filesystem.open_input_file(path) as handle:
                return bounded(lambda: _container_metadata(handle), stall_s, "probe")
        except _NeedsWholeFile:
            pass
    with local_copy(uri) as path:
        return bounded(lambda: _container_metadata(path), stall_s, "probe")


def _container_metadata(path) -> dict[str, Any]:
    """`path`: a local path, or a seekable file object (a remote source read by ranges)."""
    import av

    try:
        container = av.open(path)
    except av.FFmpegError as err:
        raise SourceError("invalid_container", str(err)) from None
    with container:
        if not isinstance(path, str) and len(streams.candidates(container)) > 1:
            raise _NeedsWholeFile()
        index = streams.choose(path, container)
        if index is None:
            raise SourceError("no_video_stream", f"streams: {[_kind(s) for s in container.streams]}")
        stream = container.streams[index]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = None
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as err:
            raise SourceError("decode_failed", f"first frame: {err}") from None
        if first is None:
            raise SourceError("no_decodable_frames")
        rotation = int(getattr(first, "rotation", 0) or 0) % 360
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        return {
            "container": container.format.name,
            "codec": ctx.name,
            "pix_fmt": ctx.format.name if ctx.format else None,
            "bit_rate": ctx.bit_rate or container.bit_rate or None,
            "duration_s": duration,
            "fps": fps,
            "num_frames": stream.frames or None,
            "width": width,
            "height": height,
            "rotation": rotation,
            "has_audio": bool(container.streams.audio),
            "stream_index": index,
        }


def _kind(stream) -> str:
    import av

    cover = int(stream.disposition) & int(av.stream.Disposition.attached_pic)
    return "cover_art" if stream.type == "video" and cover else stream.type
