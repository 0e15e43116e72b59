"""The near-duplicate index's band tables, held by Ray actors for one pass (pipeline/catalog/nearindex.py).

Why: joining a batch's keys with the band tables in DuckDB scans every key file, once per batch, so
a pass over N clips in batches of B costs O(N^2 / B) in scans (12 s of a 43 s pass at 1M clips, measured;
~100x that at 10M, against ~10x for everything else the pass does).
Here the tables are loaded once per pass, partitioned by band over P actors (actor p owns the bands
with band % P == p), each holding its bands' (band, key) → ord entries as sorted int64 codes; a
batch's lookup is a binary search per query key, on P workers at once.

    driver                                        actor p (bands p, p+P, ...)
    start: key files (names only) ─────────────►  reads its bands from the files (row groups pruned
                                                  by band: the files are sorted by (band, key))
    per batch: keys[:, its bands] ─────────────►  (row, ord) of every (band, key) match, each once
    after the batch: kept clips' keys, ords ───►  a new sorted run (runs merged as they grow)

The driver holds one batch and its candidate pairs, never the tables. The Parquet files stay the
durable index (written per flush as before): the actors are a cache of them, killed with the pass.
A pair found here is a pair the DuckDB join finds (same tables, same equality on (band, key)), so
the decisions are the same. An actor that dies fails the pass (nothing is published), never a
decision: a rerun starts again from the last published index.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np

ACTOR_CPUS = 0.5  # a lookup is a short burst of numpy work; the rest of the time an actor holds memory
# When the actors pay (docs/BENCHMARKS.md "Catalog at scale", 2 busy cores): the DuckDB join costs ~0.12 s x B^2
# over a pass of B batches of 100k clips (it rescans a growing index), the actors ~1.3 s to start and ~0.4 s per
# batch; at 1M clips (B = 10) with Ray up they were 1.01-1.16x the join. Starting an embedded Ray adds ~5 s.
FROM_BATCHES = 10  # with Ray up
START_FROM_BATCHES = 20  # with Ray to start or join first
ROW_SHIFT = 34  # a pair travels as one int64: row << ROW_SHIFT | ord (ords below 2**34, rows below 2**29)


class BandShard:
    """One actor's share of the band tables: sorted runs of (band << 32 | key) codes and their ords."""

    def __init__(self, source: str, files: list[str], bands: list[int]):
        from pipeline.store.location import Location

        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        self.bands = np.asarray(bands, np.int64)
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []
        loc = Location.of(source)
        wanted = pc.field("band").isin(self.bands.astype(np.int16))
        for rel in files:  # each file is sorted by (band, key): its filtered rows are one sorted run
            table = ds.dataset(loc.full(rel), format="parquet", **loc.filesystem).to_table(
                columns=["band", "key", "ord"], filter=wanted)
            codes = band_codes(table.column("band").to_numpy(), table.column("key").to_numpy())
            self._push(codes, table.column("ord").to_numpy().astype(np.int64))

    def size(self) -> int:
        return sum(len(codes) for codes, _ in self.runs)

    def add(self, keys: np.ndarray, ords: np.ndarray) -> None:
        """(k, my bands) keys of newly kept clips with their (k,) ords."""
        codes = band_codes(np.broadcast_to(self.bands, keys.shape), keys).reshape(-1)
        order = np.argsort(codes, kind="stable")
        self._push(codes[order], np.repeat(ords, len(self.bands))[order])

    def pairs(self, keys: np.ndarray) -> np.ndarray:
        """(n, my bands) query keys → the distinct (row << ROW_SHIFT | ord) of every match."""
        wanted = band_codes(np.broadcast_to(self.bands, keys.shape), keys).reshape(-1)
        order = np.argsort(wanted)  # sorted needles: each binary search starts where the last one ended
        wanted, rows = wanted[order], order // len(self.bands)
        found = [np.empty(0, np.int64)]
        for codes, ords in self.runs:
            lo, hi = np.searchsorted(codes, wanted, "left"), np.searchsorted(codes, wanted, "right")
            counts = hi - lo
            offsets = np.repeat(lo - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(counts.sum())
            found.append((np.repeat(rows, counts) << ROW_SHIFT) | ords[offsets])
        return _distinct(np.concatenate(found))

    def _push(self, codes: np.ndarray, ords: np.ndarray) -> None:
        """Append a sorted run; merge the last two while the older is under twice the newer (a few runs,
        each entry merged O(log N) times over the pass)."""
        if len(codes):
            self.runs.append((codes, ords))
        while len(self.runs) > 1 and len(self.runs[-2][0]) < 2 * len(self.runs[-1][0]):
            (a, a_ords), (b, b_ords) = self.runs.pop(-2), self.runs.pop(-1)
            codes, ords = np.concatenate([a, b]), np.concatenate([a_ords, b_ords])
            order = np.argsort(codes, kind="stable")  # two sorted runs: timsort merges them in linear time
            self.runs.append((codes[order], ords[order]))


class BandJoin:
    """The driver's handle on the actors: what NearIndex calls instead of the DuckDB join."""

    def __init__(self, actors: list, bands: int):
        self.actors, self.bands = actors, bands
        self._pending: list = []  # add() calls not yet waited on (an actor runs its calls in order)

    @classmethod
    def start(cls, source: str, files: list[str], bands: int, workers: int | None = None) -> "BandJoin":
        """P = `workers` actors (default: min(bands, the cluster's CPUs)), each loading its bands of the
        key files `files` (relative to `source`, the output: a folder every node sees, or a store)."""
        import ray

        from pipeline.store.location import Location

        source = Location.of(source).uri()  # absolute, or the store's URI with its endpoint: actors run elsewhere
        if workers is None:
            workers = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, min(bands, workers))
        remote = ray.remote(num_cpus=ACTOR_CPUS, max_restarts=0)(BandShard)
        actors = [remote.remote(source, files, list(range(p, bands, workers))) for p in range(workers)]
        join = cls(actors, bands)
        join._get([a.size.remote() for a in actors])  # loaded (or failed) before the first batch
        return join

    def size(self) -> int:
        """Band-table entries held by the actors (kept clips × bands)."""
        return sum(self._get([a.size.remote() for a in self.actors]))

    def pairs(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, bands) query keys → (rows, ords) of the kept clips sharing a band key with a row, each once."""
        import ray

        workers = len(self.actors)
        found = self._get([a.pairs.remote(ray.put(np.ascontiguousarray(keys[:, p::workers])))
                           for p, a in enumerate(self.actors)])
        both = _distinct(np.concatenate(found))
        return both >> ROW_SHIFT, both & ((1 << ROW_SHIFT) - 1)

    def add(self, keys: np.ndarray, ords: np.ndarray) -> None:
        """(k, bands) keys of newly kept clips and their ords: candidates of the next batches."""
        workers = len(self.actors)
        self._pending += [a.add.remote(np.ascontiguousarray(keys[:, p::workers]), ords)
                          for p, a in enumerate(self.actors)]

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors, self._pending = [], []

    def _get(self, refs: list) -> list:
        import ray

        try:
            ray.get(self._pending)
            self._pending = []
            return ray.get(refs)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as err:
            raise RuntimeError("near-duplicate pass: a band-table actor was lost "
                               f"({type(err).__name__}); nothing was published, run the command again") from err


@contextlib.contextmanager
def band_actors(source: str, index, batches: int, start_ray: Callable[[], None] | None = None,
                workers: int | None = None) -> Iterator[BandJoin | None]:
    """Band actors for `index` (a NearIndex) over a pass of `batches` batches, or None: the DuckDB join.

    Actors when the pass has FROM_BATCHES batches or more and Ray is up, or START_FROM_BATCHES batches and
    `start_ray` (embedded, or joining the user's cluster) is given; `workers=0` never, `workers=P` P actors
    whenever Ray is up or startable. One batch (an ordinary end-of-run pass) scans the tables once either
    way, so it keeps the join. The actors are killed, and a Ray started here stopped, when the pass ends."""
    if index is None or workers == 0 or (workers is None and batches < FROM_BATCHES):
        yield None  # without importing Ray (a second at start)
        return
    import ray

    up = ray.is_initialized()
    if not up and not (start_ray and (workers or batches >= START_FROM_BATCHES)):
        yield None
        return
    if not up:
        start_ray()
    join = None
    try:
        join = BandJoin.start(source, index.key_files(), index.bands, workers)
        index.band_join = join
        yield join
    finally:
        index.band_join = None
        if join is not None:
            with contextlib.suppress(Exception):
                join.close()
        if not up and ray.is_initialized():
            ray.shutdown()


def band_codes(bands: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(band, key) → one sortable int64 (keys have at most 24 bits)."""
    return (bands.astype(np.int64) << 32) | keys.astype(np.int64)


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique hashes int64 since numpy 2.3: 10x slower than a sort here)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values
