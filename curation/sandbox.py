"""User SQL on the catalog, sandboxed: one read-only statement, no file access, settings locked.

Every piece of SQL a user hands vidloom goes through here: ``vidloom query``, the ``--where`` of
``export``, ``sft`` and ``refine-sft``, and the same parameters of the Prefect flows. Three
walls, each enough for a different attack:

1. The connection is opened read-only on the published catalog, with DuckDB's
   ``enable_external_access = false`` (no ``read_text``/``read_csv``/``read_parquet``/``glob``
   of a path, no ``COPY``, ``ATTACH``, ``EXPORT``, ``INSTALL``/``LOAD``) and then
   ``lock_configuration = true`` (no ``SET``/``PRAGMA`` can turn it back on).
2. ``vidloom query`` takes exactly one statement, and it must be a query: SELECT (also WITH,
   SHOW, DESCRIBE, SUMMARIZE, PIVOT, which DuckDB parses as SELECT) or EXPLAIN. So no
   ``CREATE TEMP ...`` either, which a read-only connection would otherwise allow in memory.
3. A ``--where`` must parse as one boolean expression over ``clips``: the parse tree of
   ``SELECT clip_id FROM clips WHERE <where>`` is checked to be exactly that query, so a
   predicate cannot close the parenthesis and append ``UNION``, ``ORDER BY``, ``LIMIT`` or a
   second statement. Subqueries inside the expression (``clip_id IN (SELECT ... FROM
   captions ...)``) are allowed: they run inside walls 1 and 2.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from curation.snapshot import connect_retrying

QUERY_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
OUT_FORMATS = ("parquet", "csv", "jsonl")


class UnsafeSQL(ValueError):
    """User SQL that vidloom refuses to run (not a single read-only query or predicate)."""


@contextmanager
def sandboxed(db_path: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the published catalog with external access off and config locked."""
    path = Path(db_path)
    if path.name.startswith(".") and path.name.endswith(".live"):  # holding it would stall the writer
        published = path.with_name(path.name[1:].removesuffix(".live"))
        raise ValueError(f"{path} is vidloom's private working copy of a catalog: query {published}")
    if not path.exists():
        raise FileNotFoundError(f"no catalog at {path}")
    con = connect_retrying(path, read_only=True)
    try:
        for setting in ("autoinstall_known_extensions", "autoload_known_extensions",
                        "allow_community_extensions", "enable_external_access"):
            con.execute(f"SET {setting} = false")
        con.execute("SET lock_configuration = true")
        yield con
    finally:
        con.close()


def check_query(sql: str) -> None:
    """One statement, and a query (see the module docstring); raises :class:`UnsafeSQL`."""
    try:
        with duckdb.connect(":memory:") as parser:
            statements = parser.extract_statements(sql)
    except duckdb.Error as e:
        raise UnsafeSQL(f"cannot parse the SQL: {e}") from e
    if len(statements) != 1:
        raise UnsafeSQL(f"give exactly one statement, got {len(statements)} (separated by ';')")
    kind = statements[0].type
    if kind not in QUERY_TYPES:
        raise UnsafeSQL(
            f"only read-only queries run on the catalog (SELECT, WITH, SHOW, DESCRIBE, SUMMARIZE, "
            f"EXPLAIN); this is a {kind.name} statement"
        )


def check_where(where: str) -> None:
    """``where`` is one boolean expression over ``clips`` and nothing else; raises :class:`UnsafeSQL`."""
    if not where or not where.strip():
        raise UnsafeSQL("the --where predicate is empty (e.g. \"status = 'kept'\")")
    probe = f"SELECT clip_id FROM clips WHERE {where}"
    with duckdb.connect(":memory:") as parser:
        tree = json.loads(parser.execute("SELECT json_serialize_sql(?)", [probe]).fetchone()[0])
    if tree.get("error"):
        raise UnsafeSQL(f"--where {where!r} is not a SQL expression: {tree.get('error_message')}")
    statements = tree["statements"]
    node = statements[0]["node"] if len(statements) == 1 else {}
    source = node.get("from_table") or {}
    shape_ok = (
        len(statements) == 1
        and node.get("type") == "SELECT_NODE"
        and not node.get("modifiers")
        and not node.get("cte_map", {}).get("map")
        and len(node.get("select_list", [])) == 1
        and source.get("type") == "BASE_TABLE"
        and source.get("table_name") == "clips"
        and node.get("where_clause") is not None
        and not node.get("group_expressions")
        and not node.get("group_sets")
        and node.get("having") is None
        and node.get("qualify") is None
        and node.get("sample") is None
    )
    if not shape_ok:
        raise UnsafeSQL(
            f"--where {where!r} must be a single boolean expression over the clips table "
            "(no ';', UNION, ORDER BY, LIMIT or closing parenthesis of the query)"
        )


def run_query(db_path: str | Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """``vidloom query``: the columns and rows of one sandboxed read-only statement."""
    check_query(sql)
    with sandboxed(db_path) as con:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall()


def select_clip_ids(db_path: str | Path, where: str) -> list[str]:
    """The clip ids matching the predicate ``where`` over ``clips``, sorted (sandboxed)."""
    check_where(where)
    with sandboxed(db_path) as con:
        # the newlines keep a trailing '--' comment in the predicate from eating the ORDER BY
        rows = con.execute(f"SELECT clip_id FROM clips WHERE (\n{where}\n) ORDER BY clip_id").fetchall()
    return [r[0] for r in rows]


def write_query(db_path: str | Path, sql: str, out: str | Path) -> int:
    """Write a sandboxed query's result to ``out`` (.parquet, .csv or .jsonl); returns the row count.

    The sandbox has no file access, so vidloom writes the file itself from the Arrow result
    (to a temporary name, renamed into place: a reader never sees half a file).
    """
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in OUT_FORMATS:
        raise ValueError(f"--out {out}: the format comes from the suffix, one of {', '.join(OUT_FORMATS)}")
    check_query(sql)
    with sandboxed(db_path) as con:
        table = con.sql(sql).to_arrow_table()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in table.to_pylist():
                    f.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return table.num_rows
