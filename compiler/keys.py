"""Content keys: a job is identified by what it computes, never by when or where it ran."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def job_key(kind: str, config: dict[str, Any], upstream_keys: list[str], code_version: str) -> str:
    """sha256 over the job's resolved config, its inputs' keys and the code that runs it."""
    payload = {"kind": kind, "config": config, "inputs": sorted(upstream_keys),
               "code": code_version}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


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
