"""Private helpers for model stages: importing the model libraries, devices and dtypes.

PyPI's torchvision is a CUDA build; beside a CPU torch its compiled extension
fails to load and its import dies with "operator torchvision::nms does not
exist" — and open_clip, timm and parts of transformers/diffusers import it.
`import_torchvision()` defines placeholder schemas for those operators so the
pure-Python parts import; calling one of its compiled ops would still fail,
and vidprep never does. With a matching torchvision it is a plain import.
"""
from __future__ import annotations

import sys
from typing import Any

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


def device_for(gpus: float) -> str:
    """cuda when the stage asked Ray for a GPU and one is visible, else cpu."""
    import torch

    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


def dtype_for(name: str, device: str):
    """`auto`: bfloat16 on GPU, float32 on CPU (CPU half precision is slow and inexact)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
