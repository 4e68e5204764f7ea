"""Frozen RMSNorm scales while pruning (``prune.freeze_norms``).

Every RMSNorm divides its input by the input's RMS at each position. When pruning ablates nodes
the residual stream's RMS changes, so an unfrozen norm rescales everything downstream: a circuit
can then "cheat", e.g. switch off a large irrelevant channel so the norm amplifies the channels it
kept. Freezing replays, for each norm and position, the factor 1/rms(x) of the full (unablated)
model on the same prompts, so pruning changes only what it ablates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from runtime.model import RMSNorm, SparseGPT
from runtime.pruning.ablation import hooked
from runtime.pruning.pairs import PackedPairs, PairBatch


def _norms(model: SparseGPT) -> list[RMSNorm]:
    return [module for module in model.modules() if isinstance(module, RMSNorm)]


@torch.no_grad()
def full_model_scales(model: SparseGPT, prompts: PairBatch | PackedPairs) -> list[Tensor]:
    """Each norm's scale (rows, T or nothing, 1) in the unhooked model on these prompts."""
    norms = _norms(model)
    scales: list[Tensor | None] = [None] * len(norms)

    def recorder(i: int) -> Callable[[Tensor], Tensor]:
        def record(scale: Tensor) -> Tensor:
            scales[i] = scale
            return scale
        return record

    for i, norm in enumerate(norms):
        norm.scale_hook = recorder(i)
    try:
        with hooked(model, None):
            prompts.logits(model)
    finally:
        for norm in norms:
            norm.scale_hook = None
    return [scale for scale in scales if scale is not None]


@contextlib.contextmanager
def frozen_scales(model: SparseGPT, scales: list[Tensor] | None) -> Iterator[None]:
    """Within the block, every norm uses the recorded ``scales`` (tiled over mask sets: a batch of
    M·rows gets the rows' scales M times). ``None`` leaves the norms live."""
    if scales is None:
        yield
        return
    norms = _norms(model)

    def replay(recorded: Tensor) -> Callable[[Tensor], Tensor]:
        def hook(scale: Tensor) -> Tensor:
            copies = scale.shape[0] // recorded.shape[0]
            return recorded.repeat(copies, *([1] * (recorded.dim() - 1)))
        return hook

    for norm, recorded in zip(norms, scales, strict=True):
        norm.scale_hook = replay(recorded)
    try:
        yield
    finally:
        for norm in norms:
            norm.scale_hook = None
