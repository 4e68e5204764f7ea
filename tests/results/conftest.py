"""Fixtures for the store tests: workspaces of synthetic job folders laid out per docs/jobs.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report_browser import browser, page  # noqa: F401  (the browser fixtures, shared)

from results import synthetic
from results.ingest import ingest


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """Four runs (one dense) with two found circuits each, ingested."""
    ws = tmp_path / "ws"
    for seed, (target, loss) in enumerate([(1.0, 2.0), (0.1, 2.2), (0.05, 2.5), (0.02, 3.0)]):
        train = synthetic.train_job(ws, sparsity_target=target, heldout_loss=loss, seed=seed)
        synthetic.prune_job(ws, train, "single_double_quote", int(1000 * target) + 9)
        synthetic.prune_job(ws, train, "bracket_counting", int(400 * target) + 30)
    ingest(ws)
    return ws
