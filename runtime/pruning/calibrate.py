"""Logit calibration of a discretised circuit (method §4, ``prune.calibrate``).

Ablating most of a model shrinks or shifts its logits even where the circuit computes the right
answer. Before judging a circuit against the loss threshold, the paper fits a scale and a shift of
the final logits with 16 LBFGS steps. Here the scale is one number and the shift is one bias per
answer token (a shift shared by every logit cancels in the two-way loss, so only per-token biases
mean anything); both are fitted on the task's *training* pairs and then applied to the pairs that
judge the circuit, so calibration cannot overfit the judging split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

LBFGS_STEPS = 16


@dataclass(frozen=True)
class Calibration:
    """``logit' = scale · logit + shift[token]`` for the answer tokens in ``tokens``."""

    scale: float
    tokens: tuple[int, ...]
    shift: tuple[float, ...]

    @classmethod
    def identity(cls) -> Calibration:
        return cls(1.0, (), ())

    def apply(self, two: Tensor, candidates: Tensor) -> Tensor:
        """``two`` (..., 2) logits of the ``candidates`` (..., 2) token ids, calibrated."""
        out = two * self.scale
        for token, shift in zip(self.tokens, self.shift, strict=True):
            out = out + shift * (candidates == token)
        return out


def two_way_loss(two: Tensor) -> Tensor:
    """Cross-entropy with the correct answer in column 0, per prompt: (..., 2) → (...)."""
    return torch.logsumexp(two, -1) - two[..., 0]


def loss_and_gradient(two: Tensor, column: Tensor, scale: Tensor,
                      shift: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The mean two-way loss of ``scale · two + shift[column]`` and its gradient in scale and
    shift, by hand: autograd's bookkeeping costs more than these few ops, and a search fits one
    calibration per candidate circuit."""
    logits = scale * two + shift[column]
    d_logits = torch.softmax(logits, -1)
    d_logits[:, 0] -= 1
    d_logits /= len(logits)
    d_shift = torch.zeros_like(shift).index_add_(0, column.flatten(), d_logits.flatten())
    return two_way_loss(logits).mean(), (d_logits * two).sum(), d_shift


def fit_calibration(two: Tensor, candidates: Tensor, steps: int = LBFGS_STEPS) -> Calibration:
    """Fit scale and per-token shift to minimise the two-way loss of ``two`` (2N, 2) logits."""
    tokens = torch.unique(candidates)
    column = torch.searchsorted(tokens, candidates)  # (2N, 2): which shift each logit gets
    two = two.detach().double()
    scale = torch.ones((), dtype=torch.float64)
    shift = torch.zeros(len(tokens), dtype=torch.float64)
    optimizer = torch.optim.LBFGS([scale, shift], lr=1.0, max_iter=steps,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        loss, scale.grad, shift.grad = loss_and_gradient(two, column, scale, shift)
        return loss

    optimizer.step(closure)
    fitted = Calibration(float(scale), tuple(tokens.tolist()), tuple(shift.tolist()))
    # LBFGS only ever lowers the loss it sees; keep the identity if it did not (e.g. NaNs).
    before = float(two_way_loss(two).mean())
    after = float(two_way_loss(fitted.apply(two, candidates)).mean())
    return fitted if after <= before else Calibration.identity()


def calibrated_loss(calibration: Calibration, two: Tensor, candidates: Tensor) -> float:
    return float(two_way_loss(calibration.apply(two.double(), candidates)).mean())
