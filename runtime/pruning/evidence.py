"""What a reader needs to interpret a circuit: its edges as a table, and evidence per kept node.

Written by the prune job next to ``circuit.json`` once a circuit is found:

- ``circuit_edges.parquet``: one row per counted edge (the rule of ``runtime.pruning.circuit``,
  via ``list_edges``), with the weight matrix it came from (the entry is
  ``param[dst_index, src_index]``) and its value. Bounded by the circuit.
- ``evidence.json``: for up to ``EvidenceLimits.max_nodes`` kept nodes (all of them when the
  circuit is smaller; else the highest-τ ones), three things:

  1. the node's mean activation at the last position of the task's prompts, per prompt class
     (prompts grouped by their correct answer, the two most frequent answers);
  2. its top-activating contexts (by |activation|) among ``scan_tokens`` held-out pretraining
     tokens, a few tokens either side, the activating token marked;
  3. the task loss of the circuit without this one node (the rest of the circuit kept, everything
     else ablated as in pruning), against the circuit's own loss on the same pairs.

  Bounded: ``max_nodes × contexts_per_node × (before + 1 + after)`` tokens at most, ≈ 0.2 MB.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from runtime.io import write_atomic, write_json_atomic
from runtime.job import EDGES_FILE, EVIDENCE_FILE
from runtime.model import SparseGPT
from runtime.pruning.ablation import hooked, window_starts
from runtime.pruning.circuit import EDGE_TYPES, Circuit, edge_type_name, list_edges, parse_site
from runtime.pruning.pairs import PairBatch
from runtime.pruning.prune import Judge
from runtime.tasks.base import TaskPair

EDGES_SCHEMA = pa.schema([
    ("src_site", pa.string()), ("src_index", pa.int32()),
    ("dst_site", pa.string()), ("dst_index", pa.int32()),
    ("edge_type", pa.string()),  # attn_in->q, …, mlp_neuron->mlp_out
    # The weight matrix, e.g. blocks.0.attn.q_proj.weight; the edge is its entry
    # [dst_index, src_index] (nn.Linear's [out, in] layout).
    ("param", pa.string()),
    ("weight", pa.float64()),
])
_WEIGHT_NAME = {edge_type_name(src, dst): name for src, dst, name in EDGE_TYPES}


@dataclass(frozen=True)
class EvidenceLimits:
    max_nodes: int = 256  # nodes with evidence; the rest of a bigger circuit has none
    contexts_per_node: int = 4
    before: int = 10  # tokens shown before the activating one
    after: int = 3  # and after it
    scan_tokens: int = 32_768  # held-out pretraining tokens searched for top contexts
    ablation_pairs: int = 64  # held-out task pairs for the single-node ablations


def edges_table(circuit: Circuit, model: SparseGPT) -> pa.Table:
    """Every counted edge as a row of ``EDGES_SCHEMA``."""
    rows = []
    for edge in list_edges(circuit, model):
        (src, src_index), (dst, dst_index) = edge["src"], edge["dst"]
        layer, _ = parse_site(dst)
        rows.append({
            "src_site": src, "src_index": src_index, "dst_site": dst, "dst_index": dst_index,
            "edge_type": edge["type"], "param": f"blocks.{layer}.{_WEIGHT_NAME[edge['type']]}",
            "weight": edge["weight"],
        })
    return pa.Table.from_pylist(rows, schema=EDGES_SCHEMA)


def write_edges(job_dir: Path, circuit: Circuit, model: SparseGPT) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(edges_table(circuit, model), sink)
    write_atomic(job_dir / EDGES_FILE, sink.getvalue().to_pybytes())


def evidence_nodes(circuit: Circuit, tau: Tensor | None, max_nodes: int) -> list[tuple[str, int]]:
    """The kept nodes that get evidence: all, or the ``max_nodes`` of highest τ (model order)."""
    nodes = circuit.nodes()
    if len(nodes) <= max_nodes or tau is None:
        return nodes[:max_nodes]
    layout = circuit.layout
    flat = torch.tensor([layout.index(site, ch) for site, ch in nodes])
    order = torch.sort(-tau.cpu()[flat], stable=True).indices[:max_nodes].sort().values
    return [nodes[int(i)] for i in order]


def _by_site(nodes: list[tuple[str, int]]) -> dict[str, Tensor]:
    channels: dict[str, list[int]] = {}
    for site, channel in nodes:
        channels.setdefault(site, []).append(channel)
    return {site: torch.tensor(chs) for site, chs in channels.items()}


@torch.no_grad()
def class_means(model: SparseGPT, batch: PairBatch, nodes: list[tuple[str, int]],
                label_of: dict[int, str]) -> tuple[list[dict[str, Any]], dict[tuple[str, int],
                                                                            list[float]]]:
    """Mean activation of each node at each prompt's last token, per class of correct answer."""
    channels = _by_site(nodes)
    answers = batch.candidates[:, 0].cpu()
    classes = [answer for answer, _ in Counter(answers.tolist()).most_common(2)]
    seen: dict[str, list[Tensor]] = {site: [] for site in channels}

    def record(site: str, x: Tensor) -> Tensor:
        if site in channels:
            # Block sites see (B, T, C); final_in sees (B, C), already at the asked positions.
            at_last = x[torch.arange(len(x), device=x.device), batch.last] if x.dim() == 3 else x
            seen[site].append(at_last[:, channels[site].to(x.device)].float().cpu())
        return x

    with hooked(model, record):
        batch.logits(model)
    means: dict[tuple[str, int], list[float]] = {}
    for site, chs in channels.items():
        acts = torch.cat(seen[site])  # (2N, n_channels)
        per_class = [acts[answers == c].mean(0) for c in classes]
        for j, ch in enumerate(chs.tolist()):
            means[(site, ch)] = [float(m[j]) for m in per_class]
    summary = [{"answer": label_of.get(c, str(c)), "prompts": int((answers == c).sum())}
               for c in classes]
    return summary, means


@torch.no_grad()
def top_contexts(model: SparseGPT, tokens: np.ndarray, nodes: list[tuple[str, int]],
                 decode: Any, limits: EvidenceLimits, batch: int = 16
                 ) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Each node's ``contexts_per_node`` strongest activations over held-out windows."""
    context = min(model.cfg.context, len(tokens))
    starts = window_starts(len(tokens), context, max(1, limits.scan_tokens // context))
    channels = _by_site(nodes)
    k = limits.contexts_per_node
    # Per site: (n_channels, k) best |activation| so far, the signed value and its position.
    best = {s: (torch.full((len(c), k), -1.0), torch.zeros(len(c), k),
                torch.zeros(len(c), k, dtype=torch.long)) for s, c in channels.items()}
    device = next(model.parameters()).device
    offset = 0  # flat position of the current batch's first token in window order

    def record(site: str, x: Tensor) -> Tensor:
        if site in channels:
            acts = x[..., channels[site].to(x.device)].float().cpu()  # (B, T, n)
            flat = acts.reshape(-1, acts.shape[-1]).T  # (n, B·T)
            top = flat.abs().topk(min(k, flat.shape[1]), dim=1)
            mag, val, pos = best[site]
            mag = torch.cat([mag, top.values], 1)
            val = torch.cat([val, flat.gather(1, top.indices)], 1)
            pos = torch.cat([pos, top.indices + offset], 1)
            keep = mag.topk(k, dim=1).indices
            best[site] = (mag.gather(1, keep), val.gather(1, keep), pos.gather(1, keep))
        return x

    with hooked(model, record):
        for first in range(0, len(starts), batch):
            rows = np.stack([np.asarray(tokens[s : s + context], dtype=np.int64)
                             for s in starts[first : first + batch]])
            model(torch.from_numpy(rows).to(device))
            offset += rows.size
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for site, chs in channels.items():
        mag, val, pos = best[site]
        for j, ch in enumerate(chs.tolist()):
            found = []
            for m, v, p in zip(mag[j].tolist(), val[j].tolist(), pos[j].tolist(), strict=True):
                if m <= 0:  # never active (or fewer positions than k): nothing to show
                    continue
                window, t = divmod(p, context)
                lo, hi = max(0, t - limits.before), min(context, t + limits.after + 1)
                ids = np.asarray(tokens[starts[window] + lo : starts[window] + hi]).tolist()
                found.append({"tokens": [decode([i]) for i in ids], "at": t - lo,
                              "act": round(v, 4)})
            out[(site, ch)] = found
    return out


def single_node_ablations(circuit: Circuit, nodes: list[tuple[str, int]], judge: Judge
                          ) -> tuple[float, dict[tuple[str, int], float]]:
    """The circuit's task loss as pruning judged it (same fill, calibration and norms, on the
    judge's pairs), and its loss without each one of ``nodes``: one batched evaluation."""
    layout = circuit.layout
    masks = circuit.kept.unsqueeze(0).repeat(len(nodes) + 1, 1)
    for row, (site, channel) in enumerate(nodes, start=1):
        masks[row, layout.index(site, channel)] = False
    base, *losses = judge.losses(masks)
    return base, dict(zip(nodes, losses, strict=True))


def write_evidence(job_dir: Path, model: SparseGPT, circuit: Circuit, tau: Tensor | None, *,
                   heldout_pairs: PairBatch, tokens: np.ndarray, tokenizer: Any,
                   judge: Judge, sample: TaskPair,
                   limits: EvidenceLimits | None = None) -> dict[str, Any]:
    """Write ``circuit_edges.parquet`` and ``evidence.json`` (computed as the module docstring
    says) beside the prune job's ``circuit.json``; returns the evidence document."""
    limits = limits or EvidenceLimits()
    write_edges(job_dir, circuit, model)
    model.eval()
    device = next(model.parameters()).device
    heldout_pairs = heldout_pairs.to(device)
    nodes = evidence_nodes(circuit, tau, limits.max_nodes)
    answer_ids = heldout_pairs.candidates.unique().tolist()
    labels = {i: tokenizer.decode([i]) for i in answer_ids}
    classes, means = class_means(model, heldout_pairs, nodes, labels)
    contexts = top_contexts(model, tokens, nodes, tokenizer.decode, limits)
    base, ablated = single_node_ablations(circuit, nodes, judge)
    document = {
        "limits": asdict(limits),
        "n_nodes": circuit.n_nodes,
        "n_with_evidence": len(nodes),
        "classes": classes,
        "sample": {"prompts": list(sample.prompts), "answers": list(sample.answers)},
        "ablation_pairs": judge.n_pairs,
        "circuit_loss": base,
        "nodes": [{"site": site, "index": ch, "mean": means[(site, ch)],
                   "ablated_loss": ablated[(site, ch)], "contexts": contexts[(site, ch)]}
                  for site, ch in nodes],
    }
    write_json_atomic(job_dir / EVIDENCE_FILE, document)
    return document
