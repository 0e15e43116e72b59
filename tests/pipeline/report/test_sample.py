"""Past a size, the report's thumbnails and examples come from a sample of the catalog's files."""
from pipeline.catalog.refilter import refilter
from pipeline.catalog.views import connect
from pipeline.kit.catalog import KEEP, write_output
from pipeline.report import data
from pipeline.report.html import build_html


def test_past_a_size_examples_come_from_every_kth_file_with_the_current_statuses(tmp_path, monkeypatch):
    write_output(tmp_path, "20260101T000000-abcdef", waves=6, videos_per_wave=5, clips_per_video=3, duplicates=0.3)
    refilter(tmp_path, KEEP, 0.05, 8, made_by="run", incremental=True)  # statuses differ from clips_written
    con = connect(tmp_path)
    assert data.sample(con, tmp_path, past=100, rows=30) == ("clips", None)  # 90 clips: everything
    table, rows = data.sample(con, tmp_path, past=50, rows=30)
    assert (table, rows) == ("clips_sample", 30)  # files 0 and 3 of 6 (15 clips each)
    waves = sorted({w for (w,) in con.sql("SELECT DISTINCT wave_id FROM clips").fetchall()})
    sampled = con.sql("SELECT clip_id, status, reason FROM clips_sample ORDER BY 1").fetchall()
    expected = con.execute("SELECT clip_id, status, reason FROM clips WHERE wave_id IN (?, ?) ORDER BY 1",
                           [waves[0], waves[3]]).fetchall()
    assert sampled == expected and any(r[2] and r[2].startswith("near_duplicate_of:") for r in sampled)
    shown = data.examples(con, 50, table)
    assert shown and {r["clip_id"] for r in shown} <= {r[0] for r in sampled}
    monkeypatch.setattr(data, "SAMPLE_PAST", 50)
    monkeypatch.setattr(data, "SAMPLE_ROWS", 30)
    page = build_html(tmp_path)
    assert page.count('data-examples="near_duplicate_of"') == 1
