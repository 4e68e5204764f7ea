"""Seeds and controls in the store: spread over pruning seeds, family intervals over model
seeds, and the not-distinguishable flag, all on hand-made job folders through a real ingest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from results import run_query, synthetic
from results.ingest import ingest
from results.query import fetch
from results.replicates import BOOTSTRAP_SEED, N_BOOTSTRAP, bootstrap_draws


def rows(workspace: Path, sql: str, params: list | None = None) -> list[dict]:
    return fetch(workspace, sql, params or []).to_pylist()


def test_spread_over_pruning_seeds_is_exact(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    train = synthetic.train_job(ws, sparsity_target=0.1, heldout_loss=2.0)
    for prune_seed, edges in enumerate([40, 10, 100, 20]):
        synthetic.prune_job(ws, train, "with_as", edges, prune_seed=prune_seed)
    # a k_coef sweep at seed 0: the smaller of its two circuits is seed 0's
    synthetic.prune_job(ws, train, "with_as", 30, prune_seed=0, k_coef=1e-3)
    synthetic.prune_job(ws, train, "with_as", 7, prune_seed=4, found=False)
    ingest(ws)
    (spread,) = rows(ws, "SELECT * FROM circuit_spread")
    # seeds 0..3 found 30, 10, 100, 20 edges; seed 4 found none
    assert spread["n_seeds"] == 5 and spread["n_found"] == 4
    assert spread["prune_seeds"] == [0, 1, 2, 3, 4]
    assert spread["median_edges"] == 25.0
    assert (spread["min_edges"], spread["max_edges"]) == (10, 100)
    assert (spread["q1_edges"], spread["q3_edges"]) == (17.5, 47.5)
    assert spread["iqr_edges"] == 30.0
    # the frontier takes the median over seeds too
    (point,) = rows(ws, "SELECT geomean_edges, n_not_found FROM frontier")
    assert point["geomean_edges"] == pytest.approx(25.0) and point["n_not_found"] == 0


def family_workspace(ws: Path, edges_by_seed: dict[int, tuple[int, int]]) -> None:
    for seed, (a, b) in edges_by_seed.items():
        train = synthetic.train_job(ws, sparsity_target=0.1, heldout_loss=2.0 + seed / 10,
                                    seed=seed)
        synthetic.prune_job(ws, train, "with_as", a)
        synthetic.prune_job(ws, train, "while_return_true", b)
    ingest(ws)


EDGES = {0: (100, 400), 1: (50, 50), 2: (300, 1200), 3: (80, 20)}


def test_family_geomean_and_bootstrap_interval(tmp_path: Path) -> None:
    family_workspace(tmp_path / "ws", EDGES)
    other = synthetic.train_job(tmp_path / "ws", sparsity_target=0.2, heldout_loss=1.9)
    synthetic.prune_job(tmp_path / "ws", other, "with_as", 70)
    synthetic.prune_job(tmp_path / "ws", other, "while_return_true", 70)
    ingest(tmp_path / "ws")
    fams = rows(tmp_path / "ws", "SELECT * FROM families ORDER BY sparsity_target")
    assert [f["n_seeds"] for f in fams] == [4, 1]
    family = fams[0]
    per_run = [math.sqrt(a * b) for a, b in EDGES.values()]  # 200, 50, 600, 40
    assert family["seeds"] == [0, 1, 2, 3]
    assert family["geomean_edges"] == pytest.approx(math.exp(np.mean(np.log(per_run))))
    assert family["heldout_loss"] == pytest.approx(2.15)
    assert (family["heldout_loss_min"], family["heldout_loss_max"]) == (2.0, 2.3)
    # the interval is the percentile bootstrap over model seeds with the stored draws
    u = bootstrap_draws(BOOTSTRAP_SEED)["u"].to_numpy().reshape(N_BOOTSTRAP, -1)[:, :4]
    picks = np.floor(u * 4).astype(int)
    resampled = np.exp(np.log(np.array(per_run))[picks].mean(axis=1))
    low, high = np.quantile(resampled, [0.025, 0.975])
    assert family["ci_low"] == pytest.approx(low) and family["ci_high"] == pytest.approx(high)
    assert family["ci_low"] < family["geomean_edges"] < family["ci_high"]
    assert min(per_run) <= family["ci_low"] and family["ci_high"] <= max(per_run)
    assert fams[1]["ci_low"] is None  # one seed: no interval


def test_bootstrap_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    for name in ("a", "b"):
        family_workspace(tmp_path / name, EDGES)
    sql = "SELECT ci_low, ci_high FROM families"
    assert rows(tmp_path / "a", sql) == rows(tmp_path / "b", sql)
    assert bootstrap_draws(1).equals(bootstrap_draws(1))
    assert not bootstrap_draws(1).equals(bootstrap_draws(2))


def test_a_control_that_reaches_the_threshold_small_flags_the_circuit(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    real = synthetic.train_job(ws, sparsity_target=0.1, heldout_loss=2.0, seed=0)
    for task in ("with_as", "while_return_true", "var_swap"):
        synthetic.prune_job(ws, real, task, 100)
    ingest(ws)
    assert rows(ws, "SELECT count(*) FILTER (not_distinguishable) AS n FROM circuits") == [
        {"n": 0}]
    # with_as: the shuffled task reaches the threshold with 150 edges (<= 2 x 100): flagged.
    synthetic.prune_job(ws, real, "with_as", 150, control="shuffled_task")
    # while_return_true: shuffled needs 250 (> 2x), but the untrained twin (same family and
    # seed) finds 30: flagged.
    synthetic.prune_job(ws, real, "while_return_true", 250, control="shuffled_task")
    untrained = synthetic.train_job(ws, sparsity_target=0.1, heldout_loss=6.9, seed=0,
                                    control="random_init")
    synthetic.prune_job(ws, untrained, "while_return_true", 30, control="random_init")
    # var_swap: an untrained model of another seed, and a control that was not found: kept.
    other_seed = synthetic.train_job(ws, sparsity_target=0.1, heldout_loss=6.9, seed=1,
                                     control="random_init")
    synthetic.prune_job(ws, other_seed, "var_swap", 10, control="random_init")
    synthetic.prune_job(ws, real, "var_swap", 10, control="shuffled_task", found=False)
    ingest(ws)
    flags = rows(ws, "SELECT task, control, not_distinguishable AS flag FROM circuits "
                     "ORDER BY control NULLS FIRST, task, n_edges")
    assert [(f["task"], f["flag"]) for f in flags if f["control"] is None] == [
        ("var_swap", False), ("while_return_true", True), ("with_as", True)]
    assert all(f["flag"] is None for f in flags if f["control"] is not None)
    # the frontier leaves them out of the geometric mean and counts them; controls are no runs
    (point,) = rows(ws, "SELECT run_key, tasks, geomean_edges, n_not_distinguishable, "
                        "n_not_found, control FROM frontier")
    assert point["tasks"] == ["var_swap", "while_return_true", "with_as"]  # the protocol
    assert point["geomean_edges"] == pytest.approx(100)  # over the distinguishable one
    assert (point["n_not_distinguishable"], point["n_not_found"]) == (2, 0)
    assert rows(ws, "SELECT control, count(*) AS n FROM runs GROUP BY ALL ORDER BY ALL") == [
        {"control": "random_init", "n": 2}, {"control": None, "n": 1}]
    # re-ingesting changes nothing
    before = run_query(ws, "SELECT * FROM circuits ORDER BY key", "csv")
    ingest(ws)
    assert run_query(ws, "SELECT * FROM circuits ORDER BY key", "csv") == before


def test_frontier_plot_draws_a_family_interval_and_the_report_shows_it(tmp_path: Path) -> None:
    from matplotlib.container import ErrorbarContainer

    from results.plots import frontier_figure, frontier_rows
    from results.report import render_report

    ws = tmp_path / "ws"
    family_workspace(ws, EDGES)
    synthetic.prune_job(ws, synthetic.train_job(ws, sparsity_target=0.1, heldout_loss=2.0),
                        "with_as", 60, control="shuffled_task")  # flags seed 0's with_as
    ingest(ws)
    protocol, points = frontier_rows(ws)
    ax = frontier_figure(protocol, points).axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (family,) = rows(ws, "SELECT * FROM families WHERE protocol = ?", [protocol])
    x_segment = bars.lines[2][0].get_segments()[0]
    assert [x for x, _ in x_segment] == pytest.approx([family["ci_low"], family["ci_high"]])
    html = render_report(ws, tmp_path / "report.html").read_text()
    assert 'id="families-table"' in html and 'id="controls-table"' in html
    assert "not distinguishable from its controls" in html
