"""Discretisation without the naive version's assumptions: ties, non-monotone loss in k, greedy
dropping (runtime/pruning/discretise.py)."""

from __future__ import annotations

import torch

from runtime.pruning.discretise import (
    Losses,
    count_ties,
    greedy_drop,
    k_grid,
    prefix_masks,
    rank_nodes,
    search_k,
)


def by_prefix(table: dict[int, float], default: float) -> Losses:
    """A ``losses`` function whose loss depends only on how many nodes a mask keeps."""
    return lambda masks: [table.get(int(m.sum()), default) for m in masks]


def recording(losses: Losses, asked: list[int]) -> Losses:
    """``losses`` that also notes the size of every prefix it is asked about."""
    def record(masks: torch.Tensor) -> list[float]:
        asked.extend(int(m.sum()) for m in masks)
        return losses(masks)
    return record


def test_ties_in_tau_are_broken_by_attribution_then_node_order() -> None:
    tau = torch.tensor([1.0, 1.0, 1.0, 0.3, -1.0])
    attribution = torch.tensor([0.1, 0.5, 0.1, 9.0, 0.0])
    assert rank_nodes(tau, attribution).tolist() == [1, 0, 2, 3, 4]
    assert count_ties(tau) == 3
    assert count_ties(torch.tensor([0.5, 0.2, -1.0, -1.0])) == 0  # ties among off nodes: none


def test_prefix_masks_keep_the_first_k_of_the_order() -> None:
    order = torch.tensor([2, 0, 1])
    assert prefix_masks(order, [0, 1, 3]).tolist() == [
        [False, False, False], [False, False, True], [True, True, True]]


def test_search_finds_the_smallest_passing_k_when_the_loss_is_not_monotone() -> None:
    # The quickstart's shape of failure: a middle-sized circuit passes, all nodes do not
    # (1.7 → 0.05 by k = 700, then back up to 0.19 at k = n). Smallest passing k: 639.
    n = 1000
    table = {k: max(0.05, 1.7 * (1 - k / 700)) for k in range(801)}
    table |= {k: 0.05 + 0.14 * (k - 800) / 200 for k in range(801, n + 1)}
    result = search_k(torch.arange(n), by_prefix(table, 1.0), threshold=0.15)
    assert int(result.kept.sum()) == 639
    assert result.loss <= 0.15
    assert result.n_evaluations < 80  # 17 grid, 16 around the best, the bracket below


def test_search_asks_for_real_losses_only_where_it_picks_among_failures() -> None:
    # Losses that answer inf for every failing prefix find the same circuit as the real ones:
    # the window between grid points is found through the exact losses of the grid.
    n = 1000
    table = {k: 0.3 + abs(k - 450) / 1000 if abs(k - 450) > 20 else 0.1 for k in range(n + 1)}
    real = by_prefix(table, 1.0)
    asked: list[int] = []

    def screened(masks: torch.Tensor) -> list[float]:
        return [loss if loss <= 0.15 else float("inf") for loss in real(masks)]

    reference = search_k(torch.arange(n), real, threshold=0.15)
    result = search_k(torch.arange(n), screened, threshold=0.15, exact=recording(real, asked))
    assert int(reference.kept.sum()) == int(result.kept.sum()) == 430
    assert result.loss == reference.loss
    assert sorted(asked) == k_grid(n)  # once, for the grid, to find its best point


def test_search_in_ascending_k_stops_at_the_first_passing_grid_point() -> None:
    # Without speculation (a CPU) the grid's larger circuits, the dearest to judge, are never
    # asked about: the same circuit from fewer evaluations.
    n = 1000
    table = {k: 0.1 if k >= 45 else 0.9 for k in range(n + 1)}
    asked: list[int] = []
    ascending = search_k(torch.arange(n), recording(by_prefix(table, 1.0), asked),
                         threshold=0.15, speculate=False)
    whole_grid = search_k(torch.arange(n), by_prefix(table, 1.0), threshold=0.15)
    assert int(ascending.kept.sum()) == int(whole_grid.kept.sum()) == 45
    assert max(asked) == min(k for k in k_grid(n) if k >= 45) == 63
    assert ascending.n_evaluations < whole_grid.n_evaluations


def test_search_reports_none_when_no_prefix_passes() -> None:
    result = search_k(torch.arange(50), by_prefix({}, 0.7), threshold=0.15)
    assert result.kept is None and result.loss is None
    assert set(result.losses_by_k) == set(k_grid(50))


def test_empty_circuit_can_pass() -> None:
    result = search_k(torch.arange(50), by_prefix({}, 0.01), threshold=0.15)
    assert int(result.kept.sum()) == 0


def test_bisection_in_a_wide_bracket_lands_on_a_passing_k() -> None:
    n = 100_000
    result = search_k(torch.arange(n), lambda masks: [0.1 if m.sum() >= 61_234 else 0.9
                                                      for m in masks], threshold=0.15)
    assert int(result.kept.sum()) == 61_234


def test_greedy_drop_keeps_exactly_the_needed_nodes() -> None:
    needed = {3, 17, 40}

    def losses(masks: torch.Tensor) -> list[float]:
        return [0.05 if all(m[i] for i in needed) else 0.6 for m in masks]

    kept = torch.zeros(64, dtype=torch.bool)
    kept[:50] = True
    order = torch.arange(64)  # node 0 most important; the needed ones are spread out
    result, loss, evaluations = greedy_drop(kept, order, losses, threshold=0.15)
    assert set(result.nonzero().flatten().tolist()) == needed
    assert loss == 0.05
    # 50 candidates in chunks of 16, 16, 16, 2 (least important first), one needed node in each
    # of three: whole halves go where they can, so a needed node costs ~2·log2(16) evaluations,
    # where trying every node of a failing chunk alone would cost 16 each (51 in all).
    assert evaluations <= 24


def test_greedy_drop_halves_a_failing_group_instead_of_trying_each_node() -> None:
    needed = {5}

    def losses(masks: torch.Tensor) -> list[float]:
        return [0.05 if m[5] else 0.6 for m in masks]

    kept = torch.ones(16, dtype=torch.bool)
    result, _, evaluations = greedy_drop(kept, torch.arange(16), losses, threshold=0.15)
    assert set(result.nonzero().flatten().tolist()) == needed
    # Least important first: all 16 fail; [15..8] is taken, so [7..0] is known to fail and is
    # halved untried; [7..4] fails; [7, 6] is taken, so [5, 4] is known to fail; [5] fails;
    # [4] is taken; [3..0] is taken: 7 evaluations, where 1 + 16 single removals were 17.
    assert evaluations == 7


def test_greedy_drop_speculating_finds_the_same_circuit_in_fewer_calls() -> None:
    # A loss that is not monotone in the nodes kept: a hash of the mask decides, for most masks,
    # so the order in which removals are tried matters and any shortcut would show.
    needed = {2, 9, 30, 31, 55}

    def losses(masks: torch.Tensor) -> list[float]:
        calls.append(len(masks))
        return [0.05 if all(m[i] for i in needed) and hash(tuple(m.tolist())) % 3 else 0.6
                for m in masks]

    kept = torch.zeros(80, dtype=torch.bool)
    kept[:70] = True
    order = torch.randperm(80, generator=torch.Generator().manual_seed(0))
    results = {}
    for speculate in (False, True):
        calls: list[int] = []
        circuit, loss, evaluations = greedy_drop(kept, order, losses, 0.15, speculate=speculate)
        results[speculate] = (circuit.tolist(), loss, evaluations, len(calls))
        assert evaluations == sum(calls)
    (lazy, lazy_loss, lazy_evals, lazy_calls), (spec, spec_loss, _, spec_calls) = \
        results[False], results[True]
    assert lazy == spec and lazy_loss == spec_loss
    assert needed <= {i for i, on in enumerate(lazy) if on} and sum(lazy) < 70
    assert lazy_evals <= 5 * 31  # at worst every group of a chunk's halving tree, 5 chunks
    assert spec_calls < lazy_calls
