"""`vidprep compact OUT`: many small committed catalog files → few large ones, as one ordinary commit.

Every run adds a `videos` and a `clips` file per wave, so an output made of
10,000 waves is 20,000 files of a few hundred rows, and every scan pays a
footer per file. Compaction reads the small files of a table in wave order,
groups them into outputs of about `target_rows` rows (rows sorted by wave,
video and clip, row groups sized for scans), and commits them as a wave of
its own whose record lists them and names the files they replace:

    stage the new files ─► journal ─► rename into catalog/ ─► record (replaces: [...]) ─► manifest

Before the record is written, readers see only the old files (a crash leaves
leftovers that the next writer deletes, as for any wave); from the record on,
readers see only the new ones. The replaced files are deleted by the next
writer (run, refilter's lock holder, or compact), not at once, so a reader
that opened the catalog before the compaction can finish. Rows keep their
own `wave_id`, the record's `counts` are empty (no new rows: totals stay
true) and its sources are none, so resuming and the near-duplicate pass are
unaffected. Memory: one output file's rows.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.store.commit import CommitLog, WaveWriter
from pipeline.store.lease import OutputLock, output_lock
from pipeline.store.location import Location
from pipeline.store.manifest import Manifest, live_files
from pipeline.store.ownership import require_claimed

TABLES = {"videos": [("wave_id", "ascending"), ("source_uri", "ascending")],
          "clips": [("wave_id", "ascending"), ("source_uri", "ascending"), ("start_frame", "ascending"),
                    ("clip_id", "ascending")]}
TARGET_ROWS = 1_000_000
SMALL_BYTES = 64 << 20  # files below this are compacted
ROW_GROUP = 65536


@dataclass
class Compaction:
    wave_id: str | None = None  # None: nothing to compact
    replaced: dict[str, int] = field(default_factory=dict)  # table → files replaced
    written: dict[str, int] = field(default_factory=dict)  # table → files written
    rows: dict[str, int] = field(default_factory=dict)


def compact(out: str | Path, target_rows: int = TARGET_ROWS, small_bytes: int = SMALL_BYTES,
            held: OutputLock | None = None) -> Compaction:
    loc = Location.of(out)  # a folder, or a prefix on a store (the commit then writes final names directly)
    out = loc.path if loc.local else loc
    require_claimed(out)
    result = Compaction()
    with output_lock(out, held):  # `held`: the run's own lock (lease.output_lock)
        log = CommitLog(out)
        log.recover()  # leftovers of a dead writer, and files an earlier compaction replaced
        waves, schemas = Manifest(out).load()
        files = live_files(waves)
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        wave_id = f"{run_id}-compact"
        writer = WaveWriter(str(out))
        staged, replaces = [], []
        for table, order in TABLES.items():
            mine = files.filter(pc.and_(pc.equal(files.column("table"), table),
                                        pc.less(files.column("bytes"), small_bytes)))
            if mine.num_rows < 2:
                continue
            mine = mine.sort_by([("wave_id", "ascending"), ("path", "ascending")])
            schema = _union(mine.column("schema_id").to_pylist(), schemas, loc, mine.column("path").to_pylist())
            paths, rows = mine.column("path").to_pylist(), mine.column("rows").to_pylist()
            # (groups of one file are left alone, so compacting a compacted catalog does nothing)
            groups = [g for g in grouped(paths, rows, target_rows) if len(g) > 1]  # a lone file stays as it is
            for group in groups:
                data = pa.concat_tables([_conform(pq.read_table(loc.full(p), **loc.filesystem), schema)
                                         for p in group]).sort_by(order)
                staged.append(writer._write(wave_id, f"catalog/{table}", table, data, row_group_size=ROW_GROUP))
                result.written[table] = result.written.get(table, 0) + 1
                result.rows[table] = result.rows.get(table, 0) + data.num_rows
            replaced = [p for g in groups for p in g]
            replaces += replaced
            if replaced:
                result.replaced[table] = len(replaced)
        if not staged:
            return result
        fingerprints = waves.column("config_fingerprint").to_pylist()
        record = log.commit(wave_id, run_id, [], staged, fingerprints[-1], replaces=replaces)
        result.wave_id = record["wave_id"]
    return result


def compact_if_many(out: str | Path, above: int | None, small_bytes: int = SMALL_BYTES,
                    held: OutputLock | None = None) -> Compaction | None:
    """`compact` when a table has more than `above` small files (the end of a run); None: not needed.

    Counted from the manifest (no data file is opened), so a run that leaves few files pays nothing."""
    if above is None:
        return None
    waves, _ = Manifest(out).load()
    files = live_files(waves)
    small = files.filter(pc.less(files.column("bytes"), small_bytes)).column("table").to_pylist()
    if max((small.count(table) for table in TABLES), default=0) <= above:
        return None
    return compact(out, small_bytes=small_bytes, held=held)


def grouped(items: list, sizes: list[int], target: int):
    """Consecutive runs of `items` whose sizes add up to `target` or more (the last run may be smaller)."""
    group, size = [], 0
    for item, count in zip(items, sizes):
        group.append(item)
        size += count
        if size >= target:
            yield group
            group, size = [], 0
    if group:
        yield group


def _union(ids: list[str | None], schemas: dict[str, pa.Schema], loc: Location, paths: list[str]) -> pa.Schema:
    """The union of the files' schemas (declared in the manifest; read from a footer where not)."""
    merged: pa.Schema | None = None
    seen = set()
    for key, path in zip(ids, paths):
        if key in seen:
            continue
        seen.add(key)
        schema = schemas[key] if key in schemas else pq.read_schema(loc.full(path), **loc.filesystem).remove_metadata()
        merged = schema if merged is None else pa.unify_schemas([merged, schema])
    return merged


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)
