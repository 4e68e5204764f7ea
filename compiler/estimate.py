"""Back-of-envelope sizes for ``xcompile plan``: parameters and training FLOPs."""

from __future__ import annotations

from spec.recipe import Recipe


def parameter_count(recipe: Recipe) -> int:
    """Parameters of the model a recipe trains (matches runtime.model.SparseGPT)."""
    model, data = recipe.model, recipe.data
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


def training_flops(recipe: Recipe) -> float:
    """6·N·tokens plus attention scores (Kaplan et al. 2020); dense, as the kernels are."""
    model, data = recipe.model, recipe.data
    attention = 6 * model.n_layer * data.context * model.d_model
    return float((6 * parameter_count(recipe) + attention) * recipe.train.tokens)
