"""Frame k is FFmpeg's k-th presented frame on every container (issue 14).

Each video is synthesised with every frame stamped with its own index
(pipeline/kit/synth.py `stamp`), in the containers and codecs where decord and
FFmpeg used to disagree (H.264 and MPEG-2 in MPEG-TS, MPEG-2 program stream)
and where they agree (MP4 with B-frames and open GOPs, variable frame rate MP4,
WebM/VP9, MKV, AVI). Split's sampled frames, encode's span reads and the clip
times must all match the stamps and FFmpeg's presentation times.
"""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest

from pipeline.kit.synth import STAMPED_FORMATS, read_stamp, write_stamped_video
from stages.probe import Probe
from stages.split import Split
from stages.video.decode import read_frames

SCENES = [40, 30, 26]  # 96 frames, cuts at 40 and 70
PYAV_FORMATS = {"h264_ts", "mpeg2_ts", "mpeg2_ps"}  # decord's frame numbers differ on these


@pytest.fixture(scope="module")
def stamped(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("stamped")
    return {name: write_stamped_video(folder, name, SCENES, seed=i) for i, name in enumerate(STAMPED_FORMATS)}


def presentation_times(path) -> list[float]:
    """Each frame's time as FFmpeg presents it (pts × time base), in decode output order."""
    import av

    with av.open(str(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


def split(path, reader: str = "pyav") -> tuple[dict, list[dict]]:
    stage = Split(min_clip_s=0.5, sample_frames=4, trim_frames=2, reader=reader)
    out = stage(Probe()(pa.table({"source_uri": [str(path)]})))
    return out.column("video")[0].as_py(), out.drop_columns(["video"]).to_pylist()


@pytest.mark.parametrize("reader", ["pyav", "decord"])
@pytest.mark.parametrize("name", list(STAMPED_FORMATS))
def test_frame_k_is_ffmpegs_frame_k_in_split_and_in_encodes_span_reads(stamped, name, reader):
    path, cuts, _ = stamped[name]
    video, clips = split(path, reader)
    assert video["status"] == "ok" and video["warning"] is None
    assert video["decoder"] == ("decord" if reader == "decord" and name not in PYAV_FORMATS else "pyav")
    assert video["num_frames"] == sum(SCENES)
    assert video["cuts"] == cuts
    times = presentation_times(path)
    accepted = [c for c in clips if c["status"] == "accepted"]
    assert [(c["start_frame"], c["end_frame"]) for c in accepted] == [(0, 38), (42, 68), (72, 96)]
    for clip in accepted:
        frames = np.frombuffer(clip["frames"], np.uint8).reshape(clip["frames_shape"])
        assert [read_stamp(f) for f in frames] == clip["sample_frame_indices"]
        assert clip["start_s"] == pytest.approx(times[clip["start_frame"]], abs=1e-4)
        end = clip["end_frame"]  # the last frame lasts one nominal step
        assert clip["end_s"] == pytest.approx(times[end] if end < len(times) else times[-1] + 1 / clip["fps"], abs=1e-4)
        span = [clip["start_frame"], (clip["start_frame"] + clip["end_frame"]) // 2, clip["end_frame"] - 1]
        for anchor in ((clip["start_frame"], clip["start_s"]), None):  # encode's read: seeking, and from the start
            later = read_frames(str(path), span, 128, 72, 1, video["stream_index"], anchor)
            assert [read_stamp(f) for f in later] == span


@pytest.mark.parametrize("reader", ["pyav", "decord"])
def test_variable_frame_rate_times_are_the_frames_own(stamped, reader):
    path, _, intended = stamped["h264_mp4_vfr"]
    _, clips = split(path, reader)
    steps = np.diff(intended)
    assert steps.min() < steps.max()  # the file really is variable-rate
    for clip in clips:
        assert clip["start_s"] == pytest.approx(intended[clip["start_frame"]], abs=1e-4)


def test_the_container_not_the_extension_decides(stamped, tmp_path):
    disguised = tmp_path / "capture.mp4"  # an MPEG-TS named like an MP4
    shutil.copy(stamped["h264_ts"][0], disguised)
    video, clips = split(disguised, reader="decord")
    assert (video["container"], video["decoder"]) == ("mpegts", "pyav")
    first = next(c for c in clips if c["status"] == "accepted")
    frames = np.frombuffer(first["frames"], np.uint8).reshape(first["frames_shape"])
    assert [read_stamp(f) for f in frames] == first["sample_frame_indices"]


@pytest.mark.parametrize("name", ["h264_ts", "h264_mp4_open_gop"])
def test_skipping_the_loop_filter_keeps_frame_numbers_and_times(stamped, name):
    path, cuts, _ = stamped[name]
    stage = Split(min_clip_s=0.5, sample_frames=4, trim_frames=2, skip_loop_filter=True)
    out = stage(Probe()(pa.table({"source_uri": [str(path)]})))
    video, clips = out.column("video")[0].as_py(), out.drop_columns(["video"]).to_pylist()
    assert video["cuts"] == cuts
    times = presentation_times(path)
    for clip in (c for c in clips if c["status"] == "accepted"):
        frames = np.frombuffer(clip["frames"], np.uint8).reshape(clip["frames_shape"])
        assert [read_stamp(f) for f in frames] == clip["sample_frame_indices"]
        assert clip["start_s"] == pytest.approx(times[clip["start_frame"]], abs=1e-4)


@pytest.mark.parametrize("name", ["h264_ts", "mpeg2_ps", "h264_mp4_open_gop"])
def test_span_reads_seek_instead_of_decoding_from_the_start(stamped, name):
    from stages.video.frames import PyAVFrames

    path, _, _ = stamped[name]
    _, clips = split(path)
    last = [c for c in clips if c["status"] == "accepted"][-1]
    span = [last["start_frame"], last["end_frame"] - 1]
    source = PyAVFrames(str(path), 128, 72, 1)
    found = source._seek(last["start_s"])  # None: it fell back
    assert found is not None
    frames = source._take(found, span, last["start_frame"])
    source.container.close()
    assert [read_stamp(f) for f in frames] == span
