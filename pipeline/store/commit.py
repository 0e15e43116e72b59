"""Exactly-once output: staged wave files, atomic publication, commit records, recovery.

Workers write a wave's rows into `OUT/_staging/<wave_id>/` (WaveWriter, the
last task of the plan) and report what they wrote; the driver publishes a wave
once every one of its videos is complete: files are renamed into place, then
`_commits/<wave_id>.json` is written atomically.

On an object store (OUT is a URI, pipeline/store/location.py) there is no
rename: workers write each file once, under its final content-derived name
(`<wave>-part-<hash>.parquet`, one PUT: whole or absent), the record is one
object written last, and a rerun deletes every file under catalog/ and
shards/ that is named like vidprep's and that no record lists (the prefix is
vidprep's: pipeline/store/ownership.py). Locally the staged rename stays:
there a crash can leave a half-written file (a PUT can't), and the publish
journal lets recovery delete only files vidprep itself named. The record is the truth:
readers see only files a record lists (through the manifest that mirrors the
records, pipeline/store/manifest.py), and a rerun removes what a dead run
left (staging, and the files a wave's publish journal names that no record
lists) and skips the sources that records already list. Nothing else is
deleted, and only in a folder marked as vidprep's (pipeline/store/ownership.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.store.faults import crash_point
from pipeline.store.location import Location, is_remote
from pipeline.store.manifest import Manifest, encode_schema, live_files, schema_id
from pipeline.store.ownership import DATA_DIRS, DATA_FILE, is_own_data_file, require_claimed
from schemas.catalog import CLIPS, SCHEMA_VERSION, VIDEOS, conform

STAGING = "_staging"
COMMITS = "_commits"
JOURNAL = "_published.json"  # _staging/<wave>/: the files a wave is renaming into place, before its record
RECORD_KEYS = ("wave_id", "run_id", "committed_at", "schema_version", "config_fingerprint", "sources", "counts",
               "files")
DAMAGED_COMMIT = ("vidprep stops rather than treat that wave's files as leftovers: restore the file from a "
                  "backup, or move it out of _commits/ to give the wave up (its sources are then processed again "
                  "and its files are left on disk, unlisted)")
DAMAGED_JOURNAL = "move it away to go on (the files it names are then left on disk, unlisted)"

# Columns a video-only row keeps (everything else belongs to a clip).
VIDEO_ROW_COLUMNS = {"ordinal", "source_uri", "wave_id", "video", "video_rows", "is_video_row"}
MANIFEST = pa.schema([
    ("wave_id", pa.string()), ("source_uri", pa.string()), ("rows", pa.int64()), ("expected", pa.int64()),
    ("files", pa.list_(pa.struct([("path", pa.string()), ("table", pa.string()), ("rows", pa.int64()),
                                  ("bytes", pa.int64()), ("blake2b", pa.string())]))),
])


@dataclass
class WaveWriter:
    """Last task of the plan: writes each wave's rows of a batch to staging; returns a manifest."""

    out: str
    clips_schema: pa.Schema = CLIPS  # CLIPS plus the catalog_fields of the enabled stages
    registry: Any = None  # pipeline.run.registry: drops second copies of the same bytes

    def __call__(self, batch: pa.Table) -> pa.Table:
        manifests = []
        for wave_id in pc.unique(batch.column("wave_id")).to_pylist():
            received = batch.filter(pc.equal(batch.column("wave_id"), wave_id))
            rows = drop_duplicates(received, self.registry) if self.registry else received
            files = [self._write(wave_id, f"catalog/{name}", name, table)
                     for name, table in catalog_tables(rows, self.clips_schema).items() if table.num_rows]
            files += self._write_shards(wave_id, rows)
            counts = received.group_by("source_uri").aggregate([("video_rows", "max"), ("source_uri", "count")])
            manifests.append(pa.table({
                "wave_id": pa.array([wave_id] * counts.num_rows, pa.string()),
                "source_uri": counts.column("source_uri"),
                "rows": counts.column("source_uri_count").cast(pa.int64()),
                "expected": counts.column("video_rows_max").cast(pa.int64()),
                "files": pa.array([files] * counts.num_rows, MANIFEST.field("files").type),
            }, schema=MANIFEST))
        return pa.concat_tables(manifests) if manifests else MANIFEST.empty_table()

    def _write_shards(self, wave_id: str, rows: pa.Table) -> list[dict[str, Any]]:
        from pipeline.store.shards import index_table, shard_tables, stats_table

        files = []
        for bucket, (shard, options) in shard_tables(rows).items():
            info = self._write(wave_id, f"shards/{bucket}", "shards", shard, **options)
            final = published_path(info["path"], wave_id)
            files += [info,
                      self._write(wave_id, "shards/_index", "shard_index",
                                  index_table(shard, final, options["row_group_size"])),
                      self._write(wave_id, "shards/_stats", "shard_stats", stats_table(shard))]
        return files

    def _write(self, wave_id: str, folder: str, table_name: str, table: pa.Table, **options) -> dict[str, Any]:
        # Named after its whole content (the file's hash): a retried task rewrites the same file, and two
        # different batches never share a name. (Naming by the first column lost rows: two copies of the
        # same bytes share a video_id, and every stats table of a bucket starts with the bucket's name.)
        if is_remote(self.out):
            return self._put(wave_id, folder, table_name, table, **options)
        staged = Path(self.out, STAGING, wave_id, folder)
        staged.mkdir(parents=True, exist_ok=True)
        tmp = staged / f".part.tmp{os.getpid()}-{secrets.token_hex(4)}"
        try:
            pq.write_table(table, tmp, **({"compression": "zstd", "row_group_size": 4096} | options))
        except OSError as err:  # a full disk: drop the partial file; pyarrow's error names no file, so name it
            tmp.unlink(missing_ok=True)
            if err.errno and err.filename is None:
                raise OSError(err.errno, os.strerror(err.errno), str(tmp)) from err
            raise
        digest, size = _file_hash(tmp), tmp.stat().st_size
        rel = f"{folder}/part-{digest[:16]}.parquet"
        os.replace(tmp, Path(self.out, STAGING, wave_id, rel))
        return {"path": rel, "table": table_name, "rows": table.num_rows, "bytes": size, "blake2b": digest}

    def _put(self, wave_id: str, folder: str, table_name: str, table: pa.Table, **options) -> dict[str, Any]:
        """On a store: the file's bytes in memory first (its name is their hash), then one PUT under its
        final name. Invisible to readers until the wave's record lists it."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **({"compression": "zstd", "row_group_size": 4096} | options))
        data = sink.getvalue()
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        rel = f"{folder}/part-{digest[:16]}.parquet"
        Location.of(self.out).write_bytes(published_path(rel, wave_id), data)
        return {"path": rel, "table": table_name, "rows": table.num_rows, "bytes": data.size, "blake2b": digest}


def drop_duplicates(rows: pa.Table, registry) -> pa.Table:
    """Rows of sources whose bytes another source owns: keep only their video row, as an error."""
    videos = rows.column("video").to_pylist()
    pairs = sorted({(v["video_id"], v["source_uri"]) for v in videos if v["status"] == "ok"})
    owners = registry.claim(pairs) if pairs else {}
    duplicate = {uri: owner for uri, owner in owners.items() if owner != uri}
    if not duplicate:
        return rows
    keep, fixed = [], []
    for i, (video, is_video_row) in enumerate(zip(videos, rows.column("is_video_row").to_pylist())):
        owner = duplicate.get(video["source_uri"])
        if owner is None:
            keep.append(i)
        elif is_video_row:  # the one row that carries the video into the catalog
            keep.append(i)
            video.update(status="error", error=f"duplicate_of:{owner}", num_clips=0)
        fixed.append(video)
    rows = rows.set_column(rows.column_names.index("video"), "video", pa.array(fixed, rows.schema.field("video").type))
    rows = rows.take(pa.array(keep, pa.int64()))
    # The kept video row of a duplicate must not look like a clip: null every clip column.
    is_dup = pa.array([v["source_uri"] in duplicate for v in rows.column("video").to_pylist()])
    for name in rows.column_names:
        if name not in VIDEO_ROW_COLUMNS:
            column = pc.if_else(is_dup, pa.scalar(None, rows.schema.field(name).type), rows.column(name))
            rows = rows.set_column(rows.column_names.index(name), name, column)
    return rows


def published_path(rel: str, wave_id: str) -> str:
    """Where a staged file lands: its folder, its name prefixed by the wave (unique across waves)."""
    rel_path = Path(rel)
    return str(rel_path.parent / f"{wave_id}-{rel_path.name}")


def catalog_tables(rows: pa.Table, clips_schema: pa.Schema = CLIPS) -> dict[str, pa.Table]:
    """Split in-flight rows into the `videos` and `clips` catalog tables, conformed to their schemas."""
    is_video = pc.fill_null(rows.column("is_video_row"), False)
    video_rows = rows.filter(is_video)
    videos = pa.Table.from_struct_array(video_rows.column("video").combine_chunks())
    videos = videos.append_column("wave_id", video_rows.column("wave_id"))
    clips = rows.filter(pc.is_valid(rows.column("clip_id")))
    clips = clips.sort_by([("source_uri", "ascending"), ("clip_index", "ascending")])
    return {"videos": conform(videos.sort_by("source_uri"), VIDEOS), "clips": conform(clips, clips_schema)}


class CommitLog:
    """The `_commits/` records of an output folder, and the operations that keep them the truth."""

    def __init__(self, out: "str | Path | Location"):
        self.loc = Location.of(out)
        self.out = self.loc.path if self.loc.local else self.loc
        self.dir = self.out / COMMITS if self.loc.local else None

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.loc.local:
            for name in self.loc.names(COMMITS):
                if name.endswith(".json"):
                    yield read_record(f"{COMMITS}/{name}", RECORD_KEYS, "commit record", DAMAGED_COMMIT, self.loc)
            return
        if self.dir.is_dir():
            for path in sorted(self.dir.glob("*.json")):
                yield read_record(path, RECORD_KEYS, "commit record", DAMAGED_COMMIT)

    def committed_sources(self) -> set[str]:
        waves, _ = Manifest(self.out).load()
        return set(pc.list_flatten(waves.column("sources")).to_pylist()) if waves.num_rows else set()

    def files(self, table: str | None = None, relative: bool = False) -> list[str]:
        """Committed data files readers see (absolute paths; URIs on a store; relative to OUT with `relative`),
        optionally of one table; from the manifest, which equals the records (pipeline/store/manifest.py),
        minus files a compaction replaced."""
        files = live_files(Manifest(self.out).load()[0])
        root = str(self.out) if self.loc.local else None
        return [path if relative else f"{root}/{path}" if root else self.loc.uri(path) for path, name in zip(files.column("path").to_pylist(),
                                                            files.column("table").to_pylist())
                if table is None or name == table]

    def recover(self) -> dict[str, int]:
        """Undo what a dead run left: files its publish journals name but no record lists, then staging.

        Deletes only in a folder marked as vidprep's, and only files vidprep's own journals name
        (pipeline/store/ownership.py): a file someone else put under catalog/ or shards/ stays.
        """
        require_claimed(self.out)
        if not self.loc.local:
            return self._recover_store()
        # The records through the manifest: only records it lacks are parsed (a damaged one stops here).
        waves, _ = Manifest(self.out).load()
        listed = set(pc.struct_field(pc.list_flatten(waves.column("files")), "path").to_pylist()) \
            if waves.num_rows else set()
        committed = set(waves.column("wave_id").to_pylist())
        replaced = set(pc.list_flatten(waves.column("replaces")).to_pylist()) if waves.num_rows else set()
        removed = {"staging": 0, "orphans": 0, "replaced": 0}
        # Files a compaction replaced stay until the next writer comes (readers that opened the catalog
        # before the compaction may still be reading them); then they go.
        for rel in sorted(replaced):
            if is_own_data_file(self.out, rel) and (self.out / rel).is_file():
                (self.out / rel).unlink()
                removed["replaced"] += 1
        staging = self.out / STAGING
        for journal in sorted(staging.glob(f"*/{JOURNAL}")) if staging.is_dir() else ():
            if journal.parent.name in committed:
                continue
            for rel in read_record(journal, ("files",), "publish journal", DAMAGED_JOURNAL)["files"]:
                if rel not in listed and is_own_data_file(self.out, rel):
                    (self.out / rel).unlink()
                    removed["orphans"] += 1
        if staging.is_dir():
            removed["staging"] = sum(1 for p in staging.rglob("*") if p.is_file())
            shutil.rmtree(staging)
        return removed

    def _recover_store(self) -> dict[str, int]:
        """On a store: delete files named like vidprep's under catalog/ and shards/ that no record lists
        (a wave that died before its record, or a compaction's replaced files), and the staging prefix."""
        waves, _ = Manifest(self.loc).load()
        live = set(live_files(waves).column("path").to_pylist())
        replaced = set(pc.list_flatten(waves.column("replaces")).to_pylist()) if waves.num_rows else set()
        removed = {"staging": 0, "orphans": 0, "replaced": 0}
        for top in DATA_DIRS:
            for rel in self.loc.files(top):
                if rel in live or not DATA_FILE.fullmatch(rel.rsplit("/", 1)[-1]):
                    continue
                self.loc.delete(rel)
                removed["replaced" if rel in replaced else "orphans"] += 1
        removed["staging"] = self.loc.delete_tree(STAGING)
        return removed

    def commit(self, wave_id: str, run_id: str, sources: list[str], files: list[dict[str, Any]],
               fingerprint: str, replaces: list[str] | None = None) -> dict[str, Any]:
        """Publish a staged wave: journal its files, rename them into place, then write its record atomically,
        then add it to the manifest. `replaces`: committed files this wave's files take the place of
        (`vidprep compact`); readers stop seeing them when the record is written. On a store the files
        are in place already (WaveWriter._put): only the record is written."""
        published = [{**info, "path": published_path(info["path"], wave_id)}
                     for info in sorted(files, key=lambda f: f["path"])]
        if not self.loc.local:
            return self._record(wave_id, run_id, sources, published, fingerprint, replaces)
        # The journal names what is about to appear under catalog/ and shards/, so a crash before the
        # record leaves files that recovery knows are vidprep's (and nothing else is ever deleted).
        (self.out / STAGING / wave_id).mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / STAGING / wave_id / JOURNAL, {"files": [p["path"] for p in published]})
        for info, final in zip(sorted(files, key=lambda f: f["path"]), published):
            (self.out / final["path"]).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.out / STAGING / wave_id / info["path"], self.out / final["path"])
        for folder in {self.out / Path(p["path"]).parent for p in published}:
            _fsync_dir(folder)
        record = self._record(wave_id, run_id, sources, published, fingerprint, replaces)
        shutil.rmtree(self.out / STAGING / wave_id, ignore_errors=True)  # leftovers of retried tasks
        return record

    def _record(self, wave_id: str, run_id: str, sources: list[str], published: list[dict[str, Any]],
                fingerprint: str, replaces: list[str] | None) -> dict[str, Any]:
        """The files are in place: write the wave's record (the moment it becomes visible), then its manifest row."""
        crash_point("published")
        counts: dict[str, int] = {}
        schemas: dict[str, str] = {}
        for info in published:
            counts[info["table"]] = counts.get(info["table"], 0) + info["rows"]
            # The file's schema, declared in the record: views are built from it, not from a footer scan.
            schema = pq.read_schema(self.loc.full(info["path"]), **self.loc.filesystem)
            info["schema_id"] = schema_id(schema)
            schemas.setdefault(info["schema_id"], encode_schema(schema))
        record = {"wave_id": wave_id, "run_id": run_id, "committed_at": time.time(),
                  "schema_version": SCHEMA_VERSION, "config_fingerprint": fingerprint,
                  "sources": sorted(sources), "counts": counts, "files": published, "schemas": schemas}
        if replaces:  # the same rows again, rewritten: counted where they were first committed
            record.update(replaces=sorted(replaces), counts={}, compacted=counts)
        write_json(self.loc, f"{COMMITS}/{wave_id}.json", record)
        crash_point("committed")
        Manifest(self.loc).add(record)
        return record


def read_record(path: "Path | str", keys: tuple[str, ...], what: str, advice: str,
                loc: Location | None = None) -> dict[str, Any]:
    """A JSON record vidprep wrote; a damaged one is an error naming the file and what to do.
    `loc`: `path` is relative to that output (local or on a store)."""
    rel = None
    if loc is not None:
        path, rel = (loc.path / path, None) if loc.local else (loc.uri(str(path)), str(path))
    try:
        record = json.loads(path.read_text() if rel is None else loc.read_bytes(rel).decode())
        problem = None if isinstance(record, dict) else "not a JSON object"
        problem = problem or next((f"no {k!r}" for k in keys if k not in record), None)
    except (ValueError, UnicodeDecodeError) as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
    if problem:
        raise DamagedRecord(f"{path}: damaged {what} ({problem}); {advice}")
    return record


class DamagedRecord(ValueError):
    """A record file vidprep can't read; nothing is deleted while one exists."""


def write_json(loc: Location, rel: str, data: Any) -> None:
    """A JSON file in OUT, written atomically (a rename locally, one PUT on a store)."""
    if loc.local:
        (loc.path / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(loc.path / rel, data)
    else:
        loc.write_bytes(rel, json.dumps(data, indent=1, sort_keys=True, default=str).encode())


def atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk mid-write: no half-written .tmp left beside the records
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
