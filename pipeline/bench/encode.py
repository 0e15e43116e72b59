"""Benchmark of stage `encode`: frames/s inside the pipeline against the VAE alone, and peak memory.

    python -m pipeline.bench.encode [--quick] [--markdown docs/BENCHMARKS.md] [--json FILE]

All methods encode the same clips in the same buckets and groups with the
same randomly initialised VAE of a real architecture (SD's AutoencoderKL,
Wan 2.1's AutoencoderKLWan): "stage" is Encode.__call__ on split's clip rows
(FFmpeg decode of the needed frames, one open per source, resize + crop, VAE,
bytes out), with the next group decoded in a thread while the VAE runs
(`prefetch`, the default); "plain" is the same stage decoding each group
just before its VAE call (`prefetch: false`); "alone" is the VAE's encode on
random tensors of the same shapes, group by group. Ratio = stage frames/s ÷
alone frames/s (goal ≥ 0.8); "VAE waited" is the stage's own measure of the
time its VAE waited on decoded frames per call (input_wait_s). On a CPU, small buckets keep it short;
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
        clips = _clips(Path(tmp), count=2 if args.quick else 4)
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
    per_group = max(1, clips.num_rows // 2)  # two VAE groups at least: something to overlap
    stage = Encode(vae=str(path), vae_kind="auto", vae_subfolder=None, text_encoder=None,
                   resolutions=[256] if gpu else [48], frame_counts=frames, clips_per_batch=per_group)
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
        for start in range(0, len(encoded), per_group):
            stage.model.encode(pixels[start: start + per_group])
        if gpu:
            torch.cuda.synchronize()

    waits: dict[str, list[float]] = {"stage": [], "plain": []}

    def run_stage(prefetch: bool):
        def call():
            stage.prefetch = prefetch
            before = stage.input_wait_s
            stage(clips)
            if gpu:
                torch.cuda.synchronize()
            waits["stage" if prefetch else "plain"].append(stage.input_wait_s - before)
        return call

    times = benchkit.time_interleaved({"stage": run_stage(True), "plain": run_stage(False), "alone": alone},
                                      repeats, warmup=False)
    med = benchkit.medians(times)
    waited = {name: sorted(w)[len(w) // 2] for name, w in waits.items()}
    fps = {name: total_frames / seconds for name, seconds in med.items()}
    return {"class": class_name, "bucket": bucket, "clips": len(encoded), "frames": total_frames,
            "clips_per_group": per_group, "vae_waited_s": waited,
            "dtype": "bfloat16" if gpu else "float32", "times_s": times, "median_s": med, "frames_per_s": fps,
            "ratio": fps["stage"] / fps["alone"], "ratio_plain": fps["plain"] / fps["alone"],
            "peak_memory_mib": (torch.cuda.max_memory_allocated() / 2**20 if gpu
                                else max(benchkit.peak_rss_mib(), rss_before)),
            "memory_kind": "GPU max allocated" if gpu else "process peak RSS"}


def markdown(report: dict) -> str:
    lines = [f"Median of {report['repeats']} interleaved runs; random weights, real architectures.", "",
             "| VAE | bucket (T×H×W) | clips (per group) | dtype | stage frames/s (prefetch) | stage, no prefetch | "
             "VAE alone frames/s | ratio (goal ≥ 0.8) | ratio, no prefetch | VAE waited s/call (prefetch / none) "
             "| peak memory |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arch, r in report["results"].items():
        lines.append(f"| {arch} ({r['class']}) | {r['bucket']} | {r['clips']} ({r['clips_per_group']}) | {r['dtype']} | "
                     f"{r['frames_per_s']['stage']:.1f} | {r['frames_per_s']['plain']:.1f} | "
                     f"{r['frames_per_s']['alone']:.1f} | **{r['ratio']:.2f}** "
                     f"({'met' if r['ratio'] >= GOAL else 'not met'}) | {r['ratio_plain']:.2f} | "
                     f"{r['vae_waited_s']['stage']:.3f} / {r['vae_waited_s']['plain']:.3f} | "
                     f"{r['peak_memory_mib']:.0f} MiB ({r['memory_kind']}) |")
    lines += ["", f"- {benchkit.machine_line(report['machine'])}", f"- Command: `{report['command']}` ({report['date']})"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
