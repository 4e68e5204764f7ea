"""Ingest: idempotent, all-or-nothing, and never loads a half-written job folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from results import StoreError, synthetic
from results.ingest import exclusive_lock, ingest
from results.jobs import job_dirs
from results.store import LOCK_FILE, TABLES, store_path
from runtime.job import CONFIG_FILE, RESULTS_FILE

# Every table, and the views of the current runs and circuits the tests read by those names.
CONTENT_TABLES = [*(t for t in TABLES if t != "store_meta"), "runs", "circuits"]


def snapshot(ws: Path) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: equal snapshots mean equal store contents."""
    with duckdb.connect(str(store_path(ws)), read_only=True) as con:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in CONTENT_TABLES}


def count(ws: Path, sql: str, params: list | None = None) -> int:
    with duckdb.connect(str(store_path(ws)), read_only=True) as con:
        return con.execute(sql, params or []).fetchone()[0]


def test_ingest_loads_every_table(workspace: Path) -> None:
    rows = snapshot(workspace)
    assert len(rows["runs"]) == 4
    assert len(rows["train_metrics"]) == 4 * 50
    assert len(rows["circuits"]) == 8
    assert len(rows["circuit_nodes"]) == 8 * 12
    assert len(rows["jobs"]) == 12
    with duckdb.connect(str(store_path(workspace)), read_only=True) as con:
        run = con.execute("SELECT recipe, git_commit, git_dirty, package_versions->>'torch', "
                          "d_mlp, sweep_point->>'$.\"sparsity.target\"' FROM runs "
                          "WHERE sparsity_target = 0.1").fetchone()
        kinds = con.execute("SELECT DISTINCT kind, layer IS NULL FROM circuit_nodes "
                            "WHERE site = 'final_in'").fetchall()
    assert run == ("demo", "0123abcd", False, "2.5.0", 256, "0.1")
    assert kinds == [("final_in", True)]


def test_circuit_edges_match_every_circuits_edge_count(workspace: Path) -> None:
    with duckdb.connect(str(store_path(workspace)), read_only=True) as con:
        counts = con.execute(
            "SELECT c.key, c.n_edges, count(e.prune_key) FROM circuits c "
            "LEFT JOIN circuit_edges e ON e.prune_key = c.key GROUP BY ALL").fetchall()
        loose = con.execute(  # every edge joins two nodes its circuit kept
            "SELECT count(*) FROM circuit_edges e WHERE NOT EXISTS (SELECT 1 FROM circuit_nodes n"
            " WHERE n.prune_key = e.prune_key AND n.site = e.src_site AND n.index = e.src_index)"
            " OR NOT EXISTS (SELECT 1 FROM circuit_nodes n WHERE n.prune_key = e.prune_key"
            " AND n.site = e.dst_site AND n.index = e.dst_index)").fetchone()[0]
    assert len(counts) == 8 and all(n_edges == rows > 0 for _, n_edges, rows in counts)
    assert loose == 0


def test_unreadable_circuit_edges_leave_the_job_out(workspace: Path) -> None:
    prune = next((workspace / "jobs").glob("prune-*"))
    (prune / "circuit_edges.parquet").write_bytes(b"not parquet")
    summary = ingest(workspace)
    assert [name for name, _ in summary.skipped] == [prune.name]
    assert "circuit_edges.parquet" in summary.skipped[0][1]
    key = json.loads((prune / CONFIG_FILE).read_text())["key"]
    assert count(workspace, "SELECT count(*) FROM circuit_edges WHERE prune_key = ?", [key]) > 0


def test_ingest_twice_changes_nothing(workspace: Path) -> None:
    before = snapshot(workspace)
    summary = ingest(workspace)
    assert summary.loaded == []
    assert summary.unchanged == 12
    assert snapshot(workspace) == before


def test_reingest_of_a_rerun_job_replaces_its_rows(workspace: Path) -> None:
    train = next((workspace / "jobs").glob("train-*"))
    results = json.loads((train / RESULTS_FILE).read_text())
    results["heldout_loss"], results["finished_at"] = 1.5, results["finished_at"] + 10
    (train / RESULTS_FILE).write_text(json.dumps(results))
    summary = ingest(workspace)
    assert summary.loaded == [results["key"]]
    assert count(workspace, "SELECT heldout_loss FROM runs WHERE key = ?", [results["key"]]) == 1.5
    assert count(workspace, "SELECT count(*) FROM train_metrics WHERE run_key = ?",
                 [results["key"]]) == 50


def test_missing_meta_keys_are_null(tmp_path: Path) -> None:
    train = synthetic.train_job(tmp_path, sparsity_target=0.1, heldout_loss=2.0)
    config = json.loads((train / CONFIG_FILE).read_text())
    config["meta"] = {"recipe": "bare"}
    (train / CONFIG_FILE).write_text(json.dumps(config))
    ingest(tmp_path)
    assert count(tmp_path, "SELECT count(*) FROM runs WHERE recipe = 'bare' AND git_commit IS "
                           "NULL AND git_dirty IS NULL AND package_versions IS NULL") == 1


def test_metrics_parquet_is_read(tmp_path: Path) -> None:
    synthetic.train_job(tmp_path, sparsity_target=0.1, heldout_loss=2.0, n_metrics=30,
                        metrics_format="parquet")
    ingest(tmp_path)
    assert count(tmp_path, "SELECT count(*) FROM train_metrics WHERE heldout_loss IS NULL") == 28


def test_runtime_metric_lines_with_extra_keys(tmp_path: Path) -> None:
    """The trainer also logs total_steps and a nested per-tensor dict: skipped, not an error."""
    train = synthetic.train_job(tmp_path, sparsity_target=0.1, heldout_loss=2.0)
    (train / "metrics.jsonl").write_text(
        '{"step": 0, "total_steps": 2, "loss": 7.6, "lr": 0.0, "tokens": 0, "grad_norm": 1.5, '
        '"kept_fraction": 1.0, "kept_fraction_scheduled": 1.0, "tokens_per_s": 900.5, '
        '"kept_fraction_per_tensor": {"wte.weight": 1.0}, "heldout_loss": 7.7}\n'
        '{"step": 2, "loss": 5.0, "kept_fraction_per_tensor": {"a": 0.5, "b": 0.1}}\n'
        '{"note": "no step"}\n')
    ingest(tmp_path)
    with duckdb.connect(str(store_path(tmp_path)), read_only=True) as con:
        rows = con.execute("SELECT step, loss, heldout_loss, kept_fraction, tokens_per_s "
                           "FROM train_metrics ORDER BY step").fetchall()
    assert rows == [(0, 7.6, 7.7, 1.0, 900.5), (2, 5.0, None, None, None)]


def test_half_written_folders_are_not_ingested(workspace: Path) -> None:
    before = snapshot(workspace)
    pending = synthetic.train_job(workspace, sparsity_target=0.3, heldout_loss=2.1, done=False)
    torn = synthetic.train_job(workspace, sparsity_target=0.4, heldout_loss=2.1)
    full = (torn / RESULTS_FILE).read_text()
    (torn / RESULTS_FILE).write_text(full[: len(full) // 2])  # a truncated results.json
    (workspace / "jobs" / "train-nothingyet").mkdir()  # not even a config.json

    summary = ingest(workspace)
    skipped = dict(summary.skipped)
    assert "unreadable results.json" in skipped[torn.name]
    assert "config.json" in skipped["train-nothingyet"]
    after = snapshot(workspace)
    for table in ("runs", "train_metrics", "circuits", "circuit_nodes"):
        assert after[table] == before[table]
    states = {row[2]: row[3] for row in after["jobs"]}
    assert states[pending.name] == "interrupted"  # it has a log: it started
    assert states[torn.name] == "invalid"

    (torn / RESULTS_FILE).write_text(full)  # the job finishes: the next ingest picks it up
    assert len(ingest(workspace).loaded) == 1
    assert count(workspace, "SELECT count(*) FROM train_metrics WHERE run_key = ?",
                 [json.loads(full)["key"]]) == 50


def test_a_job_with_broken_metrics_is_left_out_whole(tmp_path: Path) -> None:
    train = synthetic.train_job(tmp_path, sparsity_target=0.1, heldout_loss=2.0)
    with (train / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 50, "loss": 1.')  # torn last line
    summary = ingest(tmp_path)
    assert summary.loaded == []
    assert train.name in dict(summary.skipped)
    assert count(tmp_path, "SELECT count(*) FROM runs") == 0
    assert count(tmp_path, "SELECT count(*) FROM train_metrics") == 0


def test_failed_jobs(tmp_path: Path) -> None:
    recorded = synthetic.train_job(tmp_path, sparsity_target=0.1, heldout_loss=2.0, done=False)
    (recorded / "failed.json").write_text(json.dumps(
        {"error": "RuntimeError: CUDA out of memory", "traceback_tail": "...",
         "started_at": 1.0, "finished_at": 3.0, "host": "gpu7", "backend": "slurm",
         "backend_job_id": 4242}))
    crashed = synthetic.train_job(tmp_path, sparsity_target=0.2, heldout_loss=2.0, done=False)
    (crashed / "log.txt").write_text("step 1\nTraceback (most recent call last):\n"
                                     '  File "x.py"\nValueError: bad shard\n')
    ingest(tmp_path)
    with duckdb.connect(str(store_path(tmp_path)), read_only=True) as con:
        rows = dict((r[0], r[1:]) for r in con.execute(
            "SELECT name, state, error, wall_time_s, host, backend_job_id FROM jobs").fetchall())
    assert rows[recorded.name] == ("failed", "RuntimeError: CUDA out of memory", 2.0, "gpu7",
                                   "4242")
    assert rows[crashed.name][:2] == ("failed", "ValueError: bad shard")


def test_prune_job_whose_train_job_is_missing_is_reported(tmp_path: Path) -> None:
    train = synthetic.train_job(tmp_path, sparsity_target=0.1, heldout_loss=2.0)
    prune = synthetic.prune_job(tmp_path, train, "bracket_counting", 10)
    shutil.rmtree(train)
    summary = ingest(tmp_path)
    assert "not in the workspace" in dict(summary.skipped)[prune.name]
    assert count(tmp_path, "SELECT count(*) FROM circuits") == 0


def test_a_failing_write_rolls_back_everything(workspace: Path) -> None:
    before = snapshot(workspace)
    synthetic.train_job(workspace, sparsity_target=0.3, heldout_loss=2.1, seed=9)
    # A second folder claiming an existing key breaks the jobs primary key mid-transaction.
    clone = workspace / "jobs" / "train-clone"
    shutil.copytree(next((workspace / "jobs").glob("train-*")), clone)
    with pytest.raises(StoreError, match=r"[Cc]onstraint|[Dd]uplicate"):
        ingest(workspace)
    assert snapshot(workspace) == before


def test_a_second_writer_waits_for_the_lock(workspace: Path) -> None:
    with exclusive_lock(workspace / LOCK_FILE), pytest.raises(StoreError, match="another ingest"):
        ingest(workspace, lock_timeout_s=0.2)


def test_a_store_of_another_schema_version_is_rebuilt(workspace: Path) -> None:
    before = snapshot(workspace)
    with duckdb.connect(str(store_path(workspace))) as con:
        con.execute("UPDATE store_meta SET value = '0' WHERE name = 'schema_version'")
        con.execute("DELETE FROM runs_all")  # stands in for a table of the old layout
    ingest(workspace)
    assert snapshot(workspace) == before


def test_an_old_workspaces_ingest_folder_is_no_job(tmp_path: Path) -> None:
    """Before ingest was the results layer's, it was a job with a folder; such a folder (and any
    folder whose name is no job kind's) is neither loaded nor listed."""
    train = synthetic.train_job(tmp_path, sparsity_target=0.1, heldout_loss=2.0)
    legacy = train.parent / "ingest-0123456789ab"
    legacy.mkdir()
    (legacy / CONFIG_FILE).write_text(json.dumps({"kind": "ingest", "key": "0123456789ab"}))
    (legacy / RESULTS_FILE).write_text(json.dumps({"summary": "ingested 1 job(s)"}))
    assert job_dirs(tmp_path) == [train]
    assert ingest(tmp_path).scanned == 1
    assert count(tmp_path, "SELECT count(*) FROM jobs WHERE kind = 'ingest'") == 0


EDGES_SQL = "SELECT sum(n_edges) FROM task_edges"


def test_a_job_rerun_by_newer_code_supersedes_the_old_one(workspace: Path) -> None:
    before, edges = snapshot(workspace), count(workspace, EDGES_SQL)
    prune = next(p for p in job_dirs(workspace) if p.name.startswith("prune-"))
    train_input = json.loads((prune / CONFIG_FILE).read_text())["inputs"]["train"]
    train = prune.with_name(Path(train_input).name)
    new_train = synthetic.rerun_job(train, "0.2.0")
    new_prune = synthetic.rerun_job(prune, "0.2.0", train=new_train)
    ingest(workspace)

    after = snapshot(workspace)
    assert len(after["runs"]) == len(before["runs"]) and len(after["runs_all"]) == 5
    assert len(after["circuits"]) == len(before["circuits"]) and len(after["circuits_all"]) == 9
    new_keys = [json.loads((p / CONFIG_FILE).read_text())["key"] for p in (new_train, new_prune)]
    with duckdb.connect(str(store_path(workspace)), read_only=True) as con:
        current = {row[0] for row in con.execute("SELECT key FROM runs UNION ALL "
                                                 "SELECT key FROM circuits").fetchall()}
        old = con.execute("SELECT superseded_by FROM runs_all WHERE superseded_by IS NOT NULL "
                          "UNION ALL SELECT superseded_by FROM circuits_all "
                          "WHERE superseded_by IS NOT NULL ORDER BY 1").fetchall()
    assert set(new_keys) <= current
    assert sorted(key for (key,) in old) == sorted(new_keys)  # each old row names its successor
    assert count(workspace, EDGES_SQL) == edges  # the same circuits, each counted once
