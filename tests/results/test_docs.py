"""Every SQL example in docs/store.md runs against a real store (they go into the README)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from results import run_query, synthetic
from results.ingest import ingest

DOC = Path(__file__).resolve().parents[2] / "docs" / "store.md"
EXAMPLES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("sql", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_example_query_runs(workspace: Path, sql: str) -> None:
    failed = synthetic.train_job(workspace, sparsity_target=0.3, heldout_loss=2.0, done=False)
    (failed / "failed.json").write_text('{"error": "ValueError: bad shard"}')
    ingest(workspace)
    text = run_query(workspace, sql, "csv")
    assert len(text.splitlines()) >= 2, sql  # a header and at least one row
