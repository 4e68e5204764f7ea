"""The ``stats`` and ``prune`` job kinds end to end through ``runtime.job`` on a tiny workspace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from runtime.data.synthetic import synthetic_programs
from runtime.data.tokenizer import (
    check_single_tokens,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from runtime.job import EDGES_FILE, EVIDENCE_FILE, run_job
from runtime.jobs.stats import mean_tokens
from runtime.model import GPTConfig, SparseGPT
from runtime.pruning.scores import score_workspace
from runtime.tasks import TASKS, get_task
from runtime.training.checkpoint import save_model

TASK = "single_double_quote"
RESULT_FIELDS = {
    "task", "loss_threshold", "achieved_loss", "full_model_loss", "n_nodes", "nodes_by_kind",
    "n_edges", "edges_by_type", "sufficiency_loss", "necessity_loss", "found", "reason",
}


def make_workspace(root: Path, required: tuple[str, ...]) -> Path:
    """tokenize and train job folders as those jobs would leave them (an untrained model)."""
    texts = [text for _, text in synthetic_programs(0, 20_000)]
    tokenizer = train_tokenizer(texts, 320, required)
    tokenize = root / "jobs" / "tokenize-x"
    tokenize.mkdir(parents=True)
    save_tokenizer(tokenizer, tokenize / "tokenizer.json")
    ids = np.array(tokenizer.encode("\n".join(texts)).ids, dtype=np.uint16)
    ids.tofile(tokenize / "train.bin")
    ids[-4000:].tofile(tokenize / "heldout.bin")
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tokenizer.get_vocab_size(), context=64, n_layer=1, d_model=16,
                    d_head=8, d_mlp=32)
    train = root / "jobs" / "train-x"
    train.mkdir()
    save_model(SparseGPT(cfg), cfg, train / "model.safetensors")
    return root


def write_config(root: Path, name: str, config: dict) -> Path:
    job_dir = root / "jobs" / name
    job_dir.mkdir()
    (job_dir / "config.json").write_text(json.dumps({"key": name * 4, **config}))
    return job_dir


def prune_config(threshold: float) -> dict:
    return {
        "kind": "prune", "seed": 0, "task": TASK,
        "prune": {"loss_threshold": threshold, "steps": 3, "batch_size": 4, "train_pairs": 8,
                  "heldout_pairs": 8},
        "inputs": {"tokenize": "jobs/tokenize-x", "train": "jobs/train-x",
                   "stats": "jobs/stats-x"},
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("ws"), get_task(TASK).candidates)
    stats = write_config(root, "stats-x", {
        "kind": "stats", "seed": 0, "mean_tokens": 300,
        "inputs": {"tokenize": "jobs/tokenize-x", "train": "jobs/train-x"},
    })
    results = run_job(stats)
    assert results["n_sites"] == 9 and results["n_tokens"] == 300
    assert (stats / "means.safetensors").is_file()
    return root


def test_prune_job_finds_a_circuit(workspace: Path) -> None:
    # An untrained model sits near chance (ln 2), so a loose threshold is reachable.
    job_dir = write_config(workspace, "prune-found", prune_config(threshold=2.0))
    results = run_job(job_dir)
    assert results.keys() >= RESULT_FIELDS
    assert results["found"] and results["reason"] is None
    assert results["achieved_loss"] <= 2.0
    assert results["n_edges"] == sum(results["edges_by_type"].values())
    circuit = json.loads((job_dir / "circuit.json").read_text())
    assert circuit["n_nodes"] == results["n_nodes"] == len(circuit["nodes"])


def test_prune_job_reports_an_unreachable_threshold(workspace: Path) -> None:
    job_dir = write_config(workspace, "prune-missed", prune_config(threshold=1e-3))
    results = run_job(job_dir)
    assert results.keys() >= RESULT_FIELDS
    assert not results["found"] and "reached the threshold 0.001" in results["reason"]
    assert results["n_edges"] is None
    assert json.loads((job_dir / "circuit.json").read_text())["found"] is False


def test_prune_job_refuses_multi_token_candidates(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, required=())  # nothing forces the answers to be one token
    job_dir = write_config(root, "prune-bad", prune_config(threshold=2.0))
    with pytest.raises(ValueError, match="not single tokens"):
        run_job(job_dir)
    assert not (job_dir / "results.json").exists()


def test_stats_reads_mean_tokens_from_either_config_shape() -> None:
    assert mean_tokens({"mean_tokens": 5}) == 5  # the compiler's shape
    assert mean_tokens({"prune": {"mean_tokens": 7}}) == 7  # docs/jobs.md's first shape



def test_prune_job_writes_edges_and_node_evidence(workspace: Path) -> None:
    # An untrained model is at chance, so a loose threshold keeps no node: both files, empty.
    # (tests/runtime/pruning/test_evidence.py checks their content on a circuit with nodes.)
    job_dir = write_config(workspace, "prune-evidence", prune_config(threshold=2.0))
    results = run_job(job_dir)
    assert pq.read_table(job_dir / EDGES_FILE).num_rows == results["n_edges"] == 0
    evidence = json.loads((job_dir / EVIDENCE_FILE).read_text())
    assert evidence["nodes"] == [] and evidence["n_nodes"] == results["n_nodes"] == 0
    assert [c["answer"] for c in evidence["classes"]] == ['")', "')"]
    assert len(evidence["sample"]["prompts"]) == 2


def test_shuffled_task_control_prunes_on_answers_assigned_at_random(workspace: Path) -> None:
    real = run_job(write_config(workspace, "prune-real", prune_config(threshold=2.0)))
    shuffled_config = {**prune_config(threshold=2.0), "control": "shuffled_task"}
    shuffled = run_job(write_config(workspace, "prune-shuffled", shuffled_config))
    assert shuffled.keys() >= RESULT_FIELDS
    # the same model and prompts, other answers: another task loss
    assert shuffled["full_model_loss"] != pytest.approx(real["full_model_loss"])


def test_task_scores_are_the_prune_jobs_full_model_loss(workspace: Path) -> None:
    """`xcompile tasks --score` measures what a prune job measures first, on the same pairs."""
    train = workspace / "jobs" / "train-x"
    (train / "config.json").write_text(json.dumps({
        "kind": "train", "seed": 0, "model": {"d_model": 16, "n_layer": 1},
        "sparsity": {"target": 1.0}, "inputs": {"tokenize": "jobs/tokenize-x"}}))
    (train / "results.json").write_text(json.dumps({"heldout_loss": 5.0}))
    results = run_job(write_config(workspace, "prune-scored", prune_config(threshold=2.0)))
    tokenizer = load_tokenizer(workspace / "jobs" / "tokenize-x" / "tokenizer.json")
    unscorable = sorted(name for name in TASKS
                        if check_single_tokens(tokenizer, get_task(name).candidates))
    assert unscorable  # the tokenizer keeps only the quote task's answers whole
    (scores,) = score_workspace(workspace, [TASK, *unscorable], n_pairs=8)
    assert (scores.job, scores.d_model, scores.sparsity_target, scores.heldout_loss) == (
        "train-x", 16, 1.0, 5.0)
    assert scores.losses[TASK] == pytest.approx(results["full_model_loss"], rel=1e-6)
    assert all(scores.losses[name] is None for name in unscorable)
