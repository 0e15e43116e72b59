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
