"""`xcompile run` end to end on a tiny recipe: real tokenizing, training, pruning and ingest."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from tiny import tiny_recipe

Xcompile = Callable[..., subprocess.CompletedProcess[str]]  # the `xcompile` fixture


TINY = tiny_recipe("tiny", sweep={"sparsity.target": [1.0, 0.5]})


def write_recipe(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def status_rows(status: str) -> dict[str, list[str]]:
    """`status`'s table as stage → cells; its header row under "stage"."""
    return {cells[0]: cells[1:] for line in status.splitlines() if line[:1] in ("│", "┃")
            for cells in [[cell.strip() for cell in line[1:-1].replace("┃", "│").split("│")]]}


def test_run_trains_prunes_ingests_then_is_all_cached(tmp_path: Path, xcompile: Xcompile) -> None:
    recipe, ws = write_recipe(tmp_path), tmp_path / "ws"
    first = xcompile("run", str(recipe), "-w", str(ws))
    assert first.returncode == 0, first.stderr
    store = duckdb.connect(str(ws / "store.duckdb"), read_only=True)
    runs = store.sql(
        "select sparsity_target, n_params, n_nonzero, heldout_loss from runs "
        "order by sparsity_target"
    ).fetchall()
    circuits = store.sql("select task, found from circuits").fetchall()
    # every trial of each circuit's search is a row, trial 0 with the recipe's own settings
    trials = store.sql("select c.n_trials, count(*), min(t.trial), max(t.trial), "
                       "bool_or(t.trial = 0 and t.k_coef = c.k_coef) from circuits c "
                       "join prune_trials t on t.prune_key = c.key group by c.key, c.n_trials"
                       ).fetchall()
    store.close()
    assert trials == [(8, 8, 0, 7, True)] * 2
    assert [row[0] for row in runs] == [0.5, 1.0]
    assert runs[0][2] < runs[1][2] <= runs[1][1]  # the sparse model has fewer nonzeros
    assert len(circuits) == 2 and all(task == "while_return_true" for task, _ in circuits)
    again = xcompile("run", str(recipe), "-w", str(ws))
    assert again.returncode == 0 and "7 jobs, 7 cached, 0 to run" in again.stderr
    assert "ingested 0 job(s), 7 unchanged" in again.stderr  # the ingest runs and reads nothing
    plan = json.loads(xcompile("plan", str(recipe), "-w", str(ws), "--json").stdout)
    assert all(job["cached"] for job in plan["jobs"])
    _check_circuits_not_found(recipe, ws, xcompile)


def _check_circuits_not_found(recipe: Path, ws: Path, xcompile: Xcompile) -> None:
    """Re-prune the same models at a task loss no model reaches (1e-6), so each run's circuit
    is honestly not found: `run` says so, the runs stay in their protocol with the task
    missing, and `frontier` names them. (A continuation: the models are trained once.)"""
    result = xcompile("run", str(recipe), "-w", str(ws), "--set", "prune.loss_threshold=1.0e-6")
    assert result.returncode == 0, result.stderr
    assert "2 circuit(s) not found; their runs are left out of the frontier:" in result.stderr
    assert "reached the threshold" in result.stderr  # the runtime's reason, from results.json
    store = duckdb.connect(str(ws / "store.duckdb"), read_only=True)
    protocol = "mean@1e-06:while_return_true"
    rows = store.execute("select run_key, missing_tasks, geomean_edges, pareto from frontier "
                         "where protocol = ?", [protocol]).fetchall()
    store.close()
    assert len(rows) == 2 and all(row[1:] == (["while_return_true"], None, False) for row in rows)
    png = ws / "f.png"
    shown = xcompile("frontier", "-w", str(ws), "-o", str(png))  # the complete mean@5.0 runs
    assert shown.returncode == 0 and png.is_file() and "left out" not in shown.stderr
    one_task = xcompile("frontier", "-w", str(ws), "-o", str(png), "--task", "while_return_true")
    assert one_task.returncode == 0, one_task.stderr
    unknown = xcompile("frontier", "-w", str(ws), "-o", str(png), "--task", "no_such_task")
    assert unknown.returncode == 2 and "has no task 'no_such_task'" in unknown.stderr
    plot = xcompile("frontier", "-w", str(ws), "-o", str(png), "--protocol", protocol)
    assert plot.returncode == 2 and "has a circuit for every task" in plot.stderr
    assert "left out of the plot (2 run(s)):" in plot.stderr
    for run_key, *_ in rows:
        reason = f"  {run_key[:12]}: no circuit found for while_return_true (no circuit of"
        assert reason in plot.stderr
    # a control that finds nothing is what it is there to show, and is said so
    controlled = xcompile("run", str(recipe), "-w", str(ws), "--set", "prune.loss_threshold=1.0e-6",
                          "--set", "controls=[shuffled_task]")
    assert controlled.returncode == 0, controlled.stderr
    assert "2 circuit(s) not found; their runs are left out of the frontier:" in controlled.stderr
    assert "2 control circuit(s) not found, as a control should not" in controlled.stderr


def test_failed_job_exits_1_skips_dependents_and_explains(
    tmp_path: Path, xcompile: Xcompile
) -> None:
    corpus = tmp_path / "code"
    corpus.mkdir()
    (corpus / "a.py").write_text("x = 1\n")  # far too little text for a held-out split
    recipe = write_recipe(
        tmp_path, tiny_recipe("tiny", data={"corpus": str(corpus)},
                              sweep={"sparsity.target": [1.0, 0.5]}))
    ws = tmp_path / "ws"
    result = xcompile("run", str(recipe), "-w", str(ws))
    assert result.returncode == 1
    assert "FAILED tokenize-" in result.stderr and "re-run by hand:" in result.stderr
    assert "1 job(s) failed, 6 skipped" in result.stderr
    assert (ws / "store.duckdb").is_file()  # the ingest runs after failures too
    assert "Traceback" not in result.stderr.split("re-run by hand:")[-1]
    plan = json.loads(xcompile("plan", str(recipe), "-w", str(ws), "--json").stdout)
    tokenize = next(job for job in plan["jobs"] if job["kind"] == "tokenize")
    assert tokenize["why"].startswith("failed last time: ")
    status = xcompile("status", str(recipe), "-w", str(ws)).stdout
    assert f"{tokenize['name']}: " in status  # the failure and its reason
    rows = status_rows(status)
    assert rows["stage"] == ["new", "failed"] and rows["tokenize"] == ["", "1"]
    assert rows["train"] == ["2", ""] and rows["prune"] == ["2", ""]


def interruptible() -> None:
    """Ctrl-C as at a terminal: a suite started in the background by a non-interactive shell
    (``cmd &``) ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_keeps_finished_jobs_and_the_rerun_resumes(
    tmp_path: Path, xcompile: Xcompile
) -> None:
    recipe = write_recipe(tmp_path, tiny_recipe("tiny", train={"tokens": "400K"},
                                                 sweep={"sparsity.target": [1.0, 0.5]}))
    ws = tmp_path / "ws"
    child = subprocess.Popen(
        [sys.executable, "-m", "compiler.cli", "run", str(recipe), "-w", str(ws)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    deadline = time.monotonic() + 300  # generous: a loaded 2-core machine is slow to start
    while not list(ws.glob("jobs/train-*/checkpoints/*.safetensors")):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "interrupted" in stderr
    plan = json.loads(xcompile("plan", str(recipe), "-w", str(ws), "--json").stdout)
    by_kind = {job["kind"]: job for job in plan["jobs"]}
    assert by_kind["tokenize"]["cached"]
    train = next(job for job in plan["jobs"] if job["kind"] == "train" and not job["cached"])
    resumes = re.fullmatch(r"interrupted \(resumes from step (\d+)\)", train["why"])
    assert resumes is not None, train["why"]
    # the jobs after it never started: new, not "interrupted" nor "started before"
    assert {job["why"] for job in plan["jobs"] if job["kind"] in ("stats", "prune")} == {"new"}

    # status and show say the same, not `failed: KeyboardInterrupt`
    status = xcompile("status", str(recipe), "-w", str(ws)).stdout
    assert f"{train['name']}: {train['why']}" in status, status
    assert "failed" not in status and "KeyboardInterrupt" not in status
    assert status_rows(status)["stage"] == ["done", "interrupted", "new"]
    show = xcompile("show", train["name"], "-w", str(ws)).stdout
    assert f"state={train['why']}" in show

    # a rerun resumes from that step; its log tail is the resumption, not the old attempt
    child = subprocess.Popen(
        [sys.executable, "-m", "compiler.cli", "run", str(recipe), "-w", str(ws)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible,
    )
    log = ws / "jobs" / train["name"] / "log.txt"
    deadline = time.monotonic() + 300  # generous: a loaded 2-core machine is slow to start
    while "resuming from" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    child.communicate(timeout=60)
    show = xcompile("show", train["name"], "-w", str(ws)).stdout
    tail = show.split("── log (")[1]
    assert "resuming from" in tail and f"at step {resumes[1]}" in tail
    assert tail.count("job started") == 1 and "Traceback" not in tail


@pytest.mark.slurm
def test_run_on_slurm_lands_the_same_store_as_local(
    tmp_path: Path, xcompile: Xcompile, partition: str
) -> None:
    recipe = write_recipe(tmp_path, tiny_recipe(
        "tiny", sweep={"sparsity.target": [1.0, 0.5]},
        resources={"backend": "slurm", "slurm": {"partition": partition, "cpus_per_task": 1}}))
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    submitted = xcompile("run", str(recipe), "-w", str(on_slurm))
    assert submitted.returncode == 0, submitted.stderr
    assert "queued 7 job(s) (tokenize" in submitted.stderr and ", ingest " in submitted.stderr
    assert xcompile("run", str(recipe), "-w", str(local), "--backend", "local").returncode == 0
    status = xcompile("status", str(recipe), "-w", str(on_slurm)).stdout
    assert "done" in status and "new" not in status and "failed" not in status

    def runs(workspace: Path) -> list[tuple[object, ...]]:
        store = duckdb.connect(str(workspace / "store.duckdb"), read_only=True)
        try:
            rows = store.sql("select key, heldout_loss, n_nonzero from runs order by key")
            return rows.fetchall()
        finally:
            store.close()

    assert runs(on_slurm) == runs(local)  # same job keys, identical losses on CPU
    again = xcompile("run", str(recipe), "-w", str(on_slurm))
    assert "7 cached, 0 to run" in again.stderr and "queued 0 job(s)" in again.stderr
    assert "ingested 0 job(s)" in again.stderr  # nothing queued: the driver's ingest only

