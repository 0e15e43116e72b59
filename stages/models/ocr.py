"""Text on screen: PP-OCRv4's text detector, as bundled (ONNX) with rapidocr-onnxruntime; no download.

Only the detector runs (where is text, not what it says): per frame, the union area of the detected text
boxes over the frame's area, and the number of boxes (large squarish boxes dropped: `_looks_like_text`).
Frames are upscaled so their short side is `short_side` before detection: split's 224-px frames put a 720p
subtitle at ~8 px high, at the edge of what the detector (trained on text >= ~10 px) finds reliably.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

PACKAGE = "rapidocr_onnxruntime"


@functools.lru_cache(maxsize=4)
def cached_detector(short_side: int, threads: int, box_threshold: float) -> "TextDetector":
    """One detector per worker process and setting: stage signals is a task, and Ray reuses its workers."""
    return TextDetector(short_side, threads, box_threshold)


class TextDetector:
    def __init__(self, short_side: int = 480, threads: int = 1, box_threshold: float = 0.5):
        import rapidocr_onnxruntime
        from rapidocr_onnxruntime.ch_ppocr_det import TextDetector as PPOCRDetector

        model = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
        if not model.is_file():
            raise FileNotFoundError(f"{PACKAGE} is installed without its bundled detector model ({model})")
        self.short_side = short_side
        # The package's own defaults (config.yaml), but the size is ours: limit_type "min" with the short
        # side we upscale to, so the detector sees the frame at the resolution chosen above.
        self.detector = PPOCRDetector({
            "model_path": str(model), "use_cuda": False, "use_dml": False,
            "intra_op_num_threads": threads, "inter_op_num_threads": 1,
            "limit_side_len": short_side, "limit_type": "min", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
            "thresh": 0.3, "box_thresh": box_threshold, "max_candidates": 1000, "unclip_ratio": 1.6,
            "use_dilation": True, "score_mode": "fast",
        })

    def boxes(self, frame: np.ndarray) -> np.ndarray:
        """Text quadrilaterals (N, 4, 2) in the frame's pixels, from one (H, W, 3) uint8 RGB frame."""
        import cv2

        h, w = frame.shape[:2]
        scale = max(1.0, self.short_side / min(h, w))
        big = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC) \
            if scale > 1 else frame
        found, _ = self.detector(cv2.cvtColor(big, cv2.COLOR_RGB2BGR))  # PP-OCR was trained on BGR input
        if found is None or len(found) == 0:
            return np.zeros((0, 4, 2), np.float32)
        quads = np.asarray(found, np.float32) / scale
        return quads[[_looks_like_text(q, min(h, w)) for q in quads]]

    def text_area(self, frame: np.ndarray) -> tuple[float, int]:
        """(union area of text boxes / frame area, number of boxes) of one frame."""
        import cv2

        quads = self.boxes(frame)
        mask = np.zeros(frame.shape[:2], np.uint8)
        for quad in quads:
            cv2.fillPoly(mask, [np.round(quad).astype(np.int32)], 1)
        return float(mask.mean()), len(quads)


def _looks_like_text(quad: np.ndarray, frame_short_side: int) -> bool:
    """A line of text is long and thin; one character is small. The detector also fires on large uniform
    blobs (a ball, a disc: measured on the demo's scenes at scores 0.8-0.9, as high as real text): a box
    that is both squarish (sides within 1.5x) and taller than 8% of the frame is not counted."""
    width = float(np.linalg.norm(quad[1] - quad[0]))
    height = float(np.linalg.norm(quad[3] - quad[0]))
    long, short = max(width, height), max(min(width, height), 1e-6)
    return long >= 1.5 * short or short <= 0.08 * frame_short_side
