"""Figures from the store: the interpretability-vs-loss frontier and training curves (PNG).

The frontier follows method §5: pretraining loss (capability) against the geometric mean of
circuit edges over tasks (interpretability), edges on a log axis; lower-left is better.
"""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows

import matplotlib.pyplot as plt
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from results.frontier import check_task, default_protocol
from results.query import fetch
from results.store import StoreError, pareto_flag, pareto_windows

LABEL_ALL_UP_TO = 30  # with more points, label only the Pareto ones
CURVE_POINTS = 500  # per run: a million metric rows need not become a million line vertices
CMAP = "viridis"
FRONT_COLOUR = "crimson"


def frontier_rows(workspace: Path, protocol: str | None = None,
                  task: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The plotted rows of one protocol: the one given, else the one with most complete runs.

    A row's ``edges`` is the run's geometric mean over the protocol's tasks (only runs with a
    circuit for every task have one), or with ``task`` that task's circuit, for the runs whose
    model does the task (full-model loss within the threshold, as ``matched`` counts them). The
    runs left out are named by ``results.frontier.left_out``.
    """
    if protocol is None:
        protocol = default_protocol(workspace)
    if task is None:
        rows = fetch(workspace, FRONTIER_ROWS_SQL, [protocol]).to_pylist()
        if not rows:
            raise StoreError(f"no run of protocol {protocol!r} has a circuit for every task")
        return protocol, rows
    check_task(workspace, protocol, task)
    rows = fetch(workspace, TASK_ROWS_SQL, [protocol, task]).to_pylist()
    if not rows:
        raise StoreError(f"no run of protocol {protocol!r} has a {task} circuit of a model "
                         "that does the task")
    return protocol, _with_task_families(rows)


# Each run with its family's replicate summary (results/replicates.py), for the error bars.
FRONTIER_ROWS_SQL = """
SELECT f.*, f.geomean_edges AS edges, m.n_seeds AS family_seeds, m.geomean_edges AS family_edges,
       m.ci_low AS family_ci_low, m.ci_high AS family_ci_high,
       m.heldout_loss AS family_loss, m.heldout_loss_min AS family_loss_min,
       m.heldout_loss_max AS family_loss_max
FROM frontier f LEFT JOIN families m USING (family, protocol)
WHERE f.protocol = ? AND f.geomean_edges IS NOT NULL
ORDER BY f.geomean_edges, f.heldout_loss
"""
# One task's circuits (task_edges: the smallest per pruning seed, the median over seeds), of the
# runs whose model does the task; the Pareto flags and families are the task's own.
TASK_ROWS_SQL = """
WITH task_rows AS (
    SELECT f.* EXCLUDE (pareto), t.n_edges::DOUBLE AS edges
    FROM frontier f JOIN task_edges t USING (run_key, protocol)
    WHERE f.protocol = ? AND t.task = ? AND t.model_solves AND t.n_edges IS NOT NULL
), ranked AS (
    SELECT *, """ + pareto_windows("edges") + """
    FROM task_rows
)
SELECT * EXCLUDE (m_lt, m_le), """ + pareto_flag("edges") + """
FROM ranked
ORDER BY edges, heldout_loss
"""
# What a family's bar spans on a one-task plot: the seeds' smallest and largest circuit.
TASK_FAMILY_BAR = "family over seeds: edge range, loss range"
FAMILY_BAR = "family over seeds: 95 % CI (edges), loss range"


def _with_task_families(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its family's seeds on this task: geometric-mean edges, their range, and
    the mean and range of the losses (too few seeds for a bootstrap to mean much per task)."""
    families: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        families.setdefault(row["family"], []).append(row)
    for seeds in families.values():
        edges = [max(r["edges"], 1.0) for r in seeds]
        losses = [r["heldout_loss"] for r in seeds]
        summary = {"family_seeds": len(seeds),
                   "family_edges": math.exp(sum(map(math.log, edges)) / len(edges)),
                   "family_ci_low": min(edges), "family_ci_high": max(edges),
                   "family_loss": sum(losses) / len(losses),
                   "family_loss_min": min(losses), "family_loss_max": max(losses)}
        for row in seeds:
            row.update(summary)
    return rows


# Sparse families of different L0 must stay apart in the legend: colour and dash both differ.
SPARSE_FAMILY_STYLES = [("tab:blue", "-"), ("tab:orange", "-."), ("tab:green", ":"),
                        ("tab:purple", (0, (5, 1)))]


def _params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _family_lines(ax: Any, rows: list[dict[str, Any]], edges: list[float],
                  loss: list[float]) -> list[Line2D]:
    """The dense runs joined in order of loss, and the sparse runs of each L0 (nonzero weights,
    to a factor of 1.5) likewise: the two families the matched comparison sets side by side."""
    groups: dict[int | None, list[int]] = {}  # None: dense; else round(log_1.5 L0)
    for i, r in enumerate(rows):
        key = None if r["dense"] else round(math.log(max(r["n_nonzero"], 1), 1.5))
        groups.setdefault(key, []).append(i)
    handles = []
    sparse_styles = itertools.cycle(SPARSE_FAMILY_STYLES)  # one look per L0, in L0 order
    for key, idx in sorted(groups.items(), key=lambda item: item[0] or -1):
        idx.sort(key=lambda i: loss[i])
        color, ls = ("0.45", "--") if key is None else next(sparse_styles)
        ax.plot([edges[i] for i in idx], [loss[i] for i in idx], lw=1.2, zorder=1, color=color,
                ls=ls)
        params = sorted(rows[i]["n_params"] for i in idx)
        label = f"{_span(_params(params[0]), _params(params[-1]))} params"
        if key is None:
            label = f"dense: {label}"
        else:
            kept = sorted(rows[i]["sparsity_target"] for i in idx)
            label = (f"sparse, L0 ≈ {_params(rows[idx[0]]['n_nonzero'])}: {label}, "
                     f"kept {_span(f'{kept[-1]:g}', f'{kept[0]:g}')}")
        handles.append(Line2D([], [], lw=1.2, label=label, color=color, ls=ls))
    return handles


def _span(low: str, high: str) -> str:
    return low if low == high else f"{low}–{high}"


def _family_error_bars(ax: Any, rows: list[dict[str, Any]], label: str) -> list[Line2D]:
    """One bar per model family with several seeds: the spread of its edges across (the
    bootstrap 95 % CI of the geometric mean; on a one-task plot the seeds' range), the range of
    its held-out losses up and down, at (geometric-mean edges, mean loss)."""
    families = {r["family"]: r for r in rows if (r.get("family_seeds") or 0) >= 2
                and r["family_ci_low"] is not None}
    def reach(a: float, b: float) -> float:  # seeds of one size: exp(mean(log)) misses by ulps
        return max(a - b, 0.0)

    for r in families.values():
        x = max(r["family_edges"], 1.0)
        ax.errorbar(x, r["family_loss"],
                    xerr=[[reach(x, max(r["family_ci_low"], 1.0))],
                          [reach(max(r["family_ci_high"], 1.0), x)]],
                    yerr=[[reach(r["family_loss"], r["family_loss_min"])],
                          [reach(r["family_loss_max"], r["family_loss"])]],
                    fmt="D", ms=5, color="0.15", mfc="white", capsize=3, lw=1, zorder=4)
    if not families:
        return []
    return [Line2D([], [], marker="D", ls="-", color="0.15", mfc="white",
                   label=label)]


def _target_norm(targets: list[float]) -> Normalize:
    low, high = min(targets), max(targets)
    if low <= 0 or low == high:
        return Normalize(vmin=low - 1e-9, vmax=high + 1e-9)
    return LogNorm(vmin=low, vmax=high)


def frontier_figure(protocol: str, rows: list[dict[str, Any]], task: str | None = None) -> Figure:
    """The frontier of ``rows`` (``frontier_rows``): of the geometric mean over tasks, or of
    ``task``'s circuits."""
    fig, ax = plt.subplots(figsize=(8, 6.5), layout="constrained")
    # A zero-edge circuit cannot sit on a log axis; it is drawn at 1 edge (and says so).
    edges = [max(r["edges"], 1.0) for r in rows]
    loss = [r["heldout_loss"] for r in rows]
    targets = [r["sparsity_target"] for r in rows]
    norm = _target_norm(targets)
    for dense, marker in ((True, "s"), (False, "o")):
        idx = [i for i, r in enumerate(rows) if bool(r["dense"]) == dense]
        if idx:
            scatter = ax.scatter([edges[i] for i in idx], [loss[i] for i in idx],
                                 c=[targets[i] for i in idx], cmap=CMAP, norm=norm, s=64,
                                 marker=marker, edgecolors="black", linewidths=0.7, zorder=3)
    # Line and ring markers: a front of one point (one run, or one that dominates all) is still
    # drawn, as the legend promises.
    front = sorted((edges[i], loss[i]) for i, r in enumerate(rows) if r["pareto"])
    ax.plot(*zip(*front, strict=True), drawstyle="steps-post", color=FRONT_COLOUR, lw=1.5,
            marker="o", ms=13, mfc="none", mew=1.5, zorder=2)
    label_all = len(rows) <= LABEL_ALL_UP_TO
    # Runs of one width trained on different token counts would carry the same label. (A store
    # ingested before the view had `tokens` has none until its next ingest.)
    name_tokens = len({r.get("tokens") for r in rows}) > 1
    for i, r in enumerate(rows):
        if label_all or r["pareto"]:
            ax.annotate(_point_label(r, name_tokens), (edges[i], loss[i]),
                        textcoords="offset points",
                        xytext=(6, 4), fontsize=7, color="0.25")
    ax.set_xscale("log")
    # Plain numbers at 1-2-5 steps read better than 3×10² labels that collide.
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.12, y=0.08)  # room for the point labels inside the axes
    ax.set_xlabel("circuit size: geometric mean of edges over tasks (log)" if task is None
                  else f"circuit size: edges of the {task} circuit (log; 0 drawn at 1)")
    ax.set_ylabel("held-out pretraining loss (nats/token)")
    subject = "" if task is None else f", {task} (models that do it)"
    ax.set_title(f"Interpretability vs capability — {len(rows)} runs{subject}\n{protocol}",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.annotate("better", xy=(0.03, 0.04), xytext=(0.13, 0.14), xycoords="axes fraction",
                arrowprops={"arrowstyle": "->", "color": "0.4"}, color="0.4", fontsize=8)
    handles = [
        Line2D([], [], marker="s", ls="", mfc="white", mec="black", label="dense (target 1.0)"),
        Line2D([], [], marker="o", ls="", mfc="white", mec="black", label="weight-sparse"),
        Line2D([], [], color=FRONT_COLOUR, marker="o", ms=9, mfc="none", label="Pareto front"),
        *_family_error_bars(ax, rows, FAMILY_BAR if task is None else TASK_FAMILY_BAR),
        *_family_lines(ax, rows, edges, loss),
    ]
    # Below the axes: with several families a legend inside covers points wherever it goes.
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
    # Narrow and not full height: the bar is a key, not a second panel.
    colorbar = fig.colorbar(scatter, ax=ax, pad=0.01, fraction=0.04, aspect=30, shrink=0.8,
                            label="kept fraction (log)" if isinstance(norm, LogNorm)
                            else "kept fraction")
    colorbar.ax.yaxis.set_minor_formatter(NullFormatter())
    ticks = _spaced_ticks(sorted(set(targets), reverse=True), norm)
    colorbar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    return fig


def _spaced_ticks(targets: list[float], norm: Normalize, gap: float = 0.05) -> list[float]:
    """The kept fractions to label on the colour bar, from the top down, skipping any closer
    than ``gap`` of the bar to the last one labelled (0.2 beside 0.22 would print over it)."""
    ticks: list[float] = []
    for target in targets:
        if not ticks or abs(float(norm(ticks[-1])) - float(norm(target))) >= gap:
            ticks.append(target)
    return ticks[:12]


def _point_label(row: dict[str, Any], name_tokens: bool) -> str:
    label = f"{row['run_key'][:6]} d{row['d_model']} k={row['sparsity_target']:g}"
    if name_tokens and row.get("tokens") is not None:
        label += f" {row['tokens'] / 1e6:.3g}M tok"
    return label


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def plot_frontier(workspace: Path, out_png: Path, protocol: str | None = None,
                  task: str | None = None) -> Path:
    """Write the frontier of ``protocol`` (default: the one with most runs), over all its tasks
    or of ``task`` alone, to ``out_png``."""
    out_png = Path(out_png)
    chosen, rows = frontier_rows(workspace, protocol, task)
    out_png.write_bytes(figure_png(frontier_figure(chosen, rows, task)))
    return out_png


def curve_rows(workspace: Path, run_keys: list[str] | None, max_runs: int) -> list[dict[str, Any]]:
    """Metric rows thinned to about ``CURVE_POINTS`` per run; evaluation steps always kept."""
    if run_keys is None:
        keys = fetch(workspace, "SELECT key FROM runs ORDER BY sparsity_target DESC, key "
                                "LIMIT ?", [max_runs])
        run_keys = keys["key"].to_pylist()
    return fetch(workspace, """
        SELECT m.run_key, m.step, m.tokens, m.loss, m.heldout_loss, m.kept_fraction,
               r.sparsity_target
        FROM (SELECT *, row_number() OVER (PARTITION BY run_key ORDER BY step) AS rn,
                     count(*) OVER (PARTITION BY run_key) AS n
              FROM train_metrics WHERE list_contains(?, run_key)) m
        JOIN runs r ON r.key = m.run_key
        WHERE m.rn % greatest(1, m.n // ?) = 0 OR m.heldout_loss IS NOT NULL OR m.rn = m.n
        ORDER BY m.run_key, m.step
    """, [run_keys, CURVE_POINTS]).to_pylist()


def training_curves_figure(rows: list[dict[str, Any]]) -> Figure:
    fig, (ax_loss, ax_kept) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                           height_ratios=(3, 1.3), layout="constrained")
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        runs.setdefault(row["run_key"], []).append(row)
    colours = plt.get_cmap("tab10")
    for i, (key, points) in enumerate(runs.items()):
        colour = colours(i % 10)
        x = [p["tokens"] if p["tokens"] is not None else p["step"] for p in points]
        label = f"{key[:6]} target {points[0]['sparsity_target']:g}"
        ax_loss.plot(x, [p["loss"] for p in points], color=colour, lw=1, alpha=0.8, label=label)
        held = [(xi, p["heldout_loss"])
                for xi, p in zip(x, points, strict=True) if p["heldout_loss"] is not None]
        if held:
            ax_loss.plot(*zip(*held, strict=True), "o", color=colour, ms=3)
        ax_kept.plot(x, [p["kept_fraction"] for p in points], color=colour, lw=1)
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.set_title("Training curves — lines: train loss, dots: held-out loss", fontsize=10)
    ax_loss.grid(True, alpha=0.25)
    if runs:
        ax_loss.legend(fontsize=7, ncols=2)
    ax_kept.set_ylabel("kept fraction")
    ax_kept.set_yscale("log")
    ax_kept.set_xlabel("tokens")
    ax_kept.grid(True, which="both", alpha=0.25)
    return fig


def plot_training_curves(
    workspace: Path, out_png: Path, run_keys: list[str] | None = None, max_runs: int = 10
) -> Path:
    """Loss and kept fraction against tokens for ``run_keys`` (default: up to ``max_runs``)."""
    out_png = Path(out_png)
    rows = curve_rows(workspace, run_keys, max_runs)
    if not rows:
        raise StoreError("no training metrics in the store yet")
    out_png.write_bytes(figure_png(training_curves_figure(rows)))
    return out_png
