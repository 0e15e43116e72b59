"""Model-stage work wasted on near-duplicates: two runs appended to one output, streaming off vs on.

    python -m pipeline.bench.dedup [--quick] [--repeats N] [--markdown docs/BENCHMARKS.md]

Run 1 commits a corpus of synthetic videos (the demo's tiny models: every stage of configs/demo.yaml,
sequential runner); run 2 appends copies of some of them (re-encoded, resized), new videos and one copy
of a new video. Run 2 is repeated from the same committed run 1, interleaved: with
`near_duplicate_streaming` off (near-duplicates found only by the end-of-run pass, after caption,
expand and encode worked on them) and on (copies of run 1's kept clips rejected before caption).
"Wasted" rows are rows caption, expand and encode processed whose clip ends rejected
(pipeline/catalog/wasted.py); the final statuses must be the same both ways (checked).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.bench import kit as benchkit

DESCRIPTION = ("The share of caption/expand/encode rows spent on clips that end rejected, with the streaming "
               "near-duplicate check off and on (pipeline/bench/dedup.py). With it on, what is still wasted is "
               "pairs inside one run (left to the end-of-run pass: see docs/ARCHITECTURE.md) and rejections the "
               "stream can't know of; the rows saved are the copies of earlier runs' kept clips. On a GPU node "
               "these three stages are most of the time per clip, so the time saved follows the rows.")
DISTANCE = 0.001  # the demo's: copies sit < 1e-4 apart with the tiny CLIP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.dedup", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer videos, one round")
    parser.add_argument("--repeats", type=int, help="interleaved rounds of run 2 (default 2, quick 1)")
    parser.add_argument("--workdir", help="where videos, models and outputs are built (default: a temporary folder)")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--markdown", help="update this file's section (e.g. docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 2)
    plan = dict(originals=4, copies=2, new=2) if args.quick else dict(originals=8, copies=4, new=4)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vidprep-bench-dedup-"))
    config = prepare(work, plan)
    result = {"date": time.strftime("%Y-%m-%d"), "plan": plan, "repeats": repeats, "distance": DISTANCE,
              "machine": benchkit.machine_info(("transformers",)), "command": _command(args, repeats),
              "load": [os.getloadavg()[0]]}
    modes = {"off": "false", "on": "true"}
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for round_ in range(repeats):
        for mode, value in modes.items():
            runs[mode].append(second_run(work, config, f"{mode}-{round_}", value))
    if len({str(r["statuses"]) for rs in runs.values() for r in rs}) != 1:
        raise AssertionError("the final statuses differ between streaming off and on")
    for mode, done in runs.items():
        result[mode] = {"work": done[0]["work"], "wall_s": [r["wall_s"] for r in done],
                        "streamed": done[0]["streamed"]}
    result["clips"] = len(runs["on"][0]["statuses"])
    result["load"].append(os.getloadavg()[0])
    text = markdown(result)
    benchkit.publish(result, text, args.json, args.markdown, "dedup", "Near-duplicates before the model stages",
                     DESCRIPTION)
    return 0


def prepare(work: Path, plan: dict) -> Path:
    """Videos, the demo's tiny models and config, and run 1's committed output (work/first)."""
    from pipeline.config import load_config
    from pipeline.kit.synth import write_video
    from pipeline.kit.tiny import build_all
    from pipeline.run.runner import run

    config = work / "demo.yaml"
    if not config.exists():
        build_all(work / "models")
        demo = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
        config.write_text(demo.read_text().replace("demo/models", str(work / "models")))
    videos = work / "videos"
    shutil.rmtree(videos, ignore_errors=True)
    videos.mkdir(parents=True)
    size = dict(width=160, height=96)
    for seed in range(1, plan["originals"] + 1):
        write_video(videos / f"a{seed:02d}.mp4", [64, 72], seed=seed, **size)
    first = work / "first"
    shutil.rmtree(first, ignore_errors=True)
    run(load_config(config, _settings("true")), str(videos), first, progress=False)
    for seed in range(1, plan["copies"] + 1):  # copies of run 1's sources: other codec, other size
        codec, shape = ("mpeg4", size) if seed % 2 else ("libx264", dict(width=192, height=112))
        write_video(videos / f"b{seed:02d}_copy.mp4", [64, 72], seed=seed, codec=codec, **shape)
    for seed in range(100, 100 + plan["new"]):
        write_video(videos / f"c{seed}.mp4", [64, 72], seed=seed, **size)
    write_video(videos / "d_copy_of_new.mp4", [64, 72], seed=100, codec="mpeg4", **size)  # a pair within run 2
    return config


def second_run(work: Path, config: Path, name: str, streaming: str) -> dict:
    from pipeline.catalog.views import connect
    from pipeline.catalog.wasted import model_work
    from pipeline.config import load_config
    from pipeline.run.runner import run

    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(work / "first", out)
    started = time.perf_counter()
    run(load_config(config, _settings(streaming)), str(work / "videos"), out, progress=False)
    wall = time.perf_counter() - started
    con = connect(out)
    statuses = con.execute("SELECT clip_id, status FROM clips ORDER BY 1").fetchall()
    streamed = con.execute("""SELECT count(*) FROM clips_written
                              WHERE starts_with(reason, 'near_duplicate_of:')""").fetchall()[0][0]
    return {"work": model_work(out), "wall_s": wall, "statuses": statuses, "streamed": streamed}


def _settings(streaming: str) -> list[str]:
    return ["run.runner=sequential", f"stages.filter.near_duplicate_distance={DISTANCE}",
            f"stages.filter.near_duplicate_streaming={streaming}"]


def markdown(result: dict) -> str:
    from pipeline.catalog.wasted import wasted_fraction

    lines = [f"Two appended runs, {result['clips']} clips in all (videos: {result['plan']}); run 2 repeated from "
             f"the same committed run 1, {result['repeats']} interleaved round(s) per mode; sequential runner, "
             "the demo's tiny models. Rows are the output's, both runs (run 1's are the same in both modes); "
             "wasted = processed rows whose clip ends rejected.", "",
             "| streaming | caption rows (wasted) | expand rows (wasted) | encode rows (wasted) | "
             "wasted fraction | rejected in the stream | run 2 wall s (median) |",
             "|---|---|---|---|---|---|---|"]
    for mode in ("off", "on"):
        r = result[mode]
        cells = [f"{r['work'][s]['rows']} ({r['work'][s]['wasted']})" if s in r["work"] else "-"
                 for s in ("caption", "expand", "encode")]
        lines.append(f"| {mode} | " + " | ".join(cells) + f" | {wasted_fraction(r['work']):.1%} | {r['streamed']} | "
                     f"{statistics.median(r['wall_s']):.1f} |")
    off, on = (statistics.median(result[m]["wall_s"]) for m in ("off", "on"))
    lines += ["", f"Run 2 wall time on/off: {on / off:.2f}. Final statuses: identical (checked).", "",
              f"Command: `{result['command']}`", "",
              f"Machine: {benchkit.machine_line(result['machine']).removeprefix('Machine: ')}; load average "
              f"{result['load'][0]:.1f} → {result['load'][1]:.1f} (2 cores shared with other work at the time)."]
    return "\n".join(lines)


def _command(args, repeats: int) -> str:
    return "vidprep bench --only dedup" + (" --quick" if args.quick else "")


if __name__ == "__main__":
    raise SystemExit(main())
