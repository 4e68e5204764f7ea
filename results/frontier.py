"""What the frontier shows and what it leaves out, and why.

A frontier plot shows one protocol (threshold, ablation, task set; see the ``frontier`` view in
results/store.py) and only runs with a circuit for every task of it. Every other run is named
with the reason, so a missing circuit is never a silent gap in the figure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results.query import fetch
from results.store import StoreError
from runtime.job import RESULTS_FILE

# The protocol with most complete runs (ties: most runs, then by name, so the choice is stable).
DEFAULT_PROTOCOL_SQL = """
SELECT protocol FROM frontier
GROUP BY protocol
ORDER BY count(*) FILTER (geomean_edges IS NOT NULL) DESC, count(*) DESC, protocol
LIMIT 1
"""
RUN_PROTOCOLS_SQL = """
SELECT r.key, r.heldout_loss IS NOT NULL AS has_loss, any_value(r.control) AS control,
       list(f.protocol ORDER BY f.protocol) FILTER (f.protocol IS NOT NULL) AS protocols,
       any_value(f.missing_tasks) FILTER (f.protocol = ?) AS missing,
       any_value(f.loss_threshold) FILTER (f.protocol = ?) AS loss_threshold,
       any_value(f.ablation) FILTER (f.protocol = ?) AS ablation,
       bool_or(f.protocol = ? AND f.geomean_edges IS NOT NULL) AS shown
FROM runs r LEFT JOIN frontier f ON f.run_key = r.key
GROUP BY r.key, r.heldout_loss
ORDER BY r.key
"""
NOT_FOUND_REASONS_SQL = """
SELECT run_key, task, loss_threshold, ablation, min(reason) AS reason
FROM circuits WHERE NOT found
GROUP BY ALL
"""


@dataclass(frozen=True)
class LeftOut:
    run_key: str
    why: str

    def __str__(self) -> str:
        return f"{self.run_key[:12]}: {self.why}"


@dataclass(frozen=True)
class NotFound:
    """A prune job that finished without a circuit meeting its threshold."""

    job: str
    task: str
    reason: str


def default_protocol(workspace: Path) -> str:
    """The protocol a plot shows when none is asked for."""
    rows = fetch(workspace, DEFAULT_PROTOCOL_SQL).to_pylist()
    if not rows:
        raise StoreError("the frontier is empty: no run has a pruned circuit yet")
    return str(rows[0]["protocol"])


def left_out(workspace: Path, protocol: str) -> list[LeftOut]:
    """Every run of the store that the plot of ``protocol`` does not show, with the reason."""
    params = [protocol] * 4
    runs = fetch(workspace, RUN_PROTOCOLS_SQL, params).to_pylist()
    reasons = {
        (r["run_key"], r["task"], r["loss_threshold"], r["ablation"]): r["reason"]
        for r in fetch(workspace, NOT_FOUND_REASONS_SQL).to_pylist()
    }
    result = []
    for run in runs:
        if run["shown"]:
            continue
        if run["control"]:
            why = f"a {run['control']} control (controls are not frontier points)"
        elif run["missing"]:
            missing = [
                _with_reason(task, reasons.get(
                    (run["key"], task, run["loss_threshold"], run["ablation"])))
                for task in run["missing"]
            ]
            why = "no circuit found for " + "; ".join(missing)
        elif run["protocols"]:
            why = "pruned under another protocol: " + ", ".join(run["protocols"])
        elif not run["has_loss"]:
            why = "no held-out loss recorded"
        else:
            why = "no circuits yet (its prune jobs have not finished)"
        result.append(LeftOut(run["key"], why))
    return result


def _with_reason(task: str, reason: str | None) -> str:
    return f"{task} ({reason})" if reason else task


def describe_left_out(runs: list[LeftOut]) -> str:
    """The lines ``xcompile frontier`` prints under the plot's path (empty when none)."""
    if not runs:
        return ""
    return f"left out of the plot ({len(runs)} run(s)):\n" + "\n".join(f"  {r}" for r in runs)


def circuits_not_found(job_dirs: Iterable[Path]) -> list[NotFound]:
    """The finished prune jobs among ``job_dirs`` whose circuit was not found (no store needed:
    ``xcompile run`` reports them from the job folders, whichever backend ran them)."""
    found = []
    for job_dir in job_dirs:
        try:
            results = json.loads((job_dir / RESULTS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not finished (or torn): the run's failure report covers it
        if isinstance(results, dict) and results.get("found") is False:
            found.append(NotFound(job_dir.name, str(results.get("task")),
                                  str(results.get("reason") or "no reason recorded")))
    return found


# One row per sparse run of a protocol: its matched geometric-mean ratio and coverage.
MATCHED_RUNS_SQL = """
SELECT run_key, any_value(d_model) AS d_model, any_value(sparsity_target) AS sparsity_target,
       any_value(n_params) AS n_params, any_value(n_nonzero) AS n_nonzero,
       any_value(heldout_loss) AS heldout_loss, any_value(geomean_ratio) AS geomean_ratio,
       any_value(n_matched) AS n_matched, any_value(n_tasks) AS n_tasks
FROM matched WHERE protocol = ?
GROUP BY run_key ORDER BY heldout_loss
"""


def matched_runs(workspace: Path, protocol: str) -> list[dict[str, Any]]:
    return fetch(workspace, MATCHED_RUNS_SQL, [protocol]).to_pylist()


def describe_matched(runs: list[dict[str, Any]]) -> str:
    """Lines for `xcompile frontier`: each sparse run's ratio to the loss-matched dense family."""
    if not runs:
        return ""
    lines = ["sparse vs loss-matched dense circuits (geometric mean of dense/sparse edges):"]
    for r in runs:
        ratio = ("no dense runs bracket its loss" if r["geomean_ratio"] is None
                 else f"{r['geomean_ratio']:.2f}× smaller over {r['n_matched']}/{r['n_tasks']} "
                 "tasks")
        lines.append(f"  {r['run_key'][:12]} d_model {r['d_model']}, kept "
                     f"{r['sparsity_target']:g}, loss {r['heldout_loss']:.3f}: {ratio}")
    return "\n".join(lines)
