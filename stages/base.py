"""The stage contract shared by every stage and both runners.

A stage is a dataclass: typed config fields with defaults (checked in
__post_init__, ValueError("field: why")), `resources`, `setup()` that loads
models once per worker, and `__call__(batch) -> batch` over pyarrow Tables.
`inputs` names the columns it reads, `outputs` the ones it adds. The Ray
runner makes a stage an actor pool when it has a setup or asks for a GPU, a
plain task otherwise; the sequential runner calls it in a loop.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Literal

import pyarrow as pa


def require(condition: bool, field_name: str, why: str) -> None:
    """Raise the ValueError the config loader turns into `stages.<stage>.<field>: why`."""
    if not condition:
        raise ValueError(f"{field_name}: {why}")


@dataclass
class Resources:
    """What one worker of a stage asks Ray for, and how many run at once."""

    cpus: float = 1.0  # also the torch/OpenCV thread count inside the worker
    # A number (fractions share a GPU between actors), or "auto": the plan gives the stage a share of
    # the GPUs the cluster has, in proportion to `cost` (pipeline/run/plan.py).
    gpus: float | Literal["auto"] = 0.0
    concurrency: int | None = None  # actors in the pool (tasks: at most this many at once); auto GPUs: planned
    batch_size: int | None = None  # rows per call; None = whatever block arrives (a GPU stage needs one)
    cost: float | None = None  # relative GPU cost per row for gpus: auto; None = the stage's default
    require_gpu: bool = False  # a worker that reserved a GPU but sees no CUDA fails instead of using the CPU

    def __post_init__(self):
        require(self.cpus > 0, "cpus", f"must be > 0 (got {self.cpus})")
        require(self.gpus == "auto" or self.gpus >= 0, "gpus", f"must be >= 0 or auto (got {self.gpus})")
        require(self.cost is None or self.cost > 0, "cost", f"must be > 0 (got {self.cost})")
        require(self.concurrency is None or self.concurrency >= 1,
                "concurrency", f"must be >= 1 (got {self.concurrency})")
        require(self.batch_size is None or self.batch_size >= 1,
                "batch_size", f"must be >= 1 (got {self.batch_size})")


@dataclass
class Stage:
    name: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    # Columns this stage adds to the `clips` catalog table (the rest of `outputs` stay in flight).
    catalog_fields: ClassVar[tuple[pa.Field, ...]] = ()

    # Relative GPU time per row when `resources.gpus` is auto: how GPUs are shared between model stages.
    gpu_cost: ClassVar[float] = 1.0
    # Fields that may name a local file or folder (a model reference): resolve_local_paths makes them
    # absolute. Only these: an enum value or a column name must never turn into a path by accident.
    path_fields: ClassVar[tuple[str, ...]] = ("model", "pretrained", "model_config", "aesthetic", "vae",
                                              "text_encoder", "clip_model", "clip_pretrained", "clip_model_config")

    resources: Resources = field(default_factory=Resources)

    def setup(self) -> None:
        """Load models; runs once per worker before the first batch."""

    def resolve_local_paths(self, cwd: Path) -> None:
        """Make relative paths that exist under `cwd` absolute, once, where the config is loaded.

        Workers run in other folders (a `ray start` cluster, `ray job submit`): a relative model path
        would be resolved against each worker's own directory. A value that is not an existing local
        path (a hub id, an open_clip tag, a URI, SQL) is left as it is, as the model libraries would.
        """
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name not in self.path_fields or not isinstance(value, str) or not value or "://" in value \
                    or os.path.isabs(value):
                continue
            prefix, rest = ("local-dir:", value[len("local-dir:"):]) if value.startswith("local-dir:") else ("", value)
            if ":" in rest.split("/")[0] or os.path.isabs(rest) or not (cwd / rest).exists():
                continue
            setattr(self, spec.name, prefix + str((cwd / rest).resolve()))

    @property
    def needs_actor(self) -> bool:
        return type(self).setup is not Stage.setup or self.resources.gpus == "auto" or self.resources.gpus > 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    @staticmethod
    def accepted(batch: pa.Table) -> list[int]:
        """Rows a clip stage works on: clips still accepted. Other rows get nulls in its columns."""
        import pyarrow.compute as pc

        mask = pc.fill_null(pc.equal(batch.column("status"), "accepted"), False)
        return [i for i, keep in enumerate(mask.to_pylist()) if keep]

    def check_inputs(self, batch: pa.Table) -> None:
        missing = [c for c in self.inputs if c not in batch.column_names]
        if missing:
            raise KeyError(f"stage {self.name!r} needs columns {missing}; the batch has {batch.column_names}")
