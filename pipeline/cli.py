"""The `vidprep` command: run, query, refilter, compact, search, report, demo-videos, demo-models, expand, bench,
train, sample."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


# Exit codes (docs/RELIABILITY.md): 1 is left to Python for a crash (a traceback: a bug to report).
EXIT_ERROR = 2  # a bad argument, config or input refused (one line naming it)
EXIT_OUTPUT = 3  # the output can't be written: read-only, no permission, no space (one line naming the path)
EXIT_NO_CLIPS = 4  # `run` processed sources but every one failed: error rows committed, no clip produced
EXIT_INTERRUPTED = 130  # Ctrl-C; a rerun resumes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidprep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="split sources into clips and build the catalog")
    p.add_argument("--config", "-c", help="YAML config (default: built-in defaults)")
    p.add_argument("--input", "-i", required=True, help="folder, file, .txt list of URIs, or pyarrow.fs URI")
    p.add_argument("--output", "-o", required=True, help="output folder (catalog, shards, commits)")
    p.add_argument("--ray-address", help="join a Ray cluster (e.g. auto, ray://head:10001); default: embedded")
    p.add_argument("--runner", choices=["ray", "sequential"], help="override run.runner")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. stages.split.max_clip_s=8 (repeatable)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="write to an output made with other stage settings")
    p.add_argument("--no-progress", action="store_true", help="hide Ray Data's per-stage bars (shown on a terminal)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also show Ray's and the libraries' lines (always in OUT/logs/<run_id>.log)")
    p.add_argument("--progress-interval", type=float, default=10.0, metavar="S",
                   help="seconds between vidprep's progress lines (default 10)")

    n = sub.add_parser("plan", help="the run's plan against the cluster (actors, CPUs, GPU shares); exits 2 if it "
                                    "cannot be scheduled")
    n.add_argument("--config", "-c", help="YAML config (default: built-in defaults)")
    n.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    n.add_argument("--ray-address", help="check against this Ray cluster (default: an embedded one on this machine)")
    n.add_argument("--gpus", type=float, help="check against a machine with this many GPUs (starts no Ray)")
    n.add_argument("--cpus", type=float, help="with --gpus: that machine's CPUs (default: this machine's)")

    e = sub.add_parser("export", help="clips as MP4 files with captions: a folder for other trainers, or WebDataset")
    e.add_argument("output", help="the pipeline output (OUT)")
    e.add_argument("dest", help="folder to write (created; a rerun skips finished clips)")
    e.add_argument("--format", dest="fmt", choices=["folder", "webdataset"], default="folder")
    e.add_argument("--where", help="SQL condition over the clips view (default: status = 'accepted')")
    e.add_argument("--caption", choices=["long", "short", "dense"], default="long", help="the .txt beside each clip")
    e.add_argument("--fps", type=float, help="resample to this frame rate (default: the source's)")
    size = e.add_mutually_exclusive_group()
    size.add_argument("--max-side", type=int, help="longest side at most this many pixels (never upscaled)")
    size.add_argument("--bucket", action="store_true", help="the clip's training bucket: size and frame count")
    e.add_argument("--codec", default="h264", help="video codec (default h264, yuv420p)")
    e.add_argument("--shard-mb", type=int, default=1024, help="webdataset: MB per tar shard")
    e.add_argument("--ray-address", help="join a Ray cluster (default: embedded)")
    e.add_argument("--runner", choices=["ray", "sequential"], default="ray")

    q = sub.add_parser("query", help="run a read-only SQL query on the catalog (views: videos, clips, commits)")
    q.add_argument("output")
    q.add_argument("sql")
    q.add_argument("--format", "-f", choices=["table", "csv", "json", "parquet"], default="table")
    q.add_argument("--to", help="write the result to this file (required for parquet)")

    d = sub.add_parser("demo-videos", help="write the demo's synthetic videos (with real cuts)")
    d.add_argument("folder")

    m = sub.add_parser("demo-models", help="build the demo's tiny random models (offline; meaningless outputs)")
    m.add_argument("folder")

    x = sub.add_parser("expand", help="prompt upsampling: rewrite a short prompt in the training captions' style")
    x.add_argument("prompt")
    x.add_argument("--config", "-c", help="YAML config whose stages.expand settings are used (default: built-in)")
    x.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. stages.expand.model=demo/models/llm (repeatable)")
    x.add_argument("--json", action="store_true", help="print long and short captions, status and reason as JSON")

    b = sub.add_parser("bench", help="every per-stage benchmark against its baseline; JSON + docs/BENCHMARKS.md")
    b.add_argument("--quick", action="store_true", help="small inputs, few repeats: checks, not figures")
    b.add_argument("--only", nargs="+", metavar="NAME",
                   help="split clip caption encode signals shots loader packing memory scale (default: all)")
    b.add_argument("--json-dir", default="bench-results", help="one JSON per benchmark, plus index.json")
    b.add_argument("--no-markdown", dest="markdown", action="store_false",
                   help="leave docs/BENCHMARKS.md and docs/RELIABILITY.md alone")
    b.add_argument("--video", help="split: a video to split (default: a synthetic 720p H.264 file)")
    b.add_argument("--repeats", type=int, default=5, help="split: interleaved rounds")

    from pipeline.trainer.sizes import DiT_models  # torch-free

    t = sub.add_parser("train", help="train the bundled video DiT on committed shards (torchrun for DDP)")
    t.add_argument("--data", required=True, help="pipeline output folder (OUT or OUT/shards)")
    t.add_argument("--config", "-c", help="training YAML (e.g. configs/train_baby.yaml); default: built-in")
    t.add_argument("--results", "-o", help="checkpoints and logs (overrides train.results)")
    t.add_argument("--model", choices=list(DiT_models), help="DiT size (overrides model.size)")
    t.add_argument("--steps", type=int, help="total steps (overrides train.steps)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optim.lr=0.0003 (repeatable)")
    t.add_argument("--backend", choices=["torch", "ray"], default="torch",
                   help="torch: this process (DDP under torchrun); ray: Ray Train's TorchTrainer")
    t.add_argument("--ray-address", help="Ray cluster to train on (implies --backend ray)")
    t.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (--backend ray)")

    s = sub.add_parser("sample", help="generate a video from a prompt with a trained checkpoint")
    s.add_argument("prompt")
    s.add_argument("--checkpoint", required=True, help="a checkpoint folder, or a results folder (its latest)")
    s.add_argument("--out", "-o", default="sample.mp4")
    s.add_argument("--steps", type=int, help="Euler steps (default: the checkpoint's sample.steps)")
    s.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (default: sample.cfg_scale)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--bucket", help="FRAMESxHEIGHTxWIDTH (default: the trained bucket with most clips)")
    s.add_argument("--fps", type=float)
    s.add_argument("--upsample", action=argparse.BooleanOptionalAction, default=None,
                   help="expand the prompt with the caption expander first (default: sample.upsample)")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--device", default="auto")

    r = sub.add_parser("refilter", help="re-decide clip statuses from stored scores (no recomputation)")
    r.add_argument("output")
    r.add_argument("--keep", help="SQL boolean expression over clip columns (default: the output's current one)")
    r.add_argument("--keep-all", action="store_true", help="no keep expression: every scored clip passes")
    r.add_argument("--near-duplicate-distance", type=float, help="cosine distance (default: the current one)")
    r.add_argument("--no-dedup", action="store_true", help="turn near-duplicate rejection off")
    r.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    r.add_argument("--ray-address", help="Ray cluster for the near-duplicate band actors of a large pass "
                   "(default: an embedded one, started only for a pass of 20+ batches of 100k clips)")
    r.add_argument("--band-workers", type=int, help="band actors (0: look up in the driver, with DuckDB; "
                   "default: one per Ray CPU, up to the bands, for a pass of several batches)")

    c = sub.add_parser("compact", help="rewrite many small catalog files into few large ones (one commit)")
    c.add_argument("output")
    c.add_argument("--target-rows", type=int, default=1_000_000, help="rows per written file (default 1,000,000)")

    h = sub.add_parser("report", help="write OUT/report.html: funnel, histograms, buckets, thumbnails (one file)")
    h.add_argument("output")
    h.add_argument("--to", help="write the page here instead of OUT/report.html")
    h.add_argument("--thumbnails", type=int, default=48, help="accepted clips in the grid (default 48)")
    h.add_argument("--examples", type=int, default=6, help="rejected clips shown per reason (default 6)")

    f = sub.add_parser("search", help="find clips by text: CLIP text embedding, cosine ranking in DuckDB")
    f.add_argument("output")
    f.add_argument("text")
    f.add_argument("-k", type=int, default=10, help="how many clips (default 10)")
    f.add_argument("--all", action="store_true", help="search rejected clips too")
    f.add_argument("--thumbnails", help="folder for the results' thumbnails (default: a new temp folder)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from pipeline.commands import catalog as on_output
    from pipeline.run.terminal import stdin_detached

    try:
        with stdin_detached():  # vidprep never reads stdin; no child of it may wait on the terminal
            return {"run": _run, "plan": _plan, "export": _export, "query": on_output.query,
                    "demo-videos": _demo_videos, "demo-models": _demo_models, "bench": _bench, "expand": _expand,
                    "report": on_output.report, "refilter": on_output.refilter, "compact": on_output.compact,
                    "search": on_output.search, "train": _train, "sample": _sample}[args.command](args)
    except Exception as err:
        from pipeline.run.models import find_model_error
        from pipeline.store.writable import OutputUnwritable

        if isinstance(err, OutputUnwritable):
            print(f"vidprep {args.command}: error: {err}", file=sys.stderr)
            return EXIT_OUTPUT

        shown = find_model_error(err)  # a model that could not load, also from inside a Ray worker
        if shown is None and not isinstance(err, (ValueError, FileNotFoundError, PermissionError, RuntimeError)):
            raise
        print(f"vidprep {args.command}: error: {shown or err}", file=sys.stderr)
        return EXIT_ERROR


def _run(args) -> int:
    from pipeline.config import load_config
    from pipeline.report.summary import run_summary
    from pipeline.run.runner import RunInterrupted, run

    overrides = list(args.overrides)
    if args.ray_address:
        overrides.append(f"run.ray_address={args.ray_address}")
    if args.runner:
        overrides.append(f"run.runner={args.runner}")
    config = load_config(args.config, overrides)  # every field checked before any work
    try:
        result = run(config, args.input, args.output, progress=not args.no_progress,
                     allow_config_change=args.allow_config_change, verbose=args.verbose,
                     interval=args.progress_interval)
    except RunInterrupted as stop:
        done = stop.result
        waves = f"{done.waves} wave{'s' if done.waves != 1 else ''} ({done.clips} clips)"
        print(f"vidprep run: interrupted; {waves} committed to {args.output} by this run; "
              "run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    from pipeline.catalog.refilter import format_outcome
    from pipeline.report.summary import nothing_listed_line

    if result.nothing_listed:
        print(nothing_listed_line(result))
        return 0
    print(run_summary(result))
    if result.decisions is not None:
        print(format_outcome(result.decisions))
    return EXIT_NO_CLIPS if result.no_clip_produced else 0


def _plan(args) -> int:
    import os

    from pipeline.config import load_config
    from pipeline.run import plan

    overrides = list(args.overrides) + ([f"run.ray_address={args.ray_address}"] if args.ray_address else [])
    config = load_config(args.config, overrides)
    stages = config.plan()
    if args.gpus is not None:
        cluster = plan.Cluster(cpus=args.cpus or float(os.cpu_count() or 1), gpus=args.gpus)
    else:
        from pipeline.run.executors import RayExecutor

        cluster = RayExecutor(config.run.ray_address, config.run.num_cpus).cluster()
    plan.assign_auto_gpus(stages, cluster)
    print(plan.table(stages, cluster))
    problems = plan.check(stages, cluster)
    if args.gpus is None:  # a real cluster: can a worker on every node open the model files?
        from pipeline.run.visibility import check_nodes, local_paths

        problems += check_nodes(local_paths(stages))
    for problem in problems:
        print(f"vidprep plan: error: {problem}", file=sys.stderr)
    print("the plan fits" if not problems else "the plan does NOT fit: vidprep run would stop at start")
    return 2 if problems else 0


def _export(args) -> int:
    from pipeline.export.clips import ExportOptions
    from pipeline.export.runner import export

    options = ExportOptions(fps=args.fps, max_side=args.max_side, bucket=args.bucket,
                            codec={"h264": "libx264"}.get(args.codec, args.codec))
    result = export(args.output, args.dest, fmt=args.fmt, where=args.where, caption=args.caption, options=options,
                    runner=args.runner, ray_address=args.ray_address, shard_bytes=args.shard_mb << 20)
    print(result.summary())
    return 0


def _demo_videos(args) -> int:
    from pipeline.kit.synth import write_demo_videos

    for name, cuts in write_demo_videos(args.folder).items():
        print(f"{Path(args.folder) / name}: cuts at frames {[int(c) for c in cuts]}")
    return 0


def _demo_models(args) -> int:
    from pipeline.kit.tiny import build_all

    for name, path in build_all(args.folder).items():
        print(f"{name}: {path}")
    return 0


def _expand(args) -> int:
    """The sampler's expander (stages.expand.expand_prompt) on one prompt; a fallback is said on stderr."""
    import json

    from pipeline.config import load_config
    from stages.expand import expand_prompt

    from pipeline.run.executors import pin_threads

    from pipeline.run.models import loading, model_fields
    from stages.expand import Expand, expander_for

    config = load_config(args.config, args.overrides)
    stage = config.stages.get("expand")
    pin_threads(stage.resources.cpus if stage else 1)  # unpinned torch threads crawl on busy cores
    with loading(model_fields("stages.expand", stage or Expand())):
        expander_for(stage)  # loaded once, kept for expand_prompt
    result = expand_prompt(args.prompt, stage)
    if args.json:
        print(json.dumps({k: getattr(result, k) for k in ("long", "short", "status", "reason", "attempts")},
                         ensure_ascii=False, indent=1))
    else:
        print(result.long or args.prompt)
    if result.status != "ok":
        print(f"vidprep expand: {result.status} ({result.reason}): the model's reply was not usable, "
              "so the prompt is returned as it is", file=sys.stderr)
    return 0


def _bench(args) -> int:
    from pipeline.bench.suite import run_all

    return run_all(args)


def _train(args) -> int:
    import json
    import os

    from pipeline.trainer.config import load_train_config
    from pipeline.trainer.train import main as train_main, run_ray

    overrides = [f"data.path={args.data}"] + list(args.overrides)
    overrides += [f"train.results={args.results}"] if args.results else []
    overrides += [f"model.size={args.model}"] if args.model else []
    overrides += [f"train.steps={args.steps}"] if args.steps else []
    config = load_train_config(args.config, overrides)  # every field checked before any work
    if args.backend == "ray" or args.ray_address:
        summary = run_ray(config, args.num_workers, args.ray_address)
    else:
        summary = train_main(config)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=1))
    return 0


def _sample(args) -> int:
    import json

    from pipeline.trainer.sample import sample

    result = sample(args.prompt, args.checkpoint, args.out, steps=args.steps, cfg_scale=args.cfg_scale, seed=args.seed,
                    bucket=args.bucket, fps=args.fps, upsample=args.upsample, ema=not args.no_ema, device=args.device)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
