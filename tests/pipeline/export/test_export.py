"""vidprep export: frame-exact clip files with captions, folder and WebDataset, resumable, on Ray too."""
from __future__ import annotations

import json
import tarfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipeline.catalog import arrow, connect
from pipeline.config import load_config
from pipeline.export.clips import ExportOptions
from pipeline.export.runner import export
from pipeline.run.runner import run

BITS, W, H = 8, 160, 96
SCENES = [(40, 200, 40, 40), (40, 40, 200, 40), (40, 40, 40, 200)]  # (frames, r, g, b) backgrounds


def index_frame(k: int, colour) -> np.ndarray:
    """A frame whose top strip shows k in binary (8 black/white blocks) over a flat scene colour."""
    frame = np.empty((H, W, 3), np.uint8)
    frame[:] = colour
    for bit in range(BITS):
        frame[:24, bit * 20:(bit + 1) * 20] = 255 if (k >> bit) & 1 else 0
    return frame


def read_index(frame: np.ndarray) -> int:
    return sum(1 << bit for bit in range(BITS) if frame[4:20, bit * 20 + 4:bit * 20 + 16].mean() > 127)


def decoded(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """A pipeline output (probe + split) over one H.264 video with B-frames whose frames carry their index."""
    import av

    folder = tmp_path_factory.mktemp("indexed")
    with av.open(str(folder / "indexed.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "12", "bf": "2"}  # B-frames: decode order is not presentation order
        k = 0
        for count, *colour in SCENES:
            for _ in range(count):
                frame = av.VideoFrame.from_ndarray(index_frame(k, colour), format="rgb24")
                frame.pts = k
                container.mux(stream.encode(frame))
                k += 1
        container.mux(stream.encode(None))
    out = folder / "out"
    config = load_config(None, ["run.runner=sequential", "stages.split.min_clip_s=0.5", "stages.split.trim_frames=0"])
    run(config, str(folder / "indexed.mp4"), out, progress=False)
    return out


def test_each_file_is_exactly_its_frames_in_presentation_order(output, tmp_path):
    result = export(output, tmp_path / "clips", runner="sequential")
    clips = connect(output).sql("SELECT clip_id, start_frame, end_frame FROM clips WHERE status = 'accepted'").fetchall()
    assert result.clips == len(clips) >= 3 and result.written == len(clips)
    for clip_id, start, end in clips:
        frames = decoded(tmp_path / "clips" / f"{clip_id}.mp4")
        assert len(frames) == end - start
        assert [read_index(f) for f in frames] == list(range(start, end))
        row = arrow(connect(output).sql(f"SELECT * FROM clips WHERE clip_id = '{clip_id}'")).to_pylist()[0]
        caption = row.get("caption_long") or row.get("caption_dense") or ""  # what --caption long falls back to
        assert (tmp_path / "clips" / f"{clip_id}.txt").read_text().strip() == caption
    manifest = [json.loads(line) for line in (tmp_path / "clips" / "metadata.jsonl").read_text().splitlines()]
    assert sorted(r["clip_id"] for r in manifest) == sorted(c[0] for c in clips)
    assert (tmp_path / "clips" / "metadata.csv").read_text().startswith("clip_id,")


def test_a_rerun_skips_finished_files_and_removes_half_written_ones(output, tmp_path):
    dest = tmp_path / "clips"
    export(output, dest, runner="sequential")
    first = sorted(dest.glob("*.mp4"))
    stamp = {p: p.stat().st_mtime_ns for p in first}
    first[0].unlink()  # as if killed before this clip was renamed into place
    (dest / f".{first[0].stem}.mp4.part").write_bytes(b"half")
    again = export(output, dest, runner="sequential")
    assert again.written == 1 and not list(dest.glob(".*.part"))
    assert all(p.stat().st_mtime_ns == stamp[p] for p in first[1:])  # not rewritten


def test_resampled_and_resized(output, tmp_path):
    export(output, tmp_path / "small", runner="sequential", options=ExportOptions(fps=12, max_side=80))
    start, end, clip_id = connect(output).sql(
        "SELECT start_frame, end_frame, clip_id FROM clips WHERE status = 'accepted' ORDER BY start_frame").fetchall()[0]
    frames = decoded(tmp_path / "small" / f"{clip_id}.mp4")
    assert frames[0].shape == (48, 80, 3) and len(frames) == (end - start) // 2
    import av

    with av.open(str(tmp_path / "small" / f"{clip_id}.mp4")) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == 12.0
        assert abs(float(stream.duration * stream.time_base) - len(frames) / 12) < 0.1
    assert [read_index(np.repeat(np.repeat(f, 2, 0), 2, 1)) for f in frames] == list(range(start, end, 2))[:len(frames)]


@pytest.mark.ray
def test_webdataset_on_ray_equals_the_folder(output, tmp_path):
    folder = export(output, tmp_path / "folder", runner="sequential")
    tars = export(output, tmp_path / "wds", fmt="webdataset", runner="ray", shard_bytes=1)
    assert len(tars.shards) == folder.clips  # one sample per shard at 1 byte per shard
    names = []
    for shard in tars.shards:
        with tarfile.open(tmp_path / "wds" / shard) as tar:
            names += tar.getnames()
            key = tar.getnames()[0].split(".")[0]
            assert tar.extractfile(f"{key}.mp4").read() == (tmp_path / "folder" / f"{key}.mp4").read_bytes()
    assert sorted(n.rsplit(".", 1)[1] for n in names) == sorted(["json", "mp4", "txt"] * folder.clips)
