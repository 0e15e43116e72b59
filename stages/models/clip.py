"""open_clip loading and encoding, shared by clip_score, `vidprep search` and caption scoring.

    from stages.models.clip import load_clip
    clip = load_clip("ViT-L-14", "openai")               # a tag, a local weights file, or None (random)
    images = clip.encode_frames(frames)                   # (N, H, W, 3) uint8 RGB → (N, D) unit float32
    texts = clip.encode_texts(["a dog on a beach"])      # (M, D) unit float32
    cosine = images @ texts.T                             # (N, M)

Models load with open_clip's own loader (`create_model`): a built-in name plus
a pretrained tag or file, `hf-hub:org/repo` or `local-dir:/folder`, or a custom
architecture whose JSON config is registered first (`model_config`). Frames
are preprocessed as tensors (resize the short side with antialiased bicubic,
centre crop, normalise with the model's mean/std): open_clip's own transform
goes through PIL one image at a time, which is slower than the model on a GPU.
The LAION aesthetic head (`load_aesthetic`) is the improved-aesthetic-predictor
MLP, loaded from a local state dict or `hf-hub:org/repo/file`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from stages.models.loading import device_for, dtype_for, import_torchvision

SCHEMAS = ("hf-hub:", "local-dir:")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")

# Defaults for what video datasets drop; a config mapping is merged over these (null removes one).
DEFAULT_PROMPTS: dict[str, str | list[str]] = {
    "text_overlay": ["a video frame with text overlay", "a video frame with subtitles"],
    "watermark": ["a video frame with a watermark", "a video frame with a logo in the corner"],
    "black": ["a black screen", "a blank screen"],
    "blurry": "a blurry, out of focus video frame",
    "still": ["a still image", "a slideshow of photos"],
    "screen_recording": ["a screen recording of a computer desktop", "a screen recording of a phone"],
}
FIXED = {  # clip_score's fixed columns (clip_<name>): a prompt may not take these names
    "embedding": pa.list_(pa.float16()), "aesthetic": pa.float32(), "frame_consistency": pa.float32(),
    "motion": pa.float32(), "text_similarity": pa.float32(),
}


@dataclass
class Clip:
    """A loaded open_clip model in eval mode, with what encoding needs."""

    model: Any  # open_clip.model.CLIP (or CustomTextCLIP)
    tokenizer: Any
    device: str
    dtype: Any  # torch dtype of the weights
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_mode: str  # open_clip's: shortest (resize + centre crop) | longest (pad) | squash
    embed_dim: int = 0  # D, filled by load_clip

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def preprocess(self, frames):
        """uint8 (N, H, W, 3) tensor → (N, 3, S, S) normalised pixels on the model's device and dtype."""
        import torch
        import torch.nn.functional as F

        x = frames.to(self.device).permute(0, 3, 1, 2).float().div_(255)  # (N, 3, H, W) in [0, 1]
        (out_h, out_w), (h, w) = self.image_size, x.shape[-2:]
        if self.resize_mode == "shortest" and out_h == out_w:
            # torchvision Resize(int): short side → S, long side → int(S * long / short); then CenterCrop.
            scale = out_h / min(h, w)
            size = (out_h, int(out_h * w / h)) if h <= w else (int(out_w * h / w), out_w)
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False) if scale != 1 else x
            top, left = int(round((x.shape[-2] - out_h) / 2.0)), int(round((x.shape[-1] - out_w) / 2.0))
            x = x[..., top:top + out_h, left:left + out_w]
        elif self.resize_mode == "longest":
            scale = min(out_h / h, out_w / w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
            pad_h, pad_w = out_h - size[0], out_w - size[1]
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        else:  # squash, or a non-square size
            x = F.interpolate(x, size=(out_h, out_w), mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp_(0, 1)  # bicubic overshoots; PIL clamps to uint8
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).to(self.dtype)

    def encode_pixels(self, pixels):
        """(N, 3, S, S) preprocessed → (N, D) unit float32 tensor."""
        import torch

        with torch.inference_mode():
            features = self.model.encode_image(pixels).float()
        return torch.nn.functional.normalize(features, dim=-1)

    def encode_frames(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB frames (one size) → (N, D) unit float32, `batch` images per forward."""
        import torch

        frames = torch.from_numpy(np.ascontiguousarray(frames))
        parts = [self.encode_pixels(self.preprocess(frames[i:i + batch])) for i in range(0, len(frames), batch)]
        return torch.cat(parts).cpu().numpy() if parts else np.zeros((0, self.embed_dim), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Strings → (M, D) unit float32 (the tokenizer truncates at the model's context length)."""
        import torch

        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            features = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()


def load_clip(model: str, pretrained: str | None = None, *, model_config: str | None = None,
              device: str | None = None, dtype: str = "auto") -> Clip:
    """Load an open_clip model through open_clip's loader; `device` None = cuda if visible, else cpu."""
    import_torchvision()  # before open_clip: it imports torchvision (see stages/models/loading.py)
    import open_clip

    if model_config:
        register_model_config(model_config)
    device = device or device_for(1.0)
    model_obj = open_clip.create_model(model, pretrained=None if model.startswith(SCHEMAS) else pretrained,
                                       device=device, force_quick_gelu=quick_gelu_for(model, pretrained))
    torch_dtype = dtype_for(dtype, device)
    model_obj = model_obj.to(dtype=torch_dtype).eval().requires_grad_(False)
    cfg = open_clip.get_model_preprocess_cfg(model_obj)
    size = cfg.get("size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    clip = Clip(model=model_obj, tokenizer=open_clip.get_tokenizer(model), device=device, dtype=torch_dtype,
                image_size=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                resize_mode=cfg.get("resize_mode", "shortest"))
    clip.embed_dim = int(clip.encode_texts([""]).shape[1])  # the joint space's D, whatever the towers
    return clip


def quick_gelu_for(model: str, pretrained: str | None) -> bool:
    """Whether `pretrained` (an open_clip tag) was trained with QuickGELU, as OpenAI's CLIP weights were.

    open_clip builds `ViT-L-14` with plain GELU and only warns when it loads the `openai` weights into it;
    every embedding then shifts (one image's LAION aesthetic score measured 5.05 with QuickGELU, 4.44
    without). The tag's own record says which activation its weights need, so that one is built.
    """
    if not pretrained or model.startswith(SCHEMAS) or Path(pretrained).suffix in WEIGHT_SUFFIXES:
        return False  # a local file or a hub model: its own config decides
    import_torchvision()  # before open_clip (stages/models/loading.py)
    import open_clip

    return bool(open_clip.get_pretrained_cfg(model, pretrained).get("quick_gelu", False))


def same_clip(a: str, b: str) -> bool:
    """Whether two "<model>/<pretrained>" names are one CLIP: OpenAI's weights are QuickGELU whatever the
    name says (`ViT-L-14/openai` = `ViT-L-14-quickgelu/openai`), and file paths compare by file name."""
    def norm(name: str) -> tuple[str, str]:
        model, _, pretrained = name.partition("/")
        model = model.removesuffix("-quickgelu") if pretrained == "openai" else model
        return model, Path(pretrained).name if looks_like_path(pretrained) else pretrained
    return norm(a) == norm(b)


def register_model_config(path: str) -> str:
    """Register an open_clip model config JSON (its file stem becomes the model name); returns the name."""
    import open_clip

    open_clip.add_model_config(Path(path))
    return Path(path).stem


def check_model_config(path: str) -> str | None:
    """Why `path` is not an open_clip model config (None when it is); cheap enough for config time."""
    file = Path(path)
    if not file.is_file() or file.suffix != ".json":
        return f"no such .json file: {path}"
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        return f"not readable JSON: {err}"
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in data]
    return f"not an open_clip model config (missing {missing})" if missing else None


def builtin_model_names() -> set[str]:
    """open_clip's built-in architecture names, read from its config folder without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return set()
    folder = Path(spec.submodule_search_locations[0]) / "model_configs"
    return {p.stem for p in folder.glob("*.json")}


def aesthetic_head(input_size: int):
    """LAION improved-aesthetic-predictor MLP (christophschuhmann/improved-aesthetic-predictor): D → 1.

    Same modules and indices as the released `sac+logos+ava1-l14-linearMSE.pth`, so its state dict
    (`layers.0.weight` … `layers.7.bias`) loads strictly. Input: a unit-norm CLIP image embedding.
    """
    from torch import nn

    return nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


def load_aesthetic(ref: str, embed_dim: int, device: str, dtype, sha256: str | None = None):
    """Load a LAION-style aesthetic head from a local file or `hf-hub:org/repo/file`; checks its input size
    and, when given, the file's sha256 (a mirror can serve another file under the same name)."""
    import hashlib

    import torch

    path = resolve_file(ref)
    if sha256 is not None:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if digest != sha256.lower():
            raise ValueError(f"aesthetic_sha256: {ref} has sha256 {digest}, expected {sha256}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k.removeprefix("layers."): v for k, v in state.items()}  # the release nests it under `layers`
    if "0.weight" not in state:
        raise ValueError(f"aesthetic: {ref} is not an improved-aesthetic-predictor state dict")
    input_size = int(state["0.weight"].shape[1])
    if input_size != embed_dim:
        raise ValueError(f"aesthetic: the head takes {input_size}-d embeddings, the CLIP model gives {embed_dim}-d")
    head = aesthetic_head(input_size)
    head.load_state_dict(state, strict=True)
    return head.to(device=device, dtype=dtype).eval().requires_grad_(False)


def resolve_file(ref: str) -> str:
    """A local path, or `hf-hub:org/repo/path/in/repo` downloaded (and cached) by huggingface_hub."""
    if ref.startswith("hf-hub:"):
        parts = ref[len("hf-hub:"):].split("/")
        if len(parts) < 3:
            raise ValueError(f"{ref}: expected hf-hub:org/repo/filename")
        from huggingface_hub import hf_hub_download

        return hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]))
    if not Path(ref).is_file():
        raise FileNotFoundError(ref)
    return ref


def looks_like_path(value: str) -> bool:
    """A pretrained value that names a file rather than an open_clip tag."""
    return "/" in value or value.endswith(WEIGHT_SUFFIXES) or Path(value).exists()
