"""The ``train`` job kind: weight-sparse pretraining on a tokenize job's token files.

Config (docs/jobs.md): ``{seed, data, model, train, sparsity, inputs: {tokenize}}``. Reads
``<workspace>/<inputs.tokenize>/{train,heldout}.bin``; writes ``model.safetensors``,
``metrics.jsonl`` and ``checkpoints/`` (only the newest kept once training is done). Re-running a
killed job resumes from its newest valid checkpoint. With ``control: random_init`` the model is
only initialised and projected (runtime/training/untrained.py): 0 steps, no metrics.

A job launched as several processes (torchrun, or SLURM tasks: runtime/training/distributed.py)
trains data-parallel; rank 0 writes every file and returns the results, the other ranks return
None.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runtime.data.tokens import open_tokens
from runtime.io import read_json
from runtime.job import CHECKPOINT_DIR, RESULTS_FILE, Progress
from runtime.model import GPTConfig
from runtime.training import distributed
from runtime.training.checkpoint import remove_old_checkpoints, save_model
from runtime.training.train import train
from runtime.training.untrained import untrained
from spec.recipe import DataSpec, ModelSpec, SparsitySpec, TrainSpec

MODEL_FILE = "model.safetensors"
LOG_EVERY = 10  # steps between metrics lines (evaluation steps are always logged)


def run(
    config: dict[str, Any], job_dir: Path, workspace: Path, progress: Progress
) -> dict[str, Any] | None:
    data = DataSpec.model_validate(config["data"])
    cfg = GPTConfig.from_specs(ModelSpec.model_validate(config["model"]), data)
    tokenize_dir = workspace / config["inputs"]["tokenize"]
    if config.get("control") == "random_init":
        result = untrained(cfg, TrainSpec.model_validate(config["train"]),
                           SparsitySpec.model_validate(config["sparsity"]), config["seed"],
                           open_tokens(tokenize_dir, "train", cfg.vocab_size),
                           open_tokens(tokenize_dir, "heldout", cfg.vocab_size))
        save_model(result.model, cfg, job_dir / MODEL_FILE)
        return {**result.summary(), "unigram_heldout_loss": _unigram_loss(tokenize_dir)}
    layout = distributed.detect_layout(os.environ)
    with distributed.process_group(layout):
        result = train(
            cfg,
            TrainSpec.model_validate(config["train"]),
            SparsitySpec.model_validate(config["sparsity"]),
            seed=config["seed"],
            train_data=open_tokens(tokenize_dir, "train", cfg.vocab_size),
            heldout_data=open_tokens(tokenize_dir, "heldout", cfg.vocab_size),
            out_dir=job_dir,
            progress=progress,
            log_every=LOG_EVERY,
            layout=layout,
        )
        # Inside the group, so the other ranks leave only once rank 0 has written the model.
        if layout.is_main:
            save_model(result.model, cfg, job_dir / MODEL_FILE)
            remove_old_checkpoints(job_dir / CHECKPOINT_DIR, keep=1)
    if not layout.is_main:
        return None
    progress({"step": result.steps, "total_steps": result.steps, "done": True}, force=True)
    return {**result.summary(), "unigram_heldout_loss": _unigram_loss(tokenize_dir)}


def _unigram_loss(tokenize_dir: Path) -> float | None:
    """The baseline a trained model must beat, beside its loss in the store (token files made
    by hand, as in tests, come without it)."""
    tokenize_results = tokenize_dir / RESULTS_FILE
    return (read_json(tokenize_results).get("unigram_heldout_loss")
            if tokenize_results.is_file() else None)
