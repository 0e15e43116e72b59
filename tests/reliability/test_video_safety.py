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
def stuck_decord(monkeypatch):
    """decord's batch read hanging in C (as on a file overwritten while decoded), for sources named stuck*."""
    release = threading.Event()
    chunks = frames_module.DecordFrames.chunks

    def hanging(self, size):
        if os.path.basename(self.path).startswith("stuck"):
            release.wait()  # never returns during the test: a hung native call
            return
        yield from chunks(self, size)

    monkeypatch.setattr(frames_module.DecordFrames, "chunks", hanging)
    yield
    release.set()  # let the abandoned thread end with the test


@pytest.mark.timeout(120)
def test_a_stalled_decode_becomes_an_error_row_and_the_run_finishes(good, demo_yaml, tmp_path, stuck_decord):
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

    stage = Encode(vae=vae_path, vae_kind="auto", vae_subfolder=None, text_encoder=None, resolutions=[32],
                   frame_counts=[4], **settings)
    stage.setup()
    return stage


def split_table(*paths: str, **settings):
    import pyarrow as pa

    from stages.probe import Probe
    from stages.split import Split

    return Split(**{"min_clip_s": 0.5, **settings})(Probe()(pa.table({"source_uri": [str(p) for p in paths]})))


@pytest.mark.timeout(120)
def test_a_stalled_clip_decode_in_encode_becomes_an_error(good, tiny_vae, monkeypatch):
    import stages.encode

    clips = split_table(good / "good.mp4")
    release = threading.Event()
    monkeypatch.setattr(stages.encode, "read_frames", lambda *args: release.wait())
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
