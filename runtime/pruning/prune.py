"""Circuit pruning (method §4): learn node masks, then find the smallest circuit that passes.

1. **Masks.** One parameter τ per node (``runtime.pruning.circuit.NodeLayout``), init
   N(0.1, 0.01²) so every node starts on; forward gate Heaviside(τ), backward the derivative of
   sigmoid(τ / T) (``runtime.pruning.gates``). A gate mean-ablates its node at every position.
2. **Optimise** task loss + ``k_coef``·(nodes on) with AdamW (wd 1e-3, β2 0.95, 5 % warmup then
   linear decay), ``batch_size`` pairs a step, the base model frozen, τ clamped to [-1, 1].
   Several settings (the search's trials) are optimised at once: the pairs are tiled once per
   distinct mask and each slice of the batch gets its mask's gates, so the model's weights are
   read once per step for all of them, and trials whose masks are equal share a slice (every
   trial keeps every node until some τ crosses 0: a tenth of a 60-step search, and trials that
   settle on one mask later; ``distinct_gates``). Each trial's τ is its own parameter; the
   objective is the sum of the trials' objectives, whose gradients do not mix, so a trial comes
   out as if it ran alone (up to float reduction order). A trial stops once its mask signs have
   not changed for ``settle_steps`` (``sign_changes``; the discretisation only needs ranks).
3. **Discretise** each trial (``runtime.pruning.discretise``): rank by τ with ties broken by
   attribution, search k without assuming monotonicity, drop nodes greedily; a circuit's loss is
   judged on the fixed held-out pairs after logit calibration (``runtime.pruning.calibrate``).
   The circuit reported is the one with the fewest edges among the trials that passed. "Not
   found" means no trial's circuit passed — the full model's own loss does not decide it.
4. **Validate** on a third split of pairs that chose nothing: sufficiency (the circuit alone),
   necessity (only the circuit ablated), a random circuit of the same size, and the KL divergence
   of the circuit's next-token distribution from the full model's.

Task loss: at each prompt's last real token, cross-entropy over just the pair's two answer ids,
averaged over both prompts of every pair (chance ln 2).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runtime.model import SparseGPT
from runtime.pruning.ablation import hooked
from runtime.pruning.calibrate import (
    Calibration,
    calibrated_loss,
    fit_calibration,
    lowest_calibrated_loss,
    two_way_loss,
)
from runtime.pruning.circuit import Circuit, NodeLayout, count_edges
from runtime.pruning.discretise import count_ties, greedy_drop, rank_nodes, search_k
from runtime.pruning.gates import (
    GateHook,
    ablation_values,
    distinct_gates,
    heaviside_ste,
    silence_to_zero,
    silent_nodes,
)
from runtime.pruning.norms import frozen_scales, full_model_scales
from runtime.pruning.pairs import PackedPairs, PairBatch
from runtime.pruning.replay import BlockPrefixCache
from spec.recipe import PruneSpec

TAU_INIT_MEAN = 0.1
TAU_INIT_STD = 0.01
WEIGHT_DECAY = 1e-3
BETAS = (0.9, 0.95)
WARMUP = 0.05
EVAL_ROWS = 1024  # prompt rows per no-grad forward (mask sets × pairs × 2): bounds memory
LENGTH_BUCKET_PAIRS = 16  # pairs per forward, sorted by length, each padded to its own longest
# The judge's pairs per forward: it runs one circuit at a time on a CPU, about a thousand a
# search, where each forward's fixed cost (17+ sites of small ops) outweighs the longer padding.
JUDGE_PAIRS = 64
CALIBRATION_PAIRS = 64  # training pairs each candidate's calibration (3 parameters) is fitted on
ATTRIBUTION_PAIRS = 256  # training pairs the tie-breaking attribution is computed on
RANDOM_CIRCUITS = 8  # random node sets of the circuit's size, for the baseline
TRIAL_SEED_STRIDE = 1_000_003  # trial t initialises τ from seed + t·stride
OSCILLATING_FLIPS = 3  # sign changes after which a node no longer holds a trial open

Progress = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------
# Task loss


def set_losses(model: SparseGPT, batch: PairBatch | PackedPairs, sets: int) -> Tensor:
    """(sets,) task loss of each slice of a batch tiled ``sets`` times (hooks decide the gates)."""
    last = batch.logits(model)  # (sets·2N, V): logits at each prompt's last token
    two = last.gather(1, batch.candidates).float()  # (sets·2N, 2), correct answer in column 0
    return two_way_loss(two).view(sets, -1).mean(1)


def bucketed_set_losses(model: SparseGPT, batch: PairBatch, hook: Callable[[str, Tensor], Tensor],
                        sets: int, freeze_norms: bool) -> Tensor:
    """``set_losses`` of ``batch`` tiled ``sets`` times under ``hook``, one forward per length
    bucket of pairs, each pair packed into one row (``PackedPairs``): the same losses and mask
    gradients (up to float reduction order) for less padding and no prefix run twice."""
    total = torch.zeros((), device=batch.tokens.device)
    for part in batch.chunks(LENGTH_BUCKET_PAIRS, by_length=True):
        packed = part.packed()
        scales = full_model_scales(model, packed) if freeze_norms else None
        with hooked(model, hook), frozen_scales(model, scales):
            total = total + set_losses(model, packed.tiled(sets), sets) * (len(part) / len(batch))
    return total


def task_loss(model: SparseGPT, batch: PairBatch) -> Tensor:
    """Mean over prompts of the two-way cross-entropy between the correct answer and the other."""
    return set_losses(model, batch, 1)[0]


@torch.no_grad()
def evaluate(model: SparseGPT, batch: PairBatch, hook: Callable[[str, Tensor], Tensor] | None,
             chunk_pairs: int = 64) -> float:
    """Task loss over the whole batch (chunked), with ``hook`` installed (None: the full model)."""
    total = 0.0
    with hooked(model, hook):
        for chunk in batch.chunks(chunk_pairs):
            total += float(task_loss(model, chunk)) * len(chunk)
    return total / len(batch)


# ---------------------------------------------------------------------------------------------
# Judging candidate circuits on fixed pairs, batched over masks


class Judge:
    """Task losses of many candidate circuits on fixed pairs: gates are on/off masks, the rest of
    the model is ablated to ``fill``; norms frozen if asked; calibrated on ``calibration`` pairs
    if given. Chunks (and their frozen norm scales) are built once and reused for every call,
    each pair packed into one row that holds its prompts' common prefix once (``PackedPairs``:
    the same answer logits from 14–48 % fewer tokens; most of a search is spent here). A circuit
    whose first blocks' gates match a recent one's replays those blocks' residual writes
    (``BlockPrefixCache``): the same bits, without computing them."""

    def __init__(self, model: SparseGPT, layout: NodeLayout, fill: dict[str, Tensor],
                 pairs: PairBatch, calibration: PairBatch | None, freeze_norms: bool) -> None:
        self.model, self.layout, self.fill = model, layout, fill
        self.freeze_norms = freeze_norms
        self.calibration_pairs = calibration
        self.n_pairs = len(pairs)
        self.pairs = self._chunks(pairs)
        self.calibration = None if calibration is None else self._chunks(calibration)
        self.n_evaluations = 0  # circuits asked about, repeats included
        self.n_screened = 0  # circuits failed by the calibration bound alone
        self.known: dict[bytes, float] = {}  # a circuit's digest → its loss
        self.bounds: dict[bytes, float] = {}  # → the lowest loss any calibration could give it
        self.prefixes = BlockPrefixCache(layout)  # first blocks of recent circuits, replayed

    def _chunks(self, batch: PairBatch) -> list[tuple[PackedPairs, list[Tensor] | None]]:
        packed = [chunk.packed() for chunk in batch.chunks(JUDGE_PAIRS, by_length=True)]
        return [(chunk, full_model_scales(self.model, chunk) if self.freeze_norms else None)
                for chunk in packed]

    @torch.no_grad()
    def two_logits(self, masks: Tensor,
                   chunks: list[tuple[PackedPairs, list[Tensor] | None]]) -> Tensor:
        """(M, 2N, 2) answer logits of each mask's circuit on the chunks' pairs, on the CPU:
        what follows (calibration fits, bounds, losses) is many small steps on a few hundred
        numbers, and mixing devices there would fail."""
        device = chunks[0][0].tokens.device
        per_chunk = []
        for chunk, scales in chunks:
            sets = max(1, EVAL_ROWS // (2 * len(chunk)))
            rows = []
            for group in masks.split(sets):
                tiled = chunk.tiled(len(group))
                gates = GateHook(self.layout, group.to(device=device, dtype=torch.float32),
                                 self.fill)
                hook = self.prefixes.hook(chunk, group, gates)
                with hooked(self.model, hook), frozen_scales(self.model, scales):
                    last = tiled.logits(self.model)
                self.prefixes.store(hook)
                rows.append(last.gather(1, tiled.candidates).float().view(len(group), -1, 2))
            per_chunk.append(torch.cat(rows))
        return torch.cat(per_chunk, dim=1).cpu()

    def candidates(self, chunks: list[tuple[PackedPairs, list[Tensor] | None]]) -> Tensor:
        return torch.cat([chunk.candidates for chunk, _ in chunks]).cpu()

    def calibrations(self, masks: Tensor) -> list[Calibration]:
        if self.calibration is None:
            return [Calibration.identity()] * len(masks)
        two = self.two_logits(masks, self.calibration)
        candidates = self.candidates(self.calibration)
        return [fit_calibration(t, candidates) for t in two]

    def losses(self, masks: Tensor, fail_above: float = math.inf) -> list[float]:
        """One loss per row of ``masks`` (M, n) bool. A circuit whose loss stays above
        ``fail_above`` under even the best calibration for the judging pairs themselves gets
        ``inf`` (its loss, if known): it fails whatever the calibration pairs fit, so they are
        not run for it (about half of a search's circuits, in ~1 ms each instead of a forward
        and a fit). A circuit judged before is not run again (trials of a search often meet the
        same ones)."""
        self.n_evaluations += len(masks)
        keys = [hashlib.blake2b(mask.cpu().numpy().tobytes(), digest_size=16).digest()
                for mask in masks]
        todo = [i for i, key in enumerate(keys) if key not in self.known
                and not self.bounds.get(key, -math.inf) > fail_above]
        if todo:
            self._judge(masks[todo], [keys[i] for i in todo], fail_above)
        return [self.known.get(key, math.inf) for key in keys]

    def _judge(self, masks: Tensor, keys: list[bytes], fail_above: float) -> None:
        two = self.two_logits(masks, self.pairs)
        candidates = self.candidates(self.pairs)
        hopeful = torch.ones(len(masks), dtype=torch.bool)
        if self.calibration is not None and fail_above < math.inf:
            # the identity is a calibration: only circuits above the line without one may fail
            above = two_way_loss(two.double()).mean(1) > fail_above
            if bool(above.any()):
                bound = lowest_calibrated_loss(two[above], candidates, above=fail_above)
                hopeful[above] = ~(bound > fail_above)  # NaN (not converged) stays hopeful
                for i, value in zip(above.nonzero().flatten().tolist(), bound.tolist(),
                                    strict=True):
                    self.bounds[keys[i]] = value
        index = hopeful.nonzero().flatten()
        self.n_screened += len(masks) - len(index)
        if len(index):
            for i, c in zip(index.tolist(), self.calibrations(masks[index]), strict=True):
                self.known[keys[i]] = calibrated_loss(c, two[i], candidates)


def protocol_judge(model: SparseGPT, spec: PruneSpec, means: dict[str, Tensor] | None,
                   train: PairBatch, pairs: PairBatch) -> Judge:
    """The judge of a prune run on ``pairs``: the spec's ablation fill (silent nodes zeroed with
    ``silent_zero``), calibration on the first training pairs, frozen norms if asked."""
    device = pairs.tokens.device
    layout = NodeLayout.from_model(model)
    fill = ablation_values(layout, means, spec.ablation, device)
    if spec.silent_zero:
        fill = silence_to_zero(fill, layout, silent_nodes(model, layout, train))
    calibration = train.pairs(torch.arange(min(len(train), CALIBRATION_PAIRS),
                                           device=device)) if spec.calibrate else None
    return Judge(model, layout, fill, pairs, calibration, spec.freeze_norms)


# ---------------------------------------------------------------------------------------------
# Mask optimisation, several settings at once


@dataclass(frozen=True)
class MaskSetting:
    k_coef: float
    lr: float
    temperature: float
    init_seed: int  # τ's initial noise


@dataclass
class Trial:
    setting: MaskSetting
    tau: Tensor  # (n,) detached, clamped to [-1, 1]
    steps_run: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


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


def sign_changes(tau: Tensor, signs: Tensor, flips: Tensor) -> tuple[Tensor, Tensor, bool]:
    """New signs, new flip counts, and whether a node that counts changed sign. A node that has
    flipped ``OSCILLATING_FLIPS`` times stops counting: its τ wanders around zero (the task
    barely uses it), the discretisation decides it, and it must not keep the trial running."""
    now = tau > 0
    changed = now != signs
    counted_change = bool((changed & (flips < OSCILLATING_FLIPS)).any())
    return now, flips + changed, counted_change


def optimise_masks(
    model: SparseGPT,
    layout: NodeLayout,
    fill: dict[str, Tensor],
    train: PairBatch,
    settings: Sequence[MaskSetting],
    steps: int,
    batch_size: int,
    sample_seed: int,
    freeze_norms: bool = False,
    settle_steps: int = 0,
    progress: Progress | None = None,
) -> list[Trial]:
    """Learn τ for every setting in one batched loop; pairs are drawn from ``sample_seed``, the
    same for every trial, so a trial's result does not depend on which others run beside it."""
    device = train.tokens.device
    taus = [nn.Parameter(init_tau(layout.n_nodes, s.init_seed, device)) for s in settings]
    optimizer = torch.optim.AdamW(
        [{"params": [tau], "lr": s.lr} for tau, s in zip(taus, settings, strict=True)],
        betas=BETAS, weight_decay=WEIGHT_DECAY)
    trials = [Trial(s, tau.detach()) for s, tau in zip(settings, taus, strict=True)]
    generator = torch.Generator().manual_seed(sample_seed)
    active = list(range(len(settings)))
    signs = [tau.detach() > 0 for tau in taus]
    flips = [torch.zeros_like(tau, dtype=torch.long) for tau in taus]
    unchanged = [0] * len(settings)  # steps since a counted sign change, from the end of warmup
    warmup_steps = max(1, round(WARMUP * steps))
    log_every = max(1, steps // 20)
    for step in range(steps):
        if not active:
            break
        # forward / backward: every active trial's gated model on the same pairs
        index = torch.randperm(len(train), generator=generator)[:batch_size]
        batch = train.pairs(index.to(device))
        temperature = torch.tensor([[settings[i].temperature] for i in active], device=device)
        gates = heaviside_ste(torch.stack([taus[i] for i in active]), temperature)  # (A, n)
        distinct, used = distinct_gates(gates)  # trials whose masks are equal share a slice
        losses = bucketed_set_losses(model, batch, GateHook(layout, distinct, fill),
                                     len(distinct), freeze_norms)  # (U,)
        n_on = gates.sum(1)
        losses_seen = losses.detach()[used]  # (A,)
        k_coef = torch.tensor([settings[i].k_coef for i in active], device=device)
        optimizer.zero_grad(set_to_none=True)
        (losses.sum() + (k_coef * n_on).sum()).backward()
        # AdamW at each trial's scheduled lr (trials without a gradient are skipped), then clamp
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = prune_lr_at(step, steps, settings[i].lr)
        optimizer.step()
        with torch.no_grad():
            for i in active:
                taus[i].clamp_(-1.0, 1.0)
        # bookkeeping: history, and trials whose signs have settled leave the batch
        still_active = []
        for slot, i in enumerate(active):
            trial = trials[i]
            trial.steps_run = step + 1
            if step % log_every == 0 or step == steps - 1:
                trial.history.append({"step": step, "task_loss": float(losses_seen[slot]),
                                      "nodes_on": float(n_on[slot].detach())})
            signs[i], flips[i], changed = sign_changes(taus[i].detach(), signs[i], flips[i])
            unchanged[i] = 0 if changed or step < warmup_steps else unchanged[i] + 1
            if not (settle_steps and unchanged[i] >= settle_steps):
                still_active.append(i)
        if progress is not None and (step % log_every == 0 or step == steps - 1):
            progress({"phase": "optimise", "step": step, "steps": steps,
                      "trials_active": len(still_active),
                      "task_loss": float(losses_seen.min()),
                      "nodes_on": float(n_on.detach().min())})
        active = still_active
    for trial, tau in zip(trials, taus, strict=True):
        trial.tau = tau.detach().clone()
    return trials


def attributions(model: SparseGPT, layout: NodeLayout, fill: dict[str, Tensor], taus: Tensor,
                 batch: PairBatch, freeze_norms: bool) -> Tensor:
    """(T, n) −∂L/∂g at each trial's learned mask g = Heaviside(τ), all trials in one batched
    forward and backward: the first-order loss increase from switching each node off (or
    decrease from switching it on). Breaks ties in τ."""
    distinct, used = distinct_gates((taus > 0).float())
    gates = distinct.requires_grad_()
    losses = bucketed_set_losses(model, batch, GateHook(layout, gates, fill), len(gates),
                                 freeze_norms)
    (grad,) = torch.autograd.grad(losses.sum(), gates)  # the sets' losses share no gate
    return -grad.detach()[used]


# ---------------------------------------------------------------------------------------------
# The search: trials → smallest circuit


def search_settings(spec: PruneSpec, seed: int) -> list[MaskSetting]:
    """Trial 0: the spec's own settings; then a scrambled-Sobol sample of the log ranges."""
    settings = [MaskSetting(spec.k_coef, spec.lr, spec.temperature, seed)]
    extra = spec.search.trials - 1
    if extra:
        ranges = [spec.search.k_coef, spec.search.lr, spec.search.temperature]
        sobol = torch.quasirandom.SobolEngine(len(ranges), scramble=True, seed=seed)
        for t, u in enumerate(sobol.draw(extra, dtype=torch.float64).tolist(), start=1):
            k_coef, lr, temperature = [lo * (hi / lo) ** x
                                       for (lo, hi), x in zip(ranges, u, strict=True)]
            settings.append(MaskSetting(k_coef, lr, temperature,
                                        init_seed=seed + t * TRIAL_SEED_STRIDE))
    return settings


@dataclass
class TrialOutcome:
    """One trial of the search, as the ``prune_trials`` table records it."""

    trial: int
    k_coef: float
    lr: float
    temperature: float
    steps_run: int
    nodes_on: int  # τ > 0 at the end of optimisation
    tied_nodes: int
    prefix_k: int | None  # smallest passing prefix of the ranking, before greedy dropping
    n_nodes: int | None
    n_edges: int | None
    loss: float | None
    evaluations: int

    def row(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class PruneResult:
    found: bool
    reason: str | None
    full_model_loss: float  # held-out pairs, uncalibrated
    circuit: Circuit | None = None
    tau: Tensor | None = None  # the chosen trial's τ
    achieved_loss: float | None = None  # held-out (choosing) pairs, calibrated: ≤ threshold
    sufficiency_loss: float | None = None  # test pairs: the circuit alone
    necessity_loss: float | None = None  # test pairs: only the circuit ablated
    random_circuit_loss: float | None = None  # test pairs: random node sets of the same size
    kl_to_full: float | None = None  # test pairs: KL(full ‖ circuit) of the next-token dists
    calibration: Calibration | None = None
    tied_nodes: int = 0
    trials: list[TrialOutcome] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0


def prune(
    model: SparseGPT,
    train: PairBatch,
    heldout: PairBatch,
    test: PairBatch,
    means: dict[str, Tensor] | None,
    spec: PruneSpec,
    seed: int = 0,
    progress: Progress | None = None,
) -> PruneResult:
    """Method §4 end to end on token ids. The model is frozen (``requires_grad`` off) and put in
    eval mode; nothing else about it changes. ``heldout`` pairs choose the circuit, ``test`` pairs
    only measure it."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    model.eval()
    model.requires_grad_(False)
    train, heldout, test = train.to(device), heldout.to(device), test.to(device)
    judge = protocol_judge(model, spec, means, train, heldout)
    layout, fill, calibration_pairs = judge.layout, judge.fill, judge.calibration_pairs
    full_model_loss = evaluate(model, heldout, None)

    # optimise every trial's masks at once
    trials = optimise_masks(model, layout, fill, train, search_settings(spec, seed), spec.steps,
                            spec.batch_size, sample_seed=seed + 1,
                            freeze_norms=spec.freeze_norms, settle_steps=spec.settle_steps,
                            progress=progress)

    # discretise each: rank, search k, drop greedily; keep the passing circuit with fewest edges
    attribution_pairs = train.pairs(torch.arange(min(len(train), ATTRIBUTION_PAIRS),
                                                 device=device))
    outcomes: list[TrialOutcome] = []
    best: tuple[tuple[int, int, float], Tensor, float, Trial, int] | None = None
    ties_broken_by = attributions(model, layout, fill, torch.stack([t.tau for t in trials]),
                                  attribution_pairs, spec.freeze_norms).cpu()
    screened = functools.partial(judge.losses, fail_above=spec.loss_threshold)
    batched = device.type != "cpu"  # a batch of circuits costs about what one does
    for t, trial in enumerate(trials):
        before = judge.n_evaluations
        order = rank_nodes(trial.tau.cpu(), ties_broken_by[t])
        found = search_k(order, screened, spec.loss_threshold, exact=judge.losses,
                         speculate=batched)
        kept, loss = found.kept, found.loss
        if kept is not None:
            kept, dropped_loss, _ = greedy_drop(kept, order, screened, spec.loss_threshold,
                                                speculate=batched)
            loss = dropped_loss if dropped_loss is not None else loss
        n_edges = None if kept is None else sum(count_edges(Circuit(layout, kept), model).values())
        ties = count_ties(trial.tau)
        outcomes.append(TrialOutcome(
            trial=t, k_coef=trial.setting.k_coef, lr=trial.setting.lr,
            temperature=trial.setting.temperature, steps_run=trial.steps_run,
            nodes_on=int((trial.tau > 0).sum()), tied_nodes=ties,
            prefix_k=None if found.kept is None else int(found.kept.sum()),
            n_nodes=None if kept is None else int(kept.sum()), n_edges=n_edges, loss=loss,
            evaluations=judge.n_evaluations - before))
        if progress is not None:
            progress({"phase": "discretise", "trial": t, "trials": len(trials),
                      "n_nodes": outcomes[-1].n_nodes, "loss": loss})
        if kept is not None and n_edges is not None and loss is not None:
            rank = (n_edges, int(kept.sum()), loss)
            if best is None or rank < best[0]:
                best = (rank, kept, loss, trial, ties)

    if best is None:
        every_node = judge.losses(torch.ones(1, layout.n_nodes, dtype=torch.bool))[0]
        return PruneResult(
            found=False, full_model_loss=full_model_loss, trials=outcomes,
            tau=trials[0].tau.cpu(), history=trials[0].history,
            reason=f"no circuit of any of {len(trials)} trial(s) reached the threshold "
            f"{spec.loss_threshold} on the held-out pairs (every node kept: {every_node:.4f}"
            f"{' calibrated' if spec.calibrate else ''}; full model, uncalibrated: "
            f"{full_model_loss:.4f})",
            wall_time_s=time.perf_counter() - started)

    _, kept, loss, trial, ties = best
    validation = validate(model, layout, fill, kept, test, calibration_pairs, spec.freeze_norms,
                          seed)
    return PruneResult(
        found=True, reason=None, full_model_loss=full_model_loss,
        circuit=Circuit(layout, kept), tau=trial.tau.cpu(), achieved_loss=loss,
        tied_nodes=ties, trials=outcomes, history=trial.history,
        wall_time_s=time.perf_counter() - started, **validation)


# ---------------------------------------------------------------------------------------------
# Validation on pairs that chose nothing


@torch.no_grad()
def kl_to_full(model: SparseGPT, layout: NodeLayout, fill: dict[str, Tensor], kept: Tensor,
               batch: PairBatch, freeze_norms: bool) -> float:
    """Mean over prompts of KL(full model ‖ circuit) of the next-token distribution."""
    total = 0.0
    for chunk in batch.chunks(max(1, EVAL_ROWS // 4)):
        full = F.log_softmax(chunk.logits(model).float(), -1)
        scales = full_model_scales(model, chunk) if freeze_norms else None
        with hooked(model, GateHook(layout, kept.float().to(full.device), fill)), \
                frozen_scales(model, scales):
            pruned = F.log_softmax(chunk.logits(model).float(), -1)
        total += float(F.kl_div(pruned, full, log_target=True, reduction="sum"))
    return total / (2 * len(batch))


def validate(model: SparseGPT, layout: NodeLayout, fill: dict[str, Tensor], kept: Tensor,
             test: PairBatch, calibration_pairs: PairBatch | None, freeze_norms: bool,
             seed: int) -> dict[str, Any]:
    """Sufficiency, necessity, the random-circuit baseline and KL of ``kept`` on ``test``."""
    judge = Judge(model, layout, fill, test, calibration_pairs, freeze_norms)
    generator = torch.Generator().manual_seed(seed + 2)
    n_kept = int(kept.sum())
    randoms = torch.zeros(RANDOM_CIRCUITS, layout.n_nodes, dtype=torch.bool)
    for row in randoms:
        row[torch.randperm(layout.n_nodes, generator=generator)[:n_kept]] = True
    masks = torch.cat([kept.unsqueeze(0), (~kept).unsqueeze(0), randoms])
    losses = judge.losses(masks)
    return {
        "sufficiency_loss": losses[0],
        "necessity_loss": losses[1],
        "random_circuit_loss": sum(losses[2:]) / RANDOM_CIRCUITS,
        "kl_to_full": kl_to_full(model, layout, fill, kept, test, freeze_norms),
        "calibration": judge.calibrations(kept.unsqueeze(0))[0],
    }
