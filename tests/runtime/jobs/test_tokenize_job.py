"""The tokenize job end to end through ``runtime.job``: files, results and bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.data.corpus import CorpusError
from runtime.data.tokenizer import check_single_tokens, eod_id, load_tokenizer
from runtime.data.tokens import TOKENIZER_FILE, open_tokens
from runtime.job import run_job
from runtime.jobs.tokenize import unigram_loss

REQUIRED = ['")', "')", "]", "]]", ":", ".add", " +=", " else"]


def make_job(workspace: Path, data: dict[str, Any]) -> Path:
    job_dir = workspace / "jobs" / "tokenize-test"
    job_dir.mkdir(parents=True)
    config = {"kind": "tokenize", "key": "0" * 64, "inputs": {},
              "data": data, "required_tokens": REQUIRED}
    (job_dir / "config.json").write_text(json.dumps(config))
    return job_dir


def test_tokenize_job_end_to_end(tmp_path: Path) -> None:
    job_dir = make_job(tmp_path, {"corpus": "stdlib", "max_bytes": 200_000, "vocab_size": 512})
    results = run_job(job_dir)

    assert results["vocab_size"] == 512
    assert results["n_files"] > 10 and len(results["corpus_sha256"]) == 64
    train, heldout = open_tokens(job_dir, "train"), open_tokens(job_dir, "heldout")
    assert train.dtype == np.uint16 and heldout.dtype == np.uint16
    assert (len(train), len(heldout)) == (results["n_train_tokens"], results["n_heldout_tokens"])
    assert len(heldout) > 256 and int(train.max()) < 512
    tokenizer = load_tokenizer(job_dir / TOKENIZER_FILE)
    assert check_single_tokens(tokenizer, REQUIRED) == []
    assert train[-1] == eod_id(tokenizer) == heldout[-1]
    loss = results["unigram_heldout_loss"]
    assert math.isfinite(loss) and 0 < loss < math.log(512)
    assert json.loads((job_dir / "results.json").read_text())["corpus_sha256"] == (
        results["corpus_sha256"]
    )


def test_unigram_loss_matches_a_hand_computation() -> None:
    train = np.array([0, 0, 1], dtype=np.uint16)
    heldout = np.array([0, 2], dtype=np.uint16)
    # Add-one counts over a vocabulary of 3: [3, 2, 1] / 6.
    expected = -(math.log(3 / 6) + math.log(1 / 6)) / 2
    assert unigram_loss(train, heldout, 3) == pytest.approx(expected)


def test_missing_corpus_fails_the_job_without_results(tmp_path: Path) -> None:
    # The recipe check refuses a missing path at plan time; a path deleted after planning is
    # caught again when the job re-validates its config.
    job_dir = make_job(tmp_path, {"corpus": str(tmp_path / "nowhere"), "vocab_size": 512})
    with pytest.raises(ValueError, match="corpus path not found"):
        run_job(job_dir)
    assert not (job_dir / "results.json").exists()


def test_too_little_heldout_text_is_a_corpus_error(tmp_path: Path) -> None:
    source = tmp_path / "tiny"
    source.mkdir()
    for i in range(5):
        (source / f"m{i}.py").write_text(f"x = {i}\n")
    job_dir = make_job(tmp_path, {"corpus": str(source), "vocab_size": 512})
    with pytest.raises(CorpusError, match="held-out split"):
        run_job(job_dir)
