"""The ``prune`` job kind: the smallest circuit of one task at a fixed task loss (method §4).

Config: ``{seed, task, prune: PruneSpec, inputs: {tokenize, train, stats}}``, plus
``control: shuffled_task`` for that control (the task's answers assigned at random per pair,
runtime/tasks/shuffle.py) or ``control: random_init`` (an untrained model; pruned as usual).
``seed`` is the pruning seed: mask init and pair sampling. Reads the model
(``<train>/model.safetensors``), the tokenizer (``<tokenize>/tokenizer.json``) and the means
(``<stats>/means.safetensors``, only for ``ablation: mean``); writes ``circuit.json`` and returns
the results of docs/jobs.md. A task with no circuit that meets the threshold is a result
(``found: false`` with a reason), not a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from runtime.data.tokenizer import check_single_tokens, load_tokenizer
from runtime.data.tokens import TOKENIZER_FILE, open_tokens
from runtime.io import write_json_atomic
from runtime.job import Progress
from runtime.jobs.train import MODEL_FILE
from runtime.pruning.ablation import MEANS_FILE, load_means
from runtime.pruning.circuit import SITE_KINDS, circuit_to_json, count_edges
from runtime.pruning.evidence import EvidenceLimits, write_evidence
from runtime.pruning.pairs import PairBatch, encode_pairs
from runtime.pruning.prune import protocol_judge, prune
from runtime.tasks import get_task
from runtime.tasks.base import Split
from runtime.tasks.shuffle import shuffle_answers
from runtime.training.checkpoint import load_model
from runtime.training.train import describe_device, pick_device
from spec.recipe import PruneSpec

CIRCUIT_FILE = "circuit.json"


def run(
    config: dict[str, Any], job_dir: Path, workspace: Path, progress: Progress
) -> dict[str, Any]:
    spec = PruneSpec.model_validate(config["prune"])
    seed = int(config["seed"])
    inputs = {name: workspace / rel for name, rel in config["inputs"].items()}
    device = pick_device("auto")
    model = load_model(inputs["train"] / MODEL_FILE, map_location=device)
    tokenizer = load_tokenizer(inputs["tokenize"] / TOKENIZER_FILE)

    # Tokenize the task; its answers must be single tokens or the task loss is meaningless.
    task = get_task(config["task"])
    offenders = check_single_tokens(tokenizer, task.candidates)
    if offenders:
        raise ValueError(
            f"task {task.name!r}: candidates {offenders} are not single tokens under "
            f"{inputs['tokenize'] / TOKENIZER_FILE}; re-run tokenize with them in required_tokens"
        )
    means = load_means(inputs["stats"] / MEANS_FILE) if spec.ablation == "mean" else None
    context = model.cfg.context

    def pairs(n: int, split: Split) -> PairBatch:
        drawn = task.pairs(n, split, seed)
        if config.get("control") == "shuffled_task":  # the nonsense task of the same tokens
            drawn = shuffle_answers(drawn, f"{task.name}:{split}:{seed}")
        return encode_pairs(drawn, tokenizer, task.candidates, context)

    train, heldout = pairs(spec.train_pairs, "train"), pairs(spec.heldout_pairs, "heldout")
    test = pairs(spec.test_pairs, "test").without(heldout)

    result = prune(model, train, heldout, test, means, spec, seed,
                   progress=lambda info: progress({"task": task.name, **info}))

    calibration = result.calibration
    results: dict[str, Any] = {
        "task": task.name,
        "loss_threshold": spec.loss_threshold,
        "ablation": spec.ablation,
        "k_coef": spec.k_coef,
        "calibrate": spec.calibrate,
        "freeze_norms": spec.freeze_norms,
        "silent_zero": spec.silent_zero,
        "full_model_loss": result.full_model_loss,
        "found": result.found,
        "reason": result.reason,
        "achieved_loss": result.achieved_loss,
        "sufficiency_loss": result.sufficiency_loss,
        "necessity_loss": result.necessity_loss,
        "random_circuit_loss": result.random_circuit_loss,
        "kl_to_full": result.kl_to_full,
        "calibration_scale": None if calibration is None else calibration.scale,
        "tied_nodes": result.tied_nodes,
        "n_trials": len(result.trials),
        "trials": [outcome.row() for outcome in result.trials],
        "n_test_pairs": len(test),
        "n_nodes": None, "nodes_by_kind": None, "n_edges": None, "edges_by_type": None,
        "device": describe_device(device),
        "prune_time_s": result.wall_time_s,
    }
    if result.circuit is not None:
        edges_by_type = count_edges(result.circuit, model)
        results.update(
            n_nodes=result.circuit.n_nodes,
            nodes_by_kind=result.circuit.nodes_by_kind(),
            n_edges=sum(edges_by_type.values()),
            edges_by_type=edges_by_type,
        )
        # The explorer's files: the edges as a table, and what each kept node responds to.
        subset = heldout.pairs(torch.arange(min(len(heldout), EvidenceLimits().ablation_pairs)))
        judge = protocol_judge(model, spec, means, train.to(device), subset.to(device))
        write_evidence(job_dir, model, result.circuit, result.tau, heldout_pairs=heldout,
                       tokens=open_tokens(inputs["tokenize"], "heldout"), tokenizer=tokenizer,
                       judge=judge, sample=task.pairs(1, "heldout", seed)[0])
        document = circuit_to_json(result.circuit, model, scores=result.tau, extra={
            key: results[key] for key in (
                "task", "loss_threshold", "ablation", "found", "achieved_loss",
                "full_model_loss", "sufficiency_loss", "necessity_loss", "random_circuit_loss",
                "kl_to_full")
        })
    else:
        document = {"task": task.name, "found": False, "reason": result.reason, "nodes": [],
                    "nodes_by_kind": dict.fromkeys(SITE_KINDS, 0), "edges": []}
    document["history"] = result.history
    write_json_atomic(job_dir / CIRCUIT_FILE, document)
    return results
