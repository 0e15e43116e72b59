"""Video inputs that used to hang, abort or corrupt a run (issue 12): each is now processed or a coded row."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pipeline.catalog.views import connect
from pipeline.config import load_config
from pipeline.kit.synth import write_video
from pipeline.run.runner import run
from stages.video import frames as frames_module

SETTINGS = ["run.runner=sequential", "stages.split.decode_short_side=64"]


def videos(out: Path) -> dict[str, tuple]:
    rows = connect(out).execute("SELECT source_uri, status, error, num_clips FROM videos").fetchall()
    return {os.path.basename(uri): tuple(rest) for uri, *rest in rows}


@pytest.fixture
def good(tmp_path) -> Path:
    folder = tmp_path / "in"
    write_video(folder / "good.mp4", [48, 48], width=96, height=64, seed=1)
    return folder


# --- item 11: only regular files are opened; every decode is bounded by a watchdog ---

@pytest.mark.timeout(120)  # before the fix, opening the FIFO blocked forever
def test_a_fifo_named_like_a_video_becomes_not_a_file(good, demo_yaml, tmp_path):
    os.mkfifo(good / "pipe.mp4")
    run(load_config(demo_yaml(), SETTINGS), str(good), tmp_path / "out", progress=False)
    found = videos(tmp_path / "out")
    assert found["pipe.mp4"][:2] == ("error", "not_a_file: is a fifo")
    assert found["good.mp4"][0] == "ok" and found["good.mp4"][2] >= 1


@pytest.fixture
def stuck_decoder(monkeypatch):
    """The decoder hanging in C (as decord's batch read on a file overwritten while decoded), for sources
    named stuck*."""
    release = threading.Event()
    chunks = frames_module.PyAVFrames.chunks

    def hanging(self, size):
        if os.path.basename(self.container.name).startswith("stuck"):
            release.wait()  # never returns during the test: a hung native call
            return
        yield from chunks(self, size)

    monkeypatch.setattr(frames_module.PyAVFrames, "chunks", hanging)
    yield
    release.set()  # let the abandoned thread end with the test


@pytest.mark.timeout(120)
def test_a_stalled_decode_becomes_an_error_row_and_the_run_finishes(good, demo_yaml, tmp_path, stuck_decoder):
    write_video(good / "stuck.mp4", [48], width=96, height=64, seed=2)
    run(load_config(demo_yaml(), SETTINGS + ["stages.split.decode_stall_s=1"]), str(good), tmp_path / "out",
        progress=False)
    found = videos(tmp_path / "out")
    assert found["stuck.mp4"][0] == "error"
    assert found["stuck.mp4"][1].startswith("decode_stalled: after frame 0: no progress in 1 s")
    assert found["good.mp4"][0] == "ok" and found["good.mp4"][2] >= 1


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory) -> str:
    from pipeline.kit.tiny import vae

    return vae.build(tmp_path_factory.mktemp("tiny"))["vae_kl"]


def encoder(vae_path: str, **settings):
    from stages.encode import Encode

    settings = {"resolutions": [32], "frame_counts": [4], **settings}
    stage = Encode(vae=vae_path, vae_kind="auto", vae_subfolder=None, text_encoder=None, **settings)
    stage.setup()
    return stage


def split_table(*paths: str, **settings):
    import pyarrow as pa

    from stages.probe import Probe
    from stages.split import Split

    return Split(**{"min_clip_s": 0.5, **settings})(Probe()(pa.table({"source_uri": [str(p) for p in paths]})))


@pytest.mark.timeout(120)
def test_a_stalled_clip_decode_in_encode_becomes_an_error(good, tiny_vae, monkeypatch):
    from stages.video.frames import PyAVFrames

    clips = split_table(good / "good.mp4")
    release = threading.Event()
    monkeypatch.setattr(PyAVFrames, "span", lambda *args: release.wait())
    try:
        rows = encoder(tiny_vae, decode_stall_s=0.5)(clips).to_pylist()
    finally:
        release.set()
    accepted = [r for r in clips.to_pylist() if r["status"] == "accepted"]
    assert accepted and len(rows) == len(clips)
    failed = [r for r in rows if r["status"] == "error"]
    assert len(failed) == len(accepted)
    assert all(r["reason"].startswith("encode_failed: decode_stalled: frames ") for r in failed)


# --- item 9: a file name that is not UTF-8 ---

def test_a_name_that_is_not_utf8_is_carried_losslessly(good, demo_yaml, tmp_path):
    from pipeline.run.listing import list_sources
    from stages.video.source import local_name

    bad = os.fsdecode(bytes(good) + b"/\xff\xfe.mp4")  # surrogate escapes: Arrow cannot store this str
    write_video(bad, [48, 48], width=96, height=64, seed=3)
    uri = "file://" + os.fsdecode(bytes(good.resolve())) + "/%FF%FE.mp4"
    assert list(list_sources(str(good), [".mp4"])) == [str(good / "good.mp4"), uri]
    assert local_name(uri) == os.path.abspath(bad)  # the same bytes again when opened

    config = load_config(demo_yaml(), SETTINGS)
    first = run(config, str(good), tmp_path / "out", progress=False)
    con = connect(tmp_path / "out")
    rows = dict(con.execute("SELECT source_uri, num_clips FROM videos WHERE status = 'ok'").fetchall())
    assert rows == {uri: 2, str(good / "good.mp4"): 2}
    assert con.execute("SELECT count(*) FROM clips WHERE source_uri = ?", [uri]).fetchone()[0] == 2
    again = run(config, str(good), tmp_path / "out", progress=False)
    assert (first.processed, again.skipped, again.processed) == (2, 2, 0)  # resume knows the encoded name


def test_a_uri_list_line_that_is_not_utf8_is_a_local_path(good, tmp_path):
    from pipeline.run.listing import list_sources

    listing = tmp_path / "sources.txt"
    listing.write_bytes(b"/videos/ok.mp4\n/videos/\xe9t\xe9.mp4\n")  # Latin-1 bytes in a hand-made list
    assert list(list_sources(str(listing), [".mp4"])) == ["/videos/ok.mp4", "file:///videos/%E9t%E9.mp4"]


# --- item 3: a display-matrix rotation is applied exactly once, on every path ---

def marked_at_top_left(image) -> bool:
    """The bright block of write_marked_video: top-left, a quarter of the width, half of the height."""
    import numpy as np

    grey = np.asarray(image, np.float32).mean(axis=2)
    h, w = grey.shape

    def mean(top, bottom, left, right):
        return grey[int(top * h): int(bottom * h), int(left * w): int(right * w)].mean()

    return (mean(0.05, 0.42, 0.03, 0.2) > 180 and mean(0.05, 0.42, 0.32, 0.95) < 90
            and mean(0.6, 0.95, 0.03, 0.95) < 90)


def marked(tmp_path: Path, rotation: int) -> tuple[Path, tuple[int, int]]:
    """A 160×96 coded video, displayed portrait (96×160) when rotated by 90° or 270°."""
    from pipeline.kit.synth import write_marked_video

    shown = (96, 160) if rotation in (90, 270) else (160, 96)
    path = tmp_path / f"marked_{rotation}.mp4"
    write_marked_video(path, *shown, rotation=rotation)
    return path, shown


def check_split(clips, shown: tuple[int, int]) -> None:
    import io

    import numpy as np
    from PIL import Image

    from stages.video.source import decode_size

    rows = [r for r in clips.to_pylist() if r["status"] == "accepted"]
    assert rows
    width, height = decode_size(*shown, 48)
    for row in rows:
        assert (row["video"]["width"], row["video"]["height"], row["width"], row["height"]) == (*shown, *shown)
        assert row["frames_shape"] == [2, height, width, 3]
        frames = np.frombuffer(row["frames"], np.uint8).reshape(row["frames_shape"])
        assert all(marked_at_top_left(f) for f in frames)
        thumbnail = Image.open(io.BytesIO(row["thumbnail"]))
        assert (thumbnail.width > thumbnail.height) == (shown[0] > shown[1])
        assert marked_at_top_left(thumbnail.convert("RGB"))


SPLIT = {"decode_short_side": 48, "sample_frames": 2}


@pytest.mark.parametrize("reader", ["pyav", "decord"])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotation_once_in_split(tmp_path, rotation, reader):
    path, shown = marked(tmp_path, rotation)
    clips = split_table(path, reader=reader, **SPLIT)
    video = clips.column("video")[0].as_py()
    assert (video["rotation"], video["decoder"], video["warning"]) == (rotation, reader, None)
    check_split(clips, shown)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotation_once_in_split_with_the_pyav_fallback(tmp_path, rotation, monkeypatch):
    import stages.split
    from stages.video.frames import PyAVFrames

    monkeypatch.setattr(stages.split, "open_frames", PyAVFrames)  # as when decord cannot open a file
    path, shown = marked(tmp_path, rotation)
    clips = split_table(path, reader="decord", **SPLIT)
    assert clips.column("video")[0].as_py()["warning"].startswith("decoded_with:pyav")
    check_split(clips, shown)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotation_once_in_encode(tmp_path, rotation, decoder, tiny_vae, monkeypatch):
    from stages.video.frames import DecordFrames

    path, shown = marked(tmp_path, rotation)
    clips = split_table(path, **SPLIT)
    row = next(r for r in clips.to_pylist() if r["status"] == "accepted")
    if decoder == "pyav":  # decord failing on these frames: encode falls back to FFmpeg
        monkeypatch.setattr(DecordFrames, "batch", lambda self, indices: 1 / 0)
    stage = encoder(tiny_vae, resolutions=[80])
    bucket = stage.bucket_of(row)
    assert (bucket.height > bucket.width) == (shown[1] > shown[0])  # a portrait video gets a portrait bucket
    pixels = stage._pixels(row, bucket)
    assert pixels.shape == (4, bucket.height, bucket.width, 3)
    assert all(marked_at_top_left(f) for f in pixels)
    (encoded,) = [r for r in stage(clips.filter(clips.column("clip_id").is_valid())).to_pylist()
                  if r["clip_id"] == row["clip_id"]]
    assert encoded["status"] == "accepted" and encoded["latent_shape"][2:] == [bucket.height // 4, bucket.width // 4]


# --- item 8: decord's bad output widths (720×576 PAL into small buckets) ---

@pytest.fixture(scope="module")
def pal(tmp_path_factory) -> Path:
    from pipeline.kit.badinputs import _encode, _frames

    path = tmp_path_factory.mktemp("pal") / "pal.mp4"
    _encode(path, _frames(48, 720, 576))
    return path


@pytest.mark.parametrize("width", [16, 24, 48, 60, 72, 80])
def test_frames_at_small_widths_have_the_right_shape(pal, width):
    import numpy as np

    from stages.video.decode import read_frames
    from stages.video.frames import PyAVFrames

    height = round(width * 576 / 720)
    frames = read_frames(str(pal), [0, 10, 47], width, height, 1)
    assert frames.shape == (3, height, width, 3)
    reference = [f for chunk in PyAVFrames(str(pal), width, height, 1).chunks(48) for _, f in chunk]
    difference = np.abs(frames.astype(np.int16) - np.stack([reference[i] for i in (0, 10, 47)]))
    assert difference.mean() < 8  # the same picture as FFmpeg scales it, not a mangled buffer


def test_pal_into_small_buckets_encodes(pal, tiny_vae):
    clips = split_table(pal, decode_short_side=48, sample_frames=2)
    (row,) = [r for r in clips.to_pylist() if r["status"] == "accepted"]
    for resolution in (32, 48, 64, 96):  # 64: bucket 56×72, decoded 72 wide, which decord mangles
        stage = encoder(tiny_vae, resolutions=[resolution])
        (out,) = [r for r in stage(clips).to_pylist() if r["clip_id"] == row["clip_id"]]
        assert (out["status"], out["reason"]) == ("accepted", None), resolution
        bucket = stage.bucket_of(row)
        assert out["latent_shape"] == [4, 4, bucket.height // 4, bucket.width // 4]
        assert stage._pixels(row, bucket).shape == (4, bucket.height, bucket.width, 3)


# --- item 6: one chosen video stream, used by probe, split and encode ---

@pytest.mark.parametrize("name", ["small_still.mkv", "small_still.mp4", "large_still.mkv", "large_still.mp4"])
def test_a_still_before_the_video_stream_is_not_the_video(tmp_path, tiny_vae, name):
    import numpy as np

    from pipeline.kit.synth import write_still_then_video

    path = tmp_path / name
    write_still_then_video(path, still_size=(64, 48) if name.startswith("small") else (320, 240))
    clips = split_table(path, decode_short_side=48, sample_frames=2)
    video = clips.column("video")[0].as_py()
    assert (video["status"], video["stream_index"], video["width"], video["height"]) == ("ok", 1, 160, 96)
    assert video["num_frames"] == 96 and len(video["cuts"]) == 1 and abs(video["cuts"][0] - 48) <= 1
    assert (video["decoder"], video["warning"]) == ("pyav", None)
    with_decord = split_table(path, decode_short_side=48, sample_frames=2, reader="decord").column("video")[0].as_py()
    assert with_decord["warning"] == "decoded_with:pyav (stream 1, one of 2 video streams)"  # decord has no choice
    rows = [r for r in clips.to_pylist() if r["status"] == "accepted"]
    assert len(rows) == 2
    for row in rows:
        assert row["frames_shape"] == [2, 48, 80, 3]
        assert np.frombuffer(row["frames"], np.uint8).std() > 10  # the moving scenes, not the flat still
    stage = encoder(tiny_vae, resolutions=[64])
    bucket = stage.bucket_of(rows[0])
    assert bucket.width > bucket.height  # 160×96 → a 16:9 bucket
    assert stage._pixels(rows[0], bucket).std() > 10
    encoded = [r for r in stage(clips).to_pylist() if r["status"] == "accepted"]
    assert len(encoded) == 2 and all(r["latent"] for r in encoded)


# --- item 7: timestamps that reset or jump (MPEG-TS captures joined byte-wise) ---

@pytest.mark.parametrize("decoder", ["decord", "pyav"])
@pytest.mark.parametrize("second_start_s", [0.0, 94_000.0])  # a restart at zero; a jump of 26 hours
def test_a_timestamp_reset_keeps_times_monotonic(tmp_path, decoder, second_start_s, monkeypatch):
    import stages.split
    from pipeline.kit.synth import write_ts_with_reset
    from stages.video.frames import PyAVFrames

    path = tmp_path / "capture.ts"
    assert write_ts_with_reset(path, [120, 72], segment_frames=72, second_start_s=second_start_s) == [120]
    if decoder == "pyav":
        monkeypatch.setattr(stages.split, "open_frames", PyAVFrames)
    clips = split_table(path)
    video = clips.column("video")[0].as_py()
    assert video["num_frames"] == 192 and video["cuts"] == [120]
    assert "timestamps_repaired:" in video["warning"]
    assert video["duration_s"] == pytest.approx(192 / 24, abs=0.05)
    rows = clips.drop_columns(["video"]).to_pylist()
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(0, 118), (122, 192)]  # frame 72 is mid-clip
    for row in rows:
        assert row["start_s"] == pytest.approx(row["start_frame"] / 24, abs=0.05)
        assert row["duration_s"] == pytest.approx(row["num_frames"] / 24, abs=0.05)


def test_monotonic_keeps_variable_steps_and_repairs_resets():
    import numpy as np

    from stages.video.timing import monotonic

    variable = np.cumsum([0, 1, 2, 4, 1, 2, 2]) / 24  # steps of 1-4 ticks are real: kept
    assert monotonic(variable, 24)[1] == 0 and np.array_equal(monotonic(variable, 24)[0], variable)
    times, repaired = monotonic(np.array([5.0, 5.5, 6.0, 0.0, 0.5, 94_000.0, 94_000.5]), 2)
    assert repaired == 2 and np.allclose(times, 5.0 + 0.5 * np.arange(7))
