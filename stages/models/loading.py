"""Private helpers for model stages: importing the model libraries, devices and dtypes.

PyPI's torchvision is a CUDA build; beside a CPU torch its compiled extension
fails to load and its import dies with "operator torchvision::nms does not
exist" — and open_clip, timm and parts of transformers/diffusers import it.
`import_torchvision()` defines placeholder schemas for those operators so the
pure-Python parts import; calling one of its compiled ops would still fail,
and vidprep never does. With a matching torchvision it is a plain import.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger("vidprep")
_SAID: set[tuple[str, str]] = set()  # (stage, what) already logged in this worker

_LIBRARIES: list[Any] = []  # a torch.library.Library unregisters its ops when collected
_TORCHVISION_OPS = ("nms", "qnms", "roi_align", "_roi_align_backward", "ps_roi_align", "_ps_roi_align_backward",
                    "roi_pool", "_roi_pool_backward", "ps_roi_pool", "_ps_roi_pool_backward", "qroi_align",
                    "deform_conv2d", "_deform_conv2d_backward")


def import_torchvision():
    """Import torchvision, working around a compiled extension that doesn't match torch."""
    import torch

    try:
        import torchvision

        return torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import left half-initialised modules
    library = torch.library.Library("torchvision", "FRAGMENT")
    _LIBRARIES.append(library)
    for op in _TORCHVISION_OPS:
        if not hasattr(torch.ops.torchvision, op):
            library.define(f"{op}(Tensor x) -> Tensor")
    import torchvision

    return torchvision


def hub_revision(ref: str | None, revision: str | None) -> str | None:
    """The revision to load `ref` at: a revision pins a hub repository's commit, so for a local folder
    there is none (the folder is what it is; configs/default.yaml pins its hub ids, and pointing a
    model field at a folder should not also mean clearing the pin)."""
    return None if ref and os.path.isdir(ref) else revision


def model_label(ref: str, revision: str | None) -> str:
    """What a row records as its model: the hub id with its pinned commit, or the folder."""
    revision = hub_revision(ref, revision)
    return ref + (f"@{revision}" if revision else "")


def device_for(resources, stage: str = "") -> str:
    """cuda when the stage asked Ray for a GPU and one is visible, else cpu — never silently.

    `resources`: the stage's Resources (or a GPU share). A stage that reserved a GPU but sees no CUDA
    (a CPU torch build, a driver mismatch, CUDA_VISIBLE_DEVICES) warns once per worker, or raises
    when `resources.require_gpu` is set.
    """
    import torch

    gpus = getattr(resources, "gpus", resources)
    gpus = 0.0 if gpus == "auto" else float(gpus)  # auto is planned before workers start; unplanned: CPU
    device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
    name = f"stage {stage}" if stage else "a model"
    if gpus > 0 and device == "cpu":
        why = (f"{name} reserved {gpus:g} GPU but torch {torch.__version__} sees no CUDA device "
               f"(cuda build: {torch.version.cuda or 'none'}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")
        if getattr(resources, "require_gpu", False):
            raise RuntimeError(f"{why}; resources.require_gpu is set")
        if (stage, "fallback") not in _SAID:
            _SAID.add((stage, "fallback"))
            log.warning("%s: running on CPU, slowly", why)
    if stage and (stage, device) not in _SAID:
        _SAID.add((stage, device))
        log.info("stage %s: device %s", stage, device)
    return device


def dtype_for(name: str, device: str):
    """`auto`: bfloat16 on GPU, float32 on CPU (CPU half precision is slow and inexact)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
