"""`vidprep report`: OUT/report.html checked against SQL over the catalog, then rendered in headless Chromium."""
import base64
import contextlib
import io
import json
import os
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from pipeline import cli
from pipeline.catalog.views import connect
from pipeline.report.html import SECTIONS, build_html
from pipeline.report.data import score_columns
from pipeline.kit.synth import write_video

STAGES = ("probe", "split", "signals", "clip_score", "filter")
CHROMIUM = os.environ.get("VIDPREP_CHROMIUM", "/usr/bin/chromium")
THUMBNAILS, EXAMPLES = 3, 6


def vidprep(*args) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main([str(a) for a in args])
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def out(demo_yaml, tmp_path_factory):
    """A real run: a too_short scene, a black scene the keep expression rejects, an unreadable file."""
    from pipeline.kit.tiny.clip import build

    models = build(tmp_path_factory.mktemp("models") / "clip")
    videos = tmp_path_factory.mktemp("report-videos")
    write_video(videos / "a.mp4", [60, 20, 72], width=160, height=96, seed=1)  # 20 frames: too_short
    write_video(videos / "b.mp4", [72, 60, 60], width=160, height=96, seed=2, black_scenes=(1,))
    write_video(videos / "c.mp4", [96], width=128, height=96, seed=3)
    (videos / "broken.mp4").write_bytes(b"not a video" * 20)  # invalid_container
    folder = tmp_path_factory.mktemp("out")
    code, _, err = vidprep("run", "-c", demo_yaml(STAGES), "-i", videos, "-o", folder, "--runner", "sequential",
                           "--no-progress", "--set", "stages.filter.keep=clip_motion > 0.00001",  # black: motion 0
                           "--set", "stages.signals.text=false",  # every text_area 0: one constant fewer
                           "--set", f"stages.clip_score.model_config={models['clip_config']}",
                           "--set", f"stages.clip_score.pretrained={models['clip']}",
                           "--set", f"stages.clip_score.aesthetic={models['clip_aesthetic']}")
    assert code == 0, err
    code, printed, err = vidprep("report", folder, "--thumbnails", THUMBNAILS, "--examples", EXAMPLES)
    assert code == 0 and f"wrote {folder / 'report.html'}" in printed, err
    return folder


class Page(HTMLParser):
    """Every start tag with its attributes, the section it is in and the rejected-examples group it follows."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict, str | None, str | None]] = []
        self.section = self.group = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section, self.group = attrs.get("id"), None
        if tag == "h3" and "data-examples" in attrs:
            self.group = attrs["data-examples"]
        self.tags.append((tag, attrs, self.section, self.group))

    def attrs(self, name: str, section: str | None = None) -> list[dict]:
        return [a for _, a, s, _ in self.tags if name in a and section in (None, s)]

    def counts(self, key: str) -> dict[str, int]:
        return {a[key]: int(a["data-count"]) for a in self.attrs("data-count") if key in a}


@pytest.fixture(scope="module")
def page(out) -> Page:
    return Page((out / "report.html").read_text(encoding="utf-8"))


def test_every_section_is_present_in_order(page):
    assert [a["id"] for t, a, _, _ in page.tags if t == "section"] == list(SECTIONS)
    assert "no-stage-times" in {a["id"] for a in page.attrs("id", "timing")}  # said plainly, not hidden


def test_images_are_inline_and_decode(page):
    sources = [a["src"] for t, a, _, _ in page.tags if t == "img"]
    pngs = [s for s in sources if s.startswith("data:image/png;base64,")]
    jpegs = [s for s in sources if s.startswith("data:image/jpeg;base64,")]
    assert len(pngs) + len(jpegs) == len(sources)
    # One PNG per histogram, plus the funnel, the reasons and the commit timeline.
    assert len(pngs) == len(page.attrs("data-hist")) + 3
    cards = page.attrs("data-clip")
    assert len(jpegs) == len(cards) > THUMBNAILS  # accepted grid and rejected examples
    for uri, kind in [(u, "PNG") for u in pngs] + [(u, "JPEG") for u in jpegs]:
        image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1], validate=True)))
        assert image.format == kind and min(image.size) >= 16
        image.verify()


def test_no_external_requests(out, page):
    text = (out / "report.html").read_text(encoding="utf-8")
    for tag, attrs, _, _ in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed")
        for name in ("src", "href", "srcset", "action", "poster"):
            if name in attrs:
                assert attrs[name].startswith(("data:", "#")), (tag, name, attrs[name][:80])
    assert "url(" not in text and "@import" not in text  # no stylesheet fetches either
    assert not any(f'{name}="{scheme}' in text for name in ("src", "href") for scheme in ("http:", "https:", "//"))


def test_funnel_numbers_equal_sql_over_the_catalog(out, page):
    con = connect(out)
    one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    ids = page.counts("id")
    assert ids["n-videos"] == one("SELECT count(*) FROM videos") == 4
    assert ids["n-videos-ok"] == one("SELECT count(*) FROM videos WHERE status = 'ok'") == 3
    assert ids["n-videos-error"] == one("SELECT count(*) FROM videos WHERE status = 'error'") == 1
    assert page.counts("data-error") == dict(con.execute(
        "SELECT split_part(error, ':', 1), count(*) FROM videos WHERE status = 'error' GROUP BY 1").fetchall()) == {
        "invalid_container": 1}
    assert ids["n-clips"] == one("SELECT count(*) FROM clips") > 0
    assert ids["n-accepted"] == one("SELECT count(*) FROM clips WHERE status = 'accepted'") > 0
    assert ids["n-rejected"] == one("SELECT count(*) FROM clips WHERE status = 'rejected'")
    assert ids["n-clip-error"] == one("SELECT count(*) FROM clips WHERE status = 'error'") == 0
    reasons = dict(con.execute("""SELECT split_part(reason, ':', 1), count(*) FROM clips
                                  WHERE status = 'rejected' GROUP BY 1""").fetchall())
    assert page.counts("data-reason") == reasons
    assert {"too_short", "filter"} <= set(reasons) and sum(reasons.values()) == ids["n-rejected"]
    assert "n-in-shards" not in ids  # no encode stage: no shard row


def test_every_score_column_has_a_histogram_of_its_values(out, page):
    con = connect(out)
    columns = {name: kind for name, kind, *_ in con.execute("DESCRIBE clips").fetchall()}
    scores = score_columns(columns)
    assert {"clip_aesthetic", "clip_motion", "clip_frame_consistency", "clip_black"} <= set(scores)
    plotted = {a["data-hist"]: int(a["data-n"]) for a in page.attrs("data-hist", "scores")}
    empty = {a["data-empty"] for a in page.attrs("data-empty", "scores")}
    constant = {a["data-constant"] for a in page.attrs("data-constant", "scores")}
    assert set(plotted) | empty | constant == set(scores)
    assert constant == {"motion_jump_fraction"}  # no clip here has a jump between sampled frames: all 0
    assert empty == {"clip_text_similarity"}  # no sidecar text: every value null
    for column, n in plotted.items():
        assert n == con.execute(f"SELECT count({column}) FROM clips WHERE isfinite({column})").fetchone()[0] > 0
    durations = {a["data-hist"]: int(a["data-n"]) for a in page.attrs("data-hist", "durations")}
    assert durations == {"duration-clips": con.execute("SELECT count(*) FROM clips").fetchone()[0],
                         "duration-videos": con.execute("SELECT count(duration_s) FROM videos").fetchone()[0]}
    assert not page.attrs("data-hist", "captions") and not page.attrs("data-bucket")  # no caption/encode stage


def test_camera_motion_classes_are_counted_as_sql_counts_them(out, page):
    con = connect(out)
    expected = dict(con.execute("""SELECT camera_motion, count(*) FILTER (status = 'accepted') FROM clips
                                   WHERE camera_motion IS NOT NULL GROUP BY 1""").fetchall())
    assert page.counts("data-camera") == expected
    assert "static" in expected  # b.mp4's black scene: no motion at all (and flagged frozen)


def test_thumbnails_and_rejected_examples_come_from_the_catalog(out, page):
    con = connect(out)
    accepted = [r[0] for r in con.execute("""SELECT clip_id FROM clips WHERE status = 'accepted'
                                             AND thumbnail IS NOT NULL ORDER BY clip_id""").fetchall()]
    grid = [a["data-clip"] for a in page.attrs("data-clip", "thumbnails")]
    assert grid == accepted[:THUMBNAILS] and len(accepted) > THUMBNAILS
    shown: dict[str, list[str]] = {}
    for _, attrs, section, group in page.tags:
        if section == "rejected" and "data-clip" in attrs:
            shown.setdefault(group, []).append(attrs["data-clip"])
    rejected: dict[str, list[str]] = {}
    for code, clip_id in con.execute("""SELECT split_part(reason, ':', 1), clip_id FROM clips
                                        WHERE status = 'rejected' ORDER BY clip_id""").fetchall():
        rejected.setdefault(code, []).append(clip_id)
    assert shown == {code: ids[:EXAMPLES] for code, ids in rejected.items()}


def test_time_section_shows_each_runs_wall_time(out, page):
    record = json.loads((out / "run.json").read_text())
    runs = page.attrs("data-run", "timing")
    assert [r["data-run"] for r in runs] == [record["run_id"]]
    assert [float(a["data-wall-s"]) for a in page.attrs("data-wall-s", "timing")] == [record["wall_s"]]


def test_caption_and_bucket_columns_are_picked_up_when_present(out):
    """The page follows the columns the `clips` view has: add caption and bucket columns, get their sections."""
    con = connect(out)
    con.execute("ALTER VIEW clips RENAME TO clips_scored")
    con.execute("""CREATE VIEW clips AS SELECT *,
                       CASE WHEN status = 'accepted' THEN 'a disc ' || repeat('bouncing ', clip_index) END
                           AS caption_short,
                       CASE WHEN status = 'accepted' THEN 'a bright disc moves over stripes' END AS caption_long,
                       CASE WHEN status = 'accepted' THEN 3 + clip_index END AS caption_short_tokens,
                       CASE WHEN status = 'accepted' THEN (CASE WHEN clip_index = 0 THEN '17x48x80' ELSE '17x64x64' END)
                       END AS bucket
                   FROM clips_scored""")
    text = build_html(out, con=con, thumbnails=THUMBNAILS)
    page = Page(text)
    accepted = con.execute("SELECT count(*) FROM clips WHERE status = 'accepted'").fetchone()[0]
    captions = {a["data-hist"]: int(a["data-n"]) for a in page.attrs("data-hist", "captions")}
    assert captions == {"words-caption_short": accepted, "words-caption_long": accepted,
                        "tokens-caption_short": accepted}
    assert "caption_short_tokens" not in {a["data-hist"] for a in page.attrs("data-hist", "scores")}
    assert page.counts("data-bucket") == dict(con.execute(
        "SELECT bucket, count(*) FROM clips WHERE status = 'accepted' GROUP BY 1").fetchall())
    assert len(page.counts("data-bucket")) == 2
    first = con.execute("SELECT caption_short FROM clips WHERE status = 'accepted' ORDER BY clip_id").fetchone()[0]
    assert f"<p>{first}</p>" in text  # the grid's captions are caption_short


def test_cli_errors_are_clear(tmp_path, out):
    code, _, err = vidprep("report", tmp_path)
    assert code == 2 and "is not a vidprep output" in err
    code, _, err = vidprep("report", out, "--thumbnails", "-1")
    assert code == 2 and "--thumbnails and --examples must be >= 0" in err


def test_report_renders_in_headless_chromium(out, tmp_path):
    """The page as a browser draws it: a full-size screenshot with the header and the plots' colours in it."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: this test renders the report in headless Chromium. Install Debian's "
                    "package (`apt-get install chromium`; .ci/run does it before `make test`).")
    shot = tmp_path / "report.png"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                           "--window-size=1280,2000", (out / "report.html").resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # text, plots and thumbnails, not a blank page
    assert max(colours)[0] < 0.8 * 1280 * 2000  # no single colour covers the page
    pixels = image.load()

    def near(rgb, box, tolerance=8):
        x0, y0, x1, y1 = box
        return sum(all(abs(a - b) <= tolerance for a, b in zip(pixels[x, y], rgb))
                   for x in range(x0, x1, 2) for y in range(y0, y1, 2))

    assert near((0x1d, 0x2a, 0x3a), (0, 0, 1280, 60)) > 5000  # the header's CSS background
    assert near((0x2e, 0x8b, 0x57), (0, 60, 1280, 2000)) > 500  # accepted bars: PNGs decoded and drawn
    assert near((0xd9, 0x53, 0x4f), (0, 60, 1280, 2000)) > 200  # rejected bars
