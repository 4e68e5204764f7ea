"""The SLURM block of a recipe: several processes per job only where the job is rank-aware."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from spec.errors import RecipeError
from spec.loader import load_recipe
from spec.recipe import SlurmSpec

SLURM = """
name: r
resources:
  backend: slurm
  slurm:
"""


def load_slurm(tmp_path: Path, block: str, overrides: tuple[str, ...] = ()) -> SlurmSpec:
    """The recipe's ``resources.slurm`` with ``block`` (YAML, one level in) under it."""
    path = tmp_path / "r.yaml"
    path.write_text(SLURM.lstrip("\n") + textwrap.indent(textwrap.dedent(block), "    "))
    recipe, _ = load_recipe(path, overrides)
    assert recipe.resources.slurm is not None
    return recipe.resources.slurm


def problems(tmp_path: Path, block: str, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_slurm(tmp_path, block, overrides)
    return [str(problem).replace(f"{tmp_path}/", "") for problem in info.value.problems]


def test_tasks_per_node_under_prune_is_rejected_at_its_field(tmp_path: Path) -> None:
    block = """
    stages:
      train: {tasks_per_node: 2}
      prune: {tasks_per_node: 2}
    """
    assert problems(tmp_path, block) == [
        "r.yaml:8:31: resources.slurm.stages.prune.tasks_per_node: only the train stage runs "
        "several processes; prune jobs run one (use 1 or leave it unset)"]


def test_several_nodes_for_another_stage_and_overrides_are_rejected_too(tmp_path: Path) -> None:
    found = problems(tmp_path, "stages: {stats: {nodes: 1}}\n",
                     ("resources.slurm.stages.stats.nodes=2",
                      "resources.slurm.stages.tokenize.tasks_per_node=3"))
    assert [problem.split(": ", 2)[1] for problem in found] == [
        "resources.slurm.stages.stats.nodes", "resources.slurm.stages.tokenize.tasks_per_node"]


def test_training_and_the_recipe_wide_block_may_run_several_processes(tmp_path: Path) -> None:
    # the recipe-wide value is training's alone (runtime/executors/slurm.py: stage_parameters)
    slurm = load_slurm(tmp_path, """
    nodes: 2
    tasks_per_node: 4
    stages:
      train: {tasks_per_node: 2}
      prune: {tasks_per_node: 1, nodes: 1}
    """)
    assert slurm.tasks_per_node == 4 and slurm.stages["train"].tasks_per_node == 2


def test_tasks_per_node_is_at_least_one(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, "stages: {train: {tasks_per_node: 0}}\n")
    assert "resources.slurm.stages.train.tasks_per_node: Input should be greater than or equal " \
        "to 1" in problem
