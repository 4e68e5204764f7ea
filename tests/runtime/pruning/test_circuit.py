"""Node layout, edge counting and circuit.json (runtime/pruning/circuit.py)."""

from __future__ import annotations

import json

import pytest
import torch

from runtime.model import GPTConfig, SparseGPT
from runtime.pruning.circuit import (
    EDGE_TYPES,
    SITE_KINDS,
    Circuit,
    NodeLayout,
    circuit_to_json,
    count_edges,
    list_edges,
    parse_site,
)


def sparse_model(n_layer: int, weights: dict[str, list[tuple[int, int]]] | None = None,
                 density: float = 0.0, seed: int = 0) -> SparseGPT:
    """d_model 4, d_head 2, d_mlp 3; every weight zero except the listed entries (set to 1) or,
    with ``density``, a random fraction of every matrix."""
    model = SparseGPT(GPTConfig(vocab_size=5, context=8, n_layer=n_layer, d_model=4, d_head=2,
                                d_mlp=3))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            keep = torch.rand(param.shape, generator=generator) < density
            param.mul_(keep)
        for name, entries in (weights or {}).items():
            for row, col in entries:
                model.get_parameter(name)[row, col] = 1.0
    return model


def test_hand_built_circuit_edges() -> None:
    model = sparse_model(1, {
        "blocks.0.attn.q_proj.weight": [(0, 1), (1, 2), (3, 3)],
        "blocks.0.attn.k_proj.weight": [(0, 0)],
        "blocks.0.attn.v_proj.weight": [(2, 1), (2, 3)],
        "blocks.0.attn.o_proj.weight": [(1, 2), (0, 0)],
        "blocks.0.mlp.fc.weight": [(0, 1), (2, 3)],
        "blocks.0.mlp.proj.weight": [(1, 0), (3, 2)],
    })
    layout = NodeLayout.from_model(model)
    kept = layout.mask([
        ("l0.attn_in", 1), ("l0.attn_in", 3), ("l0.q", 0), ("l0.q", 3), ("l0.v", 2),
        ("l0.attn_out", 1), ("l0.mlp_in", 1), ("l0.mlp_neuron", 0), ("l0.mlp_neuron", 2),
        ("l0.mlp_out", 3), ("final_in", 1),
    ])
    circuit = Circuit(layout, kept)
    assert count_edges(circuit, model) == {
        "attn_in->q": 2,  # q[0]←attn_in[1], q[3]←attn_in[3]; q[1] is not kept
        "attn_in->k": 0,  # no k channel kept
        "attn_in->v": 2,  # v[2]←attn_in[1], v[2]←attn_in[3]
        "v->attn_out": 1,  # attn_out[1]←v[2]; attn_out[0] is not kept
        "mlp_in->mlp_neuron": 1,  # neuron 0←mlp_in[1]; mlp_in[3] is not kept
        "mlp_neuron->mlp_out": 1,  # mlp_out[3]←neuron 2; mlp_out[1] is not kept
    }
    assert {"type": "v->attn_out", "src": ["l0.v", 2], "dst": ["l0.attn_out", 1],
            "weight": 1.0} in list_edges(circuit, model)
    assert circuit.nodes_by_kind() == {
        "attn_in": 2, "q": 2, "k": 0, "v": 1, "attn_out": 1, "mlp_in": 1, "mlp_neuron": 2,
        "mlp_out": 1, "final_in": 1,
    }
    assert circuit.nodes_by_layer() == {"0": 10, "final": 1}


def brute_force_edges(circuit: Circuit, model: SparseGPT) -> dict[str, int]:
    kept = set(circuit.nodes())
    counts = {}
    for src_kind, dst_kind, weight_name in EDGE_TYPES:
        total = 0
        for layer in range(len(model.blocks)):
            weight = model.get_parameter(f"blocks.{layer}.{weight_name}")
            for out_ch in range(weight.shape[0]):
                for in_ch in range(weight.shape[1]):
                    total += bool(weight[out_ch, in_ch] != 0
                                  and (f"l{layer}.{src_kind}", in_ch) in kept
                                  and (f"l{layer}.{dst_kind}", out_ch) in kept)
        counts[f"{src_kind}->{dst_kind}"] = total
    return counts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_counts_match_brute_force(seed: int) -> None:
    model = sparse_model(2, density=0.4, seed=seed)
    layout = NodeLayout.from_model(model)
    kept = torch.rand(layout.n_nodes, generator=torch.Generator().manual_seed(seed)) < 0.5
    circuit = Circuit(layout, kept)
    counts = count_edges(circuit, model)
    assert counts == brute_force_edges(circuit, model)
    assert sum(counts.values()) == len(list_edges(circuit, model))
    # Keeping every node counts every nonzero entry of the six edge matrices.
    everything = Circuit(layout, torch.ones(layout.n_nodes, dtype=torch.bool))
    assert sum(count_edges(everything, model).values()) == sum(
        int((model.get_parameter(f"blocks.{layer}.{name}") != 0).sum())
        for layer in range(2) for _, _, name in EDGE_TYPES
    )


def test_layout_covers_every_site_in_model_order() -> None:
    model = sparse_model(2)
    layout = NodeLayout.from_model(model)
    assert layout.sites[:8] == tuple(f"l0.{kind}" for kind in SITE_KINDS[:-1])
    assert layout.sites[-1] == "final_in"
    assert layout.n_layer == 2
    assert layout.n_nodes == 2 * (7 * 4 + 3) + 4
    # The site list is exactly what the model's hook sees, with the same widths.
    seen: dict[str, int] = {}

    def record(site: str, x: torch.Tensor) -> torch.Tensor:
        seen[site] = x.shape[-1]
        return x

    model.hook = record
    model(torch.zeros(1, 2, dtype=torch.long))
    assert list(seen.items()) == list(zip(layout.sites, layout.widths, strict=True))
    for i in range(layout.n_nodes):
        assert layout.index(*layout.node(i)) == i
    flat = torch.arange(layout.n_nodes)
    assert torch.equal(layout.join(layout.split(flat)), flat)


def test_parse_site() -> None:
    assert parse_site("l12.mlp_neuron") == (12, "mlp_neuron")
    assert parse_site("final_in") == (None, "final_in")
    for bad in ("l0.final_in", "x.q", "l0.nope", "q"):
        with pytest.raises(ValueError):
            parse_site(bad)


def test_circuit_json_document() -> None:
    model = sparse_model(1, {"blocks.0.mlp.fc.weight": [(0, 1), (1, 1)]})
    layout = NodeLayout.from_model(model)
    circuit = Circuit(layout, layout.mask([
        ("l0.mlp_in", 1), ("l0.mlp_neuron", 0), ("l0.mlp_neuron", 1), ("final_in", 2),
    ]))
    scores = torch.linspace(-1, 1, layout.n_nodes)
    doc = json.loads(json.dumps(circuit_to_json(circuit, model, scores, extra={"task": "t"})))
    assert doc["task"] == "t"
    assert doc["n_nodes"] == 4 and doc["n_edges"] == 2
    assert doc["edges_by_type"]["mlp_in->mlp_neuron"] == 2
    assert {"site": "final_in", "index": 2, "kind": "final_in", "layer": None,
            "tau": pytest.approx(float(scores[layout.index("final_in", 2)]))} in doc["nodes"]
    assert len(doc["edges"]) == 2
    assert circuit_to_json(circuit, model, max_listed_edges=1)["edges"] is None
