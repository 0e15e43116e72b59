"""Private helpers of `split`: turning scenes into clip spans, and a bounded frame buffer."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    start: int  # first frame
    end: int  # exclusive
    scene_index: int
    status: str  # accepted | rejected
    reason: str | None


def plan_clips(
    scene_start: int,
    scene_end: int,
    scene_index: int,
    *,
    cut_before: bool,
    cut_after: bool,
    trim: int,
    min_frames: int,
    max_frames: int,
) -> list[Span]:
    """Clip spans of one scene [scene_start, scene_end).

    Frames next to a detected cut are trimmed (`trim` each side: dissolves and
    encoder smear live there); a scene longer than `max_frames` is re-split
    into equal parts, each at most `max_frames`; one shorter than `min_frames`
    stays as a single rejected clip (reason `too_short`) so nothing vanishes.
    """
    start = scene_start + (trim if cut_before else 0)
    end = scene_end - (trim if cut_after else 0)
    if end - start < 1:  # trimming ate the scene: keep its untrimmed span, rejected
        return [Span(scene_start, scene_end, scene_index, "rejected", "too_short")]
    length = end - start
    if length < min_frames:
        return [Span(start, end, scene_index, "rejected", "too_short")]
    parts = -(-length // max_frames)  # ceil
    bounds = [start + (k * length) // parts for k in range(parts + 1)]
    return [Span(a, b, scene_index, "accepted", None) for a, b in zip(bounds, bounds[1:])]


class SceneFrames:
    """Decoded frames of the open scene, at most `capacity` of them.

    When full, every other frame is dropped and the stride doubles, so a long
    scene still has frames spread over its whole length while memory stays
    bounded (capacity × one downscaled frame).
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.indices: list[int] = []
        self.frames: list[np.ndarray] = []
        self.origin = 0
        self.stride = 1

    def add(self, index: int, frame: np.ndarray) -> None:
        if (index - self.origin) % self.stride:
            return
        self.indices.append(index)
        self.frames.append(frame.copy())  # a copy: a view would pin the whole decoded chunk
        if len(self.indices) > self.capacity:
            self.indices, self.frames = self.indices[::2], self.frames[::2]
            self.stride *= 2

    def pop_before(self, end: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Remove and return the frames with index < end; the next scene starts at `end`."""
        keep = next((i for i, idx in enumerate(self.indices) if idx >= end), len(self.indices))
        indices, frames = np.asarray(self.indices[:keep], dtype=np.int64), self.frames[:keep]
        self.indices, self.frames = self.indices[keep:], self.frames[keep:]
        self.origin, self.stride = end, 1
        return indices, frames


def pick_samples(indices: np.ndarray, start: int, end: int, count: int) -> np.ndarray:
    """Positions in `indices` of the buffered frames nearest `count` evenly spaced points of [start, end)."""
    inside = np.flatnonzero((indices >= start) & (indices < end))
    pool = inside if inside.size else np.arange(indices.size)
    targets = start + (np.arange(count) + 0.5) * (end - start) / count
    nearest = np.abs(indices[pool][None, :] - targets[:, None]).argmin(axis=1)
    return pool[nearest]
