"""Stage `signals` (1:1, CPU): measurements from the pixels of each accepted clip, no learned score.

Reads split's K sampled frames (`frames`, K x H x W x 3 uint8) and their source frame numbers
(`sample_frame_indices`); nothing is decoded again. Each group can be turned off:

    pixels  luma_mean, luma_std, black_fraction, sharpness, colourfulness        (stages/video/pixels.py)
    motion  motion_flow_px, camera_motion (+ confidence, fit parameters), motion_subject_share,
            motion_frozen_fraction, motion_jump_fraction, motion_frozen           (stages/video/motion.py)
    text    text_area (union of text boxes / frame area, mean over frames), text_boxes (most in one frame),
            from PP-OCRv4's detector bundled with rapidocr-onnxruntime            (stages/models/ocr.py)

These measure directly what clip_score's prompts (clip_black, clip_blurry, clip_still, clip_text_overlay)
and clip_motion only approximate. Every value is stored, so `vidprep refilter` can re-threshold them.
Rejected rows pass through with nulls. A plain task, not an actor: the text detector (~0.3 s to load) is
loaded once per worker process on first use and kept (stages/models/ocr.py `cached_detector`).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from schemas.signals import SIGNAL_FIELDS
from stages.base import Resources, Stage, require
from stages.video.motion import MotionSettings


@dataclass
class Signals(Stage):
    name = "signals"
    inputs = ("status", "frames", "frames_shape", "sample_frame_indices")

    pixels: bool = True
    motion: bool = True
    text: bool = True  # needs rapidocr-onnxruntime (pip install 'vidprep[signals]')
    black_luma: float = 24.0  # a frame is near-black when 95% of its pixels are darker (0-255 luma)
    flow_short_side: int = 128  # optical flow runs at this short side (never upscaled)
    static_px: float = 0.1  # camera motion below this many px per source frame (at the frames' size): static
    frozen_level: float = 0.5  # mean |Δluma| between two sampled frames below this: frozen
    jump_level: float = 20.0  # mean |Δluma| the flow cannot explain above this: a jump (slide change, cut)
    text_short_side: int = 320  # frames are upscaled to this short side for text detection
    text_box_threshold: float = 0.5  # PP-OCR's box score threshold
    resources: Resources = field(default_factory=lambda: Resources(cpus=1))

    def __post_init__(self):
        require(self.pixels or self.motion or self.text, "pixels",
                "every signal group is off (pixels, motion, text): remove the stage instead")
        require(0 <= self.black_luma <= 255, "black_luma", f"must be in [0, 255] (got {self.black_luma})")
        require(self.flow_short_side >= 16, "flow_short_side", f"must be >= 16 (got {self.flow_short_side})")
        require(self.static_px >= 0, "static_px", f"must be >= 0 (got {self.static_px})")
        require(self.frozen_level >= 0, "frozen_level", f"must be >= 0 (got {self.frozen_level})")
        require(self.jump_level > 0, "jump_level", f"must be > 0 (got {self.jump_level})")
        require(self.text_short_side >= 32, "text_short_side", f"must be >= 32 (got {self.text_short_side})")
        require(0 < self.text_box_threshold < 1, "text_box_threshold",
                f"must be in (0, 1) (got {self.text_box_threshold})")
        if self.text:  # an optional dependency: checked when the stage is built, not on the first batch
            require(importlib.util.find_spec("rapidocr_onnxruntime") is not None, "text",
                    "needs rapidocr-onnxruntime (pip install 'vidprep[signals]'), or set text: false")
        self.motion_settings = MotionSettings(flow_short_side=self.flow_short_side, static_px=self.static_px,
                                              frozen_level=self.frozen_level, jump_level=self.jump_level)

    @property
    def catalog_fields(self) -> tuple[pa.Field, ...]:
        on = {"pixels": self.pixels, "motion": self.motion, "text": self.text}
        return tuple(f for group, fields_ in SIGNAL_FIELDS.items() if on[group] for f in fields_)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.catalog_fields)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import cv2

        from stages.video.motion import clip_motion
        from stages.video.pixels import pixel_stats

        self.check_inputs(batch)
        threads = max(1, int(self.resources.cpus))
        cv2.setNumThreads(threads)
        detector = None
        if self.text:
            from stages.models.ocr import cached_detector

            detector = cached_detector(self.text_short_side, threads, self.text_box_threshold)
        rows = self.accepted(batch)
        values = {f.name: [None] * batch.num_rows for f in self.catalog_fields}
        frames = batch.column("frames").to_pylist() if rows else []
        shapes = batch.column("frames_shape").to_pylist() if rows else []
        indices = batch.column("sample_frame_indices").to_pylist() if rows else []
        for i in rows:
            clip = np.frombuffer(frames[i], np.uint8).reshape(shapes[i])  # (K, H, W, 3)
            found: dict[str, object] = {}
            if self.pixels:
                found.update(pixel_stats(clip, self.black_luma))
            if self.motion:
                found.update(clip_motion(clip, indices[i], self.motion_settings))  # {} when K = 1: nulls
            if self.text:
                areas, boxes = zip(*(detector.text_area(frame) for frame in clip))
                found.update(text_area=float(np.mean(areas)), text_boxes=int(max(boxes)))
            for name, value in found.items():
                values[name][i] = value
        for f in self.catalog_fields:
            batch = batch.append_column(f, pa.array(values[f.name], type=f.type))
        return batch
