"""Logit calibration's hand-written gradient (runtime/pruning/calibrate.py); fitting it is covered
with the prune tests."""

from __future__ import annotations

import torch

from runtime.pruning.calibrate import loss_and_gradient, two_way_loss


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
