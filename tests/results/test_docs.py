"""Every SQL example in docs/store.md, README.md and docs/reproduction.md runs on a real store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from results import run_query, synthetic
from results.ingest import ingest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [sql for doc in (ROOT / "docs" / "store.md", ROOT / "README.md",
                            ROOT / "docs" / "reproduction.md")
            for sql in re.findall(r"```sql\n(.*?)```", doc.read_text(), flags=re.DOTALL)]


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 7


@pytest.mark.parametrize("sql", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_example_query_runs(workspace: Path, sql: str) -> None:
    failed = synthetic.train_job(workspace, sparsity_target=0.3, heldout_loss=2.0, done=False)
    (failed / "failed.json").write_text('{"error": "ValueError: bad shard"}')
    # a second model seed and a shuffled-task control, for the replicate and control examples
    replicate = synthetic.train_job(workspace, sparsity_target=0.1, heldout_loss=2.3, seed=9)
    for task, edges in (("single_double_quote", 120), ("bracket_counting", 70)):
        synthetic.prune_job(workspace, replicate, task, edges)
        synthetic.prune_job(workspace, replicate, task, 3 * edges, control="shuffled_task")
    # a narrower dense model of higher loss: the dense family now brackets the sparse runs
    narrow = synthetic.train_job(workspace, sparsity_target=1.0, heldout_loss=2.6, d_model=16)
    for task, edges in (("single_double_quote", 900), ("bracket_counting", 300)):
        circuit = synthetic.prune_job(workspace, narrow, task, edges)
    synthetic.rerun_job(circuit, "0.2.0")  # re-pruned by newer code: the old row is superseded
    for k_coef, extra in ((1e-4, 0), (1e-2, 3)):  # the ground-truth suite at two settings
        synthetic.groundtruth_job(workspace, "mlp_path", k_coef=k_coef, n_nodes=4 + extra)
    ingest(workspace)
    text = run_query(workspace, sql, "csv")
    assert len(text.splitlines()) >= 2, sql  # a header and at least one row
