"""The `vidprep` command: run, query, demo-videos, bench."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


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
    p.add_argument("--no-progress", action="store_true", help="hide Ray Data's progress bars")

    q = sub.add_parser("query", help="run a read-only SQL query on the catalog (views: videos, clips, commits)")
    q.add_argument("output")
    q.add_argument("sql")
    q.add_argument("--format", "-f", choices=["table", "csv", "json", "parquet"], default="table")
    q.add_argument("--to", help="write the result to this file (required for parquet)")

    d = sub.add_parser("demo-videos", help="write the demo's synthetic videos (with real cuts)")
    d.add_argument("folder")

    m = sub.add_parser("demo-models", help="build the demo's tiny random models (offline; meaningless outputs)")
    m.add_argument("folder")

    b = sub.add_parser("bench", help="benchmarks; results to JSON and docs/BENCHMARKS.md")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--video", help="a video to split (default: a synthetic 720p H.264 file)")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--json", default="bench.json")
    b.add_argument("--markdown", help="update this Markdown file's split table (e.g. docs/BENCHMARKS.md)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        return {"run": _run, "query": _query, "demo-videos": _demo_videos, "demo-models": _demo_models,
                "bench": _bench}[args.command](args)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as err:
        print(f"vidprep {args.command}: error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from pipeline.config import load_config
    from pipeline.report import run_summary
    from pipeline.runner import run

    overrides = list(args.overrides)
    if args.ray_address:
        overrides.append(f"run.ray_address={args.ray_address}")
    if args.runner:
        overrides.append(f"run.runner={args.runner}")
    config = load_config(args.config, overrides)  # every field checked before any work
    result = run(config, args.input, args.output, progress=not args.no_progress,
                 allow_config_change=args.allow_config_change)
    print(run_summary(result))
    return 0


def _query(args) -> int:
    from pipeline.catalog import query
    from pipeline.report import format_table

    table = query(args.output, args.sql)
    if args.format == "table":
        text = format_table(table)
    elif args.format == "csv":
        import pyarrow.csv as pcsv
        import io

        buffer = io.BytesIO()
        pcsv.write_csv(table, buffer)
        text = buffer.getvalue().decode()
    elif args.format == "json":
        import json

        text = json.dumps(table.to_pylist(), default=_json_default, indent=1)
    else:
        if not args.to:
            raise ValueError("--format parquet needs --to FILE")
        import pyarrow.parquet as pq

        pq.write_table(table, args.to)
        print(f"wrote {table.num_rows} rows to {args.to}", file=sys.stderr)
        return 0
    if args.to:
        Path(args.to).write_text(text)
    else:
        print(text)
    return 0


def _json_default(value):
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    return str(value)


def _demo_videos(args) -> int:
    from pipeline.synth import write_demo_videos

    for name, cuts in write_demo_videos(args.folder).items():
        print(f"{Path(args.folder) / name}: cuts at frames {[int(c) for c in cuts]}")
    return 0


def _demo_models(args) -> int:
    from pipeline.tiny import build_all

    for name, path in build_all(args.folder).items():
        print(f"{name}: {path}")
    return 0


def _bench(args) -> int:
    from pipeline.bench import main as bench_main

    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
