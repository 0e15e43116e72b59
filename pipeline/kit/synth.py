"""Synthetic videos with known cuts, written with PyAV's bundled libx264.

Used by `make demo` and by the tests: each scene has its own palette, texture
and moving shapes, so a cut is a real content change while frames inside a
scene change smoothly. Deterministic for a given seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def scene_frames(rng: np.random.Generator, count: int, width: int, height: int) -> np.ndarray:
    """(count, H, W, 3) uint8 frames of one scene: a drifting gradient with a moving disc."""
    base = rng.uniform(0, 255, size=3)
    accent = 255 - base
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
    stripes = rng.integers(2, 7)
    velocity = rng.uniform(-2.0, 2.0, size=2) * min(width, height) / 100
    centre = rng.uniform(0.3, 0.7, size=2) * (width, height)
    radius = min(width, height) * rng.uniform(0.12, 0.25)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        phase = 0.05 * t
        texture = 0.5 + 0.5 * np.sin(2 * np.pi * (stripes * ramp + phase))
        image = base[None, None, :] * (0.55 + 0.45 * texture[..., None])
        cx, cy = _bounce(centre + velocity * t, np.array([width, height], np.float32))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        image[disc] = accent
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def _bounce(position: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Reflect at the borders: wrapping around would be a jump a detector rightly calls a cut."""
    period = 2 * size
    folded = np.mod(position, period)
    return np.where(folded > size, period - folded, folded)


def write_video(
    path: str | Path,
    scene_lengths: list[int],
    *,
    width: int = 320,
    height: int = 180,
    fps: int = 24,
    seed: int = 0,
    codec: str = "libx264",
    rotation: int = 0,
    black_scenes: tuple[int, ...] = (),
) -> list[int]:
    """Write a video whose scenes have `scene_lengths` frames; returns the cut frames (scene starts > 0).

    Scenes whose index is in `black_scenes` are all black (a fade-out point for the threshold detector).
    """
    import av

    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "20"}
        if rotation:
            stream.set_display_rotation(rotation)
        for index, length in enumerate(scene_lengths):
            frames = (np.zeros((length, height, width, 3), np.uint8) if index in black_scenes
                      else scene_frames(rng, length, width, height))
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return list(np.cumsum(scene_lengths)[:-1].astype(int))


DEMO_VIDEOS = {  # name: scene lengths in frames at 24 fps (cuts at their running sums)
    "street.mp4": [96, 72, 120],
    "beach.mp4": [60, 30, 300],  # a 12.5 s scene: re-split by max_clip_s
    "kitchen.mp4": [144, 20, 100],  # a 20-frame scene: kept as rejected too_short
    "forest.mp4": [200],
}
DEMO_BLACK_SCENES = {"street.mp4": (2,)}  # street ends on 5 s of black: the demo's filter rejects it (black_fraction)


def write_demo_videos(folder: str | Path, width: int = 320, height: int = 180) -> dict[str, list[int]]:
    """The demo's sample videos; returns each file's true cuts."""
    folder = Path(folder)
    return {name: write_video(folder / name, lengths, width=width, height=height, seed=i,
                              black_scenes=DEMO_BLACK_SCENES.get(name, ()))
            for i, (name, lengths) in enumerate(DEMO_VIDEOS.items())}


def write_marked_video(path: str | Path, width: int, height: int, *, rotation: int = 0, count: int = 48,
                       fps: int = 24, codec: str = "libx264") -> None:
    """A video whose DISPLAYED frames (width × height) are dark with a bright block in the top-left
    quarter of the width and half of the height; stored in coded orientation with a display matrix of
    `rotation` degrees (counter-clockwise, as FFmpeg reads it), so a reader that rotates twice, or not
    at all, or squeezes the frame, moves or reshapes the block."""
    import av

    shown = np.full((height, width, 3), 40, np.uint8)
    shown[: height // 2, : width // 4] = 230
    coded = np.ascontiguousarray(np.rot90(shown, k=-(rotation // 90)))  # shown = rot90(coded, rotation / 90)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = coded.shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for t in range(count):
            image = coded.copy()
            image[-4:, -4:] = (t * 5) % 256  # a little motion, so encoders don't collapse the stream
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_still_then_video(path: str | Path, *, still_size: tuple[int, int] = (64, 48),
                           video_size: tuple[int, int] = (160, 96), scene_lengths: tuple[int, ...] = (48, 48),
                           fps: int = 24, seed: int = 0) -> None:
    """Two video streams: stream 0 a one-frame flat grey still (a poster), stream 1 the real video with
    moving scenes. The MP4 muxer marks stream 0 `default`; an MKV marks neither."""
    import av

    rng = np.random.default_rng(seed)
    moving = np.concatenate([scene_frames(rng, n, *video_size) for n in scene_lengths])
    with av.open(str(path), mode="w") as container:
        still = container.add_stream("libx264", rate=fps)
        video = container.add_stream("libx264", rate=fps)
        for stream, (width, height) in ((still, still_size), (video, video_size)):
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast"}
        poster = av.VideoFrame.from_ndarray(np.full((still_size[1], still_size[0], 3), 200, np.uint8), format="rgb24")
        for packet in [*still.encode(poster), *still.encode()]:
            container.mux(packet)
        for index, image in enumerate(moving):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)


def write_ts_with_reset(path: str | Path, scene_lengths: list[int], *, segment_frames: int,
                        second_start_s: float = 0.0, width: int = 160, height: int = 96, fps: int = 24,
                        seed: int = 0) -> list[int]:
    """An MPEG-TS capture whose timestamps restart: the frames of `scene_lengths` (cuts at their running
    sums, returned) are cut after `segment_frames` into two TS files, the second with presentation times
    from `second_start_s` (0: a reset, as when a recorder restarts; large: a jump), joined byte-wise
    the way captures are concatenated."""
    import io

    import av

    rng = np.random.default_rng(seed)
    frames = np.concatenate([scene_frames(rng, n, width, height) for n in scene_lengths])
    data = b""
    for part, start in ((frames[:segment_frames], 0.0), (frames[segment_frames:], second_start_s)):
        buffer = io.BytesIO()
        with av.open(buffer, mode="w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast"}
            first = round(start * fps)
            for index, image in enumerate(part):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = first + index
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        data += buffer.getvalue()
    Path(path).write_bytes(data)
    return list(np.cumsum(scene_lengths)[:-1].astype(int))


# --- frame-stamped videos: every frame shows its own index (issue 14) ---

STAMP_BITS = 8  # up to 256 frames
STAMP_BLOCK = 16  # pixels per bit: 8 blocks of 16 px fill a 128-px-wide strip, and survive MPEG-2 at low rates


def stamp(image: np.ndarray, index: int) -> np.ndarray:
    """Write `index` as a Gray-coded row of black/white blocks across the top of `image` (in place).

    Gray code: consecutive frames differ by one block, so the stamp reads as steady motion to a scene
    detector, never as a cut.
    """
    gray = index ^ (index >> 1)
    for bit in range(STAMP_BITS):
        on = (gray >> (STAMP_BITS - 1 - bit)) & 1
        image[:STAMP_BLOCK, bit * STAMP_BLOCK: (bit + 1) * STAMP_BLOCK] = 255 if on else 0
    return image


def read_stamp(image: np.ndarray) -> int:
    """The index `stamp` wrote, read from the centres of the blocks of a frame at any size (H, W, 3)."""
    height, width = image.shape[:2]
    scale = width / (STAMP_BITS * STAMP_BLOCK)
    gray = 0
    for bit in range(STAMP_BITS):
        y, x = int(STAMP_BLOCK * scale / 2), int((bit + 0.5) * STAMP_BLOCK * scale)
        gray = (gray << 1) | int(image[y, x].mean() > 127)
    index = 0
    while gray:  # Gray → binary
        index ^= gray
        gray >>= 1
    return index


STAMPED_FORMATS = {  # name: (file suffix, container format, codec, codec options, "vfr" or None)
    "h264_ts": (".ts", "mpegts", "libx264",  # 48-frame GOPs with B-frames, as the broadcast captures in issue 14
                {"preset": "ultrafast", "crf": "18",
                 "x264-params": "keyint=48:min-keyint=48:bframes=3:scenecut=0"}, None),
    "mpeg2_ts": (".ts", "mpegts", "mpeg2video", {"qscale": "2", "g": "12", "bf": "2"}, None),
    "mpeg2_ps": (".mpg", "vob", "mpeg2video", {"qscale": "2", "g": "12", "bf": "2"}, None),
    "h264_mp4_open_gop": (".mp4", "mp4", "libx264",
                          {"preset": "ultrafast", "crf": "18",
                           "x264-params": "keyint=24:bframes=3:open-gop=1:b-pyramid=normal"}, None),
    "h264_mp4_vfr": (".mp4", "mp4", "libx264", {"preset": "ultrafast", "crf": "18"}, "vfr"),
    "vp9_webm": (".webm", "webm", "libvpx-vp9", {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}, None),
    "h264_mkv": (".mkv", "matroska", "libx264", {"preset": "ultrafast", "crf": "18", "x264-params": "bframes=2"}, None),
    "mpeg4_avi": (".avi", "avi", "mpeg4", {"qscale": "2", "g": "24"}, None),
}


def write_stamped_video(folder: str | Path, name: str, scene_lengths: list[int], *, width: int = 128,
                        height: int = 72, fps: int = 24, seed: int = 0) -> tuple[Path, list[int], list[float]]:
    """A video in the `STAMPED_FORMATS[name]` container/codec whose frame k shows k (`read_stamp`).

    Returns (path, true cuts, each frame's intended presentation time in seconds from the first frame).
    "vfr" videos step 1, 2 or 3 ticks of 1/(2·fps) s between frames: a variable frame rate.
    """
    from fractions import Fraction

    import av

    suffix, container_format, codec, options, timing = STAMPED_FORMATS[name]
    rng = np.random.default_rng(seed)
    frames = np.concatenate([scene_frames(rng, n, width, height) for n in scene_lengths])
    path = Path(folder) / f"{name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    vfr = timing == "vfr"
    ticks = np.concatenate([[0], np.cumsum(rng.integers(1, 4, len(frames) - 1))]) if vfr else np.arange(len(frames))
    tick = Fraction(1, 2 * fps if vfr else fps)
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(options)
        stream.codec_context.time_base = tick
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(stamp(image, index), format="rgb24")
            frame.pts, frame.time_base = int(ticks[index]), tick
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path, list(np.cumsum(scene_lengths)[:-1].astype(int)), [float(t * tick) for t in ticks]
