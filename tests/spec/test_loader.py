"""Every class of recipe problem is reported as ``file:line:col: field.path: message``."""

from __future__ import annotations

import resource
import textwrap
import time
from pathlib import Path

import pytest

from compiler.sweep import expand, load_points
from spec.errors import RecipeError
from spec.loader import load_recipe


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_points(path, overrides)
    return [str(problem).replace(f"{path.parent}/", "") for problem in info.value.problems]


def test_valid_recipe_fills_defaults(tmp_path: Path) -> None:
    recipe, _ = load_recipe(write(tmp_path, "name: ok\ntrain: {tokens: 1.5B}\n"))
    assert recipe.train.tokens == 1_500_000_000
    assert recipe.model.d_head == 16 and recipe.train.eps == 0.1
    assert recipe.sparsity.anneal.curve == "linear"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nmodel: {d_model: [1, 2}\n", "r.yaml:2:23: YAML syntax error"),
        ("name: x\nmodel:\n\td_model: 64\n", "r.yaml:3:1: YAML syntax error: tab character"),
        ("name: x\nseed: 1\nseed: 2\n", "r.yaml:3:1: seed: duplicate key 'seed' (first at line 2)"),
        ("name: x\ntrain: {batch_size: many}\n", "r.yaml:2:21: train.batch_size: Input should be"),
        ("name: x\nmodel: {afrac: 1.5}\n", "r.yaml:2:16: model.afrac: Input should be less than"),
        ("name: x\ntrain: {lr: .inf}\n", "r.yaml:2:13: train.lr: Input should be a finite number"),
        (
            "name: x\nmodel: {d_modle: 64}\n",
            "r.yaml:2:9: model.d_modle: unknown key 'd_modle'; did you mean 'd_model'?",
        ),
        ("seed: 1\n", "r.yaml:1:1: name: required field is missing"),
        (
            "name: x\nmodel: {d_model: 60}\n",
            "r.yaml:2:18: model.d_model: d_model (60) must be a multiple",
        ),
        (
            "name: x\nsparsity: {anneal: {start: 0.5, end: 0.2}}\n",
            "r.yaml:2:28: sparsity.anneal.start: anneal start (0.5) must be before end (0.2)",
        ),
        (
            "name: x\nprune: {tasks: [single_double_quote, brackets]}\n",
            "r.yaml:2:38: prune.tasks[1]: unknown task 'brackets'",
        ),
        (
            "name: x\nresources: {backend: kubernetes}\n",
            "r.yaml:2:22: resources.backend: Input should be 'local' or 'slurm'",
        ),
        ("name: x\ntrain: {tokens: 20Q}\n", "r.yaml:2:17: train.tokens: bad count '20Q'"),
        (
            "name: x\nresources: {slurm: {time: 3 weeks}}\n",
            "r.yaml:2:27: resources.slurm.time: bad duration '3 weeks'",
        ),
        ("", "r.yaml:1:1: file is empty"),
        ("- name: x\n", "r.yaml:1:1: top level must be a mapping"),
        ("name: !!python/object/apply:os.system [echo hi]\n", "r.yaml:1:7: name: tag"),
        ("name: Bad Name\n", "r.yaml:1:7: name: String should match pattern"),
        (
            "name: x\ndata: {corpus: no/such/dir}\n",
            "r.yaml:2:16: data.corpus: corpus path not found",
        ),
    ],
)
def test_problem_is_reported_with_position(tmp_path: Path, text: str, expected: str) -> None:
    reported = problems(write(tmp_path, text))
    assert any(line.startswith(expected) for line in reported), reported


CROSS_FIELD = """\
name: x
model:
  n_layer: 2
  d_model: 100
  d_head: 16
sparsity:
  anneal:
    curve: linear
    end: 0.005
prune:
  tasks:
    - with_as
    - while_return_true
    - with_as
"""


def test_cross_field_errors_point_at_the_field_to_change(tmp_path: Path) -> None:
    assert problems(write(tmp_path, CROSS_FIELD)) == [
        "r.yaml:4:12: model.d_model: d_model (100) must be a multiple of d_head (16)",
        # start is the default: the value to change is the end the recipe set
        "r.yaml:9:10: sparsity.anneal.end: anneal start (0.01) must be before end (0.005)",
        "r.yaml:14:7: prune.tasks[2]: task 'with_as' is listed more than once",
    ]
    # d_model left at its default (256): the d_head the recipe set is the value to change
    only_head = CROSS_FIELD.replace("  d_model: 100\n  d_head: 16\n", "  d_head: 24\n")
    assert problems(write(tmp_path, only_head))[0] == (
        "r.yaml:4:11: model.d_head: d_model (256) must be a multiple of d_head (24)"
    )


@pytest.mark.parametrize(
    ("anneal", "expected"),
    [
        ("curve: points\n    points: []", "r.yaml:5:13: sparsity.anneal.points: curve 'points' "
         "needs a non-empty points list"),
        ("points:\n      - [0.0, 1.0]\n      - [0.5, 1.5]",
         "r.yaml:6:9: sparsity.anneal.points[1]: each point is [progress in 0..1"),
        ("points:\n      - [0.5, 1.0]\n      - [0.5, 0.5]",
         "r.yaml:6:9: sparsity.anneal.points[1]: points must have strictly increasing progress"),
        ("curve: cosine\n    points: [[0.0, 1.0]]",
         "r.yaml:4:12: sparsity.anneal.curve: points given but curve is 'cosine'"),
    ],
)
def test_anneal_points_errors_point_at_the_point(
    tmp_path: Path, anneal: str, expected: str
) -> None:
    path = write(tmp_path, f"name: x\nsparsity:\n  anneal:\n    {anneal}\n")
    (reported,) = problems(path)
    assert reported.startswith(expected), reported


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    reported = problems(
        write(
            tmp_path,
            """
        name: x
        train: {lr: -1, batch_size: 0}
        model: {n_layr: 2}
    """,
        )
    )
    assert [line.split(": ")[0:2] for line in reported] == [
        ["r.yaml:2:13", "train.lr"],
        ["r.yaml:2:29", "train.batch_size"],
        ["r.yaml:3:9", "model.n_layr"],
    ]


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: x\ndescription: caf\xe9\n")
    assert problems(path) == ["r.yaml:2:17: file is not UTF-8 (byte 0xe9)"] or problems(path)[
        0
    ].endswith("file is not UTF-8 (byte 0xe9)")


def test_alias_bomb_is_refused_fast_with_bounded_memory(tmp_path: Path) -> None:
    layers = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    layers += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = write(tmp_path, "name: x\n" + "\n".join(layers) + "\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    reported = problems(path)
    assert time.perf_counter() - started < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB
    assert "after expanding aliases; refused" in reported[0]
    assert "x, x" not in reported[0]  # the expanded value is never printed


def test_extends_merges_and_marks_point_into_the_base(tmp_path: Path) -> None:
    write(tmp_path, "name: base\nmodel: {n_layer: 2, d_model: 64}\ntrain: {lr: -1}\n", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\nmodel: {n_layer: 3}\n")
    reported = problems(child)
    assert reported == ["base.yaml:3:13: train.lr: Input should be greater than 0 (got -1)"]
    write(tmp_path, "name: base\nmodel: {n_layer: 2, d_model: 64}\n", "base.yaml")
    assert load_recipe(child)[0].train.lr == 0.01
    recipe, _ = load_recipe(child)
    assert (recipe.name, recipe.model.n_layer, recipe.model.d_model) == ("child", 3, 64)


def test_missing_and_cyclic_extends(tmp_path: Path) -> None:
    missing = write(tmp_path, "name: x\nextends: nowhere.yaml\n")
    assert problems(missing) == ["r.yaml:2:10: extends: base recipe nowhere.yaml not found"]
    write(tmp_path, "name: a\nextends: b.yaml\n", "a.yaml")
    write(tmp_path, "name: b\nextends: a.yaml\n", "b.yaml")
    reported = problems(tmp_path / "a.yaml")
    assert "cyclic extends: a.yaml -> b.yaml -> a.yaml" in reported[0]


def test_set_overrides_apply_and_bad_ones_name_the_override(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\n")
    recipe, _ = load_recipe(path, ("train.lr=0.02", "model.bigram=true"))
    assert recipe.train.lr == 0.02 and recipe.model.bigram is True
    assert problems(path, ("train.lr=fast",)) == [
        "--set train.lr=fast: train.lr: Input should be a valid number (got 'fast')"
    ]
    assert problems(path, ("train.lr",))[0].startswith("--set train.lr: expected --set")
    assert problems(path, ("model.d_modle=64",))[0].startswith(
        "--set model.d_modle=64: model.d_modle: unknown key 'd_modle'; did you mean 'd_model'?"
    )


def test_sweep_bad_path_and_bad_value_point_at_the_sweep(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: x
        sweep:
          sparsity.targt: [1.0, 0.1, 0.05]
    """,
    )
    (reported,) = problems(path)  # once for the path, not once per value
    assert reported.startswith(
        "r.yaml:3:3: sweep.sparsity.targt: sweep path 'sparsity.targt' does not exist"
    )
    path = write(
        tmp_path,
        """
        name: x
        sweep:
          model.d_model: [64, wide]
          zip:
            - {train.lr: [0.1, 0.2], train.batch_size: [8]}
    """,
    )
    reported = problems(path)
    assert reported == [
        "r.yaml:5:7: sweep.zip[0]: lists in a zip group must have equal lengths, got [1, 2]"
    ]
    path = write(tmp_path, "name: x\nsweep:\n  model.d_model: [64, wide]\n")
    assert problems(path) == [
        "r.yaml:3:23: sweep.model.d_model: Input should be a valid integer (got 'wide')"
    ]


def test_base_and_sweep_problems_are_reported_in_one_pass(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: x
        model: {n_layr: 2}
        train: {lr: fast}
        sweep:
          model.d_modle: [64, 128]
          train.lr: [0.1, -1, 0.2]
          sparsity.target: [1.0, 0.5]
    """,
    )
    assert [line.split(": ")[:2] for line in problems(path)] == [
        ["r.yaml:2:9", "model.n_layr"],  # in the base, and in every point: reported once
        ["r.yaml:3:13", "train.lr"],  # the base's own value, although the sweep replaces it
        ["r.yaml:5:3", "sweep.model.d_modle"],  # once, at the path
        ["r.yaml:6:19", "sweep.train.lr"],  # at the bad value
    ]


def test_sweep_grid_and_zip_expand(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: x
        sweep:
          sparsity.target: [1.0, 0.1, 0.01]
          zip:
            - {model.d_model: [64, 128], train.lr: [0.02, 0.01]}
    """,
    )
    recipe, doc = load_recipe(path)
    points = expand(recipe, doc)
    assert len(points) == 6
    assert {
        (p.recipe.sparsity.target, p.recipe.model.d_model, p.recipe.train.lr) for p in points
    } == {(t, d, lr) for t in (1.0, 0.1, 0.01) for d, lr in ((64, 0.02), (128, 0.01))}
