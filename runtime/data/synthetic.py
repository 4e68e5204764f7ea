"""Seeded small, simple, repetitive Python programs: the ``synthetic`` corpus.

The paper pretrains on Python code whose patterns its task suite (method §3) then probes; its data
is not released. These programs make sure every probed pattern occurs often in pretraining: both
quote kinds closing calls, nested list literals (``]`` vs ``]]``), variables built as ``set()``
with ``.add`` or as strings with ``+=``, keyword arguments, ``__init__``, ``with open(...) as f``,
``for``/``while``, ``if``/``elif``/``else``, f-strings, ternaries, swaps, lambdas, ``==``,
``enumerate``/``range``, ``while True`` and ``return True``. Only ``random.Random`` with an int seed
is used, whose sequence Python keeps stable across versions, so a seed names one corpus.

The programs speak the task suite's language: identifiers and string words come from the task
samplers' pools (both splits — pretraining on real code sees every name; the split only keeps
pruning's train and held-out *pairs* apart), strings hold several words, and bodies mix in the
tasks' filler statements, string-taking calls (``log.info("…")``) and flat literals of strings
and ints. Without that, a held-out task prompt is out of distribution for a model trained here:
measured on a dense 2-layer d64 model after 4M tokens of the old corpus, 14 of the 17 tasks sat
at or above chance (task loss 0.70–1.22: the model confidently wrong), and only the three whose
words it happened to share (``while_return_true``, ``set_or_string_fixedvarname``, ``with_as``)
were learned.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from runtime.tasks import sampling
from runtime.tasks.strings import STRING_CALLS

# Declared tuple[str, ...]: each pool is re-bound below, extended with the samplers' names.
VARIABLES: tuple[str, ...] = (
    "x", "y", "n", "count", "total", "value", "result", "item", "name", "line", "text", "word",
    "key", "current", "data", "size", "index", "score", "node", "path", "label", "token",
)
VARIABLES = tuple(dict.fromkeys((*VARIABLES, *sampling.NAMES)))
COLLECTIONS = ("items", "values", "words", "lines", "names", "numbers", "rows", "tokens", "parts")
FUNCTIONS: tuple[str, ...] = (
    "process", "parse", "load", "count_words", "find_max", "check", "update", "build", "merge",
    "clean", "read_data", "compute", "is_valid", "collect", "format_row", "handle", "summarize",
)
FUNCTIONS = tuple(dict.fromkeys((*FUNCTIONS, *sampling.FUNCTION_NAMES)))
CLASSES = ("Point", "Counter", "Stack", "Node", "Parser", "Config", "Buffer", "Record", "Tree",
           *sampling.CLASS_NAMES)
ATTRIBUTES = ("name", "value", "size", "items", "count", "parent", "data", "label")
WORDS: tuple[str, ...] = (
    "hello", "world", "done", "error", "ok", "start", "end", "data", "name", "value", "a", "b",
    "abc", "test", "spam", "eggs", "foo", "bar", "result", "line",
)
WORDS = tuple(dict.fromkeys((*WORDS, *sampling.WORDS)))
POOLS = sampling.Pools(VARIABLES, WORDS)  # the task samplers, over every name and word
PATHS = ("data.txt", "input.csv", "log.txt", "config.json", "out.txt", "notes.md")
COMPARISONS = ("==", "!=", "<", ">", "<=", ">=")


def synthetic_programs(seed: int, n_bytes: int) -> list[tuple[str, str]]:
    """``(name, text)`` programs from ``seed`` until their total UTF-8 size reaches ``n_bytes``.

    Each program is generated from its own ``Random(f"{seed}:{index}")``, so the first k programs
    are the same whatever ``n_bytes`` is.
    """
    documents = []
    total = 0
    index = 0
    while total < n_bytes:
        text = _Writer(random.Random(f"{seed}:{index}")).program()
        documents.append((f"synthetic/{index:07d}.py", text))
        total += len(text.encode("utf-8"))
        index += 1
    return documents


class _Writer:
    """Writes one program as lines; statement makers take the indentation depth."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lines: list[str] = []

    def program(self) -> str:
        if self.rng.random() < 0.3:
            self.emit(0, self.rng.choice(sampling.IMPORTS))
            self.lines.append("")
        makers: list[Callable[[], None]] = [self.function, self.function, self.klass]
        for _ in range(self.rng.randint(1, 3)):
            self.rng.choice(makers)()
            self.lines.append("")
        if self.rng.random() < 0.3:
            self.emit(0, 'if __name__ == "__main__":')
            self.emit(1, f"{self.rng.choice(FUNCTIONS)}({self.atom()})")
        return "\n".join(self.lines).rstrip("\n") + "\n"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    # Expressions ---------------------------------------------------------------------------

    def quoted(self, text: str) -> str:
        quote = self.rng.choice("\"'")
        return f"{quote}{text}{quote}"

    def string(self) -> str:
        return self.quoted(POOLS.text(self.rng, 1, 4 if self.rng.random() < 0.5 else 1))

    def number(self) -> str:
        return str(self.rng.choice((0, 1, 1, 2, 3, 5, 10, 42, 100, -1)))

    def atom(self) -> str:
        return self.rng.choice((self.string, self.number, self.variable))()

    def variable(self) -> str:
        return self.rng.choice(VARIABLES)

    def list_literal(self, depth: int = 0) -> str:
        # Nesting produces both ``]`` and ``]]`` closings, as in bracket_counting.
        elements = []
        for _ in range(self.rng.randint(0 if depth else 1, 3)):
            if depth < 2 and self.rng.random() < 0.35:
                elements.append(self.list_literal(depth + 1))
            else:
                elements.append(self.rng.choice((self.number, self.string))())
        return "[" + ", ".join(elements) + "]"

    def dict_literal(self) -> str:
        entries = []
        for _ in range(self.rng.randint(1, 3)):
            value = self.rng.choice((self.number, self.string, self.list_literal))()
            entries.append(f"{self.string()}: {value}")
        return "{" + ", ".join(entries) + "}"

    def fstring(self) -> str:
        quote = self.rng.choice("\"'")
        first, second = self.rng.sample(VARIABLES, 2)
        body = self.rng.choice(
            (f"{{{first}}}", f"{{{first}}}: {{{second}}}", f"{self.rng.choice(WORDS)} {{{first}}}",
             f"{{{first}}} + {{{second}}} = {{{first} + {second}}}")
        )
        return f"f{quote}{body}{quote}"

    def condition(self) -> str:
        left = self.variable()
        return self.rng.choice(
            (f"{left} {self.rng.choice(COMPARISONS)} {self.atom()}", f"{left} == {self.atom()}",
             left, f"not {left}", f"{left} in {self.rng.choice(COLLECTIONS)}")
        )

    def value(self) -> str:
        makers: tuple[Callable[[], str], ...] = (
            self.atom, self.atom, self.string, self.list_literal, self.dict_literal, self.fstring,
            self.ternary, self.call, lambda: f"{self.variable()} + {self.number()}",
            lambda: f"len({self.rng.choice(COLLECTIONS)})",
        )
        return self.rng.choice(makers)()

    def ternary(self) -> str:
        return f"{self.atom()} if {self.condition()} else {self.atom()}"

    def call(self) -> str:
        args = [self.atom() for _ in range(self.rng.randint(0, 2))]
        # Keyword arguments last, as in final_kwarg.
        for keyword in self.rng.sample(("key", "default", "sep", "end", "reverse", "size"),
                                       self.rng.randint(0, 2)):
            args.append(f"{keyword}={self.atom()}")
        return f"{self.rng.choice(FUNCTIONS)}({', '.join(args)})"

    # Statements ----------------------------------------------------------------------------

    def body(self, depth: int, n: int) -> None:
        makers: tuple[Callable[[int], None], ...] = (
            self.assign, self.assign, self.print_call, self.if_block, self.for_block,
            self.while_block, self.with_open, self.accumulate, self.swap, self.lambda_assign,
            self.expression_call, self.filler, self.filler, self.string_call, self.flat_literal,
        )
        for _ in range(n):
            maker = self.rng.choice(makers) if depth < 3 else self.assign
            maker(depth)

    def assign(self, depth: int) -> None:
        self.emit(depth, f"{self.variable()} = {self.value()}")

    def print_call(self, depth: int) -> None:
        # Strings closed right before ``)``: the ``")`` / ``')`` of single_double_quote.
        argument = self.rng.choice((self.string, self.fstring, self.atom))()
        self.emit(depth, f"print({argument})")

    def expression_call(self, depth: int) -> None:
        self.emit(depth, self.call())

    def filler(self, depth: int) -> None:
        for line in POOLS.filler(self.rng, 1, 2).splitlines():
            self.emit(depth, line)

    def string_call(self, depth: int) -> None:
        call = f"{self.rng.choice(STRING_CALLS)}({self.string()})"
        self.emit(depth, f"{self.variable()} = {call}" if self.rng.random() < 0.4 else call)

    def flat_literal(self, depth: int) -> None:
        items = sampling.literal_items(self.rng, POOLS)
        opener, closer = self.rng.choice((("[", "]"), ("{", "}"), ("(", ")"), ("[[", "]]")))
        self.emit(depth, f"{self.variable()} = {opener}{items}{closer}")

    def if_block(self, depth: int) -> None:
        self.emit(depth, f"if {self.condition()}:")
        self.body(depth + 1, self.rng.randint(1, 2))
        for _ in range(self.rng.choice((0, 0, 1, 2))):
            self.emit(depth, f"elif {self.condition()}:")
            self.body(depth + 1, 1)
        if self.rng.random() < 0.5:
            self.emit(depth, "else:")
            self.body(depth + 1, 1)

    def for_block(self, depth: int) -> None:
        collection = self.rng.choice(COLLECTIONS)
        header = self.rng.choice(
            (f"for {self.variable()} in {collection}:",
             f"for i, {self.variable()} in enumerate({collection}):",
             f"for i in range(len({collection})):", f"for i in range({self.number()}):",
             f"for i in range({self.variable()}):")
        )
        self.emit(depth, header)
        self.body(depth + 1, self.rng.randint(1, 2))

    def while_block(self, depth: int) -> None:
        if self.rng.random() < 0.5:
            self.emit(depth, "while True:")
            self.emit(depth + 1, f"{self.variable()} = {self.call()}")
            self.emit(depth + 1, f"if {self.condition()}:")
            self.emit(depth + 2, "break")
        else:
            counter = self.variable()
            self.emit(depth, f"while {counter} < {self.rng.choice(('n', 'size', '10'))}:")
            self.body(depth + 1, 1)
            self.emit(depth + 1, f"{counter} += 1")

    def with_open(self, depth: int) -> None:
        handle = self.rng.choice(("f", "fh", "file", "out"))
        path = self.rng.choice((self.quoted(self.rng.choice(PATHS)), "path", "filename"))
        if self.rng.random() < 0.6:
            self.emit(depth, f"with open({path}) as {handle}:")
            self.emit(depth + 1, f"for line in {handle}:")
            self.body(depth + 2, 1)
        else:
            mode = self.rng.choice(("'w'", '"w"', '"a"'))
            self.emit(depth, f"with open({path}, {mode}) as {handle}:")
            content = self.rng.choice((self.string, self.variable, self.fstring))()
            self.emit(depth + 1, f"{handle}.write({content})")

    def accumulate(self, depth: int) -> None:
        # Collections built as a set (``.add``) or a string (``+=``), as in set_or_string.
        name = self.rng.choice(("current", "seen", "result", "out", "acc", "buffer"))
        item = self.variable()
        if self.rng.random() < 0.5:
            self.emit(depth, f"{name} = set()")
            update = f"{name}.add({item})"
        else:
            self.emit(depth, f"{name} = {self.quoted('')}")
            update = f"{name} += {item}"
        self.emit(depth, f"for {item} in {self.rng.choice(COLLECTIONS)}:")
        if self.rng.random() < 0.4:
            self.emit(depth + 1, f"if {self.condition()}:")
            self.emit(depth + 2, update)
        else:
            self.emit(depth + 1, update)

    def swap(self, depth: int) -> None:
        first, second = self.rng.sample(VARIABLES, 2)
        self.emit(depth, f"{first}, {second} = {second}, {first}")

    def lambda_assign(self, depth: int) -> None:
        argument = self.rng.choice(("x", "item", "row", "k"))
        body = self.rng.choice((f"{argument} + 1", f"{argument}[1]", f"-{argument}",
                                f"{argument} * 2", f"len({argument})"))
        if self.rng.random() < 0.5:
            self.emit(depth, f"{self.variable()} = lambda {argument}: {body}")
        else:
            collection = self.rng.choice(COLLECTIONS)
            self.emit(depth, f"{collection} = sorted({collection}, key=lambda {argument}: {body})")

    # Top-level definitions -----------------------------------------------------------------

    def function(self, depth: int = 0) -> None:
        params = self.rng.sample(VARIABLES + COLLECTIONS, self.rng.randint(0, 3))
        self.emit(depth, f"def {self.rng.choice(FUNCTIONS)}({', '.join(params)}):")
        self.body(depth + 1, self.rng.randint(1, 4))
        self.emit(depth + 1, self.rng.choice(
            ("return True", "return False", f"return {self.variable()}", f"return {self.value()}")
        ))

    def klass(self) -> None:
        self.emit(0, f"class {self.rng.choice(CLASSES)}:")
        attributes = self.rng.sample(ATTRIBUTES, self.rng.randint(1, 3))
        self.emit(1, f"def __init__(self, {', '.join(attributes)}):")
        for attribute in attributes:
            self.emit(2, f"self.{attribute} = {attribute}")
        for _ in range(self.rng.randint(0, 2)):
            self.lines.append("")
            self.emit(1, f"def {self.rng.choice(FUNCTIONS)}(self):")
            self.body(2, self.rng.randint(1, 3))
            self.emit(2, f"return self.{self.rng.choice(attributes)}")
