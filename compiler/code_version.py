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
        "runtime/corpus.py",
        "runtime/tokenizer.py",
        "runtime/tokens.py",
        "runtime/jobs/tokenize.py",
    ),
    "train": (
        "runtime/model.py",
        "runtime/sparsity.py",
        "runtime/train.py",
        "runtime/checkpoint.py",
        "runtime/jobs/train.py",
    ),
    "stats": ("runtime/model.py", "runtime/ablation.py", "runtime/jobs/stats.py"),
    "prune": (
        "runtime/model.py",
        "runtime/prune.py",
        "runtime/circuit.py",
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
