"""The manifest: every commit record in a few Parquet files, so opening the catalog reads no record.

    OUT/_manifest/seg-<first wave>-<hash>.parquet   one row per committed wave: its record, in columns

The commit records stay the truth (pipeline/store/commit.py); the manifest is
a cache of them that the commit protocol keeps up to date. After a wave's
record is written, the writer adds a small segment with that wave's row;
past `MERGE_AT` segments it merges the small ones (all of them when the
small ones together reach a quarter of the largest, so a wave's row is
rewritten O(log waves) times) into one segment, then deletes the ones it
merged. Each step is one atomic rename, and a reader never trusts the
manifest blindly: it lists `_commits/` (names only) and

    a record the manifest lacks    (a crash after the record, before its segment)  → that one record is read
    a manifest row with no record  (a record moved away to give a wave up)         → the row is dropped
    a wave in two segments         (a crash while merging)                         → one copy is used

so what readers see always equals the records, at the cost of one directory
listing plus reading the segments (no JSON record is parsed on the way).

Each file entry carries `schema_id`, the hash of its Arrow schema, and each
segment's metadata maps ids to schemas: the catalog's views are declared
from these schemas (the union of the columns the stages wrote) instead of
scanning every file's footer (`union_by_name`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.store.faults import crash_point
from pipeline.store.location import Location

FOLDER = "_manifest"
MERGE_AT = 4  # segments before a merge: a reader reads at most this many (+1) files (~5 ms each)
FILE = pa.struct([("path", pa.string()), ("table", pa.string()), ("rows", pa.int64()), ("bytes", pa.int64()),
                  ("schema_id", pa.string())])
WAVES = pa.schema([
    ("wave_id", pa.string()), ("run_id", pa.string()), ("committed_at", pa.float64()),
    ("config_fingerprint", pa.string()), ("schema_version", pa.string()),
    ("sources", pa.list_(pa.string())), ("counts", pa.string()),  # counts: the record's JSON object
    ("files", pa.list_(FILE)),
    ("replaces", pa.list_(pa.string())),  # paths of earlier files this wave's files replace (compaction)
])


def schema_id(schema: pa.Schema) -> str:
    return hashlib.blake2b(schema.remove_metadata().serialize().to_pybytes(), digest_size=8).hexdigest()


def encode_schema(schema: pa.Schema) -> str:
    return base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode()


_decoded: dict[str, pa.Schema] = {}  # text → schema: each segment repeats its schemas, decoding costs ~2 ms


def decode_schema(text: str) -> pa.Schema:
    if text not in _decoded:
        _decoded[text] = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
    return _decoded[text]


class Manifest:
    """The committed waves of OUT as one Arrow table (WAVES), equal to what `_commits/` records say."""

    def __init__(self, out: "str | Path | Location"):
        self.loc = Location.of(out)
        self.out = self.loc.path if self.loc.local else self.loc
        self.dir = self.out / FOLDER if self.loc.local else None

    # -- reading --------------------------------------------------------------------------------
    def load(self, columns: list[str] | None = None) -> tuple[pa.Table, dict[str, pa.Schema]]:
        """(waves, schemas): every committed wave's row in wave_id order, and the file schemas by id.
        `columns`: only these of WAVES (and wave_id): a query leaves out `sources`, a row per video."""
        from pipeline.store.commit import COMMITS

        schema = WAVES if columns is None else pa.schema([f for f in WAVES if f.name in {"wave_id", *columns}])
        recorded = _listed_waves(self.loc, COMMITS)
        table, schemas = self._segments(schema)
        if table.num_rows:
            # Merge leftovers: one copy per wave. Rows without a record: the record was moved away.
            ids = table.column("wave_id").to_pylist()
            first = {}
            for row, wave in enumerate(ids):
                if wave in recorded:
                    first.setdefault(wave, row)
            if len(first) != table.num_rows:  # (take copies every list: only when something is dropped)
                table = table.take(pa.array(sorted(first.values()), pa.int64()))
            known = set(first)
        else:
            known = set()
        missing = sorted(recorded - known)
        if missing:  # a crash between a record and its segment (or a manifest deleted): read those records
            rows, more = records_to_rows(self._read_records(missing))
            rows = rows.select(schema.names)
            table = pa.concat_tables([table, rows]) if table.num_rows else rows
            schemas.update(more)
        ids = table.column("wave_id")
        if len(ids) > 1 and not pc.all(pc.greater(ids[1:], ids[:-1])).as_py():
            table = table.take(pc.sort_indices(table, [("wave_id", "ascending")]))
        return table, schemas

    def _segments(self, schema: pa.Schema = WAVES) -> tuple[pa.Table, dict[str, pa.Schema]]:
        paths = self.segment_paths()
        if not paths:
            return schema.empty_table(), {}
        tables, schemas = [], {}
        for path in paths:
            table = self._read(path, schema.names)
            meta = table.schema.metadata or {}
            for key, text in json.loads(meta.get(b"vidprep.schemas", b"{}")).items():
                schemas[key] = decode_schema(text)
            tables.append(table.replace_schema_metadata(None).cast(schema))
        return pa.concat_tables(tables), schemas

    def segment_paths(self) -> list[Path]:
        """The segments (local paths; relative names on a store)."""
        if self.loc.local:
            return sorted(self.dir.glob("seg-*.parquet")) if self.dir.is_dir() else []
        return [f"{FOLDER}/{n}" for n in self.loc.names(FOLDER) if n.startswith("seg-") and n.endswith(".parquet")]

    def _read(self, path, columns: list[str] | None = None) -> pa.Table:
        # (read_table adds dataset discovery: 2x slower here)
        if self.loc.local:
            return pq.ParquetFile(path).read(columns)
        with self.loc.open_input(path) as handle:
            return pq.ParquetFile(handle).read(columns)

    def _read_records(self, waves: list[str]) -> list[dict[str, Any]]:
        from pipeline.store.commit import COMMITS, DAMAGED_COMMIT, RECORD_KEYS, read_record

        return [read_record(f"{COMMITS}/{w}.json", RECORD_KEYS, "commit record", DAMAGED_COMMIT, self.loc)
                for w in waves]

    # -- writing (under the output lock) --------------------------------------------------------
    def add(self, record: dict[str, Any]) -> None:
        """After `record` is written: add its segment; merge when there are many."""
        rows, schemas = records_to_rows([record])
        self._write(rows, schemas, record["wave_id"])
        crash_point("listed")
        if len(self.segment_paths()) > MERGE_AT:
            self.merge()

    def merge(self) -> None:
        """Rewrite the small segments as one (all, with the largest, once they weigh a quarter of it);
        then delete the ones merged. Rows of waves whose record is gone are dropped on the way."""
        from pipeline.store.commit import COMMITS

        paths = self.segment_paths()
        read = {p: self._read(p) for p in paths}
        sizes = {p: read[p].num_rows for p in paths}
        largest = max(paths, key=lambda p: sizes[p])
        small = [p for p in paths if p != largest]
        chosen = paths if 4 * sum(sizes[p] for p in small) >= sizes[largest] else small
        recorded = _listed_waves(self.loc, COMMITS)
        tables, schemas = [], {}
        for path in chosen:
            table = read[path]
            for key, text in json.loads((table.schema.metadata or {}).get(b"vidprep.schemas", b"{}")).items():
                schemas[key] = decode_schema(text)
            tables.append(table.replace_schema_metadata(None).cast(WAVES))
        table = pa.concat_tables(tables)
        table = table.filter(pc.is_in(table.column("wave_id"), value_set=pa.array(sorted(recorded), pa.string())))
        if table.num_rows:
            table = table.take(pc.sort_indices(table, [("wave_id", "ascending")]))
            self._write(table, schemas, table.column("wave_id")[0].as_py())
        crash_point("merged")
        for path in chosen:
            if self.loc.local:
                path.unlink(missing_ok=True)
            else:
                self.loc.delete(path)

    def _write(self, table: pa.Table, schemas: dict[str, pa.Schema], first_wave: str) -> Path:
        used = {f["schema_id"] for files in table.column("files").to_pylist() for f in files if f["schema_id"]}
        meta = {b"vidprep.schemas": json.dumps({k: encode_schema(schemas[k]) for k in sorted(used)
                                                if k in schemas}).encode()}
        name = f"seg-{first_wave}-{secrets.token_hex(6)}.parquet"
        if not self.loc.local:  # one PUT: the segment appears whole or not at all
            pq.write_table(table.replace_schema_metadata(meta), self.loc.full(f"{FOLDER}/{name}"),
                           compression="zstd", **self.loc.filesystem)
            return f"{FOLDER}/{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".seg.tmp{os.getpid()}-{secrets.token_hex(4)}"
        pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
        path = self.dir / name
        os.replace(tmp, path)
        return path


def records_to_rows(records: list[dict[str, Any]]) -> tuple[pa.Table, dict[str, pa.Schema]]:
    """Commit records → WAVES rows, and the schemas their files declare (older records declare none)."""
    schemas = {key: decode_schema(text) for r in records for key, text in r.get("schemas", {}).items()}
    rows = [{"wave_id": r["wave_id"], "run_id": r["run_id"], "committed_at": float(r["committed_at"]),
             "config_fingerprint": r["config_fingerprint"], "schema_version": str(r["schema_version"]),
             "sources": list(r["sources"]), "counts": json.dumps(r["counts"], sort_keys=True),
             "files": [{"path": f["path"], "table": f["table"], "rows": int(f["rows"]), "bytes": int(f["bytes"]),
                        "schema_id": f.get("schema_id")} for f in r["files"]],
             "replaces": list(r.get("replaces", []))} for r in records]
    return pa.Table.from_pylist(rows, schema=WAVES), schemas


def live_files(waves: pa.Table) -> pa.Table:
    """The files readers see: path, table, rows, bytes, schema_id, wave_id — minus replaced ones."""
    if not waves.num_rows:
        return pa.table({n: pa.array([], t) for n, t in [("path", pa.string()), ("table", pa.string()),
                         ("rows", pa.int64()), ("bytes", pa.int64()), ("schema_id", pa.string()),
                         ("wave_id", pa.string())]})
    lengths = pc.list_value_length(waves.column("files")).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(waves.column("files"))
    files = pa.Table.from_struct_array(flat.combine_chunks() if isinstance(flat, pa.ChunkedArray) else flat)
    files = files.append_column("wave_id", pa.array(
        [w for w, n in zip(waves.column("wave_id").to_pylist(), lengths) for _ in range(int(n))], pa.string()))
    replaced = pc.list_flatten(waves.column("replaces"))
    if len(replaced):
        files = files.filter(pc.invert(pc.is_in(files.column("path"), value_set=pa.array(replaced, pa.string())
                                                if not isinstance(replaced, pa.ChunkedArray)
                                                else replaced.combine_chunks())))
    return files


def _listed_waves(loc: Location, folder: str) -> set[str]:
    if loc.local:
        try:
            names = os.listdir(loc.full(folder))
        except FileNotFoundError:
            return set()
    else:
        names = loc.names(folder)
    return {name[:-5] for name in names if name.endswith(".json") and not name.startswith(".")}
