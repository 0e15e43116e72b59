"""Near-duplicate clips: greedy in a fixed order, candidates from random-hyperplane LSH.

Rule (what `near_duplicate_of:<clip_id>` means): walk the clips that pass the
filter in a fixed order — (source_uri, start_frame, clip_id), so the first
occurrence in source order is kept, whichever worker scored it first — and
reject a clip when its cosine distance (1 - cos) to an already kept clip is
<= `max_distance`; it names the most similar such clip.

Method. Comparing every clip with every kept clip is O(N^2 D). Instead each
unit embedding, centred on the set's mean (CLIP embeddings sit in a narrow
cone; centring spreads them so random hyperplanes split them evenly), gets
`bands` hash keys of `bits` sign bits each (SimHash). A clip is compared
exactly (float32 dot products) only with kept clips that share at least one
key. Two vectors at angle t agree on a bit with probability 1 - t/pi, so they
share a band with p^bits and are found with 1 - (1 - p^bits)^bands.
`bits = clamp(ceil(log2 N), 8, 24)` keeps about one unrelated kept clip per
bucket. Decisions are exact (no false positives); recall < 1 for pairs near
the threshold (tests/pipeline/test_dedup.py measures it against brute force).

Cost for N clips of dimension D: hashing O(N D bands bits) as one matmul
(N=1M, D=768, 32x20 bits: ~1 TFLOP, minutes on CPU); lookups O(N bands) dict
operations in Python (~1 µs each); verification O(N c D) for c candidates
per clip; memory: the float16 embeddings, N D 2 bytes (1M x 768 = 1.5 GB),
plus N bands int64 keys. Only duplicates never enter the index, so a mass of
copies (a channel intro in 10,000 videos) stays linear.
"""
from __future__ import annotations

import math

import numpy as np

EPS = 1e-6  # float16 storage: identical clips may sit 1e-7 apart after renormalising
EXACT_BELOW = 2048  # fewer clips: compare with every kept clip (exact, and cheap at this size)


def lsh_bits(count: int) -> int:
    return int(min(24, max(8, math.ceil(math.log2(max(count, 2))))))


def near_duplicates(embeddings: np.ndarray, max_distance: float, bands: int = 32, bits: int | None = None,
                    seed: int = 0, exact_below: int = EXACT_BELOW) -> np.ndarray:
    """(N, D) embeddings in decision order → (N,) index of the kept clip each duplicates, -1 if kept."""
    count = len(embeddings)
    if count < exact_below:
        return brute_force(embeddings, max_distance)
    duplicate_of = np.full(count, -1, dtype=np.int64)
    unit = _unit(embeddings.astype(np.float32))  # (N, D)
    keys = signatures(unit, bands, bits or lsh_bits(count), seed)  # (N, bands)
    index: list[dict[int, list[int]]] = [{} for _ in range(bands)]  # band → key → kept rows
    threshold = 1.0 - max_distance - EPS
    for row in range(count):
        candidates = {kept for band, key in enumerate(keys[row]) for kept in index[band].get(int(key), ())}
        if candidates:
            kept_rows = np.fromiter(sorted(candidates), dtype=np.int64)
            sims = unit[kept_rows] @ unit[row]  # (c,)
            best = int(np.argmax(sims))  # first maximum: the earliest of equally similar clips
            if sims[best] >= threshold:
                duplicate_of[row] = kept_rows[best]
                continue
        for band, key in enumerate(keys[row]):
            index[band].setdefault(int(key), []).append(row)
    return duplicate_of


def brute_force(embeddings: np.ndarray, max_distance: float) -> np.ndarray:
    """The same rule with every kept clip compared: the reference the LSH version is tested against."""
    unit = _unit(embeddings.astype(np.float32))
    duplicate_of = np.full(len(unit), -1, dtype=np.int64)
    kept = np.empty_like(unit)  # (kept, D), filled in order
    kept_rows: list[int] = []
    for row in range(len(unit)):
        if kept_rows:
            sims = kept[:len(kept_rows)] @ unit[row]
            best = int(np.argmax(sims))
            if sims[best] >= 1.0 - max_distance - EPS:
                duplicate_of[row] = kept_rows[best]
                continue
        kept[len(kept_rows)] = unit[row]
        kept_rows.append(row)
    return duplicate_of


def signatures(unit: np.ndarray, bands: int, bits: int, seed: int = 0, chunk: int = 65536,
               centre: np.ndarray | None = None) -> np.ndarray:
    """(N, D) unit vectors → (N, bands) int64 keys: sign bits of `bands * bits` seeded random projections
    around `centre` (1, D) (default: the set's mean; the incremental index freezes its own)."""
    planes = hyperplanes(unit.shape[1], bands, bits, seed)  # (D, bands*bits)
    centre = unit.mean(0, keepdims=True) if centre is None else centre  # (1, D)
    weights = (1 << np.arange(bits, dtype=np.int64))  # (bits,)
    keys = np.empty((len(unit), bands), dtype=np.int64)
    for start in range(0, len(unit), chunk):
        signs = ((unit[start:start + chunk] - centre) @ planes) > 0  # (n, bands*bits)
        keys[start:start + chunk] = signs.reshape(-1, bands, bits).astype(np.int64) @ weights  # (n, bands)
    return keys


def hyperplanes(dim: int, bands: int, bits: int, seed: int = 0) -> np.ndarray:
    """(D, bands*bits) the seeded random projections behind `signatures` (the same for the same arguments)."""
    return np.random.default_rng(seed).standard_normal((dim, bands * bits)).astype(np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Stored (float16) embeddings → float32 unit rows, exactly as the passes here compare them."""
    return _unit(x.astype(np.float32))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
