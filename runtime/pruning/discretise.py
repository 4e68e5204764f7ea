"""From learned mask scores to the smallest circuit that meets the loss threshold (method §4).

The paper ranks nodes by τ and bisects for the smallest k whose top-k circuit reaches the
threshold. Two things make that naive version wrong in practice, and both are handled here:

- **Ties.** After a few thousand steps most kept τ sit at the +1 clamp, so "rank by τ" is node
  order. Ties are broken by each node's attribution, −∂L/∂g at the learned mask (first-order
  loss increase from switching the node off; ``rank_nodes``), and ``count_ties`` reports how many
  kept nodes were tied.
- **The loss is not monotone in k.** Ablating more nodes can *lower* the loss. So ``search_k``
  evaluates a geometric grid of k (0 included: an empty circuit can pass when the bias terms or
  the bigram table solve the task) — and, when no grid k passes, an even grid around the best
  one — takes the smallest k that passes, and then searches the bracket below it: every k when
  the bracket is small, bisection otherwise. Finally ``greedy_drop``
  tries once to switch off each kept node, least important first (a chunk of them at once
  first), and keeps every removal after which the circuit still passes.

Every loss here comes from ``losses(masks)``: one number per candidate mask (rows of a (M, n)
bool tensor), computed by the caller on fixed pairs, batched over masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

Losses = Callable[[Tensor], list[float]]
GRID_POINTS = 16  # geometric grid of k between 1 and n_nodes (a factor ≈ 1.5–2 per step)
FINE_POINTS = 16  # when no grid k passes: evenly spaced k around the best one
EXHAUSTIVE_BRACKET = 64  # evaluate every k of a bracket at most this wide
GREEDY_BATCH = 16  # single-node removals evaluated per batched forward


def rank_nodes(tau: Tensor, attribution: Tensor) -> Tensor:
    """Node indices, most important first: by τ, ties broken by attribution, then node order."""
    by_attribution = torch.sort(attribution, descending=True, stable=True).indices
    return by_attribution[torch.sort(tau[by_attribution], descending=True, stable=True).indices]


def count_ties(tau: Tensor) -> int:
    """Nodes switched on (τ > 0) whose τ equals another switched-on node's."""
    on = tau[tau > 0]
    _, counts = torch.unique(on, return_counts=True)
    return int(counts[counts > 1].sum())


def prefix_masks(order: Tensor, ks: list[int]) -> Tensor:
    """(len(ks), n) bool: row i keeps the first ``ks[i]`` nodes of ``order``."""
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order))
    return position.unsqueeze(0) < torch.tensor(ks).unsqueeze(1)


def k_grid(n: int, points: int = GRID_POINTS) -> list[int]:
    return sorted({0, n, *(round(n ** (i / (points - 1))) for i in range(points))})


@dataclass
class SearchResult:
    kept: Tensor | None  # (n,) bool, None when nothing passed
    loss: float | None
    losses_by_k: dict[int, float] = field(default_factory=dict)  # every prefix evaluated
    n_evaluations: int = 0


def search_k(order: Tensor, losses: Losses, threshold: float) -> SearchResult:
    """The smallest prefix of ``order`` whose loss is at most ``threshold`` (see module doc)."""
    n = len(order)
    by_k: dict[int, float] = {}

    def evaluate(ks: list[int]) -> None:
        todo = [k for k in ks if k not in by_k]
        if todo:
            by_k.update(zip(todo, losses(prefix_masks(order, todo)), strict=True))

    grid = k_grid(n)
    evaluate(grid)
    passing = [k for k in grid if by_k[k] <= threshold]
    if not passing:  # a passing window may hide between grid points: look around the best one
        best = grid.index(min(grid, key=by_k.__getitem__))
        lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
        fine = sorted({round(lo + (hi - lo) * j / FINE_POINTS) for j in range(FINE_POINTS + 1)})
        evaluate(fine)
        grid = sorted({*grid, *fine})
        passing = [k for k in grid if by_k[k] <= threshold]
    if not passing:
        return SearchResult(None, None, by_k, len(by_k))
    hi = passing[0]
    lo = max((k for k in grid if k < hi), default=-1)  # fails (or -1: hi is 0)
    if hi - lo - 1 <= EXHAUSTIVE_BRACKET:
        evaluate(list(range(lo + 1, hi)))
        best = min(k for k in range(lo + 1, hi + 1) if by_k[k] <= threshold)
    else:
        while hi - lo > 1:  # invariant: lo fails, hi passes
            mid = (lo + hi) // 2
            evaluate([mid])
            lo, hi = (lo, mid) if by_k[mid] <= threshold else (mid, hi)
        best = hi
    return SearchResult(prefix_masks(order, [best])[0], by_k[best], by_k, len(by_k))


def greedy_drop(kept: Tensor, order: Tensor, losses: Losses, threshold: float,
                batch: int = GREEDY_BATCH, speculate: bool = False
                ) -> tuple[Tensor, float | None, int]:
    """Switch off kept nodes, least important first, while the circuit still passes.

    Candidates go ``batch`` at a time: first all of them removed together (one evaluation; most
    of a ranking's tail goes this way); if that fails, each in turn, removed if the circuit
    without it passes — sequential greedy, each candidate tried once against the circuit as it
    is by then. ``speculate`` evaluates the chunk's remaining single removals in one batched
    call and takes the first that passes (the ones after it were judged against a circuit that
    has since changed, so they are evaluated again): the same circuit in fewer, larger calls,
    which pays where a batched forward costs about what one does (a GPU), not on a CPU, where
    it costs per mask. Returns the circuit, the loss of the last removal taken (None if none
    was) and the number of circuits evaluated."""
    kept = kept.clone()
    candidates = [int(i) for i in order.flip(0) if kept[i]]
    last_loss: float | None = None
    evaluations = 0

    def without(nodes: list[int]) -> Tensor:
        mask = kept.clone()
        mask[nodes] = False
        return mask

    while candidates:
        chunk, candidates = candidates[:batch], candidates[batch:]
        (joint,) = losses(without(chunk)[None])
        evaluations += 1
        if joint <= threshold:
            kept[chunk] = False
            last_loss = joint
            continue
        while chunk:
            tried = chunk if speculate else chunk[:1]
            singles = losses(torch.stack([without([node]) for node in tried]))
            evaluations += len(tried)
            first = next((i for i, loss in enumerate(singles) if loss <= threshold), None)
            if first is None:
                chunk = chunk[len(tried):]
                continue
            kept[tried[first]] = False
            last_loss, chunk = singles[first], chunk[first + 1:]
    return kept, last_loss, evaluations
