"""Recipe → Plan: the DAG tokenize → train → stats → prune, keyed by content.

The pipeline's last stage, ingest, is no job of the plan: it is the results layer's, run by
`xcompile run` once the jobs have ended (and on SLURM queued behind them), docs/jobs.md.

Identical work is shared: all points with the same data share one tokenize job, points that
differ only in pruning settings share their training job, and so on. A job whose folder holds a
``results.json`` is done and is never run again.

Replicates and controls (issue 12) are more jobs of the same kinds. Model seeds arrive as sweep
points (compiler/sweep.py); ``prune.seeds`` adds prune jobs on the same model. ``controls``:
``dense_baseline`` adds a dense model of each sparse point's shape (shared with the sweep's own
dense point when there is one); for every model, ``shuffled_task`` adds prune jobs with
``control: shuffled_task`` (answers assigned at random, runtime/tasks/shuffle.py) and
``random_init`` a train job with ``control: random_init`` (trained for 0 tokens) with its own
stats and prune jobs, all on the same tokenizer.

The ground-truth suite (recipe ``groundtruth``) adds one ``groundtruth`` job per planted shape,
prune configuration and pruning seed; they read no other job, so points that differ only outside
``prune`` share them, and with ``groundtruth.only`` the plan has nothing else.
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
from spec.groundtruth import THRESHOLD
from spec.recipe import Recipe, seed_list
from spec.tasks import all_candidates


@dataclass
class Job:
    kind: str
    key: str
    config_json: str  # the resolved config (without key and meta), canonical JSON
    deps: tuple[str, ...]  # keys of the jobs this one reads
    labels: list[str] = field(default_factory=list)  # sweep points (and tasks) needing it
    control: str | None = None  # the control it was compiled for (recorded in meta); None: real

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.key[:12]}"

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

    def add(self, kind: str, body: dict[str, RawJSON | Any], deps: list[Job], label: str,
            control: str | None = None) -> Job:
        # a job reads one job of each upstream kind
        inputs = RawJSON(compose_json(
            {dep.kind: dep.rel_dir for dep in sorted(deps, key=lambda dep: dep.kind)}))
        config_json = compose_json({"kind": kind, **body, "inputs": inputs})
        key = job_key(kind, config_json, [dep.key for dep in deps], code_version(kind))
        job = self.plan.jobs.get(key)
        if job is None:
            job = self.plan.jobs[key] = Job(kind, key, config_json, tuple(d.key for d in deps),
                                            control=control)
        return self.label(job, label)

    def label(self, job: Job, label: str) -> Job:
        """Record that sweep point (or point/task) ``label`` needs ``job``."""
        if (job.key, label) not in self._labelled:
            self._labelled.add((job.key, label))
            job.labels.append(label)
        return job


# Prune settings that are not part of one prune job: the task list and the seed list fan out
# into jobs, and the means are the stats job's.
PRUNE_JOB_EXCLUDE = {"tasks", "mean_tokens", "seeds"}


@dataclass(frozen=True)
class _Model:
    """One model the plan trains and prunes: a sweep point, or a dense baseline beside one."""

    spec: Recipe
    label: str
    tokenize: Job
    control: str | None = None  # "dense_baseline" when it stands beside a sparse point


def compile_plan(recipe: Recipe, points: list[SweepPoint], workspace: Path) -> Plan:
    """Build the job DAG for every sweep point and mark what the workspace already holds."""
    recipe_hash = hashlib.sha256(recipe.model_dump_json().encode()).hexdigest()[:12]
    plan = Plan(recipe, recipe_hash, points)
    builder = _Builder(plan)
    required_tokens = RawJSON(canonical_json(all_candidates()))
    fingerprint = functools.cache(corpus_fingerprint)
    tokenizers: dict[str, Job] = {}
    models: list[_Model] = []
    suite_only = recipe.groundtruth is not None and recipe.groundtruth.only
    for point in [] if suite_only else points:
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
        models.append(_Model(spec, point.label, builder.label(tokenizers[data], point.label)))
    controls = set(recipe.controls)
    if "dense_baseline" in controls:
        # Keyed like any dense point, so one the sweep already has is shared, not duplicated
        # (the real points went first, so such a job is never marked as a control).
        models += [
            _Model(_dense_twin(m.spec), f"{m.label}/dense_baseline", m.tokenize, "dense_baseline")
            for m in list(models) if not m.spec.sparsity.dense
        ]
    for model in models:
        train, stats = _model_jobs(builder, model)
        _prune_jobs(builder, model, train, stats)
        if "shuffled_task" in controls:
            _prune_jobs(builder, model, train, stats, "shuffled_task")
        if "random_init" in controls:
            untrained, untrained_stats = _model_jobs(builder, model, "random_init")
            _prune_jobs(builder, model, untrained, untrained_stats, "random_init")
    for point in points:
        _groundtruth_jobs(builder, point)
    plan.done = _complete_jobs(workspace, plan)
    return plan


def _dense_twin(spec: Recipe) -> Recipe:
    """The same shape, data and training, every weight kept."""
    return spec.model_copy(update={"sparsity": spec.sparsity.model_copy(update={"target": 1.0})})


def _control(control: str | None) -> dict[str, str]:
    # Only controls carry the field, so the configs (and keys) of the real jobs stay as they were.
    return {} if control is None else {"control": control}


def _model_jobs(builder: _Builder, model: _Model, control: str | None = None) -> tuple[Job, Job]:
    """The train and stats jobs of ``model``; ``random_init`` trains it for 0 tokens."""
    # Sections are serialized by pydantic (fast, in field order, which the code version pins)
    # and spliced into each job's config.
    spec = model.spec
    label = model.label if control is None else f"{model.label}/{control}"
    train = builder.add(
        "train",
        {
            "seed": spec.seed,
            "data": RawJSON(spec.data.model_dump_json()),
            "model": RawJSON(spec.model.model_dump_json()),
            "train": RawJSON(spec.train.model_dump_json()),
            "sparsity": RawJSON(spec.sparsity.model_dump_json()),
            **_control(control),
        },
        [model.tokenize],
        label,
        control or model.control,
    )
    stats = builder.add(
        "stats",
        {"seed": spec.seed, "mean_tokens": spec.prune.mean_tokens},
        [model.tokenize, train],
        label,
        control or model.control,
    )
    return train, stats


def _prune_jobs(builder: _Builder, model: _Model, train: Job, stats: Job,
                control: str | None = None) -> None:
    """One prune job per task and pruning seed; ``control`` names a control's jobs."""
    spec = model.spec
    prune = RawJSON(spec.prune.model_dump_json(exclude=PRUNE_JOB_EXCLUDE))
    seeds = seed_list(spec.seed, spec.prune.seeds)
    prefix = model.label if control is None else f"{model.label}/{control}"
    for task in spec.prune.tasks:
        for seed in seeds:
            # A lone seed keeps the label (and so `plan`'s explanations) of earlier versions.
            label = f"{prefix}/{task}" + (f"/prune_seed={seed}" if len(seeds) > 1 else "")
            builder.add(
                "prune",
                {"seed": seed, "task": task, "prune": prune, **_control(control)},
                [model.tokenize, train, stats],
                label,
                control or model.control,
            )


def _groundtruth_jobs(builder: _Builder, point: SweepPoint) -> None:
    """One job per planted shape and pruning seed of the point's prune configuration."""
    spec = point.recipe
    if spec.groundtruth is None:
        return
    prune = spec.prune
    if "loss_threshold" not in prune.model_fields_set:  # the real tasks' default means nothing here
        prune = prune.model_copy(update={"loss_threshold": THRESHOLD})
    body = RawJSON(prune.model_dump_json(exclude=PRUNE_JOB_EXCLUDE))
    seeds = seed_list(spec.seed, prune.seeds)
    for shape in spec.groundtruth.shapes:
        for seed in seeds:
            label = f"{point.label}/{shape}" + (f"/prune_seed={seed}" if len(seeds) > 1 else "")
            builder.add("groundtruth", {"seed": seed, "shape": shape, "prune": body}, [], label)


def _complete_jobs(workspace: Path, plan: Plan) -> set[str]:
    """Keys whose folder holds results; one directory listing instead of a stat per job."""
    jobs_dir = workspace / JOBS_DIR
    try:
        present = {entry.name for entry in os.scandir(jobs_dir) if entry.is_dir()}
    except FileNotFoundError:
        return set()
    return {
        key
        for key, job in plan.jobs.items()
        if job.name in present and (jobs_dir / job.name / RESULTS_FILE).is_file()
    }
