"""Definition tasks: lambdas vs defs, and how many arguments a call still owes its definition."""

from __future__ import annotations

import random

from runtime.tasks.base import TaskPair, minimal_pair, register
from runtime.tasks.sampling import CLASS_NAMES, FUNCTION_NAMES, Pools, Scaffold, scaffold


@register()
def lambda_func(rng: random.Random, pools: Pools) -> TaskPair:
    """After the parameters, a `lambda` continues with `:` and a `def` with `):`."""
    name = rng.choice(FUNCTION_NAMES)
    params = ", ".join(pools.distinct_names(rng, rng.randint(1, 3)))
    sc = scaffold(rng, pools)
    shared = pools.filler(rng, 2, 3)
    tails = (f"{name} = lambda {params}", f"def {name}({params}")
    return minimal_pair(sc, shared, tails, (":", "):"))


@register()
def final_kwarg(rng: random.Random, pools: Pools) -> TaskPair:
    """Close a call with `)` after its final keyword argument, or continue with `,` if the
    signature defined earlier has one more.

    Our reading of the paper's task name: the cue is the definition's parameter list.
    """
    function = rng.choice(FUNCTION_NAMES)
    positional, first, last, arg = pools.distinct_names(rng, 4)
    avoid = {positional, first, last, arg}
    sc = scaffold(rng, pools, avoid=avoid)
    default = rng.choice(("None", "0", "True", "False", "1"))
    # PEP 8 spacing: two blank lines after a top-level def, one after a nested one.
    gap = "\n\n" if sc.indent else "\n\n\n"
    body = f"    return {positional}{gap}"
    # Only the definition differs: with `last` the call below still owes an argument.
    defs = (
        f"def {function}({positional}, {first}={default}):\n{body}",
        f"def {function}({positional}, {first}={default}, {last}={default}):\n{body}",
    )
    call = pools.filler(rng, 0, 2, avoid=avoid) + f"{function}({arg}, {first}={rng.randint(0, 9)}"
    return minimal_pair(sc, "", (defs[0] + call, defs[1] + call), (")", ","))


@register()
def class_init(rng: random.Random, pools: Pools) -> TaskPair:
    """Close `Cls(...)` with `)` once every `__init__` parameter after `self` is passed, or
    continue with `,` while one is still owed.

    Our reading of the paper's task name; the catch is that `self` is not passed explicitly.
    """
    cls = rng.choice(CLASS_NAMES)
    n = rng.randint(1, 3)
    *params, extra = pools.distinct_names(rng, n + 1)
    target = pools.name(rng, avoid=[*params, extra])
    body = "".join(f"        self.{p} = {p}\n" for p in params)
    # Only the signature differs: with `extra` the call below still owes an argument.
    defs = tuple(
        f"class {cls}:\n    def __init__(self, {', '.join(names)}):\n{body}\n\n"
        for names in (params, [*params, extra])
    )
    args = ", ".join(str(rng.randint(0, 99)) for _ in params)
    call = pools.filler(rng, 0, 2, avoid=[*params, target]) + f"{target} = {cls}({args}"
    return minimal_pair(Scaffold("", ""), "", (defs[0] + call, defs[1] + call), (")", ","))
