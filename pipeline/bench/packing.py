"""Packing benchmark: `vidprep train` with NaViT packing against bucketed batches, on a spread of buckets.

    python -m pipeline.bench.packing [--quick] [--markdown docs/BENCHMARKS.md] [--json bench-packing.json]
    python -m pipeline.bench.packing --size DiT-B/2 --device cuda --precision bf16   # on a GPU, with MFU

See DESCRIPTION (also the text of the docs/BENCHMARKS.md section).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

START, END = "<!-- bench:packing:start -->", "<!-- bench:packing:end -->"
# Pixel bucket (frames x height x width) → Wan-layout latent (16, 1 + (F - 1) / 4, H / 8, W / 8) and its
# share of the clips: landscape, square and portrait, images, short and long clips (small sizes, for a CPU).
BUCKETS = {
    "17x128x224": ((16, 5, 16, 28), 0.30), "17x128x128": ((16, 5, 16, 16), 0.20), "33x128x224": ((16, 9, 16, 28), 0.15),
    "9x224x128": ((16, 3, 28, 16), 0.10), "49x96x160": ((16, 13, 12, 20), 0.10), "1x128x128": ((16, 1, 16, 16), 0.10),
    "1x224x128": ((16, 1, 28, 16), 0.05),
}
TOKEN_BUDGET = 2048
DESCRIPTION = f"""Synthetic shards in the real contract with a spread of buckets — {len(BUCKETS)} buckets of
landscape, square and portrait clips and images, 1 to 49 frames, 64 to 1,008 patch tokens per
clip (Wan-layout latents, 16 channels, patch 2; 64-d caption embeddings of 20-160 tokens), one
file per bucket, row groups of 8 clips. Each method is `vidprep train` itself
(`pipeline.trainer.train.main`) for one epoch of the same clips, token budget {TOKEN_BUDGET}, a
tiny DiT (depth 2, width 64, 4 heads) on the CPU with one thread; methods run interleaved per
repeat, medians reported:

- bucketed: batches of one bucket, batch size = budget ÷ tokens per clip (partial batches kept);
- packed, segments: `data.packing: true` — clips of any bucket packed first-fit decreasing into
  sequences of at most the budget, attention per run of same-shape clips (exactly block-diagonal);
- packed, mask: the same packs, attention as one SDPA call with a boolean block-diagonal mask
  (`model.packed_attention: mask`; dense: it computes every L² score, most masked away).

Padding = 1 − clip tokens ÷ (steps × budget): the share of each step's token budget that held no
clip. Tokens/s counts clip tokens only, over the training loop's wall time (its log line);
tokens/CPU s divides the epoch's tokens by this process's CPU time for the whole `main` call
(start-up included; less sensitive to other load on a shared machine). `vidprep bench --only
packing` or `python -m pipeline.bench.packing` (`--quick`: fewer clips); on a GPU add
`--size DiT-B/2 --device cuda --precision bf16` for MFU."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.packing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="80 clips and 1 repeat")
    parser.add_argument("--clips", type=int, help="clips to write (default 160, quick 80)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="DiT-S/2", help="DiT size; the default is narrowed to a tiny model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--token-budget", type=int, default=TOKEN_BUDGET, help="patch tokens per step (a GPU wants more)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    parser.add_argument("--folder", help="where the shards go (default: a cached temp folder)")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--markdown", help="update this Markdown file's packing section (e.g. docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)
    clips = args.clips or (80 if args.quick else 160)
    repeats = 1 if args.quick else args.repeats
    if clips < 20 or repeats < 1:
        raise SystemExit("--clips must be >= 20 and --repeats >= 1")
    import torch

    torch.set_num_threads(args.threads)
    out = shards_folder(args.folder, clips)
    result = run_bench(out, repeats, args.size, args.device, args.precision, args.token_budget)
    result.update(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), clips=clips,
                  command="python -m pipeline.bench.packing " + " ".join(argv if argv is not None else sys.argv[1:]),
                  machine=_machine(), threads=args.threads)
    table = markdown(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        update_markdown(Path(args.markdown), table)
    print(table)
    return 0


def shards_folder(folder: str | None, clips: int) -> Path:
    """Synthetic shards with BUCKETS' spread, written once per size and reused (renamed when complete)."""
    from pipeline.trainer.synthetic import write_shards

    base = Path(folder or os.environ.get("VIDPREP_BENCH_CACHE", Path(tempfile.gettempdir()) / "vidprep-bench"))
    out = base / f"packing-shards-{clips}"
    if (out / "_commits").is_dir():
        return out
    partial = base / f"packing-shards-{clips}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    counts = {bucket: max(1, round(share * clips)) for bucket, (_, share) in BUCKETS.items()}
    write_shards(partial, {bucket: shape for bucket, (shape, _) in BUCKETS.items()}, counts, text_dim=64,
                 text_tokens=(20, 160), row_group_rows=8,
                 latent_fn=lambda rng, shape, i: rng.standard_normal(shape, np.float32))
    partial.rename(out)
    return out


METHODS = {"bucketed": ["data.packing=false"],
           "packed_segments": ["data.packing=true", "model.packed_attention=segments"],
           "packed_mask": ["data.packing=true", "model.packed_attention=mask"]}


def run_bench(out: Path, repeats: int, size: str = "DiT-S/2", device: str = "cpu", precision: str = "fp32",
              token_budget: int = TOKEN_BUDGET) -> dict:
    from pipeline.trainer.config import load_train_config
    from pipeline.trainer.index import ShardIndex
    from pipeline.trainer.loader import DataConfig, Loader
    from pipeline.trainer.train import main as train

    tiny = ["model.depth=2", "model.hidden_size=64", "model.num_heads=4"] if size == "DiT-S/2" and device == "cpu" else []
    steps = {}
    for name, overrides in METHODS.items():  # one epoch each: the same clips
        packing = "data.packing=true" in overrides
        loader = Loader(ShardIndex.open(out), DataConfig(token_budget=token_budget, packing=packing, num_workers=0),
                        (1, 2))
        steps[name] = loader.steps_per_epoch
    records: dict[str, list[dict]] = {name: [] for name in METHODS}
    cpu_s: dict[str, list[float]] = {name: [] for name in METHODS}
    summaries: dict[str, dict] = {}
    train_log = logging.getLogger("vidprep.train")
    level = train_log.level
    train_log.setLevel(logging.WARNING)  # no per-run log lines in the benchmark's output
    with tempfile.TemporaryDirectory(prefix="vidprep-bench-packing-") as scratch:
        for r in range(repeats + 1):  # round 0: warm-up (page cache, allocator, kernels), not reported
            for name, overrides in METHODS.items():
                results = Path(scratch) / f"{name}-{r}"
                config = load_train_config(None, [
                    f"data.path={out}", f"train.results={results}", f"model.size={size}", *tiny,
                    f"data.token_budget={token_budget}", "data.num_workers=0", f"train.steps={steps[name]}",
                    f"train.log_every={steps[name]}", "train.ckpt_every=1000000", f"train.device={device}",
                    f"train.precision={precision}", *overrides])
                started = time.process_time()
                summary = train(config)
                cpu = time.process_time() - started  # this process's CPU time: less sensitive to other load
                record = json.loads((results / "log.jsonl").read_text().splitlines()[-1])
                if r:
                    records[name].append(record)
                    cpu_s[name].append(cpu)
                    summaries[name] = summary
                shutil.rmtree(results, ignore_errors=True)
    train_log.setLevel(level)
    result = {"token_budget": token_budget, "size": size, "device": device, "precision": precision, "repeats": repeats,
              "buckets": {b: list(shape) for b, (shape, _) in BUCKETS.items()}, "steps": steps, "records": records,
              "tokens": {n: s["tokens"] for n, s in summaries.items()},
              "samples": {n: s["samples"] for n, s in summaries.items()},
              "padding": {n: s["padding"] for n, s in summaries.items()},
              "text_padding": {n: statistics.median(r["text_padding"] for r in rs) for n, rs in records.items()},
              "tokens_per_s": {n: statistics.median(r["tokens_per_s"] for r in rs) for n, rs in records.items()},
              "cpu_s": cpu_s, "tokens_per_cpu_s": {n: summaries[n]["tokens"] / statistics.median(v) for n, v in cpu_s.items()},
              "model_tflops_per_s": {n: statistics.median(r["model_tflops_per_s"] for r in rs) for n, rs in records.items()}}
    if all("mfu" in r for rs in records.values() for r in rs):
        result["mfu"] = {n: statistics.median(r["mfu"] for r in rs) for n, rs in records.items()}
    result["speedup_vs_bucketed"] = {n: v / result["tokens_per_s"]["bucketed"] for n, v in result["tokens_per_s"].items()}
    result["cpu_speedup_vs_bucketed"] = {n: v / result["tokens_per_cpu_s"]["bucketed"]
                                         for n, v in result["tokens_per_cpu_s"].items()}
    return result


def markdown(result: dict) -> str:
    labels = {"bucketed": "bucketed (one bucket per batch)", "packed_segments": "packed, segments attention",
              "packed_mask": "packed, block-mask SDPA"}
    mfu = "mfu" in result
    lines = [f"Command: `{result['command']}` — {result['date']}.",
             f"Machine: {result['machine']}; torch threads {result['threads']}.",
             f"{result['clips']} clips in {len(result['buckets'])} buckets, {result['tokens']['bucketed']:,} clip tokens per "
             f"epoch, token budget {result['token_budget']:,}; {result['size']}{' narrowed to depth 2, width 64' if result['device'] == 'cpu' and result['size'] == 'DiT-S/2' else ''}"
             f", {result['device']} {result['precision']}; median of {result['repeats']} interleaved repeats after a "
             "warm-up round.", "",
             "| method | steps / epoch | clips / step | padding | text padding | tokens/s | vs bucketed | tokens/CPU s "
             "| vs bucketed |" + (" MFU |" if mfu else ""), "|---|---|---|---|---|---|---|---|---|" + ("---|" if mfu else "")]
    for name, label in labels.items():
        lines.append(f"| {label} | {result['steps'][name]} | {result['samples'][name] / result['steps'][name]:.1f} | "
                     f"{100 * result['padding'][name]:.1f}% | {100 * result['text_padding'][name]:.1f}% | "
                     f"{result['tokens_per_s'][name]:,.0f} | {result['speedup_vs_bucketed'][name]:.2f}x | "
                     f"{result['tokens_per_cpu_s'][name]:,.0f} | {result['cpu_speedup_vs_bucketed'][name]:.2f}x |"
                     + (f" {100 * result['mfu'][name]:.1f}% |" if mfu else ""))
    return "\n".join(lines)


def update_markdown(path: Path, table: str) -> None:
    """Rewrite this benchmark's section between its markers (appended, with its description, if missing)."""
    from pipeline.bench.kit import update_section

    text = path.read_text() if path.is_file() else ""
    if START in text:
        update_section(path, "packing", "Trainer packing (NaViT)", table)
    else:
        body = DESCRIPTION + "\n\n" + START + "\n" + table + "\n" + END
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((text.rstrip() + "\n\n" if text.strip() else "") + "## Trainer packing (NaViT)\n\n" + body + "\n")


def _machine() -> str:
    from pipeline.bench.kit import machine_info, machine_line

    return machine_line(machine_info()).removeprefix("Machine: ") + f", load average {os.getloadavg()[0]:.1f}"


if __name__ == "__main__":
    sys.exit(main())
