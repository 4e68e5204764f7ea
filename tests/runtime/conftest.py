"""Shared fixtures for runtime tests: train-job folders over synthetic token files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from spec.recipe import DataSpec, ModelSpec, SparsitySpec, TrainSpec

TrainJobFactory = Callable[..., Path]
VOCAB, CONTEXT = 300, 16


def write_train_job(workspace: Path, name: str, *, seed: int, model: ModelSpec,
                    train: TrainSpec, sparsity: SparsitySpec) -> Path:
    """A `train` job folder (docs/jobs.md) whose tokenize input is 20,000 random token ids,
    shared by every job of the workspace, so two jobs of one test train on the same data."""
    tokenize_dir = workspace / "jobs" / "tokenize-synthetic"
    if not tokenize_dir.exists():
        tokenize_dir.mkdir(parents=True)
        tokens = np.random.default_rng(0).integers(0, VOCAB, size=20000, dtype=np.uint16)
        tokens.tofile(tokenize_dir / "train.bin")
        tokens[:2000].tofile(tokenize_dir / "heldout.bin")
    job_dir = workspace / "jobs" / name
    job_dir.mkdir(parents=True)
    config = {
        "kind": "train", "key": name, "seed": seed,
        "inputs": {"tokenize": "jobs/tokenize-synthetic"},
        "data": DataSpec(vocab_size=VOCAB, context=CONTEXT).model_dump(mode="json"),
        "model": model.model_dump(mode="json"),
        "train": train.model_dump(mode="json"),
        "sparsity": sparsity.model_dump(mode="json"),
    }
    (job_dir / "config.json").write_text(json.dumps(config))
    return job_dir


@pytest.fixture
def train_job() -> TrainJobFactory:
    return write_train_job
