"""Synthetic training shards in the real contract (schemas/shards.py), committed like a pipeline wave.

For tests, the loader benchmark and trying the trainer before any video is
encoded. Files are staged under `_staging/<wave>/`, then published by
`pipeline.store.commit.CommitLog.commit`, which renames them into `shards/` and
writes the `_commits/<wave>.json` record listing the `shards`, `shard_index`
and `shard_stats` tables — exactly what the loader reads.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store.commit import STAGING, CommitLog, _file_hash
from schemas.catalog import conform
from schemas.shards import LATENT_METADATA_KEY, SHARD_INDEX, SHARD_STATS, SHARDS

# The encode stage's `vidprep.latents` JSON (stages/models/vae.py VideoVAE.metadata() plus stages/encode.py's keys).
DEFAULT_META = {"vae": "synthetic", "vae_class": "AutoencoderKL", "scaling_factor": 1.0, "shift_factor": 0.0,
                "spatial_stride": 8, "temporal_stride": 1, "latent_channels": 4, "latents_mean": None,
                "latents_std": None, "normalised": True, "latent_dtype": "float16", "text_encoder": "synthetic",
                "text_kind": "t5", "text_dtype": "float16", "target_fps": 8.0}


def smooth_latent(rng: np.random.Generator, shape: tuple[int, ...], i: int) -> np.ndarray:
    """A latent with structure: a few random low-frequency waves per channel, plus a little noise."""
    c, t, h, w = shape
    grid = np.stack(np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij"), -1)  # (T, H, W, 3)
    freqs = rng.normal(0, 0.5, (c, 3, 3))
    phase = rng.uniform(0, 2 * np.pi, (c, 3))
    waves = np.sin(np.einsum("thwk,cjk->cjthw", grid, freqs) + phase[:, :, None, None, None]).sum(1)
    return (waves / np.sqrt(3) + 0.1 * rng.normal(size=shape)).astype(np.float32)


def write_shards(out: str | Path, buckets: dict[str, tuple[int, int, int, int]], rows: int | dict[str, int],
                 *, seed: int = 0, row_group_rows: int = 8, text_dim: int = 32, text_tokens: tuple[int, int] = (3, 12),
                 latent_dtype: str = "float16", meta: dict[str, Any] | None = None, wave_id: str = "w000000",
                 latent_fn: Callable[[np.random.Generator, tuple, int], np.ndarray] = smooth_latent,
                 files_per_bucket: int = 1) -> dict[str, Any]:
    """Write `rows` clips per bucket ({name: latent shape (C, T, H, W)}) and commit them as one wave."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    meta = {**DEFAULT_META, **(meta or {}), "latent_dtype": latent_dtype}
    stage = out / STAGING / wave_id
    files, index_parts, stats_parts = [], [], []
    for bucket, shape in sorted(buckets.items()):
        count = rows[bucket] if isinstance(rows, dict) else rows
        frames, height, width = (int(v) for v in bucket.split("x"))
        made = [_row(rng, bucket, shape, i, seed, wave_id, text_dim, text_tokens, latent_dtype, latent_fn,
                     (frames, height, width)) for i in range(count)]
        records = [record for record, _ in made]
        for part, chunk in enumerate(np.array_split(np.arange(count), files_per_bucket)):
            if not len(chunk):
                continue
            table = conform(pa.Table.from_pylist([records[i] for i in chunk]), SHARDS)
            table = table.replace_schema_metadata({**SHARDS.metadata, LATENT_METADATA_KEY: json.dumps(meta).encode()})
            rel = f"shards/{bucket}/part-{part:04d}.parquet"
            files.append(_stage(stage, rel, table, "shards", row_group_rows, ["latent", "latent_logvar", "text_long", "text_short"]))
            final = f"shards/{bucket}/{wave_id}-part-{part:04d}.parquet"
            positions = np.arange(table.num_rows)
            index_parts.append(pa.table({
                "clip_id": table.column("clip_id"), "bucket": table.column("bucket"),
                "file": pa.array([final] * table.num_rows), "row_group": pa.array(positions // row_group_rows, pa.int32()),
                "row": pa.array(positions % row_group_rows, pa.int32()), "latent_shape": table.column("latent_shape"),
                "wave_id": table.column("wave_id")}))
        if count:
            latents = np.stack([latent for _, latent in made]).astype(np.float64)  # (rows, C, T, H, W) as stored
            per_channel = latents.transpose(1, 0, 2, 3, 4).reshape(shape[0], -1)  # (C, rows*T*H*W)
            stats_parts.append(pa.table({
                "bucket": [bucket] * shape[0], "channel": pa.array(range(shape[0]), pa.int32()),
                "count": pa.array([per_channel.shape[1]] * shape[0], pa.int64()), "sum": per_channel.sum(1),
                "sum_sq": (per_channel ** 2).sum(1), "wave_id": [wave_id] * shape[0]}))
    files.append(_stage(stage, "shards/_index/part-0000.parquet", conform(pa.concat_tables(index_parts), SHARD_INDEX),
                        "shard_index", 1 << 20, []))
    if stats_parts:
        files.append(_stage(stage, "shards/_stats/part-0000.parquet", conform(pa.concat_tables(stats_parts), SHARD_STATS),
                            "shard_stats", 1 << 20, []))
    return CommitLog(out).commit(wave_id, run_id="synthetic", sources=[f"synthetic://{wave_id}"], files=files,
                                 fingerprint="synthetic")


def _row(rng, bucket, shape, i, seed, wave_id, text_dim, text_tokens, latent_dtype, latent_fn, pixels):
    latent = latent_fn(rng, shape, i).astype(np.float32)
    if latent_dtype == "bfloat16":
        bits = (latent.view(np.uint32) >> 16).astype(np.uint16)  # truncation to bfloat16
        raw, latent = bits.tobytes(), (bits.astype(np.uint32) << 16).view(np.float32)
    else:
        raw = latent.astype(latent_dtype).tobytes()
        latent = latent.astype(latent_dtype)
    video_id = hashlib.blake2b(f"{seed}-{bucket}-{i}".encode(), digest_size=16).hexdigest()
    texts = {}
    for name in ("long", "short"):
        length = int(rng.integers(text_tokens[0], text_tokens[1] + 1)) if name == "long" else int(text_tokens[0])
        texts[name] = rng.normal(size=(length, text_dim)).astype(np.float16)
    return {
        "clip_id": str(uuid.uuid5(uuid.NAMESPACE_URL, video_id)), "video_id": video_id,
        "source_uri": f"synthetic://{bucket}/{i}", "bucket": bucket, "latent": raw, "latent_shape": list(shape),
        "latent_dtype": latent_dtype, "text_long": texts["long"].tobytes(), "text_long_shape": list(texts["long"].shape),
        "text_short": texts["short"].tobytes(), "text_short_shape": list(texts["short"].shape), "text_dtype": "float16",
        "caption_long": f"a long synthetic caption number {i} of bucket {bucket}",
        "caption_short": f"clip {i}", "fps": 24.0, "num_frames": pixels[0], "height": pixels[1], "width": pixels[2],
        "wave_id": wave_id,
    }, latent


def _stage(stage: Path, rel: str, table: pa.Table, name: str, row_group_rows: int, raw_columns: list[str]) -> dict:
    path = stage / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    compression = {c: ("none" if c in raw_columns else "zstd") for c in table.column_names}
    pq.write_table(table, path, row_group_size=row_group_rows, compression=compression, use_dictionary=False)
    return {"path": rel, "table": name, "rows": table.num_rows, "bytes": path.stat().st_size, "blake2b": _file_hash(path)}
