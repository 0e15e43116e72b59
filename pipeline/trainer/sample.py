"""`vidprep sample "a prompt" --checkpoint C`: prompt → (upsampled) → text embedding → Euler/CFG → VAE → mp4.

The checkpoint's config.json carries what sampling needs from the data: the
shards' `vidprep.latents` metadata (which VAE and text encoder made them, as
stages/models/vae.py `VideoVAE.metadata()` and the encode stage write it), the
per-channel mean/std the model was trained with, and the buckets with their
latent shapes. The prompt is embedded by the same `stages.models.text_encoder.TextEncoder`
that embedded the captions, and latents are decoded by the same
`stages.models.vae.VideoVAE` (which undoes its own normalisation).

Prompt upsampling (DALL-E 3): with `--upsample` (or `sample.upsample: true`)
the prompt is first rewritten by `stages.expand.upsample` with the expand
stage's settings from the training data's OUT/run.json — the expander that
wrote the training captions — or the stage defaults if there are none;
`sample.expander_model` replaces its model (e.g. a local copy).
"""
from __future__ import annotations

import json
import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.run.models import loading, model_fields
from pipeline.trainer.checkpoint import load_config, load_weights, resolve_checkpoint
from pipeline.trainer.flow import Flow, FlowConfig, guided
from pipeline.trainer.model import DiT, DiTConfig
from pipeline.typed import build

log = logging.getLogger("vidprep.sample")


def load_model(checkpoint: str | Path, ema: bool = True, device: str = "cpu") -> tuple[DiT, dict[str, Any]]:
    path = resolve_checkpoint(checkpoint)
    config = load_config(path)
    model = DiT(DiTConfig(**config["model"]))
    model.load_state_dict(load_weights(path, ema=ema, device="cpu"))
    return model.to(device).eval(), config


def sample(prompt: str, checkpoint: str | Path, out: str | Path = "sample.mp4", *, steps: int | None = None,
           cfg_scale: float | None = None, seed: int = 0, bucket: str | None = None, fps: float | None = None,
           upsample: bool | None = None, ema: bool = True, device: str = "auto") -> dict[str, Any]:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model, config = load_model(checkpoint, ema=ema, device=device)
    defaults = config["train_config"]["sample"]
    steps, cfg_scale = steps or defaults["steps"], defaults["cfg_scale"] if cfg_scale is None else cfg_scale
    data = config["data"]
    meta = data.get("latents") or {}

    # Prompt → (upsampled) prompt → token embeddings (1, S, E); an empty caption is the unconditional branch.
    used = prompt
    if defaults["upsample"] if upsample is None else upsample:
        used = upsample_prompt(prompt, data.get("out"), defaults.get("expander_model"))
    cond = uncond = None
    if model.config.text_dim:
        text = encode_prompt(used, meta, device)  # (S, E)
        if text.shape[-1] != model.config.text_dim:
            raise ValueError(f"the text encoder gives {text.shape[-1]}-d embeddings; the model was trained on {model.config.text_dim}")
        cond = {"text": text[None].float(), "text_mask": torch.ones(1, text.shape[0], dtype=torch.bool, device=device)}
        uncond = {"text": text.new_zeros(1, 0, text.shape[-1]).float(), "text_mask": cond["text_mask"][:, :0]}
    else:
        log.warning("this model was trained without text: the prompt is ignored")

    # Noise → latents with Euler steps and classifier-free guidance.
    vae = load_vae(meta, device)
    shape = latent_shape(data["buckets"], bucket, meta, vae)
    latents = generate(model, config, shape, steps, cfg_scale, seed, cond, uncond)  # (1, C, T, H, W)

    # Latents → pixels → mp4.
    with torch.no_grad():
        pixels = vae.decode(latents).float().clamp(-1, 1)  # (1, 3, T, H, W)
    frames = ((pixels[0].permute(1, 2, 3, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)  # (T, H, W, 3)
    write_mp4(frames, out, fps or defaults.get("fps") or meta.get("target_fps") or 24.0)
    return {"path": str(out), "prompt": used, "latent_shape": list(shape), "frames": int(frames.shape[0]),
            "size": [int(frames.shape[1]), int(frames.shape[2])], "steps": steps, "cfg_scale": cfg_scale}


def generate(model: DiT, config: dict[str, Any], shape: tuple[int, ...], steps: int, cfg_scale: float, seed: int,
             cond: dict[str, torch.Tensor] | None = None, uncond: dict[str, torch.Tensor] | None = None,
             n: int = 1) -> torch.Tensor:
    """n latents (n, C, T, H, W) in the VAE's latent space: Euler steps with CFG from seeded noise, then the
    training normalisation undone. Without `cond` (or with `cfg_scale` 1 and no text) it samples unconditionally."""
    device = next(model.parameters()).device
    flow = Flow(build(FlowConfig, config["train_config"]["flow"], "flow"))
    noise = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed)).to(device)  # (n, C, T, H, W)
    forward = lambda x, t, **c: model(x, t, **c)[:, : model.config.in_channels]  # noqa: E731
    expand = lambda c: {k: v.expand(n, *v.shape[1:]) for k, v in (c or {}).items()}  # noqa: E731
    fn = guided(forward, cfg_scale, expand(cond), expand(uncond)) if cond else forward
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        latents = flow.sample(fn, noise, steps, model.tokens(shape)).float()
    norm = config["data"].get("latent_norm")
    if norm:
        mean, std = (torch.tensor(v, device=device).view(-1, 1, 1, 1) for v in norm)
        latents = latents * std + mean  # back to the VAE's (scaled) latent space
    return latents


def upsample_prompt(prompt: str, data_out: str | None, model: str | None) -> str:
    """The prompt rewritten in the training captions' style by the caption expander (issue 4)."""
    try:
        from stages.expand import upsample
        from stages.expand import Expand
    except ModuleNotFoundError as err:
        raise RuntimeError(f"--upsample needs the caption expander (stages/models/expander.py): {err}") from None
    settings: dict[str, Any] = {}
    run = Path(data_out or "", "run.json")
    if data_out and run.is_file():
        settings = (json.loads(run.read_text()).get("config", {}).get("stages") or {}).get("expand") or {}
    if model:
        settings = {**settings, "model": model}
    config = build(Expand, settings, "stages.expand")
    with loading(model_fields("stages.expand", config)):  # loads the expander: one line naming it if it can't
        return upsample(prompt, config)


def encode_prompt(prompt: str, meta: dict[str, Any], device: str) -> torch.Tensor:
    """(S, E) token embeddings of the prompt, made as the encode stage made the captions'."""
    from stages.models.text_encoder import TextEncoder

    if not meta.get("text_encoder"):
        raise ValueError("the shards' vidprep.latents metadata names no text encoder")
    key = (meta["text_encoder"], meta.get("text_kind") or "t5", meta.get("text_subfolder"),
           meta.get("text_revision"), meta.get("text_max_tokens"), str(device))
    if key not in _TEXT_ENCODERS:  # T5-XXL takes minutes to load: once per process, not per prompt
        kwargs = {"max_tokens": meta["text_max_tokens"]} if meta.get("text_max_tokens") else {}
        with loading({"stages.encode.text_encoder": meta["text_encoder"]}):  # one line naming it if it cannot load
            _TEXT_ENCODERS[key] = TextEncoder.load(meta["text_encoder"], key[1], device, torch.float32,
                                                   revision=meta.get("text_revision"),
                                                   subfolder=meta.get("text_subfolder"), **kwargs)
    return torch.as_tensor(_TEXT_ENCODERS[key].encode([prompt])[0], device=device)


_TEXT_ENCODERS: dict[tuple, Any] = {}  # loaded text encoders, by what identifies them


def load_vae(meta: dict[str, Any], device: str):
    from stages.models.vae import KINDS, VideoVAE

    if not meta.get("vae"):
        raise ValueError("the shards' vidprep.latents metadata names no VAE")
    kind = {name: kind for kind, name in KINDS.items()}.get(meta.get("vae_class"), "auto")
    with loading({"stages.encode.vae": meta["vae"]}):  # one line naming it if it cannot load
        return VideoVAE.load(meta["vae"], kind, device, None, subfolder=meta.get("vae_subfolder"),
                             revision=meta.get("vae_revision"))


def latent_shape(buckets: list[dict], bucket: str | None, meta: dict[str, Any], vae) -> tuple[int, ...]:
    """The latent shape of a trained bucket (default: the one with most rows), or of a new FxHxW bucket."""
    if bucket is None:
        return tuple(max(buckets, key=lambda b: b["rows"])["latent_shape"])
    for known in buckets:
        if known["bucket"] == bucket:
            return tuple(known["latent_shape"])
    try:
        frames, height, width = (int(v) for v in bucket.split("x"))
    except ValueError:
        raise ValueError(f"--bucket: expected FRAMESxHEIGHTxWIDTH (got {bucket!r})") from None
    spatial = getattr(vae, "spatial_stride", None) or meta.get("spatial_stride")
    temporal = getattr(vae, "temporal_stride", None) or meta.get("temporal_stride") or 1
    if not spatial:
        raise ValueError(f"--bucket {bucket}: not a trained bucket and the VAE's stride is unknown")
    t = frames if temporal == 1 else 1 + (frames - 1) // temporal
    return (buckets[0]["latent_shape"][0], t, height // spatial, width // spatial)


def write_mp4(frames: np.ndarray, path: str | Path, fps: float) -> None:
    """(T, H, W, 3) uint8 → H.264 mp4 (yuv420p; odd sizes padded by one pixel), written atomically."""
    import av

    path = Path(path)
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                      rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)
