"""The stream's snapshot of the near-duplicate index: the kept clips of the waves already decided.

The filter stage (stages/filter.py, `near_duplicate_streaming`) rejects a new clip against these
before caption/expand/encode spend work on it; `CommittedKept` says why such a rejection is the
end-of-run pass's own decision. It reads the index that pipeline/catalog/nearindex.py writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.catalog.bandjoin import band_codes
from pipeline.catalog.dedup import EPS, hyperplanes, unit_rows
from pipeline.catalog.nearindex import NearIndex, _pair_sims, _units
from pipeline.catalog.views import arrow, quiet_connection

KEY_CACHE_ROWS = 1 << 23  # band-table rows a stream worker holds in memory (128 MiB); above, DuckDB joins the files
# A pair sharing one band is mostly chance (bits are chosen for ~1 unrelated kept clip per bucket); near-
# duplicates share many (copies: nearly all). Two or more: few embeddings to fetch; a pair sharing only one
# is left to the end-of-run pass (fewer rejections in the stream are never wrong, only less saved).
MIN_SHARED_BANDS = 2
# The stream rejects only what the end-of-run pass provably rejects, so it keeps away from the two places
# where float rounding could make the two computations disagree:
SIGN_MARGIN = 1e-4  # a projection this close to 0 may flip sign in a matmul of another shape: band not used
SIMILARITY_MARGIN = 1e-4  # a pair this close to the threshold is left to the end-of-run pass


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
