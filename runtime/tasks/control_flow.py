"""Control-flow tasks: which loop or branch keyword is open, and what its header needs next."""

from __future__ import annotations

import random

from runtime.tasks.base import TaskPair, minimal_pair, register
from runtime.tasks.sampling import Pools, scaffold


def _condition(rng: random.Random, pools: Pools, avoid: set[str]) -> str:
    """A boolean expression over one name, as written in real `if`s."""
    name = pools.name(rng, avoid)
    template = rng.choice(("{v}", "not {v}", "{v} is None", "{v} > {n}", "{v} in {w}"))
    return template.format(v=name, n=rng.randint(0, 9), w=pools.name(rng, avoid | {name}))


@register()
def for_while(rng: random.Random, pools: Pools) -> TaskPair:
    """After `for i` continue with ` in`; after `while i` with ` <`."""
    var = rng.choice(("i", "j", "k", "n", "idx", "pos"))
    sc = scaffold(rng, pools, avoid={var})
    shared = f"{var} = 0\n" + pools.filler(rng, 1, 2, avoid={var})
    return minimal_pair(sc, shared, (f"for {var}", f"while {var}"), (" in", " <"))


@register()
def else_elif(rng: random.Random, pools: Pools) -> TaskPair:
    """In an if/elif chain on `x == ...`, `else` takes `:` while `elif x` takes ` ==`."""
    var, target = pools.distinct_names(rng, 2)
    sc = scaffold(rng, pools, avoid={var, target})
    values = rng.sample(range(10), rng.randint(1, 3))
    shared = ""
    for i, value in enumerate(values):
        keyword = "if" if i == 0 else "elif"
        shared += f"{keyword} {var} == {value}:\n    {target} = {pools.string(rng)}\n"
    return minimal_pair(sc, shared, ("else", f"elif {var}"), (":", " =="))


@register()
def if_ternary(rng: random.Random, pools: Pools) -> TaskPair:
    """After `x = y if cond` continue the ternary with ` else`; after `if cond` open a block."""
    var, value = pools.distinct_names(rng, 2)
    avoid = {var, value}
    sc = scaffold(rng, pools, avoid=avoid)
    shared = pools.filler(rng, 0, 2, avoid=avoid) + f"{var} = {value}"
    # The cue is a single separator: a space keeps the `if` in the expression, a newline makes
    # it a statement.
    cond = _condition(rng, pools, avoid)
    return minimal_pair(sc, shared, (f" if {cond}", f"\nif {cond}"), (" else", ":"))


@register()
def enumerate_range(rng: random.Random, pools: Pools) -> TaskPair:
    """Loop over ` enumerate` when unpacking `i, item`, over ` range` for a bare index `i`."""
    index = rng.choice(("i", "j", "idx", "n", "pos"))
    item = pools.name(rng, {index})
    sc = scaffold(rng, pools, avoid={index, item})
    shared = pools.filler(rng, 1, 3, avoid={index, item})
    tails = (f"for {index}, {item} in", f"for {index} in")
    return minimal_pair(sc, shared, tails, (" enumerate", " range"))


@register()
def while_return_true(rng: random.Random, pools: Pools) -> TaskPair:
    """After `while True` open the loop with `:`; after `return True` end the line."""
    sc = scaffold(rng, pools, module_level=False)  # `return` needs a function
    shared = pools.filler(rng, 1, 3)
    return minimal_pair(sc, shared, ("while True", "return True"), (":", "\n"))
