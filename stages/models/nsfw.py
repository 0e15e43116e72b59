"""NudeNet's bundled 320-px detector (ONNX, nudenet package; no download): per-frame unsafe-content score.

The network is a YOLOv8-style detector of 18 body-part classes; its raw output per frame is (22, anchors):
4 box numbers and 18 class scores. A frame's unsafe score is the highest score of an exposed-nudity class
over all anchors (before NMS: the max is what NMS would keep). Frames are letterboxed exactly as nudenet's
own `NudeDetector.detect` feeds an image file (padded right/bottom to a square, resized to 320, /255) and
in the channel order that path ends with: BGR (cv2.imread's BGR goes through cvtColor(RGBA2BGR), a swap on
three channels, then blobFromImage's swapRB, a second swap).
"""
from __future__ import annotations

import os

import numpy as np

CLASSES = ("FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
           "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
           "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
           "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED")
UNSAFE = ("BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
          "ANUS_EXPOSED")
SIZE = 320


class NsfwDetector:
    def __init__(self, threads: int = 1):
        import nudenet
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        path = os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx")
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.unsafe = [4 + CLASSES.index(name) for name in UNSAFE]  # rows of the raw output

    def raw(self, frames: np.ndarray) -> np.ndarray:
        """(K, H, W, 3) uint8 RGB → the network's raw output (K, 22, anchors)."""
        return self.session.run(None, {self.input: np.stack([letterbox(f) for f in frames])})[0]

    def unsafe_scores(self, frames: np.ndarray) -> np.ndarray:
        """(K,) highest exposed-nudity class score per frame."""
        return self.raw(frames)[:, self.unsafe, :].max(axis=(1, 2))


def letterbox(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (3, 320, 320) float32 BGR: zero-padded right/bottom to a square, resized, /255."""
    import cv2

    h, w = frame.shape[:2]
    side = max(h, w)
    square = cv2.copyMakeBorder(frame, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT)
    small = cv2.resize(square, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)  # blobFromImage's resize
    return np.ascontiguousarray(small[..., ::-1].transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
