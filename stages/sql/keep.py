"""`keep` expressions: one SQL boolean expression over clip columns, checked once, evaluated by DuckDB.

Used by stage `filter` (on each in-flight Arrow batch) and by `vidprep refilter`
(on the committed catalog), so both judge a clip the same way:

- DuckDB's own parser reads it (`json_serialize_sql`): one expression, no
  FROM/subquery/window/aggregate, no volatile function (a filter must give the
  same answer on a rerun), result BOOLEAN, every column known.
- Its top-level AND terms are its conditions; a clip failing some gets the
  reason `filter:<each failed condition, as DuckDB prints it>`.
- NULL counts as failed (SQL's WHERE semantics): `clip_aesthetic >= 4.5`
  rejects clips without an aesthetic score; write `coalesce(...)` to keep them.
- A condition that raises on a row (a failing CAST of a column's value, say)
  rejects that row with `filter_error:<the condition>`, never the batch: each
  condition runs inside DuckDB's TRY. Errors that show without any row (a
  constant that can't be cast, an invalid constant regex) and expressions TRY
  can't guard (volatile functions such as error()) are refused at config time.
  DuckDB's message for an erroring row is logged once per batch.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Iterator

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

REASON = "filter"
DUPLICATE_REASON = "near_duplicate_of"  # `near_duplicate_of:<clip_id>`: by the stream or the end-of-run pass
log = logging.getLogger("vidprep")
ERROR_REASON = "filter_error"  # a condition raised on this row (e.g. CAST of a value that isn't a number)
VOLATILE = {"random", "uuid", "gen_random_uuid", "uuidv4", "uuidv7", "setseed", "now", "current_timestamp",
            "get_current_timestamp", "current_date", "current_time", "today", "nextval", "currval"}
FORBIDDEN_CLASSES = {"SUBQUERY": "subqueries", "WINDOW": "window functions", "STAR": "*",
                     "PARAMETER": "parameters", "COLUMN_REF_QUALIFIED": "qualified columns"}


class KeepExpression:
    """A checked keep expression. `columns` = the schema it may use; `lenient_prefix` names columns
    that may appear although not in it (float columns added by configurable stages, e.g. prompt scores)."""

    def __init__(self, text: str, columns: pa.Schema, lenient_prefix: str | None = None):
        self.text = text.strip()
        if not self.text:
            raise ValueError("must be a non-empty SQL expression (or null to keep every clip)")
        con = _connection()
        parsed = con.execute("SELECT json_serialize_sql(?)", [f"SELECT ({self.text}) AS keep"]).fetchall()
        tree = json.loads(parsed[0][0])
        if tree.get("error"):
            raise ValueError(f"not a SQL expression: {tree.get('error_message', tree)}")
        root = _single_expression(tree)
        self.used = sorted({name for node in _walk(root) for name in _column(node)})
        schema = columns
        for name in self.used:
            if name in schema.names:
                continue
            if lenient_prefix and name.startswith(lenient_prefix):
                schema = schema.append(pa.field(name, pa.float32()))
                continue
            raise ValueError(f"unknown column {name!r} (clip columns: {', '.join(columns.names)})")
        for node in _walk(root):
            kind = node.get("class")
            if kind in FORBIDDEN_CLASSES:
                raise ValueError(f"{FORBIDDEN_CLASSES[kind]} are not allowed in a keep expression")
            if kind == "FUNCTION" and node.get("function_name", "").lower() in VOLATILE:
                raise ValueError(f"{node['function_name']}() would make the filter differ between runs")
        terms = root["children"] if root.get("type") == "CONJUNCTION_AND" else [root]
        self.conditions = [_render(con, tree, term) for term in terms]
        # Bind against an empty table of the schema: unknown functions, type errors, non-boolean results.
        con.register("clips", pa.table({f.name: _duckdb_safe(pa.chunked_array([], f.type)) for f in schema}))
        try:
            result = con.execute(f"SELECT ({self.text}) AS keep FROM clips")
        except duckdb.Error as err:
            raise ValueError(str(err).splitlines()[0]) from None
        if str(result.description[0][1]) != "BOOLEAN":
            raise ValueError(f"must be a boolean condition, this gives {result.description[0][1]}")
        if result.fetchall():  # an aggregate turns zero rows into one
            raise ValueError("aggregates are not allowed: the filter judges one clip at a time")
        # Run it once on a row of NULLs: errors DuckDB raises only when executing (casts of constants).
        con.register("null_row", pa.table({f.name: pa.nulls(1, _duckdb_safe(pa.chunked_array([], f.type)).type)
                                           for f in schema}))
        try:
            con.execute(f"SELECT ({self.text}) AS keep FROM null_row").fetchall()
        except duckdb.Error as err:
            raise ValueError(str(err).splitlines()[0]) from None
        try:  # the guarded form the filter and refilter run: TRY refuses volatile functions such as error()
            con.execute(f"SELECT {self.select_list()} FROM null_row").fetchall()
        except duckdb.Error as err:
            raise ValueError(f"can't be guarded against errors on single rows: {str(err).splitlines()[0]}") from None

    def select_list(self) -> str:
        """SQL columns `k0, k1, …`: 'true', 'false' (NULL counted as failed) or 'error' (it raised on the row).

        Each condition appears once, inside one TRY: written twice, DuckDB's common-subexpression
        optimiser would compute it once outside the TRY, and the error would escape."""
        return ", ".join(f"coalesce(TRY(CAST(coalesce(({c}), false) AS VARCHAR)), 'error') AS k{i}"
                         for i, c in enumerate(self.conditions))

    def reason_sql(self) -> str:
        """SQL over `select_list`'s columns k0, k1, …: the same text `reason` gives, computed in DuckDB."""
        def listed(test: str) -> str:
            return ", ".join(f"CASE WHEN k{i} {test} THEN '{c.replace(chr(39), chr(39) * 2)}' END"
                             for i, c in enumerate(self.conditions))

        raised = " OR ".join(f"k{i} = 'error'" for i in range(len(self.conditions)))
        failed = " OR ".join(f"k{i} <> 'true'" for i in range(len(self.conditions)))
        errors, failures = listed("= 'error'"), listed("<> 'true'")
        return (f"CASE WHEN {raised} THEN '{ERROR_REASON}:' || concat_ws('; ', {errors}) "
                f"WHEN {failed} THEN '{REASON}:' || concat_ws('; ', {failures}) END")

    def reason(self, passed: list[str | bool]) -> str | None:
        """`filter:<failed conditions>` for one clip's per-condition results (`select_list`'s values);
        `filter_error:<those conditions>` when some raised; None when it passed."""
        raised = [c for c, ok in zip(self.conditions, passed) if ok == "error"]
        if raised:
            return f"{ERROR_REASON}:" + "; ".join(raised)
        failed = [c for c, ok in zip(self.conditions, passed) if ok not in (True, "true")]
        return f"{REASON}:" + "; ".join(failed) if failed else None

    def evaluate(self, table: pa.Table) -> list[str | None]:
        """The reason of each row of an in-flight Arrow table (None = kept); rows keep their order."""
        missing = [c for c in self.used if c not in table.column_names]
        if missing:
            raise KeyError(f"filter: the batch has no column {missing} (is the stage that makes it enabled?)")
        view = pa.table({name: _duckdb_safe(table.column(name)) for name in self.used}) if self.used \
            else pa.table({"_": pa.nulls(table.num_rows)})
        view = view.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
        con = _connection()
        con.register("clips", view)
        rows = con.execute(f"SELECT {self.select_list()} FROM clips ORDER BY _row").fetchall()
        reasons = [self.reason(list(row)) for row in rows]
        first = next((i for i, why in enumerate(reasons) if why and why.startswith(ERROR_REASON)), None)
        if first is not None:
            log.warning("filter: %d of %d rows raised an error in `keep` (%s), e.g. %s", sum(
                1 for why in reasons if why and why.startswith(ERROR_REASON)), len(rows), reasons[first],
                self._message(con, first))
        return reasons

    def _message(self, con, row: int) -> str:
        """DuckDB's error for one row (unguarded), for the log."""
        try:
            con.execute(f"SELECT ({self.text}) FROM clips WHERE _row = {int(row)}").fetchall()
        except duckdb.Error as err:
            return str(err).splitlines()[0]
        return "no error when run alone"


def _connection() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")  # DuckDB's bar would reach the console between log lines
    con.execute("SET enable_external_access = false")  # an expression may not read files or URLs
    return con


def _single_expression(tree: dict[str, Any]) -> dict[str, Any]:
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise ValueError("must be one expression, not several statements")
    node = statements[0]["node"]
    plain = (node.get("type") == "SELECT_NODE" and node.get("from_table", {}).get("type") == "EMPTY"
             and not node.get("where_clause") and not node.get("modifiers") and len(node["select_list"]) == 1
             and not node.get("group_expressions") and not node.get("having") and not node["cte_map"]["map"])
    if not plain:
        raise ValueError("must be a single expression (no FROM, WHERE, ORDER BY, LIMIT, …)")
    return node["select_list"][0]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "class" in node:
            if node.get("class") == "COLUMN_REF" and len(node.get("column_names", [])) > 1:
                yield {"class": "COLUMN_REF_QUALIFIED"}
            yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _column(node: dict[str, Any]) -> list[str]:
    return node["column_names"][-1:] if node.get("class") == "COLUMN_REF" else []


def _render(con, tree: dict[str, Any], term: dict[str, Any]) -> str:
    """DuckDB's own SQL for one condition (normalised spacing; outer parentheses dropped)."""
    statement = json.loads(json.dumps(tree))  # the parsed `SELECT (expr)`, with only this term selected
    statement["statements"][0]["node"]["select_list"] = [{**term, "alias": ""}]
    try:
        text = con.execute("SELECT json_deserialize_sql(?)", [json.dumps(statement)]).fetchall()[0][0]
    except duckdb.Error:
        return json.dumps(term)[:200]  # never expected; a raw but faithful name
    text = text.removeprefix("SELECT ").strip()
    return text[1:-1] if text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]) else text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _duckdb_safe(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """DuckDB can't scan half floats: widen them (clip_embedding is list<float16>)."""
    kind = column.type
    if pa.types.is_list(kind) and pa.types.is_float16(kind.value_type):
        return pc.cast(column, pa.list_(pa.float32()))
    if pa.types.is_float16(kind):
        return pc.cast(column, pa.float32())
    return column
