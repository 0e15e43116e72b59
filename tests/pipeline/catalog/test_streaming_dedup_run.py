"""`vidprep run` appended to an output: copies of the first run's kept clips skip caption in the second,
and the statuses are those of the end-of-run pass alone, in another batching and after a kill and resume
(the Ray plan's order: tests/pipeline/catalog/test_clip_catalog.py)."""
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline.catalog.views import connect
from pipeline.catalog.wasted import model_work
from pipeline.config import load_config
from pipeline.kit.synth import write_video
from pipeline.run.runner import run

STAGES = ("probe", "split", "clip_score", "filter", "caption")
SETTINGS = ["run.runner=sequential", "stages.filter.keep=clip_black < 0.9", "run.wave_size=1",
            "stages.filter.near_duplicate_distance=0.005"]  # copies sit < 1e-4 apart, these scenes >= 0.02


@pytest.fixture(scope="module")
def setup(demo_material, tmp_path_factory):
    """The demo's tiny models cut to STAGES; an output after run 1 (a.mp4, e.mp4); run 2's new sources."""
    root = tmp_path_factory.mktemp("streaming")
    data = yaml.safe_load(demo_material["config"].read_text())
    data["stages"] = {name: value for name, value in data["stages"].items() if name in STAGES}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", [60, 72], width=160, height=96, seed=1)
    write_video(videos / "e.mp4", [96], width=160, height=96, seed=5)
    first = root / "first"
    run(load_config(config, SETTINGS), str(videos), first, progress=False)
    write_video(videos / "b_mpeg4.mp4", [60, 72], width=160, height=96, seed=1, codec="mpeg4")  # a, re-encoded
    write_video(videos / "c_black.mp4", [60, 60, 60], width=160, height=96, seed=4, black_scenes=(0, 2))
    write_video(videos / "d_resized.mp4", [60, 72], width=192, height=112, seed=1)  # a's scenes, resized
    return config, videos, first


def statuses(out):
    return connect(out).execute("""SELECT regexp_extract(source_uri, '[^/]+$'), clip_index, status, reason
                                   FROM clips ORDER BY 1, 2""").fetchall()


def streamed(out):
    """Clips the stream rejected as near-duplicates (catalog rows as written, before the end-of-run pass)."""
    return connect(out).execute("""SELECT regexp_extract(source_uri, '[^/]+$'), clip_index, reason, caption_model
                                   FROM clips_written WHERE starts_with(reason, 'near_duplicate_of:')
                                   ORDER BY 1, 2""").fetchall()


@pytest.fixture(scope="module")
def alone(setup, tmp_path_factory):
    config, videos, first = setup
    out = tmp_path_factory.mktemp("alone") / "out"
    shutil.copytree(first, out)
    run(load_config(config, SETTINGS + ["stages.filter.near_duplicate_streaming=false"]), str(videos), out,
        progress=False)
    return out


def test_copies_of_kept_clips_skip_caption_and_statuses_are_the_end_passes_after_a_kill(setup, alone, tmp_path):
    """Run 2 in another batching than `alone`'s, killed after its first commit, then resumed."""
    config, videos, first = setup
    out = tmp_path / "out"
    shutil.copytree(first, out)
    other = SETTINGS + ["run.videos_per_task=2", "stages.caption.resources.batch_size=1"]
    env = {**os.environ, "VIDPREP_CRASH_AT": "committed:1", "PYTHONUNBUFFERED": "1"}
    killed = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "-c", str(config), "-i", str(videos),
                             "-o", str(out), "--no-progress", *[a for s in other for a in ("--set", s)]],
                            capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    committed = connect(out).execute("SELECT count(DISTINCT wave_id) FROM clips_written").fetchall()[0][0]
    assert committed == 3  # run 1's two waves and one of run 2's: its end-of-run pass never ran
    resumed = run(load_config(config, other), str(videos), out, progress=False)
    assert (resumed.decisions.duplicates, resumed.decisions.streamed) == (5, 4)  # run 2's; b's and d's early

    assert statuses(out) == statuses(alone)  # the end-of-run pass, the arbiter, decides as without streaming
    a = {i: _clip(out, "a.mp4", i) for i in (0, 1)}
    assert streamed(out) == [(v, i, f"near_duplicate_of:{a[i]}", None)  # rejected before caption: no caption
                             for v in ("b_mpeg4.mp4", "d_resized.mp4") for i in (0, 1)]
    assert streamed(alone) == []
    # c_black's scene 2 copies its scene 0: a pair within one run, left to the end-of-run pass
    assert ("c_black.mp4", 2, "rejected", f"near_duplicate_of:{_clip(out, 'c_black.mp4', 0)}") in statuses(out)
    on, off = model_work(out)["caption"], model_work(alone)["caption"]
    assert (off["wasted"], on["wasted"]) == (5, 1)  # b's and d's copies no longer captioned; c's still
    assert off["rows"] - on["rows"] == 4


def _clip(out, video, index):
    return connect(out).execute("SELECT clip_id FROM clips WHERE source_uri LIKE ? AND clip_index = ?",
                                [f"%/{video}", index]).fetchall()[0][0]
