"""Task prompt pairs as token ids (method §3): what every pruning computation reads.

Rows ``2i`` and ``2i + 1`` of a ``PairBatch`` are the two prompts of pair ``i``; prompts are
right-padded (attention is causal, so padding after a prompt's last real token cannot reach it).
Turning ``TaskPair`` text into ids is ``encode_pairs``, kept apart so tests can plant circuits
with hand-made vocabularies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from runtime.tasks.base import Split, Task
from runtime.tasks.shuffle import shuffle_answers


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

    def chunks(self, size: int, by_length: bool = False) -> list[PairBatch]:
        """Consecutive sub-batches of ``size`` pairs; ``by_length``: of pairs sorted by their
        longer prompt, so each chunk is padded only to its own longest (a forward over padding
        computes nothing a task loss reads)."""
        n = len(self)
        order = torch.arange(n, device=self.last.device)
        if by_length:
            order = torch.sort(self.last.view(n, 2).max(1).values, stable=True).indices
        return [self.pairs(order[i : i + size]) for i in range(0, n, size)]

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(self.tokens.to(device), self.last.to(device), self.candidates.to(device))

    def tiled(self, copies: int) -> PairBatch:
        """The batch ``copies`` times over, one copy per mask set of a batched forward."""
        if copies == 1:
            return self
        return PairBatch(self.tokens.repeat(copies, 1), self.last.repeat(copies),
                         self.candidates.repeat(copies, 1))

    def packed(self) -> PackedPairs:
        """The pairs with each pair's common prefix stored once (``PackedPairs``)."""
        return PackedPairs.pack(self)

    def logits(self, model: Any) -> Tensor:
        """(2N, V) ``model``'s next-token logits at each prompt's last token."""
        return model(self.tokens, self.last)

    def real_positions(self) -> Tensor:
        """(2N, T) bool: the positions holding prompt tokens, padding excluded."""
        return torch.arange(self.tokens.shape[1], device=self.tokens.device) <= self.last[:, None]

    def without(self, other: PairBatch) -> PairBatch:
        """The pairs of this batch whose prompts do not occur in ``other`` (a third split drawn
        from the same vocabulary must not share pairs with the split that chose the circuit)."""
        def key(batch: PairBatch, i: int) -> tuple[tuple[int, ...], ...]:
            return tuple(tuple(batch.tokens[r, : int(batch.last[r]) + 1].tolist())
                         for r in (2 * i, 2 * i + 1))
        seen = {key(other, i) for i in range(len(other))}
        keep = [i for i in range(len(self)) if key(self, i) not in seen]
        if not keep:
            raise ValueError("every pair also occurs in the other split")
        return self.pairs(torch.tensor(keep))


@dataclass(frozen=True)
class PackedPairs:
    """Prompt pairs packed into rows. A pair is its two prompts' common prefix once, then the
    rest of the first prompt, then the rest of the second, which attends to the prefix and to
    itself but not to the first's rest; a row holds as many pairs as fit in the longest one
    (first-fit decreasing), each attending only within itself. Attention is the only place
    where positions meet, so every node sees at every position what it sees in the unpacked
    pair, and the answer logits are the same (up to float reduction order) from 14–48 % fewer
    tokens by task, as their two prompts differ late, and less padding: short pairs fill the
    rows of long ones. The logits come out in ``PairBatch`` order (2i, 2i + 1)."""

    tokens: Tensor  # (B, L) long, right-padded
    pos_ids: Tensor  # (B, L) each token's position in its own prompt
    attend: Tensor  # (B, L, L) bool: which tokens each token sees
    readout: Tensor  # (B, R) positions read in each row (a row of fewer pairs repeats its last)
    order: Tensor  # (2N,) where prompt j's logits sit among the B·R read out
    candidates: Tensor  # (2N, 2), as PairBatch's

    @classmethod
    def pack(cls, batch: PairBatch) -> PackedPairs:
        lengths = (batch.last + 1).tolist()
        pairs: list[tuple[list[int], list[int], list[int], tuple[int, int]]] = []
        for i in range(len(batch)):
            a, b = (batch.tokens[r, : lengths[r]].tolist() for r in (2 * i, 2 * i + 1))
            shared = 0
            while shared < min(len(a), len(b)) and a[shared] == b[shared]:
                shared += 1
            joined = a + b[shared:]
            # 0: the shared prefix, 1: the first prompt's rest, 2: the second's
            parts = [0] * shared + [1] * (len(a) - shared) + [2] * (len(b) - shared)
            last_b = len(b) - 1 if len(b) == shared else len(joined) - 1
            pairs.append((joined, list(range(len(a))) + list(range(shared, len(b))), parts,
                          (len(a) - 1, last_b)))
        width = max(len(joined) for joined, _, _, _ in pairs)
        rows: list[list[int]] = []  # the pairs in each row, first fit by decreasing length
        filled: list[int] = []
        for i in sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0])):
            size = len(pairs[i][0])
            fits = next((r for r, used in enumerate(filled) if used + size <= width), len(rows))
            if fits == len(rows):
                rows.append([])
                filled.append(0)
            rows[fits].append(i)
            filled[fits] += size
        n_rows, reads = len(rows), 2 * max(len(row) for row in rows)
        tokens = torch.zeros((n_rows, width), dtype=torch.long)
        pos_ids = torch.zeros((n_rows, width), dtype=torch.long)
        owner = torch.full((n_rows, width), -1, dtype=torch.long)  # the pair; -1: padding
        part = torch.zeros((n_rows, width), dtype=torch.long)
        readout = torch.zeros((n_rows, reads), dtype=torch.long)
        order = torch.zeros(2 * len(pairs), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for slot, i in enumerate(row):
                ids, positions, parts, (last_a, last_b) = pairs[i]
                span = slice(start, start + len(ids))
                tokens[r, span], pos_ids[r, span] = torch.tensor(ids), torch.tensor(positions)
                owner[r, span], part[r, span] = i, torch.tensor(parts)
                readout[r, 2 * slot : 2 * slot + 2] = torch.tensor([start + last_a,
                                                                    start + last_b])
                order[2 * i : 2 * i + 2] = torch.tensor([r * reads + 2 * slot,
                                                         r * reads + 2 * slot + 1])
                start += len(ids)
            readout[r, 2 * len(row):] = readout[r, 2 * len(row) - 1]
        same_pair = owner[:, :, None] == owner[:, None, :]
        prefix_or_own = (part[:, None, :] == 0) | (part[:, :, None] == part[:, None, :])
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        diagonal = torch.eye(width, dtype=torch.bool)  # padding sees itself: no empty softmax row
        attend = (causal & same_pair & prefix_or_own & (owner[:, None, :] >= 0)) | diagonal
        device = batch.tokens.device
        return cls(tokens.to(device), pos_ids.to(device), attend.to(device), readout.to(device),
                   order.to(device), batch.candidates)

    def __len__(self) -> int:
        return self.candidates.shape[0] // 2

    def tiled(self, copies: int) -> PackedPairs:
        """The rows ``copies`` times over, one copy per mask set of a batched forward."""
        if copies == 1:
            return self
        per_copy = self.readout.numel()
        order = torch.cat([self.order + c * per_copy for c in range(copies)])
        return PackedPairs(self.tokens.repeat(copies, 1), self.pos_ids.repeat(copies, 1),
                           self.attend.repeat(copies, 1, 1), self.readout.repeat(copies, 1),
                           order, self.candidates.repeat(copies, 1))

    def logits(self, model: Any) -> Tensor:
        """(2N, V) ``model``'s next-token logits at each prompt's last token, PairBatch order."""
        return model(self.tokens, self.readout, pos_ids=self.pos_ids,
                     attend=self.attend)[self.order]


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


def draw_pairs(task: Task, tokenizer: Encoder, context: int, n: int, split: Split, seed: int,
               shuffled: bool = False) -> PairBatch:
    """``n`` of ``task``'s ``split`` pairs drawn from ``seed`` and encoded: what a prune job of
    that seed reads, and what ``xcompile tasks --score`` scores. ``shuffled``: the job's
    ``shuffled_task`` control, the same prompts with the answers assigned at random per pair."""
    drawn = task.pairs(n, split, seed)
    if shuffled:
        drawn = shuffle_answers(drawn, f"{task.name}:{split}:{seed}")
    return encode_pairs(drawn, tokenizer, task.candidates, context)
