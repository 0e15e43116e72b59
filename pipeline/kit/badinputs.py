"""A corpus of broken and unusual inputs, generated (no committed blobs), with what each must become.

Used by the reliability tests and to regenerate docs/RELIABILITY.md's table:
`python -m pipeline.kit.badinputs FOLDER` writes the corpus and prints the table
of expected outcomes. Each entry: (status, error code or None). A source is
either processed (status ok) or becomes a `videos` row with status `error`
and a coded reason; nothing crashes the run.
"""
from __future__ import annotations

import os
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.kit.synth import write_video


def _frames(count: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Cheap moving gradients (fast even at 4K)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    base = rng.uniform(0, 1, size=3).astype(np.float32)
    return np.stack([np.clip((x * base + y * (1 - base) + 8 * t) % 256, 0, 255).astype(np.uint8)
                     for t in range(count)])


def _encode(path: Path, frames: np.ndarray, *, fps: int = 24, codec: str = "libx264", pix_fmt: str = "yuv420p",
            options: dict | None = None, pts: list[int] | None = None, time_base: Fraction | None = None,
            streams: int = 1, container_options: dict | None = None) -> None:
    import av

    with av.open(str(path), "w", options=container_options or {}) as container:
        outs = []
        for _ in range(streams):
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
            stream.options = options or {"preset": "ultrafast"}
            outs.append(stream)
        for i, image in enumerate(frames):
            for stream in outs:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt)
                if pts is not None:  # explicit timestamps in the codec's 1/fps ticks: variable frame rate
                    frame.pts, frame.time_base = pts[i], time_base
                for packet in stream.encode(frame):
                    container.mux(packet)
        for stream in outs:
            for packet in stream.encode():
                container.mux(packet)


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for i in range(20):
            samples = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def build(folder: str | Path) -> dict[str, tuple[str, str | None]]:
    """Write the corpus into `folder`; returns {file name: (expected status, expected error code)}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, tuple[str, str | None]] = {}
    good = folder / "good.mp4"
    write_video(good, [48, 48], width=160, height=96, seed=1)
    expect["good.mp4"] = ("ok", None)

    (folder / "zero_bytes.mp4").write_bytes(b"")
    expect["zero_bytes.mp4"] = ("error", "empty_file")
    (folder / "random_bytes.mp4").write_bytes(np.random.default_rng(0).bytes(64_000))
    expect["random_bytes.mp4"] = ("error", "invalid_container")

    # Index (moov) at the end, file cut before it: nothing to index the stream with.
    data = good.read_bytes()
    (folder / "index_missing.mp4").write_bytes(data[: len(data) // 2])
    expect["index_missing.mp4"] = ("error", "invalid_container")
    # Index at the front (faststart), data cut mid-stream: the frames before the cut are usable.
    faststart = folder / "_faststart.mp4"
    _encode(faststart, _frames(96, 160, 96), container_options={"movflags": "faststart"})
    data = faststart.read_bytes()
    (folder / "cut_mid_stream.mp4").write_bytes(data[: int(len(data) * 0.6)])
    faststart.unlink()
    expect["cut_mid_stream.mp4"] = ("ok", None)
    # Garbage written over packets in the middle of the stream.
    corrupt = bytearray(good.read_bytes())
    middle = len(corrupt) // 2
    corrupt[middle: middle + 4000] = np.random.default_rng(1).bytes(4000)
    (folder / "corrupt_packets.mp4").write_bytes(bytes(corrupt))
    expect["corrupt_packets.mp4"] = ("ok", None)

    _audio_only(folder / "audio_only.mp4")
    expect["audio_only.mp4"] = ("error", "no_video_stream")
    from PIL import Image

    Image.fromarray(_frames(1, 64, 48)[0]).save(folder / "still_image.mp4", format="PNG")
    expect["still_image.mp4"] = ("ok", None)  # ffmpeg reads a one-frame image: one too_short clip
    _encode(folder / "one_frame.mp4", _frames(1, 64, 48))
    expect["one_frame.mp4"] = ("ok", None)
    _encode(folder / "odd_size.mp4", _frames(30, 161, 97), pix_fmt="yuv444p")
    expect["odd_size.mp4"] = ("ok", None)
    write_video(folder / "rotated.mp4", [60], width=160, height=96, rotation=90, seed=2)
    expect["rotated.mp4"] = ("ok", None)
    _encode(folder / "ten_bit.mp4", _frames(30, 96, 64), pix_fmt="yuv420p10le")
    expect["ten_bit.mp4"] = ("ok", None)
    steps = np.random.default_rng(2).choice([1, 2, 4], size=60)  # frame durations in 1/24 s ticks
    _encode(folder / "variable_fps.mp4", _frames(60, 96, 64), pts=[int(p) for p in np.cumsum(steps) - steps[0]],
            time_base=Fraction(1, 24))
    expect["variable_fps.mp4"] = ("ok", None)
    _encode(folder / "long_low_res.mp4", _frames(24 * 40, 64, 36))  # 40 s: re-split by max_clip_s
    expect["long_low_res.mp4"] = ("ok", None)
    _encode(folder / "short_4k.mp4", _frames(12, 3840, 2160))
    expect["short_4k.mp4"] = ("ok", None)
    _encode(folder / "two_video_streams.mp4", _frames(30, 96, 64), streams=2)
    expect["two_video_streams.mp4"] = ("ok", None)
    shutil.copy(good, folder / "vidéo ünïcode 視頻 with spaces.mp4")
    expect["vidéo ünïcode 視頻 with spaces.mp4"] = ("error", "duplicate_of")  # same bytes as good.mp4
    write_video(folder / "ünïcode ok.mp4", [40, 40], width=96, height=64, seed=3)
    expect["ünïcode ok.mp4"] = ("ok", None)
    (folder / "self_loop.mp4").symlink_to("self_loop.mp4")
    expect["self_loop.mp4"] = ("error", "unreadable")
    (folder / "dangling.mp4").symlink_to("does-not-exist.mp4")
    expect["dangling.mp4"] = ("error", "unreadable")
    (folder / "loop").symlink_to(".")  # a directory loop: the listing must terminate
    locked = folder / "no_permission.mp4"
    write_video(locked, [30], width=64, height=48, seed=4)
    os.chmod(locked, 0)
    expect["no_permission.mp4"] = ("ok", None) if os.geteuid() == 0 else ("error", "unreadable")  # root reads all
    (folder / "directory.mp4").mkdir()
    expect["directory.mp4"] = ("error", "not_a_file")
    os.mkfifo(folder / "fifo.mp4")  # opening a FIFO blocks until a writer comes: never opened
    expect["fifo.mp4"] = ("error", "not_a_file")
    # A name that is not UTF-8 (POSIX names are bytes): listed as file://…/%FF%FE.mp4, processed.
    write_video(os.fsdecode(bytes(folder) + b"/\xff\xfe.mp4"), [30], width=64, height=48, seed=5)
    expect["%FF%FE.mp4"] = ("ok", None)
    return expect


if __name__ == "__main__":
    for name, (status, code) in build(sys.argv[1]).items():
        print(f"| `{name}` | {status} | {code or ''} |")
