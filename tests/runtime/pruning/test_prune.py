"""Pruning (method §4): helpers, the task loss, and a planted circuit that pruning must recover."""

from __future__ import annotations

import itertools
import math
import random
from types import SimpleNamespace

import pytest
import torch

from runtime.model import GPTConfig, SparseGPT
from runtime.pruning.ablation import compute_site_means
from runtime.pruning.circuit import Circuit, NodeLayout, count_edges
from runtime.pruning.prune import (
    PairBatch,
    ablation_values,
    answer_token_ids,
    encode_pairs,
    evaluate,
    gate_hook,
    heaviside_ste,
    prune,
    prune_lr_at,
    smallest_passing_k,
    task_loss,
    top_k_mask,
)
from spec.recipe import PruneSpec

# ---------------------------------------------------------------------------------------------
# The planted model. One layer, d_model 16, d_head 4 (4 heads), 8 MLP neurons, AbsTopK off.
# Task: a prompt starts with a marker A or B, then 4–14 fillers, then a query token Q; the answer
# is X after A and Y after B. The pair's two prompts differ only in the marker.
#
# Planted path (12 nodes, 8 edges), every node necessary:
#   attn_in[FLAG] → k[0]    keys light up on the marker,
#   attn_in[QUERY] → q[0]   the query lights up on Q, so head 0 at Q attends to the marker,
#   attn_in[SIGN] → v[1]    the value carries the marker's sign (A +1, B −1),
#   v[1] → attn_out[ATT]    written to residual channel ATT,
#   mlp_in[ATT] → neurons 0 (GELU(+x)) and 1 (GELU(−x)) → mlp_out[MLPW] = n0 − n1,
#   final_in[MLPW]          read by the unembedding: +X, −Y.
# Distractors: head 1 attends uniformly and copies filler channel 9 into NOISE; neuron 2 copies
# NOISE into NOISE2; the unembedding reads both, so they add pair-level noise to the logit
# difference. Neuron 3 fires on the constant BIAS channel everywhere and changes nothing. A large
# constant BIAS channel in every embedding keeps RMSNorm close to a fixed scale.

F0, F1, F2, F3, A, B, Q, X, Y = range(9)
VOCAB = 9
SIGN, FLAG, QUERY, QPAD, ATT, MLPW, NOISE, NOISE2, BIAS = range(9)
BIAS_VALUE = 3.0
EMBEDDING = {
    A: {SIGN: 1, FLAG: 1}, B: {SIGN: -1, FLAG: 1}, Q: {QUERY: 1, QPAD: 1},
    F0: {9: 1, 10: 1}, F1: {11: 1, 12: 1}, F2: {13: 1, 14: 1}, F3: {15: 1, 9: -1},
    X: {10: 1, 11: 1}, Y: {12: 1, 13: 1},
}
PLANTED = [
    ("l0.attn_in", SIGN), ("l0.attn_in", FLAG), ("l0.attn_in", QUERY),
    ("l0.q", 0), ("l0.k", 0), ("l0.v", 1), ("l0.attn_out", ATT),
    ("l0.mlp_in", ATT), ("l0.mlp_neuron", 0), ("l0.mlp_neuron", 1), ("l0.mlp_out", MLPW),
    ("final_in", MLPW),
]
PLANTED_EDGES = {
    "attn_in->q": 1, "attn_in->k": 1, "attn_in->v": 1, "v->attn_out": 1,
    "mlp_in->mlp_neuron": 2, "mlp_neuron->mlp_out": 2,
}
# The threshold sits below the loss of every planted node's single ablation (≥ 0.13) and far
# above the planted circuit's (≈ 0.003), so the planted circuit is the smallest that passes.
THRESHOLD = 0.1


def planted_model() -> SparseGPT:
    cfg = GPTConfig(vocab_size=VOCAB, context=32, n_layer=1, d_model=16, d_head=4, d_mlp=8,
                    afrac=1.0)
    model = SparseGPT(cfg)
    weights = {
        "blocks.0.attn.q_proj.weight": [(0, QUERY, 2.83)],  # q·k/√4 = 4 on the marker
        "blocks.0.attn.k_proj.weight": [(0, FLAG, 2.83)],
        "blocks.0.attn.v_proj.weight": [(1, SIGN, 1.0), (4, 9, 1.0)],
        "blocks.0.attn.o_proj.weight": [(ATT, 1, 1.0), (NOISE, 4, 1.0)],
        "blocks.0.mlp.fc.weight": [(0, ATT, 1.0), (1, ATT, -1.0), (2, NOISE, 1.0), (3, BIAS, 1.0)],
        "blocks.0.mlp.proj.weight": [(MLPW, 0, 1.0), (MLPW, 1, -1.0), (NOISE2, 2, 1.0),
                                     (QPAD, 3, 0.3)],
        "lm_head.weight": [(X, MLPW, 3.0), (Y, MLPW, -3.0), (X, NOISE, 0.5), (Y, NOISE, -0.5),
                           (X, NOISE2, 0.5), (Y, NOISE2, -0.5)],
        "wte.weight": [(token, channel, value) for token, channels in EMBEDDING.items()
                       for channel, value in [*channels.items(), (BIAS, BIAS_VALUE)]],
    }
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for name, entries in weights.items():
            for row, col, value in entries:
                model.get_parameter(name)[row, col] = value
        # Every embedding has the same norm; this gain makes the attention reads exactly ±1.
        model.blocks[0].ln_attn.weight.fill_(math.sqrt((BIAS_VALUE**2 + 2) / 16))
        model.blocks[0].ln_mlp.weight.fill_(1.0)
        model.ln_f.weight.fill_(1.0)
    return model


def planted_pairs(n: int, seed: int) -> PairBatch:
    rng = random.Random(seed)
    prompts, answers = [], []
    for _ in range(n):
        fillers = [rng.randrange(4) for _ in range(rng.randint(4, 14))]
        prompts.append(([A, *fillers, Q], [B, *fillers, Q]))
        answers.append((X, Y))
    return PairBatch.from_ids(prompts, answers, context=32)


@pytest.fixture(scope="module")
def planted() -> SimpleNamespace:
    model = planted_model()
    stream = torch.randint(0, VOCAB, (20_000,), generator=torch.Generator().manual_seed(0))
    means = compute_site_means(model, stream.numpy(), n_tokens=20_000, batch=32, context=16)
    layout = NodeLayout.from_model(model)
    fill = ablation_values(layout, means, "mean", torch.device("cpu"))
    return SimpleNamespace(model=model, means=means, layout=layout, fill=fill,
                           train=planted_pairs(256, seed=2), heldout=planted_pairs(256, seed=1))


def circuit_loss(p: SimpleNamespace, kept: torch.Tensor) -> float:
    return evaluate(p.model, p.heldout, gate_hook(p.layout, kept.float(), p.fill))


def test_planted_path_is_the_smallest_sufficient_circuit(planted: SimpleNamespace) -> None:
    # The premise of the recovery test: the path alone passes, ablating it sends the task to
    # chance, and dropping any one of its nodes fails the threshold.
    kept = planted.layout.mask(PLANTED)
    assert circuit_loss(planted, kept) < 0.01
    assert circuit_loss(planted, ~kept) > math.log(2) - 0.01
    for node in PLANTED:
        without = kept.clone()
        without[planted.layout.index(*node)] = False
        assert circuit_loss(planted, without) > THRESHOLD, node
    assert count_edges(Circuit(planted.layout, kept), planted.model) == PLANTED_EDGES


def test_pruning_recovers_the_planted_circuit(planted: SimpleNamespace) -> None:
    before = {name: p.clone() for name, p in planted.model.state_dict().items()}
    spec = PruneSpec(steps=80, lr=0.01, batch_size=32, k_coef=1e-4, loss_threshold=THRESHOLD)
    result = prune(planted.model, planted.train, planted.heldout, planted.means, spec, seed=0)

    assert result.found and result.reason is None
    found = set(result.circuit.nodes())
    assert found == set(PLANTED)  # node precision and recall 1.0
    assert result.achieved_loss <= THRESHOLD
    assert result.full_model_loss <= THRESHOLD
    assert result.necessity_loss > math.log(2) - 0.01
    assert count_edges(result.circuit, planted.model) == PLANTED_EDGES
    assert result.tau.min() >= -1 and result.tau.max() <= 1
    # The base model is frozen and unchanged.
    assert not any(p.requires_grad for p in planted.model.parameters())
    for name, tensor in planted.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_full_model_missing_the_threshold_is_a_result(planted: SimpleNamespace) -> None:
    spec = PruneSpec(steps=5, loss_threshold=1e-4)  # the full model's loss is ≈ 0.003
    result = prune(planted.model, planted.train, planted.heldout, planted.means, spec)
    assert not result.found
    assert result.circuit is None
    assert "misses the threshold" in result.reason


# ---------------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize("answer", [0, 1, 7, 63, 64])
def test_smallest_passing_k_matches_brute_force(answer: int) -> None:
    calls: list[int] = []

    def predicate(k: int) -> bool:
        calls.append(k)
        return k >= answer

    assert smallest_passing_k(predicate, 0, 64) == answer
    assert len(calls) <= math.ceil(math.log2(65)) + 1


def test_smallest_passing_k_none_when_even_hi_fails() -> None:
    assert smallest_passing_k(lambda k: False, 0, 10) is None
    assert smallest_passing_k(lambda k: True, 3, 3) == 3
    assert smallest_passing_k(lambda k: True, 4, 3) is None


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


def test_top_k_mask_keeps_the_highest_scores() -> None:
    scores = torch.tensor([0.3, -1.0, 0.9, 0.3, 0.1])
    assert top_k_mask(scores, 2).tolist() == [True, False, True, False, False]
    assert top_k_mask(scores, 0).sum() == 0
    assert top_k_mask(scores, 5).all()


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


def test_right_padding_does_not_change_the_task_loss(planted: SimpleNamespace) -> None:
    # The same pair alone and next to a much longer pair (so it gets padded) scores the same.
    short = ([A, F0, Q], [B, F0, Q])
    alone = PairBatch.from_ids([short], [(X, Y)], context=32)
    padded = PairBatch.from_ids([short, ([A, *[F1] * 20, Q], [B, *[F1] * 20, Q])],
                                [(X, Y), (X, Y)], context=32)
    with torch.no_grad():
        loss_alone = task_loss(planted.model, alone)
        loss_padded = task_loss(planted.model, padded.pairs(torch.tensor([0])))
        both = task_loss(planted.model, padded)
        other = task_loss(planted.model, padded.pairs(torch.tensor([1])))
    assert padded.tokens.shape[1] == 22
    assert torch.allclose(loss_alone, loss_padded)
    assert torch.allclose(both, (loss_alone + other) / 2)


def test_task_loss_is_ln2_when_the_answers_tie() -> None:
    model = planted_model()
    with torch.no_grad():
        model.lm_head.weight.zero_()
    assert evaluate(model, planted_pairs(8, seed=0), None) == pytest.approx(math.log(2))


def test_gates_interpolate_between_activation_and_mean(planted: SimpleNamespace) -> None:
    layout, fill = planted.layout, planted.fill
    x = torch.randn(2, 3, 16)
    ones = gate_hook(layout, torch.ones(layout.n_nodes), fill)
    zeros = gate_hook(layout, torch.zeros(layout.n_nodes), fill)
    assert torch.equal(ones("l0.q", x), x)
    assert torch.allclose(zeros("l0.q", x), fill["l0.q"].expand_as(x))
    zero_fill = ablation_values(layout, None, "zero", torch.device("cpu"))
    assert gate_hook(layout, torch.zeros(layout.n_nodes), zero_fill)("final_in", x).abs().sum() == 0
    # All gates on reproduces the unhooked model exactly.
    assert evaluate(planted.model, planted.heldout, ones) == evaluate(
        planted.model, planted.heldout, None)


def test_mean_ablation_needs_every_site() -> None:
    layout = NodeLayout.from_model(planted_model())
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
