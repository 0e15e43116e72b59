"""What each model stage actually runs on, as reported by its workers (run.json's "devices").

The plan says what a stage asked for (a GPU share, `dtype: auto`); what it got
depends on the worker: a CPU torch build, CUDA_VISIBLE_DEVICES, a family's own
VAE dtype. So after setup() every worker of a model stage looks at the torch
modules the stage holds (their first parameter's device and dtype: what the
forward pass will use) and reports them to the driver, which records one line
per stage, device and dtype in run.json and in the end-of-run summary.
"""
from __future__ import annotations

import os
import platform
import sys
from collections import Counter
from typing import Any

MAX_DEPTH = 3  # stage → wrapper (VideoVAE, CLIP, Expander) → the torch module inside


def models_in(obj: Any) -> dict[str, str]:
    """{attribute path: "<device> <dtype>"} of the torch modules reachable from `obj`'s attributes."""
    if "torch" not in sys.modules:  # a stage without torch holds no module
        return {}
    import torch

    found: dict[str, str] = {}
    seen: set[int] = set()

    def visit(value: Any, path: str, depth: int) -> None:
        if id(value) in seen or depth > MAX_DEPTH:
            return
        seen.add(id(value))
        if isinstance(value, torch.nn.Module):
            param = next(value.parameters(), None)
            if param is not None:
                found[path] = f"{describe(param.device)} {str(param.dtype).removeprefix('torch.')}"
            return
        attrs = getattr(value, "__dict__", None)
        if isinstance(attrs, dict) and not isinstance(value, type):
            for name, child in attrs.items():
                visit(child, f"{path}.{name}" if path else name, depth + 1)

    visit(obj, "", 0)
    return found


def describe(device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H200)`: the card's name says more than its index."""
    if device.type != "cuda":
        return device.type
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def worker_report(stage) -> dict[str, Any] | None:
    """This worker's report for `stage` after setup(), or None for a stage that holds no model."""
    models = models_in(stage)
    if not models:
        return None
    return {"stage": stage.name, "host": platform.node(), "pid": os.getpid(), "models": models}


class DeviceLog:
    """Reports collected in this process (the sequential runner)."""

    def __init__(self):
        self.reports: list[dict[str, Any]] = []

    def add(self, report: dict[str, Any] | None) -> None:
        if report:
            self.reports.append(report)

    def all(self) -> list[dict[str, Any]]:
        return list(self.reports)


class RayDeviceLog:
    """A DeviceLog in one Ray actor, reachable from every worker of the plan."""

    def __init__(self):
        import ray

        self.actor = ray.remote(num_cpus=0)(DeviceLog).remote()

    def add(self, report: dict[str, Any] | None) -> None:
        import ray

        if report:  # waited for: a report sent just before the run ends must still be counted
            ray.get(self.actor.add.remote(report))

    def all(self) -> list[dict[str, Any]]:
        import ray

        return ray.get(self.actor.all.remote())


def summarise(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (stage, model, device and dtype): how many workers, on which hosts."""
    groups: Counter = Counter()
    hosts: dict[tuple, set[str]] = {}
    for report in reports:
        for model, used in report["models"].items():
            key = (report["stage"], model, used)
            groups[key] += 1
            hosts.setdefault(key, set()).add(report["host"])
    return [{"stage": stage, "model": model, "device": used.rsplit(" ", 1)[0], "dtype": used.rsplit(" ", 1)[1],
             "workers": count, "hosts": sorted(hosts[(stage, model, used)])}
            for (stage, model, used), count in sorted(groups.items())]


def summary_lines(devices: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """("device: caption", "cpu float32 ×2 workers") rows for the end-of-run summary."""
    rows = []
    for entry in devices:
        workers = f" ×{entry['workers']} workers" if entry["workers"] > 1 else ""
        rows.append((f"device: {entry['stage']} ({entry['model']})", f"{entry['device']} {entry['dtype']}{workers}"))
    return rows
