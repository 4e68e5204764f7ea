"""The ``random_init`` control's model: the architecture as initialised, trained for 0 tokens.

Initialised exactly as ``train`` initialises step 0 of the same seed, then projected to the
final kept fraction (with the same ``min_per_neuron`` floor), so it has the trained model's
shape and number of nonzero weights and its circuits' edge counts are comparable. A circuit
found in it is found in weights that have learned nothing (issue 12).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from runtime.model import GPTConfig, SparseGPT, floor_axis, sparse_parameters
from runtime.training.sparsity import kept_fraction_at, nonzero_counts, project_tensors_
from runtime.training.train import TrainResult, describe_device, evaluate, pick_device
from spec.recipe import SparsitySpec, TrainSpec


def untrained(cfg: GPTConfig, train_spec: TrainSpec, sparsity: SparsitySpec, seed: int,
              train_data: np.ndarray, heldout_data: np.ndarray) -> TrainResult:
    """A randomly initialised, top-k projected ``SparseGPT`` and its losses, with 0 steps."""
    started = time.time()
    device = pick_device(train_spec.device)
    torch.manual_seed(seed)  # as train() seeds its model: the same weights before step 1
    model = SparseGPT(cfg).to(device)
    sparse = sparse_parameters(model)
    project_tensors_(((p, floor_axis(name)) for name, p in sparse),
                     kept_fraction_at(1.0, sparsity), sparsity.min_per_neuron)
    losses = [evaluate(model, data, train_spec.eval_tokens, train_spec.batch_size, device)
              for data in (heldout_data, train_data)]
    n_sparse = sum(p.numel() for _, p in sparse)
    n_nonzero = sum(nonzero_counts(p for _, p in sparse))
    return TrainResult(
        model=model, heldout_loss=losses[0], train_loss=losses[1],
        n_params=sum(p.numel() for p in model.parameters()),
        n_sparse_params=n_sparse, n_nonzero=n_nonzero, kept_fraction=n_nonzero / n_sparse,
        tokens=0, steps=0, wall_time_s=time.time() - started,
        device=describe_device(device), tokens_per_s=0.0,
    )
