"""`with` tasks: whether an `as` clause is still missing, and what an opened file is used for."""

from __future__ import annotations

import random
import textwrap

from runtime.tasks.base import TaskPair, minimal_pair, register
from runtime.tasks.sampling import Pools, scaffold

# Context managers whose value is almost always bound with `as`.
BOUND_MANAGERS = (
    "open({p})", "open({p}, {q}rb{q})", "gzip.open({p})", "tarfile.open({p})",
    "zipfile.ZipFile({p})", "tempfile.TemporaryDirectory()", "requests.get({p}, stream=True)",
)


@register()
def with_as(rng: random.Random, pools: Pools) -> TaskPair:
    """End a `with` header with `:` once it has an `as` clause, else continue with ` as`."""
    path, handle = pools.distinct_names(rng, 2)
    sc = scaffold(rng, pools, avoid={path, handle})
    shared = pools.filler(rng, 1, 2, avoid={path, handle})
    manager = rng.choice(BOUND_MANAGERS).format(p=path, q=rng.choice(("'", '"')))
    tails = (f"with {manager} as {handle}", f"with {manager}")
    return minimal_pair(sc, shared, tails, (":", " as"))


@register()
def with_open(rng: random.Random, pools: Pools) -> TaskPair:
    """Use a file opened by `with open(...)` with `.write` if its mode is "w", `.read` if "r"."""
    path = pools.name(rng)
    handle = rng.choice(("f", "fh", "fp", "handle", "out", "stream"))
    sc = scaffold(rng, pools, avoid={path, handle})
    quote = rng.choice(("'", '"'))
    before = pools.filler(rng, 0, 2, avoid={path, handle})
    inner = textwrap.indent(pools.filler(rng, 0, 2, avoid={path, handle}), "    ")
    write, read = (
        f"with open({path}, {quote}{mode}{quote}) as {handle}:\n{inner}    {handle}"
        for mode in ("w", "r")
    )
    return minimal_pair(sc, before, (write, read), (".write", ".read"))
