"""`vidprep bench`: each module times a stage against its baseline, side by side, and writes its section
of docs/BENCHMARKS.md (memory: docs/RELIABILITY.md).

    suite.py    runs them all (`vidprep bench`), writes bench-results/index.json
    kit.py      what they share: interleaved timing, medians, machine facts, Markdown sections
    split.py    split vs the scenedetect CLI vs pure decode
    clip.py     clip_score vs open_clip alone        caption.py  caption/expand vs a batch-1 generate loop
    encode.py   encode vs the VAE alone               loader.py   the trainer's loader vs a raw pyarrow read
    memory.py   driver peak RSS as the input count grows
"""
