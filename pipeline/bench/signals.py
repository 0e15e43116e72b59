"""Cost per clip of each measured signal, side by side with clip_score, so users can choose what to compute.

    python -m pipeline.bench.signals [--quick] [--markdown docs/BENCHMARKS.md] [--device auto|cpu|cuda]

Clip rows as split leaves them (K=8 RGB frames of 398x224: 16:9 at split's 224 short side, synthetic
scenes), one worker thread each (a `cpus: 1` worker). Timed per call on the same batch, interleaved
(pixels, motion, text, nsfw, clip_score B/32, clip_score L/14, pixels, ...), medians, in ms per clip:

- pixels / motion / text: stage `signals` with only that group on;
- nsfw: stage `nsfw` (NudeNet 320n, ONNX Runtime CPU);
- clip_score: stage `clip_score` with open_clip ViT-B-32 and ViT-L-14 (random weights, same compute as the
  released ones), a LAION-shaped head and the 6 default prompts, on `--device`.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.bench import kit as benchkit

PLANS = {"full": (4, 3), "quick": (1, 2)}  # clips per call, repeats (ViT-L-14 on one CPU thread: ~1 s an image)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.signals", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips and repeats")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="clip_score's device")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--markdown", help="update this file's signals section (e.g. docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)

    import cv2
    import pyarrow as pa
    import torch

    from pipeline.bench.clip import clip_rows, random_head
    from stages.base import Resources
    from stages.clip_score import ClipScore
    from stages.nsfw import Nsfw
    from stages.signals import Signals

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    clips, repeats = PLANS["quick" if args.quick else "full"]
    batch = clip_rows(clips)
    indices = pa.array([list(range(0, 8 * 30, 30))] * clips, pa.list_(pa.int64()))  # 8 samples of 8 s at 30 fps
    batch = batch.append_column("sample_frame_indices", indices)
    one_cpu = Resources(cpus=1)
    methods = {"pixels": Signals(motion=False, text=False, resources=one_cpu),
               "motion": Signals(pixels=False, text=False, resources=one_cpu),
               "text": Signals(pixels=False, motion=False, resources=one_cpu),
               "nsfw": Nsfw(resources=one_cpu)}
    with tempfile.TemporaryDirectory(prefix="vidprep-bench-signals-") as work:
        for name in ("ViT-B-32", "ViT-L-14"):
            methods[f"clip_score {name}"] = ClipScore(
                model=name, pretrained=None, aesthetic=str(random_head(name, Path(work))),
                resources=Resources(cpus=1, gpus=1.0 if device == "cuda" else 0.0, batch_size=clips))
        for stage in methods.values():
            stage.setup()
        torch.set_num_threads(1)  # a stage's setup may have changed it
        times = benchkit.time_interleaved({n: (lambda s=s: s(batch)) for n, s in methods.items()}, repeats,
                                          warmup=True)
    median = benchkit.medians(times)
    result = {"date": time.strftime("%Y-%m-%d"), "clip_score_device": device, "clips": clips, "repeats": repeats,
              "machine": benchkit.machine_info(("opencv-python-headless", "onnxruntime", "open_clip_torch")),
              "command": "vidprep bench --only signals" + (" --quick" if args.quick else ""),
              "ms_per_clip": {n: 1000 * t / clips for n, t in median.items()}, "times_s": times}
    benchkit.publish(result, markdown(result), args.json, args.markdown, "signals", "Signals: cost per clip")
    return 0


def markdown(result: dict) -> str:
    ms = result["ms_per_clip"]
    base = ms["clip_score ViT-L-14"]
    lines = [f"`{result['command']}` — {result['date']}; {result['clips']} clips per call, K=8 frames of 398x224, "
             f"{result['repeats']} interleaved repeats after a warm-up, medians; one thread per stage; clip_score on "
             f"{result['clip_score_device']}.", "", benchkit.machine_line(result["machine"]), "",
             "| signal | columns | ms per clip | clip_score ViT-L-14 costs |", "|---|---|---|---|"]
    columns = {"pixels": "luma_mean/std, black_fraction, sharpness, colourfulness",
               "motion": "motion_flow_px, camera_motion (+ fit), motion_subject_share, motion_frozen",
               "text": "text_area, text_boxes (PP-OCRv4 det at 320 short side)",
               "nsfw": "nsfw_score (NudeNet 320n)",
               "clip_score ViT-B-32": "clip_* (embedding, aesthetic, 6 prompts, consistency, motion)",
               "clip_score ViT-L-14": "clip_* (the default model)"}
    for name, value in ms.items():
        lines.append(f"| {name} | {columns[name]} | {value:.1f} | {base / value:.0f}x as much |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
