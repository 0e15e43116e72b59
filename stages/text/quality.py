"""Text helpers of the caption and expand stages: quality signals, stock openings, versions.

Quality signals are cheap and stored for every captioned clip, so degenerate
captions can be found and filtered later in SQL:
  - `repetition(ids)`: share of repeated n-grams in the generated tokens
    (0 = none; a model stuck in a loop goes towards 1),
  - token counts, empty and truncated flags (computed where text is generated).
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Sequence

# "The video shows", "In this clip,", "This footage depicts"... at the very start of a caption.
_STOCK = re.compile(
    r"^\s*(?:(?:in|within)\s+(?:the|this)\s+(?:video|clip|footage|scene|image|frames?)\s*,?\s*"
    r"|(?:the|this)\s+(?:video|clip|footage|scene|image|sequence)\s+"
    r"(?:shows|depicts|features|captures|presents|displays|showcases|is\s+showing)\s*(?:that\s+)?,?\s*)",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def repetition(ids: Sequence[int], n: int = 3) -> float:
    """Share of n-grams that repeat an earlier one: 0.0 for varied text, → 1.0 for a loop."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def strip_stock_opening(text: str) -> str:
    """Drop a stock opening ("The video shows …") and capitalise what follows."""
    stripped = text
    while True:  # "In this video, the clip shows ..." has two
        match = _STOCK.match(stripped)
        if not match or match.end() == 0:
            break
        stripped = stripped[match.end():]
    stripped = stripped.strip()
    return stripped[:1].upper() + stripped[1:] if stripped != text.strip() else text.strip()


def first_sentence(text: str, max_words: int) -> str:
    """The first sentence of `text`, cut to `max_words` words."""
    sentence = _SENTENCE.split(text.strip(), maxsplit=1)[0] if text.strip() else ""
    words = sentence.split()
    return " ".join(words[:max_words]) if len(words) > max_words else sentence


def prompt_hash(*parts: Any) -> str:
    """Short stable hash of everything that shapes a prompt (templates, system text, input mode)."""
    data = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def settings_json(settings: dict[str, Any]) -> str:
    """Generation settings as the canonical JSON string stored per row."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def check_template(template: str, field_name: str, allowed: Sequence[str]) -> None:
    """ValueError("field: why") unless `template` formats with exactly the placeholders it may use."""
    import string

    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(f"{field_name}: not a valid template: {err}") from None
    unknown = sorted(n for n in names if n not in allowed)
    if unknown:
        raise ValueError(f"{field_name}: unknown placeholder {{{unknown[0]}}} (allowed: "
                         f"{', '.join('{' + a + '}' for a in allowed) or 'none'})")
