"""The job kinds, in dependency order: each stage reads only earlier ones (docs/jobs.md).

Their one definition, apart from the recipe models so that the job dispatcher (runtime/job.py),
whose code every job's cache key hashes, does not also hash the whole recipe schema.
"""

from __future__ import annotations

from typing import Literal, get_args

Stage = Literal["tokenize", "train", "stats", "prune", "groundtruth", "ingest"]
STAGES: tuple[Stage, ...] = get_args(Stage)
