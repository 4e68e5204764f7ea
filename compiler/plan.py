"""Recipe → Plan: the DAG tokenize → train → stats → prune → ingest, keyed by content.

Identical work is shared: all points with the same data share one tokenize job, points that
differ only in pruning settings share their training job, and so on. A job whose folder holds a
``results.json`` is done and is never run again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.code_version import code_version
from compiler.keys import RawJSON, canonical_json, compose_json, job_key
from compiler.sweep import SweepPoint
from runtime.job import JOBS_DIR, RESULTS_FILE
from spec.corpora import corpus_fingerprint
from spec.recipe import Recipe
from spec.tasks import all_candidates


@dataclass
class Job:
    kind: str
    key: str
    config_json: str  # the resolved config (without key and meta), canonical JSON
    deps: tuple[str, ...]  # keys of the jobs this one reads
    labels: list[str] = field(default_factory=list)  # sweep points (and tasks) needing it

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.key[:12]}"

    @property
    def runs_after_failures(self) -> bool:
        """Ingest loads whatever finished, so a failed upstream job must not hold it back."""
        return self.kind == "ingest"

    @property
    def rel_dir(self) -> str:
        return f"{JOBS_DIR}/{self.name}"

    @property
    def config(self) -> dict[str, Any]:
        """The config written to config.json; parsed on demand, as most jobs never need it."""
        return {**json.loads(self.config_json), "key": self.key}


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
        self._labelled: set[tuple[str, str]] = set()

    def add(self, kind: str, body: dict[str, RawJSON | Any], deps: list[Job], label: str) -> Job:
        # ingest reads every job folder; the others read one job of each upstream kind
        inputs = RawJSON("{}" if kind == "ingest" else compose_json(
            {dep.kind: dep.rel_dir for dep in sorted(deps, key=lambda dep: dep.kind)}))
        config_json = compose_json({"kind": kind, **body, "inputs": inputs})
        key = job_key(kind, config_json, [dep.key for dep in deps], code_version(kind))
        job = self.plan.jobs.get(key)
        if job is None:
            job = self.plan.jobs[key] = Job(kind, key, config_json, tuple(d.key for d in deps))
        return self.label(job, label)

    def label(self, job: Job, label: str) -> Job:
        """Record that sweep point (or point/task) ``label`` needs ``job``."""
        if (job.key, label) not in self._labelled:
            self._labelled.add((job.key, label))
            job.labels.append(label)
        return job


def compile_plan(recipe: Recipe, points: list[SweepPoint], workspace: Path) -> Plan:
    """Build the job DAG for every sweep point and mark what the workspace already holds."""
    recipe_hash = hashlib.sha256(recipe.model_dump_json().encode()).hexdigest()[:12]
    plan = Plan(recipe, recipe_hash, points)
    builder = _Builder(plan)
    required_tokens = RawJSON(canonical_json(all_candidates()))
    fingerprint = functools.cache(corpus_fingerprint)
    tokenizers: dict[str, Job] = {}
    for point in points:
        # Sections are serialized once per point by pydantic (fast, in field order, which the
        # code version pins) and spliced into each job's config.
        spec = point.recipe
        data = RawJSON(spec.data.model_dump_json())
        if data not in tokenizers:  # most sweeps share one corpus: key its tokenizer once
            tokenizers[data] = builder.add(
                "tokenize",
                {
                    "data": data,
                    "required_tokens": required_tokens,
                    "corpus_version": fingerprint(spec.data.corpus),
                },
                [],
                point.label,
            )
        tokenize = builder.label(tokenizers[data], point.label)
        train = builder.add(
            "train",
            {
                "seed": spec.seed,
                "data": data,
                "model": RawJSON(spec.model.model_dump_json()),
                "train": RawJSON(spec.train.model_dump_json()),
                "sparsity": RawJSON(spec.sparsity.model_dump_json()),
            },
            [tokenize],
            point.label,
        )
        prune = RawJSON(spec.prune.model_dump_json(exclude={"tasks", "mean_tokens"}))
        stats = builder.add(
            "stats",
            {"seed": spec.seed, "mean_tokens": spec.prune.mean_tokens},
            [tokenize, train],
            point.label,
        )
        for task in spec.prune.tasks:
            builder.add(
                "prune",
                {"seed": spec.seed, "task": task, "prune": prune},
                [tokenize, train, stats],
                f"{point.label}/{task}",
            )
    builder.add("ingest", {"recipe": recipe.name}, list(plan.jobs.values()), "all")
    plan.done = _complete_jobs(workspace, plan)
    return plan


def _complete_jobs(workspace: Path, plan: Plan) -> set[str]:
    """Keys whose folder holds results; one directory listing instead of a stat per job."""
    jobs_dir = workspace / JOBS_DIR
    try:
        present = {entry.name for entry in os.scandir(jobs_dir) if entry.is_dir()}
    except FileNotFoundError:
        return set()
    # ingest is idempotent and cheap, and must see jobs that finish later: it never counts as done
    return {
        key
        for key, job in plan.jobs.items()
        if job.kind != "ingest"
        and job.name in present
        and (jobs_dir / job.name / RESULTS_FILE).is_file()
    }
