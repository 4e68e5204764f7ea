"""Mean-ablation statistics (method §4): the mean activation of every node over pretraining tokens.

A pruned node is replaced by its mean "over the pretraining distribution, at every token
position", so the means are taken over every position of ``context``-long windows of the
training split, read through the model's ``hook`` (after AbsTopK, as the pruner sees them).
Windows are evenly spaced over the whole split (deterministic, and not just its first files).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from runtime.model import SparseGPT

MEANS_FILE = "means.safetensors"


@contextlib.contextmanager
def hooked(model: SparseGPT, hook: Callable[[str, Tensor], Tensor] | None) -> Iterator[None]:
    """Install ``hook`` on the model for the duration of the block, restoring the old one."""
    previous = model.hook
    model.hook = hook
    try:
        yield
    finally:
        model.hook = previous


def window_starts(n_available: int, context: int, n_windows: int) -> list[int]:
    """``n_windows`` start offsets of ``context``-long windows spread evenly over the array
    (overlapping only when the array is too short to hold them side by side)."""
    last = max(n_available - context, 0)
    if n_windows <= 1:
        return [0]
    return [round(i * last / (n_windows - 1)) for i in range(n_windows)]


@torch.no_grad()
def compute_site_means(
    model: SparseGPT,
    tokens: np.ndarray | Tensor,
    n_tokens: int,
    batch: int,
    context: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Tensor]:
    """Mean of every node site over ``≈ n_tokens`` tokens (whole windows) of ``tokens``.

    Returns ``{site: (width,) float32}`` for every site the model's hook sees.
    """
    context = min(context, len(tokens))
    n_windows = max(1, math.ceil(n_tokens / context))
    starts = window_starts(len(tokens), context, n_windows)
    device = next(model.parameters()).device
    sums: dict[str, Tensor] = {}
    count = 0

    def accumulate(site: str, x: Tensor) -> Tensor:
        # Sum in float64: hundreds of thousands of positions lose digits in float32.
        total = x.detach().reshape(-1, x.shape[-1]).sum(0, dtype=torch.float64)
        sums[site] = sums[site] + total if site in sums else total
        return x

    was_training = model.training
    model.eval()
    with hooked(model, accumulate):
        for first in range(0, len(starts), batch):
            rows = [np.asarray(tokens[s : s + context], dtype=np.int64)
                    for s in starts[first : first + batch]]
            idx = torch.from_numpy(np.stack(rows)).to(device)
            model(idx)
            count += idx.numel()
            if progress is not None:
                progress(count)
    model.train(was_training)
    return {site: (total / count).float().cpu() for site, total in sums.items()}


def save_means(path: Path, means: dict[str, Tensor]) -> None:
    save_file({site: mean.contiguous() for site, mean in means.items()}, str(path))


def load_means(path: Path) -> dict[str, Tensor]:
    return load_file(str(path))
