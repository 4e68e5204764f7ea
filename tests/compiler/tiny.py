"""The tiny recipe the run tests share: a 1-layer d16 model on 150K bytes of the synthetic corpus,
pruned for ``while_return_true`` at a task loss any model meets (5.0) — seconds of real work.

``tiny_recipe(name, train={"tokens": "4M"}, sweep=...)`` gives it as YAML, each section given
updated key by key (the rest kept) and any other section added whole.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

TINY: dict[str, Any] = {
    "data": {"corpus": "synthetic", "max_bytes": "150K", "vocab_size": 400, "context": 32},
    "model": {"n_layer": 1, "d_model": 16, "d_head": 8},
    "train": {"tokens": "40K", "batch_size": 8, "eval_every": 20, "eval_tokens": "2K",
              "checkpoint_every": 20},
    "sparsity": {"target": 0.5},
    "prune": {"tasks": ["while_return_true"], "steps": 4, "batch_size": 8, "train_pairs": 16,
              "heldout_pairs": 16, "mean_tokens": "2K", "loss_threshold": 5.0},
}


def tiny_recipe(name: str, **sections: Any) -> str:
    recipe: dict[str, Any] = {"name": name, **copy.deepcopy(TINY)}
    for section, value in sections.items():
        if isinstance(value, dict) and isinstance(recipe.get(section), dict):
            recipe[section].update(value)
        else:
            recipe[section] = value
    return yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)
