"""The job kinds, in dependency order: each stage reads only earlier ones (docs/jobs.md).

Their one definition, read by the compiler, the executors, ``status`` and the recipe's SLURM
``stages:`` keys. A job itself runs the module of runtime/jobs/ its config names.
"""

from __future__ import annotations

from typing import Literal, get_args

Stage = Literal["tokenize", "train", "stats", "prune", "groundtruth", "ingest"]
STAGES: tuple[Stage, ...] = get_args(Stage)
