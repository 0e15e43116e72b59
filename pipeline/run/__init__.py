"""One `vidprep run`: list sources, execute the stages (Ray Data or sequentially), commit waves.

    runner.py     lock, recover, list, execute, commit waves as they complete, run.json
    executors.py  the Ray Data plan (task or actor pool per stage) and the sequential loop
    listing.py    streaming listing of folders, `.txt` URI lists and pyarrow.fs URIs
    waves.py      driver bookkeeping: rows per video, videos per wave, which waves are complete
    registry.py   one owner per video_id: later copies of the same bytes become `duplicate_of` rows
"""
