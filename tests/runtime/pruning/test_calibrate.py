"""Logit calibration (runtime/pruning/calibrate.py): the hand-written gradient, and the lower
bound that lets a search fail a circuit without fitting its calibration. Fitting itself is
covered with the prune tests."""

from __future__ import annotations

import math

import pytest
import torch

from runtime.pruning.calibrate import (
    calibrated_loss,
    fit_calibration,
    loss_and_gradient,
    lowest_calibrated_loss,
    two_way_loss,
)


def test_the_hand_written_gradient_is_autograds() -> None:
    generator = torch.Generator().manual_seed(0)
    two = torch.randn(40, 2, generator=generator, dtype=torch.float64) * 3
    column = torch.randint(3, (40, 2), generator=generator)  # three answer tokens
    scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    shift = torch.randn(3, generator=generator, dtype=torch.float64).requires_grad_()
    reference = two_way_loss(scale * two + shift[column]).mean()
    reference.backward()
    loss, d_scale, d_shift = loss_and_gradient(two, column, scale.detach(), shift.detach())
    assert torch.allclose(loss, reference.detach())
    assert scale.grad is not None and shift.grad is not None
    assert torch.allclose(d_scale, scale.grad) and torch.allclose(d_shift, shift.grad)


@pytest.mark.parametrize("n_tokens", [2, 3])
def test_lowest_calibrated_loss_is_the_minimum_over_calibrations(n_tokens: int) -> None:
    # Logits of four masks, some barely informative, one with a per-token bias to undo: the
    # bound is what a long LBFGS fit on the same logits reaches, and never above it.
    generator = torch.Generator().manual_seed(n_tokens)
    first = torch.randint(n_tokens, (128,), generator=generator)
    candidates = torch.stack([first, (first + 1) % n_tokens], 1) + 7
    two = torch.randn(4, 128, 2, generator=generator, dtype=torch.float64)
    two[:, :, 0] += torch.tensor([0.1, 0.5, 2.0, 0.0]).view(4, 1).double()
    two[3] -= 1.5 * (candidates == 7)  # token 7 pushed down
    bound = lowest_calibrated_loss(two, candidates)
    fitted = torch.tensor([calibrated_loss(fit_calibration(t, candidates, steps=500), t,
                                           candidates) for t in two], dtype=torch.float64)
    assert not bound.isnan().any()
    assert (bound <= fitted + 1e-12).all()
    torch.testing.assert_close(bound, fitted, rtol=0, atol=1e-7)
    identity = two_way_loss(two).mean(1)
    assert (bound < identity).all()
    # asked only whether each minimum lies above a line: the same answer, those at or below it
    # stopped early as -inf, those above it with their bound
    line = float(bound.sort().values[1:3].mean())  # two masks below, two above
    early = lowest_calibrated_loss(two, candidates, above=line)
    assert torch.equal(early > line, bound > line)
    assert torch.equal(early[bound > line], bound[bound > line])
    assert bool((early[bound <= line] == -math.inf).all())


def test_lowest_calibrated_loss_of_separable_logits_is_zero_or_unknown() -> None:
    # The right answer always ahead: a growing scale drives the loss towards 0, never reached.
    two = torch.tensor([[[1.0, 0.0]] * 64])
    candidates = torch.tensor([[3, 4], [4, 3]]).repeat(32, 1)
    (bound,) = lowest_calibrated_loss(two, candidates).tolist()
    assert math.isnan(bound) or bound < 1e-6
