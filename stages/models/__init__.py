"""Model loading and adapters for the model stages (each loads with its library's own loader).

    loading.py       importing model libraries beside PyPI's CUDA torchvision; device and dtype
    clip.py          open_clip loading, preprocessing, embeddings, the LAION aesthetic head, prompt defaults
    vae.py           diffusers VAEs behind one encode/decode with each family's normalisation
    text_encoder.py  T5 or CLIP text encoder returning unpadded token embeddings
    generate.py      batched generation: length grouping, left padding, stop tokens, tokens/s
    expander.py      the caption Expander (chat template, strict JSON parse, retries, honest fallback)
"""
