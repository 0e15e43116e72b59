"""Text that came with a source video: a `<stem>.txt` or `<stem>.json` beside it (clip_score, expand)."""
from __future__ import annotations

import json
from pathlib import Path

SIDECAR_KEYS = ("caption", "text", "description", "title")  # read from a .json sidecar, first found


def read_sidecar(uri: str) -> str | None:
    """Text that came with a video: `<stem>.txt`, or `<stem>.json` (a string or one of SIDECAR_KEYS)."""
    from stages.video.source import is_local, local_name

    stem = uri.rsplit(".", 1)[0] if "." in uri.rsplit("/", 1)[-1] else uri
    for suffix in (".txt", ".json"):
        raw = _read(stem + suffix, local=is_local(uri), local_name=local_name)
        if raw is None:
            continue
        text = raw.decode("utf-8", errors="replace").strip()
        if suffix == ".json":
            try:
                data = json.loads(text)
            except ValueError:
                return None
            text = data if isinstance(data, str) else next(
                (data[k] for k in SIDECAR_KEYS if isinstance(data, dict) and isinstance(data.get(k), str)), "")
            text = text.strip()
        return text or None
    return None


def _read(uri: str, local: bool, local_name) -> bytes | None:
    try:
        if local:
            path = Path(local_name(uri))
            return path.read_bytes() if path.is_file() else None
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(path) as handle:
            return handle.read()
    except (OSError, ValueError):
        return None
