"""The groundtruth table: one row per groundtruth job, ingested idempotently like circuits."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from results import synthetic
from results.ingest import ingest
from results.store import store_path
from runtime.job import RESULTS_FILE

SHAPES = ("mlp_path", "attention_copy", "composition")


def rows(ws: Path) -> list[tuple]:
    with duckdb.connect(str(store_path(ws)), read_only=True) as con:
        return con.execute("SELECT shape, setting, k_coef, trials, threshold, node_precision, "
                           "node_recall, extra_nodes FROM groundtruth "
                           "ORDER BY setting, shape").fetchall()


def test_groundtruth_jobs_are_ingested_once_and_replaced_when_rerun(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    for k_coef, extra in ((1e-4, 0), (1e-2, 2)):
        for shape in SHAPES:
            synthetic.groundtruth_job(ws, shape, k_coef=k_coef, n_nodes=4 + extra)
    assert len(ingest(ws).loaded) == 6
    first = rows(ws)
    assert first[0] == ("attention_copy", "prune.k_coef=0.0001", 1e-4, 2, 0.1, 1.0, 1.0, "[]")
    assert first[-1][1:] == ("prune.k_coef=0.01", 1e-2, 2, 0.1, 4 / 6, 1.0,
                             '["l0.mlp_out[0]", "l0.mlp_out[1]"]')

    again = ingest(ws)
    assert again.loaded == [] and again.unchanged == 6
    assert rows(ws) == first

    # a re-run job (new results) replaces its row, and only its row
    job = next((ws / "jobs").glob("groundtruth-*"))
    results = json.loads((job / RESULTS_FILE).read_text())
    results["node_precision"], results["finished_at"] = 0.25, results["finished_at"] + 10
    (job / RESULTS_FILE).write_text(json.dumps(results))
    assert ingest(ws).loaded == [results["key"]]
    after = rows(ws)
    assert len(after) == 6 and sum(a != b for a, b in zip(after, first, strict=True)) == 1
    assert 0.25 in [row[5] for row in after]
