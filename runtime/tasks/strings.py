"""String tasks: which quote closes a string, and whether a name sits inside an f-string brace."""

from __future__ import annotations

import random

from runtime.tasks.base import TaskPair, minimal_pair, register
from runtime.tasks.sampling import Pools, scaffold

# Calls that commonly take one string literal as their first argument.
STRING_CALLS = (
    "print", "log.info", "logger.warning", "self.log", "sys.stdout.write", "parser.error",
    "warnings.warn", "fail", "os.path.join", "re.compile",
)


@register()
def single_double_quote(rng: random.Random, pools: Pools) -> TaskPair:
    """Close a string argument with `")` or `')`, matching the quote that opened it."""
    sc = scaffold(rng, pools)
    shared = pools.filler(rng)
    call = rng.choice(STRING_CALLS)
    if rng.random() < 0.4:
        call = f"{pools.name(rng)} = {call}"
    body = pools.text(rng, 1, 5)
    tails = (f'{call}("{body}', f"{call}('{body}")
    return minimal_pair(sc, shared, tails, ('")', "')"))


@register()
def fstring_brace(rng: random.Random, pools: Pools) -> TaskPair:
    """After a name, close an f-string placeholder with `}` or the call with `)`."""
    value = pools.name(rng)
    sc = scaffold(rng, pools, avoid={value})
    shared = pools.filler(rng, avoid={value})
    call = rng.choice(("print", "log.info", "logger.debug"))
    label = pools.text(rng, 1, 3)
    # Same words, same variable: only whether the name is inside the f-string's braces differs.
    tails = (f'{call}(f"{label}: {{{value}', f'{call}("{label}:", {value}')
    return minimal_pair(sc, shared, tails, ("}", ")"))
