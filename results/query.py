"""Read-only access to the store: a connection for notebooks and ``run_query`` for the CLI.

Every reader opens the file ``read_only`` (DuckDB refuses INSERT/UPDATE/DELETE/DROP/CREATE on it)
and with external access off, so ``COPY … TO``, ``ATTACH`` and ``read_csv`` cannot touch the file
system either: a query can read the store and nothing else, and change nothing. Exports go
through Python instead (``run_query(..., fmt="parquet", out=...)``, or ``.arrow()`` / ``.df()``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from results.store import StoreError, connect, one_line, store_path

FORMATS = ("table", "csv", "json", "parquet")
READER_CONFIG = {"enable_external_access": False}
TABLE_MAX_ROWS = 1000
JSON_TAG = b"duckdb_type"


class QueryError(StoreError):
    """A query DuckDB refused; ``detail`` keeps DuckDB's full message (with its caret line)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


def open_readonly(workspace: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to ``<workspace>/store.duckdb``; close it when done, since an
    ingest cannot write while any process holds the file open."""
    return connect(store_path(workspace), read_only=True, config=READER_CONFIG)


def fetch(workspace: Path, sql: str, params: list[Any] | None = None) -> pa.Table:
    """Run read-only SQL and return the last statement's rows as Arrow (none if it has none).

    Columns of DuckDB type JSON arrive as strings; their fields are tagged ``duckdb_type=JSON``.
    """
    con = open_readonly(workspace)
    try:
        relation = con.sql(sql, params=params)
        if relation is None:  # the last statement returns no rows (SET, CREATE TEMP …)
            return pa.table({})
        rows = relation.to_arrow_table()
        fields = [f.with_metadata({JSON_TAG: b"JSON"}) if str(t) == "JSON" else f
                  for f, t in zip(rows.schema, relation.types, strict=True)]
        return rows.cast(pa.schema(fields))
    except duckdb.Error as error:
        raise QueryError(f"query failed: {one_line(error)}", str(error)) from error
    finally:
        con.close()


def run_query(
    workspace: Path, sql: str, fmt: str = "table", out: Path | None = None
) -> str | bytes:
    """Run ``sql`` against the store and format the rows: ``table`` (a rich table as text),
    ``csv``, ``json`` (a list of objects), or ``parquet`` (written to ``out`` if given, else
    returned as bytes). Refused or bad SQL raises ``QueryError``; the store is never changed."""
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    rows = fetch(workspace, sql)
    if fmt == "table":
        return render_table(rows)
    if fmt == "csv":
        buffer = io.BytesIO()
        pa_csv.write_csv(_flat(rows), buffer)
        return buffer.getvalue().decode()
    if fmt == "json":
        return json.dumps(_records(rows), indent=2, default=str) + "\n"
    buffer = io.BytesIO()
    pq.write_table(rows, buffer)
    if out is None:
        return buffer.getvalue()
    Path(out).write_bytes(buffer.getvalue())
    return f"wrote {rows.num_rows} rows to {out}\n"


def _flat(rows: pa.Table) -> pa.Table:
    """CSV has no nested values: a list, struct or map column (``list(...)``, a JSON array of
    ``tasks``) becomes its JSON text, one cell per row."""
    for i, column in enumerate(rows.columns):
        if pa.types.is_nested(column.type):
            text = pa.array([None if v is None else json.dumps(v, default=str)
                             for v in column.to_pylist()], pa.string())
            rows = rows.set_column(i, rows.schema.field(i).name, text)
    return rows


def _records(rows: pa.Table) -> list[dict[str, Any]]:
    records = rows.to_pylist()
    json_columns = [f.name for f in rows.schema if (f.metadata or {}).get(JSON_TAG) == b"JSON"]
    for record in records:
        for name in json_columns:
            if isinstance(record[name], str):
                record[name] = json.loads(record[name])
    return records


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render_table(rows: pa.Table, max_rows: int = TABLE_MAX_ROWS) -> str:
    if rows.num_columns == 0:
        return "OK\n"
    table = Table(*rows.column_names, show_lines=False)
    for record in rows.slice(0, max_rows).to_pylist():
        table.add_row(*(_cell(v) for v in record.values()))
    console = Console(file=io.StringIO(), width=max(100, 16 * rows.num_columns),
                      color_system=None, force_terminal=False)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    if rows.num_rows > max_rows:
        text += f"… {rows.num_rows - max_rows} more rows (add LIMIT or use --format csv)\n"
    return text + f"({rows.num_rows} row{'s' if rows.num_rows != 1 else ''})\n"
