"""The ``train`` job kind's random_init control: the architecture untrained, at its sparsity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.job import run_job
from runtime.model import GPTConfig, SparseGPT, floor_axis, sparse_parameters
from runtime.training.checkpoint import load_model
from runtime.training.sparsity import project_tensors_

MODEL = {"n_layer": 1, "d_model": 16, "d_head": 8}
DATA = {"corpus": "synthetic", "vocab_size": 300, "context": 16}


def test_random_init_trains_for_zero_tokens_at_the_target_sparsity(tmp_path: Path) -> None:
    tokenize = tmp_path / "jobs" / "tokenize-x"
    tokenize.mkdir(parents=True)
    ids = np.random.default_rng(0).integers(0, 300, 4000, dtype=np.uint16)
    for split in ("train", "heldout"):
        ids.tofile(tokenize / f"{split}.bin")
    job_dir = tmp_path / "jobs" / "train-x"
    job_dir.mkdir()
    (job_dir / "config.json").write_text(json.dumps({
        "kind": "train", "key": "x" * 64, "seed": 3, "control": "random_init",
        "data": DATA, "model": MODEL, "train": {"tokens": 10_000, "eval_tokens": 512},
        "sparsity": {"target": 0.25, "min_per_neuron": 0},
        "inputs": {"tokenize": "jobs/tokenize-x"},
    }))
    results = run_job(job_dir)
    assert results["tokens"] == 0 and results["steps"] == 0
    # per tensor a quarter kept (biases start at zero, so a few kept entries are zeros)
    assert results["n_nonzero"] / results["n_sparse_params"] == pytest.approx(0.25, abs=0.01)
    # uniform random tokens: an untrained model is no better than ln(vocab)
    assert results["heldout_loss"] > math.log(300) - 0.5
    assert not (job_dir / "metrics.jsonl").exists()
    # the weights are train()'s initial weights of that seed, projected to the target
    torch.manual_seed(3)
    cfg = GPTConfig(vocab_size=300, context=16, n_layer=1, d_model=16, d_head=8, d_mlp=64)
    expected = SparseGPT(cfg)
    project_tensors_(((p, floor_axis(n)) for n, p in sparse_parameters(expected)), 0.25)
    model = load_model(job_dir / "model.safetensors")
    for (name, got), (_, want) in zip(model.state_dict().items(),
                                      expected.state_dict().items(), strict=True):
        assert torch.equal(got, want), name
