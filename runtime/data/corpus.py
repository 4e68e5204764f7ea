"""Pretraining corpora as sorted, content-hashed lists of ``(name, text)`` documents.

Sources (``DataSpec.corpus``): ``stdlib`` (this interpreter's standard-library sources),
``synthetic`` (seeded small Python programs, see ``runtime.data.synthetic``), a folder or glob of
``.py`` files, a single ``.py`` or ``.txt`` file (one document), or a ``.jsonl`` file (one document
per line, its ``"text"`` field). Documents are sorted by name so that ``max_bytes`` takes a stable
prefix, and the corpus hash covers exactly what is used.
"""

from __future__ import annotations

import glob
import hashlib
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from runtime.data.synthetic import synthetic_programs
from spec.corpora import GLOB_CHARS

# Parts of the stdlib tree left out of the ``stdlib`` corpus:
# - site-packages / dist-packages: third-party code, differs between installations;
# - test suites: ~4x the size of the library itself, full of deliberately broken or oddly encoded
#   files and huge data literals, so they would dominate the corpus with atypical code;
# - encodings: generated codec tables (rows of ``'\x00'  # 0x00 -> NULL``), not code to learn from;
# - pydoc_data: one generated dict of documentation prose;
# - __pycache__: bytecode only.
STDLIB_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "encodings", "pydoc_data",
     "__pycache__"}
)
# ``synthetic`` without a byte cap: enough for a small model's pretraining and still quick to make.
SYNTHETIC_DEFAULT_BYTES = 4_000_000
SYNTHETIC_SEED = 0


class CorpusError(Exception):
    """A corpus that cannot be built; the message is one line naming the path at fault."""


class Document(NamedTuple):
    name: str
    text: str


@dataclass(frozen=True)
class Corpus:
    documents: tuple[Document, ...]
    sha256: str

    @property
    def n_bytes(self) -> int:
        return sum(len(doc.text.encode("utf-8")) for doc in self.documents)


def load_corpus(source: str, max_bytes: int | None = None, seed: int = SYNTHETIC_SEED) -> Corpus:
    """Build the corpus named by ``source``; ``seed`` only matters for ``synthetic``.

    ``max_bytes`` (UTF-8 bytes) keeps whole documents: each in name order that still fits under
    the cap, so one large file early in the order does not end the corpus. Only when no document
    fits is the first one cut, at a line end, so that a single big ``.txt`` file can be capped.
    """
    if source == "stdlib":
        documents = _stdlib_documents()
    elif source == "synthetic":
        documents = [
            Document(*program)
            for program in synthetic_programs(seed, max_bytes or SYNTHETIC_DEFAULT_BYTES)
        ]
    else:
        documents = _path_documents(source)
    # Empty files (many ``__init__.py``) would only add document breaks, and a held-out split made
    # of them would have no text.
    documents = sorted(doc for doc in documents if doc.text.strip())
    if not documents:
        raise CorpusError(f"corpus {source!r} is empty")
    if max_bytes is not None:
        documents = _cap(documents, max_bytes)
        if not documents[0].text.strip():
            raise CorpusError(f"max_bytes {max_bytes} leaves corpus {source!r} empty")
    return Corpus(tuple(documents), corpus_sha256(documents))


def corpus_sha256(documents: list[Document]) -> str:
    # Length-prefix every field so that moving text between a name and a body changes the hash.
    digest = hashlib.sha256()
    for doc in documents:
        for field in (doc.name.encode("utf-8"), doc.text.encode("utf-8")):
            digest.update(len(field).to_bytes(8, "little"))
            digest.update(field)
    return digest.hexdigest()


def heldout_score(name: str) -> float:
    """A uniform number in [0, 1) from the document name alone, so adding or removing other files
    never moves a file between train and held-out."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2**64


def split_corpus(
    corpus: Corpus, heldout_fraction: float
) -> tuple[list[Document], list[Document]]:
    """Split into (train, held-out) by file; both sides are non-empty.

    A file is held out when its name scores below ``heldout_fraction``. With few files that can
    leave almost no held-out text (one tiny file, or none), so the lowest-scoring files are added
    until the held-out side has at least half its share of the bytes; with many files that floor
    is never reached and the split depends on each file's own name only. A one-document corpus (a
    ``.txt`` file) is split inside instead: its last ``heldout_fraction`` of lines is held out.
    """
    documents = list(corpus.documents)
    if len(documents) == 1:
        return _split_document(documents[0], heldout_fraction)
    by_score = sorted(documents, key=lambda doc: heldout_score(doc.name))
    n_heldout = sum(heldout_score(doc.name) < heldout_fraction for doc in documents)
    sizes = [len(doc.text) for doc in by_score]
    floor = heldout_fraction / 2 * sum(sizes)
    while n_heldout < len(documents) - 1 and sum(sizes[:n_heldout]) < floor:
        n_heldout += 1
    heldout_names = {doc.name for doc in by_score[:n_heldout]}
    train = [doc for doc in documents if doc.name not in heldout_names]
    heldout = [doc for doc in documents if doc.name in heldout_names]
    return train, heldout


def _split_document(
    doc: Document, heldout_fraction: float
) -> tuple[list[Document], list[Document]]:
    lines = doc.text.splitlines(keepends=True)
    if len(lines) < 2:
        raise CorpusError(
            f"{doc.name}: a one-document corpus needs at least 2 lines to hold some out"
        )
    cut = min(len(lines) - 1, max(1, round(len(lines) * (1 - heldout_fraction))))
    return (
        [Document(doc.name, "".join(lines[:cut]))],
        [Document(f"{doc.name}#heldout", "".join(lines[cut:]))],
    )


def _cap(documents: list[Document], max_bytes: int) -> list[Document]:
    kept: list[Document] = []
    total = 0
    for doc in documents:
        size = len(doc.text.encode("utf-8"))
        if total + size > max_bytes:
            continue
        kept.append(doc)
        total += size
    if not kept and documents:
        first = documents[0]
        head = first.text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
        head = head[: head.rfind("\n") + 1] or head
        kept.append(Document(first.name, head))
    return kept


def _stdlib_documents() -> list[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        path for path in root.rglob("*.py")
        if not STDLIB_SKIP_DIRS.intersection(path.relative_to(root).parts[:-1])
    ]
    return _read_py_files(files, root)


def _path_documents(source: str) -> list[Document]:
    if GLOB_CHARS.intersection(source):
        matches = [Path(match) for match in glob.glob(source, recursive=True)]
        files = [path for path in matches if path.suffix == ".py" and path.is_file()]
        if not files:
            raise CorpusError(f"no .py files match {source!r}")
        root = Path(*Path(source).parts[: _first_glob_part(source)])
        return _read_py_files(files, root)
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus path not found: {source}")
    if path.is_dir():
        files = [file for file in path.rglob("*.py") if file.is_file()]
        if not files:
            raise CorpusError(f"no .py files under {source}")
        return _read_py_files(files, path)
    if path.suffix == ".jsonl":
        return _jsonl_documents(path)
    if path.suffix in (".txt", ".py"):
        return [Document(path.name, _read_text(path))]
    raise CorpusError(
        f"unsupported corpus file {source}: use a folder, a glob of .py files, .py, .txt or .jsonl"
    )


def _first_glob_part(source: str) -> int:
    parts = Path(source).parts
    return next(i for i, part in enumerate(parts) if GLOB_CHARS.intersection(part))


def _read_py_files(files: list[Path], root: Path) -> list[Document]:
    """Read files as UTF-8 (newlines normalised to ``\\n``), named by their path under ``root``;
    undecodable files are skipped (a few legacy sources are Latin-1)."""
    documents = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        documents.append(Document(path.relative_to(root).as_posix(), text))
    return documents


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: not UTF-8 ({error.reason} at byte {error.start})") from None


def _jsonl_documents(path: Path) -> list[Document]:
    documents = []
    # Zero-padded line numbers keep name order equal to file order.
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorpusError(f"{path}:{lineno}: invalid JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CorpusError(f'{path}:{lineno}: expected an object with a string "text" field')
        documents.append(Document(f"{path.name}:{lineno:09d}", record["text"]))
    return documents
