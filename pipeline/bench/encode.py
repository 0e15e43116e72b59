"""Benchmark of stage `encode`: frames/s inside the pipeline against the VAE alone, and peak memory.

    python -m pipeline.bench.encode [--quick] [--markdown docs/BENCHMARKS.md] [--json FILE]

Both methods encode the same clips in the same buckets and batches with the
same randomly initialised VAE of a real architecture (SD's AutoencoderKL,
Wan 2.1's AutoencoderKLWan): "stage" is Encode.__call__ on split's clip rows
(decord decode of the needed frames, resize + crop, VAE, bytes out); "alone"
is the VAE's encode on random tensors of the same shape. Ratio = stage
frames/s ÷ alone frames/s (goal ≥ 0.8). On a CPU, small buckets keep it short;
on a GPU the buckets are 256² and the VAE runs in bf16.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

from pipeline.bench import kit as benchkit

GOAL = 0.8
ARCHITECTURES = {  # name: (diffusers class, constructor kwargs) — the real layouts, random weights
    "sd-vae": ("AutoencoderKL", dict(down_block_types=("DownEncoderBlock2D",) * 4,
                                     up_block_types=("UpDecoderBlock2D",) * 4,
                                     block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                     latent_channels=4, scaling_factor=0.18215)),
    "wan-vae": ("AutoencoderKLWan", {}),  # Wan 2.1: base_dim 96, z_dim 16, 8x spatial, 4x temporal
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.encode", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--json", default="bench-encode.json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    import torch

    gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="vidprep-bench-encode-") as tmp:
        clips = _clips(Path(tmp), count=1 if args.quick else 2)
        results = {arch: bench_arch(arch, clips, Path(tmp), repeats, gpu) for arch in args.archs}
    command = "python -m pipeline.bench.encode " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "command": command.strip(),
              "repeats": repeats, "results": results, "machine": benchkit.machine_info(("diffusers", "decord"))}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    if args.markdown:
        benchkit.update_section(Path(args.markdown), "encode", "Encode (VAE latents)", table)
    print(table)
    return 0


def _clips(folder: Path, count: int) -> pa.Table:
    """`count` accepted clips of a synthetic 640x360 video, as split emits them."""
    from pipeline.kit.synth import write_video
    from stages.probe import Probe
    from stages.split import Split

    path = folder / "bench.mp4"
    write_video(path, [120] * count, width=640, height=360, fps=24)
    return Split(min_clip_s=1.0)(Probe()(pa.table({"source_uri": [str(path)]})))


def bench_arch(arch: str, clips: pa.Table, folder: Path, repeats: int, gpu: bool) -> dict:
    import torch

    from stages.models.loading import import_torchvision
    from stages.encode import Encode

    import_torchvision()
    import diffusers

    class_name, kwargs = ARCHITECTURES[arch]
    torch.manual_seed(0)
    path = folder / arch
    getattr(diffusers, class_name)(**kwargs).save_pretrained(path)
    frames = [17] if gpu else [9]
    stage = Encode(vae=str(path), vae_kind="auto", vae_subfolder=None, text_encoder=None,
                   resolutions=[256] if gpu else [48], frame_counts=frames, clips_per_batch=clips.num_rows)
    stage.resources.gpus = 1 if gpu else 0
    stage.setup()
    rss_before = benchkit.peak_rss_mib()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    out = stage(clips)
    encoded = [r for r in out.select(["bucket", "enc_num_frames"]).to_pylist() if r["bucket"]]
    bucket = encoded[0]["bucket"]
    t, h, w = map(int, bucket.split("x"))
    pixels = torch.rand(len(encoded), 3, t, h, w) * 2 - 1
    total_frames = sum(r["enc_num_frames"] for r in encoded)

    def alone():
        stage.model.encode(pixels)
        if gpu:
            torch.cuda.synchronize()

    def in_stage():
        stage(clips)
        if gpu:
            torch.cuda.synchronize()

    times = benchkit.time_interleaved({"stage": in_stage, "alone": alone}, repeats, warmup=False)
    med = benchkit.medians(times)
    fps = {name: total_frames / seconds for name, seconds in med.items()}
    return {"class": class_name, "bucket": bucket, "clips": len(encoded), "frames": total_frames,
            "dtype": "bfloat16" if gpu else "float32", "times_s": times, "median_s": med, "frames_per_s": fps,
            "ratio": fps["stage"] / fps["alone"],
            "peak_memory_mib": (torch.cuda.max_memory_allocated() / 2**20 if gpu
                                else max(benchkit.peak_rss_mib(), rss_before)),
            "memory_kind": "GPU max allocated" if gpu else "process peak RSS"}


def markdown(report: dict) -> str:
    lines = [f"Median of {report['repeats']} interleaved runs; random weights, real architectures.", "",
             "| VAE | bucket (T×H×W) | dtype | stage frames/s | VAE alone frames/s | ratio (goal ≥ 0.8) | peak memory |",
             "|---|---|---|---:|---:|---:|---:|"]
    for arch, r in report["results"].items():
        lines.append(f"| {arch} ({r['class']}) | {r['bucket']} | {r['dtype']} | {r['frames_per_s']['stage']:.1f} | "
                     f"{r['frames_per_s']['alone']:.1f} | **{r['ratio']:.2f}** "
                     f"({'met' if r['ratio'] >= GOAL else 'not met'}) | {r['peak_memory_mib']:.0f} MiB "
                     f"({r['memory_kind']}) |")
    lines += ["", f"- {benchkit.machine_line(report['machine'])}", f"- Command: `{report['command']}` ({report['date']})"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
