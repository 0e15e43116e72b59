import numpy as np
import pyarrow as pa
import pytest

from pipeline.kit.synth import write_video
from stages.probe import Probe
from stages.split import Split


def split_one(path: str, **settings) -> tuple[dict, list[dict]]:
    out = Split(**settings)(Probe()(pa.table({"source_uri": [path]})))
    video = out.column("video")[0].as_py()
    return video, out.drop_columns(["video"]).to_pylist()


def assert_cuts_near(found: list[int], expected: list[int], tolerance: int = 1):
    assert len(found) == len(expected), (found, expected)
    for f, e in zip(sorted(found), expected):
        assert abs(f - e) <= tolerance, (found, expected)


@pytest.mark.parametrize("detector", ["adaptive", "content", "hash"])
def test_cuts_on_synthetic_videos(corpus, detector):
    for path, cuts in corpus.values():
        video, _ = split_one(path, detector=detector)
        assert video["status"] == "ok"
        assert_cuts_near(video["cuts"], cuts)


def test_threshold_detector_cuts_inside_a_fade_to_black(tmp_path):
    path = tmp_path / "fade.mp4"
    write_video(path, [72, 24, 72], width=160, height=96, black_scenes=(1,))
    video, _ = split_one(str(path), detector="threshold")
    assert len(video["cuts"]) == 1
    assert 72 <= video["cuts"][0] <= 96  # somewhere in the black section


def test_cuts_on_real_footage_bikes(bikes_mp4):
    video, clips = split_one(bikes_mp4)
    assert_cuts_near(video["cuts"], [30, 76, 137, 187, 242])
    assert video["num_frames"] == 250 and video["fps"] == pytest.approx(25.0)
    assert [c["scene_index"] for c in clips] == list(range(6))


def test_clip_length_rules_on_video(corpus):
    _, clips = split_one(corpus["long_scene.mp4"][0], min_clip_s=1.0, max_clip_s=10.0, trim_frames=2)
    # scene 0: [0, 48) trimmed at the cut → [0, 46); scene 1: [48, 348) → [50, 348), 298 frames > 240: 2 parts
    assert [(c["start_frame"], c["end_frame"], c["status"]) for c in clips] == [
        (0, 46, "accepted"), (50, 199, "accepted"), (199, 348, "accepted")]
    _, clips = split_one(corpus["short_scene.mp4"][0], min_clip_s=2.0)
    assert [(c["status"], c["reason"]) for c in clips] == [
        ("accepted", None), ("rejected", "too_short"), ("accepted", None)]
    assert clips[1]["frames"] is None and clips[1]["thumbnail"][:2] == b"\xff\xd8"  # JPEG, no sampled frames


def test_clip_rows_carry_sampled_frames_and_timing(corpus):
    path, _ = corpus["three_scenes.mp4"]
    video, clips = split_one(path, sample_frames=4, decode_short_side=48)
    for clip in clips:
        k, h, w, c = clip["frames_shape"]
        assert (k, h, c) == (4, 48, 3) and w == 80  # 160x96 → short side 48, aspect kept
        frames = np.frombuffer(clip["frames"], np.uint8).reshape(clip["frames_shape"])
        assert frames.std() > 1  # real pixels, not a blank buffer
        assert all(clip["start_frame"] <= i < clip["end_frame"] for i in clip["sample_frame_indices"])
        assert clip["start_s"] == pytest.approx(clip["start_frame"] / 24, abs=1e-3)
        assert clip["duration_s"] == pytest.approx(clip["num_frames"] / 24, abs=1e-3)
        assert clip["video_rows"] == len(clips)
    assert [c["is_video_row"] for c in clips] == [True, False, False]
    assert video["num_clips"] == 3 and video["num_frames"] == 216


def test_rotation_is_applied_to_sampled_frames(tmp_path):
    path = tmp_path / "rotated.mp4"
    write_video(path, [72], width=160, height=96, rotation=90)
    video, clips = split_one(str(path), decode_short_side=48, min_clip_s=1.0)
    assert (video["rotation"], video["width"], video["height"]) == (90, 96, 160)
    assert clips[0]["frames_shape"][1:3] == [80, 48]  # portrait after rotation


def test_ids_are_content_derived(corpus, tmp_path):
    path, _ = corpus["three_scenes.mp4"]
    copy = tmp_path / "renamed copy.mp4"
    copy.write_bytes(open(path, "rb").read())
    video_a, clips_a = split_one(path)
    video_b, clips_b = split_one(str(copy))
    assert video_a["video_id"] == video_b["video_id"]
    assert [c["clip_id"] for c in clips_a] == [c["clip_id"] for c in clips_b]
    other, _ = split_one(corpus["long_scene.mp4"][0])
    assert other["video_id"] != video_a["video_id"]


def test_memory_bounded_buffer_still_samples_whole_long_scene(corpus):
    path, _ = corpus["long_scene.mp4"]
    _, clips = split_one(path, frame_buffer=16, sample_frames=4, min_clip_s=1.0)
    for clip in clips:
        indices = clip["sample_frame_indices"]
        assert all(clip["start_frame"] <= i < clip["end_frame"] for i in indices)
        assert indices == sorted(indices) and indices[-1] - indices[0] > clip["num_frames"] // 3


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="^max_clip_s"):
        Split(min_clip_s=5, max_clip_s=2)
    with pytest.raises(ValueError, match="^sample_frames"):
        Split(sample_frames=0)


def test_transnetv2_detector_cuts_in_the_same_convention_and_keeps_its_probabilities(tmp_path):
    path = tmp_path / "two_shots.mp4"
    (cut,) = write_video(path, [24, 26], width=160, height=96, seed=4)  # 50 frames: one TransNetV2 window
    video, clips = split_one(str(path), detector="transnetv2", min_scene_frames=10, min_clip_s=0.5)
    assert_cuts_near(video["cuts"], [cut])
    probs = video["shot_probabilities"]
    assert len(probs) == video["num_frames"] == 50 and max(probs) > 0.5
    found = video["cuts"][0]
    assert [(c["start_frame"], c["end_frame"]) for c in clips] == [(0, found - 2), (found + 2, 50)]  # trimmed
    plain, _ = split_one(str(path), detector="content")
    assert plain["shot_probabilities"] is None and plain["cuts"] == video["cuts"]


def test_transnetv2_threshold_is_a_probability():
    with pytest.raises(ValueError, match="threshold: is a probability"):
        Split(detector="transnetv2", threshold=27.0)
