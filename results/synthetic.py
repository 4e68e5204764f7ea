"""Synthetic job folders, written exactly as docs/jobs.md lays them out.

For the store's tests and benchmark, and for previewing plots and the report without training
anything. Numbers are made up but shaped like real runs (a decaying loss, an annealed kept
fraction); nothing here is imported by the ingest path.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from results.diagram import SITE_ROWS
from results.ingest import EDGES_SCHEMA, METRICS_PARQUET, METRICS_SCHEMA
from runtime.job import (
    CIRCUIT_FILE,
    COMMAND_FILE,
    CONFIG_FILE,
    EDGES_FILE,
    EVIDENCE_FILE,
    JOBS_DIR,
    LOG_FILE,
    METRICS_FILE,
    RESULTS_FILE,
)

SITE_KINDS = SITE_ROWS[:-1]  # every per-layer site kind (all but final_in)
FINISHED_AT = 1_764_000_000.0  # fixed, so the same call writes the same bytes


def make_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def write_job(
    workspace: Path,
    kind: str,
    config: dict[str, Any],
    results: dict[str, Any] | None,
    files: dict[str, str | bytes] | None = None,
) -> Path:
    """Write one job folder; ``results=None`` leaves it pending (no results.json)."""
    # Real keys hash only the config; hashing the results too keeps made-up variants apart.
    key = config.get("key") or make_key(kind, config, results)
    folder = Path(workspace) / JOBS_DIR / f"{kind}-{key[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    config = {"kind": kind, "key": key, "inputs": {}, **config}
    (folder / CONFIG_FILE).write_text(_dump(config))
    (folder / COMMAND_FILE).write_text(f"python -m runtime.job {folder}\n")
    (folder / LOG_FILE).write_text(f"{kind} job {key[:12]}\nstep 0\ndone\n")
    for name, data in (files or {}).items():
        path = folder / name
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    if results is not None:
        results = {"kind": kind, "key": key, "started_at": FINISHED_AT - 60.0,
                   "finished_at": FINISHED_AT, "host": "node1", "backend": "local", **results}
        (folder / RESULTS_FILE).write_text(_dump(results))
    return folder


def metrics_rows(n: int, target: float, final_loss: float, tokens_per_step: int = 4096
                 ) -> dict[str, list[Any]]:
    """Columns of ``n`` logged steps: loss decays to ``final_loss``, kept fraction anneals."""
    steps = list(range(n))
    progress = [s / max(1, n - 1) for s in steps]
    kept = [1.0 if p < 0.01 else target if p > 0.5 else 1 - (1 - target) * (p - 0.01) / 0.49
            for p in progress]
    loss = [final_loss + 4.0 * math.exp(-6 * p) for p in progress]
    return {
        "step": steps, "tokens": [s * tokens_per_step for s in steps], "loss": loss,
        "heldout_loss": [x + 0.05 if s % 100 == 0 or s == n - 1 else None
                         for s, x in zip(steps, loss, strict=True)],
        "lr": [0.01 * min(1.0, (s + 1) / max(1, n // 100)) * (1 - p)
               for s, p in zip(steps, progress, strict=True)],
        "kept_fraction": kept, "grad_norm": [1.0 + 0.1 * (s % 7) for s in steps],
        "tokens_per_s": [50_000.0] * n,
    }


def _jsonl(columns: dict[str, list[Any]]) -> str:
    names = list(columns)
    rows = (zip(names, values, strict=True) for values in zip(*columns.values(), strict=True))
    return "".join(json.dumps({k: v for k, v in row if v is not None}) + "\n" for row in rows)


def train_job(
    workspace: Path,
    *,
    sparsity_target: float,
    heldout_loss: float,
    d_model: int = 64,
    n_layer: int = 2,
    seed: int = 0,
    recipe: str = "demo",
    n_metrics: int = 50,
    metrics_format: str = "jsonl",
    done: bool = True,
    control: str | None = None,
) -> Path:
    config = {
        "seed": seed,
        **({"control": control} if control else {}),
        "data": {"corpus": "synthetic"},
        "model": {"n_layer": n_layer, "d_model": d_model, "d_head": 16, "d_mlp": None},
        "train": {"tokens": n_metrics * 4096},
        "sparsity": {"target": sparsity_target,
                     "anneal": {"curve": "linear", "start": 0.01, "end": 0.5}},
        "inputs": {"tokenize": "jobs/tokenize-000000000000"},
        "meta": {"recipe": recipe, "recipe_hash": make_key(recipe)[:16],
                 "sweep_point": {"sparsity.target": sparsity_target, "model.d_model": d_model},
                 "git_commit": "0123abcd", "git_dirty": False, "code_version": "0.1.0",
                 "package_versions": {"torch": "2.5.0"}},
    }
    n_params = 12 * n_layer * d_model * d_model
    columns = metrics_rows(n_metrics, sparsity_target, heldout_loss - 0.05)
    files: dict[str, str | bytes] = {}
    if metrics_format == "parquet":
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table(columns, schema=METRICS_SCHEMA), sink)
        files[METRICS_PARQUET] = sink.getvalue().to_pybytes()
    else:
        files[METRICS_FILE] = _jsonl(columns)
    results = {
        "heldout_loss": heldout_loss, "train_loss": heldout_loss - 0.05, "n_params": n_params,
        "n_nonzero": int(n_params * sparsity_target), "kept_fraction": sparsity_target,
        "tokens": n_metrics * 4096,
        "steps": n_metrics, "wall_time_s": 60.0, "device": "cpu", "tokens_per_s": 50_000.0,
    }
    return write_job(workspace, "train", config, results if done else None, files)


def circuit_nodes(n_nodes: int, n_layer: int, seed: int) -> list[dict[str, Any]]:
    """``n_nodes`` distinct (site, index) pairs spread over layers and site kinds."""
    nodes: list[dict[str, Any]] = []
    i = 0
    while len(nodes) < n_nodes:
        layer = (i * 7 + seed) % (n_layer + 1)
        site = "final_in" if layer == n_layer else f"l{layer}.{SITE_KINDS[(i + seed) % 8]}"
        nodes.append({"site": site, "index": (i * 13 + seed) % 64})
        i += 1
    unique = {(n["site"], n["index"]): n for n in nodes}
    return list(unique.values())


def circuit_edges(nodes: list[dict[str, Any]], n_edges: int) -> bytes:
    """``n_edges`` rows of a ``circuit_edges.parquet`` between the circuit's nodes: from any
    node into its residual writes (attn_out / mlp_out), weights of both signs."""
    writes = [n for n in nodes if n["site"].endswith("_out")] or nodes
    rows = [{"src_site": src["site"], "src_index": src["index"], "dst_site": dst["site"],
             "dst_index": dst["index"], "edge_type": "mlp_neuron->mlp_out",
             "param": f"blocks.{dst['site'][1:].split('.')[0]}.mlp.proj.weight",
             "weight": ((i * 37) % 100 - 49.5) / 50}
            for i in range(n_edges if nodes else 0)
            for src, dst in [(nodes[i % len(nodes)], writes[(i // len(nodes)) % len(writes)])]]
    table = pa.Table.from_pylist(rows, schema=EDGES_SCHEMA.remove(0))  # no prune_key column
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def evidence(task: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """An ``evidence.json`` as runtime/pruning/evidence.py writes it, made up. One context token
    is markup, so pages that show evidence are seen to escape it."""
    tokens = ["def", " f", "(", "x", "):", "\n", "    ", "return", " x", "</script><b>", " +"]
    return {
        "limits": {"max_nodes": 256, "contexts_per_node": 2, "before": 10, "after": 3,
                   "scan_tokens": 32768, "ablation_pairs": 64},
        "n_nodes": len(nodes), "n_with_evidence": len(nodes),
        "classes": [{"answer": ":", "prompts": 64}, {"answer": "\n", "prompts": 64}],
        "sample": {"prompts": [f"# {task}\nwhile True", f"# {task}\nreturn True"],
                   "answers": [":", "\n"]},
        "ablation_pairs": 64, "circuit_loss": 0.12,
        "nodes": [{"site": n["site"], "index": n["index"],
                   "mean": [0.1 * (i % 7), -0.05 * (i % 5)], "ablated_loss": 0.12 + 0.01 * i,
                   "contexts": [{"tokens": tokens, "at": 3 + i % 6, "act": 2.0 - 0.1 * j}
                                for j in range(2)]}
                  for i, n in enumerate(nodes)],
    }


def _wire_to_final(nodes: list[dict[str, Any]]) -> None:
    """Move one residual write onto a channel the circuit's ``final_in`` reads, as a real
    circuit's last writes are: then "edges into the unembedding" has an answer."""
    finals = [n for n in nodes if n["site"] == "final_in"]
    writes = [n for n in nodes if n["site"].endswith("_out")]
    taken = {(n["site"], n["index"]) for n in nodes}
    if finals and writes and (writes[0]["site"], finals[0]["index"]) not in taken:
        writes[0]["index"] = finals[0]["index"]


def prune_job(
    workspace: Path,
    train_dir: Path,
    task: str,
    n_edges: int,
    *,
    found: bool = True,
    loss_threshold: float = 0.15,
    ablation: str = "mean",
    k_coef: float = 1e-4,
    n_nodes: int = 12,
    prune_seed: int = 0,
    control: str | None = None,
    full_model_loss: float = 0.05,
    calibrate: bool = True,
    freeze_norms: bool = False,
) -> Path:
    train_config = json.loads((train_dir / CONFIG_FILE).read_text())
    n_layer = train_config["model"]["n_layer"]
    config = {
        "seed": prune_seed, "task": task,
        **({"control": control} if control else {}),
        "prune": {"tasks": [task], "loss_threshold": loss_threshold, "ablation": ablation,
                  "k_coef": k_coef, "calibrate": calibrate, "freeze_norms": freeze_norms},
        "inputs": {"tokenize": "jobs/tokenize-000000000000",
                   "train": f"{JOBS_DIR}/{train_dir.name}", "stats": "jobs/stats-000000000000"},
        "meta": train_config.get("meta", {}),
    }
    nodes = circuit_nodes(n_nodes, n_layer, seed=len(task) + n_edges)
    _wire_to_final(nodes)
    by_kind: dict[str, int] = {}
    for node in nodes:
        kind = node["site"].split(".")[-1]
        by_kind[kind] = by_kind.get(kind, 0) + 1
    results = {
        "task": task, "loss_threshold": loss_threshold,
        "achieved_loss": loss_threshold * 0.9 if found else 0.4,
        "full_model_loss": full_model_loss,
        "n_nodes": len(nodes), "nodes_by_kind": by_kind, "n_edges": n_edges,
        "edges_by_type": {"mlp_neuron->mlp_out": n_edges},
        "sufficiency_loss": loss_threshold * 0.9, "necessity_loss": 0.69,
        "random_circuit_loss": 0.6, "kl_to_full": 0.3, "calibrate": calibrate,
        "freeze_norms": freeze_norms,
        "silent_zero": False, "calibration_scale": 1.2, "tied_nodes": 0, "n_test_pairs": 512,
        "found": found, "reason": None if found else "threshold not reached",
        # a two-trial search: the recipe's own setting and one that found a bigger circuit
        "n_trials": 2,
        "trials": [{"trial": t, "k_coef": k_coef * 10**t, "lr": 3e-3, "temperature": 1.0,
                    "steps_run": 400, "nodes_on": n_nodes, "tied_nodes": 0, "prefix_k": n_nodes,
                    "n_nodes": n_nodes + t if found else None,
                    "n_edges": n_edges + t if found else None,
                    "loss": loss_threshold * 0.9 if found else None, "evaluations": 40}
                   for t in range(2)],
    }
    files: dict[str, str | bytes] = {CIRCUIT_FILE: _dump({"task": task, "nodes": nodes}),
             EDGES_FILE: circuit_edges(nodes, n_edges),
             EVIDENCE_FILE: _dump(evidence(task, nodes))}
    return write_job(workspace, "prune", config, results, files)


def rerun_job(folder: Path, code_version: str, **inputs: Path) -> Path:
    """A copy of a job folder as newer code would leave it: a new key, a finish an hour later.

    ``inputs`` names the job's re-run inputs by role (``train=<folder>``), so that a re-pruned
    circuit reads the re-trained model, as a re-run recipe's would.
    """
    config = json.loads((folder / CONFIG_FILE).read_text())
    results = json.loads((folder / RESULTS_FILE).read_text())
    key = make_key(config["key"], code_version)
    copy = folder.with_name(f"{config['kind']}-{key[:12]}")
    shutil.copytree(folder, copy)
    config["key"] = results["key"] = key
    config["meta"]["code_version"] = code_version
    config["inputs"].update({role: str(Path(config["inputs"][role]).with_name(path.name))
                             for role, path in inputs.items()})  # written as the old one was
    results["finished_at"] += 3600.0
    (copy / CONFIG_FILE).write_text(_dump(config))
    (copy / RESULTS_FILE).write_text(_dump(results))
    return copy


def groundtruth_job(
    workspace: Path,
    shape: str,
    *,
    k_coef: float = 1e-4,
    calibrate: bool = True,
    n_nodes: int = 4,
    n_correct: int = 4,
    planted_nodes: int = 4,
    prune_seed: int = 0,
) -> Path:
    """A finished groundtruth job (runtime/jobs/groundtruth.py) whose circuit has ``n_nodes``
    nodes, ``n_correct`` of them planted."""
    setting = f"prune.k_coef={k_coef}"
    config = {
        "seed": prune_seed, "shape": shape,
        "prune": {"loss_threshold": 0.1, "ablation": "mean", "k_coef": k_coef, "lr": 3e-3,
                  "temperature": 1.0, "steps": 300, "calibrate": calibrate,
                  "freeze_norms": False, "silent_zero": False, "search": {"trials": 2}},
        "meta": {"recipe": "groundtruth", "sweep_point": {"prune.k_coef": k_coef},
                 "labels": [f"{setting}/{shape}"]},
    }
    results = {
        "shape": shape, "loss_threshold": 0.1, "found": True, "reason": None,
        "node_precision": n_correct / n_nodes, "node_recall": n_correct / planted_nodes,
        "n_nodes": n_nodes, "planted_nodes": planted_nodes,
        "missed_nodes": [f"l0.mlp_in[{i}]" for i in range(planted_nodes - n_correct)],
        "extra_nodes": [f"l0.mlp_out[{i}]" for i in range(n_nodes - n_correct)],
        "n_edges": n_nodes // 2, "planted_edges": planted_nodes // 2,
        "edges_by_type": {"mlp_in->mlp_neuron": n_nodes // 2}, "full_model_loss": 1e-4,
        "achieved_loss": 0.02, "sufficiency_loss": 0.03, "necessity_loss": 0.69,
        "prune_time_s": 20.0,
    }
    return write_job(workspace, "groundtruth", config, results)
