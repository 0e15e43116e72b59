"""vidprep orchestration, one subpackage per concern (docs/ARCHITECTURE.md has the module table).

    cli.py, config.py, typed.py   the `vidprep` command and the run config (typed, field-named errors)
    store/     the output folder's protocol: staged waves, commit records, status overlays, shard tables
    run/       one run: listing, the Ray Data plan or the sequential loop, waves, registry, console
    catalog/   DuckDB views over committed files; refilter, near-duplicates, search
    report/    the end-of-run summary and `vidprep report`'s HTML page
    bench/     `vidprep bench`: one module per benchmark plus their shared kit
    kit/       synthetic videos, the bad-input corpus and tiny models (demo and tests)
    trainer/   the bundled DiT trainer and sampler

Layering, lowest first: store → catalog → run → report/bench/trainer → cli. A
package imports only from the ones before it (kit is used by bench and the cli).
"""
__version__ = "0.1.0"
