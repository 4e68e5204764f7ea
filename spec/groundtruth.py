"""The ground-truth suite's names: the planted-circuit shapes a recipe may list, and the loss
threshold the suite prunes at unless the recipe sets one.

Declared here, below everything else, so that validating and compiling a recipe never import
torch; runtime/pruning/groundtruth.py builds the models and imports these.
"""

from __future__ import annotations

from typing import Literal, get_args

Shape = Literal["mlp_path", "attention_copy", "composition"]
SHAPES: tuple[Shape, ...] = get_args(Shape)
# Every planted node's single ablation fails it; every planted circuit passes it by far.
THRESHOLD = 0.1
