"""Expected wall time of a plan's pending jobs, timed from the jobs this workspace already ran.

Nothing is invented: every figure is scaled from past job folders. A finished job's
``results.json`` holds ``started_at`` and ``finished_at`` (``runtime.job.run_job``) and its
``lock`` the ``since`` at which the runner took the lock, just before it started the job's
process, so a past job's wall time splits in two: start-up (``since`` → ``started_at``: the
interpreter and the imports of torch, over a second per job) and run time (``started_at`` →
``finished_at``). A pending job's estimate is its stage's median start-up plus a run time of:

- train: its training FLOPs (``compiler.estimate``, 6·N·D plus attention) times the seconds per
  FLOP of the past train jobs of the nearest parameter count (their median). Nearest, because
  a small model runs at a far lower FLOP rate than a large one. A job whose last attempt
  resumed from a checkpoint is left out: that attempt trained only part of its tokens.
- prune: its work, parameters × prune steps × pairs per step × search trials (the trials are
  optimised together in one batched pass), times the seconds per unit of the past prune jobs of
  the nearest parameter count. The work is an upper bound (``settle_steps`` can end trials
  early), so a job whose trials settle sooner than the past ones' runs faster than estimated.
- any other stage (tokenize, stats, groundtruth) and ``random_init`` train controls
  (which train nothing): the median run time of the past jobs of that stage.

Past jobs that ran on this host are used when there are any of the kind; otherwise those of
other hosts (``Stage.hosts`` names them, so ``plan`` can say so). With none at all the stage
has no estimate, and says there is nothing to time from. The figures carry whatever load the
past jobs ran under; an interrupted job is estimated in full, though it resumes; and the total
is the jobs one after another, as the local executor runs them (SLURM runs a stage at once).
"""

from __future__ import annotations

import functools
import json
import math
import os
import socket
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from compiler.estimate import job_parameters, job_training_flops
from compiler.plan import Plan
from runtime.job import CONFIG_FILE, JOBS_DIR, LOCK_FILE, RESULTS_FILE, log_tail

RESUMED_MARK = "resuming from"  # runtime/training/train.py prints it when it resumes
RANDOM_INIT = "random_init"


@dataclass(frozen=True)
class Sample:
    """One finished job, as timing reads it."""

    kind: str  # its timing class: the stage, or "train/random_init"
    run_s: float
    startup_s: float | None  # None: no lock record of this attempt
    host: str | None
    params: int | None  # the model's parameters (train and prune)
    work: float | None  # FLOPs (train) or prune work; None where the stage is timed by median


@dataclass(frozen=True)
class JobTime:
    seconds: float | None
    reason: str  # where the figure comes from, or why there is none


@dataclass
class Stage:
    kind: str
    to_run: int = 0
    seconds: float | None = 0.0  # None: some job of the stage could not be timed
    reason: str | None = None  # why not
    hosts: set[str] = field(default_factory=set)  # hosts whose jobs timed it, when not this one


@dataclass
class PlanTiming:
    jobs: dict[str, JobTime]  # pending job key → estimate
    stages: dict[str, Stage]  # only stages with jobs to run

    @property
    def total_s(self) -> float | None:
        """The pending jobs in all, one after another (as the local executor runs them); None
        when a stage has no estimate."""
        if any(stage.seconds is None for stage in self.stages.values()):
            return None
        return sum(stage.seconds or 0.0 for stage in self.stages.values())

    @property
    def timed_s(self) -> float:
        """The stages that do have an estimate: a lower bound when some have none."""
        return sum(stage.seconds or 0.0 for stage in self.stages.values())


def time_plan(plan: Plan, workspace: Path, host: str | None = None) -> PlanTiming:
    """An estimate for every pending job of ``plan``, and per stage, from ``workspace``'s past
    jobs; ``host`` (default: this machine's name) is the host whose jobs come first."""
    host = socket.gethostname() if host is None else host
    pending = plan.pending()
    by_dir = {job.rel_dir: job for job in plan.jobs.values()}

    @functools.cache
    def train_config_at(rel: str) -> dict[str, Any] | None:
        return by_dir[rel].config if rel in by_dir else _read(workspace / rel / CONFIG_FILE)

    def train_config(config: dict[str, Any]) -> dict[str, Any] | None:
        """The config of the train job a prune job reads: the plan's own, or the folder's."""
        rel = config.get("inputs", {}).get("train")
        return None if rel is None else train_config_at(rel)

    past = _Past(past_samples(workspace, {job.kind for job in pending}, train_config), host)
    timing = PlanTiming({}, {})
    for job in pending:
        estimate, hosts = past.time(job.kind, job.config, train_config)
        timing.jobs[job.key] = estimate
        stage = timing.stages.setdefault(job.kind, Stage(job.kind))
        stage.to_run += 1
        stage.hosts |= hosts
        if estimate.seconds is None:
            stage.seconds, stage.reason = None, stage.reason or estimate.reason
        elif stage.seconds is not None:
            stage.seconds += estimate.seconds
    return timing


class _Past:
    """The past jobs grouped as the estimates use them: per timing class, this host's first."""

    def __init__(self, samples: list[Sample], host: str) -> None:
        self.host = host
        classes: dict[str, list[Sample]] = {}
        for sample in samples:
            classes.setdefault(sample.kind, []).append(sample)
        self.classes = {kind: _prefer_host(group, host) for kind, group in classes.items()}
        stages: dict[str, list[Sample]] = {}
        for sample in samples:
            stages.setdefault(sample.kind.split("/")[0], []).append(sample)
        self.startup = {}  # per stage: the median start-up of its jobs (0 where none is known)
        for stage, group in stages.items():
            startups = [s.startup_s for s in _prefer_host(group, host) if s.startup_s is not None]
            self.startup[stage] = statistics.median(startups) if startups else 0.0

    def time(
        self, stage: str, config: dict[str, Any],
        train_config: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> tuple[JobTime, set[str]]:
        """A pending job's estimate, and the other hosts whose jobs gave it."""
        kind = _timing_class(config)
        name = _describe(kind)
        same = self.classes.get(kind, [])
        if not same:
            return JobTime(None, f"no past {name} job in this workspace to time from"), set()
        params, work = _size_and_work(config, train_config)
        if work is None:  # timed by the median of its stage
            run, used = statistics.median(s.run_s for s in same), same
            reason = f"median of {len(same)} past {name} job(s)"
        else:
            scaled = [s for s in same if s.params and s.work]
            if not scaled or not params:
                return JobTime(None, f"no past {name} job in this workspace to scale from (none "
                               "ran in one go with a known model size)"), set()
            # the past jobs of the model size nearest to this one's, on a log scale
            distances = [abs(math.log((s.params or 1) / params)) for s in scaled]
            used = [s for s, d in zip(scaled, distances, strict=True) if d == min(distances)]
            per_unit = statistics.median(s.run_s / (s.work or 1.0) for s in used)
            run = work * per_unit
            unit = "FLOP" if stage == "train" else "unit of prune work"
            reason = (f"{len(used)} past {name} job(s) of {used[0].params:,} parameters: "
                      f"{per_unit:.3g} s per {unit}")
        hosts = {s.host or "?" for s in used if s.host != self.host}
        return JobTime(self.startup.get(stage, 0.0) + run, reason), hosts


def past_samples(
    workspace: Path, kinds: set[str],
    train_config: Callable[[dict[str, Any]], dict[str, Any] | None],
) -> list[Sample]:
    """Every finished job of ``kinds`` in the workspace that says when it started and ended."""
    try:
        entries = [entry for entry in os.scandir(workspace / JOBS_DIR) if entry.is_dir()]
    except FileNotFoundError:
        return []
    samples = []
    for entry in entries:
        if entry.name.rsplit("-", 1)[0] not in kinds:
            continue
        sample = _sample(Path(entry.path), train_config)
        if sample is not None:
            samples.append(sample)
    return samples


def _sample(
    job_dir: Path, train_config: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> Sample | None:
    results, config = _read(job_dir / RESULTS_FILE), _read(job_dir / CONFIG_FILE)
    if results is None or config is None:
        return None
    started, finished = results.get("started_at"), results.get("finished_at")
    if not _is_number(started) or not _is_number(finished) or finished < started:
        return None
    lock = _read(job_dir / LOCK_FILE) or {}
    since = lock.get("since")
    # A lock taken after the job started is a later probe or hand run, not this attempt's.
    startup = started - since if _is_number(since) and since <= started else None
    params, work = _size_and_work(config, train_config)
    if config.get("kind") == "train" and work and RESUMED_MARK in log_tail(job_dir, 50):
        work = None  # its last attempt trained only part of the tokens: not a rate
    host = lock.get("host")
    return Sample(_timing_class(config), finished - started, startup,
                  host if isinstance(host, str) else None, params, work)


def _size_and_work(
    config: dict[str, Any], train_config: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> tuple[int | None, float | None]:
    """The model's parameters and the job's work, for the stages timed by scaling."""
    try:
        if config.get("kind") == "train":
            if config.get("control") == RANDOM_INIT:
                return None, None
            return job_parameters(config), job_training_flops(config)
        if config.get("kind") == "prune":
            model = train_config(config)
            if model is None:
                return None, None
            params, prune = job_parameters(model), config["prune"]
            return params, float(params * prune["steps"] * prune["batch_size"]
                                 * prune["search"]["trials"])
    except (KeyError, TypeError, ValueError):  # a past config of another shape: not scaled
        return None, None
    return None, None


def _timing_class(config: dict[str, Any]) -> str:
    if config.get("kind") == "train" and config.get("control") == RANDOM_INIT:
        return f"train/{RANDOM_INIT}"
    return str(config.get("kind"))


def _describe(kind: str) -> str:
    return f"{RANDOM_INIT} train" if kind == f"train/{RANDOM_INIT}" else kind


def _prefer_host(samples: list[Sample], host: str) -> list[Sample]:
    here = [s for s in samples if s.host == host]
    return here or samples


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
