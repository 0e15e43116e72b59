"""Benchmark: driver memory as the number of inputs grows (the listing is streamed, waves are bounded).

    python -m pipeline.bench.memory [--counts 1000 10000] [--markdown docs/RELIABILITY.md]

Each count runs in a fresh process: N zero-byte `.mp4` files (each becomes a
`videos` error row after a cheap probe) through the Ray plan, with
`videos_per_task` large enough that scheduling, not decoding, dominates. The
figure is the driver process's peak RSS, the sum over its children is not
counted (Ray's workers are separate processes by design).
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.bench import kit as benchkit

CHILD = """
import json, resource, sys, time
from pipeline.config import load_config
from pipeline.run.runner import run
config = load_config(None, ["run.wave_size=500", "run.videos_per_task=250", "run.writer_rows=2000"])
started = time.time()
result = run(config, sys.argv[1], sys.argv[2], progress=False)
print(json.dumps({"processed": result.processed, "waves": result.waves, "wall_s": time.time() - started,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(count: int, folder: Path) -> dict:
    inputs = folder / f"in-{count}"
    inputs.mkdir()
    for i in range(count):
        (inputs / f"empty-{i:07d}.mp4").touch()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(inputs), str(folder / f"out-{count}")],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.memory")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vidprep-bench-memory-") as tmp:
        results = {count: measure(count, Path(tmp)) for count in args.counts}
    lines = ["| inputs | driver peak RSS | wall time | waves |", "|---:|---:|---:|---:|"]
    lines += [f"| {n:,} | {r['peak_rss_mib']:.0f} MiB | {r['wall_s']:.0f} s | {r['waves']} |" for n, r in results.items()]
    command = "python -m pipeline.bench.memory " + " ".join(argv if argv is not None else sys.argv[1:])
    lines += ["", f"- {benchkit.machine_line(benchkit.machine_info())}",
              f"- Command: `{command.strip()}` ({datetime.datetime.now().astimezone().isoformat(timespec='seconds')})"]
    table = "\n".join(lines)
    if args.markdown:
        benchkit.update_section(Path(args.markdown), "memory", "Driver memory", table)
    print(table)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
