"""Private helper: which decoder reads a video, so that frame k is FFmpeg's k-th presented frame.

Frame numbers are FFmpeg's everywhere (split's cuts, sampled frames, the spans
encode decodes): frame k is the k-th frame in presentation order, as every
player and `ffmpeg -ss` count. decord agrees on MP4/MOV, Matroska/WebM and AVI
(B-frames, open GOPs and variable frame rates included, tests/stages/video/
test_decode.py), and is kept there for its in-decoder resize and its seeking.
On MPEG transport and program streams it does not: on H.264 in MPEG-TS it
skips the whole first GOP and pads the end with frozen copies of the last
frame, on MPEG-2 in TS a few frames are lost, and its timestamps on program
streams are garbage. Those container families, raw elementary streams (no
index, no timestamps) and anything unknown go to FFmpeg through PyAV.

The choice is made once per video from probe's container name (FFmpeg's
demuxer, not the file's extension: a `.mp4` that is really a TS is caught) and
recorded in the catalog (`videos.decoder`). Spans read later (encode) always go
through FFmpeg, seeking by the presentation time split recorded for the
clip's first frame (`read_frames`), because decord's seeking is not exact.

A model stage reads many clips of the same source: `read_grouped` gives one
local copy and one open per source for all of a batch's clips, their spans
decoded in presentation order in one pass (seeking forward over long gaps),
and `ahead` runs such a reader in a thread so the next group decodes while
the model works on the current one.
"""
from __future__ import annotations

import queue
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, TypeVar

import numpy as np

from stages.video.frames import OPENS  # noqa: F401 - re-exported: opens per path, for tests
from stages.video.source import SourceError, local_copy
from stages.video.watchdog import bounded

T = TypeVar("T")

# FFmpeg demuxer names (AVInputFormat.name, as probe stores them) on which decord's frame k is FFmpeg's k.
DECORD_EXACT = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi"})


def choose(video: dict[str, Any]) -> tuple[str, str | None]:
    """("decord" | "pyav", why not decord or None) for a probed video."""
    container = video.get("container")
    if container not in DECORD_EXACT:
        return "pyav", f"container {container}: decord's frame numbers differ"
    return "decord", None


def read_frames(path: str, indices: list[int], width: int, height: int, threads: int,
                stream_index: int | None = None, anchor: tuple[int, float] | None = None) -> np.ndarray:
    """(len(indices), H, W, 3) RGB frames at the given (FFmpeg) frame indices, display orientation.

    Always FFmpeg (PyAV): decord's sequential pass is exact on the containers
    above, but its seeking is not (on an open-GOP MP4 its frame 72 was FFmpeg's
    75). `anchor` = (a frame index, its presentation time, as split recorded:
    the clip's start_frame and start_s) lets FFmpeg seek to the keyframe before
    it and count from there; without it, or when the time is not found, it
    decodes from the start. Only the wanted frames are converted.
    """
    from stages.video.frames import PyAVFrames

    return PyAVFrames(path, width, height, threads, stream_index).at(indices, anchor)


@dataclass(frozen=True)
class SpanRequest:
    """Frames a stage wants from one clip: `key` is the caller's handle (a row number)."""

    key: Any
    indices: list[int]
    width: int
    height: int
    anchor: tuple[int, float] | None  # (first frame, its time) to seek by; None: count from the start


def anchor_of(clip: dict[str, Any]) -> tuple[int, float] | None:
    """The seek anchor of a clip row (start_frame, start_s), unless split had to repair the times: after a
    reset, the same raw time appears twice in the file, and only counting from the start is unambiguous."""
    repaired = "timestamps_repaired" in (clip["video"].get("warning") or "")
    return (clip["start_frame"], clip["start_s"]) if clip.get("start_s") is not None and not repaired else None


def read_grouped(requests: Iterable[tuple[dict[str, Any], SpanRequest]], threads: int,
                 stall_s: float | None) -> Iterator[tuple[SpanRequest, np.ndarray | Exception]]:
    """(request, frames or its error) for (video, request) pairs, source by source in order of first
    appearance, each source copied and opened once, its spans in presentation order."""
    by_source: dict[tuple[str, int | None], list[SpanRequest]] = defaultdict(list)
    for video, request in requests:
        by_source[(video["source_uri"], video.get("stream_index"))].append(request)
    for (uri, stream_index), spans in by_source.items():
        yield from read_spans(uri, stream_index, spans, threads, stall_s)


def read_spans(uri: str, stream_index: int | None, requests: list[SpanRequest], threads: int,
               stall_s: float | None) -> Iterator[tuple[SpanRequest, np.ndarray | Exception]]:
    """Each request's frames (or the error that one span met) from one source: one local copy, one
    open, the spans in presentation order. A stalled decode fails the source's remaining spans (the
    stuck thread keeps the file); a failed copy or open fails them all."""
    from stages.video.frames import PyAVFrames

    ordered = sorted(requests, key=lambda r: (min(r.indices), max(r.indices)))
    done = 0
    try:
        with local_copy(uri) as path:
            first = ordered[0]
            reader = bounded(lambda: PyAVFrames(path, first.width, first.height, threads, stream_index),
                             stall_s, "open")
            stuck = False
            try:
                for request in ordered:
                    where = f"frames {request.indices[0]}-{request.indices[-1]}"
                    try:
                        result: np.ndarray | Exception = bounded(
                            lambda: reader.span(request.indices, request.anchor, (request.width, request.height)),
                            stall_s, where)
                    except SourceError as err:
                        stuck = err.code == "decode_stalled"
                        if stuck:
                            raise
                        result = err
                    except Exception as err:  # noqa: BLE001 - one bad span must not cost the others
                        result = err
                    done += 1
                    yield request, result
            finally:
                if not stuck:
                    reader.close()
    except Exception as err:  # noqa: BLE001 - the copy, the open or a stall: every span left gets it
        for request in ordered[done:]:
            yield request, err


def ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """`items`, produced in a background thread at most `depth` ahead of the consumer.

    FFmpeg releases the GIL while it decodes, so the next group's frames decode
    while the model runs on the current one. The producer's exception is raised
    in the consumer at the point it happened; a consumer that stops early stops
    the producer at its next item.
    """
    box: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
            put((end, err))

    worker = threading.Thread(target=produce, name="vidprep-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, err = box.get()
            if err is not None:
                raise err
            if item is end:
                return
            yield item
    finally:
        stop.set()
