"""`vidprep report OUT`: one self-contained HTML page about a dataset (OUT/report.html).

    catalog views ─► data (SQL aggregates) ─► plots (matplotlib → PNG data URIs) ─► HTML

Sections: funnel (videos → clips → accepted, rejections by reason, video errors
by code), durations, every numeric score column, caption lengths, buckets,
a thumbnail grid, rejected examples per reason, and time per run. Images are
inline (PNG plots, the catalog's JPEG thumbnails); there is no external
request. Every count a test or a script may want carries `data-count` next to
a stable `id` / `data-reason` / `data-error` / `data-bucket` attribute.
"""
from __future__ import annotations

import base64
import html
import re
import time
from pathlib import Path

from pipeline.report import data, plots
from pipeline.catalog.views import connect
from pipeline.store.location import Location
from stages import STAGES

SECTIONS = {"funnel": "Funnel", "durations": "Durations", "scores": "Scores", "captions": "Captions",
            "buckets": "Buckets", "thumbnails": "Accepted clips", "rejected": "Rejected clips", "timing": "Time"}
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d232b;background:#f4f5f7}
header{background:#1d2a3a;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#c6d0dc;font-size:13px}nav{padding:8px 28px;background:#fff;border-bottom:1px solid #dde}
nav a{margin-right:14px;color:#2b5dab;text-decoration:none}main{padding:8px 28px 40px}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:14px 18px;margin:16px 0}
h2{margin:0 0 10px;font-size:18px}h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px}td,th{padding:3px 10px;border-bottom:1px solid #eceef1;
text-align:left;font-size:13px}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.sub th{padding-left:26px;
font-weight:normal;color:#555}.plots{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}
figure img{max-width:100%;border:1px solid #eceef1;border-radius:4px}figcaption{font-size:12px;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.card{background:#fafbfc;border:1px solid #e4e7eb;border-radius:6px;overflow:hidden}
.card img{width:100%;display:block;background:#222}.card p{margin:4px 6px 6px;font-size:12px;word-break:break-word}
.card .meta{color:#666;font-size:11px}.note{color:#6b5500;background:#fff7d6;border:1px solid #f0e0a0;
padding:6px 10px;border-radius:4px}.muted{color:#777}.noimg{height:90px;display:flex;align-items:center;
justify-content:center;color:#aaa;background:#eee}code{font-size:12px;background:#f1f3f5;padding:1px 4px}
"""


def write_report(out: str | Path, path: str | Path | None = None, thumbnails: int = 48, examples: int = 6) -> Path:
    """Write the report (default OUT/report.html, atomically); returns its path (a URI for a store's OUT)."""
    loc = Location.of(out)
    page = build_html(out, thumbnails=thumbnails, examples=examples)
    if not path and not loc.local:
        loc.write_bytes("report.html", page.encode("utf-8"))
        return loc.uri("report.html")
    target = Path(path) if path else loc.path / "report.html"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target


def build_html(out: str | Path, con=None, thumbnails: int = 48, examples: int = 6) -> str:
    """The page as a string; `con` defaults to `connect(out)` (any connection with the catalog's views)."""
    loc = Location.of(out)
    out = loc.path if loc.local else loc
    con = con or connect(out)
    cols = data.columns(con)
    runs = data.runs(out)
    sampled, sampled_rows = data.sample(con, out)  # thumbnails and examples: a sample past a size
    hists = data.histograms(con, ["duration_s", *data.score_columns(cols), *_caption_lengths(cols)])
    body = [_funnel(con, out), _durations(con, hists), _scores(con, cols, hists), _captions(cols, hists),
            _buckets(con, cols),
            _thumbnails(con, cols, thumbnails, sampled, sampled_rows), _rejected(con, examples, sampled),
            _timing(con, runs)]
    configured = runs[-1].get("config", {}).get("stages", {}) if runs else {}
    stages = [name for name in STAGES if name in configured]  # plan order (run.json's keys are sorted)
    head = (f"<header><h1>vidprep dataset report</h1><p>{_e(str(out.resolve()) if loc.local else str(loc))}</p>"
            f"<p>generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} · {len(runs)} run(s) · "
            f"stages: {_e(' → '.join(stages) or 'unknown')}</p></header>")
    nav = "<nav>" + "".join(f'<a href="#{k}">{v}</a>' for k, v in SECTIONS.items()) + "</nav>"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>vidprep report: {_e(loc.root.rsplit('/', 1)[-1])}</title><style>{CSS}</style></head><body>"
            f"{head}{nav}<main>{''.join(body)}</main></body></html>\n")


def _funnel(con, out: Path) -> str:
    f = data.funnel(con)
    videos, clips = sum(f.videos.values()), sum(f.clips.values())
    rows = [_row("videos", "n-videos", videos, data.hours(f.video_hours) + " of video"),
            _row("videos readable", "n-videos-ok", f.videos.get("ok", 0)),
            _row("videos with errors", "n-videos-error", f.videos.get("error", 0))]
    rows += [_row(f"error: {code}", None, n, sub=True, attr=("data-error", code)) for code, n in f.video_errors]
    rows += [_row("clips", "n-clips", clips, data.hours(sum(f.clip_hours.values())) + " of clips"),
             _row("clips accepted", "n-accepted", f.clips.get("accepted", 0),
                  data.hours(f.clip_hours.get("accepted", 0.0)) + " accepted")]
    others = sorted(set(f.clips) - {"accepted", "rejected", "error"})  # none in schema v1; shown if they appear
    for status in ("rejected", "error", *others):
        ident = "n-rejected" if status == "rejected" else f"n-clip-{status}"
        attr = "data-reason" if status == "rejected" else f"data-clip-{status}"
        rows.append(_row(f"clips {status}", ident, f.clips.get(status, 0)))
        rows += [_row(f"{status}: {code}", None, n, sub=True, attr=(attr, code))
                 for code, n in f.reasons.get(status, [])]
    if f.in_shards is not None:
        rows.append(_row("clips in shards", "n-in-shards", f.in_shards, "encoded (shard_index)"))
    chart = plots.bars("videos → clips → accepted", ["videos", "videos readable", "clips", "clips accepted"],
                       [videos, f.videos.get("ok", 0), clips, f.clips.get("accepted", 0)],
                       ["#5b7bd5", "#5b7bd5", "#8c6bb1", plots.STATUS_COLOURS["accepted"]])
    images = [_img(chart, "funnel")]
    reasons = [(f"{s}: {c}", n) for s in ("rejected", "error", *others) for c, n in f.reasons.get(s, [])]
    reasons += [(f"video error: {c}", n) for c, n in f.video_errors]
    if reasons:
        images.append(_img(plots.bars("not accepted, by reason code", [r for r, _ in reasons], [n for _, n in reasons],
                                      plots.STATUS_COLOURS["rejected"], "count"), "reasons"))
    decision = data.latest_decision(out)
    note = ""
    if decision:
        dedup = decision.get("near_duplicate_distance")
        made_by = _e(decision.get("made_by", "?"))
        note = (f"<p class=\"muted\">Statuses from decision v{decision['version']} ({made_by}): "
                f"keep <code>{_e(decision.get('keep') or 'everything scored')}</code>, near-duplicates "
                f"{'off' if dedup is None else f'cosine distance ≤ {dedup}'}.</p>")
    return _section("funnel", f"<table>{''.join(rows)}</table>{note}<div class=\"plots\">{''.join(images)}</div>")


def _durations(con, hists: dict[str, data.Histogram | None]) -> str:
    figures = []
    for title, table in (("clip duration", "clips"), ("source video duration", "videos")):
        h = hists["duration_s"] if table == "clips" else data.histogram(con, "duration_s", table)
        if h:
            figures.append(_hist_figure(h, title, "seconds", f"duration-{table}", ylabel=table))
    return _section("durations", _plots(figures) if figures else "<p class=\"muted\">No durations.</p>")


def _scores(con, cols: dict[str, str], hists: dict[str, data.Histogram | None]) -> str:
    figures, constant, empty = [], [], []
    for column in data.score_columns(cols):
        h = hists[column]
        if h is None:
            empty.append(column)
        elif h.constant:
            constant.append(f"<code data-constant=\"{_e(column)}\">{_e(column)} = {h.lo:g}</code>")
        else:
            figures.append(_hist_figure(h, column, column, column))
    if not figures and not constant and not empty:
        return _section("scores", "<p class=\"muted\">No score columns in this catalog: stage clip_score (and "
                                  "others that add numeric columns) did not run.</p>")
    extra = ""
    if constant:
        extra += f"<p>Constant over every clip (not plotted): {', '.join(constant)}.</p>"
    if empty:
        extra += "<p class=\"muted\">No values: " + ", ".join(f"<code data-empty=\"{_e(c)}\">{_e(c)}</code>"
                                                                for c in empty) + ".</p>"
    return _section("scores", f"<p class=\"muted\">Every numeric column a stage added to <code>clips</code>, "
                              f"stacked by status. clip_* come from CLIP (prompt scores are proxies); the "
                              f"others from stage signals and nsfw are measured from the pixels.</p>"
                              f"{_plots(figures)}{extra}{_camera(con, cols)}")


def _camera(con, cols: dict[str, str]) -> str:
    """Stage signals' camera_motion classes (a text column: no histogram) with frozen/slideshow counts."""
    if "camera_motion" not in cols:
        return ""
    rows = "".join(f"<tr><th>{_e(name)}</th><td class=\"n\" data-camera=\"{_e(name)}\" data-count=\"{a}\">{a}</td>"
                   f"<td class=\"n\">{r}</td><td class=\"n\">{f}</td></tr>"
                   for name, a, r, f in data.camera_motion(con))
    return ("<h3>Camera motion (optical flow)</h3><table><tr><th>camera_motion</th><th>accepted</th>"
            f"<th>rejected</th><th>frozen or slideshow</th></tr>{rows}</table>")


def _caption_lengths(cols: dict[str, str]) -> list[str]:
    """The expressions _captions plots: words of each caption column, and its token count where stored."""
    return [e for c in data.caption_columns(cols)
            for e in (data.words(c), f"{c}_tokens" if cols.get(f"{c}_tokens") else None) if e]


def _captions(cols: dict[str, str], hists: dict[str, data.Histogram | None]) -> str:
    figures = []
    for column in data.caption_columns(cols):
        if h := hists[data.words(column)]:
            figures.append(_hist_figure(h, f"{column}: words", "words", f"words-{column}"))
        if cols.get(f"{column}_tokens") and (t := hists[f"{column}_tokens"]):
            figures.append(_hist_figure(t, f"{column}: tokens", "tokens", f"tokens-{column}"))
    if not figures:
        return _section("captions", "<p class=\"muted\">No captions in this catalog: stages caption/expand did not "
                                    "run (or wrote no text).</p>")
    return _section("captions", _plots(figures))


def _buckets(con, cols: dict[str, str]) -> str:
    if "bucket" not in cols:
        return _section("buckets", "<p class=\"muted\">No buckets in this catalog: stage encode did not run.</p>")
    rows = data.buckets(con)
    if not rows:
        return _section("buckets", "<p class=\"muted\">No accepted clip has a bucket.</p>")
    table = "".join(f"<tr><th>{_e(b)}</th><td class=\"n\" data-bucket=\"{_e(b)}\" data-count=\"{n}\">{n}</td>"
                    f"<td class=\"n\">{s}</td></tr>" for b, n, s in rows)
    chart = plots.bars("accepted clips per bucket (frames × height × width)", [b for b, _, _ in rows],
                       [n for _, n, _ in rows], plots.STATUS_COLOURS["accepted"], "clips")
    return _section("buckets", f"<table><tr><th>bucket</th><th>accepted</th><th>in shards</th></tr>{table}</table>"
                               f"<div class=\"plots\">{_img(chart, 'buckets')}</div>")


def _thumbnails(con, cols: dict[str, str], limit: int, table: str = "clips", sampled: int | None = None) -> str:
    rows = data.thumbnails(con, cols, limit, table)
    if not rows:
        return _section("thumbnails", "<p class=\"muted\">No accepted clip with a thumbnail.</p>")
    cards = "".join(_card(r, r["caption"] or f"{r['clip_id'][:8]} · {r['duration_s']:.1f} s") for r in rows)
    where = f" of a sample of {sampled:,} clips (every k-th catalog file)" if sampled is not None else ""
    return _section("thumbnails", f"<p class=\"muted\">{len(rows)} accepted clips{where} (ordered by clip id: a "
                                  f"spread across sources); caption_short where present.</p>"
                                  f"<div class=\"grid\">{cards}</div>")


def _rejected(con, per_reason: int, table: str = "clips") -> str:
    rows = data.examples(con, per_reason, table)
    if not rows:
        return _section("rejected", "<p class=\"muted\">No clip was rejected.</p>")
    groups: dict[tuple[str, str], list] = {}
    for r in rows:
        groups.setdefault((r["status"], r["code"]), []).append(r)
    parts = [f"<h3 data-examples=\"{_e(code)}\">{_e(status)}: {_e(code)}</h3><div class=\"grid\">"
             + "".join(_card(r, r["reason"] or "(no reason)") for r in group) + "</div>"
             for (status, code), group in groups.items()]
    return _section("rejected", f"<p class=\"muted\">Up to {per_reason} examples per reason code.</p>{''.join(parts)}")


def _timing(con, runs: list[dict]) -> str:
    if not runs:
        return _section("timing", "<p class=\"note\">No run record (run.json) in this output.</p>")
    rows = []
    for r in runs:
        counts, wall = r.get("counts", {}), r.get("wall_s") or 0.0
        clips = counts.get("clips_committed", 0)
        rate = f"{clips / wall:.2f}" if wall else "-"
        runner = r.get("config", {}).get("run", {}).get("runner", "?")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.get("started_at", 0)))
        rows.append(f"<tr data-run=\"{_e(r.get('run_id', '?'))}\"><th>{_e(r.get('run_id', '?'))}</th><td>{started}</td>"
                    f"<td>{_e(runner)}</td><td class=\"n\" data-wall-s=\"{wall}\">{wall:.1f}</td>"
                    f"<td class=\"n\">{counts.get('processed', 0)}</td><td class=\"n\">{clips}</td>"
                    f"<td class=\"n\">{rate}</td></tr>")
    table = ("<table><tr><th>run</th><th>started (UTC)</th><th>runner</th><th>wall s</th><th>videos</th>"
             f"<th>clips</th><th>clips/s</th></tr>{''.join(rows)}</table>")
    timeline = data.commit_times(con, runs)
    chart = _img(plots.timeline("waves committed over each run", timeline), "commits") if timeline else ""
    note = ("<p class=\"note\" id=\"no-stage-times\">Per-stage times are not recorded: run.json holds each run's "
            "wall time and counts only, so this section shows time per run and when each wave was committed.</p>")
    return _section("timing", f"{note}{table}<div class=\"plots\">{chart}</div>")


def _card(row: dict, text: str) -> str:
    name = row["source_uri"].rsplit("/", 1)[-1]
    image = (f"<img alt=\"{_e(row['clip_id'])}\" src=\"data:image/jpeg;base64,"
             f"{base64.b64encode(row['thumbnail']).decode('ascii')}\">" if row["thumbnail"]
             else "<div class=\"noimg\">no thumbnail</div>")
    return (f"<div class=\"card\" data-clip=\"{_e(row['clip_id'])}\">{image}<p>{_e(_cut(text, 160))}</p>"
            f"<p class=\"meta\">{_e(name)} #{row['clip_index']} · {row['start_s']:.1f} s "
            f"+{row['duration_s']:.1f} s</p></div>")


def _hist_figure(h: data.Histogram, title: str, xlabel: str, key: str, ylabel: str = "clips") -> str:
    uri = plots.histogram(title, xlabel, h.edges, h.counts, ylabel)
    caption = f"n = {h.n:,}, median {h.median:.4g}, range {h.lo:.4g} … {h.hi:.4g}"
    caption += f", {h.nulls:,} null" if h.nulls else ""
    return (f"<figure data-hist=\"{_e(key)}\" data-n=\"{h.n}\">{_img(uri, key)}"
            f"<figcaption>{caption}</figcaption></figure>")


def _row(label: str, ident: str | None, n: int, extra: str = "", sub: bool = False, attr=None) -> str:
    attrs = f" id=\"{ident}\"" if ident else ""
    attrs += f" {attr[0]}=\"{_e(attr[1])}\"" if attr else ""
    row_class = ' class="sub"' if sub else ""
    return (f"<tr{row_class}><th>{_e(label)}</th>"
            f"<td class=\"n\"{attrs} data-count=\"{n}\">{n:,}</td><td class=\"muted\">{_e(extra)}</td></tr>")


def _section(key: str, content: str) -> str:
    return f"<section id=\"{key}\"><h2>{SECTIONS[key]}</h2>{content}</section>"


def _plots(figures: list[str]) -> str:
    return f"<div class=\"plots\">{''.join(figures)}</div>"


def _img(uri: str, alt: str) -> str:
    return f"<img alt=\"{_e(alt)}\" src=\"{uri}\">"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _e(text: str) -> str:
    """Escaped for HTML, without control characters (tiny models write some)."""
    return html.escape(CONTROL.sub("", str(text)))
