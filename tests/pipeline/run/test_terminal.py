"""`vidprep run` from an interactive terminal: no child of vidprep may wait on the terminal.

scenedetect probes for ffmpeg by running `ffmpeg -v quiet` when it is imported. That child inherits
its parent's stdin; a Ray worker is not in the terminal's foreground process group, so when the
parent's stdin is the terminal, job control stops the probe (SIGTTIN) and the run hangs forever.
The fake `ffmpeg` below reads its stdin like the real one touches the terminal: from a background
process group it is stopped, from the foreground it waits for a line nobody types.
"""
from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.run.terminal import stdin_detached, stdin_to_devnull, worker_setup_hook

REPO = Path(__file__).parents[3]
pytestmark = pytest.mark.timeout(900)


def run_in_pty(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run argv as the session leader of a new pseudo-terminal (its controlling terminal, so job control
    applies); return (exit code or None on timeout, what it printed)."""
    pid, master = pty.fork()
    if pid == 0:  # child: session leader, the pty is fd 0/1/2 and the controlling terminal
        os.chdir(REPO)
        os.execvpe(argv[0], argv, env)
    output, deadline, code = b"", time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                output += os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
    if code is None:  # hung: end the session's processes (the driver and what it started)
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    os.close(master)
    return code, output.decode(errors="replace")


@pytest.fixture(scope="module")
def fake_ffmpeg(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bin")
    (folder / "ffmpeg").write_text("#!/bin/sh\nread line\nexit 0\n")
    (folder / "ffmpeg").chmod(0o755)
    return folder


def vidprep_env(fake_bin: Path) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{fake_bin}:{os.environ['PATH']}", PYTHONPATH=str(REPO))
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


@pytest.mark.parametrize("runner", ["sequential", pytest.param("ray", marks=pytest.mark.ray)])
def test_run_in_a_terminal_with_ffmpeg_on_path_completes(runner, fake_ffmpeg, corpus_dir, demo_yaml, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pipeline.cli", "run", "-c", str(demo_yaml()), "-i", corpus_dir, "-o", str(out),
            "--runner", runner, "--set", "run.num_cpus=2"]
    code, printed = run_in_pty(argv, vidprep_env(fake_ffmpeg), timeout=240)
    assert code == 0, f"exit {code} (None: hung on the terminal)\n{printed[-3000:]}"
    assert "videos processed" in printed and (out / "run.json").exists()


def test_stdin_detached_points_fd0_at_devnull_and_restores_it(tmp_path):
    before = os.fstat(0)
    with stdin_detached():
        child = subprocess.run(["sh", "-c", "readlink /proc/self/fd/0"], capture_output=True, text=True)
        assert child.stdout.strip() == os.devnull
    after = os.fstat(0)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


@pytest.mark.parametrize("detach", [stdin_to_devnull, worker_setup_hook()], ids=["stdin_to_devnull", "ray_hook"])
def test_worker_setup_hook_detaches_a_terminal_stdin(detach):
    """The hook Ray runs in every worker of a cluster vidprep joins (whose raylet may hold a terminal)."""
    from ray import cloudpickle

    if detach is not stdin_to_devnull:  # shipped by value: a cluster's workers may not import vidprep yet
        loads = ("import pickle, sys; sys.modules['pipeline'] = None; "  # any import of vidprep fails
                 "pickle.loads(sys.stdin.buffer.read())")
        subprocess.run([sys.executable, "-c", loads], input=cloudpickle.dumps(detach), check=True)
    pid, master = pty.fork()
    if pid == 0:
        try:
            if os.readlink("/proc/self/fd/0") == os.devnull:  # must start on the terminal
                os._exit(3)
            detach()
            os._exit(0 if os.readlink("/proc/self/fd/0") == os.devnull else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0
