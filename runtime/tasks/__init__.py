"""Binary next-token tasks on Python code (method §3; Gao et al. 2025, Table 1).

Each task yields minimal pairs: two short prompts that differ only in the cue, whose correct
next tokens are the task's two answers (see ``docs/jobs.md``, "Tasks").

Adding a task takes one file and one line: its answers in ``spec/tasks.py`` (``"my_task": (" True",
" False")``, which is what recipes are validated against and the tokenizer keeps whole) and
``runtime/tasks/my_task.py``::

    import random

    from runtime.tasks.base import TaskPair, minimal_pair, register
    from runtime.tasks.sampling import Pools, scaffold

    @register()
    def my_task(rng: random.Random, pools: Pools) -> TaskPair:
        \"\"\"One line: what the model must predict, and from which cue.\"\"\"
        sc = scaffold(rng, pools)               # module level, a function or a method
        shared = pools.filler(rng)               # irrelevant statements, split-specific names
        return minimal_pair(sc, shared, ("done =", "done = not"), (" True", " False"))

Every module in this package whose name does not start with ``_`` is imported below, which runs
its ``@register`` decorators. The task name is the function name and its description the
docstring's first paragraph (both can be passed to ``register``). Rules a generator must keep:

- draw all randomness from ``rng`` and all identifiers/words from ``pools``, with at least one
  pool name or filler line in every prompt (so seeds reproduce and heldout prompts use names the
  train split never sees);
- end each prompt exactly where its answer token begins (an answer with a leading space means
  the prompt must not end in a space);
- list every possible answer in ``candidates``: the tokenizer forces each to be one token by
  cutting it out of *all* text (for every recipe), so prefer answers that are not the start of
  common longer words (`` a`` would split every `` and``, `` i`` every `` if``).
"""

from __future__ import annotations

import importlib
import pkgutil

from runtime.tasks.base import (
    SPLITS,
    TASKS,
    Split,
    Task,
    TaskPair,
    describe_tasks,
    get_task,
    minimal_pair,
    register,
)
from spec.tasks import TASK_ANSWERS

__all__ = [
    "SPLITS",
    "TASKS",
    "Split",
    "Task",
    "TaskPair",
    "describe_tasks",
    "get_task",
    "minimal_pair",
    "register",
]


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    missing = sorted(set(TASK_ANSWERS) - set(TASKS))
    if missing:  # a recipe could name them, and only the prune job would find out
        raise ImportError(f"spec/tasks.py lists tasks without a generator: {', '.join(missing)}")


_discover()
