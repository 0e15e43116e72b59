"""CLIP scoring throughput: stage clip_score as the pipeline calls it vs the same model alone.

    python -m pipeline.bench.clip [--quick] [--markdown docs/BENCHMARKS.md] [--device auto|cpu|cuda]

For ViT-B-32 and ViT-L-14 (open_clip's architectures, random weights:
`create_model` without pretrained, as the stage loads them with pretrained=null):

- "stage": one `ClipScore.__call__` on a batch of clip rows laid out as split
  leaves them (K=8 RGB uint8 frames of 398x224, i.e. 16:9 at split's 224 short
  side, as raw bytes in Arrow), timed whole: bytes → tensors, resize + crop +
  normalise, `encode_image`, a LAION-shaped aesthetic head, 6 prompt scores,
  consistency and motion, the Arrow output;
- "model": the same loaded model's `encode_image` on random (N, 3, S, S)
  tensors already on the device, same dtype, same images per forward.

Both count images/s; the ratio stage/model says what the pipeline's own work
costs (goal >= 0.8). Methods alternate per repeat; medians are reported.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.bench import kit as benchkit

GOAL = 0.8
FRAMES, WIDTH, HEIGHT = 8, 398, 224  # split's defaults: sample_frames=8, decode_short_side=224, 16:9
PLANS = {  # per architecture: clips per call, images per forward, repeats (full, quick)
    "ViT-B-32": {"full": (16, 64, 5), "quick": (4, 32, 2)},
    "ViT-L-14": {"full": (2, 16, 3), "quick": (1, 8, 2)},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.clip", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, help="torch threads (default: the usable cores)")
    parser.add_argument("--models", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--markdown", help="update this file's clip section (e.g. docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)

    from stages.models.loading import import_torchvision

    import_torchvision()
    import torch

    info = benchkit.machine_info(("open_clip_torch", "timm"))
    threads = args.threads or info["usable_cores"]
    torch.set_num_threads(threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    result = {"date": time.strftime("%Y-%m-%d"), "device": device, "threads": threads, "machine": info,
              "command": _command(args), "models": {}}
    with tempfile.TemporaryDirectory(prefix="vidprep-bench-clip-") as work:
        for name in args.models:
            clips, per_forward, repeats = PLANS[name]["quick" if args.quick else "full"]
            result["models"][name] = measure(name, device, clips, per_forward, repeats, Path(work))
            print(json.dumps({name: result["models"][name]}), flush=True)
    benchkit.publish(result, markdown(result), args.json, args.markdown, "clip", "CLIP scoring")
    return 0


def measure(name: str, device: str, clips: int, per_forward: int, repeats: int, work: Path) -> dict:
    import torch

    from stages.base import Resources
    from stages.clip_score import ClipScore

    stage = ClipScore(model=name, pretrained=None, aesthetic=str(random_head(name, work)),
                      images_per_forward=per_forward,
                      resources=Resources(gpus=1.0 if device == "cuda" else 0.0, batch_size=clips))
    stage.setup()
    clip = stage.clip
    batch = clip_rows(clips)
    images = clips * FRAMES
    pixels = torch.randn(images, 3, *clip.image_size, device=clip.device).to(clip.dtype)

    def model_alone():
        with torch.inference_mode():
            for start in range(0, images, per_forward):
                clip.model.encode_image(pixels[start:start + per_forward])
        if clip.device == "cuda":
            torch.cuda.synchronize()

    times = benchkit.time_interleaved({"stage": lambda: stage(batch), "model": model_alone}, repeats, warmup=True)
    median = benchkit.medians(times)
    return {"images": images, "images_per_forward": per_forward, "dtype": str(clip.dtype).replace("torch.", ""),
            "image_size": list(clip.image_size), "repeats": repeats, "times_s": times,
            "stage_images_per_s": images / median["stage"], "model_images_per_s": images / median["model"],
            "ratio": median["model"] / median["stage"]}


def random_head(name: str, work: Path) -> Path:
    """A LAION-shaped aesthetic head with random weights for `name`'s embedding size (saved like the release)."""
    import torch

    from stages.models.clip import aesthetic_head

    width = {"ViT-B-32": 512, "ViT-L-14": 768}[name]
    path = work / f"aesthetic-{width}.pth"
    torch.save({f"layers.{k}": v for k, v in aesthetic_head(width).state_dict().items()}, path)
    return path


def clip_rows(count: int) -> pa.Table:
    """`count` accepted clip rows as split emits them: frames (K, H, W, 3) uint8 RGB as bytes."""
    from pipeline.kit.synth import scene_frames

    rng = np.random.default_rng(0)
    frames = [scene_frames(rng, FRAMES, WIDTH, HEIGHT) for _ in range(count)]
    return pa.table({
        "status": ["accepted"] * count, "reason": pa.nulls(count, pa.string()),
        "source_uri": [f"/bench/clip{i}.mp4" for i in range(count)],
        "frames": pa.array([f.tobytes() for f in frames], pa.binary()),
        "frames_shape": pa.array([list(f.shape) for f in frames], pa.list_(pa.int32())),
    })


def markdown(result: dict) -> str:
    lines = [f"`{result['command']}` — {result['date']}, {result['device']}, {result['threads']} torch threads.",
             "", benchkit.machine_line(result["machine"]), "",
             "| model | images | per forward | dtype | stage (img/s) | model alone (img/s) | ratio | goal |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in result["models"].items():
        ok = "met" if r["ratio"] >= GOAL else "missed"
        lines.append(f"| {name} | {r['images']} | {r['images_per_forward']} | {r['dtype']} | "
                     f"{r['stage_images_per_s']:.2f} | {r['model_images_per_s']:.2f} | {r['ratio']:.2f} | "
                     f"≥ {GOAL} {ok} |")
    lines += ["", f"Random weights; frames {WIDTH}x{HEIGHT}, {FRAMES} per clip; medians of interleaved repeats "
              "(stage, model, stage, …) after one warm-up round. Seconds per repeat, min–max (stage / model): "
              + "; ".join(f"{name} {_spread(r['times_s']['stage'])} / {_spread(r['times_s']['model'])}"
                          for name, r in result["models"].items()) + "."]
    return "\n".join(lines)


def _spread(times: list[float]) -> str:
    return f"{min(times):.1f}–{max(times):.1f}"


def _command(args) -> str:
    parts = ["python -m pipeline.bench.clip"]
    if args.quick:
        parts.append("--quick")
    if args.device != "auto":
        parts.append(f"--device {args.device}")
    if args.markdown:
        parts.append(f"--markdown {args.markdown}")
    return " ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
