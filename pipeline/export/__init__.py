"""`vidprep export`: accepted clips out as MP4 files with their captions, for people and other trainers.

    select.py   which clips (accepted under the current status overlay, or any --where) with their captions
    clips.py    one source decoded once, in FFmpeg's presentation order; each clip re-encoded frame-exact
    formats.py  folder (mp4 + txt + metadata.jsonl/csv) and WebDataset (tar shards of mp4 + txt + json)
    runner.py   sources as Ray tasks (or in this process), resumable, with a summary
"""
