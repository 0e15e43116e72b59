"""`vidprep bench` end to end on a tiny synthetic video (all four methods, one repeat)."""
import argparse
import json

from pipeline.bench import split as bench
from pipeline.kit.synth import write_video


def test_bench_split_tiny_video(tmp_path):
    video = tmp_path / "tiny.mp4"
    true_cuts = write_video(video, [30, 40, 50], width=160, height=90, fps=24, seed=3)
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text(f"# Benchmarks\n\nintro\n\n{bench.START}\nold table\n{bench.END}\n\n## Later\n")
    args = argparse.Namespace(quick=True, video=str(video), repeats=1,
                              json=str(tmp_path / "bench.json"), markdown=str(markdown))

    assert bench.main(args) == 0

    result = json.loads((tmp_path / "bench.json").read_text())
    assert set(result["methods"]) == {"split", "scenedetect", "decode_small", "ffmpeg"}  # imageio-ffmpeg's binary
    assert result["ratios"]["split_over_ffmpeg"] > 0
    for method in result["methods"].values():
        assert method["frames_per_s"] > 0 and method["x_realtime"] > 0
    assert result["video"]["frames"] == 120
    split_cuts = result["cuts"]["split"]
    assert len(split_cuts) == len(true_cuts)
    assert all(abs(a - b) <= 1 for a, b in zip(split_cuts, true_cuts)), (split_cuts, true_cuts)
    assert result["cuts"]["match"], result["cuts"]  # the CLI agrees on a clean synthetic video
    assert result["machine"]["packages"]["scenedetect"]

    text = markdown.read_text()
    assert text.count(bench.START) == 1 and text.count(bench.END) == 1
    section = text[text.index(bench.START):text.index(bench.END)]
    assert "old table" not in section and "| vidprep split |" in section
    assert "vidprep bench --quick" in section
    assert text.startswith("# Benchmarks\n\nintro\n") and text.endswith("## Later\n")


def test_update_markdown_appends_section(tmp_path):
    path = tmp_path / "new" / "B.md"
    bench.update_markdown(path, "TABLE")
    assert path.read_text() == f"## Split\n\n{bench.START}\nTABLE\n{bench.END}\n"
    bench.update_markdown(path, "TABLE2")
    assert path.read_text().count("TABLE2") == 1 and "TABLE\n" not in path.read_text()


def test_parse_scenes_csv_is_one_based():
    text = ("Timecode List:,00:00:01.250\n"
            "Scene Number,Start Frame,Start Timecode,Start Time (seconds),End Frame\n"
            "1,1,00:00:00.000,0.000,30\n2,31,00:00:01.250,1.250,120\n")
    assert bench.parse_scenes_csv(text) == [30]
