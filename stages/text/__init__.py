"""Text helpers for the caption stages.

    quality.py  repetition score, stock-opening stripping, first sentence, prompt hashes, template checks
    sidecar.py  text that came with a source video (`<stem>.txt` / `<stem>.json`)
"""
