"""The plan against the cluster: GPU shares for `gpus: auto`, and a check before any work.

Ray does not refuse a plan it cannot schedule: four single-GPU actor pools on
a one-GPU node wait for each other forever, and a GPU stage without a batch
size fails only when the dataset is built. So the driver sizes and checks
the plan first, from the cluster's resources, and stops at start naming the
stage and the field.

How `gpus: auto` is shared (K auto stages, G GPUs):
- every actor of an auto stage gets the same share u = 1 / ceil(K / G) when
  G < K, else u = 1 (a whole GPU): equal shares pack onto physical GPUs
  exactly (1/u actors per GPU), which mixed fractions may not;
- each auto stage starts with one actor, then the remaining G/u - K slots go
  one at a time to the stage with the highest cost per actor, `cost` being
  `resources.cost` or the stage's `gpu_cost` (caption 8, expand 3, encode 2,
  clip_score 1: relative GPU time per clip of the default models);
- explicit numbers (`gpus: 0.5`, `concurrency: 2`) are kept and their GPUs
  subtracted first. With no GPU in the cluster, auto stages run on CPU, and
  the plan says so.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from pipeline.typed import ConfigError
from stages.base import Stage

EPS = 1e-9
log = logging.getLogger("vidprep")


@dataclass
class Cluster:
    cpus: float
    gpus: float

    @classmethod
    def from_ray(cls, resources: dict) -> "Cluster":
        return cls(cpus=float(resources.get("CPU", 0)), gpus=float(resources.get("GPU", 0)))


def assign_auto_gpus(stages: list[Stage], cluster: Cluster) -> None:
    """Replace `gpus: auto` by a share and an actor count that fit `cluster` (see the module docstring)."""
    auto = [s for s in stages if s.resources.gpus == "auto"]
    if not auto:
        return
    fixed = sum(_gpus(s) * _actors(s) for s in stages if s not in auto)
    free = cluster.gpus - fixed
    if free < EPS:
        log.warning("no GPU left for %s (gpus: auto; the cluster has %g GPUs): they run on CPU, slowly",
                    ", ".join(s.name for s in auto), cluster.gpus)
        for stage in auto:  # no GPU left (or none at all): the model stages run on CPU
            stage.resources.gpus = 0.0
            stage.resources.concurrency = stage.resources.concurrency or 1
        return
    whole = math.floor(free + EPS)
    share = 1.0 if whole >= len(auto) else 1.0 / math.ceil(len(auto) / max(whole, 1))
    if whole == 0:  # less than one GPU free: split what there is
        share = free / len(auto)
    slots = max(len(auto), int(math.floor(free / share + EPS)))
    actors = {id(s): 1 for s in auto}
    for _ in range(slots - len(auto)):
        best = max(auto, key=lambda s: (_cost(s) / actors[id(s)], -auto.index(s)))
        actors[id(best)] += 1
    for stage in auto:
        stage.resources.gpus = share
        if stage.resources.concurrency is None:
            stage.resources.concurrency = actors[id(stage)]


def check(stages: list[Stage], cluster: Cluster) -> list[str]:
    """Why the plan cannot run on `cluster`, one line per problem naming the field; [] when it fits."""
    problems = []
    for stage in stages:
        res, field = stage.resources, f"stages.{stage.name}.resources"
        if res.gpus == "auto":
            continue  # assign_auto_gpus first
        if res.gpus > 0 and res.batch_size is None:
            problems.append(f"{field}.batch_size: a stage that asks for a GPU needs a batch size "
                            f"(Ray Data refuses the plan without one)")
        if res.gpus > 1 and res.gpus != int(res.gpus):
            problems.append(f"{field}.gpus: {res.gpus} GPUs per actor: above 1 it must be a whole number")
        if res.gpus > cluster.gpus + EPS:
            problems.append(f"{field}.gpus: one actor asks for {res.gpus:g} GPUs, the cluster has {cluster.gpus:g}")
        if res.cpus > cluster.cpus + EPS:
            problems.append(f"{field}.cpus: one worker asks for {res.cpus:g} CPUs, the cluster has {cluster.cpus:g}")
    gpu_demand = sum(_gpus(s) * _actors(s) for s in stages if s.needs_actor and s.resources.gpus != "auto")
    if gpu_demand > cluster.gpus + EPS:
        users = ", ".join(f"{s.name} {_actors(s)}×{_gpus(s):g}" for s in stages if _gpus(s) > 0)
        problems.append(f"stages.*.resources.gpus: the actor pools need {gpu_demand:g} GPUs together ({users}) "
                        f"and the cluster has {cluster.gpus:g}: they would wait for each other forever; "
                        "use gpus: auto, or smaller shares / fewer actors")
    actor_cpus = sum(s.resources.cpus * _actors(s) for s in stages if s.needs_actor)
    task_cpus = max((s.resources.cpus for s in stages if not s.needs_actor), default=0.0)
    if actor_cpus + task_cpus > cluster.cpus + EPS:
        problems.append(f"stages.*.resources.cpus: actors reserve {actor_cpus:g} CPUs and a task needs {task_cpus:g}; "
                        f"the cluster has {cluster.cpus:g}: the tasks would never run")
    return problems


def fit(stages: list[Stage], cluster: Cluster, *, scheduled: bool = True) -> None:
    """assign_auto_gpus, then raise a ConfigError listing every problem if the plan can't be scheduled.

    `scheduled=False` (the sequential runner: every stage in this process, nothing to wait for) only
    assigns the auto shares; a GPU asked for and not found is device_for's warning there."""
    assign_auto_gpus(stages, cluster)
    problems = check(stages, cluster) if scheduled else []
    if problems:
        raise ConfigError("the plan does not fit the cluster "
                          f"({cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs):\n  " + "\n  ".join(problems))


def plan_record(stages: list[Stage]) -> list[dict]:
    """Each stage as it was scheduled (run.json): actors, CPUs, GPU share, batch size, the device it asked for.

    The device a worker really used is in the run's log (`stage caption: device cuda`, or the warning
    that it found no CUDA); this is what the plan gave it."""
    return [{"stage": s.name, "runs_as": "actor pool" if s.needs_actor else "task",
             "actors": _actors(s) if s.needs_actor else s.resources.concurrency, "cpus": s.resources.cpus,
             "gpus": _gpus(s), "batch_size": s.resources.batch_size,
             "device": "cuda" if _gpus(s) > 0 else "cpu", "dtype": getattr(s, "dtype", None)} for s in stages]


def table(stages: list[Stage], cluster: Cluster) -> str:
    """The plan as a text table: stage, kind, actors, CPUs, GPU share, batch size, model."""
    rows = [("stage", "runs as", "actors", "cpus", "gpus", "batch", "model")]
    for stage in stages:
        res = stage.resources
        kind = "actor pool" if stage.needs_actor else "task"
        actors = str(_actors(stage)) if stage.needs_actor else (str(res.concurrency) if res.concurrency else "-")
        model = next((str(getattr(stage, f)) for f in ("model", "vae") if getattr(stage, f, None)), "")
        rows.append((stage.name, kind, actors, f"{res.cpus:g}", f"{_gpus(stage):g}", str(res.batch_size or "-"),
                     model))
    used = sum(_gpus(s) * _actors(s) for s in stages if s.needs_actor)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"cluster: {cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs; the plan's actors use {used:g} GPUs")
    return "\n".join(lines)


def _gpus(stage: Stage) -> float:
    return 0.0 if stage.resources.gpus == "auto" else float(stage.resources.gpus)


def _actors(stage: Stage) -> int:
    return stage.resources.concurrency or 1


def _cost(stage: Stage) -> float:
    return stage.resources.cost or type(stage).gpu_cost
