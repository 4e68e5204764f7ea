"""Load a recipe: safe YAML with a mark for every value, ``extends``, ``--set``, validation.

PyYAML's safe loader still expands aliases into shared objects and forgets positions, so we
compose the node graph ourselves and build plain dicts/lists while recording each value's
file:line:col. Expansion is budgeted, which stops alias bombs early and in bounded memory.
Every problem becomes a ``Problem`` in one ``RecipeError``.
"""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from spec.errors import Mark, Problem, RecipeError, format_path
from spec.recipe import Recipe

Path_ = tuple[str | int, ...]
MAX_NODES = 100_000  # far above any real recipe; an alias bomb hits it in microseconds
MAX_BYTES = 1 << 20
_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""

    yaml_implicit_resolvers = copy.deepcopy(yaml.SafeLoader.yaml_implicit_resolvers)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass
class Document:
    """A recipe's data with a mark for each value (``marks``) and each mapping key."""

    data: dict[str, Any]
    marks: dict[Path_, Mark] = field(default_factory=dict)
    key_marks: dict[Path_, Mark] = field(default_factory=dict)

    def mark_of(self, path: Path_) -> Mark:
        """The mark of the deepest prefix of ``path`` that has one."""
        for end in range(len(path), -1, -1):
            if (mark := self.marks.get(path[:end])) is not None:
                return mark
        return Mark("<recipe>")


class _Builder:
    """Turns a composed YAML node tree into Python values, recording marks as it goes."""

    def __init__(self, source: str, loader: _Loader, doc: Document) -> None:
        self.source, self.loader, self.doc = source, loader, doc
        self.budget = MAX_NODES

    def mark(self, node: yaml.Node) -> Mark:
        return Mark(self.source, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _Fatal(
                self.mark(node),
                format_path(path),
                f"too many values (over {MAX_NODES}) after expanding aliases; refused",
            )
        self.doc.marks[path] = self.mark(node)
        if isinstance(node, yaml.MappingNode):
            return self.build_mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise _Fatal(self.mark(node), format_path(path), f"tag {node.tag!r} is not allowed")
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return self.loader.construct_object(node)
        except yaml.constructor.ConstructorError as error:
            raise _Fatal(
                self.mark(node),
                format_path(path),
                f"tag {node.tag!r} is not allowed (only plain YAML values)",
            ) from error

    def build_mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        if node.tag != _MAP:
            raise _Fatal(self.mark(node), format_path(path), f"tag {node.tag!r} is not allowed")
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:  # YAML merge key `<<: *base`: explicit keys win
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise _Fatal(self.mark(source), format_path(path), "<< needs a mapping")
                    merged.update(
                        {
                            k: v
                            for k, v in self.build_mapping(source, path).items()
                            if k not in merged
                        }
                    )
                continue
            key = self.build(key_node, (*path, "<key>"))
            if not isinstance(key, str):
                raise _Fatal(
                    self.mark(key_node), format_path(path), f"keys must be strings, got {key!r}"
                )
            if key in result:
                raise _Fatal(
                    self.mark(key_node),
                    format_path((*path, key)),
                    f"duplicate key {key!r} (first at line "
                    f"{self.doc.key_marks[(*path, key)].line})",
                )
            self.doc.key_marks[(*path, key)] = self.mark(key_node)
            result[key] = self.build(value_node, (*path, key))
        self.doc.marks.pop((*path, "<key>"), None)
        return {**{k: v for k, v in merged.items() if k not in result}, **result}


class _Fatal(Exception):
    """A problem after which the rest of the file cannot be read."""

    def __init__(self, mark: Mark, field_path: str, message: str) -> None:
        self.problem = Problem(mark, field_path, message)


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        before = raw[: error.start]
        line = before.count(b"\n") + 1
        column = error.start - (before.rfind(b"\n") + 1) + 1
        raise _Fatal(
            Mark(str(path), line, column), "", f"file is not UTF-8 (byte 0x{raw[error.start]:02x})"
        ) from error


def parse_yaml(text: str, source: str, base_path: Path_ = ()) -> tuple[Any, Document]:
    """Parse one YAML document into values plus marks (rooted at ``base_path``)."""
    doc = Document(data={})
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, doc
        return _Builder(source, loader, doc).build(node, base_path), doc
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = " ".join(part for part in (error.context, error.problem) if part)
        if "'\\t'" in message:
            message = "tab character: YAML indentation must use spaces, not tabs"
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise _Fatal(Mark(source, line, column), "", f"YAML syntax error: {message}") from error
    finally:
        loader.dispose()


def _read_file(path: Path, chain: tuple[Path, ...]) -> Document:
    """One recipe file with its ``extends`` chain deep-merged underneath."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise _Fatal(Mark(str(path)), "", f"cannot read recipe: {error.strerror}") from error
    if len(raw) > MAX_BYTES:
        raise _Fatal(Mark(str(path)), "", f"file is larger than {MAX_BYTES} bytes")
    data, doc = parse_yaml(_decode(path, raw), str(path))
    if data is None:
        raise _Fatal(Mark(str(path), 1, 1), "", "file is empty: a recipe needs at least `name:`")
    if not isinstance(data, dict):
        raise _Fatal(doc.mark_of(()), "", "top level must be a mapping of recipe fields")
    doc.data = data
    parent = data.get("extends")
    if parent is None:
        return doc
    if not isinstance(parent, str):
        raise _Fatal(doc.mark_of(("extends",)), "extends", "must be a file path")
    parent_path = (path.parent / parent).resolve()
    if parent_path in chain:
        cycle = " -> ".join(p.name for p in (*chain, parent_path))
        raise _Fatal(doc.mark_of(("extends",)), "extends", f"cyclic extends: {cycle}")
    if not parent_path.is_file():
        raise _Fatal(doc.mark_of(("extends",)), "extends", f"base recipe {parent} not found")
    base = _read_file(parent_path, (*chain, parent_path))
    base.data.pop("extends", None)
    _merge_into(base, doc, ())
    return base


def _merge_into(base: Document, top: Document, path: Path_) -> None:
    """Deep-merge ``top`` over ``base`` (mappings merge, anything else replaces)."""
    target = _get(base.data, path)
    for key, value in _get(top.data, path).items():
        sub = (*path, key)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            base.marks[sub] = top.marks[sub]
            base.key_marks[sub] = top.key_marks[sub]
            _merge_into(base, top, sub)
            continue
        target[key] = value
        for table, source in ((base.marks, top.marks), (base.key_marks, top.key_marks)):
            for stale in [p for p in table if p[: len(sub)] == sub]:
                del table[stale]
            table.update({p: m for p, m in source.items() if p[: len(sub)] == sub})
    base.marks[()] = base.marks.get((), top.marks.get((), Mark("<recipe>")))


def _get(data: Any, path: Path_) -> Any:
    for part in path:
        data = data[part]
    return data


def apply_override(doc: Document, text: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) to the document; errors name the override."""
    mark = Mark(f"--set {text}")
    key, sep, raw_value = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise _Fatal(mark, "", "expected --set dotted.key=value, e.g. --set train.lr=0.02")
    path: tuple[str, ...] = tuple(key.strip().split("."))
    try:
        value, value_doc = parse_yaml(raw_value, mark.source, path)
    except _Fatal as fatal:
        raise _Fatal(mark, key, fatal.problem.message) from fatal
    target = doc.data
    for depth, part in enumerate(path[:-1]):
        if not isinstance(target.get(part), dict):
            if part in target:
                raise _Fatal(mark, format_path(path[: depth + 1]), "is not a mapping")
            target[part] = {}
        target = target[part]
    target[path[-1]] = value
    for table in (doc.marks, doc.key_marks):
        for stale in [p for p in table if p[: len(path)] == path]:
            del table[stale]
    doc.marks.update({p: mark for p in value_doc.marks} | {path: mark})
    doc.key_marks[path] = mark


def load_document(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Document:
    """Read a recipe file, resolve ``extends`` and apply ``--set`` overrides."""
    path = Path(path)
    try:
        doc = _read_file(path.resolve(), (path.resolve(),))
        _relabel(doc, path)
        for override in overrides:
            apply_override(doc, override)
        _anchor_corpus_path(doc)
    except _Fatal as fatal:
        raise RecipeError([fatal.problem]) from None
    return doc


def _anchor_corpus_path(doc: Document) -> None:
    """A relative corpus path is relative to the recipe file that names it (like ``extends``),
    so the job finds it wherever it runs; from ``--set`` it is relative to the current folder."""
    data = doc.data.get("data")
    if not isinstance(data, dict):
        return
    corpus = data.get("corpus")
    if (
        not isinstance(corpus, str)
        or corpus in ("stdlib", "synthetic")
        or Path(corpus).is_absolute()
    ):
        return
    source = doc.mark_of(("data", "corpus")).source
    base = Path.cwd() if source.startswith("--set") else Path(source).resolve().parent
    data["corpus"] = str(base / corpus)


def _relabel(doc: Document, path: Path) -> None:
    """Name the top file as the user typed it; bases keep their resolved paths."""
    resolved = str(path.resolve())
    for table in (doc.marks, doc.key_marks):
        for key, mark in table.items():
            if mark.source == resolved:
                table[key] = Mark(str(path), mark.line, mark.column)


def validate(doc: Document, data: dict[str, Any] | None = None) -> Recipe:
    """Validate ``data`` (default: the document's) and report every problem with its mark."""
    try:
        return Recipe.model_validate(doc.data if data is None else data)
    except ValidationError as error:
        raise RecipeError(problems_from(error, doc, doc.data if data is None else data)) from None


def problems_from(error: ValidationError, doc: Document, data: Any) -> list[Problem]:
    problems = []
    for item in error.errors():
        path = _data_path(item["loc"], data)
        message = item["msg"].removeprefix("Value error, ")
        mark = doc.mark_of(path)
        if item["type"] == "extra_forbidden":
            mark = doc.key_marks.get(path, mark)
            message = f"unknown key {path[-1]!r}" + _did_you_mean(path)
        elif item["type"] == "missing":
            message = "required field is missing"
        elif "input" in item and item["type"] not in ("value_error", "assertion_error"):
            message += f" (got {_short(item['input'])})"
        problems.append(Problem(mark, format_path(path), message))
    return sorted(problems, key=lambda p: (p.mark.source, p.mark.line, p.mark.column))


def _data_path(loc: tuple[Any, ...], data: Any) -> Path_:
    """Pydantic's loc minus union-branch labels: keep only steps that exist in the data."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            path.append(part)
            if part not in node:  # a missing or unknown key: the path ends here
                break
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
    return tuple(path)


def _did_you_mean(path: Path_) -> str:
    model = _model_at(path[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(str(path[-1]), list(model.model_fields), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (allowed: {', '.join(model.model_fields)})"


def _model_at(path: Path_) -> type[BaseModel] | None:
    model: type[BaseModel] = Recipe
    for part in path:
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        found = _find_model(info.annotation)
        if found is None:
            return None
        model = found
    return model


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (found := _find_model(arg)) is not None:
                return found
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Recipe, Document]:
    """The validated recipe and its marked document (for sweep errors and provenance)."""
    doc = load_document(path, overrides)
    return validate(doc), doc
