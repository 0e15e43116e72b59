"""The catalog as DuckDB views: `pipeline.catalog.views.connect(OUT)`, and `vidprep query`.

Views read exactly the files that commit records list, so a crashed wave's
leftovers are never visible. Each table's view has the table's schema even
when no file exists yet.

Opening costs one directory listing and the manifest (pipeline/store/manifest.py),
not a read of every record: the files come from the manifest, and each view's
columns are declared from the schemas the manifest records for its files (the
union of the columns the stages wrote). Files of one schema are read by one
`read_parquet` without `union_by_name`, so DuckDB reads no footer at bind time
but the first; files of other schemas (another config) are added with
`UNION ALL BY NAME`, which fills the columns they lack with NULL. The path
lists are bound parameters (DuckDB variables), not SQL literals: parsing a
literal of thousands of paths cost more than the query.

`vidprep query` makes only the views its statement names (from DuckDB's
tokenizer), reads only the manifest's file lists unless it names `commits`,
and lets DuckDB open only those views' files.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.store.location import Location
from pipeline.store.manifest import Manifest, live_files
from pipeline.store.status import attach as attach_status
from schemas.catalog import CLIPS, VIDEOS
from schemas.shards import SHARD_INDEX, SHARD_STATS, SHARDS

# View name → schema of its committed files (later stages add theirs here).
TABLES = {"videos": VIDEOS, "clips": CLIPS, "shards": SHARDS, "shard_index": SHARD_INDEX, "shard_stats": SHARD_STATS}
READ_STATEMENTS = {"SELECT"}  # what `vidprep query` lets through (and EXPLAIN of a SELECT)


def connect(out: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views `videos`, `clips`, `shards`, `shard_index`, `shard_stats`
    and `commits` over OUT."""
    return _open(out)[0]


def _open(out: str | Path, names: set[str] | None = None) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """connect(), and the data files its views read (absolute paths; none on a store). `names`: only these
    views (and what they are built on) are made; None: every view."""
    loc = Location.of(out)
    if not loc.local:
        return _open_store(loc), []
    out = loc.path
    if not (out / "_commits").is_dir() and not (out / "run.json").exists():
        raise FileNotFoundError(f"{out} is not a vidprep output (no _commits/ or run.json)")
    con = quiet_connection()
    if names is None:  # a connection for many statements (report, export): footers read once, then cached
        con.execute("SET parquet_metadata_cache = true")  # (one statement: the cache costs more than it saves)
    commits = names is None or "commits" in names
    # Without the commits view, only the file lists: `sources` (a row per video) is most of the manifest.
    waves, schemas = Manifest(out).load(None if commits else ["files", "replaces"])
    files = live_files(waves)
    root = str(out)  # plain string joins: pathlib costs ~20 µs a path, and there is one per committed file
    read: list[str] = []
    for name, schema in TABLES.items():
        if names is not None and name not in names:
            continue
        mine = files.filter(pc.equal(files.column("table"), name))
        if mine.num_rows:
            con.execute(f"CREATE VIEW {name} AS {declared_scan(con, out, mine, schemas)}")
            read += [f"{root}/{p}" for p in mine.column("path").to_pylist()]
        else:
            con.register(f"_empty_{name}", schema.empty_table())
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{name}")
    if names is None or "clips" in names:
        attach_status(con, out)  # clips = clips_written + the newest status overlay (pipeline/store/status.py)
    if commits:
        con.register("_commits", _commits_table(waves))
        con.execute("CREATE VIEW commits AS SELECT * FROM _commits")
    return con, read


def quiet_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory connection that draws no progress bar: DuckDB's own bar goes to the console (or the run
    log) from any statement past two seconds, between vidprep's lines, whatever the output is."""
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    return con


def named_views(sql: str) -> set[str]:
    """The views a statement may read: every identifier that names one (an over-count only costs a view
    made for nothing). `clips_written` and `clip_status` are parts of `clips`."""
    every = duckdb.tokenize(sql)
    # Strings too: query_table('clips') names a view in a string constant.
    words = {sql[start:end].strip().strip("\"'").lower()
             for (start, kind), (end, _) in zip(every, every[1:] + [(len(sql), None)])
             if kind != duckdb.token_type.comment}
    if words & {"clips_written", "clip_status"}:
        words.add("clips")
    return words & {*TABLES, "commits"}


def _open_store(loc: Location) -> duckdb.DuckDBPyConnection:
    """connect() on an object store: DuckDB's network extensions can't be downloaded here, so each view
    reads an Arrow dataset of exactly the recorded files, opened through pyarrow's filesystem (filters
    and projections are pushed into the dataset scan; only the row groups a query needs are fetched)."""
    names = loc.names()
    if "_commits" not in names and "run.json" not in names:
        raise FileNotFoundError(f"{loc} is not a vidprep output (no _commits/ or run.json)")
    con = quiet_connection()
    waves, schemas = Manifest(loc).load()
    files = live_files(waves)
    for name, schema in TABLES.items():
        mine = files.filter(pc.equal(files.column("table"), name))
        relation = store_dataset(loc, mine.column("path").to_pylist(), [
            schemas[k] for k in dict.fromkeys(mine.column("schema_id").to_pylist()) if k in schemas]) \
            if mine.num_rows else schema.empty_table()
        con.register(f"_arrow_{name}", relation)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM _arrow_{name}")
    attach_status(con, loc)
    con.register("_commits", _commits_table(waves))
    con.execute("CREATE VIEW commits AS SELECT * FROM _commits")
    return con


def store_dataset(loc: Location, paths: list[str], schemas: list[pa.Schema]):
    """The Parquet files `paths` of OUT as one pyarrow dataset; columns: the union of their declared schemas
    (widest first, as declared_scan orders them), a file lacking a column reads it as null."""
    import pyarrow.dataset as ds

    schema = pa.unify_schemas(sorted(schemas, key=len, reverse=True)) if schemas else None
    if schema is not None:  # DuckDB takes no Arrow float16 (read_parquet reads it as FLOAT): the scan casts
        schema = pa.schema([field.with_type(_without_float16(field.type)) for field in schema])
    return ds.dataset([loc.full(p) for p in paths], schema=schema, format="parquet", filesystem=loc.fs)


def _without_float16(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_float16(kind):
        return pa.float32()
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_without_float16(kind.value_type)))
    if pa.types.is_large_list(kind):
        return pa.large_list(kind.value_field.with_type(_without_float16(kind.value_type)))
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(kind.value_field.with_type(_without_float16(kind.value_type)), kind.list_size)
    if pa.types.is_struct(kind):
        return pa.struct([f.with_type(_without_float16(f.type)) for f in kind])
    return kind


def declared_scan(con: duckdb.DuckDBPyConnection, out: Path, files: pa.Table, schemas: dict[str, pa.Schema]) -> str:
    """SELECT over `files`: one read_parquet per file schema, the widest first, the others by name.

    Each list of paths is a variable of `con`, bound as a parameter: DuckDB parses a list literal at
    ~25 µs a path, and a catalog of thousands of files would spend most of its opening on that."""
    groups: dict[str | None, list[str]] = {}
    root = str(out)
    for path, key in zip(files.column("path").to_pylist(), files.column("schema_id").to_pylist()):
        groups.setdefault(key if key in schemas else None, []).append(f"{root}/{path}")
    order = sorted(groups, key=lambda k: (k is None, -len(schemas[k]) if k else 0, k or ""))
    scans = []
    for key in order:
        variable = f"_files_{next(_listings)}"
        con.execute(f"SET VARIABLE {variable} = ?", [groups[key]])
        # Files from records older than declared schemas: DuckDB unifies them by their footers.
        unify = ", union_by_name=true" if key is None else ""
        scans.append(f"SELECT * FROM read_parquet(getvariable('{variable}'){unify})")
    return "\nUNION ALL BY NAME\n".join(scans)


_listings = itertools.count()  # variable names: unique in the process, so never two lists under one name


def query(out: str | Path, sql: str) -> pa.Table:
    """Run one read-only statement (a SELECT, or EXPLAIN [ANALYZE] of one) against the catalog views.

    Read-only is enforced by DuckDB, not by the first word: the statement's type comes from DuckDB's
    parser (the explained statement of an EXPLAIN is parsed again), and before it runs, DuckDB's
    external access is turned off except for reading the exact files the views list (no folder, so
    nothing can be written anywhere), extensions can't be loaded, and the configuration is locked.
    """
    con, files = _open(out, named_views(sql))
    check_read_only(con, sql)
    if Location.of(out).local:
        # A bound list: DuckDB parses a literal of thousands of paths at ~25 µs a path, and binds it in half.
        con.execute("SET allowed_paths = ?", [sorted({*files, *status_files(out)})])
    # (on a store the views read registered Arrow datasets: DuckDB itself may open no file at all)
    con.execute("SET autoinstall_known_extensions = false; SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false; SET lock_configuration = true")
    try:
        return arrow(con.sql(sql))
    except duckdb.PermissionException as err:
        raise PermissionError(f"the catalog query may only read the catalog's files: {err}") from None
    except duckdb.Error as err:  # a SQL mistake is the user's input, not a crash
        raise ValueError(f"query failed: {err}") from None


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse (PermissionError) anything but one SELECT, or EXPLAIN [ANALYZE] of one, as DuckDB parses it."""
    statements = _parse(con, sql)
    if len(statements) != 1:
        raise ValueError(f"expected exactly one SQL statement, got {len(statements)}")
    kind = statements[0].type.name
    if kind == "EXPLAIN":
        inner = _explained(statements[0].query)
        if inner is None:
            raise PermissionError("the catalog is read-only: EXPLAIN is allowed only as EXPLAIN [ANALYZE] SELECT …")
        inner_kinds = [s.type.name for s in _parse(con, inner)]
        if inner_kinds != ["SELECT"]:
            raise PermissionError("the catalog is read-only: EXPLAIN is allowed only of one SELECT "
                                  f"(this explains {', '.join(inner_kinds)})")
    elif kind not in READ_STATEMENTS:
        raise PermissionError(f"the catalog is read-only: {kind} statements are refused")


def _parse(con, sql: str) -> list:
    try:
        return con.extract_statements(sql)
    except duckdb.Error as err:
        raise ValueError(f"query failed: {str(err).splitlines()[0]}") from None


def _explained(text: str) -> str | None:
    """The statement an `EXPLAIN [ANALYZE] <statement>` explains (None for EXPLAIN (options) …)."""
    every = duckdb.tokenize(text)
    spans = [(start, end, kind) for (start, kind), (end, _) in zip(every, every[1:] + [(len(text), None)])]
    tokens = [(start, text[start:end].strip().upper(), kind) for start, end, kind in spans
              if kind != duckdb.token_type.comment]
    if not tokens or tokens[0][1] != "EXPLAIN":
        return None
    skip = 2 if len(tokens) > 1 and tokens[1][1] == "ANALYZE" else 1
    # The explained statement starts with a keyword; `EXPLAIN (options) …` is refused rather than parsed here.
    return text[tokens[skip][0]:] if len(tokens) > skip and tokens[skip][2] == duckdb.token_type.keyword else None


def status_files(out: str | Path) -> list[str]:
    """The overlay files the `clip_status` view reads (pipeline/store/status.py), if any."""
    from pipeline.store.status import StatusLog, record_files

    return [str(Path(out) / f) for f in record_files(StatusLog(out).latest())]


def arrow(relation) -> pa.Table:
    """A relation's rows as a pyarrow Table (DuckDB 2 renamed .arrow() to .to_arrow_table())."""
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()


def _commits_table(waves: pa.Table) -> pa.Table:
    """One row per committed wave, from the manifest (no record is read)."""
    clips = [json.loads(c).get("clips", 0) for c in waves.column("counts").to_pylist()]
    seconds = pc.cast(pc.floor(waves.column("committed_at")), pa.int64())
    return pa.table({
        "wave_id": waves.column("wave_id"), "run_id": waves.column("run_id"),
        "committed_at": pc.cast(seconds, pa.timestamp("s")),
        "config_fingerprint": waves.column("config_fingerprint"), "schema_version": waves.column("schema_version"),
        "videos": pc.cast(pc.list_value_length(waves.column("sources")), pa.int64()),
        "clips": pa.array(clips, pa.int64()),
        "files": pc.cast(pc.list_value_length(waves.column("files")), pa.int64())})
