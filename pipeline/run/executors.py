"""Two ways to run the same stages: a Ray Data streaming plan, or a plain loop.

Both take the pending table (one row per source video: ordinal, source_uri,
wave_id), run the stages in plan order, end with the WaveWriter, and yield the
writer's manifests to the driver, which commits waves as they complete.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.run.devices import DeviceLog, worker_report
from pipeline.run.isolation import call_isolated
from pipeline.run.models import stage_loading
from pipeline.run.terminal import stdin_detached, worker_setup_hook
from pipeline.store.faults import crash_point
from stages.base import Stage

log = logging.getLogger("vidprep")


def pin_threads(cpus: float) -> None:
    """Give a worker as many math threads as CPUs it reserved.

    Unpinned, torch and OpenCV start one thread per core in every worker; on
    two busy cores that ran 8-28x slower. Env vars cover libraries imported
    later (torch reads OMP_NUM_THREADS when it loads); loaded ones are set now.
    """
    threads = max(1, int(cpus))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)


def in_batches(stage: Stage, table: pa.Table) -> pa.Table:
    """Apply `stage` in slices of its batch_size (the sequential runner's equivalent of map_batches)."""
    size = stage.resources.batch_size or max(1, table.num_rows)
    parts = [call_isolated(stage, table.slice(i, size)) for i in range(0, table.num_rows, size)]
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


class SequentialExecutor:
    """Runs every stage in this process: for tests, debugging, and machines without Ray."""

    def __init__(self, videos_per_task: int = 1, writer_rows: int = 1024):
        self.videos_per_task, self.writer_rows = videos_per_task, writer_rows

    def cluster(self):
        """This machine: every CPU, and the GPUs torch sees (auto GPU stages then use cuda, or the CPU)."""
        from pipeline.run.plan import Cluster

        return Cluster(cpus=float(os.cpu_count() or 1), gpus=float(_local_gpus()))

    def registry(self, owners: dict[str, str]):
        from pipeline.run.registry import VideoRegistry

        return VideoRegistry(owners)

    def device_log(self):
        return DeviceLog()

    def worker_output(self):
        return nullcontext()  # no workers: stages log in this process

    def close(self) -> None:
        pass

    def execute(self, pending: Path, total: int, stages: list[Stage], writer: Callable,
                devices=None) -> Iterator[pa.Table]:
        for stage in stages:
            pin_threads(stage.resources.cpus)
            with stage_loading(stage):  # a model that cannot load: one line naming its field
                stage.setup()
            if devices is not None:
                devices.add(worker_report(stage))
        ready: list[pa.Table] = []  # rows of the current wave waiting for the writer
        wave = None
        for batch in pq.ParquetFile(pending).iter_batches(batch_size=self.videos_per_task):
            table = pa.Table.from_batches([batch])
            first_wave = table.column("wave_id")[0].as_py()
            if ready and first_wave != wave:  # in order here: a new wave means the last one is complete
                yield writer(pa.concat_tables(ready, promote_options="permissive"))
                ready = []
            wave = table.column("wave_id")[-1].as_py()
            for stage in stages:
                table = in_batches(stage, table)
            ready.append(table)
            if sum(t.num_rows for t in ready) >= self.writer_rows:
                yield writer(pa.concat_tables(ready, promote_options="permissive"))
                ready = []
        if ready:
            yield writer(pa.concat_tables(ready, promote_options="permissive"))


def task_for(stage: Stage) -> Callable[[pa.Table], pa.Table]:
    """A task-pool stage's function, named after the stage: Ray's progress, dashboard and logs
    name an operator after its function (`MapBatches(split)`)."""
    def run_task(batch: pa.Table) -> pa.Table:
        pin_threads(stage.resources.cpus)
        crash_point(f"stage:{stage.name}")
        return stage(batch)

    run_task.__name__ = run_task.__qualname__ = stage.name
    return run_task


class _StageActor:
    """One worker of an actor-pool stage: setup() once, then batches. Subclassed per stage by actor_for."""

    stage: Stage
    devices: Any = None  # the run's RayDeviceLog: each worker says what its models run on

    def __init__(self):
        stage = self.stage
        pin_threads(stage.resources.cpus)
        with stage_loading(stage):  # a model that cannot load: one line naming its field
            stage.setup()
        pin_threads(stage.resources.cpus)  # setup may have imported torch
        if self.devices is not None:
            self.devices.add(worker_report(stage))

    def __call__(self, batch: pa.Table) -> pa.Table:
        crash_point(f"stage:{self.stage.name}")
        return call_isolated(self.stage, batch)  # a failing row becomes an error row, not a failed job


def actor_for(stage: Stage, devices: Any = None) -> type:
    """An actor-pool stage's class, named after the stage (`MapBatches(caption)`), holding the stage.

    The stage rides in the class, not in constructor arguments: Ray keeps those in the object store,
    where a restarted actor may not find them (and says so with an error line on every run). Not
    importable by its name, so cloudpickle ships the class by value (its base by reference)."""
    return type(stage.name, (_StageActor,), {"__module__": __name__, "__qualname__": stage.name, "stage": stage,
                                             "devices": devices})


def pending(batch: pa.Table, path: str) -> pa.Table:
    """Turn a block of ordinals (ray.data.range) into its pending rows."""
    ids = batch.column("id")
    lo, hi = pc.min(ids).as_py(), pc.max(ids).as_py()
    return pq.read_table(path, filters=[("ordinal", ">=", lo), ("ordinal", "<=", hi)])


def write(batch: pa.Table, writer: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """The writer stage (`MapBatches(write)`): staged Parquet, returns the manifest."""
    return writer(batch)


class RayExecutor:
    """The Ray Data streaming plan: a task per stage without setup, an actor pool otherwise."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, videos_per_task: int = 1,
                 writer_rows: int = 1024, progress: bool = True, task_retries: int = 3, actor_restarts: int = 3,
                 wave_size: int = 64):
        self.address, self.num_cpus, self.wave_size = address, num_cpus, wave_size
        self.videos_per_task, self.writer_rows, self.progress = videos_per_task, writer_rows, progress
        self.task_retries, self.actor_restarts = task_retries, actor_restarts
        self.started_ray = False  # True when this executor started Ray (and so stops it)

    def _init(self) -> None:
        import ray

        if not ray.is_initialized():
            init_ray(self.address, self.num_cpus)
            self.started_ray = True

    def cluster(self):
        """The Ray cluster's CPUs and GPUs, as the plan check sees them (starts or joins Ray)."""
        import ray

        from pipeline.run.plan import Cluster

        self._init()
        return Cluster.from_ray(ray.cluster_resources())

    def registry(self, owners: dict[str, str]):
        from pipeline.run.registry import RayRegistry

        self._init()
        return RayRegistry(owners)

    def device_log(self):
        from pipeline.run.devices import RayDeviceLog

        self._init()
        return RayDeviceLog()

    def worker_output(self):
        """Workers' printed lines go to the run's log (pipeline/run/console.py)."""
        from pipeline.run.console import worker_output_logged

        self._init()
        return worker_output_logged()

    def close(self) -> None:
        """Stop the Ray instance this executor started (none is left behind, Ctrl-C included)."""
        import ray

        if self.started_ray and ray.is_initialized():
            ray.shutdown()
        self.started_ray = False

    def plan(self, pending_path: Path, total: int, stages: list[Stage], writer: Callable, devices=None):
        """The dataset, not yet executed: range → pending → stages → write."""
        import ray

        self._init()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = self.progress
        context.execution_options.preserve_order = False
        # One block per `videos_per_task` sources: splitting is per video, so blocks are the parallelism.
        ds = ray.data.range(total, override_num_blocks=max(1, math.ceil(total / self.videos_per_task)))
        ds = ds.map_batches(pending, fn_args=(str(pending_path),), batch_format="pyarrow",
                            num_cpus=stages[0].resources.cpus)  # same as probe: fused into one task
        for stage in stages:
            ds = add_stage(ds, stage, self.task_retries, self.actor_restarts, devices)
        # The writer bundles blocks into fewer, larger files, but never more rows than a wave has videos:
        # a wave commits once all its rows are written, so rows parked in a large bundle would hold back
        # every wave they belong to (with 1024 rows per bundle, small runs committed only at the end).
        bundle = max(1, min(self.writer_rows, self.wave_size))
        return ds.map_batches(write, fn_args=(writer,), batch_format="pyarrow", batch_size=bundle, num_cpus=0.25)

    def execute(self, pending_path: Path, total: int, stages: list[Stage], writer: Callable,
                devices=None) -> Iterator[pa.Table]:
        ds = self.plan(pending_path, total, stages, writer, devices)
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)


def add_stage(ds, stage: Stage, task_retries: int = 3, actor_restarts: int = 3, devices=None):
    """Append one stage to a Ray dataset, with the resources its config asks for.

    Retries are bounded on purpose (Ray Data's default restarts actors forever):
    a worker that dies (OOM kill, node loss) is restarted and its batch retried
    up to the configured count; an exception raised by stage code is a bug and
    is not retried — item-level failures are already rows with a reason.
    """
    import ray

    res = stage.resources
    common = dict(batch_format="pyarrow", batch_size=res.batch_size, num_cpus=res.cpus,
                  num_gpus=res.gpus or None)
    if stage.needs_actor:
        return _map_batches(ds, actor_for(stage, devices),
                            compute=ray.data.ActorPoolStrategy(size=res.concurrency or 1),
                            retries=dict(max_restarts=actor_restarts, max_task_retries=actor_restarts), **common)
    return _map_batches(ds, task_for(stage), compute=ray.data.TaskPoolStrategy(size=res.concurrency),
                        retries=dict(max_retries=task_retries, retry_exceptions=False), **common)


def _map_batches(ds, fn, *, retries: dict, **kwargs):
    """map_batches with Ray Core's retry bounds.

    Ray Data (2.60) names every remote argument except the retry bounds: max_retries, max_restarts,
    max_task_retries and retry_exceptions are only accepted as `**ray_remote_args`, which warn that
    they go away in Ray 2.64, and its DataContext knobs cover user exceptions, not dead workers.
    Bounded retries are a reliability decision (docs/RELIABILITY.md), so they are kept, and only
    that one warning is silenced here, where it is raised; any other deprecation still shows.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
        return ds.map_batches(fn, **kwargs, **retries)


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Embedded Ray by default; `address` joins a running cluster and ships vidprep's code to it.

    Neither the embedded cluster nor a joined cluster's workers get a terminal as stdin
    (pipeline/run/terminal.py says why): the embedded raylet inherits /dev/null, and every worker
    runs a setup hook that points its fd 0 at /dev/null."""
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    runtime_env: dict = {"worker_process_setup_hook": worker_setup_hook()}
    if address:
        import pipeline
        import schemas
        import stages

        runtime_env["py_modules"] = [str(Path(m.__file__).parent) for m in (pipeline, stages, schemas)]
        with stdin_detached():
            ray.init(address=address, runtime_env=runtime_env, **kwargs)
    else:  # "local": a new embedded instance, never a cluster that happens to run on this machine
        with stdin_detached():
            ray.init(address="local", num_cpus=num_cpus, runtime_env=runtime_env, **kwargs)
    log.info("ray: %s", ray.cluster_resources())


def _local_gpus() -> int:
    """GPUs torch can use here; 0 without torch (a probe/split-only install)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
