"""Queries are read-only: anything that would write is refused and the file is untouched."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import results
from results import QueryError, StoreError, run_query
from results.store import store_path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("sql", [
    "INSERT INTO runs_all (key) VALUES ('x')",
    "DELETE FROM train_metrics",
    "UPDATE runs_all SET heldout_loss = 0",
    "DROP TABLE runs_all",
    "DROP VIEW frontier",
    "CREATE TABLE t AS SELECT 1",
    "SELECT 1; DELETE FROM runs_all",
    "COPY runs TO '{out}' (FORMAT csv)",
    "COPY (SELECT * FROM runs) TO '{out}'",
    "ATTACH '{out}' AS other",
    "INSTALL httpfs",
])
def test_modifying_statements_are_refused(workspace: Path, tmp_path: Path, sql: str) -> None:
    store = store_path(workspace)
    before = digest(store)
    out = tmp_path / "escaped.csv"
    with pytest.raises(QueryError):
        run_query(workspace, sql.format(out=out))
    assert digest(store) == before
    assert not out.exists()


def test_bad_sql_carries_duckdb_message(workspace: Path) -> None:
    with pytest.raises(QueryError, match='syntax error at or near "SELEC"') as caught:
        run_query(workspace, "SELEC * FROM runs")
    assert "LINE 1" in caught.value.detail  # the caret diagram is kept for the CLI
    with pytest.raises(QueryError, match="no_such_table"):
        run_query(workspace, "SELECT * FROM no_such_table")


def test_formats(workspace: Path, tmp_path: Path) -> None:
    sql = "SELECT key, sparsity_target, sweep_point FROM runs ORDER BY sparsity_target"
    table = run_query(workspace, sql, "table")
    assert "sparsity_target" in table and "(4 rows)" in table
    csv = run_query(workspace, sql, "csv")
    assert csv.splitlines()[0] == '"key","sparsity_target","sweep_point"'
    assert len(csv.splitlines()) == 5
    records = json.loads(run_query(workspace, sql, "json"))
    assert [r["sparsity_target"] for r in records] == [0.02, 0.05, 0.1, 1.0]
    assert records[0]["sweep_point"]["sparsity.target"] == 0.02  # JSON columns stay JSON
    out = tmp_path / "runs.parquet"
    run_query(workspace, sql, "parquet", out)
    assert pq.read_table(out).num_rows == 4
    with pytest.raises(QueryError, match="unknown format"):
        run_query(workspace, sql, "xml")


def test_csv_writes_nested_values_as_json_text(workspace: Path) -> None:
    # the frontier's task list and an aggregate list(...): CSV has no nested cells
    sql = ("SELECT tasks, list(n_nodes ORDER BY n_nodes) AS nodes, {'a': 1} AS s, NULL::INT[] AS e"
           " FROM frontier f JOIN circuits c USING (run_key) GROUP BY tasks LIMIT 1")
    header, row = run_query(workspace, sql, "csv").splitlines()
    assert header == '"tasks","nodes","s","e"'
    tasks, nodes, struct, empty = next(csv.reader([row]))
    assert json.loads(tasks) == sorted(json.loads(tasks)) and len(json.loads(tasks)) == 2
    assert all(isinstance(n, int) for n in json.loads(nodes))
    assert json.loads(struct) == {"a": 1} and empty == ""


def test_public_open_is_read_only(workspace: Path) -> None:
    con = results.open(workspace)
    try:
        assert con.execute("SELECT count(*) FROM frontier").fetchone() == (4,)
        with pytest.raises(Exception, match="read-only"):
            con.execute("DELETE FROM runs_all")
    finally:
        con.close()


def test_missing_store_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no results store"):
        run_query(tmp_path, "SELECT 1")
