"""A tiny random Qwen3-VL (the default captioner's architecture), saved like a hub checkpoint.

`Qwen3VLForConditionalGeneration`: tiny = a 2-layer, 64-wide language model
and a 2-block, 32-wide vision tower (16-pixel patches, 2x2 merge, 2-frame
tubelets, one DeepStack layer); SIZES has larger presets for the benchmark.
With it: a locally trained byte-level BPE tokenizer with Qwen's ChatML
template, and a `Qwen3VLProcessor` (image + video processors), all saved with
`save_pretrained`. The caption stage loads the folder through AutoProcessor and
AutoModelForImageTextToText exactly as it loads `Qwen/Qwen3-VL-8B-Instruct`.
Weights are random (seeded, with a wide init so greedy decoding has clear
winners): it writes meaningless captions.
"""
from __future__ import annotations

from pathlib import Path

from stages.models.loading import import_torchvision

# Few pixels per frame: a 180x320 frame becomes 96x160 (3x5 merged tokens per 2 frames).
VIDEO_PIXELS = {"shortest_edge": 32 * 32 * 4, "longest_edge": 96 * 160 * 8}
IMAGE_PIXELS = {"shortest_edge": 32 * 32 * 4, "longest_edge": 96 * 160}


# Sizes: `tiny` for tests and the demo, `small` for the CPU benchmark, `real` = Qwen3-VL-8B-Instruct's
# published shapes (random weights: a GPU benchmark of the real architecture, no download).
SIZES = {
    "tiny": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, initializer_range=0.25),
                 vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                             num_position_embeddings=256, deepstack_visual_indexes=[1], initializer_range=0.25),
                 mrope=[2, 3, 3], vocab=None),
    "small": dict(text=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=64),
                  vision=dict(depth=4, hidden_size=128, intermediate_size=384, num_heads=4,
                              num_position_embeddings=256, deepstack_visual_indexes=[1]),
                  mrope=[8, 12, 12], vocab=None),
    "real": dict(text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                           num_key_value_heads=8, head_dim=128),
                 vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                             num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24]),
                 mrope=[24, 20, 20], vocab=151936),
}


def build(folder: str | Path, seed: int = 0, size: str = "tiny") -> dict[str, str]:
    """Save a random Qwen3-VL of `size` to `folder` (skipped when already there); returns {"vlm": folder}."""
    folder = Path(folder)
    if (folder / "config.json").exists() and (folder / "processor_config.json").exists():
        return {"vlm": str(folder)}
    import_torchvision()
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    from pipeline.kit.tiny._chat import random_model, train_tokenizer

    preset = SIZES[size]
    tokenizer = train_tokenizer(seed=seed)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=preset["vocab"] or len(tokenizer), max_position_embeddings=32768,
                         pad_token_id=tokenizer.pad_token_id, **preset["text"],
                         rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                          "mrope_section": preset["mrope"], "mrope_interleaved": True}),
        vision_config=dict(patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           out_hidden_size=preset["text"]["hidden_size"], **preset["vision"]),
        tie_word_embeddings=False, **ids,
    )
    model = random_model(Qwen3VLForConditionalGeneration, config, size, seed, tokenizer)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=IMAGE_PIXELS, patch_size=16, merge_size=2, temporal_patch_size=2),
        video_processor=Qwen3VLVideoProcessor(size=VIDEO_PIXELS, patch_size=16, merge_size=2, temporal_patch_size=2,
                                              cap_pixels_per_frame=False),
        tokenizer=tokenizer, chat_template=tokenizer.chat_template,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return {"vlm": str(folder)}
