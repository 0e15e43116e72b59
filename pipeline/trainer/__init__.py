"""The bundled video DiT trainer (DESIGN.md, section Trainer).

    sizes.py       the DiT size registry (S/B/L/XL × patch 2/4/8), torch-free for the CLI
    model.py       DiT: tubelet patches, per-batch 3D positions, adaLN-Zero, cross-attention to text
    packing.py     packed (NaViT) batches: token → clip layout, attention kept within each clip
    flow.py        rectified flow (logit-normal t, resolution/length shift), DDPM ε option, samplers
    index.py       the committed shard index, latent statistics, VAE metadata, index hash
    loader.py      deterministic bucketed (or packed) batch sampler and zero-copy reader; resumable state
    config.py      TrainConfig (YAML + --set, typed, field-named errors)
    checkpoint.py  atomic checkpoints: safetensors weights + EMA + optimiser + loader + RNG + config
    train.py       main(): single process, DDP under torchrun, Ray Train's TorchTrainer
    sample.py      `vidprep sample`: Euler + classifier-free guidance, VAE decode, mp4
    throughput.py  training tokens/s and MFU (a benchmark for GPUs)
    synthetic.py   synthetic shards in the real contract, committed like a wave (tests, benchmarks)

Nothing here imports torch at package import time.
"""
