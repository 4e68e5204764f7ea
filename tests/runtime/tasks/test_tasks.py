"""Task generators: registry, pair shape, minimality, determinism, splits and Python validity."""

from __future__ import annotations

import ast
import json
import random

import pytest

from runtime.tasks import (
    TASKS,
    TaskPair,
    describe_tasks,
    get_task,
    minimal_pair,
    register,
)
from runtime.tasks.sampling import Pools, pools_for, scaffold
from spec.tasks import TASK_ANSWERS, all_candidates

# The two prompts of a pair may differ by at most this many character edits, and by at most this
# fraction of the longer prompt: the cue, not the context, is what changes.
MAX_EDIT = 16
MAX_EDIT_FRACTION = 0.5

N_PAIRS = 24

REQUIRED = {
    "single_double_quote", "bracket_counting", "set_or_string", "set_or_string_fixedvarname",
    "for_while", "else_elif", "if_equals", "var_swap", "enumerate_range", "while_return_true",
}

# What may follow `prompt + answer` so the whole is a complete Python module. Covers every
# built-in task; a task maps each answer to its continuation ("" = the answer ends the code).
CONTINUATIONS: dict[str, dict[str, str]] = {
    "single_double_quote": {'")': "", "')": ""},
    "bracket_counting": {"]]": "", "]": ""},
    "bracket_brace": {"}": "", "]": ""},
    "fstring_brace": {"}": '")', ")": ""},
    "set_or_string": {".add": "(1)", " +=": ' "a"'},
    "set_or_string_fixedvarname": {".add": "(1)", " +=": ' "a"'},
    "var_swap": {},
    "if_equals": {" ==": " 1: pass", " =": " 1"},
    "for_while": {" in": " range(3): pass", " <": " 3: pass"},
    "else_elif": {":": " pass", " ==": " 1: pass"},
    "if_ternary": {" else": " 0", ":": " pass"},
    "enumerate_range": {" enumerate": "(x): pass", " range": "(3): pass"},
    "while_return_true": {":": " pass", "\n": ""},
    "lambda_func": {":": " 0", "):": " pass"},
    "final_kwarg": {")": "", ",": " **extra)"},
    "class_init": {")": "", ",": " 0)"},
    "with_as": {":": " pass", " as": " f: pass"},
    "with_open": {".write": "(x)", ".read": "()"},
}

# Tasks where the distractor is not just unlikely but a syntax error: the cue fully decides.
DISTRACTOR_IS_SYNTAX_ERROR = ("single_double_quote", "bracket_counting", "bracket_brace",
                              "fstring_brace", "lambda_func")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance; trims the common prefix/suffix first so long prompts stay cheap."""
    while a and b and a[0] == b[0]:
        a, b = a[1:], b[1:]
    while a and b and a[-1] == b[-1]:
        a, b = a[:-1], b[:-1]
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def test_edit_distance() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("x = [[1", "x = [1") == 1
    assert edit_distance("", "abc") == 3


def test_required_tasks_are_registered() -> None:
    assert set(TASKS) >= REQUIRED
    assert len(TASKS) >= 15


@pytest.fixture(scope="module")
def train_pairs() -> dict[str, list[TaskPair]]:
    return {name: task.pairs(N_PAIRS, "train", seed=0) for name, task in TASKS.items()}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_pairs_are_minimal_and_answered(name: str, train_pairs: dict[str, list[TaskPair]]) -> None:
    task = TASKS[name]
    pairs = train_pairs[name]
    assert len(pairs) == N_PAIRS
    for pair in pairs:
        a, b = pair.answers
        assert a != b and {a, b} <= set(task.candidates)
        p, q = pair.prompts
        assert p != q
        distance = edit_distance(p, q)
        assert distance <= MAX_EDIT, (distance, pair)
        assert distance <= MAX_EDIT_FRACTION * max(len(p), len(q)), (distance, pair)
        for prompt in pair.prompts:
            # The answer token starts right where the prompt ends; trailing whitespace would
            # belong to it (and ` +=` / ` in` answers carry their own leading space).
            assert prompt == prompt.rstrip(), pair
    # Generators vary their context: pairs of one call are not all alike.
    assert len({pair.prompts for pair in pairs}) > N_PAIRS // 2


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_candidate_is_reachable(name: str) -> None:
    # Every candidate is reachable, else it would be dead weight in the tokenizer's forced set.
    task = TASKS[name]
    seen = {a for pair in task.pairs(200, "train", seed=1) for a in pair.answers}
    assert seen == set(task.candidates)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_seeding_is_deterministic(name: str) -> None:
    task = TASKS[name]
    assert task.pairs(8, "train", seed=3) == task.pairs(8, "train", seed=3)
    assert task.pairs(8, "train", seed=3) != task.pairs(8, "train", seed=4)
    assert task.pairs(0, "train", seed=3) == []


@pytest.mark.parametrize("name", sorted(TASKS))
def test_train_and_heldout_are_disjoint(name: str) -> None:
    task = TASKS[name]
    train = {p for pair in task.pairs(150, "train", seed=0) for p in pair.prompts}
    heldout = {p for pair in task.pairs(150, "heldout", seed=0) for p in pair.prompts}
    assert not train & heldout


def test_split_pools_are_disjoint() -> None:
    train, heldout = pools_for("train"), pools_for("heldout")
    assert not set(train.names) & set(heldout.names)
    assert not set(train.words) & set(heldout.words)
    assert len(heldout.names) >= 10 and len(heldout.words) >= 10


def test_test_split_uses_heldout_names_with_its_own_stream() -> None:
    task = get_task("with_as")
    train_names = set(pools_for("train").names)
    test = task.pairs(50, "test", seed=0)
    heldout = task.pairs(50, "heldout", seed=0)
    assert test != heldout
    assert not any(name in prompt.split() for pair in test for prompt in pair.prompts
                   for name in train_names if len(name) > 3)


def test_bad_split_and_n_are_rejected() -> None:
    task = get_task("bracket_counting")
    with pytest.raises(ValueError, match="split"):
        task.pairs(1, "validation", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be"):
        task.pairs(-1, "train", 0)


@pytest.mark.parametrize("name", sorted(CONTINUATIONS))
def test_prompt_answer_continuation_is_valid_python(name: str) -> None:
    continuations = CONTINUATIONS[name]
    for pair in TASKS[name].pairs(N_PAIRS, "train", seed=2):
        for prompt, answer in zip(pair.prompts, pair.answers, strict=True):
            code = prompt + answer + continuations.get(answer, "") + "\n"
            ast.parse(code)  # raises SyntaxError with the offending line


@pytest.mark.parametrize("name", DISTRACTOR_IS_SYNTAX_ERROR)
def test_distractor_breaks_the_code(name: str) -> None:
    continuations = CONTINUATIONS[name]
    for pair in TASKS[name].pairs(8, "train", seed=2):
        for prompt, wrong in zip(pair.prompts, reversed(pair.answers), strict=True):
            with pytest.raises(SyntaxError):
                ast.parse(prompt + wrong + continuations.get(wrong, "") + "\n")


def test_examples_read_as_expected() -> None:
    (pair,) = get_task("bracket_counting").pairs(1, "train", seed=0)
    (deep, flat) = pair.prompts
    assert pair.answers == ("]]", "]")
    assert deep.count("[[") == flat.count("[[") + 1
    (pair,) = get_task("set_or_string_fixedvarname").pairs(1, "heldout", seed=5)
    assert all(p.endswith("    current") for p in pair.prompts)
    assert "current = set()" in pair.prompts[0] and "current = set()" not in pair.prompts[1]


def test_all_candidates_is_sorted_union() -> None:
    candidates = all_candidates()
    assert candidates == sorted(set(candidates))
    assert set(candidates) == {c for task in TASKS.values() for c in task.candidates}
    assert {name: task.candidates for name, task in TASKS.items()} == TASK_ANSWERS
    assert {'")', "')", "]]", "]", ".add", " +="} <= set(candidates)


def test_describe_tasks_is_json_ready() -> None:
    rows = describe_tasks()
    assert [row["name"] for row in rows] == list(TASKS)
    for row in rows:
        assert row["description"] and len(row["example"]["prompts"]) == 2
        assert set(row["example"]["answers"]) <= set(row["candidates"])
    json.dumps(rows)


@pytest.fixture
def toy_task_name():
    name = "toy_done_flag"
    yield name
    TASKS.pop(name, None)


def test_register_adds_a_task(toy_task_name: str) -> None:
    @register(name=toy_task_name, candidates=(" True", " False"))
    def toy(rng: random.Random, pools: Pools) -> TaskPair:
        """Negation flips the literal."""
        sc = scaffold(rng, pools)
        return minimal_pair(sc, pools.filler(rng), ("done =", "done = not"), (" True", " False"))

    task = get_task(toy_task_name)
    assert task.description == "Negation flips the literal."
    assert len(task.pairs(5, "heldout", 1)) == 5
    with pytest.raises(ValueError, match="already registered"):
        register(name=toy_task_name, candidates=(" True", " False"))(toy)


def test_register_checks_answers(toy_task_name: str) -> None:
    @register(name=toy_task_name, candidates=("a", "b"))
    def bad(rng: random.Random, pools: Pools) -> TaskPair:
        return TaskPair(prompts=("x", "y"), answers=("a", "c"))

    with pytest.raises(ValueError, match="two different candidates"):
        get_task(toy_task_name).pairs(1, "train", 0)


def test_unknown_task_suggests_close_names() -> None:
    with pytest.raises(KeyError, match="did you mean 'bracket_counting'"):
        get_task("bracket_countng")
    with pytest.raises(KeyError, match="unknown task 'zzz'"):
        get_task("zzz")


def test_no_candidate_straddles_the_prompt_end(train_pairs: dict[str, list[TaskPair]]) -> None:
    # The tokenizer cuts candidates out leftmost-longest; one that began inside the prompt and
    # ran into the answer (`)` + `:` → `):`) would swallow the answer's token.
    candidates = all_candidates()
    for pairs in train_pairs.values():
        for pair in pairs:
            for prompt, answer in zip(pair.prompts, pair.answers, strict=True):
                for c in candidates:
                    for k in range(1, len(c)):
                        assert not (prompt.endswith(c[:k]) and answer.startswith(c[k:])), (c, pair)


def test_answers_are_the_next_token_under_the_real_tokenizer(
    train_pairs: dict[str, list[TaskPair]],
) -> None:
    tokenizer_module = pytest.importorskip("runtime.data.tokenizer")
    texts = [p + a for pairs in train_pairs.values() for pair in pairs
             for p, a in zip(pair.prompts, pair.answers, strict=True)]
    tokenizer = tokenizer_module.train_tokenizer(texts, 768, all_candidates())
    for pairs in train_pairs.values():
        for pair in pairs:
            for prompt, answer in zip(pair.prompts, pair.answers, strict=True):
                (answer_id,) = tokenizer.encode(answer).ids  # as the prune job looks it up
                expected = [*tokenizer.encode(prompt).ids, answer_id]
                assert tokenizer.encode(prompt + answer).ids == expected, (prompt, answer)
