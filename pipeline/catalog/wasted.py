"""Model-stage work spent on clips that end rejected: the rows caption, expand and encode processed.

A model stage leaves its mark on every row it processed (caption: `caption_model`, expand:
`expand_status`, encode: `latent_shape`); the `clips` view has the final statuses (the end-of-run pass
included). A processed row whose clip ends rejected — a near-duplicate found after the run, or a refilter
— was work for nothing. Stages not in the output's plan are left out.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.catalog.views import connect

MARKS = {"caption": "caption_model", "expand": "expand_status", "encode": "latent_shape"}


def model_work(out: str | Path) -> dict[str, dict[str, int]]:
    """{stage: {"rows": rows it processed, "wasted": of those, rows whose clip ends rejected}}."""
    con = connect(out)
    try:
        columns = {row[0] for row in con.execute("SELECT column_name FROM (DESCRIBE clips)").fetchall()}
        found = {}
        for stage, mark in MARKS.items():
            if mark in columns:
                rows, wasted = con.execute(f"""SELECT count(*), count(*) FILTER (WHERE status = 'rejected')
                                               FROM clips WHERE {mark} IS NOT NULL""").fetchall()[0]
                found[stage] = {"rows": rows, "wasted": wasted}
        return found
    finally:
        con.close()


def wasted_fraction(work: dict[str, dict[str, int]]) -> float:
    """Rows on clips ending rejected over all rows the model stages processed (0 when none ran)."""
    rows = sum(w["rows"] for w in work.values())
    return sum(w["wasted"] for w in work.values()) / rows if rows else 0.0
