"""The catalog: DuckDB views over committed files, and what is decided from stored scores.

    views.py     `connect(OUT)` → a DuckDB connection with the views; read-only `query`
    refilter.py  `vidprep refilter` and the end-of-run status pass
    dedup.py     near-duplicates over CLIP embeddings (exact, or LSH candidates verified exactly)
    nearindex.py the near-duplicate index that lives with the output (band tables, kept embeddings)
    bandjoin.py  its band tables held by Ray actors for a pass of many batches
    snapshot.py  the index's read-only snapshot the stream's filter rejects against
    search.py    `vidprep search`: text → CLIP → cosine ranking in DuckDB

    from pipeline.catalog import connect
    connect("out").sql("SELECT status, count(*) FROM clips GROUP BY ALL").show()
"""
from pipeline.catalog.views import arrow, connect, query

__all__ = ["arrow", "connect", "query"]
