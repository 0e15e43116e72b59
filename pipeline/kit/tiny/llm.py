"""A tiny random Qwen3 causal LM (the default expander's architecture), saved like a hub checkpoint.

`Qwen3ForCausalLM` (tiny: 2 layers, 64 wide; larger presets in SIZES for the
benchmark) with the locally trained byte-level BPE
tokenizer and ChatML template of `pipeline.kit.tiny._chat`. The expand stage and
`vidprep expand` load the folder through AutoTokenizer and
AutoModelForCausalLM exactly as they load `Qwen/Qwen3-4B-Instruct-2507`.
Weights are random: it writes meaningless text, never the JSON the expander
asks for, so every clip takes the fallback path (and the catalog says so).
"""
from __future__ import annotations

from pathlib import Path

from stages.models.loading import import_torchvision

# Sizes: `tiny` for tests and the demo, `small` for the CPU benchmark, `real` = Qwen3-4B-Instruct-2507's
# published shapes (random weights: a GPU benchmark of the real architecture, no download).
SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, initializer_range=0.25, tie_word_embeddings=False),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, tie_word_embeddings=False),
    "real": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                 num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, vocab_size=151936),
}


# What tests teach the tiny LM to answer (fit_reply), under this system prompt: a real generated reply to parse.
TAUGHT_REPLY = '{"long": "The video shows a red fox trotting through deep snow at dawn.", "short": "A fox in snow."}'
TAUGHT_SYSTEM = "Reply with the JSON caption."

def build(folder: str | Path, seed: int = 0, size: str = "tiny") -> dict[str, str]:
    """Save a random Qwen3 LM of `size` to `folder` (skipped when already there); returns {"llm": folder}."""
    folder = Path(folder)
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        return {"llm": str(folder)}
    import_torchvision()  # before any transformers model class (see stages/models/loading.py)
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from pipeline.kit.tiny._chat import random_model, train_tokenizer

    tokenizer = train_tokenizer(seed=seed)
    preset = {"vocab_size": len(tokenizer), **SIZES[size]}
    config = Qwen3Config(max_position_embeddings=32768, rope_parameters={"rope_type": "default", "rope_theta": 5e6},
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                         **preset)
    model = random_model(Qwen3ForCausalLM, config, size, seed, tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"llm": str(folder)}


def fit_reply(base: str | Path, folder: str | Path, reply: str, system_prompt: str, steps: int = 60,
              seed: int = 0) -> str:
    """The tiny LM of `base`, trained for a few seconds to answer every expander prompt with `reply`.

    Real training (Adam, loss on the reply tokens only) on prompts rendered by
    the Expander with `system_prompt`, so tests can exercise the expander's
    success path on text a model really generated. Returns `folder`.
    """
    import_torchvision()
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.kit.tiny._chat import corpus
    from stages.models.expander import Expander
    from stages.expand import Expand

    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base).train()
    expander = Expander(Expand(model=str(base), system_prompt=system_prompt))
    expander.tokenizer = tokenizer
    texts = corpus(40, seed=seed)
    prompts = [expander.render(expander.caption_request(t) if i % 2 else expander.upsample_request(t))
               for i, t in enumerate(texts)]
    answer = tokenizer(reply + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    rng = random.Random(seed)
    for _ in range(steps):
        rows = [tokenizer(p, add_special_tokens=False)["input_ids"] + answer for p in rng.sample(prompts, 8)]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
            labels[i, len(row) - len(answer):len(row)] = torch.tensor(answer)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    Path(folder).mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
