"""`xcompile run` of a ground-truth suite: a real groundtruth job through the real CLI, its row
in the store, and the table the run ends with."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import duckdb

from runtime.pruning.groundtruth import planted

Xcompile = Callable[..., subprocess.CompletedProcess[str]]  # the `xcompile` fixture

# Reduced steps and pairs so it runs in seconds: the circuit may be imperfect, the scores not.
RECIPE = """\
name: gt-tiny
groundtruth: {shapes: [attention_copy], only: true}
prune: {steps: 20, search: {trials: 1}, batch_size: 16, train_pairs: 64, heldout_pairs: 32,
        test_pairs: 32}
"""
SETTING_COLUMNS = ("k_coef", "lr", "temperature", "steps", "trials", "calibrate", "freeze_norms",
                   "silent_zero", "ablation", "threshold")


def test_a_suite_runs_lands_in_the_store_and_prints_its_table(
        tmp_path: Path, xcompile: Xcompile) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    ws = tmp_path / "ws"
    result = xcompile("run", str(recipe), "-w", str(ws))
    assert result.returncode == 0, result.stderr
    assert "gt-tiny: 1 jobs" in result.stderr  # the groundtruth job, nothing else

    [job_dir] = (ws / "jobs").glob("groundtruth-*")
    results = json.loads((job_dir / "results.json").read_text())
    con = duckdb.connect(str(ws / "store.duckdb"), read_only=True)
    row = con.sql("SELECT * FROM groundtruth").fetchall()
    columns = [c[0] for c in con.sql("SELECT * FROM groundtruth").description]
    con.close()
    assert len(row) == 1
    stored = dict(zip(columns, row[0], strict=True))
    assert {name: stored[name] for name in SETTING_COLUMNS} == {
        "k_coef": 1e-4, "lr": 3e-3, "temperature": 1.0, "steps": 20, "trials": 1,
        "calibrate": True, "freeze_norms": False, "silent_zero": False, "ablation": "mean",
        "threshold": 0.1}
    assert stored["shape"] == "attention_copy" and stored["setting"] == "base"

    # the scores, recomputed from the nodes the job found against the planted set
    truth = planted("attention_copy").nodes
    found = {(name.split("[")[0], int(name.split("[")[1].rstrip("]"))) for name in results["nodes"]}
    assert stored["found"] and stored["n_nodes"] == len(found) > 0
    assert stored["node_precision"] == len(found & truth) / len(found)
    assert stored["node_recall"] == len(found & truth) / len(truth)
    assert (stored["planted_nodes"], stored["planted_edges"]) == (8, 4)
    assert json.loads(stored["missed_nodes"]) == [f"{s}[{i}]" for s, i in sorted(truth - found)]
    assert json.loads(stored["extra_nodes"]) == [f"{s}[{i}]" for s, i in sorted(found - truth)]
    assert stored["n_edges"] == sum(json.loads(stored["edges_by_type"]).values())
    assert stored["sufficiency_loss"] is not None and stored["prune_time_s"] > 0

    table_row = next(line for line in result.stdout.splitlines() if "attention_copy" in line)
    assert f"{stored['node_precision']:.2f}" in table_row
    assert f"{stored['n_edges']}/4" in table_row

    # a second run is all cached and prints the same table
    again = xcompile("run", str(recipe), "-w", str(ws))
    assert again.returncode == 0, again.stderr
    assert "1 cached" in again.stderr and table_row in again.stdout

    # an ingest that fails fails the run (exit 1), naming the store; the jobs stay cached
    (ws / "store.duckdb").write_bytes(b"not a duckdb file " * 100)
    broken = xcompile("run", str(recipe), "-w", str(ws))
    assert broken.returncode == 1, broken.stderr
    assert "ingest failed: " in broken.stderr and "store.duckdb" in broken.stderr
    assert "`xcompile ingest` loads them" in broken.stderr and "Traceback" not in broken.stderr
    (ws / "store.duckdb").unlink()
    assert xcompile("ingest", "-w", str(ws)).returncode == 0
