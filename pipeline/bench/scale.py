"""`vidprep bench --only scale`: catalog operations at scale, against DuckDB alone on the same files.

Builds synthetic outputs in the exact on-disk format (pipeline/kit/catalog.py: commit records,
manifest, catalog files, 32-wide float16 embeddings as the demo's model writes) at a few
sizes — many clips in few waves, and many small waves — and times, side by side:

    query        `vidprep query OUT "SELECT count(*) FROM clips"` (in process: open + query)
    duckdb       the same count, DuckDB alone: read_parquet('OUT/catalog/clips/*.parquet')
    noop         the end-of-run pass with nothing new (a rerun)
    first pass   the end-of-run pass over everything (near-duplicates + keep): the band tables joined in
                 DuckDB in the driver, and held by Ray band actors (pipeline/catalog/bandjoin.py; Ray
                 embedded with the machine's CPUs, started before), side by side; each mode's driver
                 peak RSS for that pass in a fresh process
    new wave     the end-of-run pass after one more wave is committed (incremental)
    refilter     `vidprep refilter` with a new keep expression (dry run: every wave again), both modes
    compact      `vidprep compact`, then the query again
    search       `vidprep search`'s ranking (top 10 by cosine to a fixed vector; the text encoder's one
                 forward is left out), against DuckDB alone ranking the same files; its peak memory
                 in a fresh process
    report       `vidprep report` (the HTML page: histograms over every clip, thumbnails from a sample)

A last row extrapolates the 100k and 1M rows' times to 10M clips, one more decade at the slope
measured between them (t(10M) = t(1M)^2 / t(100k)): a trend, not a measurement.

Medians of interleaved rounds for query/duckdb/noop, and of `--pass-rounds` interleaved rounds for the
two band-table modes; single timings for the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from pipeline.bench import kit as benchkit

SIZES = {"clips": [(10, 200, 5), (50, 400, 5), (100, 2000, 5)],  # (waves, videos per wave, clips per video)
         "waves": [(1000, 16, 4), (3000, 16, 4), (10000, 16, 4)]}
QUICK = {"clips": [(4, 100, 5)], "waves": [(50, 8, 4)]}
PASS_ROUNDS = 3


def measure(out: Path, label: str, waves: int, videos: int, clips: int, rounds: int, pass_rounds: int = 1) -> dict:
    from pipeline.catalog.refilter import refilter
    from pipeline.catalog.views import query
    from pipeline.kit.catalog import KEEP, write_output
    from pipeline.report.html import write_report
    from pipeline.store.compact import compact

    started = time.perf_counter()
    write_output(out, "20260101T000000-aaaaaa", waves, videos, clips, duplicates=0.05)
    row = {"output": label, "clips": waves * videos * clips, "waves": waves,
           "generate_s": round(time.perf_counter() - started, 1)}
    glob = str(out / "catalog/clips/*.parquet")
    sql = "SELECT count(*) FROM clips"
    # The first pass, both modes, as dry runs (the same work: decide every wave, build the index), then once
    # for real (untimed) so that the later columns start from its overlay.
    row.update(passes(lambda workers: refilter(out, KEEP, 0.05, 32, made_by="run", dry_run=True,
                                               band_workers=workers), "first_pass", pass_rounds))
    row.update(pass_peaks(out))
    refilter(out, KEEP, 0.05, 32, made_by="run", incremental=True, band_workers=0)
    times = benchkit.time_interleaved({
        "query": lambda: query(out, sql),
        "duckdb": lambda: duckdb.connect().sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall(),
        "noop": lambda: refilter(out, KEEP, 0.05, 32, made_by="run", incremental=True),
    }, rounds)
    row.update({f"{k}_s": v for k, v in benchkit.medians(times).items()})
    write_output(out, "20260102T000000-bbbbbb", 1, videos, clips, seed=1, duplicates=0.05)
    t = time.perf_counter()
    refilter(out, KEEP, 0.05, 32, made_by="run", incremental=True)
    row["new_wave_s"] = time.perf_counter() - t
    row.update(passes(lambda workers: refilter(out, "clip_aesthetic >= 4", dry_run=True, band_workers=workers),
                      "refilter", pass_rounds))
    row.update(measure_search(out, glob, rounds))
    t = time.perf_counter()
    write_report(out, out.parent / "report.html")
    row["report_s"] = time.perf_counter() - t
    t = time.perf_counter()
    compact(out)
    row["compact_s"] = time.perf_counter() - t
    times = benchkit.time_interleaved({"query": lambda: query(out, sql), "duckdb": lambda: duckdb.connect().sql(
        f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()}, rounds)
    after = benchkit.medians(times)
    row["query_compacted_s"] = after["query"]
    row["ratio"] = row["query_s"] / row["duckdb_s"]
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}


def passes(full_pass, name: str, rounds: int) -> dict:
    """A full near-duplicate pass with the band tables joined in DuckDB (0 actors) and in band actors (one per
    CPU), interleaved: medians and their ratio."""
    times = benchkit.medians(benchkit.time_interleaved({
        "join": lambda: full_pass(0), "actors": lambda: full_pass(os.cpu_count())}, rounds))
    return {f"{name}_s": times["join"], f"{name}_actors_s": times["actors"],
            f"{name}_speedup": times["join"] / times["actors"]}


PEAK = """
import os, sys, ray
from pipeline.catalog.refilter import refilter
from pipeline.kit.catalog import KEEP
workers = int(sys.argv[2])
if workers:
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
refilter(sys.argv[1], KEEP, 0.05, 32, made_by="run", dry_run=True, band_workers=workers)
print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])  # KiB
"""


def pass_peaks(out: Path) -> dict:
    """The driver's peak RSS over a first pass in a fresh process, per mode (the actors' own memory is theirs:
    other processes, on other machines of a cluster)."""
    peaks = {}
    for name, workers in (("join", 0), ("actors", os.cpu_count())):
        text = subprocess.run([sys.executable, "-c", PEAK, str(out), str(workers)], check=True, capture_output=True,
                              text=True).stdout
        peaks[f"pass_peak_{name}_mb"] = round(int(text.split()[-1]) / 1024)
    return peaks


SEARCH_DIM = 32  # pipeline/kit/catalog.py's embedding width


def measure_search(out: Path, glob: str, rounds: int) -> dict:
    from pipeline.catalog.search import rank

    vector = [1.0 / SEARCH_DIM ** 0.5] * SEARCH_DIM
    alone = (f"SELECT clip_id, list_cosine_similarity(clip_embedding::FLOAT[], $q::FLOAT[]) AS score "
             f"FROM read_parquet('{glob}') ORDER BY score DESC, clip_id LIMIT 10")
    times = benchkit.medians(benchkit.time_interleaved({
        "search": lambda: rank(out, vector, 10),
        "search_duckdb": lambda: duckdb.connect().sql(alone, params={"q": vector}).fetchall()}, rounds))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report this process's peak
    code = (f"from pipeline.catalog.search import rank; rank({str(out)!r}, {vector!r}, 10); "
            "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])")  # KiB
    peak = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return {"search_s": times["search"], "search_duckdb_s": times["search_duckdb"],
            "search_peak_mb": round(int(peak.split()[-1]) / 1024)}


def table(rows: list[dict]) -> str:
    head = ("| output | clips | waves | `vidprep query` count | DuckDB alone | ratio | no-op rerun pass | "
            "first pass (all): DuckDB join / band actors | driver peak RSS, first pass: join / actors | "
            "pass after +1 wave | refilter (all, dry run): join / actors | compact | query after compact | "
            "search (top 10) | search, DuckDB alone | search peak RSS | report |")
    lines = [head, "|" + "---|" * 17]
    rows = rows + extrapolated(rows)
    for r in rows:
        lines.append(f"| {r['output']} | {r['clips']:,} | {r['waves']:,} | {r['query_s']:.3f} s "
                     f"| {r['duckdb_s']:.3f} s | {r['ratio']:.2f}× | {r['noop_s']:.3f} s "
                     f"| {r['first_pass_s']:.1f} / {r['first_pass_actors_s']:.1f} s ({r['first_pass_speedup']:.2f}×) "
                     f"| {r['pass_peak_join_mb']} / {r['pass_peak_actors_mb']} MB | {r['new_wave_s']:.2f} s "
                     f"| {r['refilter_s']:.1f} / {r['refilter_actors_s']:.1f} s ({r['refilter_speedup']:.2f}×) "
                     f"| {r['compact_s']:.1f} s "
                     f"| {r['query_compacted_s']:.3f} s | {r['search_s']:.2f} s | {r['search_duckdb_s']:.2f} s "
                     f"| {r['search_peak_mb']} MB | {r['report_s']:.1f} s |")
    return "\n".join(lines)


def extrapolated(rows: list[dict]) -> list[dict]:
    """A row for 10M clips from the 100k and 1M rows: each time one more decade at their slope."""
    by_label = {r["output"]: r for r in rows}
    small, large = by_label.get("100k clips"), by_label.get("1000k clips")
    if not small or not large:
        return []
    row = {"output": "10M clips (extrapolated)", "clips": 10 * large["clips"], "waves": 10 * large["waves"]}
    for key, value in large.items():
        if key.endswith(("_s", "_mb")) and small.get(key):
            row[key] = value * value / small[key]
    for name in ("first_pass", "refilter"):
        row[f"{name}_speedup"] = row[f"{name}_s"] / row[f"{name}_actors_s"]
    row["ratio"] = row["query_s"] / row["duckdb_s"]
    row.update({k: round(v) for k, v in row.items() if k.endswith("_mb")})
    return [row]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidprep bench --only scale")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pass-rounds", type=int, default=PASS_ROUNDS, help="interleaved rounds of the full passes")
    parser.add_argument("--kinds", nargs="+", default=["clips", "waves"], choices=["clips", "waves"])
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else SIZES
    rows = []
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")  # for the band actors
    for kind, shapes in sizes.items():
        for waves, videos, clips in shapes if kind in args.kinds else ():
            folder = Path(tempfile.mkdtemp(prefix="vidprep-scale-"))
            try:
                label = f"{waves * videos * clips // 1000}k clips" if kind == "clips" else f"{waves:,} waves"
                rows.append(measure(folder / "out", label, waves, videos, clips, args.rounds, args.pass_rounds))
                print(json.dumps(rows[-1]), flush=True)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    ray.shutdown()
    text = table(rows)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "machine": benchkit.machine_info()}, indent=1) + "\n")
    if args.markdown:
        own = "".join([f" --pass-rounds {args.pass_rounds}" if args.pass_rounds != PASS_ROUNDS else "",
                       f" --rounds {args.rounds}" if args.rounds != 3 else "",
                       "" if len(args.kinds) == 2 else f" --kinds {' '.join(args.kinds)}"])
        # `vidprep bench` passes --quick only: other flags mean this module was run by itself
        command = (f"python -m pipeline.bench.scale{' --quick' if args.quick else ''}{own} --markdown docs/BENCHMARKS.md"
                   if own else f"vidprep bench --only scale{' --quick' if args.quick else ''}")
        body = (f"{text}\n\nCommand: `{command}`. "
                f"{benchkit.machine_line(benchkit.machine_info())}. Medians of {args.rounds} interleaved rounds "
                f"for the query, DuckDB and no-op columns, of {args.pass_rounds} for the two band-table modes; the "
                "others are single timings.\n")
        benchkit.update_section(Path(args.markdown), "scale", "Catalog at scale", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
