"""CLIP is built with the activation its weights were trained with (issue 13): QuickGELU for OpenAI's."""
from __future__ import annotations

import pytest

from stages.models import clip as clip_mod
from stages.models.clip import quick_gelu_for


@pytest.mark.parametrize("model,pretrained,expected", [
    ("ViT-L-14", "openai", True),  # open_clip alone builds GELU here and only warns
    ("ViT-B-32", "openai", True),
    ("ViT-L-14-quickgelu", "openai", True),
    ("ViT-L-14", "laion2b_s32b_b82k", False),
    ("ViT-L-14", "/models/clip.safetensors", False),  # a file: its own config decides
    ("hf-hub:org/repo", None, False),
])
def test_the_tags_record_decides_the_activation(model, pretrained, expected):
    assert quick_gelu_for(model, pretrained) is expected


def test_load_clip_builds_quickgelu_for_openai_weights(monkeypatch):
    from stages.models.loading import import_torchvision

    import_torchvision()  # before open_clip, as load_clip does
    import open_clip

    built = {}

    def create_model(name, pretrained=None, device=None, force_quick_gelu=False):
        built.update(name=name, pretrained=pretrained, force_quick_gelu=force_quick_gelu)
        raise RuntimeError("stop here: no weights offline")

    monkeypatch.setattr(open_clip, "create_model", create_model)
    with pytest.raises(RuntimeError, match="stop here"):
        clip_mod.load_clip("ViT-L-14", "openai", device="cpu")
    assert built == {"name": "ViT-L-14", "pretrained": "openai", "force_quick_gelu": True}


def test_the_default_config_names_the_quickgelu_model():
    from pathlib import Path

    from pipeline.config import load_config

    stages = load_config(Path(__file__).parents[3] / "configs" / "default.yaml").stages
    assert stages["clip_score"].model == "ViT-L-14-quickgelu" and stages["expand"].clip_model == "ViT-L-14-quickgelu"


def test_the_aesthetic_head_refuses_a_clip_it_was_not_trained_on():
    from pathlib import Path

    from pipeline.config import load_config
    from pipeline.typed import ConfigError

    default = Path(__file__).parents[3] / "configs" / "default.yaml"
    load_config(default)  # ViT-L-14-quickgelu/openai is the head's ViT-L-14/openai
    with pytest.raises(ConfigError, match="stages.clip_score.aesthetic_clip: the aesthetic head was trained on "
                                          "ViT-L-14/openai, but this stage's CLIP is ViT-B-32/openai"):
        load_config(default, ["stages.clip_score.model=ViT-B-32"])


def test_the_aesthetic_heads_checksum_is_verified(tmp_path):
    import hashlib

    import torch

    from pipeline.kit.tiny.clip import build
    from stages.models.clip import load_aesthetic

    head = build(tmp_path / "clip")["clip_aesthetic"]
    digest = hashlib.sha256(open(head, "rb").read()).hexdigest()
    assert load_aesthetic(head, 32, "cpu", torch.float32, sha256=digest) is not None
    with pytest.raises(ValueError, match="aesthetic_sha256: .* has sha256 " + digest):
        load_aesthetic(head, 32, "cpu", torch.float32, sha256="0" * 64)
