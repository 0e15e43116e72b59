"""`vidprep bench`: every per-stage benchmark with its baseline, in one command.

Each benchmark module times its stage and baseline side by side (interleaved,
medians; see pipeline/bench/kit.py), writes its JSON, and rewrites its own
section of docs/BENCHMARKS.md (memory: docs/RELIABILITY.md). This runs them
in turn and writes an index JSON with the machine facts.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import time
from pathlib import Path

from pipeline.bench import kit as benchkit

# name → (module, the Markdown file its section lives in)
BENCHMARKS = {
    "split": ("pipeline.bench.split", "docs/BENCHMARKS.md"),
    "clip": ("pipeline.bench.clip", "docs/BENCHMARKS.md"),
    "caption": ("pipeline.bench.caption", "docs/BENCHMARKS.md"),
    "encode": ("pipeline.bench.encode", "docs/BENCHMARKS.md"),
    "signals": ("pipeline.bench.signals", "docs/BENCHMARKS.md"),
    "shots": ("pipeline.bench.shots", "docs/BENCHMARKS.md"),
    "loader": ("pipeline.bench.loader", "docs/BENCHMARKS.md"),
    "packing": ("pipeline.bench.packing", "docs/BENCHMARKS.md"),
    "memory": ("pipeline.bench.memory", "docs/RELIABILITY.md"),
    "scale": ("pipeline.bench.scale", "docs/BENCHMARKS.md"),
    "dedup": ("pipeline.bench.dedup", "docs/BENCHMARKS.md"),
}


def run_all(args: argparse.Namespace) -> int:
    only = args.only or list(BENCHMARKS)
    unknown = [n for n in only if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"--only: unknown benchmark {unknown} (known: {', '.join(BENCHMARKS)})")
    out = Path(args.json_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "quick": args.quick,
             "machine": benchkit.machine_info(), "benchmarks": {}}
    for name in only:
        module, markdown = BENCHMARKS[name]
        markdown = markdown if args.markdown else None
        json_path = out / f"{name}.json"
        started = time.perf_counter()
        print(f"== {name} ({module})", flush=True)
        if name == "split":  # its CLI arguments predate this runner
            code = importlib.import_module(module).main(argparse.Namespace(
                quick=args.quick, video=args.video, repeats=args.repeats, json=str(json_path), markdown=markdown))
        elif name == "memory":
            argv = (["--counts", "200", "2000"] if args.quick else []) + (["--markdown", markdown] if markdown else [])
            code = importlib.import_module(module).main(argv)
        else:
            argv = (["--quick"] if args.quick else []) + ["--json", str(json_path)]
            code = importlib.import_module(module).main(argv + (["--markdown", markdown] if markdown else []))
        index["benchmarks"][name] = {"exit_code": code, "seconds": round(time.perf_counter() - started, 1),
                                     "json": str(json_path) if name != "memory" else None}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"wrote {out / 'index.json'}")
    return max(b["exit_code"] for b in index["benchmarks"].values())
