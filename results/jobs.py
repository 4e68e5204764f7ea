"""Read job folders (``<workspace>/jobs/<kind>-<key12>/``) as docs/jobs.md defines them.

Shared by ingest (which loads complete folders into the store), show (which prints one) and
status. A folder's state is one of ``runtime.job.STATES``: ``results.json`` (written last,
atomically) → ``done``, unreadable → ``invalid``; without results, ``runtime.job.unfinished_state``
tells running, failed, interrupted and new apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results.store import StoreError
from runtime.executors.base import JOB_KINDS
from runtime.io import read_json
from runtime.job import (
    CIRCUIT_FILE,
    CONFIG_FILE,
    DONE,
    EDGES_FILE,
    FAILED_FILE,
    INVALID,
    JOBS_DIR,
    NEW,
    RESULTS_FILE,
    JobState,
    unfinished_state,
)


@dataclass
class JobFolder:
    path: Path
    config: dict[str, Any]
    status: JobState
    results: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    raw: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def state(self) -> str:
        """The state word (``runtime.job.STATES``); ``str(status)`` says more."""
        return self.status.word

    @property
    def error(self) -> str | None:
        return self.status.error

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        return str(self.config.get("kind") or self.name.split("-", 1)[0])

    @property
    def key(self) -> str:
        return str(self.config.get("key") or self.name)

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.config.get("meta")
        return meta if isinstance(meta, dict) else {}

    def fingerprint(self) -> str:
        """What the folder's ingested content depends on. ``results.json`` is written last and
        carries ``finished_at``, so a re-run job (new metrics, new circuit) changes it too."""
        digest = hashlib.sha256()
        for name in (CONFIG_FILE, RESULTS_FILE, CIRCUIT_FILE, EDGES_FILE):
            digest.update(name.encode() + b"\0" + self.raw.get(name, b"") + b"\0")
        return digest.hexdigest()


# A job's identity leaves out what a newer version of the code changes without changing the job.
_NOT_IDENTITY = frozenset({"key", "meta", "inputs"})


def job_identities(jobs: list[JobFolder]) -> dict[str, str]:
    """Each folder's identity (folder name → 16 hex digits): its config hashed without its key
    and ``meta`` (code version, commit), with each input replaced by that input's identity. A
    job re-run by newer code — the same config and inputs, a new key — has the identity of the
    one it replaces; an input whose folder is gone stands for itself by its folder name."""
    by_name = {job.name: job for job in jobs}
    found: dict[str, str] = {}

    def identity(name: str, path: frozenset[str]) -> str:
        job = by_name.get(name)
        if job is None or name in path:
            return name
        if name not in found:
            inputs = job.config.get("inputs")
            rest = {k: v for k, v in job.config.items() if k not in _NOT_IDENTITY}
            rest["inputs"] = {role: identity(Path(str(where)).name, path | {name})
                              for role, where in sorted(inputs.items())} \
                if isinstance(inputs, dict) else inputs
            text = json.dumps(rest, sort_keys=True, default=str)
            found[name] = hashlib.sha256(text.encode()).hexdigest()[:16]
        return found[name]

    return {name: identity(name, frozenset()) for name in by_name}


class UnreadableJob(Exception):
    """A folder without a readable config.json: not a job we can name."""


def _read_json(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return obj, data


def read_job(path: Path) -> JobFolder:
    """Read one folder; raise ``UnreadableJob`` if its config is missing or broken."""
    try:
        config, config_raw = _read_json(path / CONFIG_FILE)
    except (OSError, ValueError) as error:
        raise UnreadableJob(f"{path.name}: unreadable {CONFIG_FILE}: {error}") from error
    job = JobFolder(path=path, config=config, status=JobState(NEW), raw={CONFIG_FILE: config_raw})
    if (path / RESULTS_FILE).exists():
        try:
            job.results, job.raw[RESULTS_FILE] = _read_json(path / RESULTS_FILE)
            job.status = JobState(DONE)
        except (OSError, ValueError) as error:
            # Cannot happen with the runtime's atomic write; a hand-edited or torn copy can.
            job.status = JobState(INVALID, error=f"unreadable {RESULTS_FILE}: {error}")
        for name in (CIRCUIT_FILE, EDGES_FILE):
            if (path / name).exists():
                job.raw[name] = (path / name).read_bytes()
        return job
    job.status = unfinished_state(path)
    if (path / FAILED_FILE).exists():
        with contextlib.suppress(OSError, ValueError):
            job.failed = read_json(path / FAILED_FILE)
    return job


def parse_site(site: str) -> tuple[str, int | None]:
    """``l3.mlp_neuron`` → (``mlp_neuron``, 3); ``final_in`` → (``final_in``, None)."""
    head, _, kind = site.partition(".")
    if kind and head[:1] == "l" and head[1:].isdigit():
        return kind, int(head[1:])
    return site, None


def circuit_nodes(raw: bytes) -> list[dict[str, Any]]:
    """The kept nodes of a ``circuit.json`` as ``{site, index, kind, layer}`` dicts.

    runtime/pruning/circuit.py writes a list of such dicts; a list of ``{site, index}`` or a mapping
    ``{site: [index, …]}`` is accepted too, with kind and layer derived from the site."""
    nodes = json.loads(raw).get("nodes") or []
    if isinstance(nodes, dict):
        nodes = [{"site": site, "index": i} for site, indices in nodes.items() for i in indices]
    result = []
    for node in nodes:
        kind, layer = parse_site(str(node["site"]))
        result.append(
            {
                "site": str(node["site"]),
                "index": int(node["index"]),
                "kind": node.get("kind", kind),
                "layer": node.get("layer", layer),
            }
        )
    return result


def job_dirs(workspace: Path) -> list[Path]:
    """The workspace's job folders, ``<kind>-<key12>`` of a kind plans make (not the
    ``ingest-*`` folder of a workspace from before ingest was the results layer's)."""
    root = Path(workspace) / JOBS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and p.name.split("-", 1)[0] in JOB_KINDS)


def find_job(workspace: Path, prefix: str) -> Path:
    """The one job folder whose name or full key starts with ``prefix``."""
    prefix = prefix.strip()
    if not prefix:
        raise StoreError("give a job key or folder name (a prefix is enough)")
    matches = []
    for path in job_dirs(workspace):
        key = path.name.split("-", 1)[-1]
        if path.name.startswith(prefix) or key.startswith(prefix):
            matches.append(path)
        elif len(prefix) > len(key):
            # A longer prefix than key12 can still match the full key in config.json.
            try:
                if str(read_job(path).config.get("key", "")).startswith(prefix):
                    matches.append(path)
            except UnreadableJob:
                pass
    if not matches:
        raise StoreError(f"no job matches {prefix!r} in {Path(workspace) / JOBS_DIR}")
    if len(matches) > 1:
        raise AmbiguousJob(prefix, matches)
    return matches[0]


class AmbiguousJob(StoreError):
    """More than one job folder matches a prefix; ``matches`` are their paths, sorted."""

    def __init__(self, prefix: str, matches: list[Path]) -> None:
        self.matches = sorted(matches)
        names = ", ".join(p.name for p in self.matches[:5]) + (" …" if len(matches) > 5 else "")
        super().__init__(f"{prefix!r} is ambiguous: {len(matches)} jobs match ({names})")
