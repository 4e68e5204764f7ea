"""The judge's block-prefix cache (runtime/pruning/replay.py): circuits that share the gates of
their first blocks replay those blocks' residual writes, and the answer logits are the same bits
as a forward that computes every block."""

from __future__ import annotations

import pytest
import torch

from runtime.model import GPTConfig, SparseGPT
from runtime.pruning import replay
from runtime.pruning.ablation import hooked
from runtime.pruning.circuit import NodeLayout
from runtime.pruning.gates import GateHook, ablation_values
from runtime.pruning.norms import frozen_scales
from runtime.pruning.pairs import PairBatch
from runtime.pruning.prune import Judge

VOCAB, CONTEXT = 50, 24


def prompt_pairs(n: int, seed: int) -> PairBatch:
    """Pairs of prompts of 3-12 tokens that share a prefix and differ after it."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(count: int) -> list[int]:
        return torch.randint(1, VOCAB, (count,), generator=generator).tolist()

    prompts = []
    for _ in range(n):
        prefix = tokens(int(torch.randint(1, 8, (1,), generator=generator)))
        prompts.append((prefix + tokens(3), prefix + tokens(4)))
    answers = [tuple(tokens(2)) for _ in range(n)]
    return PairBatch.from_ids(prompts, answers, CONTEXT)


@pytest.mark.parametrize("freeze_norms", [False, True])
@pytest.mark.parametrize("room", [100, 6, 1], ids=["roomy", "last-circuit-only", "none"])
def test_replayed_blocks_give_the_same_logits_as_computed_ones(
        freeze_norms: bool, room: int, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=VOCAB, context=CONTEXT, n_layer=3, d_model=32, d_head=16,
                    d_mlp=64)
    model = SparseGPT(cfg).eval().requires_grad_(False)
    layout = NodeLayout.from_model(model)
    means = {site: torch.randn(width) for site, width in zip(layout.sites, layout.widths,
                                                                strict=True)}
    fill = ablation_values(layout, means, "mean", torch.device("cpu"))
    pairs = prompt_pairs(12, seed=1)
    judge = Judge(model, layout, fill, pairs, None, freeze_norms)
    ((packed, scales),) = judge.pairs  # one chunk: its pairs in the judge's order
    write = packed.tokens.numel() * cfg.d_model * 4  # bytes of one block's write
    # 6 writes: one circuit's two prefixes (blocks 0, and 0-1); 1: not even block 0's two
    monkeypatch.setattr(replay, "CACHE_BYTES", room * write)
    offsets = layout.offsets
    block1, block2 = offsets["l1.attn_in"], offsets["l2.attn_in"]

    # A circuit, then removals in its last block, its middle block, its first; then the first
    # circuit again (every block replayed but the last) and one whose first block's attention
    # write is ablated whole (a write the hook never sees).
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(layout.n_nodes, generator=generator) < 0.5
    circuits = [base]
    for start in (block2, block1, 0):
        changed = base.clone()
        changed[start + 3 : start + 9] = False
        circuits.append(changed)
    circuits.append(base)
    silent_write = base.clone()
    silent_write[offsets["l0.attn_out"] : offsets["l0.attn_out"] + cfg.d_model] = False
    circuits += [silent_write, silent_write]
    masks = torch.stack(circuits)

    replayed = torch.cat([judge.two_logits(mask[None], judge.pairs) for mask in masks])
    cache = judge.prefixes
    assert cache.replayed_blocks >= {100: 2 + 1 + 2 + 2, 6: 2 + 1 + 2, 1: 0}[room]
    assert cache.bytes == sum(map(replay.entry_bytes, cache.entries.values())) <= room * write
    assert room > 1 or not cache.entries
    for mask, logits in zip(masks, replayed, strict=True):
        with hooked(model, GateHook(layout, mask.float(), fill)), frozen_scales(model, scales):
            computed = packed.logits(model).gather(1, packed.candidates)
        assert torch.equal(logits, computed)
