"""What every benchmark shares: interleaved timing, machine facts, and its section of docs/BENCHMARKS.md.

Methods compared in one benchmark run interleaved (A, B, A, B, ...) so drift
in machine load hits them alike, and each reports the median of its runs.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

BASE_PACKAGES = ("torch", "numpy", "pyarrow", "ray")


def time_interleaved(methods: dict[str, Callable[[], object]], repeats: int,
                     warmup: bool = False) -> dict[str, list[float]]:
    """Wall times of each method over `repeats` interleaved rounds (after one untimed round if `warmup`)."""
    if warmup:
        for method in methods.values():
            method()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            started = time.perf_counter()
            method()
            times[name].append(time.perf_counter() - started)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in times.items()}


def machine_info(packages: tuple[str, ...] = ()) -> dict:
    """CPU model, cores, OS, Python, package versions, and the GPU when torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "os": platform.platform(),
            "python": platform.python_version(),
            "packages": {name: _version(name) for name in (*BASE_PACKAGES, *packages)}}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def machine_line(info: dict) -> str:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    return (f"Machine: {info['cpu']}, {info['usable_cores']}/{info['cores']} cores{gpu}, Python {info['python']}, "
            + ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v))


def update_section(path: Path, key: str, title: str, body: str) -> None:
    """Replace the text between `<!-- bench:KEY:start/end -->`; append a `## title` section if absent."""
    start_mark, end_mark = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    block = f"{start_mark}\n{body}\n{end_mark}"
    text = path.read_text() if path.is_file() else ""
    start, end = text.find(start_mark), text.find(end_mark)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(end_mark):]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + f"## {title}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
