"""A tiny open_clip CLIP (ViT image tower + text transformer) and a tiny LAION aesthetic head.

Same classes as ViT-B-32 / ViT-L-14 (open_clip.model.CLIP with a VisionTransformer
and a text Transformer), only narrow and shallow: 64x64 images in 16x16 patches,
2 layers of width 64 (vision) and 32 (text), a 32-d joint space. The text tower
keeps CLIP's 49408-token BPE vocabulary so open_clip's bundled tokenizer works
offline. Weights are random (seeded), saved as a plain state dict, and loaded
back the way a user's checkpoint is: `model_config` registers the JSON (file
stem = model name), then `open_clip.create_model(name, pretrained=<file>)`.

The aesthetic head has the improved-aesthetic-predictor's layers (D→1024→128→64→16→1)
with its key names (`layers.0.weight` …), random weights.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

NAME = "vidprep-tiny-vit"  # the open_clip model name (the config file's stem)
CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
SEED = 0


def build(folder: str | Path) -> dict[str, str]:
    """Write the config, CLIP weights and aesthetic head into `folder` (kept if already there)."""
    folder = Path(folder)
    paths = {"clip_config": folder / f"{NAME}.json", "clip": folder / "open_clip_model.pt",
             "clip_aesthetic": folder / "aesthetic_head.pth"}
    if all(p.is_file() for p in paths.values()):
        return {name: str(path) for name, path in paths.items()}
    folder.mkdir(parents=True, exist_ok=True)

    from stages.models.loading import import_torchvision

    import_torchvision()  # before open_clip (see stages/models/loading.py)
    import open_clip
    import torch

    from stages.models.clip import aesthetic_head

    _atomic(paths["clip_config"], lambda tmp: tmp.write_text(json.dumps(CONFIG, indent=1)))
    open_clip.add_model_config(paths["clip_config"])
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(SEED)
        model = open_clip.create_model(NAME, pretrained=None)  # random init, open_clip's own scheme
        head = aesthetic_head(CONFIG["embed_dim"])
    finally:
        torch.random.set_rng_state(generator_state)  # leave the caller's random stream alone
    _atomic(paths["clip"], lambda tmp: torch.save(model.state_dict(), tmp))
    head_state = {f"layers.{k}": v for k, v in head.state_dict().items()}  # the release's key names
    _atomic(paths["clip_aesthetic"], lambda tmp: torch.save(head_state, tmp))
    return {name: str(path) for name, path in paths.items()}


def _atomic(path: Path, write) -> None:
    """Write through a temporary file and rename: parallel builders never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)
