"""Tiny random models of the real architectures, built and saved locally.

No weights can be downloaded on the machines vidprep is developed and tested
on, so the demo and the tests build small, randomly initialised models of the
same classes the default config names, save them to disk, and load them back
through the same code path a user's hub id or local path takes. They produce
meaningless scores and captions; they prove the plumbing, not the quality.

Each module here has `build(folder) -> dict[str, str]` (model name → saved
path); BUILDERS lists them for `vidprep demo-models`.
"""
from __future__ import annotations

import importlib
from pathlib import Path

BUILDERS: dict[str, str] = {  # name → module under pipeline.kit.tiny, each with build(folder)
    "vae": "vae",
    "text": "text",
    "vlm": "vlm",  # tiny Qwen3-VL for stage caption
    "llm": "llm",  # tiny Qwen3 causal LM for stage expand and `vidprep expand`
    "clip": "clip",  # tiny open_clip ViT CLIP + LAION-shaped aesthetic head for stage clip_score
}


def build_all(folder: str | Path) -> dict[str, str]:
    """Build every tiny model into `folder/<name>/` (skipping ones already built); returns their paths."""
    built: dict[str, str] = {}
    for name, module in BUILDERS.items():
        target = Path(folder) / name
        built.update(importlib.import_module(f"pipeline.kit.tiny.{module}").build(target))
    return built
