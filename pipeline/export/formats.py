"""What other trainers read: a folder of `<clip_id>.mp4` + `<clip_id>.txt` with a manifest, or WebDataset tars.

The folder layout is the one musubi-tuner, diffusion-pipe, ai-toolkit and finetrainers take (a video
file with a same-named caption file); `metadata.jsonl` / `metadata.csv` carry the rest per clip.
WebDataset shards pack `<key>.mp4`, `<key>.txt` and `<key>.json` per sample, up to `shard_bytes`.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from pathlib import Path

MANIFEST_FIELDS = ["clip_id", "file", "caption", "source_uri", "start_frame", "end_frame", "start_s", "end_s",
                   "fps", "width", "height", "bucket", "frames", "out_fps", "out_width", "out_height"]


def manifest_row(clip: dict, record: dict) -> dict:
    row = {k: clip.get(k) for k in MANIFEST_FIELDS if k in clip}
    row.update({k: record.get(k) for k in ("file", "frames", "out_fps", "out_width", "out_height")})
    row.update({k: v for k, v in clip.items() if k.startswith("clip_") and k != "clip_id"})
    return row


def write_captions(folder: Path, rows: list[dict]) -> None:
    for row in rows:
        if row.get("file"):
            _atomic_write(folder / f"{row['clip_id']}.txt", (row.get("caption") or "").strip() + "\n")


def write_manifest(folder: Path, rows: list[dict]) -> None:
    """metadata.jsonl (every column) and metadata.csv (same columns, scores included)."""
    done = [r for r in rows if r.get("file")]
    _atomic_write(folder / "metadata.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in done))
    columns = list(dict.fromkeys(k for r in done for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(done)
    _atomic_write(folder / "metadata.csv", buffer.getvalue())


def write_webdataset(clips_folder: Path, dest: Path, rows: list[dict], shard_bytes: int) -> list[str]:
    """Pack the exported clips into `dest/shard-NNNNNN.tar`, each up to `shard_bytes` (at least one sample)."""
    shards, members, size = [], [], 0

    def flush():
        nonlocal members, size
        if members:
            name = f"shard-{len(shards):06d}.tar"
            part = dest / f".{name}.part"
            with tarfile.open(part, "w") as tar:
                for row in members:
                    key = row["clip_id"]
                    tar.add(clips_folder / row["file"], arcname=f"{key}.mp4")
                    _add_bytes(tar, f"{key}.txt", ((row.get("caption") or "").strip() + "\n").encode())
                    _add_bytes(tar, f"{key}.json", json.dumps(row, default=str).encode())
            os.replace(part, dest / name)
            shards.append(name)
        members, size = [], 0

    for row in (r for r in rows if r.get("file")):
        bytes_ = (clips_folder / row["file"]).stat().st_size
        if members and size + bytes_ > shard_bytes:
            flush()
        members.append(row)
        size += bytes_
    flush()
    return shards


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _atomic_write(path: Path, text: str) -> None:
    part = path.with_name(f".{path.name}.part")
    part.write_text(text)
    os.replace(part, path)
