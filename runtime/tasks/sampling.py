"""Shared sampling for task generators: identifiers, string contents, filler code, scaffolds.

Identifiers and words are partitioned between the splits (every fourth entry is heldout), so a
heldout prompt carries names the train prompts never use. Filler statements are deliberately
irrelevant to the answer: the model has to find the one cue that decides it.
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache

NAMES = (
    "count", "total", "items", "values", "result", "data", "path", "name", "value", "index",
    "key", "size", "line", "lines", "text", "words", "node", "nodes", "parent", "child",
    "config", "options", "args", "params", "buffer", "chunk", "record", "records", "row", "rows",
    "column", "width", "height", "offset", "limit", "start", "stop", "score", "scores", "label",
    "labels", "token", "tokens", "user", "users", "message", "payload", "response", "request",
    "cache", "queue", "stack", "seen", "visited", "graph", "matrix", "grid", "max_val", "min_val",
    "num", "n", "m", "k", "idx", "pos", "acc", "out", "res", "tmp", "entry", "entries", "field",
    "fields", "prefix", "suffix", "pattern", "target", "source", "batch", "weights", "delta",
    "counter", "flag", "done", "found", "ready", "mask", "state", "step", "level", "depth",
)

WORDS = (
    "hello", "world", "error", "done", "loading", "file", "not", "found", "missing", "ready",
    "starting", "server", "client", "invalid", "input", "saved", "total", "warning", "debug",
    "success", "failed", "retry", "config", "user", "name", "path", "data", "result", "the",
    "is", "of", "to", "and", "ok", "skip", "open", "close", "read", "write", "stop", "update",
    "delete", "create", "new", "empty", "list", "item", "key", "check", "run", "test", "sample",
    "output", "value", "connection", "timeout", "request", "response", "token", "cache",
)

FUNCTION_NAMES = (
    "process", "load", "main", "build", "update", "parse", "run", "handle", "compute",
    "collect", "render", "check", "validate", "transform", "merge", "split_items", "flush",
)

CLASS_NAMES = ("Parser", "Loader", "Handler", "Worker", "Model", "Cache", "Client", "Builder")

IMPORTS = ("import os", "import sys", "import json", "import re", "from pathlib import Path")

# Simple statements that never open a block, so they can go anywhere at any indent.
# {a}, {b}: identifiers; {n}: a small int; {s}: a string literal.
FILLER_TEMPLATES = (
    "{a} = {n}",
    "{a} = {b} + {n}",
    "{a} = len({b})",
    "{a} = []",
    "{a} = {{}}",
    "print({a})",
    "{a} += {n}",
    "{a} = {b}[{n}]",
    "{a} = {s}",
    "{a} = {b}.get({s})",
    "{a} = max({a}, {b})",
    "{a}.append({b})",
    "{a} = {b} * {n}",
    "{a} = None",
)


def _split_part(items: tuple[str, ...], split: str) -> tuple[str, ...]:
    return tuple(x for i, x in enumerate(items) if (i % 4 == 3) == (split == "heldout"))


@dataclass(frozen=True)
class Pools:
    """The identifiers and words one split may use, plus samplers over them."""

    names: tuple[str, ...]
    words: tuple[str, ...]

    def name(self, rng: random.Random, avoid: Collection[str] = ()) -> str:
        return rng.choice([x for x in self.names if x not in avoid])

    def distinct_names(self, rng: random.Random, k: int, avoid: Collection[str] = ()) -> list[str]:
        return rng.sample([x for x in self.names if x not in avoid], k)

    def text(self, rng: random.Random, lo: int = 1, hi: int = 4) -> str:
        """A few words for a string body: no quotes or braces, so it never closes anything."""
        return " ".join(rng.choice(self.words) for _ in range(rng.randint(lo, hi)))

    def string(self, rng: random.Random) -> str:
        quote = rng.choice(("'", '"'))
        return f"{quote}{self.text(rng, 1, 2)}{quote}"

    def filler(
        self, rng: random.Random, lo: int = 1, hi: int = 3, avoid: Collection[str] = ()
    ) -> str:
        """``lo..hi`` unrelated simple statements, each ending in a newline, not indented."""
        lines = []
        for _ in range(rng.randint(lo, hi)):
            a, b = self.distinct_names(rng, 2, avoid)
            template = rng.choice(FILLER_TEMPLATES)
            lines.append(template.format(a=a, b=b, n=rng.randint(0, 99), s=self.string(rng)))
        return "".join(line + "\n" for line in lines)


@cache
def pools_for(split: str) -> Pools:
    return Pools(_split_part(NAMES, split), _split_part(WORDS, split))


@dataclass(frozen=True)
class Scaffold:
    """Where a snippet lives: module level, inside a function or inside a method.

    Sampled once per pair and applied to both prompts, so the pair still differs only in the
    task's cue.
    """

    header: str
    indent: str

    def wrap(self, code: str) -> str:
        return self.header + textwrap.indent(code, self.indent)


def scaffold(
    rng: random.Random, pools: Pools, avoid: Collection[str] = (), module_level: bool = True
) -> Scaffold:
    """A random scaffold; ``module_level=False`` forces a function body (e.g. for ``return``)."""
    imports = f"{rng.choice(IMPORTS)}\n\n\n" if rng.random() < 0.3 else ""
    arg = pools.name(rng, avoid)
    kinds = ["function", "method"] + (["module"] if module_level else [])
    kind = rng.choice(kinds)
    if kind == "module":
        return Scaffold(imports, "")
    function = rng.choice(FUNCTION_NAMES)
    if kind == "function":
        return Scaffold(f"{imports}def {function}({arg}):\n", "    ")
    cls = rng.choice(CLASS_NAMES)
    return Scaffold(f"{imports}class {cls}:\n    def {function}(self, {arg}):\n", "        ")


def small_ints(rng: random.Random, lo: int = 1, hi: int = 5) -> list[str]:
    return [str(rng.randint(0, 99)) for _ in range(rng.randint(lo, hi))]


def literal_items(rng: random.Random, pools: Pools, lo: int = 1, hi: int = 5) -> str:
    """The inside of a list/set literal: ints or strings (never brackets), comma separated."""
    if rng.random() < 0.5:
        return ", ".join(small_ints(rng, lo, hi))
    return ", ".join(pools.string(rng) for _ in range(rng.randint(lo, hi)))
