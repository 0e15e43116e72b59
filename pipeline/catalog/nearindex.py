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

A batch of new clips is decided in the driver with memory in the batch size:
its keys are joined with the band tables inside DuckDB (a scan of the key
column, not a load), only the matching kept clips' embeddings are fetched, and
each candidate pair is verified exactly. While the index is small (fewer than
EXACT_BELOW kept clips) every kept clip is a candidate: exact, as dedup.py.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.catalog.views import arrow
from pipeline.catalog.dedup import EPS, EXACT_BELOW, lsh_bits, signatures, unit_rows

KEYS = pa.schema([("band", pa.int16()), ("key", pa.int64()), ("ord", pa.int64())])
KEPT = pa.schema([("ord", pa.int64()), ("clip_id", pa.string()), ("source_uri", pa.string()),
                  ("clip_embedding", pa.list_(pa.float16()))])
REBUILD_FACTOR = 8  # kept clips past REBUILD_FACTOR * 2**bits: buckets too full, rebuild with more bits


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
        old = self._old_candidates(keys, exact)  # row → (ords, unit vectors) of kept clips from earlier
        decisions: list[int | None] = [None] * count
        new_rows: list[int] = []  # batch rows kept so far
        buckets: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        for row in range(count):
            if exact:
                mine = new_rows
            else:
                mine = sorted({r for band, key in enumerate(keys[row]) for r in buckets[band].get(int(key), ())})
            old_ords, old_units = old.get(row, (np.empty(0, np.int64), None))
            ords = np.concatenate([old_ords, self.kept + np.searchsorted(new_rows, mine).astype(np.int64)]) \
                if mine else old_ords
            if len(ords):
                vectors = unit[mine] if old_units is None else (
                    np.concatenate([old_units, unit[mine]]) if mine else old_units)
                sims = vectors @ unit[row]  # (c,), ordered by ord: argmax takes the earliest of equals
                best = int(np.argmax(sims))
                if sims[best] >= threshold:
                    decisions[row] = int(ords[best])
                    continue
            new_rows.append(row)
            if not exact:
                for band, key in enumerate(keys[row]):
                    buckets[band].setdefault(int(key), []).append(row)
        names = self._names({o for o in decisions if o is not None and o < self.kept})
        names.update({self.kept + i: ids[row] for i, row in enumerate(new_rows)})
        self._remember(new_rows, keys, ids, uris, embeddings)
        return [None if o is None else names[o] for o in decisions]

    def _names(self, ords: set[int]) -> dict[int, str]:
        """clip_id of earlier kept clips, by ord, from the index's embedding files."""
        if not ords:
            return {}
        con = duckdb.connect()
        con.register("_ords", pa.table({"ord": pa.array(sorted(ords), pa.int64())}))
        return dict(con.execute(f"""SELECT ord, clip_id FROM read_parquet({self._listing('e')})
                                    WHERE ord IN (SELECT ord FROM _ords)""").fetchall())

    def _old_candidates(self, keys: np.ndarray, exact: bool) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        if not self.kept:
            return {}
        con = duckdb.connect()
        embeddings = f"read_parquet({self._listing('e')})"
        if exact:  # a small index: every kept clip is a candidate of every row
            table = arrow(con.sql(f"SELECT ord, clip_embedding FROM {embeddings} ORDER BY ord"))
            ords = table.column("ord").to_numpy()
            units = unit_rows(table.column("clip_embedding").combine_chunks().flatten()
                              .to_numpy(zero_copy_only=False).reshape(len(ords), -1))
            return {row: (ords, units) for row in range(len(keys))}
        rows, bands = np.divmod(np.arange(keys.size, dtype=np.int64), keys.shape[1])
        con.register("_query", pa.table({"row": rows, "band": bands.astype(np.int16), "key": keys.reshape(-1)}))
        pairs = arrow(con.sql(f"""SELECT DISTINCT q.row, k.ord FROM _query q
                                JOIN read_parquet({self._listing('k')}) k ON k.band = q.band AND k.key = q.key
                                ORDER BY q.row, k.ord"""))
        if not pairs.num_rows:
            return {}
        con.register("_pairs", pairs)
        fetched = arrow(con.sql(f"""SELECT ord, clip_embedding FROM {embeddings}
                                  WHERE ord IN (SELECT DISTINCT ord FROM _pairs) ORDER BY ord"""))
        by_ord = fetched.column("ord").to_numpy()
        units = unit_rows(fetched.column("clip_embedding").combine_chunks().flatten()
                          .to_numpy(zero_copy_only=False).reshape(len(by_ord), -1))
        pair_rows, pair_ords = pairs.column("row").to_numpy(), pairs.column("ord").to_numpy()
        where = np.searchsorted(by_ord, pair_ords)
        starts = np.flatnonzero(np.r_[True, pair_rows[1:] != pair_rows[:-1]])
        ends = np.r_[starts[1:], len(pair_rows)]
        return {int(pair_rows[s]): (pair_ords[s:e], units[where[s:e]]) for s, e in zip(starts, ends)}

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
        pq.write_table(table, tmp, compression="zstd", row_group_size=1 << 17)
        rel = f"{FILES}/v{version:06d}-{kind}-{_file_hash(tmp)[:16]}.parquet"
        os.replace(tmp, self.out / rel)
        return rel

    def _listing(self, kind: str) -> str:
        paths = [str(self.out / f) for f in self.files if Path(f).name.split("-")[1] == kind]
        return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
