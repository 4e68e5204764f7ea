"""Packed prompt pairs (``PackedPairs``): the common prefix stored once, short pairs sharing
rows, the same answer logits as the two prompts run apart — under gates, mask sets and frozen
norms — and the same mask gradients."""

from __future__ import annotations

import random

import pytest
import torch

from runtime.model import GPTConfig, SparseGPT
from runtime.pruning.ablation import hooked
from runtime.pruning.circuit import NodeLayout
from runtime.pruning.gates import GateHook, heaviside_ste
from runtime.pruning.norms import frozen_scales, full_model_scales
from runtime.pruning.pairs import PairBatch
from runtime.pruning.prune import bucketed_set_losses, set_losses

VOCAB, CONTEXT = 50, 24


def pairs_with_shared_prefixes(seed: int) -> PairBatch:
    """Pairs whose prompts share 0 to all-but-one tokens, of unequal lengths, one prompt a
    prefix of the other, and a pair that is the longest of the batch (so others are padded)."""
    rng = random.Random(seed)
    prompts, answers = [], []
    for shared, rest_a, rest_b in ((0, 5, 5), (6, 1, 3), (9, 0, 2), (4, 3, 0), (12, 8, 6),
                                   (3, 2, 2), (1, 1, 1)):
        prefix = [rng.randrange(1, VOCAB) for _ in range(shared)]
        a = prefix + [rng.randrange(1, VOCAB) for _ in range(rest_a)]
        b = prefix + [rng.randrange(1, VOCAB) for _ in range(rest_b)]
        if rest_a and rest_b:
            b[shared] = a[shared] % (VOCAB - 1) + 1  # the first token after the prefix differs
        prompts.append((a or [1], b or [2]))
        answers.append((rng.randrange(VOCAB), rng.randrange(VOCAB)))
    return PairBatch.from_ids(prompts, answers, CONTEXT)


@pytest.fixture(params=[{}, {"pos_emb": "learned", "attention_sink": True}], ids=["nope", "pos"])
def model(request: pytest.FixtureRequest) -> SparseGPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=VOCAB, context=CONTEXT, n_layer=2, d_model=32, d_head=16,
                    d_mlp=64, **request.param)
    return SparseGPT(cfg).eval()


def test_packing_stores_each_common_prefix_once_and_fills_rows() -> None:
    batch = pairs_with_shared_prefixes(0)
    packed = batch.packed()
    lengths = (batch.last + 1).view(-1, 2)
    assert len(packed) == len(batch)
    assert int((packed.attend.diagonal(dim1=1, dim2=2)).all())
    # each prompt is read at its own last token, at its own last position
    rows = packed.order // packed.readout.shape[1]
    at = packed.readout.flatten()[packed.order]
    assert torch.equal(packed.tokens[rows, at], batch.tokens[torch.arange(14), batch.last])
    assert torch.equal(packed.pos_ids[rows, at], batch.last)
    # the pair (6, 1, 3): 6 shared tokens, 1 + 3 others: 10 tokens, not 7 + 9; the longest pair
    # (12, 8, 6: 26 tokens) sets the width, and shorter pairs share rows
    stored = (6 + 1 + 3) + (5 + 5) + (9 + 0 + 2) + (4 + 3 + 0) + 26 + (3 + 2 + 2) + (1 + 1 + 1)
    assert int(lengths.sum()) - (6 + 9 + 4 + 12 + 3 + 1) == stored
    assert packed.tokens.shape[1] == 26 and packed.tokens.shape[0] < len(batch)
    # a pair sees nothing of the pairs beside it: the logits tests below compare with each
    # pair run alone, on batches whose rows hold several pairs (as this one's do)


def test_packed_pairs_give_the_unpacked_answer_logits(model: SparseGPT) -> None:
    batch = pairs_with_shared_prefixes(1)
    with torch.no_grad():
        torch.testing.assert_close(batch.packed().logits(model), batch.logits(model),
                                   rtol=1e-5, atol=1e-5)


def test_packed_pairs_agree_under_mask_sets_and_frozen_norms(model: SparseGPT) -> None:
    batch = pairs_with_shared_prefixes(2)
    packed = batch.packed()
    layout = NodeLayout.from_model(model)
    generator = torch.Generator().manual_seed(3)
    gates = (torch.rand(3, layout.n_nodes, generator=generator) < 0.6).float()
    gates[2] = 0.0  # one set ablates everything: its sites are skipped, not computed
    fill = {site: torch.randn(width, generator=generator)
            for site, width in zip(layout.sites, layout.widths, strict=True)}
    with torch.no_grad():
        for freeze in (False, True):
            outputs = []
            for prompts in (batch, packed):
                scales = full_model_scales(model, prompts) if freeze else None
                with hooked(model, GateHook(layout, gates, fill)), frozen_scales(model, scales):
                    outputs.append(prompts.tiled(3).logits(model))
            torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("freeze", [False, True])
def test_mask_optimisation_losses_and_gradients_are_the_unpacked_ones(
        model: SparseGPT, freeze: bool) -> None:
    # What the mask optimisation differentiates: the per-set task losses of gated models, packed
    # by length bucket, against the same sets run on the unpacked pairs in one forward.
    batch = pairs_with_shared_prefixes(4)
    layout = NodeLayout.from_model(model)
    generator = torch.Generator().manual_seed(5)
    fill = {site: torch.randn(width, generator=generator)
            for site, width in zip(layout.sites, layout.widths, strict=True)}
    tau = torch.randn(3, layout.n_nodes, generator=generator)
    grads, losses = [], []
    for packed in (True, False):
        gates = heaviside_ste(tau.clone().requires_grad_(), torch.full((3, 1), 0.5))
        hook = GateHook(layout, gates, fill)
        if packed:
            loss = bucketed_set_losses(model, batch, hook, 3, freeze_norms=freeze)
        else:
            scales = full_model_scales(model, batch) if freeze else None
            with hooked(model, hook), frozen_scales(model, scales):
                loss = set_losses(model, batch.tiled(3), 3)
        (grad,) = torch.autograd.grad(loss.sum(), gates)
        losses.append(loss.detach())
        grads.append(grad)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert grads[0].abs().sum() > 0
