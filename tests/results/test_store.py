"""The store's schema: the DDL is the one definition of every column, Arrow forms included."""

from __future__ import annotations

import duckdb
import pytest

from results import store
from results.store import TABLES, arrow_schema, ensure_schema


@pytest.mark.parametrize("table", list(TABLES))
def test_arrow_schema_is_what_duckdb_makes_of_the_ddl(table: str) -> None:
    con = duckdb.connect(":memory:")
    ensure_schema(con)
    made = con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
    assert arrow_schema(table).equals(made)


def test_arrow_schema_leaves_out_the_columns_asked() -> None:
    schema = arrow_schema("circuits_all", without=("not_distinguishable", "control"))
    assert "not_distinguishable" not in schema.names and "control" not in schema.names
    assert len(schema) == len(arrow_schema("circuits_all")) - 2


def test_a_column_type_it_does_not_know_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(store.TABLES, "odd", "key VARCHAR,\n  spots HUGEINT  -- no Arrow form")
    with pytest.raises(ValueError, match="HUGEINT"):
        arrow_schema("odd")
