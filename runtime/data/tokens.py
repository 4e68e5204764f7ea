"""Where a tokenize job leaves its outputs, and how training and pruning read the token arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
TOKEN_FILES = {"train": "train.bin", "heldout": "heldout.bin"}
TOKEN_DTYPE = np.uint16

Split = Literal["train", "heldout"]


def open_tokens(job_dir: Path, split: Split, vocab_size: int | None = None) -> np.memmap:
    """The split's token ids, memory-mapped read-only (raw uint16, no header); with
    ``vocab_size``, checked to fit the model's vocabulary."""
    tokens = np.memmap(job_dir / TOKEN_FILES[split], dtype=TOKEN_DTYPE, mode="r")
    if vocab_size is not None and len(tokens) and int(tokens.max()) >= vocab_size:
        raise ValueError(f"{job_dir / TOKEN_FILES[split]}: token id {int(tokens.max())} "
                         f">= vocab_size {vocab_size}")
    return tokens
