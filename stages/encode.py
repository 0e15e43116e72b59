"""Stage `encode` (1:1 clip → clip + latents, GPU actor): VAE latents and text embeddings for training.

Accepted clips only: each goes to its bucket (`_buckets`), FFmpeg decodes just
the frames it needs at the bucket's resize size, seeking to the clip's first
frame by the presentation time split recorded (`stages/video/decode.py`: frame
k is split's frame k on every container). A batch's clips are read source by
source, each source copied and opened once and its spans decoded in one pass;
with `prefetch`, that decoding runs in a thread one group ahead, so the VAE
encodes group i while group i+1 decodes (the time the VAE waited on frames is
logged per group and summed in `input_wait_s`). A diffusers VAE encodes
same-bucket clips in groups of `clips_per_batch`, and the normalised posterior mean (log-variance
optional) leaves as raw C-order bytes plus a shape. caption_long/caption_short,
when an earlier stage wrote them, are embedded by the configured text encoder.
A clip shorter than every bucket is rejected (`too_short_for_bucket`); one
that fails to decode becomes status `error` (`encode_failed: …`).
"""
from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa

from stages.video.buckets import Bucket, assign, centre_crop, frame_indices, parse_ratio, resize_for
from stages.video.decode import SpanRequest, ahead, anchor_of, read_grouped
from stages.video.source import SourceError
from stages.base import Stage, require

log = logging.getLogger(__name__)

SHAPE = pa.list_(pa.int32())
OUTPUTS = pa.schema([
    ("bucket", pa.string()), ("latent", pa.binary()), ("latent_shape", SHAPE), ("latent_dtype", pa.string()),
    ("latent_logvar", pa.binary()), ("text_long", pa.binary()), ("text_long_shape", SHAPE),
    ("text_short", pa.binary()), ("text_short_shape", SHAPE), ("text_dtype", pa.string()),
    ("enc_fps", pa.float64()), ("enc_num_frames", pa.int32()), ("enc_height", pa.int32()), ("enc_width", pa.int32()),
    ("latent_meta", pa.string()),  # JSON: VAE id/class/factors, text encoder; becomes shard file metadata
])


@dataclass
class Encode(Stage):
    name = "encode"
    gpu_cost = 2.0  # one VAE forward over the clip at its bucket size, plus the text encoder
    inputs = ("clip_id", "status", "start_frame", "end_frame", "fps", "width", "height", "video")
    outputs = tuple(OUTPUTS.names)
    catalog_fields = (pa.field("bucket", pa.string()), pa.field("latent_shape", SHAPE),
                      pa.field("vae_id", pa.string()), pa.field("vae_scaling_factor", pa.float64()),
                      pa.field("vae_shift_factor", pa.float64()))

    vae: str = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"  # hub id or local directory
    vae_subfolder: str | None = "vae"
    vae_kind: Literal["auto", "kl", "wan", "cogvideox", "hunyuan", "ltx"] = "wan"
    vae_revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # VAE compute; auto: the family's (vae.py)
    latent_dtype: Literal["float16", "bfloat16", "float32"] = "float16"  # storage
    store_logvar: bool = False
    tiling: bool = False  # bound VAE memory on large buckets
    resolutions: list[int] = field(default_factory=lambda: [256])  # pixel budgets: area of a side² square
    aspect_ratios: list[str] = field(default_factory=lambda: ["9:16", "3:4", "1:1", "4:3", "16:9"])
    frame_counts: list[int] = field(default_factory=lambda: [17, 33, 49])  # 4k+1 for Wan's causal VAE
    target_fps: float = 8.0
    patch_size: int = 2  # the DiT's spatial patch: bucket sides are multiples of VAE stride × patch
    clips_per_batch: int = 4
    prefetch: bool = True  # decode the next group in a thread while the VAE encodes this one
    decode_stall_s: float = 120.0  # a clip's decode with no result for this long: `encode_failed: decode_stalled`
    text_encoder: str | None = "google/t5-v1_1-xxl"  # None: no text embeddings
    text_kind: Literal["t5", "clip"] = "t5"
    text_subfolder: str | None = None  # e.g. text_encoder in a diffusers repo
    text_revision: str | None = None
    text_encoder_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # compute: bf16 on GPU
    text_max_tokens: int = 226
    text_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    trust_remote_code: bool = False

    def __post_init__(self):
        for ratio in self.aspect_ratios:
            try:
                parse_ratio(ratio)
            except ValueError as err:
                raise ValueError(f"aspect_ratios: {err}") from None
        require(bool(self.aspect_ratios), "aspect_ratios", "must name at least one ratio")
        require(bool(self.resolutions) and min(self.resolutions) >= 16, "resolutions", "must be >= 16 each")
        require(bool(self.frame_counts) and min(self.frame_counts) >= 1, "frame_counts", "must be >= 1 each")
        require(self.target_fps > 0, "target_fps", f"must be > 0 (got {self.target_fps})")
        require(self.patch_size >= 1, "patch_size", f"must be >= 1 (got {self.patch_size})")
        require(self.decode_stall_s > 0, "decode_stall_s", f"must be > 0 (got {self.decode_stall_s})")
        require(self.clips_per_batch >= 1, "clips_per_batch", f"must be >= 1 (got {self.clips_per_batch})")
        require(self.text_max_tokens >= 1, "text_max_tokens", f"must be >= 1 (got {self.text_max_tokens})")

    def setup(self) -> None:
        from stages.models.generate import visible
        from stages.models.loading import device_for, dtype_for, hub_revision
        from stages.models.text_encoder import TextEncoder
        from stages.models.vae import VideoVAE

        self.device = device_for(self.resources, self.name)
        self.vae_revision = hub_revision(self.vae, self.vae_revision)  # recorded in latent_meta: None for a folder
        self.text_revision = hub_revision(self.text_encoder, self.text_revision)
        vae_dtype = None if self.dtype == "auto" else dtype_for(self.dtype, self.device)  # None: the family's
        self.model = VideoVAE.load(self.vae, self.vae_kind, self.device, vae_dtype, self.vae_subfolder,
                                   self.vae_revision, tiling=self.tiling)
        bad = [n for n in self.frame_counts if not self.model.valid_frame_count(n)]
        require(not bad, "frame_counts", f"{bad} not 1 + k·{self.model.temporal_stride} for {self.model.class_name}")
        self.text = (TextEncoder.load(self.text_encoder, self.text_kind, self.device,
                                      dtype_for(self.text_encoder_dtype, self.device), self.text_max_tokens,
                                      revision=self.text_revision, trust_remote_code=self.trust_remote_code,
                                      subfolder=self.text_subfolder) if self.text_encoder else None)
        meta = self.model.metadata()
        meta.update(latent_dtype=self.latent_dtype, vae_subfolder=self.vae_subfolder, vae_revision=self.vae_revision,
                    text_encoder=self.text_encoder, text_kind=self.text_kind, text_max_tokens=self.text_max_tokens,
                    text_subfolder=self.text_subfolder, text_revision=self.text_revision,
                    text_dtype=self.text_dtype if self.text else None, target_fps=self.target_fps)
        self.meta_json = json.dumps(meta, sort_keys=True)
        self.input_wait_s = 0.0  # seconds the VAE waited for decoded frames, over this worker's life
        visible(log)  # the per-group line (VAE time, wait on frames) reaches the driver from a Ray actor

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_inputs(batch)
        rows = batch.select(list(self.inputs) + [c for c in ("start_s",) if c in batch.column_names]).to_pylist()
        out: list[dict[str, Any]] = [{} for _ in rows]
        status = batch.column("status").to_pylist()
        reason = batch.column("reason").to_pylist() if "reason" in batch.column_names else [None] * len(rows)
        buckets: dict[int, Bucket] = {}
        for i in self.accepted(batch):
            bucket = self.bucket_of(rows[i])
            if bucket is None:
                status[i], reason[i] = "rejected", "too_short_for_bucket"
            else:
                buckets[i] = bucket
        groups = self.decoded_groups(rows, buckets, status, reason)
        if self.prefetch:
            groups = ahead(groups, depth=1)
        try:
            while True:
                waited = time.perf_counter()
                group = next(groups, None)
                waited = time.perf_counter() - waited
                if group is None:
                    break
                self.input_wait_s += waited
                started = time.perf_counter()
                self._encode_group(*group, out)
                log.info("encode: %d clips at %s: VAE %.3f s, waited %.3f s on frames",
                         len(group[1]), group[0].name, time.perf_counter() - started, waited)
        finally:
            groups.close()  # a VAE error: the prefetching thread stops instead of decoding on
        self._embed_captions(batch, out)
        result = batch.drop_columns([c for c in ("status", "reason") if c in batch.column_names])
        result = result.append_column("status", pa.array(status, pa.string()))
        result = result.append_column("reason", pa.array(reason, pa.string()))
        for f in OUTPUTS:
            result = result.append_column(f, pa.array([o.get(f.name) for o in out], f.type))
        meta = self.model.metadata()
        for name, value in (("vae_id", self.vae), ("vae_scaling_factor", meta["scaling_factor"]),
                            ("vae_shift_factor", meta["shift_factor"])):
            result = result.append_column(name, pa.array([value if o else None for o in out]))
        return result

    def bucket_of(self, row: dict[str, Any]) -> Bucket | None:
        duration = (row["end_frame"] - row["start_frame"]) / row["fps"]
        return assign(row["width"], row["height"], duration, resolutions=self.resolutions,
                      ratios=[parse_ratio(r) for r in self.aspect_ratios], frame_counts=self.frame_counts,
                      target_fps=self.target_fps, multiple=self.model.spatial_stride * self.patch_size)

    def decoded_groups(self, rows: list[dict[str, Any]], buckets: dict[int, Bucket], status: list, reason: list
                       ) -> Iterator[tuple[Bucket, list[int], list[np.ndarray]]]:
        """(bucket, row numbers, (T, H, W, 3) uint8 pixels) groups of at most `clips_per_batch` same-bucket
        clips, each source read once; a clip that fails to decode becomes status `error` instead.

        The groups depend only on the rows (sources in order of first appearance, spans in frame order),
        so the prefetching and the plain path encode exactly the same groups.
        """
        requests = []
        for i, bucket in buckets.items():
            row = rows[i]
            width, height = resize_for(row["width"], row["height"], bucket)  # display orientation, as decoded
            indices = frame_indices(row["start_frame"], row["end_frame"], row["fps"], bucket.frames, self.target_fps)
            requests.append((row["video"], SpanRequest(i, indices, width, height, anchor_of(row))))
        pending: dict[Bucket, tuple[list[int], list[np.ndarray]]] = {}
        threads = max(1, int(self.resources.cpus))
        for request, frames in read_grouped(requests, threads, self.decode_stall_s):
            i = request.key
            if isinstance(frames, Exception):
                status[i], reason[i] = "error", f"encode_failed: {_failure(frames)}"
                continue
            bucket = buckets[i]
            members, pixels = pending.setdefault(bucket, ([], []))
            members.append(i)
            pixels.append(np.ascontiguousarray(centre_crop(frames, bucket)))
            if len(members) == self.clips_per_batch:
                yield bucket, *pending.pop(bucket)
        for bucket, (members, pixels) in pending.items():
            yield bucket, members, pixels

    def _pixels(self, row: dict[str, Any], bucket: Bucket) -> np.ndarray:
        """(T, H, W, 3) uint8 frames of one clip at the bucket's size, through the same read as a batch."""
        status, reason = [None], [None]
        for _, _, pixels in self.decoded_groups([row], {0: bucket}, status, reason):
            return pixels[0]
        raise RuntimeError(reason[0])

    def _encode_group(self, bucket: Bucket, members: list[int], clips: list[np.ndarray], out) -> None:
        import torch

        from stages.models.vae import tensor_bytes

        pixels = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)
        mean, logvar = self.model.encode(pixels)  # (B, C, T', H', W')
        for j, i in enumerate(members):
            out[i] = {"bucket": bucket.name, "latent": tensor_bytes(mean[j], self.latent_dtype),
                      "latent_shape": list(mean.shape[1:]), "latent_dtype": self.latent_dtype,
                      "latent_logvar": tensor_bytes(logvar[j], self.latent_dtype) if self.store_logvar else None,
                      "enc_fps": self.target_fps, "enc_num_frames": bucket.frames, "enc_height": bucket.height,
                      "enc_width": bucket.width, "latent_meta": self.meta_json}

    def _embed_captions(self, batch: pa.Table, out: list[dict[str, Any]]) -> None:
        if self.text is None:
            return
        import torch

        from stages.models.vae import tensor_bytes

        for column in ("caption_long", "caption_short"):
            if column not in batch.column_names:
                continue
            texts = batch.column(column).to_pylist()
            todo = [i for i, o in enumerate(out) if o and texts[i]]
            for i, emb in zip(todo, self.text.encode([texts[i] for i in todo])):
                name = "text_long" if column == "caption_long" else "text_short"
                out[i][name] = tensor_bytes(torch.from_numpy(emb), self.text_dtype)
                out[i][f"{name}_shape"] = list(emb.shape)
                out[i]["text_dtype"] = self.text_dtype



def _failure(err: Exception) -> str:
    """A decode failure as the catalog's reason tail: SourceErrors are already coded (not_a_file, ...)."""
    return str(err) if isinstance(err, SourceError) else f"{type(err).__name__}: {err}"
