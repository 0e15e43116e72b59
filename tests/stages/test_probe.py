import os

import numpy as np
import pyarrow as pa
import pytest

from stages.probe import Probe


def probe(*paths: str) -> list[dict]:
    return Probe()(pa.table({"source_uri": list(paths)})).column("video").to_pylist()


def test_container_metadata(corpus):
    path, _ = corpus["three_scenes.mp4"]
    (info,) = probe(path)
    assert info["status"] == "ok" and info["error"] is None
    assert (info["codec"], info["width"], info["height"], info["rotation"]) == ("h264", 160, 96, 0)
    assert info["fps"] == pytest.approx(24.0)
    assert info["duration_s"] == pytest.approx(216 / 24, abs=0.05)
    assert info["num_frames"] == 216 and info["size_bytes"] == os.path.getsize(path)
    assert info["has_audio"] is False and info["stream_index"] == 0


@pytest.mark.timeout(120)  # a FIFO used to block probe forever
def test_broken_sources_become_error_rows(tmp_path, corpus):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).bytes(50_000))  # seeded: os.urandom bytes once probed as a video
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # opening it would block until a writer appears
    good, _ = corpus["three_scenes.mp4"]
    rows = probe(str(empty), str(noise), str(folder), str(tmp_path / "missing.mp4"), str(fifo), good)
    codes = [r["error"].split(":")[0] if r["error"] else None for r in rows]
    assert codes == ["empty_file", "invalid_container", "not_a_file", "unreadable", "not_a_file", None]
    assert [r["status"] for r in rows] == ["error"] * 5 + ["ok"]
    assert all(r["video_id"] for r in rows)  # every row is keyed, even without readable bytes
