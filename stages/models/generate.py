"""Batched generation shared by the caption and expand stages (and the expander used at sampling).

Throughput on one accelerator comes from batching many requests into one
`generate` call with the KV cache on. Requests are grouped by input length
first (`length_batches`), so a batch pads little; padding is on the left, so
every row's new tokens start at the same position. `Throughput` counts new
tokens per second for the log line and the benchmark.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

log = logging.getLogger("vidprep")


def length_batches(lengths: Sequence[Any], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (ties keep input order), cut into batches of `batch_size`."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def model_ref(ref: str) -> str:
    """A hub id as it is; a local folder as an absolute path (Ray workers may run in another directory)."""
    from pathlib import Path

    return str(Path(ref).resolve()) if Path(ref).is_dir() else ref


def load_kwargs(revision: str | None, trust_remote_code: bool, attn_implementation: str | None) -> dict[str, Any]:
    """from_pretrained arguments common to processors, tokenizers and models."""
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return kwargs


def stop_ids(model, tokenizer) -> list[int]:
    """Token ids that end a generation: the model's generation config eos ids plus the tokenizer's."""
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model names no end-of-sequence token: generation could not stop")
    return ids


def generation_kwargs(max_new_tokens: int, min_new_tokens: int, stop: list[int], pad_id: int | None,
                      sample: bool = False, temperature: float = 1.0, top_p: float = 0.95) -> dict[str, Any]:
    """Arguments for `generate`: greedy by default (sampling only for retries), KV cache on."""
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
                                  eos_token_id=stop, pad_token_id=stop[0] if pad_id is None else pad_id,
                                  num_beams=1, use_cache=True, do_sample=sample)
    if sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:  # override a checkpoint's sampling defaults, which would only produce warnings
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


@dataclass
class Generated:
    ids: list[int]  # new tokens before the first stop token
    truncated: bool  # stopped by max_new_tokens, not by a stop token
    produced: int  # tokens generated for this row, the stop token included


def split_new_tokens(new_tokens, stop: Sequence[int], max_new_tokens: int) -> list[Generated]:
    """Per row of a (B, T) tensor of generated tokens: its tokens up to the first stop token."""
    stops = set(stop)
    results = []
    for row in new_tokens.tolist():
        end = next((i for i, t in enumerate(row) if t in stops), None)
        if end is None:
            results.append(Generated(row, truncated=len(row) >= max_new_tokens, produced=len(row)))
        else:
            results.append(Generated(row[:end], truncated=False, produced=end + 1))
    return results


def visible(logger: logging.Logger) -> None:
    """Make `logger`'s INFO lines reach the driver from a Ray worker, where nothing set logging up."""
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()  # stderr, which Ray forwards to the driver
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # a library that calls basicConfig later must not print each line twice


@dataclass
class Throughput:
    """New tokens and seconds spent in `generate`, summed over calls."""

    name: str
    rows: int = 0
    tokens: int = 0
    seconds: float = 0.0
    calls: list[tuple[int, int, float]] = field(default_factory=list)  # (rows, tokens, seconds) per stage call

    def __post_init__(self):
        visible(log)

    def add(self, rows: int, tokens: int, seconds: float) -> None:
        self.rows, self.tokens, self.seconds = self.rows + rows, self.tokens + tokens, self.seconds + seconds
        self.calls.append((rows, tokens, seconds))
        log.info("%s: %d rows, %d new tokens in %.2f s (%.1f tokens/s; run so far %.1f tokens/s)",
                 self.name, rows, tokens, seconds, tokens / max(seconds, 1e-9), self.tokens_per_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
