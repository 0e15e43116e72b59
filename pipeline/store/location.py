"""Where an output lives: a local folder or an object-store prefix, behind one small API over pyarrow.fs.

    Location.of("/data/out")                                     a local folder (LocalFileSystem)
    Location.of("s3://bucket/out?endpoint_override=HOST:PORT&scheme=http")   a prefix in a bucket

A URI keeps its query parameters (endpoint, scheme, region): `uri(rel)` carries them into every URI
derived from it, so a worker that gets a derived URI reaches the same server as the driver, and never
the default public endpoint instead. `with_endpoint` adds the endpoint and region of the config's
`storage:` section or the usual environment variables (AWS_ENDPOINT_URL[_S3], AWS_REGION) to an
s3:// URI that names none; credentials come only from the environment (AWS_ACCESS_KEY_ID, …, or a
profile): URIs are stored in the catalog, and a secret must never be.

Writes differ where the two differ: locally a file is written beside its final name, synced and
renamed (atomic); on an object store one PUT is atomic by itself (readers see the whole object or
none), and there is no rename, so the commit protocol names files finally when it writes them
(pipeline/store/commit.py).
"""
from __future__ import annotations

import functools
import logging
import os
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlparse

from pyarrow import fs

log = logging.getLogger("vidprep")
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
_warned: set[str] = set()


def is_remote(uri: str | Path) -> bool:
    scheme = urlparse(str(uri)).scheme
    return scheme not in ("", "file") and len(scheme) > 1


def with_endpoint(uri: str, endpoint: str | None = None, region: str | None = None) -> str:
    """`uri` with an explicit endpoint (and region) when it is s3:// and names none: from the arguments
    (the config's storage section), else the environment. None found: logged, once per bucket, that
    pyarrow's default (AWS's public endpoint) is used; never silently."""
    parts = urlparse(uri)
    if parts.scheme != "s3":
        return uri
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    endpoint = endpoint or next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)
    region = region or next((os.environ[v] for v in REGION_VARS if os.environ.get(v)), None)
    if "endpoint_override" not in query and endpoint:
        address = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not address.netloc:
            raise ValueError(f"storage.endpoint: {endpoint!r} is not a URL like http://host:port")
        query["endpoint_override"] = address.netloc
        query.setdefault("scheme", address.scheme)
    if "region" not in query and region:
        query["region"] = region
    if "endpoint_override" not in query and parts.netloc not in _warned:
        _warned.add(parts.netloc)
        log.warning("no endpoint configured for %s://%s (storage.endpoint, AWS_ENDPOINT_URL or "
                    "?endpoint_override= in the URI): using AWS's public S3 endpoint", parts.scheme, parts.netloc)
    return parts._replace(query=urlencode(sorted(query.items()), safe=":")).geturl()


def join_uri(base: str, rel: str) -> str:
    """`base` (a URI, query parameters kept) with `rel` appended to its path."""
    parts = urlparse(base)
    path = parts.path.rstrip("/") + "/" + rel.lstrip("/") if rel else parts.path
    return parts._replace(path=path).geturl()


class Location:
    """A folder (local) or prefix (object store) and the operations vidprep's store needs on it."""

    def __init__(self, filesystem: fs.FileSystem, root: str, uri: str, local: bool):
        self.fs, self.root, self.uri_root, self.local = filesystem, root.rstrip("/"), uri, local

    @classmethod
    def of(cls, out: "str | Path | Location", endpoint: str | None = None, region: str | None = None) -> "Location":
        if isinstance(out, Location):
            return out
        text = str(out)
        if not is_remote(text):
            path = str(Path(text[len("file://"):] if text.startswith("file://") else text).absolute())
            return cls(fs.LocalFileSystem(), path, path, True)
        return _remote(with_endpoint(text, endpoint, region))

    def __str__(self) -> str:
        return self.uri_root

    def __repr__(self) -> str:
        return f"Location({self.uri_root!r})"

    @property
    def path(self) -> Path:
        """The local folder (local outputs only)."""
        if not self.local:
            raise TypeError(f"{self} is not a local folder")
        return Path(self.root)

    def full(self, rel: str = "") -> str:
        """The filesystem path of `rel` (what pyarrow.fs takes)."""
        return f"{self.root}/{rel}" if rel else self.root

    def uri(self, rel: str = "") -> str:
        """A URI for `rel` that opens on any machine: the local path, or the store URI with its parameters."""
        return self.full(rel) if self.local else join_uri(self.uri_root, rel)

    @property
    def filesystem(self) -> dict:
        """Keyword arguments for pyarrow.parquet's readers and writers, beside `full(rel)`: the filesystem on
        a store, none locally (the plain path, as before stores existed)."""
        return {} if self.local else {"filesystem": self.fs}

    # -- reading --------------------------------------------------------------------------------
    def exists(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.full(rel)).type != fs.FileType.NotFound

    def is_file(self, rel: str) -> bool:
        return self.fs.get_file_info(self.full(rel)).type == fs.FileType.File

    def names(self, rel: str = "") -> list[str]:
        """Names directly under `rel` (files and folders), sorted; [] when it does not exist."""
        infos = self.fs.get_file_info(fs.FileSelector(self.full(rel), allow_not_found=True))
        return sorted(info.base_name for info in infos)

    def files(self, rel: str = "") -> list[str]:
        """Every file under `rel`, as paths relative to the root, sorted; [] when it does not exist."""
        infos = self.fs.get_file_info(fs.FileSelector(self.full(rel), recursive=True, allow_not_found=True))
        start = len(self.root) + 1
        return sorted(info.path[start:] for info in infos if info.type == fs.FileType.File)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.full(rel)) as handle:
            return handle.read()

    def open_input(self, rel: str):
        """A random-access file (what pyarrow.parquet reads without downloading all of it first)."""
        return self.fs.open_input_file(self.full(rel))

    # -- writing --------------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write `rel` atomically: readers see the old content or the new, never a part."""
        if self.local:
            path = Path(self.full(rel))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{secrets.token_hex(4)}")
            try:
                with open(tmp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return
        with self.fs.open_output_stream(self.full(rel)) as handle:  # one PUT: whole or absent
            handle.write(data)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create `rel` only if it does not exist yet, atomically; False when it exists.

        Locally O_EXCL; on S3 a conditional PUT (If-None-Match: *), which pyarrow does not expose,
        so through boto3 with the same endpoint, region and credentials."""
        if self.local:
            path = Path(self.full(rel))
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return True
        client, bucket, key = self._s3_client(rel)
        from botocore.exceptions import ClientError

        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.full(rel))
        except FileNotFoundError:
            pass

    def delete_tree(self, rel: str) -> int:
        """Delete every file under `rel`; the number deleted."""
        found = self.files(rel)
        for name in found:
            self.delete(name)
        if self.local and os.path.isdir(self.full(rel)):
            import shutil

            shutil.rmtree(self.full(rel), ignore_errors=True)
        return len(found)

    def _s3_client(self, rel: str):
        parts = urlparse(self.uri_root)
        if parts.scheme != "s3":
            raise NotImplementedError(f"{self}: an atomic create is implemented for s3:// and local folders only")
        try:
            import boto3
        except ImportError:
            raise RuntimeError("an s3:// output needs boto3 for its run lock (a conditional create): "
                               "pip install 'vidprep[s3]'") from None
        query = dict(parse_qsl(parts.query))
        endpoint = query.get("endpoint_override")
        if endpoint and "://" not in endpoint:
            endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name=query.get("region"))
        bucket, _, prefix = self.full(rel).partition("/")
        return client, bucket, prefix


@functools.lru_cache(maxsize=64)
def _remote(uri: str) -> Location:
    """A store's Location, made once per URI in a process (a writer task opens many files in one output)."""
    filesystem, root = fs.FileSystem.from_uri(uri)
    if not root.strip("/"):
        raise ValueError(f"{uri!r} names no bucket (s3://bucket/prefix)")
    return Location(filesystem, root, uri, False)
