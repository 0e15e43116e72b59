"""No terminal reaches a worker: vidprep's children get /dev/null as stdin.

A process that reads its terminal while it is not in the terminal's foreground process group is
stopped by job control (SIGTTIN) and waits forever. Ray workers run in their own process groups,
and libraries start children that inherit stdin (scenedetect's import runs `ffmpeg -v quiet`), so a
run started from a shell hung as soon as a worker imported scenedetect. vidprep never reads stdin:
the driver points fd 0 at /dev/null while it runs (the embedded Ray cluster, its workers and every
child inherit that), and workers of a cluster vidprep joins do the same in a setup hook.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


def stdin_to_devnull() -> None:
    """Point fd 0 at /dev/null for good (a Ray worker setup hook: the worker never needs its stdin)."""
    null = os.open(os.devnull, os.O_RDONLY)
    if null != 0:
        os.dup2(null, 0)
        os.close(null)


@contextmanager
def stdin_detached() -> Iterator[None]:
    """fd 0 is /dev/null inside the block (inherited by every process started there), restored after."""
    try:
        saved = os.dup(0)  # not inheritable: children never see the terminal through it
    except OSError:  # no fd 0 at all
        saved = None
    stdin_to_devnull()
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 0)
            os.close(saved)


def worker_setup_hook() -> Callable[[], None]:
    """stdin_to_devnull as a Ray `worker_process_setup_hook`.

    Made here, not at module level, so cloudpickle ships it by value: a cluster's worker runs the
    hook before vidprep's own modules (runtime_env py_modules) are importable there."""
    def detach_worker_stdin() -> None:
        import os

        null = os.open(os.devnull, os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0)
            os.close(null)

    return detach_worker_stdin


def exit_on_second_interrupt(code: int = 130) -> None:
    """After a first Ctrl-C the run winds down (stops Ray, releases the lock); a second one exits now."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: os._exit(code))
