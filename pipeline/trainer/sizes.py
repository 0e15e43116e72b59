"""The DiT size registry (torch-free, so the CLI can offer the sizes as choices without importing torch).

Depth, width and heads are the DiT paper's (Peebles & Xie 2023, Table 1); the
suffix is the spatial patch size. With the 2D image configuration
(`DiTConfig.image`) they reproduce the paper's parameter counts, e.g. DiT-XL/2
675,129,632 counted as facebookresearch/DiT's train.py counts them.
"""
from __future__ import annotations

_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}

DiT_models: dict[str, dict[str, int]] = {
    f"DiT-{name}/{patch}": {"depth": depth, "hidden_size": hidden, "num_heads": heads, "patch_size": patch}
    for name, (depth, hidden, heads) in _SIZES.items() for patch in (2, 4, 8)
}
