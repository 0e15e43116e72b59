"""Schemas of the training shards: `shards/<bucket>/part-*.parquet`, their index and latent statistics.

Tensors are raw C-order bytes in a `binary` column plus a shape column: read
back with `np.frombuffer(b, dtype).reshape(shape)` (zero-copy). fixed_shape_tensor
and list<float16> read ~7x slower (measured: 2.3-3.1 GB/s vs 0.25-0.44 GB/s), and
zstd on latents saved 8% while reading 3-4x slower, so tensor columns are
stored uncompressed. File-level metadata (key `vidprep.latents`, JSON) names
the VAE (id, class, revision), its scaling/shift factors and the text encoder.
"""
from __future__ import annotations

import pyarrow as pa

from schemas.catalog import SCHEMA_VERSION

SHAPE = pa.list_(pa.int32())

SHARDS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("bucket", pa.string(), nullable=False),  # "<frames>x<height>x<width>" in pixels
        pa.field("latent", pa.binary(), nullable=False),  # VAE posterior mean, C-order
        pa.field("latent_shape", SHAPE, nullable=False),  # (C, T, H, W); images: T = 1
        pa.field("latent_dtype", pa.string(), nullable=False),  # float16 | bfloat16 | float32
        pa.field("latent_logvar", pa.binary()),  # optional, same shape and dtype
        pa.field("text_long", pa.binary()),  # unpadded token embeddings of caption_long, (L, D)
        pa.field("text_long_shape", SHAPE),
        pa.field("text_short", pa.binary()),  # of caption_short, (L, D)
        pa.field("text_short_shape", SHAPE),
        pa.field("text_dtype", pa.string()),
        pa.field("caption_long", pa.string()),
        pa.field("caption_short", pa.string()),
        pa.field("fps", pa.float64(), nullable=False),  # of the sampled frames
        pa.field("num_frames", pa.int32(), nullable=False),  # pixel frames encoded
        pa.field("height", pa.int32(), nullable=False),  # pixel size encoded (the bucket's)
        pa.field("width", pa.int32(), nullable=False),
        pa.field("wave_id", pa.string(), nullable=False),
    ],
    metadata={"vidprep.table": "shards", "vidprep.schema_version": SCHEMA_VERSION},
)

# One row per shard row: the loader plans batches from this alone, without opening shards.
SHARD_INDEX = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("bucket", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),  # relative to the output folder
        pa.field("row_group", pa.int32(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),  # within the row group
        pa.field("latent_shape", SHAPE, nullable=False),
        pa.field("wave_id", pa.string(), nullable=False),
    ],
    metadata={"vidprep.table": "shard_index", "vidprep.schema_version": SCHEMA_VERSION},
)

# Per wave, bucket and latent channel: sums for the dataset's mean and std (combined across waves).
SHARD_STATS = pa.schema(
    [
        pa.field("bucket", pa.string(), nullable=False),
        pa.field("channel", pa.int32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),  # latent elements summed
        pa.field("sum", pa.float64(), nullable=False),
        pa.field("sum_sq", pa.float64(), nullable=False),
        pa.field("wave_id", pa.string(), nullable=False),
    ],
    metadata={"vidprep.table": "shard_stats", "vidprep.schema_version": SCHEMA_VERSION},
)

LATENT_METADATA_KEY = b"vidprep.latents"
