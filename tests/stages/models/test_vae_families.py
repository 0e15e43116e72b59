"""Every VAE family VideoVAE supports round-trips: load from a saved tiny model of the real class (kind read
from its config, as a user's checkpoint), encode → normalised latents → decode, as the encode stage and
`vidprep sample` use it. LTX-Video's timestep-conditioned decoder (0.9.1+) used to raise in decode."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.kit.tiny.vae import build_family
from pipeline.trainer.sample import load_vae
from stages.encode import Encode
from stages.models.vae import VideoVAE
from stages.probe import Probe
from stages.split import Split

# kind → (class, spatial stride, temporal stride) of the tiny models
FAMILIES = {"kl": ("AutoencoderKL", 4, 1), "wan": ("AutoencoderKLWan", 4, 2),
            "cogvideox": ("AutoencoderKLCogVideoX", 4, 2), "hunyuan": ("AutoencoderKLHunyuanVideo", 4, 4),
            "ltx": ("AutoencoderKLLTXVideo", 4, 2), "ltx_timestep": ("AutoencoderKLLTXVideo", 4, 2)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("vaes")


@pytest.mark.parametrize("kind", FAMILIES)
def test_encode_then_decode_round_trips_shapes(folder, kind):
    class_name, spatial, temporal = FAMILIES[kind]
    vae = VideoVAE.load(build_family(folder, kind))  # kind "auto": the class from the saved config
    assert (vae.class_name, vae.spatial_stride, vae.temporal_stride) == (class_name, spatial, temporal)
    frames = 1 + 2 * temporal  # a valid causal length: 1 + k * stride
    assert vae.valid_frame_count(frames) and (not vae.is_video or not vae.valid_frame_count(frames + 1))
    pixels = torch.rand(2, 3, frames, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean, logvar = vae.encode(pixels)
    latent_frames = frames if not vae.is_video else 1 + (frames - 1) // temporal
    assert mean.shape == logvar.shape == (2, 4, latent_frames, 32 // spatial, 48 // spatial)
    decoded = vae.decode(mean)
    assert decoded.shape == pixels.shape and torch.isfinite(decoded).all()
    assert torch.equal(decoded, vae.decode(mean))  # deterministic, the timestep decoder's noise included


def test_the_timestep_conditioned_decoder_needs_its_timestep(folder):
    vae = VideoVAE.load(build_family(folder, "ltx_timestep"))
    assert vae.timestep_conditioned
    z = torch.zeros(1, 4, 2, 8, 8)
    with pytest.raises(Exception):
        vae.model.decode(z)  # what decode(z) used to call
    assert vae.decode(z).shape == (1, 3, 3, 32, 32)


@pytest.fixture(scope="module")
def clips(corpus):
    return Split(min_clip_s=0.5)(Probe()(pa.table({"source_uri": [corpus["three_scenes.mp4"][0]]})))


@pytest.mark.parametrize("kind", ["kl", "wan", "cogvideox", "hunyuan", "ltx_timestep"])
def test_the_encode_stages_latents_decode_as_vidprep_sample_loads_them(folder, clips, kind):
    """encode stage → a shard row (latent bytes + latent_meta) → the VAE `vidprep sample` loads from that
    metadata → decoded pixels of the row's bucket shape."""
    stage = Encode(vae=build_family(folder, kind), vae_kind="auto", vae_subfolder=None, resolutions=[64],
                   frame_counts=[8, 16] if kind == "kl" else [9, 17], text_encoder=None)
    stage.setup()
    rows = [r for r in stage(clips).to_pylist() if r["latent"] is not None]
    assert rows, "no clip was encoded"
    row = rows[0]
    vae = load_vae(json.loads(row["latent_meta"]), "cpu")
    assert vae.class_name == FAMILIES[kind][0]
    latent = np.frombuffer(row["latent"], np.float16).reshape(row["latent_shape"]).astype(np.float32)
    video = vae.decode(torch.from_numpy(latent)[None])
    frames, height, width = map(int, row["bucket"].split("x"))
    assert video.shape == (1, 3, frames, height, width) and torch.isfinite(video).all()
