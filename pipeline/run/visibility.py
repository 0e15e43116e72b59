"""Paths every node must see, checked on every node before any work.

Paths are resolved at the driver (pipeline/config.py): workers get absolute
paths. On a cluster without a shared disk such a path exists on the driver's
machine only, and each actor would die in its constructor, be restarted, and
die again. One tiny task per alive node (pinned to it) looks for each path, so
the run stops at start with the field and the node named instead.
"""
from __future__ import annotations

import os
from pathlib import Path

from stages.base import Stage


def local_paths(stages: list[Stage], source: str | None = None, output: str | Path | None = None) -> dict[str, str]:
    """{config field: absolute local path} of what workers open: the input, the output, model files.

    Only values that exist here: anything else (a hub id, an open_clip tag, a URI) is the model
    library's to resolve, and an input that is a URI is read through its filesystem."""
    paths: dict[str, str] = {}
    if source and "://" not in source:
        paths["input"] = str(Path(source).absolute())
    if output is not None and "://" not in str(output):
        paths["output"] = str(Path(output).absolute())
    for stage in stages:
        for name in stage.path_fields:
            value = getattr(stage, name, None)
            if not isinstance(value, str):
                continue
            value = value.removeprefix("local-dir:")
            if os.path.isabs(value):
                paths[f"stages.{stage.name}.{name}"] = value
    return {field: path for field, path in paths.items() if os.path.exists(path)}


def missing_here(paths: dict[str, str]) -> list[str]:
    """The fields whose path this process cannot see (runs on each node)."""
    return [field for field, path in paths.items() if not os.path.exists(path)]


def check_nodes(paths: dict[str, str]) -> list[str]:
    """One problem line per (field, node) where a worker on that node would not find the path."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not paths:
        return []
    probe = ray.remote(num_cpus=0, max_retries=0)(missing_here)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                       .remote(paths) for n in nodes])
    return [f"{field}: {paths[field]} is not visible on node {node.get('NodeManagerAddress')} (workers there "
            f"open it: put it on a disk every node mounts, or use a URI / hub id)"
            for node, missing in zip(nodes, answers) for field in missing]
