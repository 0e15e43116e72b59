"""Shapes the models can't take (2x2000, 16x16) are rejected by split with a coded reason, before any
model sees them; the good videos beside them keep every clip (issue 21)."""
from __future__ import annotations

import shutil

import pyarrow as pa
import pytest

from pipeline.catalog.views import connect
from pipeline.config import load_config
from pipeline.kit.synth import write_video
from pipeline.run.runner import run
from pipeline.typed import ConfigError
from stages.probe import Probe
from stages.split import Split

SETTINGS = ["run.runner=sequential", "stages.split.decode_short_side=64", "run.wave_size=2"]
COLUMNS = "clip_id, status, reason, start_frame, end_frame"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    good = tmp_path_factory.mktemp("good")
    write_video(good / "a.mp4", [72, 72], width=160, height=96, seed=1)
    write_video(good / "b.mp4", [96], width=96, height=160, seed=2)
    mixed = tmp_path_factory.mktemp("mixed")
    for video in good.iterdir():
        shutil.copy(video, mixed / video.name)
    write_video(mixed / "thin.mp4", [72], width=2, height=2000, seed=3)  # 1000:1, what Qwen-VL refuses
    write_video(mixed / "tiny.mp4", [72], width=16, height=16, seed=4)
    return good, mixed


def _clips(out, name: str) -> list[tuple]:
    return connect(out).execute(f"SELECT {COLUMNS} FROM clips WHERE source_uri LIKE ? ORDER BY start_frame",
                                [f"%/{name}"]).fetchall()


def test_extreme_shapes_are_coded_rejections_and_good_clips_are_kept(folders, tmp_path):
    good, mixed = folders
    config = load_config(None, SETTINGS)
    run(config, str(good), tmp_path / "clean", progress=False)
    result = run(config, str(mixed), tmp_path / "mixed", progress=False)
    assert result.processed == 4
    for name in ("a.mp4", "b.mp4"):  # byte for byte the clean run's clips, statuses and reasons
        assert _clips(tmp_path / "mixed", name) == _clips(tmp_path / "clean", name) != []
    assert [c[1:3] for c in _clips(tmp_path / "clean", "a.mp4")] == [("accepted", None)] * 2
    thin, tiny = _clips(tmp_path / "mixed", "thin.mp4"), _clips(tmp_path / "mixed", "tiny.mp4")
    assert [(c[1], c[2]) for c in thin] == [
        ("rejected", "aspect_out_of_range: 2x2000 (1000.0:1; stages.split.max_aspect 4)")]
    assert [(c[1], c[2]) for c in tiny] == [
        ("rejected", "too_small: 16x16 (shorter side < stages.split.min_side 32)")]
    videos = dict(connect(tmp_path / "mixed").execute("SELECT regexp_extract(source_uri, '[^/]+$'), status "
                                                      "FROM videos").fetchall())
    assert videos == {"a.mp4": "ok", "b.mp4": "ok", "thin.mp4": "ok", "tiny.mp4": "ok"}  # decoded fine


def test_rejected_shapes_are_not_decoded_and_carry_no_frames_for_the_models(folders):
    """Model stages read only accepted rows' sampled frames: split gives these rows none."""
    mixed = folders[1]
    probed = Probe()(pa.table({"source_uri": [str(mixed / "thin.mp4"), str(mixed / "tiny.mp4")]}))
    rows = Split(decode_short_side=64)(probed)
    assert rows.column("status").to_pylist() == ["rejected", "rejected"]
    assert rows.column("frames").to_pylist() == [None, None]
    assert rows.column("end_frame").to_pylist() == [72, 72]  # the whole video, from the container's count
    assert [v["warning"] for v in rows.column("video").to_pylist()] == [
        "not_decoded: aspect_out_of_range", "not_decoded: too_small"]
    loose = Split(decode_short_side=64, min_side=1)(probed.slice(1))
    assert loose.column("status").to_pylist() == ["accepted"]  # the limit, not the video, rejects it


@pytest.mark.parametrize("setting, field", [("stages.split.max_aspect=0.5", "stages.split.max_aspect"),
                                            ("stages.split.min_side=0", "stages.split.min_side")])
def test_shape_limits_are_checked_at_start_naming_the_field(setting, field):
    with pytest.raises(ConfigError, match=f"^{field}: must be >= 1"):
        load_config(None, [setting])
