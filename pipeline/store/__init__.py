"""The output folder's on-disk protocol (lowest layer: imports no other vidprep subpackage but schemas).

    commit.py   WaveWriter (staged, content-named Parquet), CommitLog (publish, records, recovery)
    status.py   status overlays (`status/` files + `_status/` records) over committed clips
    shards.py   shard tables per bucket, their index and latent statistics, built from a wave's rows
    faults.py   `VIDPREP_CRASH_AT` crash points for the kill-and-resume tests
    location.py where OUT lives: a local folder or an object-store prefix, over pyarrow.fs
    lease.py    one run per output: OutputLock (flock locally; on a store a lease by conditional create)
"""
