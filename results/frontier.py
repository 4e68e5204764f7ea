"""What the frontier shows and what it leaves out, and why.

A frontier plot shows one protocol (threshold, ablation, task set; see the ``frontier`` view in
results/store.py) and only runs with a circuit for every task of it. Every other run is named
with the reason, so a missing circuit is never a silent gap in the figure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results.query import fetch
from results.store import StoreError
from runtime.job import RESULTS_FILE

# The protocol with most complete runs (ties: most runs, then the paper's judging before a
# switched one such as mean+frozen_norms, then by name, so the choice is stable).
DEFAULT_PROTOCOL_SQL = """
SELECT protocol FROM frontier
GROUP BY protocol
ORDER BY count(*) FILTER (geomean_edges IS NOT NULL) DESC, count(*) DESC,
         bool_or(ablation LIKE '%+%'), protocol
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


def protocol_tasks(workspace: Path, protocol: str) -> list[str]:
    rows = fetch(workspace, "SELECT any_value(tasks) AS tasks FROM frontier WHERE protocol = ?",
                 [protocol]).to_pylist()
    return list((rows[0]["tasks"] if rows else None) or [])


def check_task(workspace: Path, protocol: str, task: str) -> None:
    """Raise a StoreError naming the protocol's tasks unless ``task`` is one of them."""
    tasks = protocol_tasks(workspace, protocol)
    if task not in tasks:
        raise StoreError(f"protocol {protocol!r} has no task {task!r}; its tasks: "
                         + (", ".join(tasks) or "none"))


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


# Per run of a protocol, how it stands on one task: the circuit (as task_edges counts it), whether
# the model does the task, the full model's loss and why no circuit was found.
TASK_STANDING_SQL = """
SELECT t.run_key, t.found, t.model_solves, t.n_edges, min(c.full_model_loss) AS full_loss,
       min(c.reason) FILTER (NOT c.found) AS reason
FROM task_edges t
JOIN circuits c ON c.run_key = t.run_key AND c.task = t.task AND c.control IS NULL
               AND c.loss_threshold = t.loss_threshold AND c.ablation = t.ablation
WHERE t.protocol = ? AND t.task = ?
GROUP BY ALL
"""


def left_out_of_task(workspace: Path, protocol: str, task: str) -> list[LeftOut]:
    """Every run that the one-task plot of ``task`` in ``protocol`` does not show, and why:
    runs outside the protocol for the reasons ``left_out`` gives; in it, no circuit, a model
    that does not do the task, or a circuit not distinguishable from its control."""
    elsewhere = {run.run_key: run for run in left_out(workspace, protocol)}
    standing = {r["run_key"]: r for r in
                fetch(workspace, TASK_STANDING_SQL, [protocol, task]).to_pylist()}
    keys = fetch(workspace, "SELECT key FROM runs ORDER BY key")["key"].to_pylist()
    result = []
    for key in keys:
        row = standing.get(key)
        if row is None:
            if key in elsewhere:
                result.append(elsewhere[key])
            continue
        loss = "" if row["full_loss"] is None else f" ({row['full_loss']:.3f})"
        if not row["model_solves"]:
            why = f"the model does not do {task}: full-model loss{loss} above the threshold"
        elif not row["found"]:
            why = "no circuit found for " + _with_reason(task, row["reason"])
        elif row["n_edges"] is None:
            why = f"its {task} circuit is not distinguishable from its control"
        else:
            continue
        result.append(LeftOut(key, why))
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
SELECT run_key, any_value(family) AS family, any_value(seed) AS seed,
       any_value(d_model) AS d_model, any_value(sparsity_target) AS sparsity_target,
       any_value(n_params) AS n_params, any_value(n_nonzero) AS n_nonzero,
       any_value(heldout_loss) AS heldout_loss, any_value(geomean_ratio) AS geomean_ratio,
       any_value(n_matched) AS n_matched, any_value(n_tasks) AS n_tasks
FROM matched WHERE protocol = ?
GROUP BY run_key ORDER BY heldout_loss
"""


# Every sparse run's ratio per task, as the report lists them.
MATCHED_TASKS_SQL = """
SELECT run_key, task, heldout_loss, model_solves, sparse_edges, dense_edges, ratio
FROM matched WHERE protocol = ?
ORDER BY task, heldout_loss, run_key
"""
# The same for one task: its ratio alone.
MATCHED_TASK_SQL = """
SELECT run_key, family, seed, d_model, sparsity_target, n_params, n_nonzero, heldout_loss,
       ratio AS geomean_ratio, (ratio IS NOT NULL)::INT AS n_matched, 1 AS n_tasks
FROM matched WHERE protocol = ? AND task = ?
ORDER BY heldout_loss
"""


# The seed spread: per sparse family (a width and kept fraction, over its seeds) the geometric
# mean of its runs' ratios with their range, and one row (``overall``) over every sparse run.
# A family none of whose runs has a ratio (all outside the dense range) lists none, not NULL.
MATCHED_FAMILIES_SQL = """
SELECT family, grouping(family) = 1 AS overall, any_value(d_model) AS d_model,
       any_value(sparsity_target) AS sparsity_target,
       count(*) AS n_runs, count(geomean_ratio) AS n_ratios,
       exp(avg(ln(geomean_ratio))) AS geomean_ratio,
       min(geomean_ratio) AS min_ratio, max(geomean_ratio) AS max_ratio,
       coalesce(list(geomean_ratio ORDER BY d_model, sparsity_target, seed, run_key)
           FILTER (geomean_ratio IS NOT NULL), []) AS ratios
FROM ({runs})
GROUP BY GROUPING SETS ((family), ())
ORDER BY overall, d_model, sparsity_target
"""


def _matched_runs_query(protocol: str, task: str | None) -> tuple[str, list[str]]:
    if task is None:
        return MATCHED_RUNS_SQL, [protocol]
    return MATCHED_TASK_SQL, [protocol, task]


def matched_runs(workspace: Path, protocol: str, task: str | None = None
                 ) -> list[dict[str, Any]]:
    """Each sparse run's geometric-mean ratio over the tasks (or its ratio on ``task``)."""
    sql, params = _matched_runs_query(protocol, task)
    return fetch(workspace, sql, params).to_pylist()


def matched_families(workspace: Path, protocol: str, task: str | None = None
                     ) -> list[dict[str, Any]]:
    """The same ratios over seeds: one row per sparse family, then one over all sparse runs."""
    sql, params = _matched_runs_query(protocol, task)
    return fetch(workspace, MATCHED_FAMILIES_SQL.format(runs=sql), params).to_pylist()


def describe_matched(runs: list[dict[str, Any]], task: str | None = None,
                     families: Sequence[dict[str, Any]] = ()) -> str:
    """Lines for `xcompile frontier`: each sparse run's ratio to the loss-matched dense family
    (over the tasks, or on ``task``), then, from ``families`` (`matched_families`), the spread
    over seeds where a family has several."""
    if not runs:
        return ""
    lines = ["sparse vs loss-matched dense circuits (geometric mean of dense/sparse edges):"
             if task is None else f"sparse vs loss-matched dense {task} circuits (dense/sparse "
             "edges):"]
    for r in runs:
        over = f"over {r['n_matched']}/{r['n_tasks']} tasks" if task is None else f"on {task}"
        ratio = ("no ratio (no dense runs that do the task bracket its loss, or it has no "
                 "circuit)" if r["geomean_ratio"] is None
                 else f"{r['geomean_ratio']:.2f}× smaller {over}")
        lines.append(f"  {r['run_key'][:12]} d_model {r['d_model']}, kept "
                     f"{r['sparsity_target']:g}, loss {r['heldout_loss']:.3f}: {ratio}")
    if any(f["n_runs"] > 1 for f in families):
        lines.append("over seeds (geometric mean of the runs' ratios; each seed's; range):")
        for f in families:
            name = ("all sparse runs" if f["overall"]
                    else f"d_model {f['d_model']}, kept {f['sparsity_target']:g}")
            each = "" if f["overall"] else ", ".join(f"{r:.2f}" for r in f["ratios"]) + "; "
            spread = ("no ratio" if f["geomean_ratio"] is None else
                      f"{f['geomean_ratio']:.2f}× over {f['n_ratios']} of {f['n_runs']} runs "
                      f"({each}{f['min_ratio']:.2f}–{f['max_ratio']:.2f})")
            lines.append(f"  {name}: {spread}")
    return "\n".join(lines)
