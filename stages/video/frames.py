"""Private helpers: decoded frames for split (sequential, prefetched) and encode (by index).

Which reader a video gets is `decode.py`'s choice (frame k must be FFmpeg's k).
decord, where it is exact: it resizes inside the decoder and seeks. Some files
decord cannot open (a stream cut after a front index, a still image renamed
.mp4); FFmpeg through PyAV then decodes what is there, with frame and slice
threads, resizing frame by frame, so the good part of a damaged file is kept.
"""
from __future__ import annotations

import itertools
import queue
import re
import threading
from collections import Counter
from typing import Iterator

import numpy as np

from stages.video import streams
from stages.video.source import rotate
from stages.video.watchdog import stalled


def short_error(err: Exception) -> str:
    """One line of an exception's message, without decord's "[time] /path/file.cc:123:" prefixes."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    prefix = re.compile(r"^(\[[^\]]*\]\s*|\S+\.(cc|cpp|h):\d+:\s*)")  # "[03:50:20] ", "/src/x.cc:151: "
    while prefix.match(text):
        text = prefix.sub("", text, count=1)
    return text[:200]


# decord 0.6.0 returns rows padded to another stride at some small output widths (2-72 px seen:
# 8, 16, 24, 48, 72, ...), whatever the height; get_batch then fails ("The size must exactly match").
# Every width from 74 up decoded correctly in a sweep to 1,000, so narrower outputs are decoded at
# this width and resized with OpenCV.
DECORD_MIN_WIDTH = 80


class DecordFrames:
    """RGB frames of a file at (width, height) from decord, in display orientation.

    decord applies the display matrix's rotation itself and takes (width, height)
    as the size of the rotated, displayed frame (checked for 0/90/180/270 in
    tests/reliability/test_video_safety.py), so nothing here rotates.
    """

    name = "decord"

    def __init__(self, path: str, width: int, height: int, threads: int):
        import decord

        self.path = path
        self.size = (width, height)
        decode_w, decode_h = width, height
        if width < DECORD_MIN_WIDTH:
            decode_w, decode_h = DECORD_MIN_WIDTH, max(2, round(height * DECORD_MIN_WIDTH / width))
        self.reader = decord.VideoReader(path, ctx=decord.cpu(0), width=decode_w, height=decode_h,
                                         num_threads=threads)
        self.fps = float(self.reader.get_avg_fps())

    def batch(self, indices: list[int]) -> np.ndarray:
        """(len(indices), H, W, 3) frames; raises on a decode failure or a frame of another shape."""
        frames = self.reader.get_batch(indices).asnumpy()
        width, height = self.size
        if frames.shape[1:3] != (height, width):
            import cv2

            frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
        if frames.shape != (len(indices), height, width, 3):
            raise ValueError(f"decord returned frames of shape {frames.shape[1:]}, not {(height, width, 3)}")
        return frames

    def chunks(self, size: int) -> Iterator[list[tuple[int, object]]]:
        """Lists of (index, frame); a failing chunk is retried frame by frame, ending with (index, error)."""
        total = len(self.reader)
        for begin in range(0, total, size):
            indices = list(range(begin, min(begin + size, total)))
            try:
                frames = self.batch(indices)
            except Exception:  # noqa: BLE001 - decord raises its own DECORDError
                good: list[tuple[int, object]] = []
                for index in indices:
                    try:
                        good.append((index, self.batch([index])[0]))
                    except Exception as err:  # noqa: BLE001
                        yield good + [(index, err)]
                        return
                yield good
                continue
            yield list(zip(indices, frames))

    def timestamps(self, decoded: int) -> np.ndarray | None:
        """FFmpeg's presentation times (decord's own are shifted on some MP4 edit lists), else decord's."""
        stamps = streams.packet_times(self.path)
        if stamps is not None and stamps.shape[0] == decoded:
            return stamps
        try:
            stamps = np.asarray(self.reader.get_frame_timestamp(list(range(decoded))), np.float64)[:, 0]
            return stamps if stamps.shape[0] == decoded and np.all(np.isfinite(stamps)) else None
        except Exception:  # noqa: BLE001 - no usable index: the caller assumes a constant rate
            return None


# Containers opened through PyAVFrames, by path, in this process: the tests' way to check that a
# source with many clips is opened once per batch (tests/stages/test_encode_reads.py).
OPENS: Counter = Counter()


class PyAVFrames:
    """The same interface over FFmpeg (PyAV): slower, but decodes what decord refuses to open.

    FFmpeg hands out frames in coded orientation with the display matrix beside
    them (`frame.rotation`, counter-clockwise degrees): each frame is scaled to
    the coded size that becomes (width, height) once rotated, then rotated.
    """

    name = "pyav"

    def __init__(self, path: str, width: int, height: int, threads: int, stream_index: int | None = None):
        import av

        OPENS[path] += 1
        self.container = av.open(path)
        self.stream = (self.container.streams.video[0] if stream_index is None
                       else self.container.streams[stream_index])
        self.stream.thread_count = threads
        self.stream.thread_type = "AUTO"  # frame and slice threads: FFmpeg's CLI default
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.size = (width, height)
        self.times: list[float] = []
        self.detect_width: int | None = None  # set by `for_detection`
        self.sample_every = 1
        # One swscale context per output size, kept across frames: `frame.reformat` builds a new one per
        # call, whose filter set-up cost 3x the scaling itself (1.1 vs 2.2 ms at 398x224, 0.37 vs 1.3 ms
        # at 256x144 from 720p, measured).
        from av.video.reformatter import VideoReformatter

        self.sample_scaler, self.detect_scaler = VideoReformatter(), VideoReformatter()
        self._frames: Iterator | None = None  # the pass `span` continues, and the index of its next frame
        self._next: int | None = None
        self._started = False

    def for_detection(self, detect_width: int, sample_every: int, skip_loop_filter: bool = False) -> "PyAVFrames":
        """Make `chunks` yield, per frame, (BGR at `detect_width`, RGB at the requested size or None):
        both sizes scaled by FFmpeg from the decoded frame, the larger one only every `sample_every`
        frames (the frames split may sample): one decode, no second resize of the large frame.
        `skip_loop_filter`: FFmpeg skips the in-loop deblocking filter (H.264/HEVC): a cheaper decode
        whose pixels differ slightly from a full decode; frame numbers and times are unchanged."""
        self.detect_width, self.sample_every = detect_width, max(1, sample_every)
        if skip_loop_filter:
            self.stream.codec_context.options = {"skip_loop_filter": "all"}
        return self

    def _detect_image(self, frame) -> np.ndarray:
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        width, height = self.size
        scale = min(1.0, self.detect_width / width)
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
        if rotation in (90, 270):
            width, height = height, width
        image = self.detect_scaler.reformat(frame, width=width, height=height, format="bgr24",
                                            interpolation="AREA").to_ndarray()
        return rotate(image, rotation)

    def image(self, frame) -> np.ndarray:
        """One decoded frame as (H, W, 3) RGB at the requested size, in display orientation."""
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        width, height = self.size
        if rotation in (90, 270):
            width, height = height, width
        # AREA: the right filter for a downscale, and faster than swscale's default bicubic (measured)
        image = self.sample_scaler.reformat(frame, width=width, height=height, format="rgb24",
                                            interpolation="AREA").to_ndarray()
        return rotate(image, rotation)

    def at(self, indices: list[int], anchor: tuple[int, float] | None = None) -> np.ndarray:
        """(len(indices), H, W, 3) frames at these presentation-order indices, then closes the file; raises
        the decode error, or IndexError past the end. One span of `span`."""
        try:
            return self.span(indices, anchor)
        finally:
            self.container.close()

    # A span starting this many seconds or more after where the last one ended is reached by seeking
    # (to the keyframe before it) rather than by decoding every frame in between: past a GOP or two.
    SEEK_AHEAD_S = 3.0

    def span(self, indices: list[int], anchor: tuple[int, float] | None = None,
             size: tuple[int, int] | None = None) -> np.ndarray:
        """(len(indices), H, W, 3) frames at these presentation-order indices, at `size` (default: the
        opening size), leaving the file open for the next span; raises the decode error, or IndexError
        past the end.

        Spans asked in presentation order are one pass over the file: a span that starts at or a little
        after where the previous one ended continues that decode; a far one, or one behind it, starts
        again from a seek. `anchor` = (frame index, its presentation time, as split recorded it): the
        decode then starts at the keyframe before that time and counts from the frame showing exactly
        that time. When the seek lands past it, or no frame has that time (repaired timestamps), the
        decode starts from the beginning of the file and counts from there: slower, never wrong.
        """
        if size is not None:
            self.size = size
        first = min(indices)
        ahead = first - self._next if self._next is not None else -1
        near = 0 <= ahead and (anchor is None or ahead < self.SEEK_AHEAD_S * (self.fps or 30.0))
        try:
            if not near:
                self._frames = self._next = None
                if anchor is not None and first >= anchor[0]:
                    self._frames = self._seek(anchor[1])
                    self._next = anchor[0] if self._frames is not None else None
                if self._frames is None:
                    if self._started:  # a fresh file needs no seek (and raw streams may refuse one)
                        self.container.seek(0, stream=self.stream)
                    self._frames, self._next = iter(self.container.decode(self.stream)), 0
            self._started = True
            found = self._take(self._frames, indices, self._next)
            self._next = max(indices) + 1  # `_take` stops right after the last wanted frame
            return found
        except Exception:
            self._frames = self._next = None
            raise

    def close(self) -> None:
        self.container.close()

    # Seconds before the anchor to seek to, in turn: FFmpeg seeks MP4/MKV by their index to the keyframe
    # at or before the time, but MPEG-TS/PS by a timestamp search that can land just after it.
    SEEK_MARGINS_S = (0.0, 2.0, 8.0)

    def _seek(self, time: float) -> Iterator | None:
        """Frames from the one showing `time` on, or None when no seek finds it."""
        self._started = True
        tolerance = 0.25 / (self.fps or 30.0)
        base = self.stream.time_base
        for margin in self.SEEK_MARGINS_S:
            self.container.seek(max(0, int((time - margin) / base)), stream=self.stream, backward=True)
            frames = self.container.decode(self.stream)
            for frame in frames:
                if frame.time is None:
                    return None  # no usable times: count from the start
                if frame.time > time + tolerance:
                    break  # landed past the anchor: seek further back
                if abs(frame.time - time) <= tolerance:
                    return itertools.chain([frame], frames)
        return None

    def _take(self, frames, indices: list[int], first: int) -> np.ndarray:
        """Convert the wanted frames of `frames`, whose first one is frame `first`."""
        wanted = set(indices)
        found: dict[int, np.ndarray] = {}
        for index, frame in enumerate(frames, start=first):
            if index in wanted:
                found[index] = self.image(frame)
                if len(found) == len(wanted):
                    break
        missing = wanted - set(found)
        if missing:
            raise IndexError(f"frames {sorted(missing)[:5]} not decodable")
        return np.stack([found[i] for i in indices])

    def chunks(self, size: int) -> Iterator[list[tuple[int, object]]]:
        chunk: list[tuple[int, object]] = []
        index = 0
        try:
            for frame in self.container.decode(self.stream):
                if self.detect_width:
                    image = (self._detect_image(frame),
                             self.image(frame) if index % self.sample_every == 0 else None)
                else:
                    image = self.image(frame)
                self.times.append(float(frame.time) if frame.time is not None else index / (self.fps or 30.0))
                chunk.append((index, image))
                index += 1
                if len(chunk) == size:
                    yield chunk
                    chunk = []
        except Exception as err:  # noqa: BLE001 - FFmpeg errors: keep what decoded before
            chunk.append((index, err))
        finally:
            self.container.close()
        if chunk:
            yield chunk

    def timestamps(self, decoded: int) -> np.ndarray | None:
        return np.asarray(self.times[:decoded], np.float64) if len(self.times) >= decoded else None


def open_frames(path: str, width: int, height: int, threads: int, stream_index: int | None = None):
    """decord, or PyAV when decord cannot open the file; raises the PyAV error if neither can.

    decord has no stream choice (it opens FFmpeg's best stream), so a file with
    more than one candidate video stream is decoded by PyAV on `stream_index`,
    probe's choice: every stage then reads the stream probe measured.
    """
    if not streams.is_only_video(path, stream_index):
        return PyAVFrames(path, width, height, threads, stream_index)
    try:
        return DecordFrames(path, width, height, threads)
    except Exception:  # noqa: BLE001
        return PyAVFrames(path, width, height, threads, stream_index)


def prefetched(source, chunk: int, stall_s: float | None = None) -> Iterator[tuple[int, object]]:
    """(index, frame or error) in order, decoding one chunk ahead in a thread.

    decord and FFmpeg release the GIL, so the consumer (scene detection) works
    on chunk n while chunk n+1 decodes: split costs about the decode time
    instead of decode plus detection. The thread is also the watchdog's lever:
    when no chunk arrives for `stall_s` seconds, `decode_stalled` is raised and
    the stuck thread is abandoned (a hung C call cannot be interrupted).
    """
    chunks: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    done = 0

    def produce():
        for item in source.chunks(chunk):
            while not stop.is_set():
                try:
                    chunks.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        chunks.put(None)

    worker = threading.Thread(target=produce, name="vidprep-decode", daemon=True)
    worker.start()
    stuck = False
    try:
        while True:
            try:
                item = chunks.get(timeout=stall_s)
            except queue.Empty:
                stuck = True
                raise stalled(stall_s, f"after frame {done}") from None
            if item is None:
                break
            done += len(item)
            yield from item
    finally:  # the consumer stopped early (a decode error, an exception): let the thread end
        stop.set()
        if not stuck:
            worker.join(stall_s)
