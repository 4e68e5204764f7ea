"""The `circuit_density` view: a circuit's edges as its possible node pairs × their density."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from results import synthetic
from results.ingest import ingest
from results.query import fetch
from runtime.model import GPTConfig, SparseGPT
from runtime.pruning.circuit import Circuit, NodeLayout, count_edges


def tiny_model(n_layer: int) -> SparseGPT:
    """A model of the shape the circuits live in, every weight 1: all node pairs are edges."""
    model = SparseGPT(GPTConfig(vocab_size=32, context=8, n_layer=n_layer, d_model=16,
                                d_head=8, d_mlp=32))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(1.0)
    return model


def random_circuit(prune_dir: Path, layout: NodeLayout, n_nodes: int, seed: int) -> Tensor:
    """Replace the job's circuit.json nodes by ``n_nodes`` random ones; the kept mask."""
    generator = torch.Generator().manual_seed(seed)
    kept = torch.zeros(layout.n_nodes, dtype=torch.bool)
    kept[torch.randperm(layout.n_nodes, generator=generator)[:n_nodes]] = True
    nodes = [{"site": site, "index": index} for site, index in Circuit(layout, kept).nodes()]
    (prune_dir / "circuit.json").write_text(json.dumps({"nodes": nodes}))
    return kept


@pytest.mark.parametrize("n_layer", [1, 3])
def test_possible_edges_are_the_edges_of_an_all_nonzero_model(tmp_path: Path,
                                                              n_layer: int) -> None:
    ws = tmp_path / "ws"
    model = tiny_model(n_layer)
    layout = NodeLayout.from_model(model)
    expected = {}
    for seed, (target, n_nodes) in enumerate(((1.0, 60), (0.25, 25), (0.25, 1))):
        train = synthetic.train_job(ws, sparsity_target=target, heldout_loss=2.0,
                                    n_layer=n_layer, seed=seed)
        prune = synthetic.prune_job(ws, train, "with_as", n_edges=5, n_nodes=n_nodes)
        kept = random_circuit(prune, layout, n_nodes, seed)
        expected[prune.name.split("-")[1]] = sum(
            count_edges(Circuit(layout, kept), model).values())
    ingest(ws)
    got = fetch(ws, "SELECT d.*, r.kept_fraction AS kept FROM circuit_density d "
                    "JOIN runs r ON r.key = d.run_key").to_pylist()
    assert {row["key"][:12]: row["possible_edges"] for row in got} == expected
    assert max(expected.values()) > 0 and min(expected.values()) == 0  # both cases are here
    for row in got:
        if row["possible_edges"]:
            assert row["density"] == pytest.approx(5 / row["possible_edges"])
            assert row["concentration"] == pytest.approx(row["density"] / row["kept"])
        else:  # no two kept nodes share a weight matrix: nothing to be dense or sparse
            assert row["density"] is None and row["concentration"] is None


def test_circuits_not_found_have_no_row(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    train = synthetic.train_job(ws, sparsity_target=0.5, heldout_loss=2.0)
    synthetic.prune_job(ws, train, "with_as", n_edges=5)
    synthetic.prune_job(ws, train, "var_swap", n_edges=0, found=False)
    ingest(ws)
    assert fetch(ws, "SELECT task FROM circuit_density").column("task").to_pylist() == ["with_as"]
