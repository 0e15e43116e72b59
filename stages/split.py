"""Stage `split` (1:N video → clips, CPU task): scene detection on one decode pass.

decord decodes each source once, downscaled inside the decoder (short side →
`decode_short_side`); every frame goes to a PySceneDetect detector as BGR.
Scenes become clip spans (`_spans.plan_clips`: trim at cuts, re-split long
scenes, keep short ones as rejected), and each accepted clip carries
`sample_frames` small RGB frames for the scoring and captioning stages plus a
JPEG thumbnail for the catalog. A video yields at least one row: an errored
video yields one row with a null clip_id that only carries its `video` struct.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from schemas.catalog import VIDEO_INFO
from schemas.ids import clip_id
from stages.video.spans import SceneFrames, pick_samples, plan_clips
from stages.video.frames import PyAVFrames, open_frames, prefetched, short_error
from stages.video import streams
from stages.video.source import SourceError, decode_size, jpeg, local_copy
from stages.video.timing import monotonic
from stages.video.watchdog import bounded
from stages.base import Stage, require

CLIP_COLUMNS = pa.schema([
    ("clip_id", pa.string()), ("video_id", pa.string()), ("clip_index", pa.int32()),
    ("scene_index", pa.int32()), ("start_frame", pa.int64()), ("end_frame", pa.int64()),
    ("num_frames", pa.int64()), ("start_s", pa.float64()), ("end_s", pa.float64()),
    ("duration_s", pa.float64()), ("fps", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("status", pa.string()), ("reason", pa.string()),
    ("sample_frame_indices", pa.list_(pa.int64())), ("thumbnail", pa.binary()),
    ("frames", pa.binary()), ("frames_shape", pa.list_(pa.int32())),  # (K, H, W, 3) uint8 RGB
    ("video_rows", pa.int32()), ("is_video_row", pa.bool_()),
])
DETECTORS = ("adaptive", "content", "threshold", "hash")


@dataclass
class Split(Stage):
    name = "split"
    inputs = ("source_uri", "video")
    outputs = tuple(CLIP_COLUMNS.names)

    detector: Literal["adaptive", "content", "threshold", "hash"] = "adaptive"
    threshold: float | None = None  # None: the detector's own default
    min_scene_frames: int = 15  # PySceneDetect's min_scene_len
    min_clip_s: float = 2.0
    max_clip_s: float = 10.0
    trim_frames: int = 2  # dropped at each side of a detected cut
    decode_short_side: int = 224  # decoder-side downscale; also the sampled frames' size
    sample_frames: int = 8  # K frames kept per accepted clip for later stages
    frame_buffer: int = 256  # frames of the open scene kept in memory (decimated beyond)
    thumbnail_size: int = 160
    chunk_frames: int = 32  # frames per decord get_batch call
    decode_stall_s: float = 120.0  # a decode with no new frames for this long: `decode_stalled` error row
    # Shapes the model stages can't take are rejected here, before any model sees them (a VLM's image
    # processor refuses aspect ratios past 200:1 and patches sides below its 28-32 px merge size).
    max_aspect: float = 4.0  # long side / short side (32:9 is 3.6); wider or taller: `aspect_out_of_range`
    min_side: int = 32  # shorter side in pixels (display orientation); smaller: `too_small`

    def __post_init__(self):
        require(self.min_scene_frames >= 1, "min_scene_frames", f"must be >= 1 (got {self.min_scene_frames})")
        require(self.min_clip_s >= 0, "min_clip_s", f"must be >= 0 (got {self.min_clip_s})")
        require(self.max_clip_s > 0, "max_clip_s", f"must be > 0 (got {self.max_clip_s})")
        require(self.max_clip_s >= self.min_clip_s, "max_clip_s",
                f"must be >= min_clip_s ({self.max_clip_s} < {self.min_clip_s})")
        require(self.trim_frames >= 0, "trim_frames", f"must be >= 0 (got {self.trim_frames})")
        require(self.decode_short_side >= 16, "decode_short_side", f"must be >= 16 (got {self.decode_short_side})")
        require(self.sample_frames >= 1, "sample_frames", f"must be >= 1 (got {self.sample_frames})")
        require(self.frame_buffer >= 2 * self.sample_frames, "frame_buffer",
                f"must be >= 2 * sample_frames (got {self.frame_buffer})")
        require(self.threshold is None or self.threshold > 0, "threshold", f"must be > 0 (got {self.threshold})")
        require(self.chunk_frames >= 1, "chunk_frames", f"must be >= 1 (got {self.chunk_frames})")
        require(self.decode_stall_s > 0, "decode_stall_s", f"must be > 0 (got {self.decode_stall_s})")
        require(self.max_aspect >= 1, "max_aspect", f"must be >= 1: long side / short side (got {self.max_aspect})")
        require(self.min_side >= 1, "min_side", f"must be >= 1 pixel (got {self.min_side})")

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_inputs(batch)
        videos, clips, take = [], [], []
        for row, video in enumerate(batch.column("video").to_pylist()):
            rows = self.split_video(video) if video["status"] == "ok" else []
            if video["status"] == "ok" and not rows:  # e.g. nothing decoded past the probe
                video.update(status="error", error=video["error"] or "no_decodable_frames")
            if not rows:
                rows = [_video_only_row(video)]
            for i, clip in enumerate(rows):
                clip.update(video_rows=len(rows), is_video_row=(i == 0))
            videos += [video] * len(rows)
            clips += rows
            take += [row] * len(rows)
        out = batch.drop_columns(["video"]).take(pa.array(take, type=pa.int64()))
        out = out.append_column("video", pa.array(videos, type=VIDEO_INFO))
        for field in CLIP_COLUMNS:
            out = out.append_column(field, pa.array([c.get(field.name) for c in clips], type=field.type))
        return out

    def split_video(self, video: dict[str, Any]) -> list[dict[str, Any]]:
        """Clip rows of one probed video; fills the video's cuts, num_frames, num_clips, warning."""
        shape = self.shape_reason(video["width"], video["height"])
        if shape:  # decided from the probe, without decoding (see `undecoded_clip`)
            return [undecoded_clip(video, shape)]
        try:
            with local_copy(video["source_uri"]) as path:
                return self._split_file(path, video)
        except SourceError as err:
            video.update(status="error", error=str(err))
            return []

    def _split_file(self, path: str, video: dict[str, Any]) -> list[dict[str, Any]]:
        size = decode_size(video["width"], video["height"], self.decode_short_side)  # display orientation
        threads = max(1, int(self.resources.cpus))
        try:
            source = bounded(lambda: open_frames(path, *size, threads, video["stream_index"]), self.decode_stall_s,
                             "open")
        except SourceError:
            raise
        except Exception as err:  # noqa: BLE001 - neither decord nor FFmpeg can read it
            raise SourceError("decode_failed", f"open: {short_error(err)}") from None
        notes = [] if source.name == "decord" else [f"decoded_with:{source.name} ({_why_not_decord(source)})"]
        fps = source.fps or video["fps"] or 30.0
        scenes, cuts, decoded, error = self._detect(source, fps)
        if error and source.name == "decord":
            # Where decord's threaded decoder gives up varies from run to run; FFmpeg alone is
            # deterministic (so reruns give the same clip ids) and conceals more damage.
            source = PyAVFrames(path, *size, threads, video["stream_index"])
            scenes, cuts, decoded, error = self._detect(source, fps)
            notes.append("decoded_with:pyav (decord failed mid-stream)")
        if error:
            notes.append(error)
        if decoded == 0:
            raise SourceError("no_decodable_frames", "; ".join(notes))
        times, repaired = _frame_starts(source, decoded, fps)
        if repaired:  # the container's duration carries the same reset: measure it from the frames
            notes.append(f"timestamps_repaired:{repaired} (reset or jump)")
            video["duration_s"] = float(times[-1] - times[0])
        rows = self._clip_rows(video, scenes, cuts, fps, times)
        video.update(cuts=cuts, num_frames=decoded, num_clips=len(rows), warning="; ".join(notes) or None)
        return rows

    def _detect(self, source, fps: float):
        """One pass over the frames: (scenes with their buffered frames, cuts, frames decoded, error or None)."""
        import cv2
        from scenedetect import FrameTimecode

        detector = self._make_detector()
        buffer = SceneFrames(self.frame_buffer)
        scenes: list[tuple[int, int, np.ndarray, list[np.ndarray]]] = []
        cuts: list[int] = []
        decoded, error = 0, None

        def close_scene(end: int) -> None:
            start = scenes[-1][1] if scenes else 0
            if end > start:
                scenes.append((start, end, *buffer.pop_before(end)))

        for frame_index, frame in prefetched(source, self.chunk_frames, self.decode_stall_s):
            if isinstance(frame, Exception):
                error = f"decode_stopped_at_frame:{frame_index}: {short_error(frame)}"
                break
            buffer.add(frame_index, frame)
            bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)  # PySceneDetect wants BGR; 25x cheaper than a flip copy
            for cut in detector.process_frame(FrameTimecode(frame_index, fps), bgr):
                cuts.append(cut.frame_num)
                close_scene(cut.frame_num)
            decoded = frame_index + 1
        if decoded:
            for cut in detector.post_process(FrameTimecode(decoded, fps)):
                if 0 < cut.frame_num < decoded:
                    cuts.append(cut.frame_num)
                    close_scene(cut.frame_num)
            close_scene(decoded)
        return scenes, cuts, decoded, error

    def shape_reason(self, width: int, height: int) -> str | None:
        """Why a video of this display size can't go to the models (`aspect_out_of_range`, `too_small`), or None."""
        short, long = sorted((max(0, width), max(0, height)))
        if short == 0 or long / short > self.max_aspect:
            ratio = f"{long / short:.1f}:1" if short else "degenerate"
            return f"aspect_out_of_range: {width}x{height} ({ratio}; stages.split.max_aspect {self.max_aspect:g})"
        if short < self.min_side:
            return f"too_small: {width}x{height} (shorter side < stages.split.min_side {self.min_side})"
        return None

    def _clip_rows(self, video, scenes, cuts, fps, timestamps) -> list[dict[str, Any]]:
        cut_set = set(cuts)
        min_frames = math.ceil(self.min_clip_s * fps)
        max_frames = max(1, math.floor(self.max_clip_s * fps))
        rows = []
        for scene_index, (start, end, indices, frames) in enumerate(scenes):
            spans = plan_clips(start, end, scene_index, cut_before=start in cut_set, cut_after=end in cut_set,
                               trim=self.trim_frames, min_frames=min_frames, max_frames=max_frames)
            for span in spans:
                count = self.sample_frames if span.status == "accepted" else 1
                picks = pick_samples(indices, span.start, span.end, count)
                sampled = np.stack([frames[p] for p in picks])  # display orientation, as decoded
                start_s = float(timestamps[span.start])
                end_s = float(timestamps[span.end])  # timestamps has one more entry: the end of the last frame
                rows.append({
                    "clip_id": clip_id(video["video_id"], span.start, span.end),
                    "video_id": video["video_id"], "clip_index": len(rows), "scene_index": scene_index,
                    "start_frame": span.start, "end_frame": span.end, "num_frames": span.end - span.start,
                    "start_s": start_s, "end_s": end_s, "duration_s": end_s - start_s, "fps": fps,
                    "width": video["width"], "height": video["height"],
                    "status": span.status, "reason": span.reason,
                    "sample_frame_indices": indices[picks].tolist(),
                    "thumbnail": jpeg(sampled[len(sampled) // 2], self.thumbnail_size),
                    "frames": sampled.tobytes() if span.status == "accepted" else None,
                    "frames_shape": list(sampled.shape) if span.status == "accepted" else None,
                })
        return rows

    def _make_detector(self):
        import scenedetect

        kwargs: dict[str, Any] = {"min_scene_len": self.min_scene_frames}
        if self.detector == "adaptive":
            if self.threshold is not None:
                kwargs["adaptive_threshold"] = self.threshold
            return scenedetect.AdaptiveDetector(**kwargs)
        if self.threshold is not None:
            kwargs["threshold"] = self.threshold
        cls = {"content": scenedetect.ContentDetector, "threshold": scenedetect.ThresholdDetector,
               "hash": scenedetect.HashDetector}[self.detector]
        return cls(**kwargs)


def _frame_starts(source, decoded: int, fps: float) -> tuple[np.ndarray, int]:
    """Presentation time of each decoded frame plus the end of the last (variable frame rate is common),
    made monotonic (`stages/video/timing.py`), and the number of steps that had to be repaired."""
    stamps = source.timestamps(decoded)
    if stamps is None:  # no usable timestamps: a constant rate
        return np.arange(decoded + 1, dtype=np.float64) / fps, 0
    stamps, repaired = monotonic(stamps, fps)
    return np.append(stamps, stamps[-1] + 1.0 / fps), repaired


def _why_not_decord(source) -> str:
    videos = len(streams.candidates(source.container))
    return f"stream {source.stream.index}, one of {videos} video streams" if videos > 1 else "decord could not open it"


def undecoded_clip(video: dict[str, Any], reason: str) -> dict[str, Any]:
    """The whole video as one rejected clip, from the probe alone: a shape no model takes is not decoded.

    Scene detection would be wasted on it, and costly: decord can't decode narrower than 80 px
    (stages/video/frames.py), so a 2x2000 video would come out 80x80000 a frame. Span and times come
    from the container (frame count, else duration x fps), so reruns give the same clip id."""
    fps = video["fps"] or 30.0
    frames = video["num_frames"] or max(1, round((video["duration_s"] or 0.0) * fps))
    duration = frames / fps
    video.update(num_frames=frames, num_clips=1, warning=f"not_decoded: {reason.split(':')[0]}")
    return {"clip_id": clip_id(video["video_id"], 0, frames), "video_id": video["video_id"], "clip_index": 0,
            "scene_index": 0, "start_frame": 0, "end_frame": frames, "num_frames": frames, "start_s": 0.0,
            "end_s": duration, "duration_s": duration, "fps": fps, "width": video["width"],
            "height": video["height"], "status": "rejected", "reason": reason}


def _video_only_row(video: dict[str, Any]) -> dict[str, Any]:
    return {"video_id": video["video_id"]}
