"""`vidprep bench`: split throughput against the scenedetect CLI and pure decode.

Four methods on the same file, interleaved per repeat (A, B, C, D, A, B, ...)
so drift in machine load hits them all alike; each reports its median:
  split        - stages.probe.Probe then stages.split.Split, default settings but
                 resources.cpus = the machine's cores (decoder threads, as the CLI uses),
                 in process (the code path the pipeline runs);
  scenedetect  - `scenedetect -i FILE detect-adaptive list-scenes` as a
                 subprocess, detector defaults (its time includes start-up:
                 that is what a user of the CLI pays);
  ffmpeg       - `ffmpeg -threads N -i FILE -f null -`, N = split's decoder
                 threads: FFmpeg's own decode of the file at full size, the floor
                 (the `ffmpeg` on PATH, else imageio-ffmpeg's binary; left out
                 when there is neither);
  decode_small - split's own reader (PyAV by default, both of its scales, its
                 prefetch thread), no detection: what of split's time is
                 decoding and downscaling.
"""
from __future__ import annotations

import csv
import datetime
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.bench import kit as benchkit
from stages.base import Resources

START, END = "<!-- bench:split:start -->", "<!-- bench:split:end -->"
GOAL_VS_CLI = 1.5
# Synthetic 1280x720 24 fps scenes (frames): ~60 s for the full run, ~10 s for --quick.
FULL_SCENES = [96, 150, 72, 200, 120, 48, 180, 110, 144, 90, 130, 100]
QUICK_SCENES = [72, 96, 72]
# The CLI's default detector run; -q and -f only silence the terminal and fix the CSV's name.
CLI_ARGS = ["-q", "-i", "{video}", "-o", "{outdir}", "detect-adaptive", "list-scenes", "-f", "scenes.csv"]
GOAL_VS_FFMPEG = 1.2
LABELS = {"split": "vidprep split", "scenedetect": "scenedetect CLI (detect-adaptive)",
          "ffmpeg": "ffmpeg -f null decode, full size", "decode_small": "split's reader alone, Split's size"}


def main(args) -> int:
    repeats = min(args.repeats, 2) if args.quick else args.repeats
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1 (got {args.repeats})")
    path, true_cuts = _input_video(args)
    result = run_bench(path, repeats)
    result.update(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  command=_command_line(args, repeats), machine=machine_info())
    result["cuts"]["truth"] = true_cuts
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    table = markdown_table(result)
    if args.markdown:
        update_markdown(Path(args.markdown), table)
    print(table)
    print(f"\nwrote {args.json}" + (f" and {args.markdown}" if args.markdown else ""))
    return 0


def _input_video(args) -> tuple[str, list[int] | None]:
    """args.video, or the cached synthetic 720p file (generating ~60 s of 720p takes a while)."""
    if args.video:
        if not Path(args.video).is_file():
            raise FileNotFoundError(args.video)
        return args.video, None
    from pipeline.kit.synth import write_video

    scenes = QUICK_SCENES if args.quick else FULL_SCENES
    cache = Path(os.environ.get("VIDPREP_BENCH_CACHE", Path(tempfile.gettempdir()) / "vidprep-bench"))
    path = cache / f"synthetic-1280x720-24fps-{sum(scenes)}f-{len(scenes)}s.mp4"
    cuts = list(itertools.accumulate(scenes))[:-1]
    if not path.is_file():
        partial = path.with_suffix(".partial.mp4")  # renamed when complete: an interrupted run leaves no bad cache
        write_video(partial, scenes, width=1280, height=720, fps=24, seed=0)
        partial.replace(path)
    return str(path), cuts


def run_bench(path: str, repeats: int) -> dict:
    import pyarrow as pa

    from stages.video.source import decode_size
    from stages.probe import Probe
    from stages.split import Split

    # The CLI's FFmpeg decodes with every core; give split the same cores (a pipeline worker
    # with resources.cpus = N gets N decoder threads), so the comparison is core for core.
    stage = Split(resources=Resources(cpus=float(os.cpu_count() or 1)))
    started = time.perf_counter()
    probed = Probe()(pa.table({"source_uri": [path]}))
    probe_s = time.perf_counter() - started
    video = probed.column("video")[0].as_py()
    if video["status"] != "ok":
        raise RuntimeError(f"probe failed on {path}: {video['error']}")
    w, h = video["width"], video["height"]
    small = decode_size(w, h, stage.decode_short_side)  # display orientation, as split asks decord
    threads = max(1, int(stage.resources.cpus))  # the decoder threads Split gives decord
    found: dict[str, list[int]] = {}
    decoded: dict[str, tuple[int, float]] = {}

    def split() -> None:
        out = stage(probed).column("video")[0].as_py()
        if out["status"] != "ok":
            raise RuntimeError(f"split failed on {path}: {out['error']}")
        found["split"] = list(out["cuts"] or [])

    def decode_small() -> None:
        decoded["small"] = decode_all(stage, path, video, small, threads)

    ffmpeg = ffmpeg_exe()
    with tempfile.TemporaryDirectory(prefix="vidprep-bench-") as outdir:
        def cli() -> None:
            found["scenedetect"] = scenedetect_cli(path, outdir)

        def ffmpeg_decode() -> None:
            subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", str(threads),
                            "-i", path, "-f", "null", "-"], check=True, stdin=subprocess.DEVNULL)

        methods = {"split": split, "scenedetect": cli, "decode_small": decode_small}
        if ffmpeg:
            methods["ffmpeg"] = ffmpeg_decode
        times = time_interleaved(methods, repeats, warm_file=path)
    num_frames, fps, reader = decoded["small"]
    settings = {"detector": stage.detector, "decode_short_side": stage.decode_short_side,
                "decode_size": list(small), "detect_width": stage.detect_width, "reader": reader,
                "chunk_frames": stage.chunk_frames, "decode_threads": threads,
                "scenedetect_cli": " ".join(["scenedetect", *CLI_ARGS]),
                "ffmpeg": f"{ffmpeg} -threads {threads} -i FILE -f null -" if ffmpeg else None}
    return _results(times, found, video, num_frames, fps, settings, probe_s)


def time_interleaved(methods: dict, repeats: int, warm_file: str) -> dict[str, list[float]]:
    """Wall times of each method, interleaved; the file is read once first so no method pays the disk."""
    Path(warm_file).read_bytes()
    return benchkit.time_interleaved(methods, repeats)


def _results(times, found, video, num_frames, fps, settings, probe_s) -> dict:
    duration = num_frames / fps  # decoded frames, not the container's claim
    summary = {name: {"times_s": ts, "median_s": statistics.median(ts)} for name, ts in times.items()}
    for s in summary.values():
        s.update(frames_per_s=num_frames / s["median_s"], x_realtime=duration / s["median_s"])
    median = {name: s["median_s"] for name, s in summary.items()}
    return {
        "benchmark": "split", "repeats": len(times["split"]), "probe_s": probe_s,
        "video": {"path": video["source_uri"], "width": video["width"], "height": video["height"], "fps": fps,
                  "codec": video["codec"], "frames": num_frames, "duration_s": duration},
        "settings": settings,
        "methods": {name: {"label": LABELS[name], **s} for name, s in summary.items()},
        "ratios": {"cli_over_split": median["scenedetect"] / median["split"], "goal_cli_over_split": GOAL_VS_CLI,
                   "split_over_ffmpeg": median["split"] / median["ffmpeg"] if "ffmpeg" in median else None,
                   "goal_split_over_ffmpeg": GOAL_VS_FFMPEG,
                   "split_over_decode_small": median["split"] / median["decode_small"]},
        "cuts": {"split": found["split"], "scenedetect": found["scenedetect"], "tolerance_frames": 1,
                 "match": cuts_match(found["split"], found["scenedetect"])},
    }


def decode_all(stage, path: str, video: dict, size: tuple[int, int], threads: int) -> tuple[int, float, str]:
    """Decode every frame with the reader Split opens for this video (its sizes, its sample grid, its
    chunks, its prefetch thread), without detection; returns (frames, fps, reader name)."""
    from stages.video import decode
    from stages.video.frames import open_frames, prefetched

    decord = stage.reader == "decord" and decode.choose(video)[0] == "decord"
    source = (open_frames if decord else stage._pyav)(path, *size, threads, video["stream_index"])
    total = sum(1 for _ in prefetched(source, stage.chunk_frames))
    return total, source.fps or video["fps"], source.name


def ffmpeg_exe() -> str | None:
    """The `ffmpeg` on PATH, else the binary the imageio-ffmpeg package ships, else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None


def scenedetect_cli(path: str, outdir: str) -> list[int]:
    """Run the CLI with its detector defaults; returns 0-based cuts (first frame of each new scene)."""
    csv_path = Path(outdir) / "scenes.csv"
    csv_path.unlink(missing_ok=True)  # never parse a previous repeat's file
    cmd = [*_scenedetect_exe(), *(a.format(video=path, outdir=outdir) for a in CLI_ARGS)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not csv_path.is_file():
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return parse_scenes_csv(csv_path.read_text())


def _scenedetect_exe() -> list[str]:
    # The script beside this interpreter first: PATH may hold another install (or none).
    beside = Path(sys.executable).with_name("scenedetect")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("scenedetect")
    return [found] if found else [sys.executable, "-m", "scenedetect"]


def parse_scenes_csv(text: str) -> list[int]:
    """0-based cuts from list-scenes' CSV. Its "Start Frame" is 1-based in 0.6/0.7 (scene 1
    starts at 1); the first scene always starts at the video's first frame, so its number
    is the base, whichever a version uses."""
    lines = text.splitlines()
    if lines and lines[0].startswith("Timecode List"):  # the cut list row above the header
        lines = lines[1:]
    starts = [int(row["Start Frame"]) for row in csv.DictReader(lines)]
    if not starts or starts[0] not in (0, 1):
        raise RuntimeError(f"scenedetect CSV: unexpected first scene start {starts[:1]}")
    return [start - starts[0] for start in starts[1:]]


def cuts_match(a: list[int], b: list[int], tolerance: int = 1) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b))


def machine_info() -> dict:
    return benchkit.machine_info(("decord", "scenedetect", "opencv-python-headless", "opencv-python", "av"))


def _command_line(args, repeats: int) -> str:
    # Rebuilt from the parsed arguments (with the repeats actually run) so it reads the same
    # whether run via the CLI, make, or a test.
    parts = ["vidprep", "bench"] + (["--quick"] if args.quick else [])
    parts += ["--video", args.video] if args.video else []
    parts += ["--repeats", str(repeats), "--json", str(args.json)]
    parts += ["--markdown", str(args.markdown)] if args.markdown else []
    return " ".join(parts)


def markdown_table(r: dict) -> str:
    v, m, ratios, cuts, mach = r["video"], r["methods"], r["ratios"], r["cuts"], r["machine"]
    lines = [f"Input: `{Path(v['path']).name}`, {v['width']}x{v['height']} {v['codec']}, {v['fps']:g} fps, "
             f"{v['frames']} frames ({v['duration_s']:.1f} s); median of {r['repeats']} interleaved runs.", "",
             "| Method | Median s | Frames/s | × real time |", "|---|---:|---:|---:|"]
    lines += [f"| {s['label']} | {s['median_s']:.3f} | {s['frames_per_s']:.0f} | {s['x_realtime']:.1f} |"
              for s in m.values()]
    vs_cli, vs_ff, vs_dec = ratios["cli_over_split"], ratios["split_over_ffmpeg"], ratios["split_over_decode_small"]
    st = r["settings"]
    lines += ["", f"- scenedetect CLI time / split time: **{vs_cli:.2f}×** (goal ≥ {GOAL_VS_CLI}: "
              f"{'met' if vs_cli >= GOAL_VS_CLI else 'not met'})",
              (f"- split time / `ffmpeg -threads {st['decode_threads']} -i F -f null -` time: **{vs_ff:.2f}×** "
               f"(goal ≤ {GOAL_VS_FFMPEG}: {'met' if vs_ff <= GOAL_VS_FFMPEG else 'not met'})") if vs_ff is not None
              else "- no ffmpeg binary (PATH or imageio-ffmpeg): the FFmpeg floor was not measured",
              f"- split with resources.cpus = {st['decode_threads']} ({st['decode_threads']} decoder "
              "threads, detection overlapped in another thread), as many cores as the CLI's FFmpeg uses; "
              f"reader {st.get('reader')}, detection at {st.get('detect_width')} px wide",
              f"- split time / its reader's time alone at Split's size ({st['decode_size'][0]}x"
              f"{st['decode_size'][1]}): {vs_dec:.2f}× (the rest is detection and sampling)",
              f"- Cuts {'match' if cuts['match'] else 'DIFFER'} (±{cuts['tolerance_frames']} frame): "
              f"split {cuts['split']}, scenedetect {cuts['scenedetect']}"
              + (f", true {cuts['truth']}" if cuts.get("truth") is not None else ""),
              f"- {benchkit.machine_line(mach)}",
              f"- Command: `{r['command']}` ({r['date']})"]
    return "\n".join(lines)


def update_markdown(path: Path, table: str) -> None:
    """Replace the text between the split markers; append a `## Split` section if there are none."""
    benchkit.update_section(path, "split", "Split", table)
