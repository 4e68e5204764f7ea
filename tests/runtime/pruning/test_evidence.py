"""The explorer's per-circuit files (runtime/pruning/evidence.py) on a tiny random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.model import GPTConfig, SparseGPT
from runtime.pruning.ablation import hooked, window_starts
from runtime.pruning.circuit import Circuit, NodeLayout, count_edges, list_edges
from runtime.pruning.evidence import (
    EvidenceLimits,
    class_means,
    edges_table,
    evidence_nodes,
    single_node_ablations,
    top_contexts,
)
from runtime.pruning.pairs import PairBatch
from runtime.pruning.prune import Judge, evaluate

VOCAB, CONTEXT = 20, 8


def tiny_model(density: float = 0.5) -> SparseGPT:
    torch.manual_seed(0)
    model = SparseGPT(GPTConfig(vocab_size=VOCAB, context=CONTEXT, n_layer=2, d_model=8,
                                d_head=4, d_mlp=16))
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(torch.rand(param.shape) < density)
    return model.eval()


def half_circuit(model: SparseGPT) -> Circuit:
    layout = NodeLayout.from_model(model)
    return Circuit(layout, torch.rand(layout.n_nodes, generator=torch.Generator().manual_seed(1))
                   < 0.5)


def pairs(n: int = 6) -> PairBatch:
    rng = np.random.default_rng(0)
    prompts = [tuple(rng.integers(2, VOCAB, size=5).tolist() for _ in range(2)) for _ in range(n)]
    return PairBatch.from_ids(prompts, [(0, 1)] * n, CONTEXT)


def activations(model: SparseGPT, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every site's activation on ``idx`` (no positions: (B, T, width) everywhere)."""
    seen: dict[str, torch.Tensor] = {}

    def record(site: str, x: torch.Tensor) -> torch.Tensor:
        seen[site] = x
        return x

    with hooked(model, record), torch.no_grad():
        model(idx)
    return seen


def test_edges_table_is_list_edges_with_the_weight_entry() -> None:
    model = tiny_model()
    circuit = half_circuit(model)
    table = edges_table(circuit, model)
    assert table.num_rows == sum(count_edges(circuit, model).values()) > 0
    rows = table.to_pylist()
    assert [(r["src_site"], r["src_index"], r["dst_site"], r["dst_index"]) for r in rows] == [
        (*e["src"], *e["dst"]) for e in list_edges(circuit, model)]
    for row in rows:
        weight = model.get_parameter(row["param"])
        assert weight[row["dst_index"], row["src_index"]].item() == row["weight"]


def test_evidence_nodes_are_capped_by_tau_in_model_order() -> None:
    model = tiny_model()
    circuit = half_circuit(model)
    nodes = circuit.nodes()
    tau = torch.zeros(circuit.layout.n_nodes)
    chosen = [nodes[5], nodes[1], nodes[9]]
    for rank, (site, channel) in enumerate(chosen):
        tau[circuit.layout.index(site, channel)] = 1.0 - rank * 0.1
    assert evidence_nodes(circuit, tau, 3) == [nodes[1], nodes[5], nodes[9]]
    assert evidence_nodes(circuit, tau, len(nodes)) == nodes


def test_top_contexts_are_the_strongest_activations() -> None:
    model = tiny_model(density=0.8)
    tokens = np.random.default_rng(2).integers(0, VOCAB, size=200).astype(np.uint16)
    nodes = [("l0.mlp_neuron", 3), ("l1.q", 2), ("final_in", 5)]
    limits = EvidenceLimits(contexts_per_node=3, before=2, after=1, scan_tokens=64)
    found = top_contexts(model, tokens, nodes, lambda ids: f"<{ids[0]}>", limits, batch=3)

    # Brute force: every activation of those nodes over the same windows.
    starts = window_starts(len(tokens), CONTEXT, 64 // CONTEXT)
    windows = torch.tensor(np.stack([tokens[s : s + CONTEXT] for s in starts]).astype(int))
    seen = activations(model, windows)
    for site, channel in nodes:
        acts = seen[site][..., channel]  # (windows, T)
        expected = sorted(acts.flatten().tolist(), key=abs, reverse=True)[:3]
        contexts = found[(site, channel)]
        assert [c["act"] for c in contexts] == [round(a, 4) for a in expected]
        for context in contexts:
            window, t = ((acts - context["act"]).abs() < 1e-4).nonzero()[0].tolist()
            assert context["tokens"][context["at"]] == f"<{int(windows[window, t])}>"
            assert len(context["tokens"]) <= limits.before + 1 + limits.after


def test_class_means_average_the_last_position_per_answer() -> None:
    model = tiny_model(density=0.8)
    batch = pairs()
    classes, means = class_means(model, batch, [("l1.mlp_out", 4)], {0: "A", 1: "B"})
    assert classes == [{"answer": "A", "prompts": 6}, {"answer": "B", "prompts": 6}]
    at_last = activations(model, batch.tokens)["l1.mlp_out"][torch.arange(12), batch.last, 4]
    # Rows 2i answer 0 ("A"), rows 2i + 1 answer 1 ("B").
    expected = [float(at_last[0::2].mean()), float(at_last[1::2].mean())]
    assert means[("l1.mlp_out", 4)] == expected


def test_single_node_ablations_measure_the_circuit_without_one_node() -> None:
    model = tiny_model(density=0.8)
    with torch.no_grad():
        model.lm_head.weight[:, 6] = 0.0  # final_in channel 6 reaches no logit
    layout = NodeLayout.from_model(model)
    circuit = Circuit(layout, torch.ones(layout.n_nodes, dtype=torch.bool))
    fill = {site: torch.full((w,), 0.3) for site, w in zip(layout.sites, layout.widths,
                                                            strict=True)}
    batch = pairs()
    nodes = [("final_in", 6), ("final_in", 2), ("l0.attn_in", 1)]
    judge = Judge(model, layout, fill, batch, calibration=None, freeze_norms=False)
    base, losses = single_node_ablations(circuit, nodes, judge)
    assert base == pytest.approx(evaluate(model, batch, None), abs=1e-6)  # all kept: full model
    assert losses[("final_in", 6)] == base
    assert losses[("final_in", 2)] != base
