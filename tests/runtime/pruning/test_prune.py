"""Pruning end to end (method §4) on a planted circuit, and its helpers: the task loss, gates,
batched trials, calibration, frozen norms, silent nodes."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from runtime.pruning.ablation import compute_site_means, hooked
from runtime.pruning.calibrate import Calibration, fit_calibration
from runtime.pruning.circuit import NodeLayout, count_edges
from runtime.pruning.gates import (
    GateHook,
    ablation_values,
    distinct_gates,
    heaviside_ste,
    silence_to_zero,
    silent_nodes,
)
from runtime.pruning.groundtruth import F0, F1, A, B, Q, X, Y, planted
from runtime.pruning.norms import frozen_scales, full_model_scales
from runtime.pruning.pairs import PairBatch, answer_token_ids, encode_pairs
from runtime.pruning.prune import (
    Judge,
    MaskSetting,
    attributions,
    evaluate,
    optimise_masks,
    prune,
    prune_lr_at,
    search_settings,
    task_loss,
)
from spec.groundtruth import THRESHOLD
from spec.recipe import PruneSpec

SPLITS = {"train_pairs": 256, "heldout_pairs": 256, "test_pairs": 256}


@pytest.fixture(scope="module")
def planted_ns() -> SimpleNamespace:
    truth = planted("composition")
    means = compute_site_means(truth.model, truth.stream(20_000).numpy(), n_tokens=20_000,
                               batch=32, context=16)
    layout = NodeLayout.from_model(truth.model)
    fill = ablation_values(layout, means, "mean", torch.device("cpu"))
    return SimpleNamespace(truth=truth, model=truth.model, means=means, layout=layout, fill=fill,
                           train=truth.pairs(256, seed=2), heldout=truth.pairs(256, seed=1),
                           test=truth.pairs(256, seed=3))



def run_prune(p: SimpleNamespace, **overrides: object) -> object:
    spec = PruneSpec(**{"loss_threshold": THRESHOLD, **SPLITS, **overrides})
    return prune(p.model, p.train, p.heldout, p.test, p.means, spec, seed=0)


def test_recovery_survives_tau_at_the_clamp_and_reports_the_search(
        planted_ns: SimpleNamespace) -> None:
    # Every step of the default 2000 (no early stop) drives kept τ to +1: the ranking is one big
    # tie that attribution must break. One trial, so it is trial 0's circuit.
    before = {name: p.clone() for name, p in planted_ns.model.state_dict().items()}
    result = run_prune(planted_ns, settle_steps=0, search={"trials": 1})
    assert result.found and result.reason is None
    assert result.tied_nodes >= len(planted_ns.truth.nodes)
    assert result.tau.max() == 1.0 and result.tau.min() >= -1
    assert planted_ns.truth.scores(result.circuit.nodes()) == (1.0, 1.0)
    assert count_edges(result.circuit, planted_ns.model) == planted_ns.truth.edges
    (trial,) = result.trials
    assert trial.steps_run == 2000 and trial.n_nodes == len(planted_ns.truth.nodes)
    assert result.achieved_loss <= THRESHOLD
    assert result.sufficiency_loss <= THRESHOLD  # on pairs that chose nothing
    assert result.necessity_loss > math.log(2) - 0.05
    assert result.random_circuit_loss > 5 * result.sufficiency_loss
    assert result.kl_to_full >= 0
    # The base model is frozen and unchanged.
    assert not any(p.requires_grad for p in planted_ns.model.parameters())
    for name, tensor in planted_ns.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_no_passing_circuit_is_a_result(planted_ns: SimpleNamespace) -> None:
    result = run_prune(planted_ns, steps=5, loss_threshold=1e-9, calibrate=False,
                       search={"trials": 2})
    assert not result.found and result.circuit is None
    assert "no circuit of any of 2 trial(s) reached the threshold 1e-09" in result.reason
    assert [t.n_nodes for t in result.trials] == [None, None]


def test_batched_trials_equal_trials_run_one_by_one(planted_ns: SimpleNamespace) -> None:
    # the second and last settings differ in their k_coef alone: they share a mask (and a slice
    # of the batch) until their τ part
    settings = [MaskSetting(1e-4, 3e-3, 1.0, 0), MaskSetting(1e-3, 1e-2, 0.5, 7),
                MaskSetting(3e-5, 5e-3, 2.0, 11), MaskSetting(1e-2, 1e-2, 0.5, 7)]
    common = {"steps": 60, "batch_size": 16, "sample_seed": 1, "settle_steps": 10}
    args = (planted_ns.model, planted_ns.layout, planted_ns.fill, planted_ns.train)
    together = optimise_masks(*args, settings, **common)
    assert len({trial.steps_run for trial in together}) > 1  # some stopped early, alone
    for setting, trial in zip(settings, together, strict=True):
        (alone,) = optimise_masks(*args, [setting], **common)
        assert alone.steps_run == trial.steps_run
        assert torch.allclose(alone.tau, trial.tau, atol=1e-6)
        assert torch.equal(alone.tau > 0, trial.tau > 0)


def test_batched_attributions_equal_each_trials_own(planted_ns: SimpleNamespace) -> None:
    taus = torch.randn(3, planted_ns.layout.n_nodes, generator=torch.Generator().manual_seed(1))
    taus = torch.cat([taus, taus[1:2] + 0.5 * taus[1:2].sign()])  # the same mask as row 1
    args = (planted_ns.model, planted_ns.layout, planted_ns.fill)
    together = attributions(*args, taus, planted_ns.train, freeze_norms=False)
    alone = torch.cat([attributions(*args, tau[None], planted_ns.train, freeze_norms=False)
                       for tau in taus])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-7)
    assert (together[0] != together[1]).any()  # each row is its own trial's


def test_search_settings_start_at_the_spec_and_stay_in_range() -> None:
    spec = PruneSpec(search={"trials": 16, "k_coef": [1e-5, 1e-2], "lr": [1e-3, 1e-2],
                             "temperature": [0.5, 2.0]})
    settings = search_settings(spec, seed=3)
    assert settings[0] == MaskSetting(spec.k_coef, spec.lr, spec.temperature, 3)
    assert len(settings) == 16 and len({s.init_seed for s in settings}) == 16
    assert all(1e-5 <= s.k_coef <= 1e-2 and 1e-3 <= s.lr <= 1e-2 and 0.5 <= s.temperature <= 2
               for s in settings)
    assert search_settings(spec, seed=3) == settings  # seeded


def test_searched_circuit_is_never_larger_than_trial_zero(planted_ns: SimpleNamespace) -> None:
    result = run_prune(planted_ns, steps=300, search={"trials": 6})
    passing = [t.n_edges for t in result.trials if t.n_edges is not None]
    assert result.trials[0].n_edges is not None
    assert sum(count_edges(result.circuit, planted_ns.model).values()) == min(passing)


# ---------------------------------------------------------------------------------------------
# Calibration, frozen norms, silent nodes


def test_calibration_rescues_a_circuit_whose_logits_are_off(planted_ns: SimpleNamespace) -> None:
    # Shrink the unembedding and bias it towards X: the right circuit, a wrong readout.
    truth = planted("composition")
    with torch.no_grad():
        truth.model.lm_head.weight.mul_(0.15)
        truth.model.lm_head.weight[X, 9] = 2.0  # filler channel 9: a constant-ish pull to X
    layout = NodeLayout.from_model(truth.model)
    kept = layout.mask(sorted(truth.nodes))
    kept[layout.index("final_in", 9)] = True
    for calibrate, passes in ((False, False), (True, True)):
        judge = Judge(truth.model, layout, planted_ns.fill, planted_ns.heldout,
                      planted_ns.train if calibrate else None, freeze_norms=False)
        (loss,) = judge.losses(kept[None])
        assert (loss <= THRESHOLD) == passes, (calibrate, loss)


def test_screened_judging_fails_only_what_fails_and_judges_each_circuit_once(
        planted_ns: SimpleNamespace) -> None:
    # The planted circuit, it without each of its nodes, and random circuits: a screened loss is
    # inf only where the real one misses the threshold, and the real one everywhere else; asked
    # again, the judge answers from what it has judged.
    layout, truth = planted_ns.layout, planted_ns.truth
    kept = layout.mask(sorted(truth.nodes))
    singles = kept.repeat(len(truth.nodes), 1)
    for row, node in zip(singles, sorted(truth.nodes), strict=True):
        row[layout.index(*node)] = False
    randoms = torch.rand(8, layout.n_nodes, generator=torch.Generator().manual_seed(0)) < 0.5
    masks = torch.cat([kept[None], singles, randoms | kept, randoms])
    judge = Judge(planted_ns.model, layout, planted_ns.fill, planted_ns.heldout,
                  planted_ns.train, freeze_norms=False)
    screened = judge.losses(masks, fail_above=THRESHOLD)
    exact = judge.losses(masks)
    assert judge.n_screened > 0
    for real, quick in zip(exact, screened, strict=True):
        assert quick == real or (math.isinf(quick) and real > THRESHOLD)
    assert sum(loss <= THRESHOLD for loss in exact) > 1  # both outcomes occur

    def no_forward(*args: object) -> None:
        raise AssertionError("a circuit judged before was run again")

    judge.two_logits = no_forward  # type: ignore[assignment,method-assign]
    assert judge.losses(masks) == exact and judge.losses(masks, THRESHOLD) == exact


def test_fit_calibration_recovers_a_known_scale_and_shift() -> None:
    generator = torch.Generator().manual_seed(0)
    margin = 4 + torch.rand(200, generator=generator)  # correct minus other, before the damage
    true_two = torch.stack([margin / 2, -margin / 2], 1)
    candidates = torch.tensor([[5, 6], [6, 5]]).repeat(100, 1)
    damaged = (true_two - 1.5 * (candidates == 5)) / 8  # scale 1/8, token 5 pushed down by 1.5
    fitted = fit_calibration(damaged, candidates)
    assert fitted.scale > 8
    assert fitted.apply(damaged, candidates).sub(true_two).abs().max() < 20  # same direction
    loss = torch.logsumexp(fitted.apply(damaged, candidates), -1) - fitted.apply(
        damaged, candidates)[:, 0]
    assert loss.mean() < 0.02
    identity = Calibration.identity()
    assert torch.equal(identity.apply(damaged, candidates), damaged)


def test_frozen_norms_replay_the_full_models_scales(planted_ns: SimpleNamespace) -> None:
    model, layout, fill = planted_ns.model, planted_ns.layout, planted_ns.fill
    batch = planted_ns.heldout.pairs(torch.arange(8))
    without_noise = layout.mask([]).logical_not()
    without_noise[layout.index("l0.attn_out", 6)] = False  # NOISE: changes ln_mlp's input RMS
    full = full_model_scales(model, batch)
    seen: list[torch.Tensor] = []
    norm = model.blocks[0].ln_mlp

    def spy(scale: torch.Tensor) -> torch.Tensor:
        seen.append(scale)
        return scale

    with hooked(model, GateHook(layout, without_noise.float(), fill)):
        norm.scale_hook = spy
        model(batch.tokens, batch.last)
        norm.scale_hook = None
        live = seen.pop()
        with frozen_scales(model, full):
            frozen = model(batch.tokens, batch.last)
    assert not torch.allclose(live, full[1])  # ablation changed the norm's input …
    with hooked(model, GateHook(layout, without_noise.float(), fill)):
        unfrozen = model(batch.tokens, batch.last)
    assert not torch.allclose(frozen, unfrozen)  # … and freezing undoes that
    assert all(n.scale_hook is None for n in (norm, model.blocks[0].ln_attn, model.ln_f))


def test_fully_ablated_sites_are_skipped_without_changing_a_bit(
        planted_ns: SimpleNamespace) -> None:
    model, layout, fill = planted_ns.model, planted_ns.layout, planted_ns.fill
    batch = planted_ns.heldout.pairs(torch.arange(8))
    masks = torch.rand(3, layout.n_nodes, generator=torch.Generator().manual_seed(0)) < 0.2
    start = layout.offsets["l0.q"]
    masks[:, start:start + layout.widths[layout.sites.index("l0.q")]] = False  # empty in every set
    hook = GateHook(layout, masks.float(), fill)
    assert "l0.q" in hook.ablated
    assert not GateHook(layout, masks.float().requires_grad_(), fill).ablated  # d/dg needs x
    tiled = batch.tiled(3)
    with torch.no_grad(), hooked(model, hook):
        skipping = model(tiled.tokens, tiled.last)
    with torch.no_grad(), hooked(model, lambda site, x: hook(site, x)):  # no ``fixed``
        computing = model(tiled.tokens, tiled.last)
    assert torch.equal(skipping, computing)


def test_silent_nodes_are_zero_wherever_they_could_reach_the_answer(
        planted_ns: SimpleNamespace) -> None:
    # The planted model has one block, so its MLP reaches the logits at the answer position only.
    silent = silent_nodes(planted_ns.model, planted_ns.layout, planted_ns.train)
    layout = planted_ns.layout
    assert not silent[layout.index("l0.mlp_neuron", 0)]  # the planted neuron fires there
    assert not silent[layout.index("l0.attn_in", 0)]  # keys and values are read everywhere
    # the injector fires on the markers, never at the answer: silent there, where its mean
    # would be injected; so is a neuron that never fires at all
    assert silent[layout.index("l0.mlp_neuron", 4)]
    assert silent[layout.index("l0.mlp_neuron", 5)]
    zeroed = silence_to_zero(planted_ns.fill, layout, silent)
    assert zeroed["l0.mlp_neuron"][4] == 0 < planted_ns.fill["l0.mlp_neuron"][4]  # no injection
    assert zeroed["l0.mlp_neuron"][5] == 0
    assert torch.equal(zeroed["l0.mlp_neuron"][:4], planted_ns.fill["l0.mlp_neuron"][:4])


# ---------------------------------------------------------------------------------------------
# Pure helpers


def test_heaviside_forward_sigmoid_surrogate_backward() -> None:
    tau = torch.tensor([-0.5, -0.01, 0.0, 0.2, 1.0], requires_grad=True)
    temperature = 0.5
    gates = heaviside_ste(tau, temperature)
    assert gates.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    gates.sum().backward()
    reference = tau.detach().clone().requires_grad_()
    torch.sigmoid(reference / temperature).sum().backward()
    assert torch.allclose(tau.grad, reference.grad)


def test_prune_lr_warms_up_then_decays_to_zero() -> None:
    lrs = [prune_lr_at(step, 100, 1.0) for step in range(100)]
    assert lrs[0] == pytest.approx(0.2)  # 5 warmup steps
    assert lrs[4] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    assert lrs[-1] < 0.02


# ---------------------------------------------------------------------------------------------
# Pairs, padding and the task loss


def test_pair_batch_right_pads_and_orders_candidates() -> None:
    batch = PairBatch.from_ids([([1, 2, 3], [4, 5]), ([6], [7, 8])], [(10, 11), (12, 13)],
                               context=8, pad_id=0)
    assert batch.tokens.tolist() == [[1, 2, 3], [4, 5, 0], [6, 0, 0], [7, 8, 0]]
    assert batch.last.tolist() == [2, 1, 0, 1]
    assert batch.candidates.tolist() == [[10, 11], [11, 10], [12, 13], [13, 12]]
    assert len(batch) == 2
    second = batch.pairs(torch.tensor([1]))
    assert second.tokens.tolist() == [[6, 0], [7, 8]]  # padding trimmed to the longest prompt
    truncated = PairBatch.from_ids([([1, 2, 3, 4], [5])], [(1, 2)], context=2)
    assert truncated.tokens.tolist() == [[3, 4], [5, 0]]


def test_right_padding_does_not_change_the_task_loss(planted_ns: SimpleNamespace) -> None:
    # The same pair alone and next to a much longer pair (so it gets padded) scores the same.
    short = ([A, F0, Q], [B, F0, Q])
    alone = PairBatch.from_ids([short], [(X, Y)], context=32)
    padded = PairBatch.from_ids([short, ([A, *[F1] * 20, Q], [B, *[F1] * 20, Q])],
                                [(X, Y), (X, Y)], context=32)
    with torch.no_grad():
        loss_alone = task_loss(planted_ns.model, alone)
        loss_padded = task_loss(planted_ns.model, padded.pairs(torch.tensor([0])))
        both = task_loss(planted_ns.model, padded)
        other = task_loss(planted_ns.model, padded.pairs(torch.tensor([1])))
    assert padded.tokens.shape[1] == 22
    assert torch.allclose(loss_alone, loss_padded)
    assert torch.allclose(both, (loss_alone + other) / 2)


def test_task_loss_is_ln2_when_the_answers_tie() -> None:
    truth = planted("composition")
    with torch.no_grad():
        truth.model.lm_head.weight.zero_()
    assert evaluate(truth.model, truth.pairs(8, seed=0), None) == pytest.approx(math.log(2))


def test_gates_interpolate_between_activation_and_mean(planted_ns: SimpleNamespace) -> None:
    layout, fill = planted_ns.layout, planted_ns.fill
    x = torch.randn(2, 3, 16)
    ones = GateHook(layout, torch.ones(layout.n_nodes), fill)
    zeros = GateHook(layout, torch.zeros(layout.n_nodes), fill)
    assert torch.equal(ones("l0.q", x), x)
    assert torch.allclose(zeros("l0.q", x), fill["l0.q"].expand_as(x))
    zero_fill = ablation_values(layout, None, "zero", torch.device("cpu"))
    assert GateHook(layout, torch.zeros(layout.n_nodes), zero_fill)("final_in", x).abs().sum() == 0
    # All gates on reproduces the unhooked model exactly.
    assert evaluate(planted_ns.model, planted_ns.heldout, ones) == evaluate(
        planted_ns.model, planted_ns.heldout, None)
    # M mask sets on a tiled batch: slice m gets set m's gates.
    two = GateHook(layout, torch.stack([torch.ones(layout.n_nodes), torch.zeros(layout.n_nodes)]),
                    fill)("l0.q", torch.cat([x, x]))
    assert torch.equal(two[:2], x)
    assert torch.allclose(two[2:], fill["l0.q"].expand_as(x))


def test_gates_apply_fractions_and_pass_each_gate_its_gradient(
        planted_ns: SimpleNamespace) -> None:
    layout, fill = planted_ns.layout, planted_ns.fill
    x = torch.randn(2 * 4, 5, 16)
    gates = torch.rand(2, layout.n_nodes, generator=torch.Generator().manual_seed(1))
    gates.requires_grad_()
    out = GateHook(layout, gates, fill)("l0.q", x)
    g = layout.split(gates.detach()[0])["l0.q"]
    torch.testing.assert_close(out[:4], g * x[:4] + (1 - g) * fill["l0.q"])
    out.sum().backward()
    assert gates.grad is not None
    start = layout.sites.index("l0.q")
    first = sum(layout.widths[:start])
    torch.testing.assert_close(gates.grad[1, first:first + 16],
                               (x[4:] - fill["l0.q"]).sum((0, 1)))


def test_equal_masks_share_one_row_and_keep_their_own_gradients() -> None:
    tau = torch.tensor([[0.3, -0.2, 0.1], [0.5, -0.1, 0.2], [0.4, 0.2, -0.3]],
                       requires_grad=True)
    gates = heaviside_ste(tau, torch.tensor([[1.0], [2.0], [0.5]]))
    distinct, used = distinct_gates(gates)
    assert len(distinct) == 2  # sets 0 and 1 both keep nodes 0 and 2
    assert torch.equal(distinct[used], gates.detach())
    weights = torch.tensor([1.0, -2.0, 3.0])
    (distinct @ weights).sum().backward()  # each distinct row counted once
    alone = torch.tensor([[0.3, -0.2, 0.1], [0.5, -0.1, 0.2], [0.4, 0.2, -0.3]],
                         requires_grad=True)
    for row, temperature in zip(alone, (1.0, 2.0, 0.5), strict=True):
        (heaviside_ste(row, temperature) @ weights).backward()
    assert tau.grad is not None and alone.grad is not None
    torch.testing.assert_close(tau.grad, alone.grad)


def test_mean_ablation_needs_every_site() -> None:
    layout = NodeLayout.from_model(planted("composition").model)
    with pytest.raises(ValueError, match="missing sites"):
        ablation_values(layout, {"final_in": torch.zeros(16)}, "mean", torch.device("cpu"))
    with pytest.raises(ValueError, match="needs the stats"):
        ablation_values(layout, None, "mean", torch.device("cpu"))


class CharTokenizer:
    """One token per character, except the strings it is told to keep whole."""

    def __init__(self, whole: list[str]) -> None:
        self.whole = whole
        self.vocab: dict[str, int] = {}

    def encode(self, text: str) -> SimpleNamespace:
        pieces, i = [], 0
        while i < len(text):
            match = next((w for w in self.whole if text.startswith(w, i)), text[i])
            pieces.append(match)
            i += len(match)
        return SimpleNamespace(ids=[self.vocab.setdefault(p, len(self.vocab)) for p in pieces])


def test_encode_pairs_uses_each_answers_single_token() -> None:
    pair = SimpleNamespace(prompts=('f("a', "f('a"), answers=('")', "')"))
    tokenizer = CharTokenizer(['")', "')"])
    batch = encode_pairs([pair], tokenizer, ['")', "')"], context=16)
    dq, sq = tokenizer.encode('")').ids[0], tokenizer.encode("')").ids[0]
    assert batch.candidates.tolist() == [[dq, sq], [sq, dq]]
    assert batch.last.tolist() == [3, 3]


def test_multi_token_candidates_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"'\"\)' → 2 tokens"):
        answer_token_ids(CharTokenizer(["')"]), ['")', "')"])
