"""What a person reads after a run.

    summary.py  the end-of-run summary and text tables (`vidprep run`, `vidprep query`)
    html.py     `vidprep report`: OUT/report.html, one self-contained page
    data.py     the page's SQL: funnel counts, histogram bins computed in DuckDB
    plots.py    the page's matplotlib figures as inline PNG data URIs
"""
