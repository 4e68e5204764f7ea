"""Back-of-envelope sizes for ``xcompile plan``: parameters and training FLOPs, of a recipe or
of a compiled job's config."""

from __future__ import annotations

from typing import Any

from spec.recipe import DataSpec, ModelSpec, Recipe


def model_parameters(model: ModelSpec, data: DataSpec) -> int:
    """Parameters of the model (matches runtime.model.SparseGPT)."""
    d, d_mlp, vocab = model.d_model, model.mlp_width, data.vocab_size
    per_layer = 4 * (d * d + d) + (d * d_mlp + d_mlp) + (d_mlp * d + d) + 2 * d
    if model.attention_sink:
        per_layer += d // model.d_head
    total = model.n_layer * per_layer + 2 * vocab * d + d
    if model.pos_emb == "learned":
        total += data.context * d
    if model.bigram:
        total += vocab * vocab
    return total


def model_flops(model: ModelSpec, data: DataSpec, tokens: int) -> float:
    """6·N·tokens plus attention scores (Kaplan et al. 2020); dense, as the kernels are."""
    attention = 6 * model.n_layer * data.context * model.d_model
    return float((6 * model_parameters(model, data) + attention) * tokens)


def parameter_count(recipe: Recipe) -> int:
    """Parameters of the model a recipe trains."""
    return model_parameters(recipe.model, recipe.data)


def training_flops(recipe: Recipe) -> float:
    return model_flops(recipe.model, recipe.data, recipe.train.tokens)


def job_specs(config: dict[str, Any]) -> tuple[ModelSpec, DataSpec]:
    """The model and data sections of a train job's config, not re-validated: a past job's
    config may predate a field (or a corpus folder may be gone), and only sizes are read."""
    return ModelSpec.model_construct(**config["model"]), DataSpec.model_construct(**config["data"])


def job_parameters(config: dict[str, Any]) -> int:
    """Parameters of the model a train job's config builds."""
    return model_parameters(*job_specs(config))


def job_training_flops(config: dict[str, Any]) -> float:
    """Training FLOPs of a train job's config; 0 for a ``random_init`` control, which trains
    nothing."""
    if config.get("control") == "random_init":
        return 0.0
    return model_flops(*job_specs(config), int(config["train"]["tokens"]))
