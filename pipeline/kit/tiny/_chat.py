"""A locally trained tokenizer with a ChatML chat template, shared by the tiny VLM and LLM.

A byte-level BPE (the `tokenizers` library, as GPT-2/Qwen tokenizers are) trained
in about a second on a few hundred made-up scene descriptions, JSON snippets and
the stages' default prompts:
any text encodes (no unknown tokens), the vocabulary is small enough for tiny
models, and the special tokens and chat template follow Qwen's ChatML, so the
stages render prompts exactly as they would for the real checkpoints.
"""
from __future__ import annotations

import itertools
import random

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

# ChatML as Qwen2/Qwen3(-VL) write it; list content parts may be text, image or video.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' %}{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_SUBJECTS = ["a red fox", "two children", "a woman in a blue coat", "an old man", "a black dog", "a cyclist",
             "a flock of birds", "a sailboat", "a chef", "a grey cat", "a crowd", "a train", "a dancer"]
_ACTIONS = ["walks slowly", "runs across the frame", "jumps over a log", "turns toward the camera",
            "rides along the road", "cooks at a stove", "sits still", "moves to the left", "waves"]
_SETTINGS = ["in deep snow", "on a city street at night", "in a sunlit kitchen", "on a beach at dawn",
             "in a dense forest", "inside a busy station", "on a mountain ridge", "in a small studio"]
_CAMERA = ["The camera pans left.", "A static wide shot.", "The camera tracks the subject.",
           "A slow zoom in.", "Handheld close-up.", "An aerial view."]
_LIGHT = ["Soft warm light.", "Harsh midday sun.", "Cool blue tones.", "Neon reflections.", "Overcast light."]


def corpus(n: int = 600, seed: int = 0) -> list[str]:
    """Made-up captions in the styles the stages ask for, plus the JSON the expander expects."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        subject, action, setting = rng.choice(_SUBJECTS), rng.choice(_ACTIONS), rng.choice(_SETTINGS)
        long = f"{subject.capitalize()} {action} {setting}. {rng.choice(_CAMERA)} {rng.choice(_LIGHT)}"
        lines += [long, f'{{"long": "{long}", "short": "{subject.capitalize()} {action}."}}',
                  f"The video shows {subject} who {action} {setting}."]
    lines += [" ".join(words) for words in itertools.product(["system", "user", "assistant"],
                                                               ["Describe", "Rewrite", "Return", "JSON"])]
    return lines + _stage_prompts() * 50  # so prompts take about as many tokens as with a real tokenizer


def _stage_prompts() -> list[str]:
    from stages import caption, expand

    e = expand.Expand
    return [caption.DEFAULT_PROMPT, expand.SYSTEM_PROMPT, e.prompt_template, e.source_template, e.upsample_template]


def train_tokenizer(vocab_size: int = 1024, seed: int = 0):
    """A PreTrainedTokenizerFast with ChatML special tokens and chat template (pad = <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(seed=seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:], chat_template=CHAT_TEMPLATE,
        padding_side="left", clean_up_tokenization_spaces=False,
    )


def random_model(model_cls, config, size: str, seed: int, tokenizer):
    """A seeded, randomly initialised `model_cls`: "real"-size presets go to a GPU in bf16 when one is there."""
    import torch

    torch.manual_seed(seed)
    with torch.device("cuda" if size == "real" and torch.cuda.is_available() else "cpu"):
        model = model_cls(config).to(torch.bfloat16 if size == "real" else torch.float32)
    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
