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
# The stream rejects only what the end-of-run pass provably rejects (CommittedKept), so it keeps away from
# the two places where float rounding could make the two computations disagree:
EMBEDDING_ROW_GROUP = 4096
KEY_CACHE_ROWS = 1 << 23  # band-table rows a stream worker holds in memory (128 MiB); above, DuckDB joins the files
# A pair sharing one band is mostly chance (bits are chosen for ~1 unrelated kept clip per bucket); near-
# duplicates share many (copies: nearly all). Two or more: few embeddings to fetch; a pair sharing only one
# is left to the end-of-run pass (fewer rejections in the stream are never wrong, only less saved).
MIN_SHARED_BANDS = 2
SIGN_MARGIN = 1e-4  # a projection this close to 0 may flip sign in a matmul of another shape: band not used
SIMILARITY_MARGIN = 1e-4  # a pair this close to the threshold is left to the end-of-run pass


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
        return self._con

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
            pairs = pa.table(dict(zip(("row", "ord"), self.band_join.pairs(keys))))
        else:
            rows, bands = np.divmod(np.arange(keys.size, dtype=np.int64), keys.shape[1])
            con.register("_query", pa.table({"row": rows, "band": bands.astype(np.int16), "key": keys.reshape(-1)}))
            pairs = arrow(con.sql(f"""SELECT DISTINCT q.row, k.ord FROM _query q JOIN read_parquet(
                                      {self._listing('k')}) k ON k.band = q.band AND k.key = q.key"""))
        if not pairs.num_rows:
            return empty
        con.register("_pairs", pairs)
        fetched = arrow(con.sql(f"""SELECT ord, clip_embedding FROM {embeddings}
                                    WHERE ord IN (SELECT DISTINCT ord FROM _pairs) ORDER BY ord"""))
        by_ord = fetched.column("ord").to_numpy()
        units = _units(fetched.column("clip_embedding"), len(by_ord))
        pair_rows, pair_ords = pairs.column("row").to_numpy(), pairs.column("ord").to_numpy()
        sims = _pair_sims(unit, pair_rows, units, np.searchsorted(by_ord, pair_ords))
        close = sims >= threshold
        return pair_rows[close], pair_ords[close], sims[close]

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

    def key_files(self) -> list[str]:
        """The band tables' files, relative to the output."""
        return [f for f in self.files if Path(f).name.split("-")[1] == "k"]

    def _listing(self, kind: str) -> str:
        paths = [str(self.out / f) for f in self.files if Path(f).name.split("-")[1] == kind]
        return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


@dataclass
class CommittedKept:
    """The kept clips of the waves already decided, read-only: what the stream rejects new clips against.

    Why a rejection here is the end-of-run pass's own decision (`near_duplicate_of:<id>`): the pass goes
    on from the same index (refilter.streaming_snapshot checks that it will: same settings, the run's
    waves after every decided one), so the clips in this snapshot are kept and come before every new
    clip in its order; a new clip within the distance of one of them is rejected by the greedy rule
    whatever else the pass decides — provided the pass finds the pair. It does when the pair shares a
    band key (both in LSH and exact mode), so only pairs sharing a key are used, computed with the
    index's frozen centre, seed and bits; bands holding a projection within SIGN_MARGIN of 0 and pairs
    within SIMILARITY_MARGIN of the threshold are left out, so rounding can't make the two disagree.
    The named clip is the most similar kept clip of the snapshot; the end pass may name another (a
    more similar clip of this run), never keep the clip. Each decision depends only on the clip and the
    snapshot: the same whatever the batches, their order, a crash or a resume.

    Small to ship (settings and a file list): workers read the band tables and the matched embeddings
    from the index's Parquet files (immutable, content-named) through DuckDB, as NearIndex does.
    """
    out: str
    version: int  # the status record the snapshot is (its index is that record's)
    max_distance: float
    state: dict[str, Any]  # NearIndex.state() of that record
    _con: Any = field(default=None, repr=False, compare=False)
    _keys: Any = field(default=None, repr=False, compare=False)  # (sorted codes, ords), loaded once per process

    @property
    def kept(self) -> int:
        return int(self.state["kept"])

    def __getstate__(self):  # a DuckDB connection and the loaded band tables stay in their process
        return {**self.__dict__, "_con": None, "_keys": None}

    def duplicates_of(self, embeddings: np.ndarray) -> list[str | None]:
        """(n, D) clip embeddings (as stored, float16) → the kept clip each one provably duplicates, or None."""
        count = len(embeddings)
        centre = np.asarray(self.state["centre"], np.float32)
        if not count or embeddings.ndim != 2 or embeddings.shape[1] != len(centre):
            return [None] * count  # another embedding model: the end pass says so, not the stream
        bands, bits, seed = self.state["bands"], self.state["bits"], self.state["seed"]
        unit = unit_rows(embeddings)  # (n, D) float32
        values = (unit - centre[None, :]) @ hyperplanes(unit.shape[1], bands, bits, seed)  # (n, bands*bits)
        keys = (values > 0).reshape(count, bands, bits).astype(np.int64) @ (1 << np.arange(bits, dtype=np.int64))
        stable = (np.abs(values) > SIGN_MARGIN).reshape(count, bands, bits).all(axis=2)  # (n, bands)
        rows, used = np.nonzero(stable)
        if not len(rows):
            return [None] * count
        index = NearIndex.load(self.out, self.state)
        if self._con is None:
            self._con = quiet_connection()
        con = self._con
        pairs = self._pairs(index, rows.astype(np.int64), used.astype(np.int64), keys[rows, used])
        if not pairs.num_rows:
            return [None] * count
        con.register("_pairs", pairs)
        fetched = arrow(con.sql(f"""SELECT ord, clip_id, clip_embedding FROM read_parquet({index._listing('e')})
                                    WHERE ord IN (SELECT DISTINCT ord FROM _pairs) ORDER BY ord"""))
        con.unregister("_pairs")
        by_ord, names = fetched.column("ord").to_numpy(), fetched.column("clip_id").to_pylist()
        kept_units = _units(fetched.column("clip_embedding"), len(by_ord))
        pair_rows, pair_ords = pairs.column("row").to_numpy(), pairs.column("ord").to_numpy()
        at = np.searchsorted(by_ord, pair_ords)
        sims = _pair_sims(unit, pair_rows, kept_units, at)
        close = sims >= 1.0 - self.max_distance - EPS + SIMILARITY_MARGIN
        found: list[str | None] = [None] * count
        best: dict[int, tuple[float, int, int]] = {}  # row → (similarity, -ord, fetched row): earliest among equals
        for row, ord_, sim, k in zip(pair_rows[close], pair_ords[close], sims[close], at[close]):
            candidate = (float(sim), -int(ord_), int(k))
            if int(row) not in best or candidate[:2] > best[int(row)][:2]:
                best[int(row)] = candidate
        for row, (_, _, k) in best.items():
            found[row] = names[k]
        return found


    def _pairs(self, index: NearIndex, rows: np.ndarray, bands: np.ndarray, keys: np.ndarray) -> pa.Table:
        """(row, ord) of the query rows and the kept clips sharing MIN_SHARED_BANDS band keys, each pair once."""
        if self.kept * self.state["bands"] > KEY_CACHE_ROWS:  # a large index: joined in DuckDB, file by file
            con = self._con
            con.register("_query", pa.table({"row": rows, "band": bands.astype(np.int16), "key": keys}))
            pairs = arrow(con.sql(f"""SELECT q.row, k.ord FROM _query q JOIN
                                      read_parquet({index._listing('k')}) k ON k.band = q.band AND k.key = q.key
                                      GROUP BY ALL HAVING count(*) >= {MIN_SHARED_BANDS}"""))
            con.unregister("_query")
            return pairs
        if self._keys is None:  # once per worker process: the band tables, as sorted (band, key) codes
            table = arrow(self._con.sql(f"SELECT band, key, ord FROM read_parquet({index._listing('k')})"))
            codes = band_codes(table.column("band").to_numpy(), table.column("key").to_numpy())
            order = np.argsort(codes, kind="stable")
            self._keys = (codes[order], table.column("ord").to_numpy()[order])
        codes, ords = self._keys
        wanted = band_codes(bands, keys)
        lo, hi = np.searchsorted(codes, wanted, "left"), np.searchsorted(codes, wanted, "right")
        counts = hi - lo
        starts = np.repeat(lo - np.r_[0, np.cumsum(counts)[:-1]], counts)  # each match's offset into `codes`
        found, shared = np.unique(np.stack([np.repeat(rows, counts), ords[starts + np.arange(counts.sum())]], 1),
                                  axis=0, return_counts=True)
        found = found[shared >= MIN_SHARED_BANDS]
        return pa.table({"row": found[:, 0], "ord": found[:, 1]})


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
