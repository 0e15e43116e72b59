"""Every broken or unusual input is processed or becomes a coded error row; good videos keep every clip."""
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.kit import badinputs
from pipeline.catalog.views import connect
from pipeline.config import load_config
from pipeline.run.runner import run
from stages.probe import Probe
from stages.split import Split

SETTINGS = ["run.runner=sequential", "stages.split.decode_short_side=64", "run.wave_size=5"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, badinputs.build(folder)


@pytest.fixture(scope="module")
def out(corpus, demo_yaml, tmp_path_factory):
    folder = tmp_path_factory.mktemp("out")
    result = run(load_config(demo_yaml(), SETTINGS), str(corpus[0]), folder, progress=False)
    assert result.processed == len(corpus[1])  # the directory loop `loop -> .` added nothing
    return folder


def test_each_input_gets_its_expected_status_and_reason(corpus, out):
    rows = connect(out).execute("SELECT source_uri, status, error FROM videos").fetchall()
    found = {Path(uri).name: (status, error.split(":")[0] if error else None) for uri, status, error in rows}
    assert found == corpus[1]


def test_good_videos_keep_all_their_clips(corpus, out, demo_yaml):
    split = Split(**{**load_config(demo_yaml(), SETTINGS).stages["split"].__dict__})
    con = connect(out)
    for uri, in con.execute("SELECT source_uri FROM videos WHERE status = 'ok'").fetchall():
        alone = split(Probe()(pa.table({"source_uri": [uri]})))
        expected = sorted(c for c in alone.column("clip_id").to_pylist() if c)
        stored = sorted(c for c, in con.execute("SELECT clip_id FROM clips WHERE source_uri = ?", [uri]).fetchall())
        assert stored == expected, uri


def test_damaged_files_keep_the_frames_before_the_damage(out):
    rows = dict(connect(out).execute("""SELECT regexp_extract(source_uri, '[^/]+$'), warning FROM videos
                                        WHERE warning IS NOT NULL""").fetchall())
    assert rows["cut_mid_stream.mp4"].startswith("decode_stopped_at_frame:")  # FFmpeg decodes up to the cut
    assert "decode_stopped_at_frame:" in rows["corrupt_packets.mp4"]
    assert "[" not in rows["corrupt_packets.mp4"]  # decord's log prefixes are stripped


def test_unusual_but_valid_videos(out):
    con = connect(out)
    info = {name: rest for name, *rest in con.execute(
        "SELECT regexp_extract(source_uri, '[^/]+$'), width, height, rotation, num_clips, fps FROM videos").fetchall()}
    assert info["rotated.mp4"][:3] == [96, 160, 90]
    assert info["odd_size.mp4"][:2] == [161, 97]
    assert info["long_low_res.mp4"][3] == 4  # a 40 s scene re-split into <= 10 s clips
    assert info["variable_fps.mp4"][4] < 24  # timestamps, not the nominal rate
    ends = con.execute("""SELECT max(end_s) FROM clips WHERE source_uri LIKE '%variable_fps.mp4'""").fetchone()[0]
    assert ends > 60 / 24 * 1.5  # real presentation times: durations of 1-4 ticks


def test_same_bytes_twice_is_one_video(out):
    con = connect(out)
    owner = con.execute("SELECT error FROM videos WHERE source_uri LIKE '%with spaces.mp4'").fetchone()[0]
    assert owner.endswith("/good.mp4")
    assert con.execute("SELECT count(*) - count(DISTINCT clip_id) FROM clips").fetchone()[0] == 0


def test_rerun_catches_a_copy_added_later(corpus, out, demo_yaml, tmp_path):
    import shutil

    shutil.copy(corpus[0] / "rotated.mp4", tmp_path / "rotated again.mp4")
    before = connect(out).execute("SELECT count(*) FROM clips").fetchone()[0]
    run(load_config(demo_yaml(), SETTINGS), str(tmp_path / "rotated again.mp4"), out, progress=False)
    con = connect(out)
    error = con.execute("SELECT error FROM videos WHERE source_uri LIKE '%rotated again.mp4'").fetchone()[0]
    assert error.endswith("/rotated.mp4") and con.execute("SELECT count(*) FROM clips").fetchone()[0] == before
