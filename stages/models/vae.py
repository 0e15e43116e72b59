"""Private helper: a diffusers VAE behind one interface, for the encode stage and the trainer's sampler.

`VideoVAE.load(ref)` takes a hub id or a local directory and the diffusers
class from config (`kind`), or reads `_class_name` from the saved config.
Image VAEs (AutoencoderKL) encode a clip frame by frame; causal video VAEs
(Wan, CogVideoX, HunyuanVideo, LTX-Video) take (B, 3, T, H, W) with
T = 1 + k·temporal_stride. Latents leave here normalised for diffusion:
z' = (z - mean_c - shift) / std_c · scale, with each model's own factors.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = {
    "kl": "AutoencoderKL",
    "wan": "AutoencoderKLWan",
    "cogvideox": "AutoencoderKLCogVideoX",
    "hunyuan": "AutoencoderKLHunyuanVideo",
    "ltx": "AutoencoderKLLTXVideo",
}


@dataclass
class VideoVAE:
    model: Any
    ref: str
    class_name: str
    spatial_stride: int
    temporal_stride: int  # 1 for image VAEs
    latent_channels: int
    scale: float
    shift: float
    mean: np.ndarray | None  # per-channel latent statistics, when the model defines them
    std: np.ndarray | None
    decode_timestep: float = 0.05  # timestep-conditioned decoders (LTX-Video 0.9.1+) only
    decode_noise_scale: float = 0.025

    @classmethod
    def load(cls, ref: str, kind: str = "auto", device: str = "cpu", dtype=None, subfolder: str | None = None,
             revision: str | None = None, tiling: bool = False, slicing: bool = False) -> "VideoVAE":
        import torch

        from stages.models.loading import import_torchvision

        import_torchvision()  # diffusers imports torchvision
        import diffusers

        class_name = KINDS[kind] if kind != "auto" else _saved_class_name(ref, subfolder)
        model_cls = getattr(diffusers, class_name)
        kwargs = {"subfolder": subfolder} if subfolder else {}
        model = model_cls.from_pretrained(ref, revision=revision, torch_dtype=torch.float32,
                                          low_cpu_mem_usage=False, **kwargs)
        dtype = family_dtype(class_name, model.config, device) if dtype in (None, "auto") else dtype
        model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        if tiling and hasattr(model, "enable_tiling"):
            model.enable_tiling()
        if slicing and hasattr(model, "enable_slicing"):
            model.enable_slicing()
        spatial, temporal = _strides(class_name, model.config)
        config = model.config
        mean = getattr(config, "latents_mean", None)
        std = getattr(config, "latents_std", None)
        buffers = dict(model.named_buffers())
        if mean is None and "latents_mean" in buffers:  # LTX-Video keeps them as buffers
            mean, std = buffers["latents_mean"].float().cpu().numpy(), buffers["latents_std"].float().cpu().numpy()
        return cls(model=model, ref=ref, class_name=class_name, spatial_stride=spatial, temporal_stride=temporal,
                   latent_channels=int(config.latent_channels if hasattr(config, "latent_channels") else config.z_dim),
                   scale=float(getattr(config, "scaling_factor", None) or 1.0),
                   shift=float(getattr(config, "shift_factor", None) or 0.0),
                   mean=None if mean is None else np.asarray(mean, np.float64),
                   std=None if std is None else np.asarray(std, np.float64))

    @property
    def is_video(self) -> bool:
        return self.class_name != "AutoencoderKL"

    def valid_frame_count(self, frames: int) -> bool:
        return frames >= 1 and (not self.is_video or (frames - 1) % self.temporal_stride == 0)

    def encode(self, pixels):
        """(B, 3, T, H, W) in [-1, 1] → normalised posterior (mean, logvar), each (B, C, T', H', W')."""
        import torch

        batch, _, frames, height, width = pixels.shape
        pixels = pixels.to(self.model.device, self.model.dtype)
        with torch.inference_mode():
            if self.is_video:
                dist = self.model.encode(pixels).latent_dist
                mean, logvar = dist.mean, dist.logvar
            else:  # image VAE: frames as a batch of images
                flat = pixels.permute(0, 2, 1, 3, 4).reshape(batch * frames, 3, height, width)
                dist = self.model.encode(flat).latent_dist
                mean, logvar = (t.reshape(batch, frames, *t.shape[1:]).permute(0, 2, 1, 3, 4)
                                for t in (dist.mean, dist.logvar))
        scale, offset = self._affine(mean)
        # logvar of a scaled variable: log(var · s²) = logvar + 2·log s
        return (mean.float() - offset) * scale, logvar.float() + 2 * torch.log(scale)

    def decode(self, latents):
        """Normalised (B, C, T', H', W') → pixels (B, 3, T, H, W) in [-1, 1]."""
        import torch

        scale, offset = self._affine(latents)
        z = (latents.float() / scale + offset).to(self.model.device, self.model.dtype)
        with torch.inference_mode():
            if self.timestep_conditioned:
                return self._decode_with_timestep(z)
            if self.is_video:
                return self.model.decode(z).sample.float().clamp(-1, 1)
            batch, channels, frames = z.shape[:3]
            flat = z.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, *z.shape[3:])
            images = self.model.decode(flat).sample.float().clamp(-1, 1)
            return images.reshape(batch, frames, *images.shape[1:]).permute(0, 2, 1, 3, 4)

    @property
    def timestep_conditioned(self) -> bool:
        """LTX-Video 0.9.1+: the decoder denoises its input a little and needs the timestep it is told."""
        return bool(getattr(self.model.config, "timestep_conditioning", False))

    def _decode_with_timestep(self, z):
        """LTXPipeline's decode: z mixed with `decode_noise_scale` of noise, decoded at `decode_timestep`.

        The values are LTX-Video 0.9.1's recommended ones (0.05 and 0.025); the noise is seeded, so a
        decode is deterministic. Without a timestep the timestep-conditioned decoder raises.
        """
        import torch

        generator = torch.Generator(device="cpu").manual_seed(0)
        noise = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z.device, z.dtype)
        z = (1 - self.decode_noise_scale) * z + self.decode_noise_scale * noise
        timestep = torch.full((z.shape[0],), self.decode_timestep, device=z.device, dtype=z.dtype)
        return self.model.decode(z, timestep).sample.float().clamp(-1, 1)

    def _affine(self, like):
        """Per-channel (scale, offset) tensors shaped (1, C, 1, 1, 1) such that z' = (z - offset) · scale."""
        import torch

        channels = self.latent_channels
        mean = self.mean if self.mean is not None else np.zeros(channels, np.float32)
        std = self.std if self.std is not None else np.ones(channels, np.float32)
        scale = torch.as_tensor(self.scale / std, dtype=torch.float32, device=like.device).view(1, -1, 1, 1, 1)
        offset = torch.as_tensor(mean + self.shift, dtype=torch.float32, device=like.device).view(1, -1, 1, 1, 1)
        return scale, offset

    def metadata(self) -> dict[str, Any]:
        """What a reader needs to decode the stored latents (goes into shard files and the catalog)."""
        return {"vae": self.ref, "vae_class": self.class_name, "scaling_factor": self.scale,
                "shift_factor": self.shift, "spatial_stride": self.spatial_stride,
                "temporal_stride": self.temporal_stride, "latent_channels": self.latent_channels,
                "latents_mean": None if self.mean is None else self.mean.tolist(),
                "latents_std": None if self.std is None else self.std.tolist(), "normalised": True}


def family_dtype(class_name: str, config, device: str):
    """The compute dtype a VAE family is documented to run in, for `dtype: auto`.

    CPU: float32. GPU: Wan's VAE in float32 (its diffusers docs load it so); KL and CogVideoX in
    float32 when their config says `force_upcast` (SD VAEs overflow in half precision), else
    bfloat16; HunyuanVideo in float16 and LTX-Video in bfloat16, as their pipelines load them.
    """
    import torch

    if device != "cuda":
        return torch.float32
    if class_name == "AutoencoderKLWan" or getattr(config, "force_upcast", False):
        return torch.float32
    return torch.float16 if class_name == "AutoencoderKLHunyuanVideo" else torch.bfloat16


def _saved_class_name(ref: str, subfolder: str | None) -> str:
    path = Path(ref, subfolder or "", "config.json")
    if not path.exists():
        raise ValueError(f"vae_kind: 'auto' needs a local config.json ({path} not found); name the kind "
                         f"({', '.join(KINDS)}) for hub ids")
    name = json.loads(path.read_text()).get("_class_name", "")
    if name not in KINDS.values():
        raise ValueError(f"vae: {ref} is a {name or 'unknown class'}; supported: {', '.join(KINDS.values())}")
    return name


def _strides(class_name: str, config) -> tuple[int, int]:
    """(spatial, temporal) downsampling factors, from the architecture rather than nominal config fields."""
    if class_name == "AutoencoderKL":
        return 2 ** (len(config.block_out_channels) - 1), 1
    if class_name == "AutoencoderKLWan":
        return 2 ** (len(config.dim_mult) - 1) * (config.patch_size or 1), 2 ** sum(config.temperal_downsample)
    if class_name == "AutoencoderKLCogVideoX":
        return 2 ** (len(config.block_out_channels) - 1), int(config.temporal_compression_ratio)
    if class_name == "AutoencoderKLHunyuanVideo":
        return int(config.spatial_compression_ratio), int(config.temporal_compression_ratio)
    scaling = sum(config.spatio_temporal_scaling)  # LTX-Video
    spatial = config.spatial_compression_ratio or config.patch_size * 2 ** scaling
    temporal = config.temporal_compression_ratio or config.patch_size_t * 2 ** scaling
    return int(spatial), int(temporal)


def storage_dtype(name: str):
    """numpy dtype for stored tensors; bfloat16 is kept as its raw 16 bits (torch reads it back)."""
    return {"float16": np.float16, "float32": np.float32, "bfloat16": np.uint16}[name]


def tensor_bytes(tensor, dtype_name: str) -> bytes:
    """C-order bytes of a torch tensor in the storage dtype."""
    import torch

    if dtype_name == "bfloat16":
        return tensor.to(torch.bfloat16).contiguous().view(torch.int16).cpu().numpy().tobytes()
    return tensor.to({"float16": torch.float16, "float32": torch.float32}[dtype_name]).contiguous().cpu().numpy().tobytes()
