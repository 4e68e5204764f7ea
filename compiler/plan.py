"""Recipe → Plan: the DAG tokenize → train → stats → prune → ingest, keyed by content.

Identical work is shared: all points with the same data share one tokenize job, points that
differ only in pruning settings share their training job, and so on. A job whose folder holds a
``results.json`` is done and is never run again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.code_version import code_version
from compiler.keys import canonical_json, job_key
from compiler.sweep import SweepPoint
from runtime.job import RESULTS_FILE
from runtime.tasks import all_candidates
from spec.recipe import Recipe

STAGES = ("tokenize", "train", "stats", "prune", "ingest")
JOBS_DIR = "jobs"


@dataclass(frozen=True)
class Job:
    kind: str
    key: str
    config: dict[str, Any]  # the resolved config written to config.json (without meta)
    deps: tuple[str, ...]  # keys of the jobs this one reads
    labels: tuple[str, ...]  # the sweep points (and tasks) that need this job

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.key[:12]}"

    @property
    def rel_dir(self) -> str:
        return f"{JOBS_DIR}/{self.name}"


@dataclass
class Plan:
    recipe: Recipe
    recipe_hash: str
    points: list[SweepPoint]
    jobs: dict[str, Job] = field(default_factory=dict)  # in dependency order
    done: set[str] = field(default_factory=set)  # keys whose results are complete

    def stage(self, kind: str) -> list[Job]:
        return [job for job in self.jobs.values() if job.kind == kind]

    def pending(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.key not in self.done]


class _Builder:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._labels: dict[str, list[str]] = {}

    def add(self, kind: str, body: dict[str, Any], deps: list[Job], label: str) -> Job:
        # ingest reads every job folder; the others read one job of each upstream kind
        inputs = {} if kind == "ingest" else {dep.kind: dep.rel_dir for dep in deps}
        config = {"kind": kind, **body, "inputs": inputs}
        key = job_key(kind, config, [dep.key for dep in deps], code_version(kind))
        if key not in self.plan.jobs:
            self._labels[key] = []
            self.plan.jobs[key] = Job(kind, key, {**config, "key": key},
                                      tuple(dep.key for dep in deps), ())
        if label not in self._labels[key]:
            self._labels[key].append(label)
        return self.plan.jobs[key]

    def finish(self) -> None:
        for key, job in self.plan.jobs.items():
            self.plan.jobs[key] = Job(job.kind, job.key, job.config, job.deps,
                                      tuple(self._labels[key]))


def compile_plan(recipe: Recipe, points: list[SweepPoint], workspace: Path) -> Plan:
    """Build the job DAG for every sweep point and mark what the workspace already holds."""
    recipe_json = recipe.model_dump(mode="json")
    plan = Plan(recipe, hashlib.sha256(canonical_json(recipe_json).encode()).hexdigest()[:12],
                points)
    builder = _Builder(plan)
    required_tokens = all_candidates()
    for point in points:
        spec = point.recipe
        data = spec.data.model_dump(mode="json")
        tokenize = builder.add("tokenize", {"data": data, "required_tokens": required_tokens},
                               [], point.label)
        train = builder.add("train", {
            "seed": spec.seed, "data": data,
            "model": spec.model.model_dump(mode="json"),
            "train": spec.train.model_dump(mode="json"),
            "sparsity": spec.sparsity.model_dump(mode="json"),
        }, [tokenize], point.label)
        prune = spec.prune.model_dump(mode="json", exclude={"tasks", "mean_tokens"})
        stats = builder.add("stats", {"seed": spec.seed, "mean_tokens": spec.prune.mean_tokens},
                            [tokenize, train], point.label)
        for task in spec.prune.tasks:
            builder.add("prune", {"seed": spec.seed, "task": task, "prune": prune},
                        [tokenize, train, stats], f"{point.label}/{task}")
    builder.add("ingest", {"recipe": recipe.name}, list(plan.jobs.values()), "all")
    builder.finish()
    plan.done = _complete_jobs(workspace, plan)
    return plan


def _complete_jobs(workspace: Path, plan: Plan) -> set[str]:
    """Keys whose folder holds results; one directory listing instead of a stat per job."""
    jobs_dir = workspace / JOBS_DIR
    try:
        present = {entry.name for entry in os.scandir(jobs_dir) if entry.is_dir()}
    except FileNotFoundError:
        return set()
    return {key for key, job in plan.jobs.items()
            if job.name in present and (jobs_dir / job.name / RESULTS_FILE).is_file()}
