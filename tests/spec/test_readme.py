"""The recipe README shows is a valid recipe, and its SLURM block a valid resources section."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from compiler.sweep import expand
from spec.loader import load_recipe

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", README, flags=re.DOTALL)


def test_readme_recipe_validates_and_expands(tmp_path: Path) -> None:
    recipe_text = next(block for block in BLOCKS if block.startswith("name:"))
    path = tmp_path / "readme.yaml"
    path.write_text(recipe_text, encoding="utf-8")
    recipe, doc = load_recipe(path)
    assert len(expand(recipe, doc)) == 4  # 2 sparsity targets × 1 zip group of 2


def test_readme_slurm_block_validates(tmp_path: Path) -> None:
    slurm_text = next(block for block in BLOCKS if block.startswith("resources:"))
    path = tmp_path / "slurm.yaml"
    path.write_text("name: x\n" + slurm_text, encoding="utf-8")
    recipe, _ = load_recipe(path)
    assert recipe.resources.backend == "slurm"
    assert yaml.safe_load(slurm_text)["resources"]["slurm"]["stages"]["prune"]["time"] == "2h"
