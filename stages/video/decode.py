"""Private helper: which decoder reads a video, so that frame k is FFmpeg's k-th presented frame.

Frame numbers are FFmpeg's everywhere (split's cuts, sampled frames, the spans
encode decodes): frame k is the k-th frame in presentation order, as every
player and `ffmpeg -ss` count. decord agrees on MP4/MOV, Matroska/WebM and AVI
(B-frames, open GOPs and variable frame rates included, tests/stages/video/
test_decode.py), and is kept there for its in-decoder resize and its seeking.
On MPEG transport and program streams it does not: on H.264 in MPEG-TS it
skips the whole first GOP and pads the end with frozen copies of the last
frame, on MPEG-2 in TS a few frames are lost, and its timestamps on program
streams are garbage. Those container families, raw elementary streams (no
index, no timestamps) and anything unknown go to FFmpeg through PyAV.

The choice is made once per video from probe's container name (FFmpeg's
demuxer, not the file's extension: a `.mp4` that is really a TS is caught) and
recorded in the catalog (`videos.decoder`). Spans read later (encode) always go
through FFmpeg, seeking by the presentation time split recorded for the
clip's first frame (`read_frames`), because decord's seeking is not exact.
"""
from __future__ import annotations

from typing import Any

import numpy as np

# FFmpeg demuxer names (AVInputFormat.name, as probe stores them) on which decord's frame k is FFmpeg's k.
DECORD_EXACT = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi"})


def choose(video: dict[str, Any]) -> tuple[str, str | None]:
    """("decord" | "pyav", why not decord or None) for a probed video."""
    container = video.get("container")
    if container not in DECORD_EXACT:
        return "pyav", f"container {container}: decord's frame numbers differ"
    return "decord", None


def read_frames(path: str, indices: list[int], width: int, height: int, threads: int,
                stream_index: int | None = None, anchor: tuple[int, float] | None = None) -> np.ndarray:
    """(len(indices), H, W, 3) RGB frames at the given (FFmpeg) frame indices, display orientation.

    Always FFmpeg (PyAV): decord's sequential pass is exact on the containers
    above, but its seeking is not (on an open-GOP MP4 its frame 72 was FFmpeg's
    75). `anchor` = (a frame index, its presentation time, as split recorded:
    the clip's start_frame and start_s) lets FFmpeg seek to the keyframe before
    it and count from there; without it, or when the time is not found, it
    decodes from the start. Only the wanted frames are converted.
    """
    from stages.video.frames import PyAVFrames

    return PyAVFrames(path, width, height, threads, stream_index).at(indices, anchor)
