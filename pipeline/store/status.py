"""Status overlays: later decisions about committed clips, without rewriting committed files.

The stream writes each clip's status once, in its wave (exactly-once, by
commit record). Decisions that need the whole catalog — near-duplicates, and
`vidprep refilter` with a new expression — are written as an overlay:

    OUT/status/v000003-<hash>.parquet   clip_id, source_uri, status, reason for every clip it covers
    OUT/_status/v000003.json            its record: version, keep, dedup settings, counts, file

The record is the truth, as for waves: the file is written and renamed first,
the record last (atomically); readers use the newest record, and a file no
record lists (a crash in between) is deleted by the next writer, which holds
the output lock. Older versions stay, so a refilter can be undone by reading
an older one. `catalog.connect` shows `clips` = the clips as written
(`clips_written`) with status and reason taken from the newest overlay where
it has the clip (`clip_status`).
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.commit import atomic_write_json

FILES, RECORDS = "status", "_status"
OWN_FILE = re.compile(r"\.?v\d{6}-[0-9a-f]{16}\.parquet(\.tmp\d+)?")  # what `write` names (and its tmp files)
# Keyed by (clip_id, source_uri): byte-identical copies of a video share video_id and so clip ids.
STATUS = pa.schema([pa.field("clip_id", pa.string(), nullable=False),
                    pa.field("source_uri", pa.string(), nullable=False),
                    pa.field("status", pa.string(), nullable=False), pa.field("reason", pa.string())],
                   metadata={"vidprep.table": "clip_status"})


class StatusLog:
    def __init__(self, out: str | Path):
        self.out = Path(out)

    def records(self) -> list[dict[str, Any]]:
        from pipeline.store.commit import read_record

        folder = self.out / RECORDS
        advice = "restore it from a backup, or move it out of _status/ to fall back to the previous version"
        return [read_record(p, ("version", "file"), "status record", advice)
                for p in sorted(folder.glob("v*.json"))] if folder.is_dir() else []

    def latest(self) -> dict[str, Any] | None:
        """The newest record; only it is read (versions accumulate, one per refilter or run)."""
        from pipeline.store.commit import read_record

        folder = self.out / RECORDS
        newest = max(folder.glob("v*.json"), default=None) if folder.is_dir() else None
        advice = "restore it from a backup, or move it out of _status/ to fall back to the previous version"
        return read_record(newest, ("version", "file"), "status record", advice) if newest else None

    def recover(self) -> int:
        """Delete overlay files no record lists (a writer that died between file and record).

        Only files named as `write` names them (and its temporary files): anything else stays."""
        listed = {r["file"] for r in self.records()}
        removed = 0
        for path in (self.out / FILES).glob("*") if (self.out / FILES).is_dir() else ():
            if OWN_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink() \
                    and f"{FILES}/{path.name}" not in listed:
                path.unlink()
                removed += 1
        return removed

    def write(self, table: pa.Table, meta: dict[str, Any]) -> dict[str, Any]:
        """Publish a new overlay version (call under the output lock); returns its record."""
        latest = self.latest()
        version = (latest["version"] + 1) if latest else 1
        table = table.select(STATUS.names).cast(STATUS).sort_by([("clip_id", "ascending"),
                                                                  ("source_uri", "ascending")])
        digest = hashlib.blake2b("\n".join("\t".join(map(str, row)) for row in zip(
            *(table.column(n).to_pylist() for n in STATUS.names))).encode(), digest_size=8).hexdigest()
        rel = f"{FILES}/v{version:06d}-{digest}.parquet"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        counts = {s: c for s, c in zip(*_value_counts(table.column("status")))}
        record = {"version": version, "created_at": time.time(), "file": rel, "rows": table.num_rows,
                  "counts": counts, **meta}
        (self.out / RECORDS).mkdir(exist_ok=True)
        atomic_write_json(self.out / RECORDS / f"v{version:06d}.json", record)
        return record


def attach(con, out: str | Path) -> None:
    """Turn the `clips` view into clips-as-written plus the newest overlay (views clips_written, clip_status)."""
    latest = StatusLog(out).latest()
    con.execute("ALTER VIEW clips RENAME TO clips_written")
    if latest:
        path = str(Path(out) / latest["file"]).replace("'", "''")
        con.execute(f"CREATE VIEW clip_status AS SELECT * FROM read_parquet('{path}')")
    else:
        con.register("_empty_clip_status", STATUS.empty_table())
        con.execute("CREATE VIEW clip_status AS SELECT * FROM _empty_clip_status")
    con.execute("""CREATE VIEW clips AS SELECT w.* REPLACE (
                       CASE WHEN s.clip_id IS NULL THEN w.status ELSE s.status END AS status,
                       CASE WHEN s.clip_id IS NULL THEN w.reason ELSE s.reason END AS reason)
                   FROM clips_written w LEFT JOIN clip_status s
                        ON s.clip_id = w.clip_id AND s.source_uri = w.source_uri""")


def _value_counts(column: pa.ChunkedArray):
    counts = column.value_counts()
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()
