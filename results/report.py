"""One self-contained HTML page of the store: frontier, runs, training curves, circuits.

Images are inlined (base64 PNG, inline SVG); the page loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from results.circuit_page import PAGES_DIR, render_circuit_page
from results.diagram import circuit_svg
from results.frontier import (
    MATCHED_TASKS_SQL,
    default_protocol,
    left_out,
    matched_families,
    matched_runs,
    protocol_tasks,
)
from results.plots import (
    curve_rows,
    figure_png,
    frontier_figure,
    frontier_rows,
    training_curves_figure,
)
from results.query import fetch
from results.store import StoreError

MAX_CIRCUITS = 200  # diagrams beyond this make the page unwieldy; the store has them all

RUNS_SQL = """
SELECT r.key, r.recipe, r.sparsity_target, r.n_layer, r.d_model, r.n_params, r.n_nonzero,
       r.tokens, r.heldout_loss, f.geomean_edges, f.pareto, r.wall_time_s, r.device,
       r.git_commit, r.git_dirty
FROM runs r LEFT JOIN (SELECT * FROM frontier WHERE protocol = ?) f ON f.run_key = r.key
ORDER BY r.heldout_loss NULLS LAST, r.key
"""
CIRCUITS_SQL = """
SELECT c.key, c.run_key, c.task, c.found, c.reason, c.n_nodes, c.n_edges, c.achieved_loss,
       c.loss_threshold, c.ablation, r.n_layer, c.control, c.prune_seed, c.not_distinguishable,
       coalesce((SELECT list({'kind': n.kind, 'layer': n.layer}) FROM circuit_nodes n
                 WHERE n.prune_key = c.key), []) AS nodes
FROM circuits c LEFT JOIN runs r ON r.key = c.run_key
ORDER BY c.run_key, c.task, c.key
LIMIT ?
"""

# Replicates and controls (results/replicates.py): model families with several seeds, the
# spread over pruning seeds, and what each control found.
FAMILIES_SQL = """
SELECT family, recipe, sparsity_target, d_model, n_seeds, seeds, heldout_loss,
       heldout_loss_min, heldout_loss_max, geomean_edges, ci_low, ci_high, n_not_distinguishable
FROM families WHERE protocol = ?
ORDER BY heldout_loss
"""
SPREAD_SQL = """
SELECT run_key, task, n_seeds, n_found, median_edges, min_edges, max_edges, iqr_edges,
       n_not_distinguishable
FROM circuit_spread WHERE control IS NULL AND n_seeds > 1
ORDER BY task, run_key
"""
CONTROLS_SQL = """
SELECT control, task, count(*) AS circuits, count(*) FILTER (found) AS found,
       min(n_edges) FILTER (found) AS min_edges
FROM circuits WHERE control IS NOT NULL
GROUP BY ALL ORDER BY control, task
"""


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("results", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = lambda v, spec=".4g": "—" if v is None else format(v, spec)
    return env


def report_context(workspace: Path) -> dict[str, Any]:
    protocol, frontier_png = "", None
    with contextlib.suppress(StoreError):  # no circuits yet, or no run with every task's circuit
        protocol = default_protocol(workspace)
        _, points = frontier_rows(workspace, protocol)
        frontier_png = _png_uri(figure_png(frontier_figure(protocol, points)))
    left = left_out(workspace, protocol)
    # One plot per task as well: a task whose dense circuits have 0 edges makes every geometric
    # mean 0, and a task only some models do leaves its runs out of the mean plot.
    task_frontiers = []
    for task in protocol_tasks(workspace, protocol) if protocol else []:
        with contextlib.suppress(StoreError):  # no model does the task
            _, points = frontier_rows(workspace, protocol, task)
            task_frontiers.append({"task": task, "runs": len(points), "png": _png_uri(
                figure_png(frontier_figure(protocol, points, task)))})
    curves = curve_rows(workspace, None, max_runs=10)
    circuits = fetch(workspace, CIRCUITS_SQL, [MAX_CIRCUITS]).to_pylist()
    for circuit in circuits:
        nodes = [(n["kind"], n["layer"]) for n in circuit["nodes"]]
        # Markup: circuit_svg escapes every text it embeds.
        circuit["svg"] = Markup(circuit_svg(
            nodes, circuit["n_layer"] or 1, circuit["n_edges"],
            f"{circuit['task']} · run {circuit['run_key'][:8]}"))
    counts = fetch(workspace, "SELECT (SELECT count(*) FROM runs) AS runs, "
                              "(SELECT count(*) FROM circuits) AS circuits, "
                              "(SELECT count(*) FILTER (not_distinguishable) FROM circuits) "
                              "AS not_distinguishable").to_pylist()[0]
    return {
        "workspace": str(workspace),
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "protocol": protocol,
        "protocols": fetch(workspace, "SELECT protocol, count(*) AS runs, "
                                      "count(*) FILTER (pareto) AS pareto FROM frontier "
                                      "GROUP BY protocol ORDER BY runs DESC").to_pylist(),
        "frontier_png": frontier_png,
        "left_out": left,
        "task_frontiers": task_frontiers,
        "matched": matched_runs(workspace, protocol) if protocol else [],
        "matched_families": matched_families(workspace, protocol) if protocol else [],
        "matched_tasks": (fetch(workspace, MATCHED_TASKS_SQL, [protocol]).to_pylist()
                          if protocol else []),
        "curves_png": _png_uri(figure_png(training_curves_figure(curves))) if curves else None,
        "runs": fetch(workspace, RUNS_SQL, [protocol]).to_pylist(),
        "circuits": circuits,
        "n_runs": counts["runs"],
        "n_circuits": counts["circuits"],
        "jobs": fetch(workspace, "SELECT state, count(*) AS n FROM jobs GROUP BY state "
                                 "ORDER BY state").to_pylist(),
        "failed": fetch(workspace, "SELECT name, error FROM jobs WHERE state IN "
                                   "('failed', 'invalid') ORDER BY name").to_pylist(),
        "max_circuits": MAX_CIRCUITS,
        "families": fetch(workspace, FAMILIES_SQL, [protocol]).to_pylist(),
        "spread": fetch(workspace, SPREAD_SQL).to_pylist(),
        "controls": fetch(workspace, CONTROLS_SQL).to_pylist(),
        "n_not_distinguishable": counts["not_distinguishable"],
    }


def link_circuit_pages(workspace: Path, circuits: list[dict[str, Any]], out_dir: Path) -> None:
    """Write each drawn circuit's explorer page under ``out_dir/circuits/`` and set its relative
    ``page`` link (None when nothing was kept, or its job folder is gone: the store outlives it)."""
    for circuit in circuits:
        circuit["page"] = None
        if not (circuit["found"] or circuit["nodes"]):
            continue
        name = f"prune-{circuit['key'][:12]}"
        try:
            render_circuit_page(workspace, [circuit["key"]], out_dir / PAGES_DIR / f"{name}.html")
        except StoreError:
            continue
        circuit["page"] = f"{PAGES_DIR}/{name}.html"


def render_report(workspace: Path, out_html: Path) -> Path:
    """Write the report of ``workspace``'s store to ``out_html`` (and the circuit pages it links,
    beside it in ``circuits/``) and return its path."""
    out_html = Path(out_html)
    context = report_context(workspace)
    link_circuit_pages(workspace, context["circuits"], out_html.parent)
    html = _environment().get_template("report.html.j2").render(**context)
    out_html.write_text(html, encoding="utf-8")
    return out_html
