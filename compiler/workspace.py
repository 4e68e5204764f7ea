"""The workspace on disk: job folders, resolved recipes, and why a job (re-)runs.

```
<workspace>/jobs/<kind>-<key12>/{config.json, command, ...}
<workspace>/recipes/<name>-<hash>.yaml     the resolved recipe of each run
<workspace>/plans/<name>.json              last run's key per (kind, sweep point)
```
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from compiler.code_version import ROOT, code_version
from compiler.keys import diff_configs
from compiler.plan import Plan
from runtime.io import read_json, write_atomic, write_json_atomic
from runtime.job import COMMAND_FILE, CONFIG_FILE, FAILED, JOBS_DIR, NEW, unfinished_state

PACKAGES = ("torch", "numpy", "tokenizers", "duckdb", "pydantic", "submitit", "xcompile")


def job_command(job_dir: Path) -> str:
    return f"{shlex.quote(sys.executable)} -m runtime.job {shlex.quote(str(job_dir))}"


def git_state() -> tuple[str | None, bool | None]:
    """The commit of the code that compiled the plan, and whether its tree was dirty."""
    try:
        return _git("rev-parse", "HEAD"), _git("status", "--porcelain") != ""
    except (OSError, subprocess.SubprocessError):
        return None, None


def _git(*args: str) -> str:
    run = subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True, timeout=5
    )
    return run.stdout.strip()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def materialize(plan: Plan, workspace: Path) -> None:
    """Write every pending job's folder (config.json with provenance, command), the resolved
    recipe and the plan record. Finished folders are left exactly as they are."""
    commit, dirty = git_state()
    provenance = {
        "recipe": plan.recipe.name,
        "recipe_hash": plan.recipe_hash,
        "git_commit": commit,
        "git_dirty": dirty,
        "package_versions": package_versions(),
    }
    points = {point.label: point.values for point in plan.points}
    for job in plan.pending():
        job_dir = workspace / job.rel_dir
        label = job.labels[0].split("/")[0]
        meta = {
            **provenance,
            "sweep_point": points.get(label, {}),
            "labels": list(job.labels),
            "code_version": code_version(job.kind),
            **({"control": job.control} if job.control else {}),
        }
        # Not fsynced: thousands of them would cost seconds, and every run rewrites the files
        # of jobs that have not finished, so a file lost in a crash comes back.
        write_json_atomic(job_dir / CONFIG_FILE, {**job.config, "meta": meta}, durable=False)
        command = (job_command(job_dir) + "\n").encode()
        write_atomic(job_dir / COMMAND_FILE, command, durable=False)
    recipe_yaml = yaml.safe_dump(plan.recipe.model_dump(mode="json"), sort_keys=False)
    recipe_copy = workspace / "recipes" / f"{plan.recipe.name}-{plan.recipe_hash}.yaml"
    write_atomic(recipe_copy, recipe_yaml.encode())
    record = {f"{job.kind} {label}": job.key for job in plan.jobs.values() for label in job.labels}
    write_json_atomic(workspace / "plans" / f"{plan.recipe.name}.json", record)


def reasons(plan: Plan, workspace: Path) -> dict[str, str]:
    """For each job that will run, why: new, which fields changed, code changed, failed,
    interrupted (and where it resumes), running now."""
    record_path = workspace / "plans" / f"{plan.recipe.name}.json"
    previous: dict[str, str] = read_json(record_path) if record_path.is_file() else {}
    why: dict[str, str] = {}
    for job in plan.pending():
        state = unfinished_state(workspace / job.rel_dir)
        if state.word == FAILED:
            why[job.key] = f"failed last time: {state.error}"
            continue
        if state.word != NEW:  # running now, or interrupted (and where it resumes)
            why[job.key] = str(state)
            continue
        old_keys = {
            previous[f"{job.kind} {label}"]
            for label in job.labels
            if f"{job.kind} {label}" in previous
        }
        why[job.key] = _changed(job.config, job.kind, old_keys, workspace)
    return why


def _changed(config: dict[str, Any], kind: str, old_keys: set[str], workspace: Path) -> str:
    for old_key in sorted(old_keys):
        old_path = workspace / JOBS_DIR / f"{kind}-{old_key[:12]}" / CONFIG_FILE
        if not old_path.is_file():
            continue
        old = json.loads(old_path.read_text(encoding="utf-8"))
        old_code = old.get("meta", {}).get("code_version")
        strip = ("key", "meta")
        changes = diff_configs(
            {k: v for k, v in old.items() if k not in strip},
            {k: v for k, v in config.items() if k not in strip},
        )
        upstream = sorted(
            {c.split(":")[0].removeprefix("inputs.") for c in changes if c.startswith("inputs.")}
        )
        changes = [c for c in changes if not c.startswith("inputs.")]
        if old_code != code_version(kind):
            changes.append(f"code of the {kind} job changed")
        if changes:
            return "changed: " + "; ".join(changes[:4]) + (" …" if len(changes) > 4 else "")
        if upstream:
            return f"upstream changed: {', '.join(upstream)}"
    return "new"
