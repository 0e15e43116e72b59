"""Checkpoints that resume everything, written atomically.

    RESULTS/checkpoints/0000400/
        model.safetensors   the raw (non-DDP) model's weights
        ema.safetensors     the EMA weights (what `vidprep sample` uses by default)
        state.pt            optimiser, loader state (seed, epoch, batches), RNG states per rank, step
        config.json         the full TrainConfig, the DiT config, the shard index hash and the
                            data facts sampling needs (VAE/text-encoder metadata, latent mean/std, buckets)
    RESULTS/checkpoints/latest.json   {"step": 400, "path": "0000400"}

A checkpoint is written into a temporary folder (every file fsynced), renamed
into place, and only then named by `latest.json` (tmp + fsync + rename): a
crash at any point leaves the previous checkpoint as the latest.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.store.commit import _fsync_dir, atomic_write_json

LATEST = "latest.json"


def save_checkpoint(results: str | Path, step: int, model: torch.nn.Module, ema: torch.nn.Module,
                    state: dict[str, Any], config: dict[str, Any], keep: int = 3) -> Path:
    folder = Path(results) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{step:07d}"
    tmp = folder / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    meta = {"step": str(step), "format": "vidprep-dit"}
    save_file(_plain(model.state_dict()), tmp / "model.safetensors", metadata=meta)
    save_file(_plain(ema.state_dict()), tmp / "ema.safetensors", metadata=meta)
    torch.save({**state, "step": step}, tmp / "state.pt")
    (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True, default=str))
    for path in tmp.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(tmp)
    final = folder / name
    if final.exists():  # a crash after the rename but before latest.json: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(folder)
    atomic_write_json(folder / LATEST, {"step": step, "path": name})
    for old in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(results: str | Path) -> Path | None:
    pointer = Path(results) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    return pointer.parent / json.loads(pointer.read_text())["path"]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a results/checkpoints folder (→ its latest)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    for results in (path, path.parent):
        found = latest_checkpoint(results)
        if found is not None:
            return found
    raise FileNotFoundError(f"{path}: no checkpoint here (expected config.json, or checkpoints/{LATEST})")


def load_config(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "config.json").read_text())


def load_weights(path: str | Path, ema: bool = True, device: str = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / ("ema.safetensors" if ema else "model.safetensors")), device=device)


def load_state(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)


def _plain(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
