"""Anneal curves, the sharkfin lr, top-k projection with its floor, and gradient RMS."""

from __future__ import annotations

import math

import pytest
import torch

from runtime.training.sparsity import (
    kept_fraction_at,
    lr_at,
    n_kept,
    nonzero_counts,
    nonzero_fraction,
    normalize_grad_rms_,
    project_topk_,
)
from spec.recipe import AnnealSpec, SparsitySpec, TrainSpec


def spec(curve: str, target: float = 0.01, **anneal: object) -> SparsitySpec:
    return SparsitySpec(
        target=target, anneal=AnnealSpec(curve=curve, start=0.1, end=0.5, **anneal)
    )


@pytest.mark.parametrize(
    ("curve", "progress", "expected"),
    [
        ("linear", 0.0, 1.0),
        ("linear", 0.1, 1.0),
        ("linear", 0.3, 1.0 + (0.01 - 1.0) * 0.5),
        ("linear", 0.5, 0.01),
        ("linear", 1.0, 0.01),
        ("cosine", 0.05, 1.0),
        ("cosine", 0.3, (1.0 + 0.01) / 2),
        ("cosine", 0.2, 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 4))),
        ("cosine", 0.9, 0.01),
        ("exponential", 0.0, 1.0),
        ("exponential", 0.3, 0.1),  # halfway in log space between 1 and 0.01
        ("exponential", 0.2, 0.01**0.25),
        ("exponential", 0.6, 0.01),
    ],
)
def test_smooth_curves_at_fixed_points(curve: str, progress: float, expected: float) -> None:
    assert kept_fraction_at(progress, spec(curve)) == pytest.approx(expected)


def test_step_curve_drops_n_times_evenly_in_log_space() -> None:
    sparsity = spec("step", target=1e-4, n_steps=4)
    # Window 0.1..0.5 in 4 steps: drops at 0.2, 0.3, 0.4, 0.5, each a factor of 10.
    assert kept_fraction_at(0.19, sparsity) == 1.0
    assert kept_fraction_at(0.21, sparsity) == pytest.approx(0.1)
    assert kept_fraction_at(0.35, sparsity) == pytest.approx(0.01)
    assert kept_fraction_at(0.45, sparsity) == pytest.approx(0.001)
    assert kept_fraction_at(0.5, sparsity) == pytest.approx(1e-4)
    values = {round(kept_fraction_at(p / 1000, sparsity), 12) for p in range(1001)}
    assert len(values) == 5  # dense plus 4 drops


def test_points_curve_is_piecewise_linear_and_flat_outside() -> None:
    sparsity = SparsitySpec(anneal=AnnealSpec(points=[[0.2, 1.0], [0.4, 0.2], [0.8, 0.1]]))
    assert kept_fraction_at(0.0, sparsity) == 1.0
    assert kept_fraction_at(0.3, sparsity) == pytest.approx(0.6)
    assert kept_fraction_at(0.4, sparsity) == pytest.approx(0.2)
    assert kept_fraction_at(0.6, sparsity) == pytest.approx(0.15)
    assert kept_fraction_at(1.0, sparsity) == pytest.approx(0.1)


@pytest.mark.parametrize("curve", ["linear", "cosine", "exponential", "step"])
def test_dense_target_stays_dense(curve: str) -> None:
    sparsity = spec(curve, target=1.0)
    assert all(kept_fraction_at(p / 10, sparsity) == 1.0 for p in range(11))


def test_sharkfin_lr_at_fixed_points() -> None:
    train = TrainSpec(lr=1.0, warmup=0.1)
    lr = [lr_at(step, 100, train, kept_now=1.0, kept_final=1.0) for step in range(100)]
    assert lr[0] == pytest.approx(0.1)  # warmup over 10 steps
    assert lr[4] == pytest.approx(0.5)
    assert lr[9] == pytest.approx(1.0)
    assert lr[10] == pytest.approx(1.0)
    assert lr[55] == pytest.approx(0.5)  # linear decay from 1 at step 10 to 0 at step 100
    assert lr[99] == pytest.approx(1 / 90)
    assert max(lr) == pytest.approx(1.0)
    # sqrt(L0_final / L0_now): a model 4x denser than its final state gets half the lr.
    assert lr_at(55, 100, train, kept_now=0.4, kept_final=0.1) == pytest.approx(0.25)


def test_sharkfin_without_warmup_starts_at_full_lr() -> None:
    train = TrainSpec(lr=0.5, warmup=0.0)
    assert lr_at(0, 10, train, 1.0, 1.0) == pytest.approx(0.5)
    assert lr_at(5, 10, train, 1.0, 1.0) == pytest.approx(0.25)


def test_projection_keeps_exactly_the_k_largest() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 48)
    original = weight.clone()
    project_topk_(weight, 300)
    kept = weight != 0
    assert int(kept.sum()) == 300
    assert torch.equal(weight[kept], original[kept])  # survivors are untouched
    assert original[kept].abs().min() >= original[~kept].abs().max()


def test_projection_of_a_bias_and_k_at_least_numel() -> None:
    bias = torch.randn(100)
    project_topk_(bias, 7, min_per_row=4)  # no floor for 1-D tensors
    assert int(torch.count_nonzero(bias)) == 7
    full = torch.randn(5, 5)
    assert torch.equal(project_topk_(full.clone(), 25), full)


def test_min_per_neuron_floor_holds_and_total_stays_k() -> None:
    torch.manual_seed(0)
    weight = torch.randn(32, 40)
    weight[:8] *= 1e-3  # 8 neurons that the global top-k alone would wipe out
    original = weight.clone()
    project_topk_(weight, 200, min_per_row=4)
    assert int(torch.count_nonzero(weight)) == 200
    per_row = (weight != 0).sum(dim=1)
    assert int(per_row.min()) >= 4
    assert int(per_row[:8].max()) == 4  # the weak rows keep exactly their floor...
    top4 = original.abs().topk(4, dim=1).indices
    assert bool((weight.gather(1, top4) != 0).all())  # ...and it is their own top-4


def test_floor_wins_when_it_exceeds_k() -> None:
    weight = torch.randn(32, 40)
    project_topk_(weight, 50, min_per_row=4)
    assert int(torch.count_nonzero(weight)) == 32 * 4
    assert bool(((weight != 0).sum(dim=1) == 4).all())


def test_n_kept_rounds_and_keeps_at_least_one() -> None:
    assert n_kept(1000, 0.05) == 50
    assert n_kept(1000, 1e-9) == 1
    assert n_kept(10, 1.0) == 10


def test_grad_rms_is_one_after_normalisation() -> None:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*shape)) for shape in [(30, 20), (20,), (7, 3)]]
    for scale, param in zip([5.0, 0.01, 300.0], params, strict=True):
        param.grad = torch.randn_like(param) * scale
    before = torch.cat([p.grad.flatten() for p in params])
    norm = normalize_grad_rms_(params)
    after = torch.cat([p.grad.flatten() for p in params])
    assert norm == pytest.approx(float(before.norm()), rel=1e-5)
    assert float(after.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(after, before / before.pow(2).mean().sqrt())  # direction unchanged


def test_nonzero_fraction_is_measured() -> None:
    tensors = [torch.tensor([0.0, 1.0, 2.0, 0.0]), torch.zeros(4)]
    assert nonzero_counts(tensors) == [2, 0]
    assert nonzero_fraction(tensors) == pytest.approx(2 / 8)
