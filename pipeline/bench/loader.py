"""Loader benchmark: the trainer's loader against a raw pyarrow read of the same shard files.

    python -m pipeline.bench.loader [--quick] [--markdown docs/BENCHMARKS.md] [--json bench-loader.json]

See DESCRIPTION (also the text of the docs/BENCHMARKS.md section).
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import time
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.bench.kit import cached_folder, machine_text, publish

START, END = "<!-- bench:loader:start -->", "<!-- bench:loader:end -->"
DESCRIPTION = """Synthetic shards in the real contract (`pipeline.trainer.synthetic`), sized like the
default encode settings: Wan latents of a 17x256x256 clip (16x5x32x32 float16, 160 KiB) and
T5-XXL caption embeddings (4096-d float16; long captions 20-160 tokens, short 20), row
groups of ~32 MiB, page cache warm. Methods run interleaved per repeat (A, B, C, D, A, ...)
so load drift hits all alike; medians are reported:

- raw: `pq.ParquetFile(f).read_row_group(i, columns=...)` for every row group with the
  loader's columns, tables materialised, nothing decoded (pyarrow's defaults);
- raw, memory_map: the same with `memory_map=True`, as the loader opens local shards;
- loader: `pipeline.trainer.loader.Loader`, one epoch in the training process
  (`num_workers=0`): plan, block-shuffled windows, zero-copy views, batches stacked and
  padded (latent, text, mask) as torch tensors;
- loader, 2 workers: the same with 2 DataLoader worker processes (batches cross into the
  training process through shared memory).

Bytes are the tensor payload of the files (latent + text_long + text_short), the same for
every method, so bytes/s ratios are time ratios. Goal: loader ≥ 0.7x raw. `python -m
pipeline.bench.loader` (`--quick` for ~100 MiB)."""
GOAL = 0.7
LATENT = (16, 5, 32, 32)  # Wan 2.1 VAE latents of a 17-frame 256x256 clip
TEXT_DIM = 4096  # T5-XXL
ROW_GROUP_BYTES = 32 << 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.loader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~100 MiB of shards and 2 repeats")
    parser.add_argument("--rows", type=int, help="clips to write (default 640, quick 96)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", help="where the shards go (default: a cached temp folder)")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--markdown", help="update this Markdown file's loader section (e.g. docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)
    rows = args.rows or (96 if args.quick else 640)
    repeats = min(args.repeats, 2) if args.quick else args.repeats
    if rows < 8 or repeats < 1:
        raise SystemExit("--rows must be >= 8 and --repeats >= 1")
    out = shards_folder(args.folder, rows)
    result = run_bench(out, repeats)
    result.update(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), rows=rows,
                  command="python -m pipeline.bench.loader " + " ".join(argv if argv is not None else sys.argv[1:]),
                  machine=machine_text())
    publish(result, markdown(result), args.json, args.markdown, "loader", "Trainer loader", DESCRIPTION)
    return 0


def shards_folder(folder: str | None, rows: int) -> Path:
    """Synthetic shards, written once per size and reused."""
    from pipeline.trainer.synthetic import write_shards

    row_bytes = 2 * (np.prod(LATENT) + 130 * TEXT_DIM)
    return cached_folder(folder, f"loader-shards-{rows}", lambda partial: write_shards(
        partial, {"17x256x256": LATENT}, rows, text_dim=TEXT_DIM, text_tokens=(20, 160),
        row_group_rows=max(1, ROW_GROUP_BYTES // int(row_bytes)), files_per_bucket=max(1, rows // 256),
        latent_fn=lambda rng, shape, i: rng.standard_normal(shape, np.float32)))


def run_bench(out: Path, repeats: int) -> dict:
    from pipeline.bench.kit import medians
    from pipeline.store.commit import CommitLog
    from pipeline.trainer.index import ShardIndex
    from pipeline.trainer.loader import DataConfig, Loader
    from pipeline.trainer.reader import COLUMNS

    files = CommitLog(out).files("shards")
    payload = 0  # the tensors' bytes (values only)
    for path in files:
        for column in pq.read_table(path, columns=["latent", "text_long", "text_short"]).columns:
            payload += pc.sum(pc.binary_length(column)).as_py() or 0
    index = ShardIndex.open(out)
    rows: dict[str, int] = {}

    def raw(memory_map: bool):
        def run() -> None:
            count = 0
            for path in files:
                handle = pq.ParquetFile(path, memory_map=memory_map)
                for i in range(handle.num_row_groups):
                    count += handle.read_row_group(i, columns=COLUMNS).num_rows
            rows["raw_mmap" if memory_map else "raw"] = count
        return run

    def loader(workers: int):
        def run() -> None:
            data = Loader(index, DataConfig(token_budget=8 * 2560, num_workers=workers, window_row_groups=2), (1, 2))
            rows[f"loader_w{workers}"] = sum(len(b["clip_id"]) for b in itertools.islice(iter(data), data.steps_per_epoch))
        return run

    methods = {"raw": raw(False), "raw_mmap": raw(True), "loader": loader(0), "loader_w2": loader(2)}
    for method in methods.values():  # warm-up: page cache, imports, allocator pools
        method()
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):  # interleaved: A, B, C, D, A, B, ...
        for name, method in methods.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            method()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    median, median_cpu = medians(wall), medians(cpu)
    return {"payload_bytes": payload, "files": len(files), "rows_read": rows, "repeats": repeats, "times_s": wall,
            "cpu_times_s": cpu, "median_s": median, "median_cpu_s": median_cpu,
            "gb_per_s": {n: payload / s / 1e9 for n, s in median.items()},
            "ratio_vs_raw": {n: median["raw"] / s for n, s in median.items() if n != "raw"},
            "cpu_ratio_vs_raw": {n: median_cpu["raw"] / s for n, s in median_cpu.items() if n in ("raw_mmap", "loader")}}


def markdown(result: dict) -> str:
    labels = {"raw": "pyarrow read_row_group (raw, defaults)", "raw_mmap": "pyarrow read_row_group, memory_map",
              "loader": "vidprep loader, in process", "loader_w2": "vidprep loader, 2 worker processes"}
    lines = [f"Command: `{result['command']}` — {result['date']}.", f"Machine: {result['machine']}.",
             f"{result['rows']} clips, {result['payload_bytes'] / 2**20:.0f} MiB of tensor payload in {result['files']} "
             f"file(s), page cache warm; median of {result['repeats']} interleaved repeats. CPU s: this process's "
             "CPU time (less sensitive to other load on a shared machine; workers' time not included).", "",
             "| method | median wall s | GB/s | vs raw | median CPU s | CPU vs raw |", "|---|---|---|---|---|---|"]
    for name, label in labels.items():
        ratio, cpu_ratio = result["ratio_vs_raw"].get(name, 1.0), result["cpu_ratio_vs_raw"].get(name)
        lines.append(f"| {label} | {result['median_s'][name]:.3f} | {result['gb_per_s'][name]:.2f} | {ratio:.2f} | "
                     f"{result['median_cpu_s'][name]:.3f} | {'' if cpu_ratio is None else f'{cpu_ratio:.2f}'} |")
    ratio = result["ratio_vs_raw"]["loader"]
    mmap = result["median_s"]["raw_mmap"] / result["median_s"]["loader"]
    lines += ["", f"Goal: loader ≥ {GOAL}x raw bytes/s — {'met' if ratio >= GOAL else 'not met'} here "
                  f"({ratio:.2f}x wall, {result['cpu_ratio_vs_raw']['loader']:.2f}x CPU). Against the memory-mapped "
                  f"read it is {mmap:.2f}x: the loader writes every delivered byte once more, into the batch."]
    return "\n".join(lines)




if __name__ == "__main__":
    sys.exit(main())
