"""Replaying the first blocks of a circuit judged before (the judge's block-prefix cache).

A block adds two writes to the residual stream, its ``attn_out`` and ``mlp_out`` sites, and
everything else it computes only feeds them. Block ``b``'s writes depend on the prompts and on
the gates of blocks ``0…b`` alone. Circuits a search judges in a row often share those gates —
greedy dropping tries removals from one circuit, many of them in its later blocks — so the
judge keeps, per chunk of pairs, the writes of the first blocks of recent circuits, keyed by the
gates that made them. A circuit whose gates in blocks ``0…b`` match an entry gets those
writes through the hook's ``fixed`` (the model then skips the rest of those blocks: two
additions each) and computes from block ``b + 1`` on. The replayed tensors are the ones those
blocks computed, so the answer logits are the same bits.

The last block never enters the cache: it runs at the answer positions only.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict

from torch import Tensor

from runtime.pruning.circuit import NodeLayout, site_name
from runtime.pruning.gates import GateHook
from runtime.pruning.pairs import PackedPairs

WRITES = ("attn_out", "mlp_out")  # a block's residual writes: all that leaves it
# Bytes of stored writes a judge keeps (counted per entry, so shared tensors count more than
# once: a bound), least recently used dropped first: about 90 circuits' first block at the
# quickstart's size. A batch whose first block's writes alone would not fit is not cached.
CACHE_BYTES = 64 * 2**20


class ReplayingHook:
    """``GateHook`` that hands the model stored writes of the first blocks (``replay``) and keeps
    the writes it computes, for the blocks whose prefix ``keys`` name."""

    def __init__(self, gates: GateHook, replay: dict[str, Tensor],
                 keys: list[tuple[int, int, bytes]]) -> None:
        self.gates, self.replay, self.keys = gates, replay, keys
        self.writes: dict[str, Tensor] = dict(replay)  # of every block it ran or replayed

    def fixed(self, site: str) -> Tensor | None:
        return self.replay[site] if site in self.replay else self.gates.fixed(site)

    def __call__(self, site: str, x: Tensor) -> Tensor:
        out = self.gates(site, x)
        if site.endswith(WRITES):
            self.writes[site] = out
        return out


class BlockPrefixCache:
    """Writes of the first blocks of recently judged circuits, per chunk of pairs."""

    def __init__(self, layout: NodeLayout) -> None:
        offsets = layout.offsets
        # block b's prefix: the flat node range of blocks 0…b, up to block b + 1's first site
        self.ends = [offsets[site_name(b + 1, "attn_in")] for b in range(layout.n_layer - 1)]
        self.width = layout.widths[layout.sites.index(site_name(0, "attn_out"))]
        self.entries: OrderedDict[tuple[int, int, bytes], dict[str, Tensor]] = OrderedDict()
        self.bytes = 0
        self.replayed_blocks = 0  # blocks forwards did not compute, over the judge's life

    def hook(self, chunk: PackedPairs, masks: Tensor, gates: GateHook) -> ReplayingHook:
        """The hook for one forward of ``masks`` (M, n) bool on ``chunk``, replaying the deepest
        stored prefix with the same gates."""
        if len(WRITES) * chunk.tokens.numel() * len(masks) * self.width * 4 > CACHE_BYTES:
            return ReplayingHook(gates, {}, [])
        flat = masks.cpu().numpy()
        digest = hashlib.blake2b(digest_size=16)  # of the gates of blocks 0…b, block by block
        keys = []
        for b, (start, end) in enumerate(itertools.pairwise([0, *self.ends])):
            digest.update(flat[:, start:end].tobytes())
            keys.append((id(chunk), b, digest.copy().digest()))
        depth = max((b for b, key in enumerate(keys) if key in self.entries), default=-1)
        if depth < 0:
            return ReplayingHook(gates, {}, keys)
        self.entries.move_to_end(keys[depth])
        self.replayed_blocks += depth + 1
        return ReplayingHook(gates, self.entries[keys[depth]], keys)

    def store(self, hook: ReplayingHook) -> None:
        """Keep the writes of each cacheable block of ``hook``'s forward under its prefix key.
        (A write the gates ablate whole never reaches the hook: the model takes the gates' fill
        there, and will again for a circuit with the same gates.)"""
        for b, key in enumerate(hook.keys):
            if key in self.entries:
                continue
            sites = [site_name(c, kind) for c in range(b + 1) for kind in WRITES]
            self.entries[key] = {site: hook.writes[site] for site in sites if site in hook.writes}
            self.bytes += entry_bytes(self.entries[key])
        while self.bytes > CACHE_BYTES:
            self.bytes -= entry_bytes(self.entries.popitem(last=False)[1])


def entry_bytes(writes: dict[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in writes.values())
