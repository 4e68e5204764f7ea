"""Which source files each job kind depends on, hashed into its cache key.

Per kind, so that editing the pruning code re-prunes but never retrains.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

KIND_SOURCES: dict[str, tuple[str, ...]] = {
    "tokenize": (
        "runtime/data/corpus.py",
        "runtime/data/tokenizer.py",
        "runtime/data/tokens.py",
        "runtime/jobs/tokenize.py",
    ),
    "train": (
        "runtime/model.py",
        "runtime/training/sparsity.py",
        "runtime/training/train.py",
        "runtime/training/checkpoint.py",
        "runtime/jobs/train.py",
    ),
    "stats": ("runtime/model.py", "runtime/pruning/ablation.py", "runtime/jobs/stats.py"),
    "prune": (
        "runtime/model.py",
        "runtime/pruning/prune.py",
        "runtime/pruning/circuit.py",
        "runtime/tasks/*.py",
        "runtime/jobs/prune.py",
    ),
    "ingest": ("results/*.py",),
}


@cache
def code_version(kind: str) -> str:
    digest = hashlib.sha256()
    for pattern in KIND_SOURCES[kind]:
        for path in sorted(ROOT.glob(pattern)):
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
