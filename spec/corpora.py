"""Corpus names a recipe may give, known without reading a corpus (runtime/data/corpus.py does).

Here, below the runtime, so that validating a recipe and keying its tokenizer stay cheap and
import nothing of it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import platform
from pathlib import Path

CORPUS_KINDS = ("stdlib", "synthetic")  # built in; anything else is a path or glob
GLOB_CHARS = frozenset("*?[")


def corpus_fingerprint(source: str) -> str:
    """What a cache key must know of a corpus beyond its name, without reading it: the Python
    version for ``stdlib``; for user files, their names, sizes and modification times."""
    if source == "synthetic":
        return "synthetic"  # fully determined by the generator's code, hashed into the key
    if source == "stdlib":
        return f"python-{platform.python_version()}"
    if GLOB_CHARS.intersection(source):
        files = sorted(Path(match) for match in glob.glob(source, recursive=True))
    elif Path(source).is_dir():
        files = sorted(Path(source).rglob("*.py"))
    else:
        files = [Path(source)]
    digest = hashlib.sha256()
    for path in files:
        with contextlib.suppress(OSError):
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def corpus_exists(source: str) -> bool:
    if source in CORPUS_KINDS:
        return True
    if GLOB_CHARS.intersection(source):
        return bool(glob.glob(source, recursive=True))
    return Path(source).exists()
