"""Deterministic crash points for the kill-and-resume tests.

`VIDPREP_CRASH_AT=<point>:<n>` SIGKILLs the process the n-th time it reaches
`<point>` (1-based). Unset, `crash_point` is a dictionary lookup and nothing
else. Points: `manifest` (a writer batch arrived, nothing committed for it),
`published` (a wave's files renamed into place, no record yet), `committed`
(a wave's record written), `listed` (its manifest segment written), `merged`
(manifest segments merged into one, the old ones not yet deleted), `compacted`
(a compaction's record written, nothing deleted yet) — all in the driver — and `stage:<name>` (a stage's
worker is about to process a batch: a Ray task or actor dies). With
`VIDPREP_CRASH_ONCE=<file>` the kill happens only if that file does not exist
yet (it is created first), so a restarted worker is not killed again.
"""
from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def crash_point(point: str) -> None:
    spec = os.environ.get("VIDPREP_CRASH_AT")
    if not spec:
        return
    name, _, count = spec.rpartition(":")  # the point may contain ':' itself (stage:encode:2)
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] != int(count):
        return
    once = os.environ.get("VIDPREP_CRASH_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
