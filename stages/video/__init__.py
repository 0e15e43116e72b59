"""Helpers that read pixels for the stages: sources, decoding, clip spans, buckets.

    source.py   opening sources (local or fetched), decode sizes, rotation, JPEG thumbnails
    decode.py   which decoder reads a video (frame k = FFmpeg's k on every container); span reads for encode
    frames.py   decoded frames: decord, FFmpeg (PyAV) fallback, one-chunk-ahead prefetch
    spans.py    scene → clip spans (trim, re-split, too_short), bounded frame buffer, sample picking
    buckets.py  native-aspect buckets: pixel budget × aspect ratio × frame count
"""
