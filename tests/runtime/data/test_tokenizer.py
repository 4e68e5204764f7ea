"""The byte-level BPE: exact vocabulary size, single-token answers, the document separator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from runtime.data.synthetic import synthetic_programs
from runtime.data.tokenizer import (
    EOD_TOKEN,
    check_single_tokens,
    encode_documents,
    eod_id,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from spec.tasks import all_candidates

REQUIRED = ['")', "')", "]", "]]", ":", ".add", " +=", " elif", " else", "}", ")"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [text for _, text in synthetic_programs(seed=0, n_bytes=150_000)]


@pytest.fixture(scope="module")
def tokenizer(texts: list[str]) -> Tokenizer:
    return train_tokenizer(texts, vocab_size=512, required_tokens=REQUIRED)


def test_vocabulary_is_exactly_the_requested_size(tokenizer: Tokenizer) -> None:
    assert tokenizer.get_vocab_size() == 512
    assert sorted(tokenizer.get_vocab().values()) == list(range(512))
    assert eod_id(tokenizer) == 0


def pieces(tokenizer: Tokenizer, text: str) -> list[str]:
    """The text of each token, as written in ``text``."""
    return [text[start:end] for start, end in tokenizer.encode(text).offsets]


def test_required_strings_are_single_tokens_in_context(tokenizer: Tokenizer) -> None:
    assert check_single_tokens(tokenizer, REQUIRED) == []
    text = 'print("a")\nx = [[1, 2]]\ncurrent.add(y)\ntext += "b"\nif a:\n    pass\nelse:\n'
    for string in ('")', "]]", ".add", " +=", ":"):
        assert string in pieces(tokenizer, text), (string, pieces(tokenizer, text))
    # GPT-2's pattern keeps ``"))`` as one piece; the required ``")`` still comes out whole.
    assert pieces(tokenizer, 'f(g("a"))')[-2:] == ['")', ")"]


def test_word_strings_are_cut_only_at_word_boundaries(texts: list[str]) -> None:
    # Frequent enough that BPE learns " int", " and" and ".address" as tokens of their own: a
    # forced cut inside them would show.
    common = ["x = int(y) and self.address\n" * 200]
    tokenizer = train_tokenizer(texts + common, vocab_size=512,
                                required_tokens=[" a", ".add", " in"])
    assert check_single_tokens(tokenizer, [" a", ".add", " in"]) == []
    assert " a" in pieces(tokenizer, "x = a + 1")
    assert " a" not in pieces(tokenizer, "x and y")
    assert ".add" not in pieces(tokenizer, "self.address")
    assert " in" in pieces(tokenizer, "for i in xs")
    assert " in" not in pieces(tokenizer, "x = int(y)")


def test_check_single_tokens_reports_offenders(tokenizer: Tokenizer) -> None:
    assert check_single_tokens(tokenizer, ["]]", "zqxj(", ")]"]) == ["zqxj(", ")]"]


def test_without_required_tokens_bpe_merges_across_them(texts: list[str]) -> None:
    # The guarantee comes from the added tokens, not from luck in the merges.
    plain = train_tokenizer(texts, vocab_size=512)
    assert check_single_tokens(plain, REQUIRED)


def test_encode_separates_documents_and_round_trips(tokenizer: Tokenizer, tmp_path: Path) -> None:
    documents = ["x = 1\n", f"s = '{EOD_TOKEN}'\n", "print('hi')\n"]
    ids = encode_documents(tokenizer, documents, batch_size=2)
    assert ids.dtype == np.uint16
    # The separator text inside a document is plain text, not a document break.
    assert int((ids == eod_id(tokenizer)).sum()) == 3 and ids[-1] == eod_id(tokenizer)
    breaks = np.flatnonzero(ids == eod_id(tokenizer))
    assert tokenizer.decode(ids[breaks[0] + 1 : breaks[1]].tolist()) == documents[1]

    save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert np.array_equal(encode_documents(loaded, documents), ids)
    assert check_single_tokens(loaded, REQUIRED) == []


def test_task_candidates_are_single_tokens(tokenizer: Tokenizer, texts: list[str]) -> None:
    candidates = all_candidates()
    trained = train_tokenizer(texts, vocab_size=1024, required_tokens=candidates)
    assert check_single_tokens(trained, candidates) == []


def test_vocab_too_small_for_required_tokens(texts: list[str]) -> None:
    with pytest.raises(ValueError, match="leaves no room"):
        train_tokenizer(texts, vocab_size=260, required_tokens=REQUIRED)
