"""Private helper of `encode`: native-aspect-ratio buckets (NaViT / Sora style, no square crops).

A bucket is (frames, height, width) in pixels. Sizes come from a pixel budget
(the area of a `resolution`² square) and an aspect ratio, rounded to multiples
of `multiple` (the VAE's spatial stride × the DiT's patch size). Each clip
goes to the bucket with its nearest aspect ratio (in log space) at the largest
budget it can fill without upscaling, and the longest frame count its duration
covers at the target fps; frames are then resized to cover the bucket and
centre-cropped by the minimum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bucket:
    frames: int
    height: int
    width: int

    @property
    def name(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


def parse_ratio(text: str) -> float:
    """'16:9' → 16/9 (width / height)."""
    width, sep, height = text.partition(":")
    if not sep or float(width) <= 0 or float(height) <= 0:
        raise ValueError(f"aspect ratio {text!r} is not W:H")
    return float(width) / float(height)


def bucket_size(resolution: int, ratio: float, multiple: int) -> tuple[int, int]:
    """(height, width) with area ≈ resolution² and width/height ≈ ratio, sides multiples of `multiple`."""
    height = max(multiple, round(math.sqrt(resolution**2 / ratio) / multiple) * multiple)
    width = max(multiple, round(math.sqrt(resolution**2 * ratio) / multiple) * multiple)
    return height, width


def assign(width: int, height: int, duration_s: float, *, resolutions: list[int], ratios: list[float],
           frame_counts: list[int], target_fps: float, multiple: int) -> Bucket | None:
    """The clip's bucket, or None when it is too short for every frame count."""
    fitting = [n for n in frame_counts if (n - 1) / target_fps <= duration_s + 1e-6]
    if not fitting:
        return None
    ratio = min(ratios, key=lambda r: abs(math.log(r) - math.log(width / height)))
    area = width * height
    budgets = sorted(resolutions)
    resolution = max([r for r in budgets if r * r <= area], default=budgets[0])
    bucket_h, bucket_w = bucket_size(resolution, ratio, multiple)
    return Bucket(max(fitting), bucket_h, bucket_w)


def resize_for(width: int, height: int, bucket: Bucket) -> tuple[int, int]:
    """Size (w, h) to decode at so the frame covers the bucket; the rest is a centre crop."""
    scale = max(bucket.width / width, bucket.height / height)
    return max(bucket.width, math.ceil(width * scale)), max(bucket.height, math.ceil(height * scale))


def centre_crop(frames: np.ndarray, bucket: Bucket) -> np.ndarray:
    """(T, H, W, C) → (T, bucket.height, bucket.width, C), cutting equally from both sides."""
    top = (frames.shape[1] - bucket.height) // 2
    left = (frames.shape[2] - bucket.width) // 2
    return frames[:, top: top + bucket.height, left: left + bucket.width]


def frame_indices(start: int, end: int, source_fps: float, count: int, target_fps: float) -> list[int]:
    """`count` source frames at `target_fps`, centred in [start, end)."""
    step = source_fps / target_fps
    span = (count - 1) * step
    first = start + int(max(0.0, (end - 1 - start - span) / 2))  # whole frames: even steps stay even
    return [min(end - 1, first + int(round(k * step))) for k in range(count)]
