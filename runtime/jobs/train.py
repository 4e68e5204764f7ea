"""The ``train`` job kind: weight-sparse pretraining on a tokenize job's token files.

Config (docs/jobs.md): ``{seed, data, model, train, sparsity, inputs: {tokenize}}``. Reads
``<workspace>/<inputs.tokenize>/{train,heldout}.bin``; writes ``model.safetensors``,
``metrics.jsonl`` and ``checkpoints/`` (only the newest kept once training is done). Re-running a
killed job resumes from its newest valid checkpoint.

A job launched as several processes (torchrun, or SLURM tasks: runtime/distributed.py) trains
data-parallel; rank 0 writes every file and returns the results, the other ranks return None.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from runtime import distributed
from runtime.checkpoint import remove_old_checkpoints, save_model
from runtime.job import Progress
from runtime.model import GPTConfig
from runtime.train import CHECKPOINT_DIR, train
from spec.recipe import DataSpec, ModelSpec, SparsitySpec, TrainSpec

MODEL_FILE = "model.safetensors"
LOG_EVERY = 10  # steps between metrics lines (evaluation steps are always logged)


def load_tokens(path: Path, vocab_size: int) -> np.ndarray:
    """A uint16 token file as a read-only memmap, checked against the model's vocabulary."""
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    if len(tokens) and int(tokens.max()) >= vocab_size:
        raise ValueError(f"{path}: token id {int(tokens.max())} >= vocab_size {vocab_size}")
    return tokens


def run(
    config: dict[str, Any], job_dir: Path, workspace: Path, progress: Progress
) -> dict[str, Any] | None:
    data = DataSpec.model_validate(config["data"])
    cfg = GPTConfig.from_specs(ModelSpec.model_validate(config["model"]), data)
    tokenize_dir = workspace / config["inputs"]["tokenize"]
    layout = distributed.detect_layout(os.environ)
    with distributed.process_group(layout):
        result = train(
            cfg,
            TrainSpec.model_validate(config["train"]),
            SparsitySpec.model_validate(config["sparsity"]),
            seed=config["seed"],
            train_data=load_tokens(tokenize_dir / "train.bin", cfg.vocab_size),
            heldout_data=load_tokens(tokenize_dir / "heldout.bin", cfg.vocab_size),
            out_dir=job_dir,
            progress=progress,
            log_every=LOG_EVERY,
            layout=layout,
        )
    if not layout.is_main:
        return None
    save_model(result.model, cfg, job_dir / MODEL_FILE)
    remove_old_checkpoints(job_dir / CHECKPOINT_DIR, keep=1)
    progress({"step": result.steps, "total_steps": result.steps, "done": True}, force=True)
    return result.summary()
