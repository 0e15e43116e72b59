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


def update_section(path: Path, key: str, title: str, body: str, description: str = "") -> None:
    """Replace the text between `<!-- bench:KEY:start/end -->`; append a `## title` section (with
    `description` before the markers) if absent."""
    start_mark, end_mark = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    block = f"{start_mark}\n{body}\n{end_mark}"
    text = path.read_text() if path.is_file() else ""
    start, end = text.find(start_mark), text.find(end_mark)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(end_mark):]
    else:
        intro = f"{description}\n\n" if description else ""
        text = (text.rstrip() + "\n\n" if text.strip() else "") + f"## {title}\n\n{intro}{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish(result: dict, text: str, json_path: str | None, markdown_path: str | None, key: str, title: str,
            description: str = "") -> None:
    """A benchmark's ending: its table printed, raw figures as JSON, its section of the Markdown file."""
    import json

    print(text)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n")
    if markdown_path:
        update_section(Path(markdown_path), key, title, text, description)


def cached_folder(folder: str | None, name: str, build: Callable[[Path], object]) -> Path:
    """`build(path)` once per name under the bench cache (VIDPREP_BENCH_CACHE or the temp folder); a
    folder counts as built only when complete: it is built beside and renamed."""
    import shutil
    import tempfile

    base = Path(folder or os.environ.get("VIDPREP_BENCH_CACHE", Path(tempfile.gettempdir()) / "vidprep-bench"))
    out = base / name
    if (out / "_commits").is_dir():
        return out
    partial = base / f"{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    build(partial)
    partial.rename(out)
    return out


def machine_text() -> str:
    """The machine line without its label, with the load average (other work skews wall-clock figures)."""
    return machine_line(machine_info()).removeprefix("Machine: ") + f", load average {os.getloadavg()[0]:.1f}"


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
