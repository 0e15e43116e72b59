"""Status overlays: later decisions about committed clips, without rewriting committed files.

The stream writes each clip's status once, in its wave (exactly-once, by
commit record). Decisions that need the whole catalog — near-duplicates, and
`vidprep refilter` with a new expression — are written as an overlay:

    OUT/status/v000003-<hash>.parquet   clip_id, source_uri, status, reason for the clips it covers
    OUT/_status/v000003.json            its record: version, keep, dedup settings, counts, files, the
                                        waves decided, and the near-duplicate index (its files and settings)

A version's overlay is the list of files in its record: an incremental pass
(pipeline/catalog/refilter.py) lists the previous version's files plus one
for the new waves' clips, so a run rewrites nothing it decided before; the
near-duplicate index (pipeline/catalog/nearindex.py, `v…-k-…`/`v…-e-…` files)
is listed in the same record, so statuses and index change together.

The record is the truth, as for waves: the file is written and renamed first,
the record last (atomically); readers use the newest record, and a file no
record lists (a crash in between) is deleted by the next writer, which holds
the output lock. Older versions stay, so a refilter can be undone by reading
an older one. `catalog.connect` shows `clips` = the clips as written
(`clips_written`) with status and reason taken from the newest overlay where
it has the clip (`clip_status`).
"""
from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.commit import atomic_write_json

FILES, RECORDS = "status", "_status"
OWN_FILE = re.compile(r"\.?v\d{6}-([ke]-)?[0-9a-f]{16}\.parquet(\.tmp[0-9a-f]+)?|"
                      r"\.v\d{6}-[ke]\.parquet\.tmp[0-9a-f]+")  # what vidprep names (and its tmp files)
# Keyed by (clip_id, source_uri): byte-identical copies of a video share video_id and so clip ids.
STATUS = pa.schema([pa.field("clip_id", pa.string(), nullable=False),
                    pa.field("source_uri", pa.string(), nullable=False),
                    pa.field("status", pa.string(), nullable=False), pa.field("reason", pa.string())],
                   metadata={"vidprep.table": "clip_status"})


class StatusLog:
    def __init__(self, out):
        from pipeline.store.location import Location

        self.loc = Location.of(out)
        self.out = self.loc.path if self.loc.local else self.loc

    def records(self) -> list[dict[str, Any]]:
        from pipeline.store.commit import read_record

        advice = "restore it from a backup, or move it out of _status/ to fall back to the previous version"
        if not self.loc.local:
            return [read_record(f"{RECORDS}/{n}", ("version",), "status record", advice, self.loc)
                    for n in self.loc.names(RECORDS) if n.startswith("v") and n.endswith(".json")]
        folder = self.out / RECORDS
        return [read_record(p, ("version",), "status record", advice)
                for p in sorted(folder.glob("v*.json"))] if folder.is_dir() else []

    def latest(self) -> dict[str, Any] | None:
        """The newest record; only it is read (versions accumulate, one per refilter or run)."""
        from pipeline.store.commit import read_record

        advice = "restore it from a backup, or move it out of _status/ to fall back to the previous version"
        if not self.loc.local:
            names = [n for n in self.loc.names(RECORDS) if n.startswith("v") and n.endswith(".json")]
            return read_record(f"{RECORDS}/{max(names)}", ("version",), "status record", advice, self.loc) \
                if names else None
        folder = self.out / RECORDS
        newest = max(folder.glob("v*.json"), default=None) if folder.is_dir() else None
        return read_record(newest, ("version",), "status record", advice) if newest else None

    def recover(self) -> int:
        """Delete overlay files no record lists (a writer that died between file and record).

        Only files named as `write` names them (and its temporary files): anything else stays."""
        listed = {f for r in self.records() for f in record_files(r, with_index=True)}
        removed = 0
        for path in (self.out / FILES).glob("*") if (self.out / FILES).is_dir() else ():
            if OWN_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink() \
                    and f"{FILES}/{path.name}" not in listed:
                path.unlink()
                removed += 1
        return removed

    def next_version(self) -> int:
        latest = self.latest()
        return (latest["version"] + 1) if latest else 1

    def write_part(self, table: pa.Table, version: int) -> str:
        """Write one overlay file of `version` (named by its bytes); returns its path relative to OUT."""
        from pipeline.store.commit import _file_hash

        table = table.select(STATUS.names).cast(STATUS).sort_by([("clip_id", "ascending"),
                                                                  ("source_uri", "ascending")])
        folder = self.out / FILES
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".v{version:06d}-{secrets.token_hex(8)}.parquet.tmp{os.getpid():x}"
        pq.write_table(table, tmp, compression="zstd")
        rel = f"{FILES}/v{version:06d}-{_file_hash(tmp)[:16]}.parquet"
        os.replace(tmp, self.out / rel)
        return rel

    def temporary_part(self, version: int) -> Path:
        """Where a writer other than `write_part` (DuckDB's COPY) puts an overlay file before `adopt_part`."""
        (self.out / FILES).mkdir(parents=True, exist_ok=True)
        return self.out / FILES / f".v{version:06d}-{secrets.token_hex(8)}.parquet.tmp{os.getpid():x}"

    def adopt_part(self, tmp: Path, version: int) -> str:
        """Name a finished overlay file by its bytes, as `write_part` does; returns its path relative to OUT."""
        from pipeline.store.commit import _file_hash

        rel = f"{FILES}/v{version:06d}-{_file_hash(tmp)[:16]}.parquet"
        os.replace(tmp, self.out / rel)
        return rel

    def publish(self, version: int, files: list[str], meta: dict[str, Any]) -> dict[str, Any]:
        """Make `version` the newest: its record, written atomically, lists its files (call under the lock)."""
        record = {"version": version, "created_at": time.time(), "files": files, **meta}
        (self.out / RECORDS).mkdir(exist_ok=True)
        atomic_write_json(self.out / RECORDS / f"v{version:06d}.json", record)
        return record

    def write(self, table: pa.Table, meta: dict[str, Any]) -> dict[str, Any]:
        """Publish a new overlay version of one file (call under the output lock); returns its record."""
        version = self.next_version()
        counts = {s: c for s, c in zip(*_value_counts(table.column("status")))}
        return self.publish(version, [self.write_part(table, version)],
                            {"rows": table.num_rows, "counts": counts, **meta})


def record_files(record: dict[str, Any] | None, with_index: bool = False) -> list[str]:
    """The overlay files a status record lists (older records name one `file`), and its index files."""
    if not record:
        return []
    files = list(record.get("files") or ([record["file"]] if record.get("file") else []))
    if with_index and record.get("index"):
        files += record["index"]["files"]
    return files


def attach(con, out: str | Path) -> None:
    """Turn the `clips` view into clips-as-written plus the newest overlay (views clips_written, clip_status)."""
    log = StatusLog(out)
    files = record_files(log.latest())
    con.execute("ALTER VIEW clips RENAME TO clips_written")
    if files and not log.loc.local:  # a store: an Arrow dataset of the overlay files (pipeline/catalog/views.py)
        import pyarrow.dataset as ds

        con.register("_arrow_clip_status", ds.dataset([log.loc.full(f) for f in files], schema=STATUS,
                                                     format="parquet", filesystem=log.loc.fs))
        con.execute("""CREATE VIEW clip_status AS SELECT clip_id, source_uri, any_value(status) AS status,
                       any_value(reason) AS reason FROM _arrow_clip_status GROUP BY clip_id, source_uri""")
    elif files:
        listing = ", ".join("'" + str(Path(out) / f).replace("'", "''") + "'" for f in files)
        # One row per key by construction; saying so (GROUP BY) lets DuckDB drop the join from queries that
        # use no overlay column (a count(*) of clips then costs what a count of the files costs).
        con.execute(f"""CREATE VIEW clip_status AS SELECT clip_id, source_uri, any_value(status) AS status,
                            any_value(reason) AS reason FROM read_parquet([{listing}]) GROUP BY clip_id, source_uri""")
    else:
        con.register("_empty_clip_status", STATUS.empty_table())
        con.execute("CREATE VIEW clip_status AS SELECT * FROM _empty_clip_status")
    con.execute(f"CREATE VIEW clips AS {overlaid('clips_written')}")


def overlaid(relation: str) -> str:
    """SELECT: the clips of `relation` (clips as written) with status and reason from `clip_status`."""
    return f"""SELECT w.* REPLACE (
                   CASE WHEN s.clip_id IS NULL THEN w.status ELSE s.status END AS status,
                   CASE WHEN s.clip_id IS NULL THEN w.reason ELSE s.reason END AS reason)
               FROM {relation} w LEFT JOIN clip_status s
                    ON s.clip_id = w.clip_id AND s.source_uri = w.source_uri"""


def _value_counts(column: pa.ChunkedArray):
    counts = column.value_counts()
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()
