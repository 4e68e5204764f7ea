"""From learned mask scores to the smallest circuit that meets the loss threshold (method §4).

The paper ranks nodes by τ and bisects for the smallest k whose top-k circuit reaches the
threshold. Two things make that naive version wrong in practice, and both are handled here:

- **Ties.** After a few thousand steps most kept τ sit at the +1 clamp, so "rank by τ" is node
  order. Ties are broken by each node's attribution, −∂L/∂g at the learned mask (first-order
  loss increase from switching the node off; ``rank_nodes``), and ``count_ties`` reports how many
  kept nodes were tied.
- **The loss is not monotone in k.** Ablating more nodes can *lower* the loss. So ``search_k``
  evaluates a geometric grid of k (0 included: an empty circuit can pass when the bias terms or
  the bigram table solve the task; up to its first passing k, all that decides the result) —
  and, when no grid k passes, an even grid around the best one — takes the smallest k that
  passes, and then bisects the bracket below it (a k in there that passes is found or not;
  greedy dropping then removes what the prefix holds too much of, least important first).
  Finally ``greedy_drop`` switches off kept nodes, least important first, in groups that are
  halved where they fail, and keeps every removal after which the circuit still passes.

Every loss here comes from ``losses(masks)``: one number per candidate mask (rows of a (M, n)
bool tensor), computed by the caller on fixed pairs, batched over masks; ``inf`` for a circuit
the caller already knows fails (only pass or fail matters there, except where ``search_k`` picks
the best of failing grid points, and then it asks for real losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

Losses = Callable[[Tensor], list[float]]
GRID_POINTS = 16  # geometric grid of k between 1 and n_nodes (a factor ≈ 1.5–2 per step)
FINE_POINTS = 16  # when no grid k passes: evenly spaced k around the best one
GREEDY_BATCH = 16  # candidates first tried as one removal (then adapted, up to 4×)


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


def search_k(order: Tensor, losses: Losses, threshold: float, exact: Losses | None = None,
             speculate: bool = True) -> SearchResult:
    """The smallest prefix of ``order`` whose loss is at most ``threshold`` (see module doc).
    ``losses`` may answer ``inf`` for a circuit known to fail; ``exact`` (default ``losses``)
    gives the real losses where the search must choose among failing prefixes.

    Only the grid up to its first passing k decides the result. ``speculate`` evaluates the
    whole grid in one batched call (a GPU, where a batch costs about what one circuit does);
    without it the grid goes in ascending k and stops at the first that passes, which spares
    its largest circuits, the dearest to judge (a CPU, where each circuit costs its own)."""
    n = len(order)
    by_k: dict[int, float] = {}

    def evaluate(ks: list[int]) -> None:
        todo = [k for k in ks if k not in by_k]
        if todo:
            by_k.update(zip(todo, losses(prefix_masks(order, todo)), strict=True))

    grid = k_grid(n)
    for part in [grid] if speculate else [[k] for k in grid]:
        evaluate(part)
        if any(by_k[k] <= threshold for k in part):
            break
    grid = [k for k in grid if k in by_k]
    passing = [k for k in grid if by_k[k] <= threshold]
    if not passing:  # a passing window may hide between grid points: look around the best one
        unknown = [k for k in grid if math.isinf(by_k[k])]
        if unknown and exact is not None:
            by_k.update(zip(unknown, exact(prefix_masks(order, unknown)), strict=True))
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
    while hi - lo > 1:  # invariant: lo fails, hi passes
        mid = (lo + hi) // 2
        evaluate([mid])
        lo, hi = (lo, mid) if by_k[mid] <= threshold else (mid, hi)
    return SearchResult(prefix_masks(order, [hi])[0], by_k[hi], by_k, len(by_k))


def greedy_drop(kept: Tensor, order: Tensor, losses: Losses, threshold: float,
                batch: int = GREEDY_BATCH, speculate: bool = False
                ) -> tuple[Tensor, float | None, int]:
    """Switch off kept nodes, least important first, while the circuit still passes.

    Candidates go ``batch`` at a time, and a group is tried as one removal: taken if the circuit
    without it passes. A group that fails is split in halves, the first tried, then the second —
    unless the first was just taken: the circuit without it and without the second is what the
    whole failed group left, so the second is known to fail and is split at once. A single node
    that fails stays. Most of a ranking's tail goes in whole chunks, and a chunk that holds one
    needed node among 16 costs about 2·log2(16) evaluations, not 16 single removals.

    ``speculate`` evaluates, with a group, its first half, that half's first half and so on down
    to one node — the groups tried next while each fails, all against the circuit as it is — in
    one batched call, and uses them until the circuit changes: the same circuit in fewer, larger
    calls, which pays where a batched forward costs about what one does (a GPU), not on a CPU,
    where it costs per mask. Returns the circuit, the loss of the last removal taken (None if none
    was) and the number of circuits evaluated."""
    kept = kept.clone()
    candidates = [int(i) for i in order.flip(0) if kept[i]]
    last_loss: float | None = None
    evaluations = 0
    known: dict[tuple[int, ...], float] = {}  # losses judged against the circuit as it is now

    def loss_without(group: list[int]) -> float:
        nonlocal evaluations
        if tuple(group) not in known:
            tried = [group]
            while speculate and len(tried[-1]) > 1:
                tried.append(tried[-1][:len(tried[-1]) // 2])
            masks = torch.stack([kept.clone().index_fill_(0, torch.tensor(g), False)
                                 for g in tried])
            known.update(zip(map(tuple, tried), losses(masks), strict=True))
            evaluations += len(tried)
        return known[tuple(group)]

    def drop(group: list[int], known_to_fail: bool) -> bool:
        """Take ``group`` or as much of it as passes; True when all of it was taken."""
        nonlocal last_loss
        if not known_to_fail:
            loss = loss_without(group)
            if loss <= threshold:
                kept[group] = False
                last_loss = loss
                known.clear()
                return True
        if len(group) == 1:
            return False
        half = len(group) // 2
        first_taken = drop(group[:half], known_to_fail=False)
        drop(group[half:], known_to_fail=first_taken)
        return False

    size = batch
    while candidates:
        group, candidates = candidates[:size], candidates[size:]
        drop(group, known_to_fail=False)
        # The next group's size follows the share of needed nodes just met (the tail of a ranking
        # is mostly removable, its head mostly needed): about one needed node per group is when
        # halving pays, and single removals are cheapest where every node is needed.
        needed = int(kept[group].sum())
        size = 2 * size if needed == 0 else 2 ** int(math.log2(len(group) / needed))
        size = max(1, min(size, 4 * batch))
    return kept, last_loss, evaluations
