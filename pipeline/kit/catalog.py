"""Synthetic outputs in the exact on-disk format a run writes, at any size, without videos or models.

Each wave's `videos` and `clips` tables are conformed to the catalog schemas
(plus clip_score/filter columns and a caption), staged and published through
`CommitLog.commit`, so records, the manifest and file names are what a run
makes. Embeddings are random unit vectors; `duplicates` plants near-copies of
earlier clips (of this call or of `planted_from`) so the near-duplicate pass
has known answers. Used by the scale benchmark and the catalog tests.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from pipeline.store.commit import CommitLog, WaveWriter
from pipeline.store.location import Location
from pipeline.store.ownership import claim_output
from schemas.catalog import CLIPS, VIDEOS, conform, extend

SCORES = (pa.field("clip_embedding", pa.list_(pa.float16())), pa.field("clip_aesthetic", pa.float32()),
          pa.field("clip_frame_consistency", pa.float32()), pa.field("clip_black", pa.float32()),
          pa.field("caption_dense", pa.string()))
CLIPS_SCHEMA = extend(CLIPS, SCORES)
KEEP = "clip_frame_consistency >= 0.5"


@dataclass
class Written:
    clips: int = 0
    waves: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)  # per wave, (clips, dim) float16, in clip order


def write_output(out: str | Path, run_id: str, waves: int, videos_per_wave: int, clips_per_video: int,
                 dim: int = 32, seed: int = 0, duplicates: float = 0.0, pool: np.ndarray | None = None,
                 source_prefix: str | None = None, stream: Callable[[pa.Table], pa.Table] | None = None) -> Written:
    """Commit `waves` waves of synthetic rows into OUT as run `run_id` (appending to what is there).

    `duplicates`: the share of clips that are near-copies (distance ~1e-4) of a clip drawn from `pool`
    (earlier vectors, e.g. a previous call's) or of an earlier clip of this call. `stream`: applied to each
    wave's clips before they are written, as the run's stages would be (e.g. the filter stage)."""
    out = Location.of(out)  # a folder, or a prefix on an object store
    claim_output(out)
    rng = np.random.default_rng(seed)
    writer, log = WaveWriter(str(out), CLIPS_SCHEMA), CommitLog(out)
    written = Written()
    earlier = [pool] if pool is not None and len(pool) else []
    prefix = source_prefix or f"synthetic://{run_id}"
    for w in range(waves):
        wave_id = f"{run_id}-{w:06d}"
        n = videos_per_wave * clips_per_video
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        copy = rng.random(n) < duplicates
        for row in np.flatnonzero(copy):
            candidates = earlier + ([vectors[:row]] if row else [])
            if not candidates:
                continue
            source = candidates[rng.integers(len(candidates))]
            if len(source):
                vectors[row] = source[rng.integers(len(source))] + rng.standard_normal(dim) * 1e-4
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors16 = vectors.astype(np.float16)
        uris = [f"{prefix}/w{w:06d}/v{v:04d}.mp4" for v in range(videos_per_wave)]
        video_ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, u)) for u in uris]
        videos = pa.table({"video_id": video_ids, "source_uri": uris, "status": ["ok"] * len(uris),
                           "fps": [24.0] * len(uris), "num_clips": pa.array([clips_per_video] * len(uris), pa.int32()),
                           "wave_id": [wave_id] * len(uris)})
        v_index = np.repeat(np.arange(videos_per_wave), clips_per_video)
        c_index = np.tile(np.arange(clips_per_video), videos_per_wave)
        start = c_index * 48
        clip_ids = [str(uuid.uuid5(uuid.UUID(video_ids[v]), f"{s}:{s + 48}")) for v, s in zip(v_index, start)]
        consistency = rng.random(n).astype(np.float32)
        clips = pa.table({
            "clip_id": clip_ids, "video_id": [video_ids[v] for v in v_index],
            "source_uri": [uris[v] for v in v_index], "clip_index": c_index.astype(np.int32),
            "scene_index": c_index.astype(np.int32), "start_frame": start, "end_frame": start + 48,
            "num_frames": np.full(n, 48), "start_s": start / 24.0, "end_s": (start + 48) / 24.0,
            "duration_s": np.full(n, 2.0), "fps": np.full(n, 24.0), "width": np.full(n, 320, np.int32),
            "height": np.full(n, 192, np.int32),
            "status": ["accepted" if c >= 0.5 else "rejected" for c in consistency],
            "reason": [None if c >= 0.5 else "filter:clip_frame_consistency" for c in consistency],
            "wave_id": [wave_id] * n,
            "clip_embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors16.reshape(-1)), dim)
                                .cast(pa.list_(pa.float16())),
            "clip_aesthetic": rng.uniform(3, 7, n).astype(np.float32), "clip_frame_consistency": consistency,
            "clip_black": np.zeros(n, np.float32),
            "caption_dense": [f"clip {i} of wave {w}" for i in range(n)],
        })
        if stream is not None:
            clips = stream(clips)
        files = [writer._write(wave_id, "catalog/videos", "videos", conform(videos, VIDEOS)),
                 writer._write(wave_id, "catalog/clips", "clips", conform(clips, CLIPS_SCHEMA))]
        log.commit(wave_id, run_id, uris, files, fingerprint="synthetic")
        earlier.append(vectors16)
        written.clips += n
        written.waves.append(wave_id)
        written.vectors.append(vectors16)
    return written
