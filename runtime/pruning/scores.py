"""How well each trained model of a workspace does each task before any pruning: the full
model's task loss on held-out pairs, the number a prune job measures first (``full_model_loss``:
the same pairs, for a prune job's default seed, the model's own).

A circuit is only worth pruning for where the model does the task (results/matched.py compares
only those), so this is how a recipe's ``prune.tasks`` is chosen: score every task once, in
seconds, instead of pruning each one for minutes to find the model at chance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from runtime.data.tokenizer import check_single_tokens, load_tokenizer
from runtime.data.tokens import TOKENIZER_FILE
from runtime.io import read_json
from runtime.job import CONFIG_FILE, JOBS_DIR, RESULTS_FILE
from runtime.jobs.train import MODEL_FILE
from runtime.pruning.pairs import draw_pairs
from runtime.pruning.prune import evaluate
from runtime.tasks import TASKS, get_task
from runtime.training.checkpoint import load_model


@dataclass
class ModelScores:
    """One trained model's task losses (None: the task's answers are not single tokens under
    the model's tokenizer, so it cannot be scored or pruned)."""

    job: str
    d_model: int
    n_layer: int
    sparsity_target: float
    seed: int
    control: str | None
    heldout_loss: float | None
    losses: dict[str, float | None] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def score_workspace(workspace: Path, tasks: list[str] | None = None, n_pairs: int = 128
                    ) -> list[ModelScores]:
    """Every finished train job of ``workspace`` scored on ``tasks`` (default: the whole suite),
    ``n_pairs`` held-out pairs each, drawn with the model's seed as its prune jobs draw them."""
    names = sorted(TASKS) if tasks is None else tasks
    scores = []
    for job_dir in sorted((workspace / JOBS_DIR).glob("train-*")):
        if not (job_dir / RESULTS_FILE).is_file():
            continue
        config, results = read_json(job_dir / CONFIG_FILE), read_json(job_dir / RESULTS_FILE)
        model = load_model(job_dir / MODEL_FILE).eval().requires_grad_(False)
        tokenizer = load_tokenizer(workspace / config["inputs"]["tokenize"] / TOKENIZER_FILE)
        row = ModelScores(job_dir.name, config["model"]["d_model"], config["model"]["n_layer"],
                          config["sparsity"]["target"], config["seed"], config.get("control"),
                          results.get("heldout_loss"))
        with torch.no_grad():
            for name in names:
                task = get_task(name)
                if check_single_tokens(tokenizer, task.candidates):
                    row.losses[name] = None
                    continue
                pairs = draw_pairs(task, tokenizer, model.cfg.context, n_pairs, "heldout",
                                   row.seed)
                row.losses[name] = evaluate(model, pairs, None)
        scores.append(row)
    return scores
