"""Variable tasks: remembering what a variable holds, swapping two, assigning vs comparing."""

from __future__ import annotations

import random
import textwrap

from runtime.tasks.base import TaskPair, minimal_pair, register
from runtime.tasks.sampling import Pools, scaffold

# Name pairs conventionally swapped. Kept to names that are rarely the start of a longer word:
# the tokenizer cuts every candidate out of all text, so ` a` would split every ` and`, ` i`
# every ` if` (single letters, ` lo`/` hi`, ` prev`/` curr` all do such damage).
SWAP_PAIRS = (("src", "dst"), ("first", "last"), ("left", "right"), ("lhs", "rhs"))


def _set_or_string(rng: random.Random, pools: Pools, var: str) -> TaskPair:
    """``var`` is initialised as a set or a string, then extended inside a loop after filler."""
    items, item = pools.distinct_names(rng, 2, avoid={var})
    avoid = {var, items, item}
    sc = scaffold(rng, pools, avoid=avoid)
    empty = rng.choice(('""', "''"))
    before = pools.filler(rng, 0, 2, avoid=avoid)
    loop = f"for {item} in {items}:\n"
    # The filler between the initialisation and the use is what makes this a memory task.
    inner = textwrap.indent(pools.filler(rng, 0, 3, avoid=avoid), "    ")
    tail = f"{loop}{inner}    {var}"
    tails = (f"{var} = set()\n{tail}", f"{var} = {empty}\n{tail}")
    return minimal_pair(sc, before, tails, (".add", " +="))


@register()
def set_or_string(rng: random.Random, pools: Pools) -> TaskPair:
    """Extend a variable with `.add` or ` +=` depending on whether it was set to `set()` or `""`."""
    return _set_or_string(rng, pools, pools.name(rng))


@register()
def set_or_string_fixedvarname(rng: random.Random, pools: Pools) -> TaskPair:
    """As set_or_string, with the variable always named `current`."""
    return _set_or_string(rng, pools, "current")


@register()
def var_swap(rng: random.Random, pools: Pools) -> TaskPair:
    """Finish a swap `a, b = b, a`: the last name is whichever of the two came first."""
    a, b = rng.choice(SWAP_PAIRS)
    sc = scaffold(rng, pools, avoid={a, b})
    shared = f"{a} = {rng.randint(0, 99)}\n{b} = {rng.randint(0, 99)}\n"
    shared += pools.filler(rng, 1, 2, avoid={a, b})
    return minimal_pair(sc, shared, (f"{a}, {b} = {b},", f"{b}, {a} = {a},"), (f" {a}", f" {b}"))


@register()
def if_equals(rng: random.Random, pools: Pools) -> TaskPair:
    """After a name, compare with ` ==` inside an `if` or assign with ` =` at statement start."""
    var = pools.name(rng)
    sc = scaffold(rng, pools, avoid={var})
    shared = pools.filler(rng, 1, 3, avoid={var})
    return minimal_pair(sc, shared, (f"if {var}", var), (" ==", " ="))
