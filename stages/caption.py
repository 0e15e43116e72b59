"""Stage `caption` (1:1, GPU actor; runs on CPU too): a dense description of each clip by a VLM.

A transformers vision-language model, named by hub id or local folder, is
loaded with AutoProcessor and AutoModelForImageTextToText (which picks the
checkpoint's own class, e.g. Qwen3VLForConditionalGeneration). Each accepted
clip's frames go in as one video, with their real frame indices and fps so
models that print timestamps (Qwen3-VL) get them right, or as K images
(`input_mode: images`). The frames are either split's K small samples
(`frames_source: split`) or read by the stage itself (`frames_source: decode`):
at most `max_frames`, at most `max_fps`, evenly spread over the clip, at
`short_side` pixels on the short side, decoded from the source through the
grouped reader (stages/video/decode.py: one open per source per batch, frame k
is split's frame k). A clip whose source cannot be read then falls back to
split's samples, with a warning in the log. The prompt is a template over the
clip's facts, rendered with the model's chat template. Requests are sorted by
input size, batched (left padding, KV cache, greedy), in bf16 on a GPU.

Stored per clip: `caption_dense`, its token count, n-gram repetition, empty
and truncated flags, and the caption's version: model id, prompt hash and
generation settings, so captions of two captioners are told apart in SQL.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa

from stages.models.generate import (Throughput, Timer, generation_kwargs, length_batches, load_kwargs, model_ref,
                              split_new_tokens, stop_ids)
from stages.models.loading import device_for, dtype_for, hub_revision, import_torchvision, model_label
from stages.text.quality import check_template, prompt_hash, repetition, settings_json
from stages.video.decode import SpanRequest, ahead, anchor_of, read_grouped
from stages.video.source import decode_size
from stages.base import Resources, Stage, require

log = logging.getLogger(__name__)

CATALOG = (
    pa.field("caption_dense", pa.string()),
    pa.field("caption_dense_tokens", pa.int32()),  # generated tokens, stop token excluded
    pa.field("caption_dense_repetition", pa.float32()),  # share of repeated token 3-grams
    pa.field("caption_dense_empty", pa.bool_()),
    pa.field("caption_dense_truncated", pa.bool_()),  # hit max_new_tokens before a stop token
    pa.field("caption_model", pa.string()),  # model id or path (@revision)
    pa.field("caption_prompt_hash", pa.string()),
    pa.field("caption_settings", pa.string()),  # JSON: generation settings, dtype, input mode
)
PLACEHOLDERS = ("duration_s", "num_frames", "fps", "width", "height", "frames")
DEFAULT_PROMPT = (
    "Describe this {duration_s:.1f}-second video clip in detail: the main subjects and their appearance, "
    "what they do, the setting, the camera's framing and movement, the lighting, colours and visual style. "
    "Describe only what is visible."
)
_EXAMPLE = dict(duration_s=4.0, num_frames=96, fps=24.0, width=1280, height=720, frames=8)


@dataclass
class Caption(Stage):
    name = "caption"
    gpu_cost = 8.0  # an 8B VLM writing ~256 tokens a clip: the slowest stage, most GPUs under gpus: auto
    inputs = ("status", "frames", "frames_shape", "sample_frame_indices", "start_frame", "num_frames", "fps",
              "duration_s", "width", "height")
    outputs = tuple(f.name for f in CATALOG)
    catalog_fields = CATALOG

    model: str = "Qwen/Qwen3-VL-8B-Instruct"  # hub id or local folder
    revision: str | None = None
    prompt: str = DEFAULT_PROMPT  # placeholders: {duration_s} {num_frames} {fps} {width} {height} {frames}
    system_prompt: str = ""  # empty: no system message
    input_mode: Literal["video", "images"] = "video"
    frames_source: Literal["split", "decode"] = "split"  # decode: the stage reads its own frames (below)
    max_frames: int = 8  # decode: frames per clip, at most
    max_fps: float = 2.0  # decode: frames per second of clip, at most (a 2 s clip gets 4)
    short_side: int = 448  # decode: short side in pixels (never upscaled)
    decode_stall_s: float = 120.0  # decode: a span with no result for this long falls back to split's frames
    max_new_tokens: int = 256
    min_new_tokens: int = 0  # > 0 forces a fixed generation length (benchmarks only)
    gen_batch_size: int = 8  # clips per generate call (after sorting by input size)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    attn_implementation: str | None = None  # None: transformers' default (sdpa)
    trust_remote_code: bool = False
    processor_kwargs: dict[str, Any] = field(default_factory=dict)  # extra processor call arguments
    resources: Resources = field(default_factory=lambda: Resources(cpus=1, gpus=1, concurrency=1, batch_size=32))

    def __post_init__(self):
        require(bool(self.model.strip()), "model", "must name a hub id or a local folder")
        self.model = model_ref(self.model)
        check_template(self.prompt, "prompt", PLACEHOLDERS)
        try:
            self.prompt.format(**_EXAMPLE)
        except (ValueError, TypeError, IndexError) as err:
            raise ValueError(f"prompt: does not render: {err}") from None
        require(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1 (got {self.max_new_tokens})")
        require(0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens",
                f"must be between 0 and max_new_tokens (got {self.min_new_tokens})")
        require(self.gen_batch_size >= 1, "gen_batch_size", f"must be >= 1 (got {self.gen_batch_size})")
        require(self.frames_source in ("split", "decode"), "frames_source",
                f"must be split or decode (got {self.frames_source!r})")
        require(self.max_frames >= 1, "max_frames", f"must be >= 1 (got {self.max_frames})")
        require(self.max_fps > 0, "max_fps", f"must be > 0 (got {self.max_fps})")
        require(self.short_side >= 16, "short_side", f"must be >= 16 (got {self.short_side})")
        require(self.decode_stall_s > 0, "decode_stall_s", f"must be > 0 (got {self.decode_stall_s})")

    def setup(self) -> None:
        import_torchvision()  # before transformers' model classes (stages/models/loading.py)
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self._device = device_for(self.resources, self.name)
        self._dtype = dtype_for(self.dtype, self._device)
        revision = hub_revision(self.model, self.revision)
        kwargs = load_kwargs(revision, self.trust_remote_code, None)
        self._processor = AutoProcessor.from_pretrained(self.model, **kwargs)
        self._tokenizer = self._processor.tokenizer
        self._tokenizer.padding_side = "left"
        model_kwargs = load_kwargs(revision, self.trust_remote_code, self.attn_implementation)
        self._model = AutoModelForImageTextToText.from_pretrained(self.model, dtype=self._dtype, **model_kwargs)
        self._model.to(self._device).eval()
        self._stop = stop_ids(self._model, self._tokenizer)
        self._generate_kwargs = generation_kwargs(self.max_new_tokens, self.min_new_tokens, self._stop,
                                                  self._tokenizer.pad_token_id)
        self.throughput = Throughput("caption")
        self.input_wait_s = 0.0  # seconds generation waited on decoded frames, over this worker's life
        self._version = {
            "caption_model": model_label(self.model, self.revision),
            "caption_prompt_hash": prompt_hash(self.system_prompt, self.prompt, self.input_mode),
            "caption_settings": settings_json({
                "max_new_tokens": self.max_new_tokens, "min_new_tokens": self.min_new_tokens,
                "decoding": "greedy", "dtype": str(self._dtype).removeprefix("torch."),
                "input_mode": self.input_mode, "model_class": type(self._model).__name__,
                **({"frames": {"source": "decode", "max_frames": self.max_frames, "max_fps": self.max_fps,
                               "short_side": self.short_side}} if self.frames_source == "decode" else {}),
                "processor_kwargs": self.processor_kwargs}),
        }

    # -- prompts ---------------------------------------------------------------------------------------

    def messages(self, clip: dict[str, Any]) -> list[dict[str, Any]]:
        """The chat for one clip: optional system message, then the frames and the rendered prompt."""
        count = clip["frames_shape"][0] if clip.get("frames_shape") else _EXAMPLE["frames"]
        text = self.prompt.format(duration_s=clip["duration_s"], num_frames=clip["num_frames"], fps=clip["fps"],
                                  width=clip["width"], height=clip["height"], frames=count)
        visual = [{"type": "video"}] if self.input_mode == "video" else [{"type": "image"}] * count
        chat = [{"role": "system", "content": [{"type": "text", "text": self.system_prompt}]}] if self.system_prompt else []
        return chat + [{"role": "user", "content": visual + [{"type": "text", "text": text}]}]

    def render(self, clip: dict[str, Any]) -> str:
        """The prompt text for one clip, as the model's chat template writes it (before frames expand)."""
        return self._processor.apply_chat_template(self.messages(clip), tokenize=False, add_generation_prompt=True)

    # -- the stage ------------------------------------------------------------------------------------

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_inputs(batch)
        if self.frames_source == "split":
            rows = [i for i in self.accepted(batch) if batch.column("frames")[i].is_valid]
            clips = batch.select([c for c in self.inputs if c != "status"]).take(pa.array(rows, pa.int64())).to_pylist()
        else:
            missing = [c for c in ("video", "end_frame") if c not in batch.column_names]
            if missing:
                raise KeyError(f"caption with frames_source: decode needs columns {missing} (split's)")
            rows = self.accepted(batch)
            clips = self.planned(batch.take(pa.array(rows, pa.int64())).to_pylist())
        out: dict[str, list] = {f.name: [None] * batch.num_rows for f in CATALOG}
        texts = [self.render(c) for c in clips]
        sizes = [(int(np.prod(c["frames_shape"])), len(t)) for c, t in zip(clips, texts)]  # ~ input tokens
        groups = list(length_batches(sizes, self.gen_batch_size))
        arrivals = None  # decode: in a thread, sources in the order the groups need them
        if self.frames_source == "decode":
            arrivals = self.decoding(clips, [j for group in groups for j in group])
        generated_rows = tokens = 0
        waited = 0.0
        try:
            with Timer() as timer:
                for group in groups:
                    if arrivals is not None:
                        started = time.perf_counter()
                        group = self._with_frames(clips, texts, group, arrivals)
                        waited += time.perf_counter() - started
                    if not group:
                        continue
                    results = self._generate([clips[j] for j in group], [texts[j] for j in group])
                    for index, result in zip(group, results):
                        self._store(out, rows[index], result)
                        generated_rows, tokens = generated_rows + 1, tokens + result.produced
        finally:
            if arrivals is not None:
                arrivals.close()  # a model error: the decoding thread stops instead of reading on
        self.input_wait_s += waited
        if rows:
            self.throughput.add(generated_rows, tokens, timer.seconds)
            if arrivals is not None:
                log.info("caption: %d clips: %.3f s, of which %.3f s waiting on decoded frames",
                         len(rows), timer.seconds, waited)
        for f in CATALOG:
            batch = batch.append_column(f, pa.array(out[f.name], type=f.type))
        return batch

    def frame_plan(self, clip: dict[str, Any]) -> tuple[list[int], int, int]:
        """(frame indices, width, height) the stage decodes for a clip: at most `max_frames` and `max_fps`,
        evenly spread (centres of equal parts), `short_side` on the short side, display orientation."""
        start, end = int(clip["start_frame"]), int(clip["end_frame"])
        duration = clip["duration_s"] or (end - start) / (clip["fps"] or 30.0)
        count = max(1, min(self.max_frames, int(duration * self.max_fps), end - start))
        indices = sorted({start + int((k + 0.5) * (end - start) / count) for k in range(count)})
        width, height = decode_size(clip["width"], clip["height"], self.short_side)
        return indices, width, height

    def planned(self, clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The clips with their frame plans (`frame_plan`): count and size are known before any pixel,
        so prompts and generation groups come first; split's shape is kept as the fallback's."""
        for clip in clips:
            clip["plan"] = indices, width, height = self.frame_plan(clip)
            clip["split_frames_shape"] = clip.get("frames_shape")
            clip["frames_shape"] = [len(indices), height, width, 3]
        return clips

    def decoding(self, clips: list[dict[str, Any]], order: list[int] | None = None) -> Iterator:
        """Start reading the planned clips' frames in a background thread: each source opened once, its
        spans in presentation order, the sources in the order of their first clip in `order` (the
        generation groups': the first group's sources are read first). (request, frames) arrive as read."""
        requests = [(clips[j]["video"], SpanRequest(j, *clips[j]["plan"], anchor_of(clips[j])))
                    for j in (order if order is not None else range(len(clips)))]
        threads = max(1, int(self.resources.cpus))
        return ahead(read_grouped(requests, threads, self.decode_stall_s), depth=len(requests))

    def _with_frames(self, clips: list[dict[str, Any]], texts: list[str], group: list[int], arrivals) -> list[int]:
        """Wait until every clip of `group` has its frames; the members that can be captioned.

        A clip whose frames fail keeps split's samples (its prompt is rendered again for their count),
        or is left uncaptioned without them, with a warning in the log."""
        while any("pixels" not in clips[j] for j in group):
            arrived = next(arrivals, None)
            if arrived is None:
                raise RuntimeError(f"the frame reader ended before clips {[clips[j].get('clip_id') for j in group]}")
            request, frames = arrived
            clip = clips[request.key]
            if isinstance(frames, Exception):
                log.warning("caption: clip %s: frames not decoded (%s: %s); using split's samples",
                            clip.get("clip_id"), type(frames).__name__, frames)
                clip["pixels"] = None
                if clip.get("frames") is not None:
                    clip["frames_shape"] = clip["split_frames_shape"]
                    texts[request.key] = self.render(clip)
                continue
            clip.update(pixels=frames, frames_shape=list(frames.shape), sample_frame_indices=request.indices)
        return [j for j in group if clips[j]["pixels"] is not None or clips[j].get("frames") is not None]

    def model_inputs(self, clips: list[dict[str, Any]], texts: list[str]):
        """The processor's batch (left-padded ids, pixel values, grids) for clips and their rendered prompts."""
        frames = [_frames(c) for c in clips]
        if self.input_mode == "video":
            visual = {"videos": frames, "video_metadata": [_metadata(c) for c in clips], "do_sample_frames": False}
        else:
            visual = {"images": [list(f) for f in frames]}
        inputs = self._processor(text=texts, padding=True, return_tensors="pt", **visual, **self.processor_kwargs)
        return inputs.to(device=self._device, dtype=self._dtype)

    def _generate(self, clips: list[dict[str, Any]], texts: list[str]):
        import torch

        inputs = self.model_inputs(clips, texts)
        with torch.inference_mode():
            sequences = self._model.generate(**inputs, **self._generate_kwargs)
        return split_new_tokens(sequences[:, inputs["input_ids"].shape[1]:], self._stop, self.max_new_tokens)

    def _store(self, out: dict[str, list], row: int, result) -> None:
        text = self._tokenizer.decode(result.ids, skip_special_tokens=True).strip()
        values = {"caption_dense": text, "caption_dense_tokens": len(result.ids),
                  "caption_dense_repetition": repetition(result.ids), "caption_dense_empty": not text,
                  "caption_dense_truncated": result.truncated, **self._version}
        for name, value in values.items():
            out[name][row] = value


def _frames(clip: dict[str, Any]) -> np.ndarray:
    """The clip's frames as (K, H, W, 3) uint8; a single frame is repeated (video models need 2)."""
    if clip.get("pixels") is not None:  # frames_source: decode
        frames = clip["pixels"]
    else:  # split's samples; a copy: writable for torch
        frames = np.frombuffer(clip["frames"], dtype=np.uint8).reshape(clip["frames_shape"]).copy()
    return np.concatenate([frames, frames]) if frames.shape[0] == 1 else frames


def _metadata(clip: dict[str, Any]):
    """Where the sampled frames sit in the clip (frame indices from its start, fps): timestamps in prompts."""
    from transformers.video_utils import VideoMetadata

    indices = [int(i) - int(clip["start_frame"]) for i in clip["sample_frame_indices"]]
    if len(indices) == 1:
        indices = indices * 2
    return VideoMetadata(total_num_frames=int(clip["num_frames"]), fps=float(clip["fps"]),
                         width=int(clip["width"]), height=int(clip["height"]),
                         duration=float(clip["duration_s"]), frames_indices=indices)
