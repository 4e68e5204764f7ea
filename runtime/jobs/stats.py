"""The ``stats`` job kind: mean activation of every node site, for mean ablation (method §4).

Config: ``{seed, mean_tokens, inputs: {tokenize, train}}`` (the compiler's shape; a
``prune: PruneSpec`` sub-dict with ``mean_tokens``, as docs/jobs.md first described, is accepted
too). Reads the train job's ``model.safetensors`` and the tokenize job's ``train.bin``; writes
``means.safetensors`` (site name → ``(width,)`` float32).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from runtime.data.tokens import open_tokens
from runtime.job import Progress
from runtime.jobs.train import MODEL_FILE
from runtime.pruning.ablation import MEANS_FILE, compute_site_means, save_means
from runtime.training.checkpoint import load_model
from runtime.training.train import describe_device, pick_device

# Sequences per forward pass; memory only, the means do not depend on it.
BATCH = {"cpu": 8, "cuda": 64}


def mean_tokens(config: dict[str, Any]) -> int:
    if "mean_tokens" in config:
        return int(config["mean_tokens"])
    return int(config["prune"]["mean_tokens"])


def run(
    config: dict[str, Any], job_dir: Path, workspace: Path, progress: Progress
) -> dict[str, Any]:
    started = time.time()
    device = pick_device("auto")
    model = load_model(workspace / config["inputs"]["train"] / MODEL_FILE, map_location=device)
    tokens = open_tokens(workspace / config["inputs"]["tokenize"], "train")
    n_tokens = mean_tokens(config)
    means = compute_site_means(
        model, tokens, n_tokens, BATCH[device.type], model.cfg.context,
        progress=lambda done: progress({"tokens": done, "total_tokens": n_tokens}),
    )
    save_means(job_dir / MEANS_FILE, means)
    return {
        "n_tokens": n_tokens,
        "n_sites": len(means),
        "n_nodes": sum(mean.numel() for mean in means.values()),
        "device": describe_device(device),
        "wall_time_s": time.time() - started,
    }
