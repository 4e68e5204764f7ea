"""Bracket tasks: how deep a literal is nested, and which bracket kind opened it."""

from __future__ import annotations

import random

from runtime.tasks.base import TaskPair, minimal_pair, register
from runtime.tasks.sampling import Pools, literal_items, scaffold


def _literal_pair(
    rng: random.Random, pools: Pools, openers: tuple[str, str], answers: tuple[str, str]
) -> TaskPair:
    """``name = <opener><items>`` for both openers: the pair differs only in the opener."""
    name = pools.name(rng)
    sc = scaffold(rng, pools, avoid={name})
    shared = pools.filler(rng, avoid={name}) + f"{name} = "
    items = literal_items(rng, pools)
    return minimal_pair(sc, shared, (openers[0] + items, openers[1] + items), answers)


@register()
def bracket_counting(rng: random.Random, pools: Pools) -> TaskPair:
    """Close a list literal with `]]` or `]` depending on its nesting depth."""
    return _literal_pair(rng, pools, ("[[", "["), ("]]", "]"))


@register()
def bracket_brace(rng: random.Random, pools: Pools) -> TaskPair:
    """Close a literal with `}` (a set) or `]` (a list) depending on how it was opened."""
    return _literal_pair(rng, pools, ("{", "["), ("}", "]"))
