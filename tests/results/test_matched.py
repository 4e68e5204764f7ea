"""The `matched` view: sparse circuits against the dense family's at the same pretraining loss,
interpolated in log space between the bracketing dense runs, never extrapolated."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from results import synthetic
from results.ingest import ingest
from results.query import fetch


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    # The dense family: loss 2.0 → (400, 90) edges, loss 1.0 → (1600, 10) edges.
    for loss, (a, b), d_model in ((2.0, (400, 90), 16), (1.0, (1600, 10), 64)):
        dense = synthetic.train_job(ws, sparsity_target=1.0, heldout_loss=loss, d_model=d_model)
        synthetic.prune_job(ws, dense, "with_as", a)
        synthetic.prune_job(ws, dense, "var_swap", b)
    # Sparse runs: inside the family's range, at a dense run's loss, and outside it.
    for loss, (a, b), d_model in ((1.5, (100, 3), 128), (1.0, (200, 5), 256), (0.8, (50, 1), 512)):
        sparse = synthetic.train_job(ws, sparsity_target=0.05, heldout_loss=loss, d_model=d_model)
        synthetic.prune_job(ws, sparse, "with_as", a)
        synthetic.prune_job(ws, sparse, "var_swap", b)
    ingest(ws)
    return ws


def test_dense_size_is_interpolated_in_log_space_at_the_sparse_loss(workspace: Path) -> None:
    got = {(r["d_model"], r["task"]): r for r in fetch(
        workspace, "SELECT * FROM matched ORDER BY d_model, task").to_pylist()}
    inside = got[(128, "with_as")]
    # halfway between losses 2.0 and 1.0: the geometric mean of 400 and 1600
    assert inside["dense_edges"] == pytest.approx(800)
    assert inside["ratio"] == pytest.approx(8)
    assert (inside["dense_loss_below"], inside["dense_loss_above"]) == (1.0, 2.0)
    assert got[(128, "var_swap")]["dense_edges"] == pytest.approx(30)  # √(90·10)
    assert inside["geomean_ratio"] == pytest.approx(math.sqrt(8 * 10))
    assert (inside["n_matched"], inside["n_tasks"]) == (2, 2)
    # exactly at a dense run's loss: that run's size
    assert got[(256, "with_as")]["dense_edges"] == pytest.approx(1600)
    assert got[(256, "var_swap")]["ratio"] == pytest.approx(2)


def test_a_sparse_run_outside_the_dense_range_gets_no_ratio(workspace: Path) -> None:
    outside = fetch(workspace, "SELECT * FROM matched WHERE d_model = 512").to_pylist()
    assert len(outside) == 2
    assert all(r["dense_edges"] is None and r["ratio"] is None for r in outside)
    assert all(r["geomean_ratio"] is None and r["n_matched"] == 0 for r in outside)
    # and dense runs are the family, not rows of their own
    dense_rows = fetch(workspace, "SELECT count(*) AS n FROM matched WHERE sparsity_target >= 1")
    assert dense_rows.to_pylist() == [{"n": 0}]


def test_frontier_names_each_sparse_runs_matched_ratio(workspace: Path) -> None:
    from results.frontier import describe_matched, matched_runs

    protocol = "mean@0.15:var_swap,with_as"
    runs = matched_runs(workspace, protocol)
    assert [r["d_model"] for r in runs] == [512, 256, 128]  # by loss
    text = describe_matched(runs)
    assert f"{math.sqrt(80):.2f}× smaller over 2/2 tasks" in text
    assert "no ratio (no dense runs that do the task bracket its loss" in text


def test_the_report_shows_the_matched_ratio(workspace: Path) -> None:
    from results.report import report_context

    context = report_context(workspace)
    assert {r["d_model"]: r["n_matched"] for r in context["matched"]} == {512: 0, 256: 2, 128: 2}


def test_only_circuits_of_a_task_the_model_does_are_compared(tmp_path: Path) -> None:
    # A dense run that misses the threshold on a task (full-model loss 0.6 > 0.15) is not in
    # the family for that task, though calibration found it a tiny circuit; without it the
    # sparse run has no bracket below. A sparse run that misses it gets no ratio either.
    ws = tmp_path / "ws"
    for loss, edges, full in ((2.0, 400, 0.05), (1.5, 4, 0.6), (1.0, 1600, 0.05)):
        dense = synthetic.train_job(ws, sparsity_target=1.0, heldout_loss=loss,
                                    d_model=int(64 / loss))
        synthetic.prune_job(ws, dense, "with_as", edges, full_model_loss=full)
    for d_model, full in ((128, 0.05), (256, 0.6)):
        sparse = synthetic.train_job(ws, sparsity_target=0.05, heldout_loss=1.25, d_model=d_model)
        synthetic.prune_job(ws, sparse, "with_as", 10, full_model_loss=full)
    ingest(ws)
    got = {r["d_model"]: r for r in fetch(ws, "SELECT * FROM matched").to_pylist()}
    assert got[128]["model_solves"] and got[128]["dense_loss_below"] == 1.0
    assert got[128]["dense_loss_above"] == 2.0  # 1.5 is skipped: its model misses the task
    # a quarter of the way from loss 1.0 to 2.0 in log space: 1600 · (400/1600)^¼ = 1131
    assert got[128]["ratio"] == pytest.approx(1600 * 0.25 ** 0.25 / 10)
    assert not got[256]["model_solves"]
    assert got[256]["sparse_edges"] is None and got[256]["ratio"] is None
    assert (got[256]["n_matched"], got[256]["n_tasks"]) == (0, 1)


def test_a_dense_width_is_one_point_over_its_seeds(tmp_path: Path) -> None:
    # Two seeds per dense width: the family point is their mean loss and geometric-mean size,
    # so the nearest seed's luck does not decide the bracket.
    ws = tmp_path / "ws"
    for d_model, runs in ((16, ((2.1, 100), (1.9, 400))), (64, ((1.1, 10), (0.9, 40)))):
        for seed, (loss, edges) in enumerate(runs):
            dense = synthetic.train_job(ws, sparsity_target=1.0, heldout_loss=loss,
                                        d_model=d_model, seed=seed)
            synthetic.prune_job(ws, dense, "with_as", edges)
    sparse = synthetic.train_job(ws, sparsity_target=0.05, heldout_loss=1.5, d_model=128)
    synthetic.prune_job(ws, sparse, "with_as", 2)
    ingest(ws)
    [row] = fetch(ws, "SELECT * FROM matched").to_pylist()
    assert (row["dense_loss_below"], row["dense_loss_above"]) == pytest.approx((1.0, 2.0))
    assert (row["n_dense"], row["n_dense_runs"]) == (2, 4)
    # halfway between the points √(10·40) = 20 and √(100·400) = 200, in log space: √(20·200)
    assert row["dense_edges"] == pytest.approx(math.sqrt(20 * 200))
    assert row["ratio"] == pytest.approx(math.sqrt(20 * 200) / 2)


@pytest.fixture
def seeded_workspace(tmp_path: Path) -> Path:
    # Dense family: loss 2.0 → 400 edges, 1.0 → 1600. Two sparse families of two seeds each,
    # both at loss 1.0 (dense size 1600): ratios 16 and 4 (d128), 8 and 2 (d256).
    ws = tmp_path / "ws"
    for loss, edges, d_model in ((2.0, 400, 16), (1.0, 1600, 64)):
        dense = synthetic.train_job(ws, sparsity_target=1.0, heldout_loss=loss, d_model=d_model)
        synthetic.prune_job(ws, dense, "with_as", edges)
    for d_model, sizes in ((128, (100, 400)), (256, (200, 800))):
        for seed, edges in enumerate(sizes):
            sparse = synthetic.train_job(ws, sparsity_target=0.05, heldout_loss=1.0,
                                         d_model=d_model, seed=seed)
            synthetic.prune_job(ws, sparse, "with_as", edges)
    ingest(ws)
    return ws


def test_frontier_gives_each_sparse_familys_spread_over_seeds(seeded_workspace: Path) -> None:
    from results.frontier import describe_matched, matched_families, matched_runs

    ws, protocol = seeded_workspace, "mean@0.15:with_as"
    families = matched_families(ws, protocol)
    assert [(f["d_model"], f["overall"], f["n_runs"]) for f in families[:2]] == [
        (128, False, 2), (256, False, 2)]
    assert [f["ratios"] for f in families[:2]] == [pytest.approx([16, 4]), pytest.approx([8, 2])]
    assert [f["geomean_ratio"] for f in families[:2]] == [pytest.approx(8), pytest.approx(4)]
    overall = families[2]
    assert overall["overall"] and overall["n_ratios"] == 4
    assert overall["geomean_ratio"] == pytest.approx((16 * 4 * 8 * 2) ** 0.25)
    assert (overall["min_ratio"], overall["max_ratio"]) == pytest.approx((2, 16))
    one_task = matched_families(ws, protocol, "with_as")  # one task: the same ratios
    assert [f["ratios"] for f in one_task] == [pytest.approx(f["ratios"]) for f in families]
    text = describe_matched(matched_runs(ws, protocol), None, families)
    assert "d_model 128, kept 0.05: 8.00× over 2 of 2 runs (16.00, 4.00; 4.00–16.00)" in text
    assert f"all sparse runs: {(16 * 4 * 8 * 2) ** 0.25:.2f}× over 4 of 4 runs (2.00–16.00)" in text


def test_a_family_with_no_ratio_in_any_seed_says_so(seeded_workspace: Path,
                                                     tmp_path: Path) -> None:
    from results.frontier import describe_matched, matched_families, matched_runs
    from results.report import render_report

    # two seeds of a sparse d512 below every dense run's loss: no bracket, no ratio, in either
    for seed in (0, 1):
        outside = synthetic.train_job(seeded_workspace, sparsity_target=0.05, heldout_loss=0.5,
                                      d_model=512, seed=seed)
        synthetic.prune_job(seeded_workspace, outside, "with_as", 10)
    ingest(seeded_workspace)
    ws, protocol = seeded_workspace, "mean@0.15:with_as"
    families = matched_families(ws, protocol)
    [family] = [f for f in families if f["d_model"] == 512 and not f["overall"]]
    assert (family["n_runs"], family["n_ratios"], family["ratios"]) == (2, 0, [])
    text = describe_matched(matched_runs(ws, protocol), None, families)
    assert "d_model 512, kept 0.05: no ratio" in text
    assert "all sparse runs: 5.66× over 4 of 6 runs (2.00–16.00)" in text
    html = render_report(ws, tmp_path / "report.html").read_text()
    table = html.split('<table id="matched-families">')[1].split("</table>")[0]
    assert "<td>512</td><td>0.05</td>\n  <td>0 / 2</td>" in table


def test_the_report_shows_the_spread_over_seeds(seeded_workspace: Path, tmp_path: Path) -> None:
    from results.report import render_report

    html = render_report(seeded_workspace, tmp_path / "report.html").read_text()
    table = html.split('<table id="matched-families">')[1].split("</table>")[0]
    assert "16.0, 4.0" in table and "8.0, 2.0" in table and "all sparse runs" in table
    assert "2.00–16.00" in table
