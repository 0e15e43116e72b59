"""`vidprep export OUT DEST`: select, decode each source once (Ray tasks or in-process), write the format."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.export.clips import ExportOptions, export_source
from pipeline.export.formats import manifest_row, write_captions, write_manifest, write_webdataset
from pipeline.export.select import by_source, select_clips

log = logging.getLogger("vidprep")


@dataclass
class ExportResult:
    dest: Path
    clips: int = 0
    written: int = 0  # this run (the rest were complete already)
    bytes: int = 0
    seconds_of_video: float = 0.0
    wall_s: float = 0.0
    shards: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"vidprep export → {self.dest}: {self.clips} clips ({self.written} written now), "
                f"{self.bytes / 1e6:.1f} MB, {self.seconds_of_video:.1f} s of video, {self.wall_s:.1f} s"
                + (f", {len(self.shards)} tar shards" if self.shards else ""))


def export(out: str | Path, dest: str | Path, *, fmt: str = "folder", where: str | None = None,
           caption: str = "long", options: ExportOptions | None = None, runner: str = "ray",
           ray_address: str | None = None, shard_bytes: int = 1 << 30) -> ExportResult:
    started = time.time()
    options = options or ExportOptions()
    dest = Path(dest).absolute()
    clips_folder = dest if fmt == "folder" else dest / "_clips"
    clips_folder.mkdir(parents=True, exist_ok=True)
    for stale in clips_folder.glob(".*.part"):  # a killed export's half-written files
        stale.unlink()
    groups = by_source(select_clips(out, where, caption))
    existing = {p.stem for p in clips_folder.glob("*.mp4")}
    records = _run(groups, str(clips_folder), options, runner, ray_address)
    by_id = {c["clip_id"]: c for _, clips in groups for c in clips}
    rows = [manifest_row(by_id[r["clip_id"]], r) for r in records]
    write_captions(clips_folder, rows)
    write_manifest(dest, rows)
    result = ExportResult(dest=dest, clips=sum(1 for r in rows if r.get("file")))
    result.written = sum(1 for r in rows if r.get("file") and r["clip_id"] not in existing)
    result.bytes = sum(r.get("bytes") or 0 for r in records)
    result.seconds_of_video = sum((r["frames"] or 0) / r["out_fps"] for r in rows if r.get("out_fps"))
    if fmt == "webdataset":
        result.shards = write_webdataset(clips_folder, dest, rows, shard_bytes)
    result.wall_s = time.time() - started
    return result


def _run(groups, folder: str, options: ExportOptions, runner: str, ray_address: str | None) -> list[dict]:
    """export_source per source: one Ray task each (decoded once, where the task runs), or in order here."""
    total = len(groups)
    if runner == "sequential" or not groups:
        records = []
        for i, (uri, clips) in enumerate(groups, 1):
            records += export_source(uri, clips, folder, options)
            log.info("export: %d/%d sources", i, total)
        return records
    import ray

    from pipeline.run.executors import init_ray

    started_here = not ray.is_initialized()
    init_ray(ray_address, None)
    try:
        task = ray.remote(num_cpus=1, max_retries=3)(export_source)
        pending = [task.remote(uri, clips, folder, options) for uri, clips in groups]
        records, done = [], 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            records += ray.get(ready[0])
            done += 1
            log.info("export: %d/%d sources", done, total)
        return records
    finally:
        if started_here:
            ray.shutdown()
