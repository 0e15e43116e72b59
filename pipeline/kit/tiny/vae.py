"""Tiny random diffusers VAEs of every family VideoVAE supports.

`build` makes the two the demo uses (AutoencoderKL, per frame; AutoencoderKLWan, causal video);
`build_family` makes any of the five (kl, wan, cogvideox, hunyuan, ltx, and ltx_timestep: LTX-Video
0.9.1+'s timestep-conditioned decoder) for the tests. Real classes and configs, random weights.
"""
from __future__ import annotations

from pathlib import Path


def build(folder: str | Path) -> dict[str, str]:
    import torch

    from stages.models.loading import import_torchvision

    import_torchvision()
    from diffusers import AutoencoderKL, AutoencoderKLWan

    folder = Path(folder)
    paths = {"vae_kl": folder / "kl", "vae_wan": folder / "wan"}
    if not (paths["vae_kl"] / "config.json").exists():
        torch.manual_seed(0)
        AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                      block_out_channels=(8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                      sample_size=64, scaling_factor=0.5, shift_factor=0.1).save_pretrained(paths["vae_kl"])
    if not (paths["vae_wan"] / "config.json").exists():
        torch.manual_seed(0)
        # spatial stride 4 (dim_mult of 3), temporal stride 2: T = 1 + 2k frames
        AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
                         temperal_downsample=[False, True], latents_mean=[0.1, -0.2, 0.0, 0.3],
                         latents_std=[1.5, 0.8, 1.0, 1.2]).save_pretrained(paths["vae_wan"])
    return {name: str(path) for name, path in paths.items()}


def build_family(folder: str | Path, kind: str) -> str:
    """A tiny VAE of `kind` saved under folder/kind; returns its path. Spatial stride 4, temporal 2 (Hunyuan 4)."""
    import torch

    from stages.models.loading import import_torchvision

    import_torchvision()
    import diffusers

    if kind in ("kl", "wan"):
        return build(folder)[f"vae_{kind}"]
    path = Path(folder) / kind
    if (path / "config.json").exists():
        return str(path)
    torch.manual_seed(0)
    small = dict(latent_channels=4, layers_per_block=1, norm_num_groups=4, block_out_channels=(8, 16, 16))
    if kind == "cogvideox":
        model = diffusers.AutoencoderKLCogVideoX(
            down_block_types=("CogVideoXDownBlock3D",) * 3, up_block_types=("CogVideoXUpBlock3D",) * 3,
            temporal_compression_ratio=2, sample_height=32, sample_width=32, **small)
    elif kind == "hunyuan":  # diffusers' Hunyuan encoder supports temporal compression 4 or 8 only
        model = diffusers.AutoencoderKLHunyuanVideo(
            down_block_types=("HunyuanVideoDownBlock3D",) * 3, up_block_types=("HunyuanVideoUpBlock3D",) * 3,
            spatial_compression_ratio=4, temporal_compression_ratio=4, mid_block_add_attention=False, **small)
    elif kind in ("ltx", "ltx_timestep"):
        # equal decoder widths: diffusers passes the raw timestep to an up block's channel-changing conv
        model = diffusers.AutoencoderKLLTXVideo(
            latent_channels=4, block_out_channels=(8, 16), decoder_block_out_channels=(16, 16),
            down_block_types=("LTXVideoDownBlock3D",) * 2, layers_per_block=(1, 1, 1),
            decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, False),
            decoder_spatio_temporal_scaling=(True, False), decoder_inject_noise=(False, False, False),
            downsample_type=("conv", "conv"), upsample_residual=(False, False), upsample_factor=(1, 1),
            timestep_conditioning=kind == "ltx_timestep", patch_size=2, patch_size_t=1)
    else:
        raise ValueError(f"unknown VAE family {kind!r}")
    model.save_pretrained(path)
    return str(path)
