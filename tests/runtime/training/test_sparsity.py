"""Anneal curves, the sharkfin lr, top-k projection with its floor, and gradient RMS."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from runtime.training.sparsity import (
    floor_per_neuron,
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


def reference_projection(tensor: Tensor, k: int, j: int = 0, axis: int | None = None) -> Tensor:
    """The projection as method §2 states it, the slow way: every neuron's top-j pushed to +inf,
    then one topk over the whole tensor."""
    magnitude = tensor.abs()
    if j and axis is not None:
        fan_axis = 1 - axis
        j = floor_per_neuron(k, tensor.shape[axis], tensor.shape[fan_axis], j)
        if j:
            magnitude.scatter_(fan_axis, magnitude.topk(j, dim=fan_axis).indices, math.inf)
    keep = torch.zeros(tensor.numel(), dtype=torch.bool)
    keep[magnitude.flatten().topk(k).indices] = True
    return tensor * keep.view_as(tensor)


def trained_like(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """What the projection sees in training: a few large survivors of the last projection amid
    many small weights that the Adam step just brought back."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.randn(shape, generator=generator) * 1e-3
    survivors = torch.rand(shape, generator=generator) < 0.05
    return torch.where(survivors, torch.randn(shape, generator=generator), small)


def test_projection_keeps_exactly_the_k_largest() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 48)
    original = weight.clone()
    project_topk_(weight, 300)
    kept = weight != 0
    assert int(kept.sum()) == 300
    assert torch.equal(weight[kept], original[kept])  # survivors are untouched
    assert original[kept].abs().min() >= original[~kept].abs().max()


# Large enough for the candidate search (runtime/training/sparsity.py), fractions on both sides
# of one half (keep-side and drop-side search) down to the paper's 0.001.
@pytest.mark.parametrize("fraction", [0.95, 0.6, 0.3, 0.05, 0.01, 0.001])
@pytest.mark.parametrize("make", [trained_like, lambda shape: torch.randn(shape)])
def test_projection_equals_a_full_topk(fraction: float, make: Callable[..., Tensor]) -> None:
    torch.manual_seed(1)
    for shape in [(256, 256), (1024, 64), (70000,)]:
        weight = make(shape)
        k = n_kept(weight.numel(), fraction)
        expected = reference_projection(weight, k)
        assert torch.equal(project_topk_(weight, k), expected), shape


@pytest.mark.parametrize("fraction", [0.95, 0.05])
def test_projection_stays_exact_when_the_threshold_sample_is_fooled(fraction: float) -> None:
    # The candidate search samples every 61st entry; make exactly those entries huge, so the
    # sampled threshold leaves too few candidates (keep side) or far too many (drop side).
    torch.manual_seed(3)
    weight = torch.randn(256, 256)
    weight.view(-1)[::61] += 100.0
    k = n_kept(weight.numel(), fraction)
    assert torch.equal(project_topk_(weight.clone(), k), reference_projection(weight, k))


@pytest.mark.parametrize("fraction", [0.95, 0.6, 0.3, 0.05, 0.01, 0.001])
@pytest.mark.parametrize("axis", [0, 1])
def test_floored_projection_equals_the_reference(fraction: float, axis: int) -> None:
    weight = trained_like((512, 128) if axis == 0 else (128, 512), seed=2)
    # Weak neurons the global top-k alone would wipe out; their floor entries must be theirs.
    (weight[:40] if axis == 0 else weight[:, :40]).mul_(1e-3)
    k = n_kept(weight.numel(), fraction)
    expected = reference_projection(weight, k, j=4, axis=axis)
    assert torch.equal(project_topk_(weight.clone(), k, 4, axis), expected)


def test_projection_of_a_bias_and_k_at_least_numel() -> None:
    bias = torch.randn(100)
    project_topk_(bias, 7, min_per_neuron=4)  # no neuron axis, no floor
    assert int(torch.count_nonzero(bias)) == 7
    full = torch.randn(5, 5)
    assert torch.equal(project_topk_(full.clone(), 25), full)


@pytest.mark.parametrize("axis", [0, 1])
def test_min_per_neuron_floor_holds_along_its_axis_and_total_stays_k(axis: int) -> None:
    torch.manual_seed(0)
    weight = torch.randn(32, 40)
    weak = (slice(0, 8), slice(None)) if axis == 0 else (slice(None), slice(0, 8))
    weight[weak] *= 1e-3  # 8 neurons that the global top-k alone would wipe out
    original = weight.clone()
    project_topk_(weight, 200, min_per_neuron=4, neuron_axis=axis)
    assert int(torch.count_nonzero(weight)) == 200
    fan_axis = 1 - axis
    per_neuron = (weight != 0).sum(dim=fan_axis)
    assert int(per_neuron.min()) >= 4
    assert int(per_neuron[:8].max()) == 4  # the weak neurons keep exactly their floor...
    top4 = original.abs().topk(4, dim=fan_axis).indices
    assert bool((weight.gather(fan_axis, top4) != 0).all())  # ...and it is their own top-4


def test_floor_is_capped_so_the_tensor_keeps_k() -> None:
    weight = torch.randn(32, 40)
    project_topk_(weight, 50, min_per_neuron=4, neuron_axis=0)  # 32·4 = 128 > 50
    assert int(torch.count_nonzero(weight)) == 50
    assert bool(((weight != 0).sum(dim=1) >= 1).all())  # j capped to 50 // 32 = 1
    sparse = torch.randn(32, 40)
    project_topk_(sparse, 20, min_per_neuron=4, neuron_axis=0)  # fewer slots than neurons
    assert int(torch.count_nonzero(sparse)) == 20


def test_floor_cap_at_the_paper_shape() -> None:
    # d_model 2048 at target 0.001: q/k/v/o keep 4194 of 2048², fc and proj 16777 of 8192·2048.
    assert floor_per_neuron(n_kept(2048 * 2048, 0.001), 2048, 2048, 4) == 2
    assert floor_per_neuron(n_kept(8192 * 2048, 0.001), 8192, 2048, 4) == 2  # fc rows, proj cols
    assert floor_per_neuron(n_kept(256 * 256, 0.05), 256, 256, 4) == 4  # uncapped at 5%
    assert floor_per_neuron(100, 10, 3, 4) == 3  # never more than a neuron's fan


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
