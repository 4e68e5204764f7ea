"""Content keys: a job is identified by what it computes, never by when or where it ran."""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring as _encode_str
from typing import Any


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class RawJSON(str):
    """Text that is already canonical JSON, spliced as is by ``compose_json``."""


def compose_json(fields: dict[str, Any]) -> str:
    """A JSON object with keys in the given (fixed, code-defined) order; values that are
    ``RawJSON`` are spliced, others serialized canonically. Lets a plan serialize each recipe
    section once and reuse it across tens of thousands of job configs. Keys are identifiers
    chosen by the code (field and job-kind names), so they need no escaping."""
    return (
        "{"
        + ",".join(
            [
                f'"{key}":{value if isinstance(value, RawJSON) else _encode(value)}'
                for key, value in fields.items()
            ]
        )
        + "}"
    )


def _encode(value: Any) -> str:
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return canonical_json(value)


def job_key(kind: str, config_json: str, upstream_keys: list[str], code_version: str) -> str:
    """sha256 over the job's resolved config (as canonical JSON), its inputs' keys and the
    version of the code that runs it."""
    payload = "\n".join([kind, code_version, ",".join(sorted(upstream_keys)), config_json])
    return hashlib.sha256(payload.encode()).hexdigest()


def diff_configs(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable differences between two resolved configs, as ``path: old → new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                changes.append(f"{sub}: added ({_short(new[key])})")
            elif key not in new:
                changes.append(f"{sub}: removed")
            else:
                changes.extend(diff_configs(old[key], new[key], sub))
        return changes
    return [] if old == new else [f"{path}: {_short(old)} → {_short(new)}"]


def _short(value: Any) -> str:
    text = canonical_json(value)
    return text if len(text) <= 40 else text[:37] + "..."
