"""The executor interface: what the CLI hands a backend (local or SLURM) and gets back.

Apart from runtime/job.py (the job-folder contract every job runs under) on purpose: that module
is in every job's cache key, and how jobs are scheduled never changes what they compute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol

from spec.stages import STAGES, Stage

# Every stage but the last is a kind of job of a plan, run by runtime/jobs/<kind>.py. The last,
# ingest, is the results layer's: the CLI runs it once the jobs have ended, and the SLURM executor
# queues it behind them as its ``finish`` callable (docs/jobs.md).
JOB_KINDS: tuple[Stage, ...] = STAGES[:-1]
FINAL_STAGE: Stage = STAGES[-1]


class JobSpec(Protocol):
    """What an executor needs of a planned job (compiler.plan.Job satisfies it)."""

    # read-only, so that a dataclass field or a property (compiler.plan.Job's) both satisfy it
    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def rel_dir(self) -> str: ...
    @property
    def deps(self) -> tuple[str, ...]: ...


@dataclass
class RunSummary:
    """What an executor reports once every job it was given has ended."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key → reason
    skipped: list[str] = field(default_factory=list)  # keys whose inputs failed
    busy: dict[str, str] = field(default_factory=dict)  # key → who else is running it
    waiting: list[str] = field(default_factory=list)  # keys whose inputs another run is making

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


class PlanSpec(Protocol):
    """What an executor needs of a compiled plan (compiler.plan.Plan satisfies it)."""

    @property
    def jobs(self) -> Mapping[str, JobSpec]: ...

    @property
    def done(self) -> AbstractSet[str]: ...

    def pending(self) -> Sequence[JobSpec]: ...


class BackendError(Exception):
    """The backend refused the plan (bad partition or account, no cluster): bad input."""


class Executor(Protocol):
    """What the CLI asks of a backend (local and SLURM). Plan-level rather than submitit's
    per-job ``submit(job) -> Handle``: docs/jobs.md says why."""

    def run(self, plan: PlanSpec) -> RunSummary | None:
        """Run every pending job of ``plan``; the outcome once all have ended, or None when the
        jobs go on without us (a detached SLURM run)."""
        ...
