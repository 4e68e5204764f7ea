"""The planted-circuit suite (runtime/pruning/groundtruth.py): each shape's premise, and pruning at
the default settings recovering every planted circuit exactly."""

from __future__ import annotations

import math

import pytest
import torch

from runtime.pruning.circuit import Circuit, NodeLayout, count_edges
from runtime.pruning.gates import ablation_values
from runtime.pruning.groundtruth import Planted, planted
from runtime.pruning.prune import Judge, prune
from spec.groundtruth import SHAPES, THRESHOLD
from spec.recipe import PruneSpec

SPLITS = {"train_pairs": 256, "heldout_pairs": 128, "test_pairs": 128}


@pytest.fixture(scope="module", params=SHAPES)
def truth(request: pytest.FixtureRequest) -> tuple[Planted, dict[str, torch.Tensor]]:
    shape = planted(request.param)
    return shape, shape.means()


@pytest.mark.parametrize("calibrate", [True, False])
def test_the_planted_path_is_the_smallest_passing_circuit(
        truth: tuple[Planted, dict[str, torch.Tensor]], calibrate: bool) -> None:
    # The premise: the path alone passes (with and without calibration), ablating it sends the
    # task to chance, and dropping any one of its nodes fails the threshold.
    shape, means = truth
    layout = NodeLayout.from_model(shape.model)
    fill = ablation_values(layout, means, "mean", torch.device("cpu"))
    calibration = shape.pairs(256, seed=2) if calibrate else None
    judge = Judge(shape.model, layout, fill, shape.pairs(256, seed=1), calibration, False)
    kept = layout.mask(sorted(shape.nodes))
    singles = kept.unsqueeze(0).repeat(len(shape.nodes), 1)
    for row, node in enumerate(sorted(shape.nodes)):
        singles[row, layout.index(*node)] = False
    circuit, complement, *without_one = judge.losses(torch.cat([kept[None], ~kept[None], singles]))
    assert circuit < THRESHOLD / 2
    assert complement > math.log(2) - 0.05
    assert min(without_one) > THRESHOLD, dict(zip(sorted(shape.nodes), without_one, strict=True))
    assert count_edges(Circuit(layout, kept), shape.model) == shape.edges


def test_pruning_at_default_settings_recovers_every_shape(
        truth: tuple[Planted, dict[str, torch.Tensor]]) -> None:
    shape, means = truth
    spec = PruneSpec(loss_threshold=THRESHOLD, **SPLITS)  # everything else: the defaults
    result = prune(shape.model, shape.pairs(256, seed=2), shape.pairs(128, seed=1),
                   shape.pairs(128, seed=3), means, spec, seed=0)
    assert result.found, result.reason
    assert shape.scores(result.circuit.nodes()) == (1.0, 1.0)
    assert count_edges(result.circuit, shape.model) == shape.edges
    assert result.sufficiency_loss <= THRESHOLD
