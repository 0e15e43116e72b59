"""The near-duplicate index that lives with the output: LSH band tables of the kept clips, in Parquet.

The rule is dedup.py's (greedy, in decision order, reject a clip within
`max_distance` of an earlier kept clip, naming the most similar one), with the
order (wave_id, source_uri, start_frame, clip_id): waves are named by run time
then number, so a later run's clips come after every clip already decided,
and deciding only the new clips against the kept ones gives what a pass over
everything would. The index holds what that needs, per kept clip:

    status/v<version>-k-<hash>.parquet   band, key, ord        sorted by (band, key): the band tables
    status/v<version>-e-<hash>.parquet   ord, clip_id, source_uri, clip_embedding (as stored, float16)

`ord` is the clip's position among kept clips (ties between equally similar
kept clips go to the earliest). Its settings — bands, bits, seed, the centre
the projections are taken around — are frozen when it is built, and live in
the status record with the list of its files (pipeline/store/status.py), so
the index and the statuses are published by one atomic rename.

The stream's read-only view of the decided waves is pipeline/catalog/snapshot.py.

A batch of new clips is decided in the driver with memory in the batch size:
its keys are joined with the band tables — inside DuckDB (a scan of the key
files, not a load), or for a pass of many batches by Ray actors holding the
tables (pipeline/catalog/bandjoin.py: loaded once, not scanned per batch) —
only the matching kept clips' embeddings are fetched, and each candidate pair
is verified exactly. While the index is small (fewer than
EXACT_BELOW kept clips) every kept clip is a candidate: exact, as dedup.py.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.catalog.bandjoin import band_codes
from pipeline.catalog.views import arrow, quiet_connection
from pipeline.catalog.dedup import EPS, EXACT_BELOW, hyperplanes, lsh_bits, signatures, unit_rows

KEYS = pa.schema([("band", pa.int16()), ("key", pa.int64()), ("ord", pa.int64())])
KEPT = pa.schema([("ord", pa.int64()), ("clip_id", pa.string()), ("source_uri", pa.string()),
                  ("clip_embedding", pa.list_(pa.float16()))])
REBUILD_FACTOR = 8  # kept clips past REBUILD_FACTOR * 2**bits: buckets too full, rebuild with more bits
EMBEDDING_ROW_GROUP = 4096
PAIR_CHUNK = 1 << 20  # candidate pairs verified at once
PASS_MEMORY = "512MB"  # DuckDB's share of the pass (the band-table join); past it DuckDB spills to its temp folder
FETCH_ORDS = 1 << 16  # kept clips' embeddings held at once to verify a batch's pairs: memory in this, not the index


@dataclass
class NearIndex:
    out: Path
    bands: int
    bits: int
    centre: np.ndarray | None = None  # (D,) frozen at build
    seed: int = 0
    kept: int = 0
    files: list[str] = field(default_factory=list)  # relative to out: key and embedding files
    exact_below: int = EXACT_BELOW
    _fresh_keys: list[pa.Table] = field(default_factory=list)
    _fresh_kept: list[pa.Table] = field(default_factory=list)
    _con: Any = None
    _fetch: Any = None
    band_join: Any = None  # a bandjoin.BandJoin while actors hold the band tables (bandjoin.band_actors)

    @classmethod
    def new(cls, out: str | Path, bands: int, expected: int, exact_below: int = EXACT_BELOW) -> "NearIndex":
        return cls(Path(out), bands, lsh_bits(expected), exact_below=exact_below)

    @classmethod
    def load(cls, out: str | Path, state: dict[str, Any], exact_below: int = EXACT_BELOW) -> "NearIndex":
        centre = np.array(state["centre"], np.float32) if state.get("centre") is not None else None
        return cls(Path(out), state["bands"], state["bits"], centre, state["seed"], state["kept"],
                   list(state["files"]), exact_below=exact_below)

    def state(self) -> dict[str, Any]:
        return {"bands": self.bands, "bits": self.bits, "seed": self.seed, "kept": self.kept,
                "centre": None if self.centre is None else [float(x) for x in self.centre], "files": self.files}

    def too_full(self) -> bool:
        return self.kept > REBUILD_FACTOR * (1 << self.bits) and self.bits < 24

    # -- deciding ------------------------------------------------------------------------------
    def decide(self, ids: list[str], uris: list[str], embeddings: pa.Array, max_distance: float,
               version: int) -> list[str | None]:
        """Clips in decision order → for each, the clip_id of the kept clip it duplicates (None: kept, and
        added to the index; written to files of status `version` at the next batch or `flush`)."""
        count = len(ids)
        if not count:
            return []
        self.flush(version)  # an earlier batch's kept clips are candidates now: they must be in the files
        raw = embeddings.flatten().to_numpy(zero_copy_only=False).reshape(count, -1)  # (n, D) float16
        unit = unit_rows(raw)  # (n, D) float32
        if self.centre is None:
            self.centre = unit.mean(0)
        threshold = 1.0 - max_distance - EPS
        exact = self.kept + count < self.exact_below
        keys = signatures(unit, self.bands, self.bits, self.seed, centre=self.centre[None, :])  # (n, bands)
        # Every candidate pair at once, verified exactly; only pairs within the distance are kept (few: the
        # duplicates). A pair is (row, earlier kept clip of the index) or (row, earlier row of this batch).
        old_rows, old_ords, old_sims = self._old_pairs(unit, keys, exact, threshold)
        new_rows, new_refs, new_sims = self._batch_pairs(unit, keys, exact, threshold)
        # The greedy rule, only where a row has a close pair: the most similar kept partner, the earliest
        # (index before batch, then by order) among equals; a batch partner counts only if it was kept.
        rows = np.concatenate([old_rows, new_rows])
        is_new = np.concatenate([np.zeros(len(old_rows), bool), np.ones(len(new_rows), bool)])
        refs = np.concatenate([old_ords, new_refs])
        sims = np.concatenate([old_sims, new_sims])
        order = np.lexsort((refs, is_new, rows))
        rows, is_new, refs, sims = rows[order], is_new[order], refs[order], sims[order]
        kept = np.ones(count, bool)
        duplicate_of: dict[int, tuple[bool, int]] = {}
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.empty(0, np.int64)
        for start, end in zip(starts, np.r_[starts[1:], len(rows)].astype(np.int64)):
            best, best_sim = None, -np.inf
            for k in range(start, end):
                if is_new[k] and not kept[refs[k]]:
                    continue
                if sims[k] > best_sim:
                    best, best_sim = k, sims[k]
            if best is not None:
                kept[rows[start]] = False
                duplicate_of[int(rows[start])] = (bool(is_new[best]), int(refs[best]))
        kept_rows = np.flatnonzero(kept)
        names = self._names({ref for fresh, ref in duplicate_of.values() if not fresh})
        self._remember(list(kept_rows), keys, ids, uris, embeddings)
        return [None if row not in duplicate_of else
                (ids[duplicate_of[row][1]] if duplicate_of[row][0] else names[duplicate_of[row][1]])
                for row in range(count)]

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:  # one in-memory connection for the pass (opening one costs tens of ms)
            self._con = quiet_connection()
            self._con.execute("SET parquet_metadata_cache = true")  # the index's files are immutable
            # The pass's joins stay under this (spilling past it), so the driver's memory doesn't follow them.
            self._con.execute(f"SET memory_limit = '{PASS_MEMORY}'; SET temp_directory = '{tempfile.gettempdir()}'")
        return self._con

    def _fetcher(self) -> duckdb.DuckDBPyConnection:
        """A second cursor on the pass's database: it fetches embeddings while the first streams pairs."""
        if self._fetch is None:
            self._fetch = self._duckdb().cursor()
        return self._fetch

    def _names(self, ords: set[int]) -> dict[int, str]:
        """clip_id of earlier kept clips, by ord, from the index's embedding files."""
        if not ords:
            return {}
        con = self._duckdb()
        con.register("_ords", pa.table({"ord": pa.array(sorted(ords), pa.int64())}))
        return dict(con.execute(f"""SELECT ord, clip_id FROM read_parquet({self._listing('e')})
                                    WHERE ord IN (SELECT ord FROM _ords)""").fetchall())

    def _old_pairs(self, unit: np.ndarray, keys: np.ndarray, exact: bool, threshold: float):
        """(row, ord, similarity) of batch rows and index clips within the distance."""
        empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
        if not self.kept:
            return empty
        con = self._duckdb()
        embeddings = f"read_parquet({self._listing('e')})"
        if exact:  # a small index: every kept clip is a candidate of every row
            table = arrow(con.sql(f"SELECT ord, clip_embedding FROM {embeddings} ORDER BY ord"))
            ords = table.column("ord").to_numpy()
            units = _units(table.column("clip_embedding"), len(ords))
            found = [[], [], []]
            for start in range(0, len(unit), 4096):
                sims = unit[start:start + 4096] @ units.T  # (chunk, kept)
                r, c = np.nonzero(sims >= threshold)
                found[0].append(r + start), found[1].append(ords[c]), found[2].append(sims[r, c])
            return tuple(np.concatenate(f) for f in found)
        if self.band_join is not None:  # the same pairs, from the actors' copy of the band tables
            return self._verified(unit, *self.band_join.pairs(keys), threshold)
        rows, bands = np.divmod(np.arange(keys.size, dtype=np.int64), keys.shape[1])
        con.register("_query", pa.table({"row": rows, "band": bands.astype(np.int16), "key": keys.reshape(-1)}))
        # Streamed in ord order, PAIR_CHUNK pairs at a time: a batch has up to batch x bands x (kept clips per
        # bucket) pairs, and DuckDB keeps (or spills) them, not Python.
        pairs = con.sql(f"""SELECT DISTINCT q.row, k.ord FROM _query q JOIN read_parquet({self._listing('k')}) k
                            ON k.band = q.band AND k.key = q.key ORDER BY k.ord""").to_arrow_reader(PAIR_CHUNK)
        found = [self._verified(unit, chunk.column(0).to_numpy(), chunk.column(1).to_numpy(), threshold)
                 for chunk in pairs]
        return tuple(np.concatenate([f[k] for f in found]) for k in range(3)) if found else empty

    def _verified(self, unit: np.ndarray, rows: np.ndarray, ords: np.ndarray, threshold: float):
        """The candidate pairs (row, ord) within the distance, with their similarity. The kept clips'
        embeddings are fetched FETCH_ORDS at a time, by ord range (the embedding files are sorted by ord
        in small row groups: DuckDB reads only the row groups in range): with ~1 unrelated kept clip per
        bucket a batch's candidates touch up to batch x bands kept clips, nearly all of them at 1M."""
        order = np.argsort(ords, kind="stable")
        rows, ords = rows[order], ords[order]
        wanted = ords[np.r_[True, ords[1:] != ords[:-1]]]  # distinct, sorted
        if not len(wanted):
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
        con, embeddings = self._fetcher(), f"read_parquet({self._listing('e')})"
        found: list[list[np.ndarray]] = [[], [], []]
        for start in range(0, len(wanted), FETCH_ORDS):
            chunk = wanted[start:start + FETCH_ORDS]
            lo, hi = int(chunk[0]), int(chunk[-1])
            con.register("_wanted", pa.table({"ord": chunk}))
            fetched = arrow(con.sql(f"""SELECT ord, clip_embedding FROM {embeddings}
                                        WHERE ord BETWEEN {lo} AND {hi} AND ord IN (SELECT ord FROM _wanted)
                                        ORDER BY ord"""))
            by_ord = fetched.column("ord").to_numpy()
            units = _units(fetched.column("clip_embedding"), len(by_ord))
            first, last = np.searchsorted(ords, lo, "left"), np.searchsorted(ords, hi, "right")
            sims = _pair_sims(unit, rows[first:last], units, np.searchsorted(by_ord, ords[first:last]))
            close = sims >= threshold
            found[0].append(rows[first:last][close]), found[1].append(ords[first:last][close])
            found[2].append(sims[close])
        return tuple(np.concatenate(f) for f in found)

    def _batch_pairs(self, unit: np.ndarray, keys: np.ndarray, exact: bool, threshold: float):
        """(row, earlier row, similarity) of pairs inside the batch within the distance."""
        if exact:  # a small batch: every earlier row is a candidate
            sims = unit @ unit.T  # (n, n)
            r, c = np.nonzero(np.tril(sims >= threshold, -1))
            return r.astype(np.int64), c.astype(np.int64), sims[r, c]
        rows, bands = np.divmod(np.arange(keys.size, dtype=np.int64), keys.shape[1])
        con = self._duckdb()
        con.register("_keys", pa.table({"row": rows, "band": bands.astype(np.int16), "key": keys.reshape(-1)}))
        pairs = arrow(con.sql("""SELECT DISTINCT a.row AS row, b.row AS ref FROM _keys a JOIN _keys b
                                 ON a.band = b.band AND a.key = b.key AND b.row < a.row"""))
        r, c = pairs.column("row").to_numpy(), pairs.column("ref").to_numpy()
        sims = _pair_sims(unit, r, unit, c)
        close = sims >= threshold
        return r[close], c[close], sims[close]

    def _remember(self, rows: list[int], keys: np.ndarray, ids, uris, embeddings: pa.Array) -> None:
        if not rows:
            return
        ords = np.arange(self.kept, self.kept + len(rows), dtype=np.int64)
        taken = pa.array(rows, pa.int64())
        self._fresh_kept.append(pa.table({"ord": ords, "clip_id": pa.array(ids).take(taken),
                                          "source_uri": pa.array(uris).take(taken),
                                          "clip_embedding": embeddings.take(taken).cast(KEPT.field(3).type)},
                                         schema=KEPT))
        chosen = keys[rows]  # (k, bands)
        if self.band_join is not None:
            self.band_join.add(chosen, ords)
        self._fresh_keys.append(pa.table({"band": np.tile(np.arange(self.bands, dtype=np.int16), len(rows)),
                                          "key": chosen.reshape(-1), "ord": np.repeat(ords, self.bands)},
                                         schema=KEYS))
        self.kept += len(rows)

    # -- writing -------------------------------------------------------------------------------
    def flush(self, version: int) -> None:
        """Write the clips kept since the last flush as one key file and one embedding file."""
        if not self._fresh_kept:
            return
        keys = pa.concat_tables(self._fresh_keys).sort_by([("band", "ascending"), ("key", "ascending")])
        kept = pa.concat_tables(self._fresh_kept)
        self.files += [self._write(keys, version, "k"), self._write(kept, version, "e")]
        self._fresh_keys, self._fresh_kept = [], []

    def _write(self, table: pa.Table, version: int, kind: str) -> str:
        from pipeline.store.commit import _file_hash
        from pipeline.store.status import FILES

        folder = self.out / FILES
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".v{version:06d}-{kind}.parquet.tmp{os.getpid()}{secrets.token_hex(2)}"
        # Embedding files in small row groups: they are sorted by ord, so fetching a few kept clips by ord
        # reads only their row groups (DuckDB prunes by min/max: 5x faster at 50k kept clips, measured).
        rows = EMBEDDING_ROW_GROUP if kind == "e" else 1 << 17
        pq.write_table(table, tmp, compression="zstd", row_group_size=rows)
        rel = f"{FILES}/v{version:06d}-{kind}-{_file_hash(tmp)[:16]}.parquet"
        os.replace(tmp, self.out / rel)
        return rel

    def key_files(self, kind: str = "k") -> list[str]:
        """The index's files of one kind, relative to the output: "k" the band tables, "e" the embeddings."""
        return [f for f in self.files if Path(f).name.split("-")[1] == kind]

    def _listing(self, kind: str) -> str:
        paths = [str(self.out / f) for f in self.key_files(kind)]
        return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _units(column, count: int) -> np.ndarray:
    """A stored embedding column → (count, D) float32 unit rows."""
    chunked = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    return unit_rows(chunked.flatten().to_numpy(zero_copy_only=False).reshape(count, -1))


def _pair_sims(left: np.ndarray, rows: np.ndarray, right: np.ndarray, refs: np.ndarray,
               chunk: int = 1 << 18) -> np.ndarray:
    """Cosine of each pair (left[rows[k]], right[refs[k]]), in chunks (bounded memory)."""
    out = np.empty(len(rows), np.float32)
    for start in range(0, len(rows), chunk):
        end = start + chunk
        out[start:end] = np.einsum("ij,ij->i", left[rows[start:end]], right[refs[start:end]])
    return out
