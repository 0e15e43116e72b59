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


def test_histograms_of_several_columns_in_one_pass_bin_each_column_by_status(tmp_path):
    import numpy as np

    write_output(tmp_path, "20260101T000000-aaaaaa", waves=2, videos_per_wave=20, clips_per_video=5, seed=4)
    refilter(tmp_path, "clip_aesthetic >= 5", near_duplicate_distance=None)  # statuses from the overlay
    con = connect(tmp_path)
    exprs = ["clip_aesthetic", "clip_frame_consistency", "floor(clip_aesthetic)", "NULL::DOUBLE", "1.5"]
    found = data.histograms(con, exprs)
    assert found["NULL::DOUBLE"] is None and found["1.5"].constant and found["1.5"].n == 200
    assert len(found["floor(clip_aesthetic)"].edges) - 1 == 4  # integers 3..6: a bin each
    for expr in exprs[:3]:
        h = found[expr]
        rows = con.execute(f"SELECT ({expr})::DOUBLE, status FROM clips").fetchall()
        values = np.array([v for v, _ in rows])
        start, width, count = h.edges[0], h.edges[1] - h.edges[0], len(h.edges) - 1
        bins = np.minimum(np.floor((values - start) / width), count - 1).astype(int)
        for status in {s for _, s in rows}:
            mine = bins[[s == status for _, s in rows]]
            assert h.counts[status] == np.bincount(mine, minlength=count).tolist(), (expr, status)
        assert h.median == float(np.median(values)) and (h.lo, h.hi) == (values.min(), values.max())
