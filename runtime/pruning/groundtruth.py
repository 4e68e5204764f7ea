"""Models with a planted circuit of known nodes: the ground truth a pruning setting is checked on.

Each shape is a one-layer ``SparseGPT`` (d_model 16, 4 heads of 4, 8 MLP neurons, AbsTopK off)
whose weights are set by hand, with a task made of minimal pairs over a 9-token vocabulary. The
planted path is the unique smallest circuit that passes the threshold, *including* under logit
calibration (a free scale and per-answer shift make any path whose signal has the right sign for
every pair pass, so every planted node must carry information no shortcut has), and it sits among
distractors a pruner must leave out:

- **noise**: head 1 attends uniformly and copies filler channel 9 into NOISE, neuron 2 copies
  NOISE into NOISE2, and the unembedding reads both: large activity that adds pair-level noise;
- **idle**: neuron 3 fires on the constant BIAS channel everywhere and changes nothing;
- **mean injection**: neuron 4 fires only on tokens that are never at the last position of a
  prompt, where the loss is read, and writes into the answer channel. It does nothing to the
  task, but its pretraining mean is large, so mean-ablating it *injects* a shift of the answer
  logits; a pruner that keeps every node whose ablation hurts keeps it.

Shapes (``SHAPES``):

- ``mlp_path``: the cue (A or B) is the last token; ``mlp_in[SIGN] → neuron 0 → mlp_out[ANS]``,
  read by the unembedding. 4 nodes, 2 edges.
- ``attention_copy``: a marker A/B, fillers (which carry random ±SIGN themselves, so attending
  anywhere but the marker gives noise), then Q. Head 0 at Q attends to the marker (q from QUERY,
  k from FLAG) and copies its SIGN to ANS, read by the unembedding. 8 nodes, 4 edges.
- ``composition``: the attention copy writes ATT, and neuron 0 (with a bias, so it is symmetric
  about zero) reads ATT and writes ANS: attention then MLP. 10 nodes, 6 edges.

The pretraining stream for mean ablation is uniform random tokens (``stream``). The shape names
and the suite's loss threshold live in spec/groundtruth.py, so recipes are validated without
torch; the ``groundtruth`` job kind (runtime/jobs/groundtruth.py) prunes these models.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch

from runtime.model import Block, GPTConfig, SparseGPT
from runtime.pruning.ablation import compute_site_means
from runtime.pruning.pairs import PairBatch
from spec.groundtruth import SHAPES

F0, F1, F2, F3, A, B, Q, X, Y = range(9)
VOCAB = 9
FILLERS = (F0, F1, F2, F3)
# Residual channels; 9–15 carry filler identity.
SIGN, FLAG, QUERY, QPAD, ATT, ANS, NOISE, NOISE2, BIAS = range(9)
D_MODEL, D_HEAD, D_MLP, CONTEXT = 16, 4, 8, 32
BIAS_VALUE = 3.0
MEAN_TOKENS = 20_000  # stream tokens the means for mean ablation are taken over

Node = tuple[str, int]


@dataclass(frozen=True)
class Planted:
    shape: str
    model: SparseGPT
    nodes: frozenset[Node]
    edges: dict[str, int]  # edge counts by type of the planted circuit
    cue_last: bool  # the cue is the last token (mlp_path) or the first (attention shapes)

    def pairs(self, n: int, seed: int) -> PairBatch:
        """``n`` minimal pairs; the prompts differ only in the cue token (A vs B)."""
        rng = random.Random(f"{self.shape}:{seed}")
        prompts, answers = [], []
        for _ in range(n):
            fillers = [rng.choice(FILLERS) for _ in range(rng.randint(4, 14))]
            if self.cue_last:
                prompts.append(([*fillers, A], [*fillers, B]))
            else:
                prompts.append(([A, *fillers, Q], [B, *fillers, Q]))
            answers.append((X, Y))
        return PairBatch.from_ids(prompts, answers, context=CONTEXT)

    def stream(self, n_tokens: int, seed: int = 0) -> torch.Tensor:
        return torch.randint(0, VOCAB, (n_tokens,), generator=torch.Generator().manual_seed(seed))

    def means(self) -> dict[str, torch.Tensor]:
        """Mean activation of every node site over the pretraining stream, for mean ablation."""
        return compute_site_means(self.model, self.stream(MEAN_TOKENS).numpy(),
                                  n_tokens=MEAN_TOKENS, batch=32, context=16)

    def scores(self, found: Iterable[Node]) -> tuple[float, float]:
        """Node precision and recall of a found circuit against the planted one."""
        found = set(found)
        hits = len(found & self.nodes)
        return (hits / len(found) if found else 0.0), hits / len(self.nodes)


def _embedding(cue_last: bool) -> dict[int, dict[int, float]]:
    fillers: dict[int, dict[int, float]] = {
        F0: {9: 1, SIGN: 1}, F1: {11: 1, SIGN: -1}, F2: {13: 1, 14: 1}, F3: {15: 1, 9: -1}}
    if cue_last:  # the fillers' SIGN would be read at the last position otherwise: keep it out
        fillers = {F0: {9: 1, 10: 1}, F1: {11: 1, 12: 1}, **{f: fillers[f] for f in (F2, F3)}}
    return {A: {SIGN: 1, FLAG: 1}, B: {SIGN: -1, FLAG: 1}, Q: {QUERY: 1, QPAD: 1},
            X: {10: 1, 11: 1}, Y: {12: 1, 13: 1}, **fillers}


_ATTENTION = {  # head 0: Q attends to the marker and copies its sign; head 1: uniform noise
    "blocks.0.attn.q_proj.weight": [(0, QUERY, 2.83)],  # q·k/√4 ≈ 4 on the marker
    "blocks.0.attn.k_proj.weight": [(0, FLAG, 2.83)],
    "blocks.0.attn.v_proj.weight": [(1, SIGN, 1.0), (4, 9, 1.0)],
}
_DISTRACTOR_MLP = {  # neurons 2 (noise copy), 3 (idle) and 4 (mean injection into ANS)
    "blocks.0.mlp.fc.weight": [(2, NOISE, 1.0), (3, BIAS, 1.0)],
    "blocks.0.mlp.proj.weight": [(NOISE2, 2, 1.0), (QPAD, 3, 0.3), (ANS, 4, 0.5)],
}
_UNEMBED = [(X, ANS, 3.0), (Y, ANS, -3.0), (X, NOISE, 0.5), (Y, NOISE, -0.5),
            (X, NOISE2, 0.5), (Y, NOISE2, -0.5)]


def _weights(shape: str) -> tuple[dict[str, list[tuple[int, int, float]]], dict[str, float]]:
    """Weight entries (row, col, value) and biases (name[index] → value) of a shape."""
    # The injecting neuron reads a channel that is zero wherever the loss is read: the markers'
    # FLAG when the cue comes first, the query's channel when the cue is the last token.
    injection = (4, QUERY if shape == "mlp_path" else FLAG, 4.0)
    fc = [*_DISTRACTOR_MLP["blocks.0.mlp.fc.weight"], injection]
    proj = list(_DISTRACTOR_MLP["blocks.0.mlp.proj.weight"])
    o_proj = [(NOISE, 4, 1.0)]
    biases: dict[str, float] = {}
    if shape == "mlp_path":
        fc.append((0, SIGN, 1.5))
        proj.append((ANS, 0, 1.0))
        biases = {"blocks.0.mlp.fc.bias[0]": 2.0, "blocks.0.mlp.proj.bias[5]": -2.0}
    elif shape == "attention_copy":
        o_proj.append((ANS, 1, 1.0))
    elif shape == "composition":
        o_proj.append((ATT, 1, 1.0))
        fc.append((0, ATT, 1.5))
        proj.append((ANS, 0, 1.0))
        biases = {"blocks.0.mlp.fc.bias[0]": 2.0, "blocks.0.mlp.proj.bias[5]": -2.0}
    else:
        raise ValueError(f"unknown planted shape {shape!r}; choose from {SHAPES}")
    attention = {} if shape == "mlp_path" else _ATTENTION
    return {**attention, "blocks.0.attn.o_proj.weight": o_proj, "blocks.0.mlp.fc.weight": fc,
            "blocks.0.mlp.proj.weight": proj, "lm_head.weight": _UNEMBED}, biases


_NODES = {
    "mlp_path": [("l0.mlp_in", SIGN), ("l0.mlp_neuron", 0), ("l0.mlp_out", ANS),
                 ("final_in", ANS)],
    "attention_copy": [("l0.attn_in", SIGN), ("l0.attn_in", FLAG), ("l0.attn_in", QUERY),
                       ("l0.q", 0), ("l0.k", 0), ("l0.v", 1), ("l0.attn_out", ANS),
                       ("final_in", ANS)],
    "composition": [("l0.attn_in", SIGN), ("l0.attn_in", FLAG), ("l0.attn_in", QUERY),
                    ("l0.q", 0), ("l0.k", 0), ("l0.v", 1), ("l0.attn_out", ATT),
                    ("l0.mlp_in", ATT), ("l0.mlp_neuron", 0), ("l0.mlp_out", ANS),
                    ("final_in", ANS)],
}
_ATTENTION_EDGES = {"attn_in->q": 1, "attn_in->k": 1, "attn_in->v": 1, "v->attn_out": 1}
_MLP_EDGES = {"mlp_in->mlp_neuron": 1, "mlp_neuron->mlp_out": 1}
_EDGES = {
    "mlp_path": _MLP_EDGES,
    "attention_copy": _ATTENTION_EDGES,
    "composition": {**_ATTENTION_EDGES, **_MLP_EDGES},
}


def planted(shape: str) -> Planted:
    cue_last = shape == "mlp_path"
    model = SparseGPT(GPTConfig(vocab_size=VOCAB, context=CONTEXT, n_layer=1, d_model=D_MODEL,
                                d_head=D_HEAD, d_mlp=D_MLP, afrac=1.0))
    weights, biases = _weights(shape)
    embedding = _embedding(cue_last)
    weights["wte.weight"] = [(token, channel, value) for token, channels in embedding.items()
                             for channel, value in [*channels.items(), (BIAS, BIAS_VALUE)]]
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for name, entries in weights.items():
            for row, col, value in entries:
                model.get_parameter(name)[row, col] = value
        for name, value in biases.items():
            param_name, _, index = name.partition("[")
            model.get_parameter(param_name)[int(index.rstrip("]"))] = value
        # Every embedding has the same norm; this gain makes the normed reads exactly ±1.
        gain = math.sqrt((BIAS_VALUE**2 + 2) / D_MODEL)
        block = cast(Block, model.blocks[0])  # a ModuleList indexes to a plain Module
        for norm in (block.ln_attn, block.ln_mlp):
            norm.weight.fill_(gain)
        model.ln_f.weight.fill_(1.0)
    edges = {type_: 0 for type_ in (*_ATTENTION_EDGES, *_MLP_EDGES)} | _EDGES[shape]
    return Planted(shape, model, frozenset(_NODES[shape]), edges, cue_last)
