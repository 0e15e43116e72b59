"""Deterministic crash points for the kill-and-resume tests.

`VIDPREP_CRASH_AT=<point>:<n>` SIGKILLs the process the n-th time it reaches
`<point>` (1-based). Unset, `crash_point` is a dictionary lookup and nothing
else. Points: `manifest` (a writer batch arrived, nothing committed for it),
`published` (a wave's files renamed into place, no record yet), `committed`
(a wave's record written).
"""
from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def crash_point(point: str) -> None:
    spec = os.environ.get("VIDPREP_CRASH_AT")
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
