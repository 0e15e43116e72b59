"""`vidprep` commands on a committed output: query, refilter, compact, search, report.

Each takes the parsed arguments and returns the exit code; pipeline/cli.py owns the parser, the
dispatch and the mapping of errors to exit codes.
"""
from __future__ import annotations

import sys
from pathlib import Path


def query(args) -> int:
    from pipeline.catalog.views import query
    from pipeline.report.summary import format_table

    table = query(args.output, args.sql)
    if args.format == "table":
        text = format_table(table)
    elif args.format == "csv":
        from pipeline.report.summary import csv_text

        text = csv_text(table)
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


def refilter(args) -> int:
    from pipeline.catalog.refilter import UNCHANGED, format_outcome, refilter

    if args.keep is not None and args.keep_all:
        raise ValueError("--keep and --keep-all exclude each other")
    if args.near_duplicate_distance is not None and args.no_dedup:
        raise ValueError("--near-duplicate-distance and --no-dedup exclude each other")
    keep = None if args.keep_all else (UNCHANGED if args.keep is None else args.keep)
    distance = None if args.no_dedup else (UNCHANGED if args.near_duplicate_distance is None
                                           else args.near_duplicate_distance)
    if args.band_workers is not None and args.band_workers < 0:
        raise ValueError(f"--band-workers: must be 0 or more (got {args.band_workers})")

    def start_ray() -> None:  # only called for a pass worth it (pipeline/catalog/bandjoin.py)
        from pipeline.run.executors import init_ray

        init_ray(args.ray_address, None)

    outcome = refilter(args.output, keep, distance, dry_run=args.dry_run, band_workers=args.band_workers,
                       start_ray=start_ray)
    print(format_outcome(outcome) + ("\n  (dry run: nothing written)" if args.dry_run else ""))
    return 0


def compact(args) -> int:
    from pipeline.store.compact import compact

    done = compact(args.output, target_rows=args.target_rows)
    if done.wave_id is None:
        print(f"compact {args.output}: nothing to do (no table has two small files)")
        return 0
    for table in done.written:
        print(f"compact {args.output}: {table}: {done.replaced[table]} files → {done.written[table]} "
              f"({done.rows[table]} rows), committed as {done.wave_id}")
    return 0


def search(args) -> int:
    import json
    import tempfile

    import pyarrow as pa

    from pipeline.report.summary import format_table
    from pipeline.catalog.search import search, write_thumbnails

    from pipeline.catalog.search import load_model_of
    from pipeline.run.models import loading, model_fields

    from pipeline.store.location import Location

    loc = Location.of(args.output)
    settings = json.loads(loc.read_bytes("run.json"))["config"]["stages"].get("clip_score") \
        if loc.is_file("run.json") else None
    with loading(model_fields("stages.clip_score", settings)):
        clip = load_model_of(args.output)
    table = search(args.output, args.text, args.k, include_rejected=args.all, clip=clip)
    folder = args.thumbnails or tempfile.mkdtemp(prefix="vidprep-search-")
    paths = write_thumbnails(table, folder)
    shown = table.select(["rank", "clip_id", "score", "caption", "source_uri", "start_s"]
                         + (["status"] if args.all else []))
    print(format_table(shown.append_column("thumbnail", pa.array(paths, pa.string())), max_width=60))
    return 0


def report(args) -> int:
    from pipeline.report.html import write_report

    if args.thumbnails < 0 or args.examples < 0:
        raise ValueError("--thumbnails and --examples must be >= 0")
    path = write_report(args.output, args.to, thumbnails=args.thumbnails, examples=args.examples)
    size = path.stat().st_size if isinstance(path, Path) else None  # (a URI: the report is on the store)
    print(f"wrote {path}" + (f" ({size / 1e6:.1f} MB)" if size is not None else ""))
    return 0
