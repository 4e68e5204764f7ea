"""Node gates (method §4): the Heaviside mask with its surrogate gradient, and what a pruned node
is replaced by.

A gate ``g`` ablates its node at every position: ``x ← g·x + (1 − g)·fill``. Gates come as one
flat vector per mask set (``runtime.pruning.circuit.NodeLayout`` numbers the nodes); several mask
sets can share one forward pass: the batch is tiled once per set (``PairBatch.tiled``) and
``GateHook`` applies set ``m``'s gates to the ``m``-th slice of the rows.

Fills (``ablation_values``): ``mean`` replaces a node by its mean over pretraining tokens (the
paper), ``zero`` by 0. With ``silent_zero`` a node that is exactly zero at every position of the
task's prompts (an AbsTopK site that never fires there) is filled with 0 instead of its mean:
ablating it then changes nothing on the task, as it should. Without that, mean ablation *injects*
the pretraining mean where the model has an exact zero, and a circuit must keep such a node just
to hold it at zero — the distractors the mean-injection effect adds to circuits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from runtime.model import SparseGPT
from runtime.pruning.ablation import hooked
from runtime.pruning.circuit import NodeLayout
from runtime.pruning.pairs import PairBatch


class HeavisideSTE(torch.autograd.Function):
    """Forward Heaviside(τ) ∈ {0, 1}; backward d/dτ sigmoid(τ / T) (a straight-through surrogate:
    the step has zero gradient almost everywhere, the sigmoid tells τ which way helps). ``T`` is a
    float or a tensor that broadcasts against τ (one temperature per mask set)."""

    @staticmethod
    def forward(ctx: Any, tau: Tensor, temperature: Tensor | float) -> Tensor:
        ctx.save_for_backward(tau)
        ctx.temperature = temperature
        return (tau > 0).to(tau.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (tau,) = ctx.saved_tensors
        s = torch.sigmoid(tau / ctx.temperature)
        return grad * s * (1 - s) / ctx.temperature, None


def heaviside_ste(tau: Tensor, temperature: Tensor | float) -> Tensor:
    return HeavisideSTE.apply(tau, temperature)


def distinct_gates(gates: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct rows of 0/1 ``gates`` (A, n), (U, n), and which of them each set uses, (A,).

    Mask sets that are equal (early in an optimisation every τ is still above 0, so every set
    keeps every node) need one slice of a batched forward and backward, not one each. A distinct
    row is the sum of its sets' gates less all but one copy, detached: the same 0/1 values
    exactly, and the gradient of anything computed from the row reaches each of its sets' gates
    whole, as if that set had run alone (objectives must count each distinct row once)."""
    unique, inverse, counts = torch.unique(gates.detach(), dim=0, return_inverse=True,
                                           return_counts=True)
    summed = torch.zeros_like(unique).index_add(0, inverse, gates)
    return summed - (counts - 1).unsqueeze(1).to(unique.dtype) * unique, inverse


def ablation_values(layout: NodeLayout, means: dict[str, Tensor] | None, ablation: str,
                    device: torch.device) -> dict[str, Tensor]:
    """What a pruned node is replaced by, per site: its mean, or zero."""
    widths = dict(zip(layout.sites, layout.widths, strict=True))
    if ablation == "zero":
        return {site: torch.zeros(width, device=device) for site, width in widths.items()}
    if ablation != "mean":
        raise ValueError(f"unknown ablation {ablation!r}")
    if means is None:
        raise ValueError("mean ablation needs the stats job's means")
    missing = [s for s in layout.sites if s not in means]
    if missing:
        raise ValueError(f"means are missing sites {missing}")
    for site, width in widths.items():
        if means[site].shape != (width,):
            raise ValueError(
                f"means[{site!r}] has shape {tuple(means[site].shape)}, want ({width},)"
            )
    return {site: means[site].float().to(device) for site in layout.sites}


@torch.no_grad()
def silent_nodes(model: SparseGPT, layout: NodeLayout, batch: PairBatch) -> Tensor:
    """(n_nodes,) bool: the nodes that are exactly zero at every real position of ``batch``
    that reaches the answer: every prompt position in earlier blocks and at the last block's
    keys and values, the answer position elsewhere in the last block and at ``final_in``."""
    fired = {site: torch.zeros(width, dtype=torch.bool, device=batch.tokens.device)
             for site, width in zip(layout.sites, layout.widths, strict=True)}
    real = batch.real_positions()  # (2N, T); final_in only sees the last positions

    def record(site: str, x: Tensor) -> Tensor:
        rows = x[real] if x.dim() == 3 else x
        fired[site] |= (rows != 0).any(0)
        return x

    with hooked(model, record):
        batch.logits(model)
    return ~layout.join(fired).cpu()


def silence_to_zero(fill: dict[str, Tensor], layout: NodeLayout,
                    silent: Tensor) -> dict[str, Tensor]:
    """``fill`` with the silent nodes' values set to zero."""
    per_site = layout.split(silent)
    return {site: torch.where(per_site[site].to(value.device), 0.0, value)
            for site, value in fill.items()}


class GateHook:
    """The model hook that applies per-node ``gates`` (1 keeps, 0 ablates) at every site.

    ``gates`` is ``(n_nodes,)`` for one mask set or ``(M, n_nodes)`` for M sets, in which case the
    activations' rows are M equal slices (a ``tiled`` batch) and slice m gets set m's gates.
    Gates are floats, 0/1 or in between (``x ← g·x + (1 − g)·m``). Where no gradient is wanted,
    a site whose every gate is 0 in every set is its fill alone, whatever the model computes
    there: ``fixed`` says so and the model skips computing it (a small circuit leaves most sites
    empty). With a gradient the fill is not enough: d/dg needs the activation an ablated node
    would have had."""

    def __init__(self, layout: NodeLayout, gates: Tensor, fill: dict[str, Tensor]) -> None:
        per_site = layout.split(gates) if gates.dim() == 1 else dict(
            zip(layout.sites, gates.split(list(layout.widths), dim=1), strict=True))
        self.fill = fill
        self.ablated = set() if gates.requires_grad else {
            site for site, g in per_site.items() if not bool(g.any())}
        # x ← g·x + (1 − g)·m as one addcmul of x and g onto the fill term: 3-6x faster than a
        # select on a CPU, and exactly x where g = 1 (a finite m times 0 adds a zero), m where
        # g = 0 (as long as x is finite).
        self.gates = per_site
        self.fill_terms = {site: (1 - g) * fill[site] for site, g in per_site.items()}

    def fixed(self, site: str) -> Tensor | None:
        return self.fill[site] if site in self.ablated else None

    def __call__(self, site: str, x: Tensor) -> Tensor:
        g, fill_term = self.gates[site], self.fill_terms[site]
        rows = x
        if g.dim() == 2:  # (M, W) → (M, 1, …, W) against x viewed as (M, rows/M, …, W)
            shape = (g.shape[0], *([1] * (x.dim() - 1)), g.shape[1])
            g, fill_term = g.view(shape), fill_term.view(shape)
            rows = x.view(g.shape[0], -1, *x.shape[1:])
        return torch.addcmul(fill_term.to(x.dtype), rows, g.to(x.dtype)).view_as(x)

