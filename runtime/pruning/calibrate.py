"""Logit calibration of a discretised circuit (method §4, ``prune.calibrate``).

Ablating most of a model shrinks or shifts its logits even where the circuit computes the right
answer. Before judging a circuit against the loss threshold, the paper fits a scale and a shift of
the final logits with 16 LBFGS steps. Here the scale is one number and the shift is one bias per
answer token (a shift shared by every logit cancels in the two-way loss, so only per-token biases
mean anything); both are fitted on the task's *training* pairs and then applied to the pairs that
judge the circuit, so calibration cannot overfit the judging split.

A calibration fitted anywhere is one point of the family, so the lowest loss any calibration
reaches on the judging pairs themselves (``lowest_calibrated_loss``) bounds the judged loss from
below: a circuit whose bound misses the threshold fails without its calibration pairs being run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LBFGS_STEPS = 16
NEWTON_STEPS = 50
NEWTON_TOLERANCE = 1e-12  # Newton decrement² (≈ twice the gap to the minimum) counted as converged
BACKTRACK = 0.5 ** torch.arange(12, dtype=torch.float64)  # step lengths tried at once


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


def lowest_calibrated_loss(two: Tensor, candidates: Tensor, above: float = -math.inf) -> Tensor:
    """(M,) the minimum over calibrations of the mean two-way loss of each mask's ``two``
    (M, 2N, 2) logits, minus its remaining Newton decrement²; NaN where Newton has not converged
    (e.g. logits a growing scale separates ever better, whose infimum 0 is never reached).
    Where only whether the minimum lies ``above`` a line matters, a mask whose loss is down to
    the line stops there and gets ``-inf``: its minimum is not above it.

    Only the margin between the two answers matters, so this is logistic regression with every
    label positive: the features of a prompt are its logit margin (the scale's) and, per answer
    token but the first, +1/−1 where it is the correct/other answer (the shifts' differences; a
    common shift cancels). Convex, with 1 + (tokens − 1) parameters: damped Newton, all masks at
    once, from the identity (scale 1, no shift)."""
    two = two.double()
    tokens = torch.unique(candidates)
    onehot = (candidates.unsqueeze(-1) == tokens[1:]).double()  # (2N, 2, J-1)
    features = torch.cat([(two[..., 0] - two[..., 1]).unsqueeze(-1),  # (M, 2N, 1 + J-1)
                          (onehot[:, 0] - onehot[:, 1]).expand(len(two), -1, -1)], -1)
    theta = torch.zeros(len(two), features.shape[-1], dtype=torch.float64)
    theta[:, 0] = 1.0

    def loss(theta: Tensor) -> Tensor:  # (M, S, K) → (M, S)
        return F.softplus(-torch.einsum("mpk,msk->msp", features, theta)).mean(-1)

    ridge = 1e-12 * torch.eye(features.shape[-1], dtype=torch.float64)
    decrement = torch.full((len(two),), torch.inf, dtype=torch.float64)
    current = loss(theta.unsqueeze(1))[:, 0]
    for _ in range(NEWTON_STEPS):
        if bool((current <= above).all()):
            break
        margin = torch.einsum("mpk,mk->mp", features, theta)
        wrong = torch.sigmoid(-margin)  # ∂softplus(−m)/∂(−m)
        gradient = -(wrong.unsqueeze(-1) * features).mean(1)
        curvature = wrong * (1 - wrong)
        hessian = torch.einsum("mp,mpk,mpl->mkl", curvature, features, features) / margin.shape[1]
        step = torch.linalg.solve(hessian + ridge, gradient.unsqueeze(-1)).squeeze(-1)
        decrement = (gradient * step).sum(-1)
        if bool((decrement < NEWTON_TOLERANCE).all()):
            break
        # the longest step that lowers the loss by at least a quarter of what Newton predicts
        trials = loss(theta.unsqueeze(1) - BACKTRACK[:, None] * step.unsqueeze(1))  # (M, S)
        enough = trials <= current.unsqueeze(1) - 0.25 * BACKTRACK * decrement.unsqueeze(1)
        pick = torch.where(enough.any(1), enough.float().argmax(1), len(BACKTRACK) - 1)
        theta = theta - BACKTRACK[pick].unsqueeze(1) * step
        current = trials.gather(1, pick.unsqueeze(1)).squeeze(1)
    converged = decrement < NEWTON_TOLERANCE
    bound = torch.where(converged, current - decrement, torch.nan)
    return torch.where(current <= above, -math.inf, bound)


def calibrated_loss(calibration: Calibration, two: Tensor, candidates: Tensor) -> float:
    return float(two_way_loss(calibration.apply(two.double(), candidates)).mean())
