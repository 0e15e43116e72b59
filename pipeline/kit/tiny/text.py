"""A tiny random T5 encoder with a locally trained word-level tokenizer (saved like a hub checkpoint)."""
from __future__ import annotations

from pathlib import Path

WORDS = """a the of and in on with at to from by is are video shows camera light scene person people dog cat
car street beach forest kitchen red green blue yellow white black bright dark slow fast close wide shot
walking running sitting moving water sky tree trees road city night day sun snow fox bird table window""".split()


def build(folder: str | Path) -> dict[str, str]:
    import torch

    from stages.models.loading import import_torchvision

    import_torchvision()
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    folder = Path(folder)
    if not (folder / "config.json").exists():
        vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
        core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        core.pre_tokenizer = pre_tokenizers.Whitespace()
        core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])  # as T5
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>",
                                            unk_token="<unk>", model_max_length=64)
        torch.manual_seed(0)
        config = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        T5EncoderModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return {"text_t5": str(folder)}
