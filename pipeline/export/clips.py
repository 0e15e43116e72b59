"""One source in, its clips out as MP4: decoded once, in order, every clip frame-exact.

Frame k of a source is the k-th frame FFmpeg presents (PyAV's decode order is presentation order),
the convention of every frame number in the catalog, so a clip [start_frame, end_frame) is exactly
those frames. Each clip is re-encoded with PyAV (H.264, yuv420p, even sides), rotated to display
orientation, optionally resized (`max_side`, or the clip's training bucket with centre crop) and
resampled in time (`fps`: nearest source frame for each output instant). A file appears under its
final name only complete (written as `.<name>.part`, then renamed), so a rerun skips finished clips.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from stages.video.source import local_copy, rotate


@dataclass
class ExportOptions:
    fps: float | None = None  # None: the source's
    max_side: int | None = None  # longest side at most this (never upscaled); None: source size
    bucket: bool = False  # the clip's training bucket: its size (cover + centre crop) and frame count
    codec: str = "libx264"
    crf: int = 18


def export_source(uri: str, clips: list[dict], dest: str, options: ExportOptions) -> list[dict]:
    """Write every clip of `uri` not yet in `dest`; returns one record per clip (file, frames, bytes)."""
    import av

    folder = Path(dest)
    todo = [c for c in clips if not (folder / f"{c['clip_id']}.mp4").exists()]
    records = {c["clip_id"]: None for c in clips}
    if todo:
        with local_copy(uri) as path, av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            plans = {c["clip_id"]: _plan(c, options) for c in todo}
            last = max(max(p.sources, default=c["start_frame"]) for c, p in zip(todo, plans.values())) + 1
            open_writers: dict[str, _ClipWriter] = {}
            for k, frame in enumerate(container.decode(stream)):
                if k >= last:
                    break
                rgb = None
                for clip in todo:
                    plan = plans[clip["clip_id"]]
                    repeats = plan.counts.get(k, 0)
                    if not repeats:
                        continue
                    if rgb is None:
                        rgb = rotate(frame.to_ndarray(format="rgb24"), clip["rotation"] or 0)
                    writer = open_writers.get(clip["clip_id"])
                    if writer is None:
                        writer = open_writers[clip["clip_id"]] = _ClipWriter(folder, clip["clip_id"], plan, options)
                    for _ in range(repeats):
                        writer.add(rgb)
                    if writer.done:
                        records[clip["clip_id"]] = writer.close()
                        del open_writers[clip["clip_id"]]
            for clip_id, writer in open_writers.items():  # the source ended early: keep what was decoded
                records[clip_id] = writer.close()
    for clip in clips:
        if records[clip["clip_id"]] is None and (folder / f"{clip['clip_id']}.mp4").exists():
            records[clip["clip_id"]] = _existing(folder, clip["clip_id"])
    return [{"clip_id": clip_id, **(rec or {"file": None, "frames": 0, "bytes": 0})} for clip_id, rec in records.items()]


@dataclass
class _Plan:
    sources: list[int]  # source frame per output frame (repeats when upsampling in time)
    fps: float
    size: tuple[int, int] | None  # (w, h) to resize to before the crop; None: as decoded
    crop: tuple[int, int] | None  # (w, h) centre crop (bucket), or None

    def __post_init__(self):
        self.counts = Counter(self.sources)  # source frame → how many output frames it gives


def _plan(clip: dict, options: ExportOptions) -> _Plan:
    start, end, fps = int(clip["start_frame"]), int(clip["end_frame"]), float(clip["fps"])
    width, height = int(clip["width"]), int(clip["height"])
    if options.bucket and clip.get("bucket"):
        from stages.video.buckets import Bucket, frame_indices, resize_for

        frames, bh, bw = map(int, clip["bucket"].split("x"))
        target = options.fps or fps
        bucket = Bucket(frames, bh, bw)
        return _Plan(frame_indices(start, end, fps, frames, target), target, resize_for(width, height, bucket),
                     (bw, bh))
    out_fps = options.fps or fps
    count = max(1, math.floor((end - start) * out_fps / fps + 1e-9))
    sources = [min(end - 1, start + int(math.floor(j * fps / out_fps + 1e-9))) for j in range(count)]
    size = None
    if options.max_side and max(width, height) > options.max_side:
        scale = options.max_side / max(width, height)
        size = (max(2, round(width * scale)), max(2, round(height * scale)))
    return _Plan(sources, out_fps, size, None)


class _ClipWriter:
    def __init__(self, folder: Path, clip_id: str, plan: _Plan, options: ExportOptions):
        import av

        self.final = folder / f"{clip_id}.mp4"
        self.part = folder / f".{clip_id}.mp4.part"
        self.plan, self.written = plan, 0
        self.container = av.open(str(self.part), "w", format="mp4")
        self.stream = self.container.add_stream(options.codec, rate=Fraction(plan.fps).limit_denominator(1001))
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(options.crf)} if options.codec == "libx264" else {}
        self.size: tuple[int, int] | None = None

    @property
    def done(self) -> bool:
        return self.written >= len(self.plan.sources)

    def add(self, rgb: np.ndarray) -> None:
        import av
        import cv2

        if self.plan.size and (rgb.shape[1], rgb.shape[0]) != self.plan.size:
            rgb = cv2.resize(rgb, self.plan.size, interpolation=cv2.INTER_AREA)
        if self.plan.crop:
            w, h = self.plan.crop
            top, left = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
            rgb = rgb[top: top + h, left: left + w]
        rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]  # yuv420p needs even sides
        if self.size is None:
            self.size = (rgb.shape[1], rgb.shape[0])
            self.stream.width, self.stream.height = self.size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.written
        self.container.mux(self.stream.encode(frame))
        self.written += 1

    def close(self) -> dict:
        self.container.mux(self.stream.encode(None))
        self.container.close()
        os.replace(self.part, self.final)  # only a complete file gets the final name
        return {"file": self.final.name, "frames": self.written, "bytes": self.final.stat().st_size,
                "out_fps": self.plan.fps, "out_width": self.size[0] if self.size else None,
                "out_height": self.size[1] if self.size else None}


def _existing(folder: Path, clip_id: str) -> dict:
    import av

    path = folder / f"{clip_id}.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = stream.frames or sum(1 for _ in container.decode(stream))
        return {"file": path.name, "frames": frames, "bytes": path.stat().st_size,
                "out_fps": float(stream.average_rate or 0), "out_width": stream.width, "out_height": stream.height}
