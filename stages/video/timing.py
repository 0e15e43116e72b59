"""Private helper of `split`: presentation times that only move forward.

Captures joined byte-wise (MPEG-TS above all) restart their timestamps, and a
33-bit PTS wraps: read as they are, a clip spanning the reset gets a negative
duration, or one of 94,000 s. decord also sorts a file's timestamps, so after a
reset its frames' times are the two segments' times interleaved (equal pairs).
A step between consecutive frames that is not positive, or that is far beyond
the usual step (more than JUMP_FACTOR medians and JUMP_MIN_S seconds), is
taken as a reset: the time goes on from the previous frame by the median step.
Real variable-frame-rate steps (a few medians) are kept; a true pause longer
than the threshold is shortened to one step (indistinguishable from a jump).
"""
from __future__ import annotations

import numpy as np

JUMP_FACTOR = 100
JUMP_MIN_S = 10.0


def monotonic(stamps: np.ndarray, fps: float) -> tuple[np.ndarray, int]:
    """(times with every reset or jump replaced by the median step, number of steps replaced)."""
    stamps = np.asarray(stamps, np.float64)
    if stamps.size < 2:
        return stamps, 0
    steps = np.diff(stamps)
    positive = steps[steps > 0]
    usual = float(np.median(positive)) if positive.size else 1.0 / fps
    bad = (steps <= 0) | (steps > max(JUMP_FACTOR * usual, JUMP_MIN_S))
    if not bad.any():
        return stamps, 0
    fixed = np.where(bad, usual, steps)
    return stamps[0] + np.concatenate([[0.0], np.cumsum(fixed)]), int(bad.sum())
