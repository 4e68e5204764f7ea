"""The ground-truth suite compiles into one groundtruth job per shape × prune setting × seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.plan import compile_plan
from compiler.sweep import load_points
from spec.errors import RecipeError
from spec.groundtruth import SHAPES, THRESHOLD

SUITE = """\
name: gt
groundtruth: {only: true}
prune: {seeds: 2}
sweep:
  prune.k_coef: [1.0e-4, 1.0e-3, 1.0e-2]
"""


def compile_text(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return compile_plan(*load_points(path, overrides), tmp_path / "ws")


def test_one_job_per_shape_setting_and_seed(tmp_path: Path) -> None:
    plan = compile_text(tmp_path, SUITE)
    jobs = plan.stage("groundtruth")
    assert len(jobs) == len(SHAPES) * 3 * 2
    assert [job.kind for job in plan.jobs.values()] == ["groundtruth"] * 18
    assert {(j.config["shape"], j.config["prune"]["k_coef"], j.config["seed"]) for j in jobs} == {
        (shape, k, seed) for shape in SHAPES for k in (1e-4, 1e-3, 1e-2) for seed in (0, 1)}
    # no inputs: the planted model is built by the job itself
    assert all(job.deps == () and job.config["inputs"] == {} for job in jobs)
    assert jobs[0].labels == ["prune.k_coef=0.0001/mlp_path/prune_seed=0"]


def test_the_suite_prunes_at_its_threshold_unless_the_recipe_sets_one(tmp_path: Path) -> None:
    default = compile_text(tmp_path, SUITE)
    assert {j.config["prune"]["loss_threshold"] for j in default.stage("groundtruth")} == {
        THRESHOLD}
    chosen = compile_text(tmp_path, SUITE, ("prune.loss_threshold=0.05",))
    assert {j.config["prune"]["loss_threshold"] for j in chosen.stage("groundtruth")} == {0.05}


def test_beside_real_models_the_suite_is_shared_by_points_with_one_prune_block(
        tmp_path: Path) -> None:
    recipe = ("name: gt\ngroundtruth: {shapes: [composition]}\n"
              "sweep: {sparsity.target: [1.0, 0.1]}\n")
    plan = compile_text(tmp_path, recipe)
    assert {kind: len(plan.stage(kind)) for kind in ("train", "prune", "groundtruth")} == {
        "train": 2, "prune": 4, "groundtruth": 1}
    assert len(plan.stage("groundtruth")[0].labels) == 2


@pytest.mark.parametrize(("block", "message"), [
    ("{shapes: [mlp_path, mlp_path]}", "shapes are listed more than once"),
    ("{shapes: [mlp]}", "Input should be 'mlp_path', 'attention_copy' or 'composition'"),
    ("{shapes: []}", "at least 1 item"),
])
def test_bad_blocks_are_reported_at_the_field(tmp_path: Path, block: str, message: str) -> None:
    with pytest.raises(RecipeError) as error:
        compile_text(tmp_path, f"name: gt\ngroundtruth: {block}\n")
    assert "r.yaml:2:" in str(error.value) and message in str(error.value)
