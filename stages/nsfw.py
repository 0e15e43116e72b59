"""Stage `nsfw` (1:1, CPU; opt-in): per accepted clip, the highest unsafe-content score over its K sampled
frames, from NudeNet's bundled detector (stages/models/nsfw.py; pip install 'vidprep[signals]').

    nsfw_score   max over frames of the exposed-nudity classes' detector score, in [0, 1]

Filter with it (e.g. `nsfw_score < 0.5`) or query it; rejected rows pass through with nulls.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

from schemas.signals import NSFW_FIELDS
from stages.base import Resources, Stage, require


@dataclass
class Nsfw(Stage):
    name = "nsfw"
    inputs = ("status", "frames", "frames_shape")
    outputs = tuple(f.name for f in NSFW_FIELDS)
    catalog_fields = NSFW_FIELDS

    detector: Literal["nudenet-320n"] = "nudenet-320n"  # the 320-px detector bundled with nudenet 3.4
    frames_per_run: int = 16  # frames per ONNX call
    resources: Resources = field(default_factory=lambda: Resources(cpus=1))

    def __post_init__(self):
        require(self.frames_per_run >= 1, "frames_per_run", f"must be >= 1 (got {self.frames_per_run})")
        require(importlib.util.find_spec("nudenet") is not None and importlib.util.find_spec("onnxruntime")
                is not None, "detector", "nudenet-320n needs nudenet and onnxruntime (pip install 'vidprep[signals]')")

    def setup(self) -> None:
        from stages.models.nsfw import NsfwDetector

        self.detector = NsfwDetector(max(1, int(self.resources.cpus)))

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_inputs(batch)
        rows = self.accepted(batch)
        scores: list[float | None] = [None] * batch.num_rows
        frames = batch.column("frames").to_pylist() if rows else []
        shapes = batch.column("frames_shape").to_pylist() if rows else []
        for i in rows:
            clip = np.frombuffer(frames[i], np.uint8).reshape(shapes[i])
            per_frame = [self.detector.unsafe_scores(clip[s:s + self.frames_per_run])
                         for s in range(0, len(clip), self.frames_per_run)]
            scores[i] = float(np.concatenate(per_frame).max())
        return batch.append_column(NSFW_FIELDS[0], pa.array(scores, type=pa.float32()))
