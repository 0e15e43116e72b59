"""What a person reads at the end of a run: the summary table, and tables printed by `vidprep query`."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.catalog.views import connect
from pipeline.run.devices import summary_lines


def format_table(table: pa.Table, max_width: int = 48, max_rows: int = 200) -> str:
    """A plain text table; binary cells show their size, long cells are cut."""
    def cell(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        if isinstance(value, float):
            return f"{value:.6g}"
        text = str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    names = table.column_names
    rows = [[cell(v) for v in row.values()] for row in table.slice(0, max_rows).to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(n.ljust(w) for n, w in zip(names, widths)), line]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    if table.num_rows > max_rows:
        out.append(f"… {table.num_rows - max_rows} more rows")
    out.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(out)


def run_summary(result) -> str:
    """Videos, clips, accepted, rejected by reason, errors, wall time, clips/s for one run."""
    con = connect(result.out)
    this_run = f"wave_id LIKE '{result.run_id}-%'"
    videos = dict(con.execute(f"SELECT status, count(*) FROM videos WHERE {this_run} GROUP BY 1").fetchall())
    clips = dict(con.execute(f"SELECT status, count(*) FROM clips WHERE {this_run} GROUP BY 1").fetchall())
    reasons = con.execute(f"""SELECT split_part(reason, ':', 1) AS r, count(*) FROM clips
                              WHERE {this_run} AND status = 'rejected' GROUP BY 1 ORDER BY 2 DESC, 1""").fetchall()
    errors = con.execute(f"""SELECT split_part(error, ':', 1) AS e, count(*) FROM videos
                             WHERE {this_run} AND status = 'error' GROUP BY 1 ORDER BY 2 DESC, 1""").fetchall()
    clip_errors = con.execute(f"""SELECT split_part(reason, ':', 1) AS r, count(*) FROM clips
                                  WHERE {this_run} AND status = 'error' GROUP BY 1 ORDER BY 2 DESC, 1""").fetchall()
    total_clips = sum(clips.values())
    rows = [
        ("videos listed", result.listed),
        ("videos skipped (already committed)", result.skipped),
        ("videos processed", sum(videos.values())),
        ("videos ok", videos.get("ok", 0)),
        ("videos with errors", videos.get("error", 0)),
        *((f"  error: {e}", n) for e, n in errors),
        ("clips", total_clips),
        ("clips accepted", clips.get("accepted", 0)),
        ("clips rejected", clips.get("rejected", 0)),
        *((f"  rejected: {r}", n) for r, n in reasons),
        *([("clips with errors (a model failed on them)", clips["error"])] if clips.get("error") else []),
        *((f"  error: {r}", n) for r, n in clip_errors),
        *summary_lines(getattr(result, "devices", None) or []),
        ("waves committed", result.waves),
        *([("catalog files compacted", "{} → {}".format(sum(result.compaction.replaced.values()),
                                                         sum(result.compaction.written.values())))]
          if getattr(result, "compaction", None) else []),
        ("wall time (s)", f"{result.wall_s:.1f}"),
        ("clips/s", f"{total_clips / result.wall_s:.2f}" if result.wall_s else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"vidprep run {result.run_id} → {result.out}"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    if getattr(result, "no_clip_produced", False):
        failed = ", ".join(f"{e} {n}" for e, n in errors) or "none"
        lines.append(f"no clip was produced: all {sum(videos.values())} videos processed had errors "
                     f"({failed}); the error rows are committed: "
                     f"vidprep query {result.out} \"SELECT source_uri, error FROM videos\"")
    return "\n".join(lines)


def nothing_listed_line(result) -> str:
    """The one line `vidprep run` prints when the input held nothing to process."""
    where = f"{result.source} or its subfolders" if result.recursive else result.source
    return (f"vidprep run: no source found in {where}: no file named *{', *'.join(result.extensions)} "
            "(input.extensions); nothing to do")


def csv_text(table: pa.Table) -> str:
    """CSV of a query result; list, struct and map columns as JSON text (CSV has no nested types),
    binary cells as base64 (like `--format json`)."""
    import base64
    import io
    import json

    import pyarrow.csv as pcsv

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return base64.b64encode(value).decode()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)

    nested = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list, pa.types.is_struct,
              pa.types.is_map, pa.types.is_binary, pa.types.is_large_binary)
    columns = []
    for column in table.columns:
        if any(test(column.type) for test in nested):
            texts = [None if v is None else (plain(v) if isinstance(v, bytes) else json.dumps(plain(v)))
                     for v in column.to_pylist()]
            column = pa.array(texts, pa.string())
        columns.append(column)
    buffer = io.BytesIO()
    pcsv.write_csv(pa.table(columns, names=table.column_names), buffer)
    return buffer.getvalue().decode()
