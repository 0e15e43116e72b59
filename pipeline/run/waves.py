"""Driver-side bookkeeping: which waves have every row of every video written.

The plan streams: a wave's videos are spread over many tasks and finish in
any order. Split tells each row how many rows its video produced
(`video_rows`); the writer's manifests count rows per video. A video is
complete when the counts meet, a wave when all its videos are complete.
Memory holds only waves in flight, never the whole input list.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa


@dataclass
class _Wave:
    videos: int  # how many sources the wave has
    done: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows written per source so far
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


class WaveTracker:
    def __init__(self, wave_sizes: dict[str, int]):
        self.waves = {wave_id: _Wave(videos=n) for wave_id, n in wave_sizes.items()}

    def add(self, manifest: pa.Table) -> list[str]:
        """Record a writer manifest; return the waves it completed."""
        completed = []
        for row in manifest.to_pylist():
            wave = self.waves[row["wave_id"]]
            uri = row["source_uri"]
            for info in row["files"]:
                wave.files[info["path"]] = info
            wave.rows[uri] = wave.rows.get(uri, 0) + row["rows"]
            if wave.rows[uri] > row["expected"]:
                raise RuntimeError(f"{uri}: {wave.rows[uri]} rows written, {row['expected']} expected")
            if wave.rows[uri] == row["expected"]:
                wave.done += 1
                if wave.done == wave.videos:
                    completed.append(row["wave_id"])
        return completed

    def take(self, wave_id: str) -> tuple[list[str], list[dict[str, Any]]]:
        """Sources and files of a completed wave; forgets the wave."""
        wave = self.waves.pop(wave_id)
        return sorted(wave.rows), list(wave.files.values())

    def incomplete(self) -> dict[str, int]:
        """Waves still open, with how many of their videos are missing."""
        return {w: wave.videos - wave.done for w, wave in self.waves.items()}
