"""Corpus sources, the byte cap, the content hash and the by-file split."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from runtime.data.corpus import (
    Corpus,
    CorpusError,
    Document,
    corpus_sha256,
    load_corpus,
    split_corpus,
)
from runtime.data.synthetic import synthetic_programs


def test_stdlib_is_sorted_hashed_and_deterministic() -> None:
    first = load_corpus("stdlib", max_bytes=300_000)
    second = load_corpus("stdlib", max_bytes=300_000)
    names = [doc.name for doc in first.documents]
    assert names == sorted(names)
    assert first.sha256 == second.sha256 == corpus_sha256(list(first.documents))
    assert 290_000 < first.n_bytes <= 300_000
    assert not any(name.startswith(("test/", "encodings/")) for name in names)
    assert load_corpus("stdlib", max_bytes=600_000).sha256 != first.sha256


def test_hash_covers_names_and_contents() -> None:
    base = [Document("a.py", "x = 1\n"), Document("b.py", "y = 2\n")]
    assert corpus_sha256(base) != corpus_sha256([Document("a.py", "x = 1\n"),
                                                 Document("c.py", "y = 2\n")])
    assert corpus_sha256(base) != corpus_sha256([Document("a.py", "x = 1\ny"),
                                                 Document("b.py", " = 2\n")])


def test_split_is_by_file_stable_and_non_empty() -> None:
    documents = tuple(Document(f"file{i:03d}.py", f"x = {i}\n") for i in range(200))
    train, heldout = split_corpus(Corpus(documents, ""), 0.1)
    assert train and heldout and len(train) + len(heldout) == 200
    assert 5 <= len(heldout) <= 40
    # Adding files never moves an existing file across the split.
    more = documents + tuple(Document(f"extra{i}.py", "y = 1\n") for i in range(50))
    _, heldout_more = split_corpus(Corpus(more, ""), 0.1)
    assert {doc.name for doc in heldout} <= {doc.name for doc in heldout_more}
    # Even a tiny fraction over few files holds one out.
    few = tuple(documents[:3])
    train_few, heldout_few = split_corpus(Corpus(few, ""), 0.0001)
    assert len(heldout_few) == 1 and len(train_few) == 2


def test_synthetic_is_reproducible_and_parses() -> None:
    programs = synthetic_programs(seed=3, n_bytes=60_000)
    assert programs == synthetic_programs(seed=3, n_bytes=60_000)
    assert programs != synthetic_programs(seed=4, n_bytes=60_000)
    # A larger size extends the same sequence of programs.
    assert synthetic_programs(seed=3, n_bytes=120_000)[: len(programs)] == programs
    for name, text in programs:
        ast.parse(text, filename=name)
    text = "".join(text for _, text in programs)
    for pattern in ('")', "')", "]]", ".add(", " += ", "def __init__(self", "with open(",
                    "elif ", "else:", 'f"{', " if ", "lambda ", " == ", "enumerate(", "range(",
                    "while True:", "return True", "set()"):
        assert pattern in text, pattern


def test_synthetic_corpus_respects_max_bytes() -> None:
    corpus = load_corpus("synthetic", max_bytes=50_000)
    assert 40_000 < corpus.n_bytes <= 50_000
    assert corpus.sha256 == load_corpus("synthetic", max_bytes=50_000).sha256
    assert corpus.sha256 != load_corpus("synthetic", max_bytes=50_000, seed=1).sha256


def test_folder_glob_txt_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("a = 1\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("b = 2\n")
    (tmp_path / "pkg" / "notes.md").write_text("not python\n")
    (tmp_path / "pkg" / "latin1.py").write_bytes(b"s = '\xe9'\n")  # not UTF-8: skipped
    folder = load_corpus(str(tmp_path / "pkg"))
    assert [doc.name for doc in folder.documents] == ["a.py", "sub/b.py"]
    globbed = load_corpus(str(tmp_path / "pkg" / "**" / "*.py"))
    assert globbed.documents == folder.documents

    text_file = tmp_path / "book.txt"
    text_file.write_text("".join(f"line {i}\n" for i in range(100)))
    (document,) = load_corpus(str(text_file)).documents
    train, heldout = split_corpus(load_corpus(str(text_file)), 0.1)
    assert train[0].text + heldout[0].text == document.text
    assert heldout[0].text.count("\n") == 10
    capped = load_corpus(str(text_file), max_bytes=100)
    assert capped.n_bytes <= 100 and capped.documents[0].text.endswith("\n")

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(12)) + "\n")
    texts = [doc.text for doc in load_corpus(str(jsonl)).documents]
    assert texts == [f"doc {i}" for i in range(12)]


@pytest.mark.parametrize(
    ("contents", "message"),
    [('{"text": "ok"}\n{"text": \n', r"docs\.jsonl:2: invalid JSON"),
     ('{"text": "ok"}\n\n{"body": "x"}\n', r'docs\.jsonl:3: expected an object with a string')],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path: Path, contents: str, message: str) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text(contents)
    with pytest.raises(CorpusError, match=message):
        load_corpus(str(path))


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="corpus path not found"):
        load_corpus(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"no \.py files under"):
        load_corpus(str(tmp_path / "empty"))
    with pytest.raises(CorpusError, match=r"no \.py files match"):
        load_corpus(str(tmp_path / "empty" / "*.py"))
    (tmp_path / "blank.txt").write_text("")
    with pytest.raises(CorpusError, match="is empty"):
        load_corpus(str(tmp_path / "blank.txt"))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match="unsupported corpus file"):
        load_corpus(str(tmp_path / "data.csv"))
