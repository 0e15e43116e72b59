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
