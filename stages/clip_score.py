"""Stage `clip_score` (1:1, GPU actor; runs on CPU too): CLIP embedding and scores per accepted clip.

One open_clip model (stages/models/clip.py) sees every sampled frame of a clip
(split's `frames`, K x H x W x 3 uint8 at native aspect). Per clip it stores:

    clip_embedding          normalised mean of the K unit frame embeddings, float16 (D,)
    clip_aesthetic          LAION aesthetic head on each unit frame embedding, mean over frames;
                            null when no head is configured
    clip_<prompt>           per prompt: P(prompt | frame) against the neutral prompt, i.e.
                            sigmoid(logit_scale * (cos(frame, prompt) - cos(frame, neutral))), mean over frames
    clip_frame_consistency  min cosine over all pairs of sampled frames (missed cuts, fades); null if K < 2
    clip_motion             1 - mean cosine of adjacent sampled frames (0 static, higher = more change)
    clip_text_similarity    cos(clip_embedding, text of a sidecar <video>.txt/.json); null when none

Rejected rows pass through with nulls. Frames of one size are stacked and
encoded `images_per_forward` at a time, so batching never changes a clip's
numbers (only float rounding: within 1e-5, tested).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from stages.models.clip import (DEFAULT_PROMPTS, FIXED, SCHEMAS, builtin_model_names, check_model_config,
                                looks_like_path, same_clip)
from stages.text.sidecar import read_sidecar
from stages.base import Resources, Stage, require

@dataclass
class ClipScore(Stage):
    name = "clip_score"
    gpu_cost = 1.0  # one ViT-L forward per sampled frame
    inputs = ("status", "frames", "frames_shape", "source_uri")

    model: str = "ViT-L-14"  # open_clip name, `hf-hub:org/repo` or `local-dir:/folder`
    pretrained: str | None = "openai"  # a tag of `model`, a local weights file, or null (random)
    model_config: str | None = None  # an extra open_clip model config JSON (stem = model name)
    aesthetic: str | None = None  # LAION head: local state dict or hf-hub:org/repo/file; null = no score
    # The CLIP the head was trained on ("<model>/<pretrained>"): another CLIP's embeddings give it
    # numbers that mean nothing, so a mismatch is refused. null: not checked (e.g. your own head).
    aesthetic_clip: str | None = None
    aesthetic_sha256: str | None = None  # the head file's checksum, verified when it is loaded
    prompts: dict[str, str | list[str] | None] = field(default_factory=dict)  # merged over DEFAULT_PROMPTS
    neutral_prompt: str | list[str] = "a video frame"
    sidecar_text: bool = True  # look for <video stem>.txt / .json beside the source
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    images_per_forward: int = 256  # frames per encode_image call
    resources: Resources = field(default_factory=lambda: Resources(cpus=1, batch_size=64))

    def __post_init__(self):
        self.prompts = {**DEFAULT_PROMPTS, **self.prompts}
        self.prompts = {k: v for k, v in self.prompts.items() if v is not None}
        for name, text in self.prompts.items():
            require(name.isidentifier() and name == name.lower(), "prompts",
                    f"{name!r}: names become columns clip_<name>; use lower_case identifiers")
            require(name not in FIXED, "prompts", f"{name!r} is taken by the column clip_{name}")
            require(bool(text) and all(isinstance(t, str) and t.strip() for t in _as_list(text)),
                    "prompts", f"{name!r}: needs at least one non-empty prompt")
        require(all(t.strip() for t in _as_list(self.neutral_prompt)) and bool(self.neutral_prompt),
                "neutral_prompt", "must be a non-empty prompt or list of prompts")
        require(self.images_per_forward >= 1, "images_per_forward", f"must be >= 1 (got {self.images_per_forward})")
        self._check_model()
        if self.aesthetic is not None and not self.aesthetic.startswith("hf-hub:"):
            require(Path(self.aesthetic).is_file(), "aesthetic", f"no such file: {self.aesthetic}")
            self.aesthetic = str(Path(self.aesthetic).resolve())
        if self.aesthetic is not None and self.aesthetic_clip is not None:
            require(same_clip(self.aesthetic_clip, f"{self.model}/{self.pretrained}"), "aesthetic_clip",
                    f"the aesthetic head was trained on {self.aesthetic_clip}, but this stage's CLIP is "
                    f"{self.model}/{self.pretrained}: its scores would mean nothing (set aesthetic: null, or "
                    "use the head's CLIP)")

    def _check_model(self) -> None:
        """What can be checked without importing open_clip (seconds): names, files, schema rules."""
        require(bool(self.model.strip()), "model", "must name an open_clip model")
        if self.model.startswith(SCHEMAS):
            require(self.pretrained is None, "pretrained",
                    f"must be null with {self.model.split(':')[0]}: (the weights come with the model)")
            if self.model.startswith("local-dir:"):
                folder = Path(self.model[len("local-dir:"):])
                require((folder / "open_clip_config.json").is_file(), "model",
                        f"no open_clip_config.json in {folder}")
            return
        if self.model_config is not None:
            problem = check_model_config(self.model_config)
            require(problem is None, "model_config", problem or "")
            require(Path(self.model_config).stem == self.model, "model",
                    f"must be {Path(self.model_config).stem!r}, the name model_config registers")
            self.model_config = str(Path(self.model_config).resolve())
        else:
            known = builtin_model_names()
            require(not known or self.model in known, "model",
                    f"{self.model!r} is not an open_clip model (e.g. ViT-B-32, ViT-L-14; or set model_config)")
        if self.pretrained is not None and looks_like_path(self.pretrained):
            require(Path(self.pretrained).is_file(), "pretrained", f"no such file: {self.pretrained}")
            self.pretrained = str(Path(self.pretrained).resolve())  # workers may run elsewhere

    @property
    def catalog_fields(self) -> tuple[pa.Field, ...]:
        prompt_fields = [pa.field(f"clip_{name}", pa.float32()) for name in self.prompts]
        fixed = [pa.field(f"clip_{name}", kind) for name, kind in FIXED.items()]
        return (fixed[0], fixed[1], *prompt_fields, *fixed[2:])

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.catalog_fields)

    def setup(self) -> None:
        from stages.models.clip import load_aesthetic, load_clip
        from stages.models.loading import device_for

        device = device_for(self.resources, self.name)
        self.clip = load_clip(self.model, self.pretrained, model_config=self.model_config, device=device,
                              dtype=self.dtype)
        self.head = load_aesthetic(self.aesthetic, self.clip.embed_dim, device, self.clip.dtype,
                                   sha256=self.aesthetic_sha256) if self.aesthetic else None
        # Prompt ensembles: mean of unit text embeddings, renormalised (CLIP's zero-shot recipe).
        texts = {name: _as_list(text) for name, text in self.prompts.items()}
        texts["_neutral"] = _as_list(self.neutral_prompt)
        self.text_embeddings = {name: _unit(self.clip.encode_texts(t).mean(0)) for name, t in texts.items()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_inputs(batch)
        rows = self.accepted(batch)
        frames = batch.column("frames").to_pylist() if rows else []
        shapes = batch.column("frames_shape").to_pylist() if rows else []
        uris = batch.column("source_uri").to_pylist() if rows else []
        per_frame = self.embed({i: np.frombuffer(frames[i], np.uint8).reshape(shapes[i]) for i in rows})
        sidecars: dict[str, np.ndarray | None] = {}  # source → unit text embedding (read once per batch)
        scores = {f.name: [None] * batch.num_rows for f in self.catalog_fields}
        for i in rows:
            if self.sidecar_text and uris[i] not in sidecars:
                text = read_sidecar(uris[i])
                sidecars[uris[i]] = self.clip.encode_texts([text])[0] if text else None
            for name, value in self.score(per_frame[i], sidecars.get(uris[i])).items():
                scores[name][i] = value
        for f in self.catalog_fields:
            batch = batch.append_column(f, pa.array(scores[f.name], type=f.type))
        return batch

    def embed(self, clips: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """{row: (K, H, W, 3) uint8} → {row: (K, D) unit float32}; frames of one size share forwards."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for row, frames in clips.items():
            by_size.setdefault(frames.shape[1:3], []).append(row)
        out = {}
        for rows in by_size.values():
            stacked = np.concatenate([clips[r] for r in rows])  # (sum K, H, W, 3)
            embedded = self.clip.encode_frames(stacked, self.images_per_forward)
            start = 0
            for r in rows:
                out[r] = embedded[start:start + len(clips[r])]
                start += len(clips[r])
        return out

    def score(self, frames: np.ndarray, text: np.ndarray | None) -> dict[str, object]:
        """Scores of one clip from its (K, D) unit frame embeddings and its source text's (D,) embedding."""
        mean = _unit(frames.mean(0))  # (D,)
        neutral = frames @ self.text_embeddings["_neutral"]  # (K,) cosines
        out: dict[str, object] = {"clip_embedding": mean.astype(np.float16).tolist()}
        out["clip_aesthetic"] = self.aesthetic_of(frames) if self.head is not None else None
        for name in self.prompts:
            logits = self.clip.logit_scale * (frames @ self.text_embeddings[name] - neutral)  # (K,)
            out[f"clip_{name}"] = float(np.mean(1.0 / (1.0 + np.exp(-logits))))
        sims = frames @ frames.T  # (K, K)
        k = len(frames)
        out["clip_frame_consistency"] = float(sims[np.triu_indices(k, 1)].min()) if k > 1 else None
        out["clip_motion"] = float(1.0 - np.mean(np.diagonal(sims, 1))) if k > 1 else None
        out["clip_text_similarity"] = float(mean @ text) if text is not None else None
        return out

    def aesthetic_of(self, frames: np.ndarray) -> float:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(frames).to(self.clip.device, self.clip.dtype)  # (K, D) unit embeddings
            return float(self.head(x).float().mean().item())


def _as_list(text) -> list[str]:
    return [text] if isinstance(text, str) else list(text or [])


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)
