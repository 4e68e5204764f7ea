"""Expand a recipe's ``sweep`` into points: a grid over dotted paths, plus ``zip`` groups.

```yaml
sweep:
  sparsity.target: [1.0, 0.05]          # one axis
  zip:                                  # paths in one group vary together
    - {model.d_model: [64, 128], train.lr: [0.02, 0.01]}
```
Each point is validated as a full recipe; a problem points at the sweep value that caused it
(or, for a path that does not exist, at the path, once). ``load_points`` validates the recipe
and all its points in one pass, so a mistake in the base never hides one in the sweep.
A recipe-level ``seeds`` is one more axis, the innermost: every point once per model seed.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spec.errors import Mark, Problem, RecipeError, format_path
from spec.loader import Document, load_document, problems_from, validate
from spec.recipe import Recipe

FIXED_FIELDS = ("name", "extends", "sweep", "description", "seeds", "controls", "groundtruth")
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class SweepPoint:
    values: dict[str, Any]  # dotted path → value, in sweep order
    recipe: Recipe

    @functools.cached_property
    def label(self) -> str:
        return ",".join(f"{path}={value}" for path, value in self.values.items()) or "base"


@dataclass(frozen=True)
class _Axis:
    paths: tuple[str, ...]
    rows: list[tuple[Any, ...]]  # one tuple of values (one per path) per position on the axis
    marks: list[dict[str, Mark]]  # per position: the mark of each value
    key_marks: dict[str, Mark]  # the mark of each path itself (where a bad path is reported)


def load_points(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Recipe, list[SweepPoint]]:
    """Load, validate and expand a recipe, reporting every problem of the recipe and of its
    sweep points together in one ``RecipeError``."""
    doc = load_document(path, overrides)
    problems: list[Problem] = []
    recipe: Recipe | None = None
    try:
        recipe = validate(doc)
    except RecipeError as error:
        problems = error.problems
    sweep = doc.data.get("sweep")
    points: list[SweepPoint] = []
    if isinstance(sweep, dict) and sweep:  # a sweep that is no mapping is the base's problem
        try:
            points = _points(sweep, doc)
        except RecipeError as error:
            # A base problem outside the swept paths recurs in every point: report it once.
            seen = {str(problem) for problem in problems}
            problems += [problem for problem in error.problems if str(problem) not in seen]
    if problems or recipe is None:
        raise RecipeError(sorted(problems, key=_position))
    return recipe, _with_seeds(recipe, doc, points or [SweepPoint({}, recipe)])


def _position(problem: Problem) -> tuple[str, int, int]:
    return problem.mark.source, problem.mark.line, problem.mark.column


def expand(recipe: Recipe, doc: Document) -> list[SweepPoint]:
    """All sweep points of a validated recipe (one point, the recipe itself, without a sweep)."""
    points = _points(recipe.sweep, doc) if recipe.sweep else [SweepPoint({}, recipe)]
    return _with_seeds(recipe, doc, points)


def _with_seeds(recipe: Recipe, doc: Document, points: list[SweepPoint]) -> list[SweepPoint]:
    if recipe.seeds is not None and "seed" in recipe.sweep:
        raise RecipeError([Problem(doc.key_marks.get(("sweep", "seed"), doc.mark_of(("sweep",))),
                                   "sweep.seed", "'seed' is swept and `seeds` is set; use one")])
    if recipe.seeds is None:
        return points
    # One point per model seed, with `seeds` cleared: a point's recipe describes one model.
    return [SweepPoint({**point.values, "seed": seed},
                       point.recipe.model_copy(update={"seed": seed, "seeds": None}))
            for point in points for seed in recipe.model_seeds]


def _points(sweep: dict[str, Any], doc: Document) -> list[SweepPoint]:
    axes = _axes(sweep, doc)
    base = {key: value for key, value in doc.data.items() if key != "sweep"}
    points: list[SweepPoint] = []
    problems: dict[str, Problem] = {}
    key_marks = {path: mark for axis in axes for path, mark in axis.key_marks.items()}
    for combo in itertools.product(*(range(len(axis.rows)) for axis in axes)):
        values: dict[str, Any] = {}
        marks: dict[str, Mark] = {}
        for axis, position in zip(axes, combo, strict=True):
            values.update(zip(axis.paths, axis.rows[position], strict=True))
            marks.update(axis.marks[position])
        data = _with_values(base, values)
        try:
            points.append(SweepPoint(values, Recipe.model_validate(data)))
        except ValidationError as error:
            overlay = Document(data, {**doc.marks, **_path_marks(marks)}, doc.key_marks)
            for problem in problems_from(error, overlay, data):
                named = _name_sweep_path(problem, marks, key_marks)
                problems.setdefault(str(named), named)
            if len(problems) >= MAX_PROBLEMS:
                break
    if problems:
        raise RecipeError(list(problems.values()))
    return points


def _axes(sweep: dict[str, Any], doc: Document) -> list[_Axis]:
    problems: list[Problem] = []
    axes: list[_Axis] = []
    # (where it is written, {dotted path: values}): a top-level axis, or a zip group's position
    groups: list[tuple[str | tuple[str, str, int], dict[str, Any]]] = [
        (path, {path: values}) for path, values in sweep.items() if path != "zip"]
    zips = sweep.get("zip", [])
    if not isinstance(zips, list):
        problems.append(
            Problem(
                doc.mark_of(("sweep", "zip")),
                "sweep.zip",
                "must be a list of groups, e.g. [{a.b: [1, 2], c.d: [3, 4]}]",
            )
        )
        zips = []
    for index, group in enumerate(zips):
        where = ("sweep", "zip", index)
        if not isinstance(group, dict) or not group:
            problems.append(
                Problem(
                    doc.mark_of(where),
                    format_path(where),
                    "a zip group is a mapping of dotted paths to lists",
                )
            )
            continue
        lengths = {len(v) for v in group.values() if isinstance(v, list)}
        if len(lengths) > 1:
            problems.append(
                Problem(
                    doc.mark_of(where),
                    format_path(where),
                    f"lists in a zip group must have equal lengths, got {sorted(lengths)}",
                )
            )
            continue
        groups.append((where, group))
    seen: set[str] = set()
    for written, group in groups:
        prefix = written if isinstance(written, tuple) else ("sweep",)
        for path, values in group.items():
            at = (*prefix, path)
            if path.split(".")[0] in FIXED_FIELDS or path in seen:
                reason = "is swept twice" if path in seen else "cannot be swept"
                problems.append(
                    Problem(
                        doc.key_marks.get(at, doc.mark_of(at)),
                        format_path(at),
                        f"{path!r} {reason}",
                    )
                )
            elif not isinstance(values, list) or not values:
                problems.append(
                    Problem(
                        doc.mark_of(at), format_path(at), "sweep values must be a non-empty list"
                    )
                )
            seen.add(path)
        if problems:
            continue
        paths = tuple(group)
        size = len(next(iter(group.values())))
        axes.append(
            _Axis(
                paths,
                [tuple(group[path][i] for path in paths) for i in range(size)],
                [{path: doc.mark_of((*prefix, path, i)) for path in paths} for i in range(size)],
                {path: doc.key_marks.get((*prefix, path), doc.mark_of((*prefix, path)))
                 for path in paths},
            )
        )
    if problems:
        raise RecipeError(problems)
    return axes


def _with_values(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each dotted path set; copies only the dicts along the paths."""
    data = dict(base)
    for dotted, value in values.items():
        parts = dotted.split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return data


def _path_marks(marks: dict[str, Mark]) -> dict[tuple[str | int, ...], Mark]:
    return {tuple(path.split(".")): mark for path, mark in marks.items()}


def _name_sweep_path(
    problem: Problem, marks: dict[str, Mark], key_marks: dict[str, Mark]
) -> Problem:
    """Say which sweep path a problem came from. A bad value is reported at the value; a path
    that does not exist at the path (so once, however many values it lists)."""
    for path, mark in marks.items():
        # (an unknown key below the path is a bad value, a mapping with a misspelt key)
        bad_path = problem.message.startswith("unknown key") and (
            problem.field == path or path.startswith(problem.field + "."))
        if bad_path:
            return Problem(key_marks[path], f"sweep.{path}",
                           f"sweep path {path!r} does not exist: {problem.message}")
        if problem.field == path or problem.field.startswith(path + "."):
            return Problem(mark, f"sweep.{path}", problem.message)
    return problem
