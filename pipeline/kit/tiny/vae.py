"""Tiny random diffusers VAEs: an AutoencoderKL (image, per frame) and an AutoencoderKLWan (causal video)."""
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
