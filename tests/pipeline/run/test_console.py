"""What a person sees during a Ray run: no Ray deprecation, operators named after stages, vidprep's
own lines on the console, Ray's in the run's log file, and Ctrl-C that stops cleanly and resumes.

Three embedded Ray runs of the full demo config (tiny models): one unbroken (in this process), one
interrupted with SIGINT and its rerun (the `vidprep` command, off a terminal).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from pipeline.catalog.views import connect
from pipeline.config import load_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
REPO = Path(__file__).parents[3]
STAGES = ("pending", "probe", "split", "signals", "clip_score", "filter", "caption", "expand", "encode", "write")


@pytest.fixture(scope="module")
def demo(demo_material) -> dict[str, Path]:
    return demo_material


@pytest.fixture(scope="module")
def unbroken(demo) -> dict:
    """One in-process run with Ray's deprecation warnings as errors; keeps the executed dataset."""
    from ray.util.annotations import RayDeprecationWarning

    from pipeline.run import executors
    from pipeline.run.runner import run

    kept = {}
    plan = executors.RayExecutor.plan

    def keep(self, *args, **kwargs):
        kept["ds"] = plan(self, *args, **kwargs)
        return kept["ds"]

    executors.RayExecutor.plan = keep
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", category=RayDeprecationWarning)
            result = run(load_config(demo["config"], ["run.num_cpus=2"]), str(demo["videos"]), demo["root"] / "out",
                         progress=False)
    finally:
        executors.RayExecutor.plan = plan
    return {"result": result, "stats": kept["ds"].stats(), "out": demo["root"] / "out"}


def clip_ids(out: Path) -> set[str]:
    return {row[0] for row in connect(out).execute("SELECT clip_id FROM clips").fetchall()}


def test_a_ray_run_raises_no_ray_deprecation_warning(unbroken):
    assert unbroken["result"].processed == 4 and unbroken["result"].waves == 2
    assert len(clip_ids(unbroken["out"])) == unbroken["result"].clips > 0


def test_the_executed_plan_names_every_operator_after_its_stage(unbroken):
    for name in STAGES:
        assert f"MapBatches({name})" in unbroken["stats"], name
    assert "_StageActor" not in unbroken["stats"] and "_run_task" not in unbroken["stats"]


def vidprep_run(demo, out: Path, *extra: str) -> subprocess.Popen:
    """`vidprep run` off a terminal (pipes), in its own process group like a shell job."""
    argv = [sys.executable, "-m", "pipeline.cli", "run", "-c", str(demo["config"]), "-i", str(demo["videos"]),
            "-o", str(out), "--set", "run.num_cpus=2", "--set", "run.wave_size=1", "--set", "run.writer_rows=1",
            "--progress-interval", "2", *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def descendants(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def alive(pids: list[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_ctrl_c_stops_with_one_line_and_exit_130_and_a_rerun_equals_an_unbroken_run(demo, unbroken, tmp_path):
    out = tmp_path / "out"
    proc = vidprep_run(demo, out)
    lines = []
    for line in proc.stderr:  # wait until the first wave is committed: the run is well under way
        lines.append(line)
        if " committed " in line:
            break
    assert proc.poll() is None, "".join(lines)
    ray_processes = descendants(proc.pid)
    assert ray_processes  # the embedded cluster: raylet, GCS, workers
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a shell does: the whole foreground job
    stopped = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    printed = "".join(lines) + stderr
    assert proc.returncode == 130, printed[-3000:]
    assert time.monotonic() - stopped < 60
    assert "Traceback" not in printed and "KeyboardInterrupt" not in printed, printed[-3000:]
    interrupted = [line for line in printed.splitlines() if line.startswith("vidprep run: interrupted")]
    assert len(interrupted) == 1 and "run the same command again to resume" in interrupted[0]
    deadline = time.monotonic() + 30  # Ray's processes go with the run (a few seconds to exit)
    while alive(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(ray_processes)
    committed = len(list((out / "_commits").glob("*.json")))
    assert 1 <= committed < 4

    rerun = vidprep_run(demo, out)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-3000:]
    assert clip_ids(out) == clip_ids(unbroken["out"])

    # Off a terminal, at default verbosity: vidprep's lines, none of Ray's internals or its workers' output.
    assert f"{committed} already committed" in stderr and "progress: " in stderr and " committed " in stderr
    # (Not checked: one `core_worker.cc ... E` line that Ray's C++ core writes straight to stderr.)
    for noise in ("streaming_executor", "Execution plan", "Loading weights", "Token authentication",
                  "Progress bars disabled", "deduplicated"):
        assert noise not in stderr + stdout, noise
    logs = sorted((out / "logs").glob("*.log"))
    assert len(logs) == 2  # one per run, beside run.json's folder
    text = logs[-1].read_text()
    assert "streaming_executor" in text and "Execution plan" in text  # Ray's own lines
    assert "Loading weights" in text  # its workers' output
    assert "vidprep: " in text and "progress: " in text  # and vidprep's
