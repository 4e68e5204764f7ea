"""Which code each job kind runs, hashed into its cache key.

A kind's code is the import closure of ``runtime.job`` (the dispatcher every job starts in) and
of ``runtime.jobs.<kind>`` (its entry module), walked over the modules' source with ``ast``, so
no list has to be kept by hand: whatever a job can import — ``spec/recipe.py`` included — is in
its key. Per kind, so that editing the pruning code re-prunes but never retrains. The versions
of the third-party packages that change numerics are added for the kinds that import them.

The walk reads each project module once per process (about 60 small files), so ``plan`` stays
fast.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DISPATCHER = "runtime.job"
# Third-party packages whose version can change a job's numbers (kernels, BPE training).
NUMERIC_PACKAGES = ("torch", "tokenizers")
# An __init__ that imports its package's modules by listing them (runtime/tasks: one file per
# task, no list to edit) reaches every module of its folder.
_DISCOVERY_CALLS = (b"iter_modules(", b"walk_packages(")


def entry_module(kind: str) -> str:
    return f"runtime.jobs.{kind}"


@cache
def code_version(kind: str, root: Path = ROOT) -> str:
    """16 hex digits over the kind's module closure (paths and bytes) and numeric packages;
    ``root`` is the project folder (another copy of it in tests)."""
    digest = hashlib.sha256()
    third_party: set[str] = set()
    for path in sorted(closure((DISPATCHER, entry_module(kind)), root).values()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
        third_party |= module_imports(path, root)[1]
    for package in NUMERIC_PACKAGES:
        if package in third_party:
            digest.update(f"{package}=={_version(package)}\0".encode())
    return digest.hexdigest()[:16]


def closure(entries: tuple[str, ...], root: Path) -> dict[str, Path]:
    """Every project module (name → file) that importing ``entries`` can import, package
    ``__init__``s included (importing ``a.b.c`` runs ``a`` and ``a.b`` first)."""
    found: dict[str, Path] = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        path = _source(name, root)
        if name in found or path is None:
            continue
        found[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += module_imports(path, root)[0]
    return found


@cache
def _source(name: str, root: Path) -> Path | None:
    """The file of project module ``name`` under ``root``, or None (stdlib, third party)."""
    base = root.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


@cache
def module_imports(path: Path, root: Path) -> tuple[tuple[str, ...], frozenset[str]]:
    """(module names ``path`` may import — project or not —, top-level packages it imports).

    Every import statement counts, inside functions too (lazy imports still run); for
    ``from a import b``, ``b`` may be a module or a name, so both ``a`` and ``a.b`` are listed.
    """
    source = path.read_bytes()
    # the package relative imports start from: a module's folder, an __init__'s own package
    package = ".".join(path.relative_to(root).parent.parts)
    names: list[str] = []
    for node in _statements(ast.parse(source, filename=str(path)).body):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [base])])
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    if path.name == "__init__.py" and any(call in source for call in _DISCOVERY_CALLS):
        names += [f"{package}.{p.stem}" for p in path.parent.glob("*.py") if p != path]
    return tuple(names), frozenset(name.split(".")[0] for name in names if name)


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested ones too; not expressions (10× faster than ``ast.walk``, and an
    import is always a statement)."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(node, field, ()):
                yield from _statements(child.body if not isinstance(child, ast.stmt) else [child])


@cache
def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"
