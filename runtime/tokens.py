"""Where a tokenize job leaves its outputs, and how training and pruning read the token arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
TOKEN_FILES = {"train": "train.bin", "heldout": "heldout.bin"}
TOKEN_DTYPE = np.uint16

Split = Literal["train", "heldout"]


def open_tokens(job_dir: Path, split: Split) -> np.memmap:
    """The split's token ids, memory-mapped read-only (raw uint16, no header)."""
    return np.memmap(job_dir / TOKEN_FILES[split], dtype=TOKEN_DTYPE, mode="r")
