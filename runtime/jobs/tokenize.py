"""The ``tokenize`` job (docs/jobs.md): corpus → BPE tokenizer → train / held-out token arrays."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from runtime.data.corpus import CorpusError, load_corpus, split_corpus
from runtime.data.tokenizer import (
    check_single_tokens,
    encode_documents,
    save_tokenizer,
    train_tokenizer,
)
from runtime.data.tokens import TOKEN_DTYPE, TOKEN_FILES, TOKENIZER_FILE
from runtime.io import write_atomic
from runtime.job import Progress
from spec.recipe import DataSpec


def run(
    config: dict[str, Any], job_dir: Path, workspace: Path, progress: Progress
) -> dict[str, Any]:
    data = DataSpec.model_validate(config["data"])
    required = list(config["required_tokens"])

    # Build the corpus and split it by file.
    progress({"phase": "corpus", "source": data.corpus}, force=True)
    corpus = load_corpus(data.corpus, data.max_bytes)
    train_docs, heldout_docs = split_corpus(corpus, data.heldout_fraction)

    # Train the tokenizer on the train split only, so held-out text is unseen by it too.
    progress({"phase": "train_tokenizer", "n_files": len(corpus.documents),
              "n_bytes": corpus.n_bytes}, force=True)
    tokenizer = train_tokenizer((doc.text for doc in train_docs), data.vocab_size, required)
    offenders = check_single_tokens(tokenizer, required)
    if offenders:
        raise RuntimeError(f"required tokens are not single tokens: {offenders}")
    save_tokenizer(tokenizer, job_dir / TOKENIZER_FILE)

    # Encode both splits.
    progress({"phase": "encode"}, force=True)
    train_ids = encode_documents(tokenizer, [doc.text for doc in train_docs])
    heldout_ids = encode_documents(tokenizer, [doc.text for doc in heldout_docs])
    if len(heldout_ids) <= data.context:
        raise CorpusError(
            f"held-out split of {data.corpus!r} has {len(heldout_ids)} tokens, not more than "
            f"context {data.context}; use a larger corpus or heldout_fraction"
        )

    progress({"phase": "write"}, force=True)
    _write_tokens(job_dir / TOKEN_FILES["train"], train_ids)
    _write_tokens(job_dir / TOKEN_FILES["heldout"], heldout_ids)

    vocab_size = tokenizer.get_vocab_size()
    return {
        "n_train_tokens": len(train_ids),
        "n_heldout_tokens": len(heldout_ids),
        "vocab_size": vocab_size,
        "n_files": len(corpus.documents),
        "corpus_sha256": corpus.sha256,
        "unigram_heldout_loss": unigram_loss(train_ids, heldout_ids, vocab_size),
    }


def _write_tokens(path: Path, ids: np.ndarray) -> None:
    data = ids.astype(TOKEN_DTYPE, copy=False).tobytes()
    write_atomic(path, data)


def unigram_loss(train_ids: np.ndarray, heldout_ids: np.ndarray, vocab_size: int) -> float:
    """Held-out cross-entropy (nats/token) of the add-one-smoothed train unigram distribution:
    the loss a model must beat to have learned anything beyond token frequencies."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    log_probs = np.log(counts) - math.log(counts.sum())
    return float(-log_probs[heldout_ids].mean())
