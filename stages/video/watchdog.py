"""Private helper: bound a decode by time without progress, so a stuck source becomes an error row.

decord's batch read can loop forever on a file truncated or overwritten while
it is decoded, inside C code that Python cannot interrupt. The call runs in a
daemon thread; when it makes no progress for `seconds`, the caller stops
waiting and the source becomes `decode_stalled`. The stuck thread is
abandoned (it may keep one core busy until the worker process exits), which
is the price of not hanging the run.
"""
from __future__ import annotations

import threading
from typing import Callable, TypeVar

from stages.video.source import SourceError

T = TypeVar("T")


def stalled(seconds: float, where: str) -> SourceError:
    return SourceError("decode_stalled", f"{where}: no progress in {seconds:g} s, source abandoned")


def bounded(call: Callable[[], T], seconds: float | None, where: str) -> T:
    """call() in a daemon thread; its result or exception, or `decode_stalled` after `seconds` without one."""
    if seconds is None:
        return call()
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    worker = threading.Thread(target=target, name="vidprep-decode-bounded", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise stalled(seconds, where)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
