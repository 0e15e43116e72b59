"""Pixel statistics of a clip's sampled frames: exact, cheap, no model.

    luma_mean, luma_std   BT.601 luma in [0, 1], over every pixel of every frame
    black_fraction        share of frames whose 95th-percentile luma is below `black_luma` (a fade to black,
                          a black screen with a small logo still counts; a dark night scene with lights does not)
    sharpness             variance of the Laplacian of luma (0-255 scale), median over frames; it depends on
                          the frames' size, so compare clips sampled at one `decode_short_side`
    colourfulness         Hasler & Süsstrunk (2003) M3 metric, mean over frames (0 grey; ~100+ very colourful)
"""
from __future__ import annotations

import numpy as np

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


def luma(frames: np.ndarray) -> np.ndarray:
    """(K, H, W, 3) uint8 RGB → (K, H, W) float32 luma on the 0-255 scale."""
    return frames.astype(np.float32) @ LUMA_WEIGHTS


def pixel_stats(frames: np.ndarray, black_luma: float = 24.0) -> dict[str, float]:
    import cv2

    y = luma(frames)  # (K, H, W)
    bright = np.percentile(y.reshape(len(y), -1), 95, axis=1)  # (K,)
    sharp = [float(cv2.Laplacian(frame, cv2.CV_32F, ksize=1).var()) for frame in y]
    return {
        "luma_mean": float(y.mean() / 255.0),
        "luma_std": float(y.std() / 255.0),
        "black_fraction": float(np.mean(bright < black_luma)),
        "sharpness": float(np.median(sharp)),
        "colourfulness": float(np.mean([colourfulness(f) for f in frames])),
    }


def colourfulness(frame: np.ndarray) -> float:
    """Hasler & Süsstrunk's M3 on one (H, W, 3) uint8 RGB frame."""
    r, g, b = (frame[..., c].astype(np.float32) for c in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
