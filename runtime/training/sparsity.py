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


def project_topk_(tensor: Tensor, k: int, min_per_row: int = 0) -> Tensor:
    """Zero all but the ``k`` entries of largest magnitude of ``tensor``, in place.

    Floor (method §2): with ``min_per_row = j > 0`` and a 2-D tensor, each row first keeps its own
    top-j, then the remaining ``k - rows·j`` slots go to the largest of the other entries, so the
    total is still k. A "neuron" here is a row of the tensor as stored: for ``nn.Linear`` weights
    ``(out, in)`` that is an output neuron / channel and its incoming weights, for the embedding
    and unembedding ``(V, d)`` a token's row. If ``rows·j > k`` the floor wins and more than k
    entries survive. 1-D tensors (biases) get no floor: a bias holds one weight per neuron, so
    "top-j per neuron" has no meaning for it.

    Ties at the threshold are broken by ``torch.topk``, so exactly k entries are kept (fewer are
    nonzero only when the kept set itself contains zeros).
    """
    numel = tensor.numel()
    if k >= numel:
        return tensor
    magnitude = tensor.detach().abs()
    keep = torch.zeros(numel, dtype=torch.bool, device=tensor.device)
    if min_per_row > 0 and tensor.dim() == 2:
        # Floor first: mark each row's top-j, then rank the rest with the floor entries pushed to
        # +inf so the global top-k includes them all.
        floor = magnitude.topk(min(min_per_row, tensor.shape[1]), dim=1).indices
        magnitude = magnitude.scatter(1, floor, math.inf)
        k = max(k, floor.numel())
    keep[magnitude.flatten().topk(k, sorted=False).indices] = True
    tensor.masked_fill_(~keep.view_as(tensor), 0)
    return tensor


@torch.no_grad()
def project_tensors_(tensors: Iterable[Tensor], fraction: float, min_per_row: int = 0) -> None:
    """Project each tensor to its own top ``n_kept(numel, fraction)`` entries, in place."""
    if fraction >= 1.0:
        return
    for tensor in tensors:
        project_topk_(tensor, n_kept(tensor.numel(), fraction), min_per_row)


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
