"""The caption expander: one code path for clips (stage `expand`) and for user prompts (sampling).

DALL-E 3 and Sora train on long, consistent captions written by a language
model, and at sampling time have the same model rewrite a user's short prompt
in the same style ("prompt upsampling"), so test prompts look like training
captions. `Expander` is that model: a causal LM with its chat template, asked
(system prompt = the style) for one JSON object {"long": ..., "short": ...}.

    from stages.expand import upsample  # the stage module holds the config-facing helpers
    upsample("a red fox in snow", config)  # → the long caption; config: an `Expand` stage or its fields

Replies are parsed strictly (`parse_expansion`); a reply that fails is retried
with sampling (`retries` times, seeded), and after that the row falls back to
the dense caption itself (stock opening stripped, first sentence as the short
caption), with `status="fallback"` and the reason of the last failure. Nothing
is invented: a fallback says so.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from stages.models.generate import (Throughput, Timer, generation_kwargs, length_batches, load_kwargs,
                              split_new_tokens, stop_ids)
from stages.models.loading import device_for, dtype_for, hub_revision, import_torchvision, model_label
from stages.text.quality import first_sentence, prompt_hash, repetition, settings_json, strip_stock_opening

KEYS = ("long", "short")
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)
RAW_LIMIT = 2000  # characters of an unusable reply kept in the catalog


def parse_expansion(text: str) -> tuple[dict[str, str] | None, str | None]:
    """Strict parse of a reply: `({"long", "short"}, None)`, or `(None, "<code>: <detail>")`.

    The whole reply (optionally inside one ```json fence) must be a JSON object
    with exactly the keys `long` and `short`, both non-empty strings.
    """
    body = text.strip()
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1).strip()
    if not body:
        return None, "empty: the reply has no text"
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        return None, f"not_json: {err.msg} at char {err.pos}"
    if not isinstance(data, dict):
        return None, f"not_object: got a JSON {type(data).__name__}"
    missing = [k for k in KEYS if k not in data]
    if missing:
        return None, f"missing_key: {missing[0]}"
    extra = sorted(k for k in data if k not in KEYS)
    if extra:
        return None, f"extra_key: {extra[0]}"
    for key in KEYS:
        if not isinstance(data[key], str):
            return None, f"not_string: {key} is a JSON {type(data[key]).__name__}"
        if not strip_stock_opening(data[key]):
            return None, f"empty_value: {key}"
    return {k: strip_stock_opening(data[k]) for k in KEYS}, None


@dataclass
class Expansion:
    long: str | None
    short: str | None
    status: str  # ok | fallback | skipped
    reason: str | None  # why not ok: the last attempt's parse failure, or empty_input
    attempts: int  # generations tried (0 when skipped)
    raw: str | None = None  # the last reply when it was not used (fallback), cut to RAW_LIMIT
    empty: bool = False  # the last reply was empty
    truncated: bool = False  # the last reply hit max_new_tokens
    long_tokens: int | None = None
    short_tokens: int | None = None
    long_repetition: float | None = None
    short_repetition: float | None = None


class Expander:
    """Loads the LM once; `expand` rewrites captions, `upsample_one` a user prompt. `config`: an Expand stage."""

    def __init__(self, config):
        self.config = config
        self.throughput = Throughput("expand")
        self._model = None

    def load(self) -> "Expander":
        if self._model is not None:
            return self
        import_torchvision()  # before transformers' model classes (stages/models/loading.py)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        c = self.config
        self.device = device_for(c.resources, c.name)
        self.dtype = dtype_for(c.dtype, self.device)
        revision = hub_revision(c.model, c.revision)
        self.tokenizer = AutoTokenizer.from_pretrained(c.model, **load_kwargs(revision, c.trust_remote_code, None))
        self.tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(
            c.model, dtype=self.dtype, **load_kwargs(revision, c.trust_remote_code, c.attn_implementation))
        self._model = model.to(self.device).eval()
        self.stop = stop_ids(self._model, self.tokenizer)
        return self

    def version(self) -> dict[str, str]:
        """Stored per row: which model, which prompts, which settings wrote this caption."""
        c = self.config
        return {
            "expand_model": model_label(c.model, c.revision),
            "expand_prompt_hash": prompt_hash(c.system_prompt, c.prompt_template, c.source_template,
                                              c.upsample_template, c.chat_template_kwargs),
            "expand_settings": settings_json({
                "max_new_tokens": c.max_new_tokens, "min_new_tokens": c.min_new_tokens, "decoding": "greedy",
                "retries": c.retries, "retry_temperature": c.retry_temperature, "seed": c.seed,
                "dtype": str(self.dtype).removeprefix("torch.") if self._model is not None else c.dtype}),
        }

    # -- prompts -------------------------------------------------------------------------------------------

    def caption_request(self, caption: str | None, source_text: str | None = None) -> str:
        source = self.config.source_template.format(source_text=source_text.strip()) if source_text else ""
        return self.config.prompt_template.format(caption=(caption or "").strip(), source=source)

    def upsample_request(self, prompt: str) -> str:
        return self.config.upsample_template.format(prompt=prompt.strip())

    def render(self, request: str) -> str:
        """The full prompt text the model sees: system style + request, through its chat template."""
        chat = [{"role": "system", "content": self.config.system_prompt}, {"role": "user", "content": request}]
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True,
                                                  **self.config.chat_template_kwargs)

    # -- generation ----------------------------------------------------------------------------------------

    def expand(self, requests: list[str | None], fallbacks: list[str | None]) -> list[Expansion]:
        """One Expansion per request; a None request (nothing to expand) is skipped."""
        self.load()
        results: list[Expansion | None] = [None] * len(requests)
        last: dict[int, tuple[str, str, Any]] = {}  # index → (reply, reason, Generated) of its last failure
        todo = [i for i, r in enumerate(requests) if r is not None]
        for i in set(range(len(requests))) - set(todo):
            results[i] = Expansion(None, None, "skipped", "empty_input: no caption or source text", 0)
        prompts = {i: self.render(requests[i]) for i in todo}
        for attempt in range(1 + self.config.retries):
            if not todo:
                break
            replies = self._generate([prompts[i] for i in todo], attempt)
            failed = []
            for i, (reply, generated) in zip(todo, replies):
                parsed, reason = parse_expansion(reply)
                if parsed is None and generated.truncated:
                    reason = f"truncated: no end within max_new_tokens={self.config.max_new_tokens}; {reason}"
                if parsed is None:
                    failed.append(i)
                    last[i] = (reply, reason, generated)
                else:
                    results[i] = self._finish(parsed["long"], parsed["short"], "ok", None, attempt + 1, None, generated)
            todo = failed
        for i in todo:  # every attempt failed: the honest fallback
            reply, reason, generated = last[i]
            base = strip_stock_opening(fallbacks[i] or "")  # "" (stored as null) when only an opening was left
            results[i] = self._finish(base, first_sentence(base, self.config.short_max_words), "fallback", reason,
                                      1 + self.config.retries, reply[:RAW_LIMIT], generated)
        return results  # type: ignore[return-value]

    def upsample_one(self, prompt: str) -> Expansion:
        """A user's prompt rewritten in the caption style (fallback: the prompt itself)."""
        text = prompt.strip()
        return self.expand([self.upsample_request(text) if text else None], [text])[0]

    def _generate(self, prompts: list[str], attempt: int) -> list[tuple[str, Any]]:
        import torch

        c = self.config
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        kwargs = generation_kwargs(c.max_new_tokens, c.min_new_tokens, self.stop, self.tokenizer.pad_token_id,
                                   sample=attempt > 0, temperature=c.retry_temperature)
        replies: list[tuple[str, Any] | None] = [None] * len(prompts)
        tokens = 0
        with Timer() as timer:
            for group in length_batches([len(e) for e in encoded], c.gen_batch_size):
                batch = self.tokenizer.pad({"input_ids": [encoded[j] for j in group]}, padding=True,
                                           return_tensors="pt").to(self.device)
                if attempt > 0:
                    torch.manual_seed(c.seed + 1000 * attempt + group[0])  # retries: seeded sampling
                with torch.inference_mode():
                    sequences = self._model.generate(**batch, **kwargs)
                new = sequences[:, batch["input_ids"].shape[1]:]
                for j, generated in zip(group, split_new_tokens(new, self.stop, c.max_new_tokens)):
                    replies[j] = (self.tokenizer.decode(generated.ids, skip_special_tokens=True), generated)
                    tokens += generated.produced
        self.throughput.add(len(prompts), tokens, timer.seconds)
        return replies  # type: ignore[return-value]

    def _finish(self, long: str, short: str, status: str, reason: str | None, attempts: int, raw: str | None,
                generated) -> Expansion:
        long_ids = self.tokenizer(long, add_special_tokens=False)["input_ids"]
        short_ids = self.tokenizer(short, add_special_tokens=False)["input_ids"]
        return Expansion(long or None, short or None, status, reason, attempts, raw, empty=not generated.ids,
                         truncated=generated.truncated, long_tokens=len(long_ids), short_tokens=len(short_ids),
                         long_repetition=repetition(long_ids), short_repetition=repetition(short_ids))
