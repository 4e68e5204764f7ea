"""Weight-sparse training as pure functions (method §2): the anneal curve of the kept fraction,
the "sharkfin" learning rate, the per-tensor top-k projection and gradient RMS normalisation.

Nothing here holds state, so tests and the training loop call the same code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from spec.recipe import AnnealSpec, SparsitySpec, TrainSpec


def _anneal_position(progress: float, anneal: AnnealSpec) -> float:
    """Where ``progress`` lies in the anneal window, clamped to [0, 1]."""
    return min(1.0, max(0.0, (progress - anneal.start) / (anneal.end - anneal.start)))


def kept_fraction_at(progress: float, sparsity: SparsitySpec) -> float:
    """Fraction of every sparse tensor kept at training ``progress`` in [0, 1].

    1.0 (dense) before ``anneal.start``, ``target`` after ``anneal.end``; in between:
    - linear: straight line from 1.0 to target;
    - cosine: half cosine from 1.0 to target (slow, fast, slow);
    - exponential: straight line in log space, i.e. the same factor removed per unit progress;
    - step: ``n_steps`` equal drops in log space, the first a ``1/n_steps`` way into the window
      (log space so each drop removes the same share of the surviving weights);
    - points: piecewise linear through ``[progress, kept]`` points, held flat outside them. The
      points give kept fractions directly, so ``target`` is not consulted.
    """
    anneal = sparsity.anneal
    if anneal.curve == "points":
        assert anneal.points is not None  # guaranteed by AnnealSpec's validator
        xs = [point[0] for point in anneal.points]
        ys = [point[1] for point in anneal.points]
        if progress <= xs[0]:
            return ys[0]
        for x0, y0, x1, y1 in zip(xs, ys, xs[1:], ys[1:], strict=False):
            if progress <= x1:
                return y0 + (y1 - y0) * (progress - x0) / (x1 - x0)
        return ys[-1]
    if sparsity.dense:
        return 1.0
    u = _anneal_position(progress, anneal)
    target = sparsity.target
    if anneal.curve == "linear":
        return 1.0 + (target - 1.0) * u
    if anneal.curve == "cosine":
        return target + (1.0 - target) * 0.5 * (1.0 + math.cos(math.pi * u))
    if anneal.curve == "exponential":
        return target**u
    if anneal.curve == "step":
        return target ** (math.floor(u * anneal.n_steps + 1e-9) / anneal.n_steps)
    raise ValueError(f"unknown anneal curve {anneal.curve!r}")


def lr_at(
    step: int, total_steps: int, train: TrainSpec, kept_now: float, kept_final: float
) -> float:
    """The "sharkfin" learning rate of (0-based) optimizer step ``step``.

    The shape is the lower of two lines: a warmup rising to 1 at ``warmup·total_steps`` and a decay
    reaching 0 just after the last step. It is scaled by ``sqrt(L0_final / L0_now)`` =
    ``sqrt(kept_final / kept_now)``: ``train.lr`` is the rate for the final sparse model, and the
    denser model early in training gets proportionally less.
    """
    warmup_steps = train.warmup * total_steps
    decay = (total_steps - step) / (total_steps - warmup_steps)
    warm = (step + 1) / warmup_steps if warmup_steps > 0 else 1.0
    return train.lr * max(0.0, min(1.0, warm, decay)) * math.sqrt(kept_final / kept_now)


def n_kept(numel: int, fraction: float) -> int:
    """Entries a tensor of ``numel`` entries keeps at ``fraction``: rounded, and at least one."""
    return max(1, min(numel, round(fraction * numel)))


def floor_per_neuron(k: int, n_neurons: int, fan: int, min_per_neuron: int) -> int:
    """Entries each of ``n_neurons`` neurons (``fan`` weights each along the floor's axis) is
    guaranteed in a tensor that keeps ``k``: ``min_per_neuron``, capped at the fan and at
    ``k // n_neurons`` so that the floor never pushes the tensor past k. At the paper's target
    0.001 a d_model-2048 tensor keeps ~2 weights per neuron on average, so j = 4 is capped to 2
    there (and to 0, no floor, where k < n_neurons): the model keeps its target density, and the
    floor spreads what it has instead of growing it."""
    return min(min_per_neuron, fan, k // n_neurons)


# Tensors smaller than this are ranked whole: a candidate search saves nothing there.
_DIRECT_TOPK_NUMEL = 16384
# The stride of the sample that estimates the threshold. Prime, so that it does not alias with
# row widths (every 64th entry of a 256-wide matrix would sample four columns only).
_SAMPLE_STRIDE = 61


def _candidates(magnitude: Tensor, count: int, largest: bool) -> Tensor | None:
    """Flat indices of a subset of the 1-D ``magnitude`` that holds its ``count`` largest (or
    smallest) entries, usually a few percent more than ``count``; None (rank them all) for small
    tensors, off the CPU, or when the sample finds none.

    A strided sample gives a threshold a few standard errors beyond the expected boundary and
    every entry on the near side of it is a candidate. Whenever that is at least ``count``
    entries, the ``count`` extreme ones are all among them: everything left out lies strictly on
    the far side of the threshold. On CPU this and a topk over the candidates take about a third
    of the time of a topk over the whole tensor. On CUDA, torch.topk (a radix select) is used
    as it is: this search is measured on CPU only and would add device syncs there.
    """
    numel = magnitude.numel()
    if numel < _DIRECT_TOPK_NUMEL or magnitude.device.type != "cpu":
        return None
    sample = magnitude[::_SAMPLE_STRIDE]
    expected = count * sample.numel() / numel  # sample entries expected beyond the boundary
    rank = math.ceil(expected + 4 * math.sqrt(expected) + 4)
    if rank >= sample.numel():
        return None
    kth = sample.numel() - rank + 1 if largest else rank  # kthvalue counts from below
    threshold = sample.kthvalue(kth).values
    near = magnitude >= threshold if largest else magnitude <= threshold
    candidates = near.nonzero().squeeze(1)
    return candidates if candidates.numel() >= count else None


def _extreme(magnitude: Tensor, among: Tensor | None, count: int, largest: bool) -> Tensor:
    """The flat indices, out of ``among`` (None: all), of the ``count`` largest (smallest)
    ``magnitude``s."""
    if among is None:
        return magnitude.topk(count, largest=largest, sorted=False).indices
    return among[magnitude[among].topk(count, largest=largest, sorted=False).indices]


def _neuron_of(index: Tensor, shape: torch.Size, neuron_axis: int) -> Tensor:
    """The neuron (row for axis 0, column for axis 1) of each flat index of a 2-D tensor."""
    return index // shape[1] if neuron_axis == 0 else index % shape[1]


def _neuron_top(magnitude: Tensor, neurons: Tensor, j: int, neuron_axis: int) -> Tensor:
    """Flat indices of the top-j entries of each of ``neurons`` in the 2-D ``magnitude``."""
    width = magnitude.shape[1]
    every = neurons.numel() == magnitude.shape[neuron_axis]  # then no copy of the tensor
    if neuron_axis == 0:
        rows = magnitude if every else magnitude[neurons]
        top = rows.topk(j, dim=1, sorted=False).indices  # (neurons, j)
        return (neurons[:, None] * width + top).flatten()
    columns = magnitude if every else magnitude[:, neurons]
    # topk along contiguous rows beats topk down columns, copy included (1.5x at 2048 x 8192).
    top = columns.t().contiguous().topk(j, dim=1, sorted=False).indices  # (neurons, j)
    return (top * width + neurons[:, None]).flatten()


def _kept_indices(magnitude: Tensor, k: int, j: int, neuron_axis: int | None) -> Tensor:
    """Flat indices of the k entries the projection keeps (see ``project_topk_``).

    With a floor, the reference is "force every neuron's top-j, then the largest others". Forcing
    only some neurons S gives the same set as soon as every neuron outside S already has j
    entries in it (a neuron's kept entries above the threshold are then its own top-j), so the
    loop starts with S empty and adds the neurons found short (and those close to it) until none
    is; once a quarter of them are in S it forces them all, one topk along the neuron axis.
    """
    flat = magnitude.view(-1)
    candidates = _candidates(flat, k, largest=True)
    kept = _extreme(flat, candidates, k, largest=True)
    if j == 0 or neuron_axis is None:
        return kept
    n_neurons = magnitude.shape[neuron_axis]
    floored = torch.zeros(n_neurons, dtype=torch.bool, device=magnitude.device)
    while True:
        per_neuron = torch.bincount(_neuron_of(kept, magnitude.shape, neuron_axis),
                                    minlength=n_neurons)
        if not bool(((per_neuron < j) & ~floored).any()):
            return kept
        # Force the neurons near the floor too: forcing more changes nothing (above) and saves
        # the rounds in which they would drop below it one by one.
        floored |= per_neuron < 2 * j
        if 4 * int(floored.sum()) > n_neurons:
            floored.fill_(True)
        forced = _neuron_top(magnitude, floored.nonzero().squeeze(1), j, neuron_axis)
        is_forced = torch.zeros_like(flat, dtype=torch.bool)
        is_forced[forced] = True
        pool = ((~is_forced).nonzero().squeeze(1) if candidates is None
                else candidates[~is_forced[candidates]])
        kept = torch.cat([forced, _extreme(flat, pool, k - forced.numel(), largest=True)])


def project_topk_(
    tensor: Tensor, k: int, min_per_neuron: int = 0, neuron_axis: int | None = None
) -> Tensor:
    """Zero all but the ``k`` entries of largest magnitude of ``tensor``, in place.

    Floor (method §2): with ``min_per_neuron = j > 0`` and a 2-D ``tensor`` whose neurons run
    along ``neuron_axis`` (0: a row each, 1: a column each; ``runtime.model.floor_axis`` says
    which for each parameter), every neuron first keeps its own top-j, then the remaining slots
    go to the largest of the other entries, so the total is still k. j is capped by
    ``floor_per_neuron`` so that the floor never exceeds k. ``neuron_axis`` None (biases,
    embeddings) means no floor.

    Ties at the threshold are broken arbitrarily (by ``torch.topk``), so exactly k entries are
    kept (fewer are nonzero only when the kept set itself contains zeros). Without ties the kept
    set is unique, so any correct method returns the same tensor.
    """
    numel = tensor.numel()
    if k >= numel:
        return tensor
    flat, magnitude = tensor.detach().view(-1), tensor.detach().abs()
    j = 0
    if min_per_neuron > 0 and neuron_axis is not None and tensor.dim() == 2:
        j = floor_per_neuron(k, tensor.shape[neuron_axis], tensor.shape[1 - neuron_axis],
                             min_per_neuron)
    # The floor's axis, None without a floor: j > 0 only where neuron_axis is set, so this is
    # None exactly when j == 0 (and the type checker sees an int wherever the axis is used).
    axis = neuron_axis if j else None
    if k > numel // 2:  # few entries go: find those, unless the floor then fails somewhere
        dropped = _extreme(magnitude.view(-1), _candidates(magnitude.view(-1), numel - k, False),
                           numel - k, largest=False)
        if axis is None or bool((torch.bincount(_neuron_of(dropped, tensor.shape, axis),
                                                minlength=tensor.shape[axis])
                                 <= tensor.shape[1 - axis] - j).all()):
            flat[dropped] = 0
            return tensor
    kept = _kept_indices(magnitude, k, j, axis)
    values = flat[kept]
    flat.zero_()
    flat[kept] = values
    return tensor


@torch.no_grad()
def project_tensors_(
    tensors: Iterable[tuple[Tensor, int | None]], fraction: float, min_per_neuron: int = 0
) -> None:
    """Project each ``(tensor, neuron_axis)`` to its own top ``n_kept(numel, fraction)`` entries,
    in place, with the ``min_per_neuron`` floor along ``neuron_axis`` (see ``project_topk_``)."""
    if fraction >= 1.0:
        return
    for tensor, neuron_axis in tensors:
        project_topk_(tensor, n_kept(tensor.numel(), fraction), min_per_neuron, neuron_axis)


def normalize_grad_rms_(params: Iterable[Tensor], eps: float = 1e-12) -> float:
    """Divide every gradient by the global gradient RMS (``norm / sqrt(#entries)``) so that the
    RMS becomes 1 (method §2: essential for stability with Adam's large ε). Returns the global
    L2 norm before normalisation, for logging."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.get_total_norm(grads)
    scale = 1.0 / (norm / math.sqrt(sum(g.numel() for g in grads)) + eps)
    for grad in grads:
        grad.mul_(scale)
    return float(norm)


def nonzero_counts(tensors: Iterable[Tensor]) -> list[int]:
    """Nonzero entries of each tensor, read back from the device in one sync."""
    counts = [torch.count_nonzero(tensor) for tensor in tensors]
    return torch.stack(counts).tolist() if counts else []


def nonzero_fraction(tensors: Iterable[Tensor]) -> float:
    """Measured (not scheduled) fraction of nonzero entries across ``tensors``."""
    tensors = list(tensors)
    total = sum(tensor.numel() for tensor in tensors)
    return sum(nonzero_counts(tensors)) / total if total else 1.0
