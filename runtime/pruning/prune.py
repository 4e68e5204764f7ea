"""Circuit pruning (method §4): learn a mask over every node, then find the smallest circuit.

1. **Masks.** One parameter τ per node (``runtime.pruning.circuit.NodeLayout``), init
   N(0.1, 0.01²) so every node starts on. The forward gate is Heaviside(τ); the backward pass uses
   d/dτ sigmoid(τ / T) as a surrogate (``HeavisideSTE``). A gate g mean-ablates its node at every
   position: ``x ← g·x + (1 − g)·mean`` (``mean`` is 0 under ``ablation: zero``).
2. **Optimise** task loss + ``k_coef``·(nodes on) with AdamW (wd 1e-3, β2 0.95, 5 % warmup then
   linear decay), ``batch_size`` pairs a step, the base model frozen, τ clamped to [-1, 1].
3. **Discretise.** Rank nodes by τ and bisect for the smallest k whose circuit (top-k nodes on,
   the rest ablated) has held-out task loss ≤ ``loss_threshold``. Bisection assumes the loss is
   monotone in k, which the ranking makes nearly so.
4. **Validate.** Sufficiency: held-out loss of the circuit alone (= the loss the bisection
   accepted). Necessity: held-out loss with only the circuit ablated and everything else intact.

Task loss: at each prompt's last real token, cross-entropy over just the pair's two answer ids,
averaged over both prompts of every pair (chance ln 2). Prompts are right-padded: attention is
causal, so padding after the last real token cannot reach it.

Everything here works on token ids (``PairBatch``); turning ``TaskPair`` text into ids is
``encode_pairs``, kept separate so tests can plant circuits with hand-made vocabularies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runtime.pruning.ablation import hooked
from runtime.pruning.circuit import Circuit, NodeLayout
from spec.recipe import PruneSpec

TAU_INIT_MEAN = 0.1
TAU_INIT_STD = 0.01
WEIGHT_DECAY = 1e-3
BETAS = (0.9, 0.95)
WARMUP = 0.05
EVAL_BATCH_PAIRS = 64  # pairs per no-grad forward when evaluating: bounds the (2N, T, V) logits


# ---------------------------------------------------------------------------------------------
# Prompt pairs as token ids


@dataclass(frozen=True)
class PairBatch:
    """Prompt pairs as ids. Rows ``2i`` and ``2i + 1`` are the two prompts of pair ``i``."""

    tokens: Tensor  # (2N, T) long, right-padded
    last: Tensor  # (2N,) position of each prompt's last real token
    candidates: Tensor  # (2N, 2) long: [correct answer id, the other answer id]

    @classmethod
    def from_ids(
        cls,
        prompts: Sequence[tuple[Sequence[int], Sequence[int]]],
        answers: Sequence[tuple[int, int]],
        context: int,
        pad_id: int = 0,
    ) -> PairBatch:
        """``prompts[i]`` are the two prompts of pair ``i`` as ids, ``answers[i]`` their correct
        next-token ids. Prompts longer than ``context`` keep their last ``context`` tokens."""
        if len(prompts) != len(answers) or not prompts:
            raise ValueError("need one answer pair per prompt pair, and at least one pair")
        rows = [list(p)[-context:] for pair in prompts for p in pair]
        if any(not row for row in rows):
            raise ValueError("empty prompt")
        width = max(len(row) for row in rows)
        tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row)
        last = torch.tensor([len(row) - 1 for row in rows])
        candidates = torch.tensor([c for a, b in answers for c in ((a, b), (b, a))])
        return cls(tokens, last, candidates)

    def __len__(self) -> int:
        return self.tokens.shape[0] // 2

    def pairs(self, index: Tensor) -> PairBatch:
        """The sub-batch of the given pair indices (padding trimmed to the longest prompt)."""
        rows = torch.stack([2 * index, 2 * index + 1], 1).flatten()
        last = self.last[rows]
        return PairBatch(self.tokens[rows, : int(last.max()) + 1], last, self.candidates[rows])

    def chunks(self, size: int) -> list[PairBatch]:
        n = len(self)
        return [self.pairs(torch.arange(i, min(i + size, n))) for i in range(0, n, size)]

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(self.tokens.to(device), self.last.to(device), self.candidates.to(device))


class Encoder(Protocol):
    """What ``encode_pairs`` needs of a HF ``tokenizers.Tokenizer``."""

    def encode(self, sequence: str) -> Any: ...


def answer_token_ids(tokenizer: Encoder, candidates: Sequence[str]) -> dict[str, int]:
    """Each candidate's single token id; a clear error naming every candidate that is not one."""
    ids, bad = {}, []
    for candidate in candidates:
        encoded = tokenizer.encode(candidate).ids
        if len(encoded) == 1:
            ids[candidate] = encoded[0]
        else:
            bad.append(f"{candidate!r} → {len(encoded)} tokens {encoded}")
    if bad:
        raise ValueError(
            "task candidates must each be one token under this tokenizer (the tokenize job's "
            "required_tokens should have forced them): " + "; ".join(bad)
        )
    return ids


def encode_pairs(pairs: Sequence[Any], tokenizer: Encoder, candidates: Sequence[str],
                 context: int) -> PairBatch:
    """``TaskPair`` s (``prompts``, ``answers`` strings) → a ``PairBatch``."""
    ids = answer_token_ids(tokenizer, candidates)
    prompts = [tuple(tokenizer.encode(p).ids for p in pair.prompts) for pair in pairs]
    answers = [(ids[a], ids[b]) for a, b in (pair.answers for pair in pairs)]
    return PairBatch.from_ids(prompts, answers, context)


# ---------------------------------------------------------------------------------------------
# Gates and ablation


class HeavisideSTE(torch.autograd.Function):
    """Forward Heaviside(τ) ∈ {0, 1}; backward d/dτ sigmoid(τ / T) (a straight-through surrogate:
    the step has zero gradient almost everywhere, the sigmoid tells τ which way helps)."""

    @staticmethod
    def forward(ctx: Any, tau: Tensor, temperature: float) -> Tensor:
        ctx.save_for_backward(tau)
        ctx.temperature = temperature
        return (tau > 0).to(tau.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (tau,) = ctx.saved_tensors
        s = torch.sigmoid(tau / ctx.temperature)
        return grad * s * (1 - s) / ctx.temperature, None


def heaviside_ste(tau: Tensor, temperature: float) -> Tensor:
    return HeavisideSTE.apply(tau, temperature)


def ablation_values(layout: NodeLayout, means: dict[str, Tensor] | None, ablation: str,
                    device: torch.device) -> dict[str, Tensor]:
    """What a pruned node is replaced by, per site: its mean, or zero."""
    widths = dict(zip(layout.sites, layout.widths, strict=True))
    if ablation == "zero":
        return {site: torch.zeros(width, device=device) for site, width in widths.items()}
    if ablation != "mean":
        raise ValueError(f"unknown ablation {ablation!r}")
    if means is None:
        raise ValueError("mean ablation needs the stats job's means")
    missing = [s for s in layout.sites if s not in means]
    if missing:
        raise ValueError(f"means are missing sites {missing}")
    for site, width in widths.items():
        if means[site].shape != (width,):
            raise ValueError(
                f"means[{site!r}] has shape {tuple(means[site].shape)}, want ({width},)"
            )
    return {site: means[site].float().to(device) for site in layout.sites}


def gate_hook(layout: NodeLayout, gates: Tensor,
              fill: dict[str, Tensor]) -> Callable[[str, Tensor], Tensor]:
    """The model hook that applies flat per-node ``gates`` (1 keeps, 0 ablates) at every site."""
    per_site = layout.split(gates)

    def hook(site: str, x: Tensor) -> Tensor:
        g = per_site[site].to(x.dtype)
        m = fill[site].to(x.dtype)
        # Not m + g·(x − m): that is one op fewer but not exactly x when g = 1.
        return g * x + (1 - g) * m

    return hook


# ---------------------------------------------------------------------------------------------
# Task loss


def task_loss(model: nn.Module, batch: PairBatch) -> Tensor:
    """Mean over prompts of the two-way cross-entropy between the correct answer and the other."""
    last = model(batch.tokens, batch.last)  # (2N, V): logits at each prompt's last token
    two = last.gather(1, batch.candidates).float()  # (2N, 2), the correct answer in column 0
    return F.cross_entropy(two, torch.zeros(len(two), dtype=torch.long, device=two.device))


@torch.no_grad()
def evaluate(model: nn.Module, batch: PairBatch, hook: Callable[[str, Tensor], Tensor] | None,
             chunk_pairs: int = EVAL_BATCH_PAIRS) -> float:
    """Task loss over the whole batch (chunked), with ``hook`` installed (None: the full model)."""
    total = 0.0
    with hooked(model, hook):
        for chunk in batch.chunks(chunk_pairs):
            total += float(task_loss(model, chunk)) * len(chunk)
    return total / len(batch)


# ---------------------------------------------------------------------------------------------
# Mask optimisation


def prune_lr_at(step: int, steps: int, lr: float, warmup: float = WARMUP) -> float:
    """Linear warmup over the first ``warmup`` of the steps, then linear decay to 0."""
    warmup_steps = max(1, round(warmup * steps))
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr * max(0.0, (steps - step) / max(1, steps - warmup_steps))


def init_tau(n_nodes: int, seed: int, device: torch.device) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    tau = TAU_INIT_MEAN + TAU_INIT_STD * torch.randn(n_nodes, generator=generator)
    return tau.to(device)


def optimise_masks(
    model: nn.Module,
    layout: NodeLayout,
    fill: dict[str, Tensor],
    train: PairBatch,
    spec: PruneSpec,
    seed: int,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Tensor, list[dict[str, float]]]:
    """Learn τ; returns it (detached, clamped) and a short history of (step, loss, nodes on)."""
    device = train.tokens.device
    tau = nn.Parameter(init_tau(layout.n_nodes, seed, device))
    optimizer = torch.optim.AdamW([tau], lr=spec.lr, betas=BETAS, weight_decay=WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(seed + 1)
    history: list[dict[str, float]] = []
    log_every = max(1, spec.steps // 20)
    for step in range(spec.steps):
        # forward / backward: task loss through the gated model, plus the node-count penalty
        index = torch.randperm(len(train), generator=generator)[: spec.batch_size]
        gates = heaviside_ste(tau, spec.temperature)
        with hooked(model, gate_hook(layout, gates, fill)):
            loss = task_loss(model, train.pairs(index.to(device)))
        n_on = gates.sum()
        objective = loss + spec.k_coef * n_on
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        # AdamW step at the scheduled lr, then clamp τ back into [-1, 1]
        for group in optimizer.param_groups:
            group["lr"] = prune_lr_at(step, spec.steps, spec.lr)
        optimizer.step()
        with torch.no_grad():
            tau.clamp_(-1.0, 1.0)
        if step % log_every == 0 or step == spec.steps - 1:
            record = {"step": step, "task_loss": loss.item(), "nodes_on": n_on.item()}
            history.append(record)
            if progress is not None:
                progress({"phase": "optimise", "steps": spec.steps, **record})
    return tau.detach(), history


# ---------------------------------------------------------------------------------------------
# Discretisation


def smallest_passing_k(predicate: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """The smallest k in [lo, hi] with ``predicate(k)``, assuming it is monotone (false … true);
    None if even ``predicate(hi)`` is false. Calls the predicate O(log(hi − lo)) times."""
    if lo > hi or not predicate(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if predicate(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def top_k_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the k highest scores (ties broken by node order, deterministically)."""
    order = torch.sort(scores.detach().cpu(), descending=True, stable=True).indices
    kept = torch.zeros(len(scores), dtype=torch.bool)
    kept[order[:k]] = True
    return kept


@dataclass
class PruneResult:
    found: bool
    reason: str | None
    full_model_loss: float
    circuit: Circuit | None = None
    tau: Tensor | None = None
    achieved_loss: float | None = None  # = sufficiency_loss: the circuit alone, rest ablated
    necessity_loss: float | None = None  # only the circuit ablated
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0


def prune(
    model: nn.Module,
    train: PairBatch,
    heldout: PairBatch,
    means: dict[str, Tensor] | None,
    spec: PruneSpec,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> PruneResult:
    """Method §4 end to end on token ids. The model is frozen (``requires_grad`` off) and put in
    eval mode; nothing else about it changes."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    model.eval()
    model.requires_grad_(False)
    train, heldout = train.to(device), heldout.to(device)
    layout = NodeLayout.from_model(model)
    fill = ablation_values(layout, means, spec.ablation, device)

    def circuit_loss(kept: Tensor) -> float:
        return evaluate(model, heldout, gate_hook(layout, kept.to(device).float(), fill))

    full_model_loss = evaluate(model, heldout, None)
    if not full_model_loss <= spec.loss_threshold:
        return PruneResult(
            found=False, full_model_loss=full_model_loss,
            reason=f"the full model's held-out task loss {full_model_loss:.4f} misses the "
            f"threshold {spec.loss_threshold}; no circuit can reach it",
            wall_time_s=time.perf_counter() - started,
        )

    tau, history = optimise_masks(model, layout, fill, train, spec, seed, progress)

    losses: dict[int, float] = {}

    def passes(k: int) -> bool:
        losses[k] = circuit_loss(top_k_mask(tau, k))
        if progress is not None:
            progress({"phase": "discretise", "k": k, "loss": losses[k]})
        return losses[k] <= spec.loss_threshold

    k = smallest_passing_k(passes, 0, layout.n_nodes)
    if k is None:  # cannot happen when the full model passes, unless evaluation is not exact
        return PruneResult(
            found=False, full_model_loss=full_model_loss, tau=tau.cpu(), history=history,
            reason=f"no top-k circuit reached {spec.loss_threshold} (all nodes: "
            f"{losses.get(layout.n_nodes, math.nan):.4f})",
            wall_time_s=time.perf_counter() - started,
        )
    kept = top_k_mask(tau, k)
    return PruneResult(
        found=True, reason=None, full_model_loss=full_model_loss,
        circuit=Circuit(layout, kept), tau=tau.cpu(), achieved_loss=losses[k],
        necessity_loss=circuit_loss(~kept), history=history,
        wall_time_s=time.perf_counter() - started,
    )
