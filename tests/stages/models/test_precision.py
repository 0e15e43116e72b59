"""Separate VAE and text-encoder dtypes with per-family defaults; the text encoder from a diffusers-style
subfolder; the sampler's text encoder loaded once; encode in bf16 on CPU (issue 13, item 4 and 6)."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.kit.tiny import text as tiny_text
from pipeline.kit.tiny import vae as tiny_vae
from stages.models.text_encoder import TextEncoder
from stages.models.vae import VideoVAE, family_dtype


@pytest.mark.parametrize("class_name, config, expected", [
    ("AutoencoderKLWan", {}, torch.float32),  # Wan's docs load its VAE in fp32
    ("AutoencoderKL", {"force_upcast": True}, torch.float32),  # SD VAEs overflow in half precision
    ("AutoencoderKL", {"force_upcast": False}, torch.bfloat16),
    ("AutoencoderKLCogVideoX", {"force_upcast": True}, torch.float32),
    ("AutoencoderKLHunyuanVideo", {}, torch.float16),
    ("AutoencoderKLLTXVideo", {}, torch.bfloat16),
])
def test_family_dtypes_on_gpu(class_name, config, expected):
    assert family_dtype(class_name, SimpleNamespace(**config), "cuda") == expected
    assert family_dtype(class_name, SimpleNamespace(**config), "cpu") == torch.float32


def test_an_explicit_vae_dtype_wins(tmp_path):
    path = tiny_vae.build(tmp_path)["vae_wan"]
    assert VideoVAE.load(path).model.dtype == torch.float32
    assert VideoVAE.load(path, dtype=torch.bfloat16).model.dtype == torch.bfloat16


@pytest.fixture(scope="module")
def diffusers_style_repo(tmp_path_factory):
    """A T5 encoder in text_encoder/ and its tokenizer in tokenizer/, as in CogVideoX's repository."""
    made = tiny_text.build(tmp_path_factory.mktemp("t5"))["text_t5"]
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(made, repo / "text_encoder", ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    shutil.copytree(made, repo / "tokenizer", ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    return str(repo), made


def test_text_encoder_loads_from_a_subfolder_with_its_sibling_tokenizer(diffusers_style_repo):
    repo, flat = diffusers_style_repo
    from_repo = TextEncoder.load(repo, subfolder="text_encoder", max_tokens=16)
    alone = TextEncoder.load(flat, max_tokens=16)
    a, b = from_repo.encode(["a red fox in snow"])[0], alone.encode(["a red fox in snow"])[0]
    assert a.shape == b.shape and np.array_equal(a, b)


def test_the_sampler_loads_its_text_encoder_once(diffusers_style_repo, monkeypatch):
    from pipeline.trainer import sample

    repo, _ = diffusers_style_repo
    loads = []
    real = TextEncoder.load
    monkeypatch.setattr(TextEncoder, "load", classmethod(lambda cls, *a, **k: loads.append(a) or real(*a, **k)))
    meta = {"text_encoder": repo, "text_kind": "t5", "text_subfolder": "text_encoder", "text_max_tokens": 16}
    first = sample.encode_prompt("a red fox", meta, "cpu")
    second = sample.encode_prompt("a dog on a beach", meta, "cpu")
    assert len(loads) == 1 and first.shape[1] == second.shape[1] == 32


def test_encode_in_bf16_on_cpu_gives_finite_latents(tmp_path, corpus):
    from stages.encode import Encode
    from stages.probe import Probe
    from stages.split import Split

    models = {**tiny_vae.build(tmp_path / "vae"), **tiny_text.build(tmp_path / "text")}
    clips = Split(min_clip_s=0.5)(Probe()(pa.table({"source_uri": [corpus["three_scenes.mp4"][0]]})))
    stage = Encode(vae=models["vae_wan"], vae_kind="auto", vae_subfolder=None, resolutions=[64], frame_counts=[9],
                   text_encoder=models["text_t5"], text_max_tokens=32, dtype="bfloat16", text_encoder_dtype="bfloat16")
    stage.setup()
    assert stage.model.model.dtype == torch.bfloat16 and stage.text.model.dtype == torch.bfloat16
    rows = [r for r in stage(clips).to_pylist() if r["latent"] is not None]
    assert rows
    for row in rows:
        latent = np.frombuffer(row["latent"], np.float16)
        assert latent.size == np.prod(row["latent_shape"]) and np.isfinite(latent).all()
