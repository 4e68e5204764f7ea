"""Task registry: binary next-token tasks made of minimal prompt pairs (method §3, docs/jobs.md).

A task is a seeded generator of :class:`TaskPair` s plus the fixed set of answer strings it can
produce (``candidates``). The tokenizer forces every candidate to be a single token, so the prune
job can read the task loss off one logit per answer at the last prompt position.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from runtime.tasks.sampling import Pools, Scaffold, pools_for
from spec.tasks import TASK_ANSWERS

# "test" draws from the held-out vocabulary with its own random stream: pairs that neither trained
# the masks nor chose the circuit, on which a circuit is validated.
Split = Literal["train", "heldout", "test"]
SPLITS: tuple[Split, ...] = ("train", "heldout", "test")


@dataclass(frozen=True)
class TaskPair:
    """Two prompts that differ minimally; ``answers[i]`` is the correct next token after
    ``prompts[i]`` and the other answer is its distractor."""

    prompts: tuple[str, str]
    answers: tuple[str, str]


def minimal_pair(
    scaffold: Scaffold, shared: str, tails: tuple[str, str], answers: tuple[str, str]
) -> TaskPair:
    """The usual shape of a pair: common code, then the two variants of the cue, in a scaffold."""
    return TaskPair(
        prompts=(scaffold.wrap(shared + tails[0]), scaffold.wrap(shared + tails[1])),
        answers=answers,
    )


# A generator draws one pair from the RNG, taking identifiers and words from the split's pools.
Generator = Callable[[random.Random, Pools], TaskPair]


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    candidates: tuple[str, ...]
    generate: Generator = field(repr=False, compare=False)

    def pairs(self, n: int, split: Split = "train", seed: int = 0) -> list[TaskPair]:
        """``n`` pairs, a pure function of ``(task, split, seed)``.

        The RNG is seeded from all three (a string seed is hashed with SHA-512 by ``random``, so
        it is stable across processes, unlike ``hash()``), and the identifier/word pools are
        partitioned by split, so train and heldout prompts do not collide in practice.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        pools = pools_for("heldout" if split == "test" else split)
        out = [self.generate(rng, pools) for _ in range(n)]
        for pair in out:
            self._check(pair)
        return out

    def _check(self, pair: TaskPair) -> None:
        # Cheap guard for hand-written generators: a wrong answer here would silently poison the
        # task loss, which only ever looks at the candidates' logits.
        a, b = pair.answers
        if a == b or a not in self.candidates or b not in self.candidates:
            raise ValueError(
                f"task {self.name!r}: answers {pair.answers!r} must be two different candidates "
                f"from {self.candidates!r}"
            )
        if pair.prompts[0] == pair.prompts[1]:
            raise ValueError(f"task {self.name!r}: the two prompts are identical")


TASKS: dict[str, Task] = {}


def register(
    *,
    candidates: tuple[str, ...] | None = None,
    name: str | None = None,
    description: str | None = None,
) -> Callable[[Generator], Generator]:
    """Decorator: register ``fn(rng, pools) -> TaskPair`` as a task.

    ``name`` defaults to the function name, ``description`` to the docstring's first paragraph,
    ``candidates`` to the task's answers in ``spec/tasks.py`` (only a task registered for one
    process, as in tests, passes its own).
    """

    def decorate(fn: Generator) -> Generator:
        task_name = name or fn.__name__
        answers = candidates if candidates is not None else TASK_ANSWERS.get(task_name)
        if answers is None:
            raise ValueError(f"task {task_name!r}: add its answers to TASK_ANSWERS in "
                             "spec/tasks.py (recipes are validated against that list)")
        paragraph = (fn.__doc__ or "").strip().split("\n\n")[0]
        text = description or " ".join(paragraph.split())
        if task_name in TASKS:
            raise ValueError(f"task {task_name!r} is already registered")
        if len(set(answers)) < 2:
            raise ValueError(f"task {task_name!r} needs at least two distinct candidates")
        TASKS[task_name] = Task(task_name, text, tuple(answers), fn)
        return fn

    return decorate


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, TASKS, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown task {name!r}{hint} (known: {', '.join(sorted(TASKS))})") from None


def describe_tasks(seed: int = 0) -> list[dict[str, Any]]:
    """JSON-ready rows for ``xcompile tasks``: name, description, candidates, one example pair."""
    rows = []
    for task in TASKS.values():
        (example,) = task.pairs(1, "train", seed)
        rows.append({
            "name": task.name,
            "description": task.description,
            "candidates": list(task.candidates),
            "example": {"prompts": list(example.prompts), "answers": list(example.answers)},
        })
    return rows
