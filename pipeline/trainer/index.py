"""The committed shard index, read once: rows, buckets, latent statistics, VAE metadata, hash.

Only files that `_commits/*.json` records list are read (pipeline.store.commit): the
`shard_index` table says where every training row lives (file, row group, row)
and its latent shape, so the loader plans whole epochs without opening a
shard. `shard_stats` gives per-channel mean and std; the first shard's footer
gives the `vidprep.latents` metadata (VAE and text encoder). The hash covers
every row's place and id: a checkpoint records it, and resuming on other data
is refused unless asked for.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.store.commit import COMMITS, CommitLog
from pipeline.store.location import Location, is_remote
from schemas.catalog import validate
from schemas.shards import LATENT_METADATA_KEY, SHARD_INDEX


def resolve_output(path: str | Path):
    """The pipeline output folder for `--data`: OUT itself, or OUT/shards (as DESIGN.md writes it); on an
    object store, its Location (pipeline/store/location.py)."""
    if is_remote(path):
        loc = Location.of(path)
        parts = urlparse(loc.uri_root)
        parent = parts._replace(path=parts.path.rstrip("/").rsplit("/", 1)[0]).geturl()
        for candidate in (loc, Location.of(parent) if loc.root.endswith("/shards") else None):
            if candidate is not None and COMMITS in candidate.names():
                return candidate
        raise FileNotFoundError(f"{path}: not a vidprep output (no {COMMITS}/ records here or one level up)")
    path = Path(path)
    for candidate in (path, path.parent):
        if (candidate / COMMITS).is_dir():
            return candidate
    raise FileNotFoundError(f"{path}: not a vidprep output folder (no {COMMITS}/ records here or one level up)")


@dataclass
class ShardIndex:
    out: Path
    files: list[str]  # shard files, relative to out, sorted
    file_id: np.ndarray  # (R,) int32, per row: position in files
    row_group: np.ndarray  # (R,) int32
    row: np.ndarray  # (R,) int32, within the row group
    clip_id: pa.StringArray  # (R,)
    key: np.ndarray  # (R,) int32: position in keys
    keys: list[tuple[str, tuple[int, ...]]]  # (bucket, latent_shape (C, T, H, W)), sorted
    meta: dict[str, Any] = field(default_factory=dict)  # the `vidprep.latents` JSON
    channel_mean: list[float] | None = None
    channel_std: list[float] | None = None
    hash: str = ""
    text_dim: int = -1  # E; -1 until pipeline.trainer.loader.text_dim reads it

    def __len__(self) -> int:
        return len(self.clip_id)

    @property
    def channels(self) -> int:
        return self.keys[0][1][0]

    @classmethod
    def open(cls, path: str | Path) -> "ShardIndex":
        out = resolve_output(path)
        log = CommitLog(out)
        index_files = log.files("shard_index")
        if not index_files:
            raise FileNotFoundError(f"{out}: the commit records list no shard_index files (run the encode stage first)")
        loc = Location.of(out)
        table = pa.concat_tables([pq.read_table(loc.full(f), schema=SHARD_INDEX, **loc.filesystem)
                                  for f in log.files("shard_index", relative=True)])
        validate(table, SHARD_INDEX)
        table = table.sort_by([("file", "ascending"), ("row_group", "ascending"), ("row", "ascending")])
        if table.num_rows == 0:
            raise ValueError(f"{out}: the shard index has no rows")
        committed = set(log.files("shards", relative=True))
        files = pc.unique(table.column("file")).to_pylist()
        missing = [f for f in files if f not in committed]
        if missing:
            raise ValueError(f"{out}: the shard index names {len(missing)} file(s) no commit record lists, e.g. {missing[0]}")
        file_id = pc.index_in(table.column("file"), pa.array(files)).to_numpy().astype(np.int32)
        lengths = pc.list_value_length(table.column("latent_shape")).to_numpy()
        if (lengths != 4).any():
            raise ValueError(f"{out}: latent_shape must be (C, T, H, W) (found lengths {sorted(set(lengths.tolist()))})")
        shapes = pc.list_flatten(table.column("latent_shape")).to_numpy().reshape(-1, 4)  # (R, 4)
        buckets = pc.dictionary_encode(table.column("bucket")).combine_chunks()
        names = buckets.dictionary.to_pylist()
        rank = np.argsort(np.argsort(names))  # dictionary position → sorted position
        combined = np.concatenate([rank[buckets.indices.to_numpy()][:, None], shapes], axis=1)  # (R, 5)
        unique, key = np.unique(combined, axis=0, return_inverse=True)
        keys = [(sorted(names)[u[0]], tuple(int(v) for v in u[1:])) for u in unique]
        if len({shape[0] for _, shape in keys}) != 1:
            raise ValueError(f"{out}: the latents have different channel counts ({sorted({s for _, s in keys})})")
        index = cls(out=out, files=files, file_id=file_id,
                    row_group=table.column("row_group").to_numpy().astype(np.int32),
                    row=table.column("row").to_numpy().astype(np.int32),
                    clip_id=table.column("clip_id").combine_chunks(),
                    key=key.reshape(-1).astype(np.int32), keys=keys)
        index.meta = read_latent_metadata(loc, files[0])
        index.channel_mean, index.channel_std = channel_stats(
            [loc.full(f) for f in log.files("shard_stats", relative=True)], index.channels, loc)
        index.hash = index.compute_hash()
        return index

    def compute_hash(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(json.dumps([self.files, [[b, list(s)] for b, s in self.keys]]).encode())
        for array in (self.file_id, self.row_group, self.row, self.key):
            digest.update(np.ascontiguousarray(array).tobytes())
        offsets, data = self.clip_id.buffers()[1:]
        offsets = np.frombuffer(offsets, np.int32)[self.clip_id.offset:self.clip_id.offset + len(self) + 1]
        digest.update((offsets - offsets[0]).tobytes())
        digest.update(memoryview(data)[offsets[0]:offsets[-1]])
        return digest.hexdigest()

    def bucket_table(self) -> list[dict[str, Any]]:
        """Buckets with their latent shapes and row counts (recorded in checkpoints for sampling)."""
        counts = np.bincount(self.key, minlength=len(self.keys))
        return [{"bucket": b, "latent_shape": list(s), "rows": int(n)} for (b, s), n in zip(self.keys, counts)]


def read_latent_metadata(loc: Location, rel: str) -> dict[str, Any]:
    metadata = pq.read_schema(loc.full(rel), **loc.filesystem).metadata or {}
    raw = metadata.get(LATENT_METADATA_KEY)
    return json.loads(raw) if raw else {}


def channel_stats(stats_files: list[str], channels: int, loc: Location | None = None
                  ) -> tuple[list[float] | None, list[float] | None]:
    """Per-channel mean and std over every committed wave and bucket (None without stats)."""
    if not stats_files:
        return None, None
    fs_args = loc.filesystem if loc is not None else {}
    table = pa.concat_tables([pq.read_table(f, columns=["channel", "count", "sum", "sum_sq"], **fs_args)
                              for f in stats_files])
    grouped = table.group_by("channel").aggregate([("count", "sum"), ("sum", "sum"), ("sum_sq", "sum")]).sort_by("channel")
    channel = grouped.column("channel").to_pylist()
    if channel != list(range(channels)):
        raise ValueError(f"shard_stats covers channels {channel}, the latents have {channels}")
    count = grouped.column("count_sum").to_numpy().astype(np.float64)
    mean = grouped.column("sum_sum").to_numpy() / count
    var = np.maximum(grouped.column("sum_sq_sum").to_numpy() / count - mean ** 2, 0.0)
    return mean.tolist(), [max(math.sqrt(v), 1e-6) for v in var]
