"""Parameter and FLOP counts, of a recipe and of the train job configs the plan compiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.estimate import job_parameters, job_training_flops, parameter_count, training_flops
from compiler.plan import compile_plan
from compiler.sweep import load_points
from runtime.model import GPTConfig, SparseGPT

RECIPE = """\
name: sizes
data: {vocab_size: 300, context: 24}
model: {n_layer: 2, d_model: 16, d_head: 8, d_mlp: 24}
train: {tokens: 10K}
controls: [random_init]
"""


@pytest.mark.parametrize("overrides", [
    [], ["model.attention_sink=true"], ["model.pos_emb=learned"], ["model.bigram=true"],
])
def test_counts_of_a_recipe_and_of_its_train_jobs_match_the_model(
    tmp_path: Path, overrides: list[str]
) -> None:
    path = tmp_path / "sizes.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    recipe, points = load_points(path, overrides)
    plan = compile_plan(recipe, points, tmp_path / "ws")
    model = SparseGPT(GPTConfig.from_specs(recipe.model, recipe.data))
    n_params = sum(p.numel() for p in model.parameters())
    trained, untrained = sorted(plan.stage("train"), key=lambda job: "control" in job.config)
    assert parameter_count(recipe) == job_parameters(trained.config) == n_params
    assert job_training_flops(trained.config) == training_flops(recipe) > 6 * n_params * 10_000
    assert untrained.config["control"] == "random_init"
    assert job_training_flops(untrained.config) == 0.0  # it trains nothing
