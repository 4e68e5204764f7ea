"""The ``shuffled_task`` control: a task's pairs with their answers assigned at random.

Each pair keeps its two prompts and its two answers, but which prompt gets which answer is a
coin flip per pair. The prompts, the answer tokens and their frequencies are exactly the task's
(the same token statistics), yet the cue no longer decides the answer, so no circuit should
reach a low task loss on held-out pairs. One that does says the pruning, not the model, found
the "circuit" (issue 12).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from runtime.tasks.base import TaskPair


def shuffle_answers(pairs: Sequence[TaskPair], seed: str) -> list[TaskPair]:
    """``pairs`` with each pair's answers swapped with probability 1/2, a pure function of
    ``seed`` (a string, hashed stably by ``random``, e.g. ``"with_as:heldout:0"``)."""
    rng = random.Random(f"shuffled_task:{seed}")
    return [
        TaskPair(pair.prompts, pair.answers[::-1]) if rng.random() < 0.5 else pair
        for pair in pairs
    ]
