"""Queue a whole plan on SLURM through submitit: one job array per stage, chained by dependencies.

Each job runs its folder in-process (``slurm_entry.RunJob``), logging to the folder's ``log.txt``;
submitit's pickles and its own logs live under ``<workspace>/slurm/<kind>/``. Each submitted job
records its SLURM id in ``<job_dir>/slurm.json``, which is how a later ``submit`` (never a job
already queued or running), ``status`` and ``cancel`` find it again.

Why ``afterany`` between the stage arrays rather than ``afterok``: a stage is one array, and a
dependency on an array waits for all of its tasks. With ``afterok``, one failed training job of a
sweep would cancel the stats and prune arrays of every model (``kill_invalid_depend``), which
breaks "the rest of the plan continues where it can". With ``afterany`` the downstream array
starts once every upstream job has ended, whatever the outcome, and each job checks that its own
inputs are complete (``results.json``) before running, skipping itself otherwise. So prune never
starts before its model trained, and a failure only costs its own dependents. A requeued training
job is pending again, not ended, so its dependents keep waiting through preemptions.

The whole submission is atomic: every array is submitted held (``--hold``) and released only once
all were accepted; if any ``sbatch`` fails (bad partition or account, Ctrl-C) the arrays already
submitted are cancelled before they ran.

The executor runs no code of the layers above it, but it can queue one: ``finish(workspace)``,
handed down by the CLI (``results.ingest.ingest``, pickled by reference), runs as one more SLURM
job of the last stage (``ingest``) behind everything the submission waits for, whatever its
outcome. So the store fills in on the cluster even when nobody follows the run (``--detach``,
Ctrl-C). It is queued whenever something new was, and is no job of the plan: `status` does not
list it and `cancel` leaves it, to load whatever finished; its log is submitit's, under
``<workspace>/slurm/ingest/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import SlurmJob

from runtime.executors.base import (
    FINAL_STAGE,
    JOB_KINDS,
    BackendError,
    JobSpec,
    PlanSpec,
    RunSummary,
)
from runtime.executors.slurm_entry import RunCheckpointableJob, RunJob
from runtime.io import read_json
from runtime.job import (
    FAILED_FILE,
    PROJECT_ROOT,
    RESULTS_FILE,
    is_complete,
    record_failure,
)
from spec.recipe import MULTI_PROCESS_STAGES, ResourcesSpec, SlurmSpec, SlurmStage

RECORD_FILE = "slurm.json"
SUBMITIT_DIR = "slurm"
CHECKPOINTABLE = frozenset({"train"})  # resume from their own checkpoints when requeued
DEFAULT_TIME_MIN = 24 * 60  # submitit's own default (5 min) would kill any real training job
POLL_S = 2.0
# A just-submitted job can be missing from sacct for a moment; past this it is really unknown.
UNKNOWN_GRACE_S = 60.0
COMMAND_TIMEOUT_S = 60
# sacct states (first word: "CANCELLED by 0") in which a job may still run.
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
                    "COMPLETING", "CONFIGURING", "SUSPENDED", "PREEMPTED", "SIGNALING",
                    "STAGE_OUT", "STOPPED"})
# Our own states, beside SLURM's, in `status`.
NOT_SUBMITTED, SKIPPED, COMPLETED = "NOT_SUBMITTED", "SKIPPED", "COMPLETED"

# recipe field → submitit parameter (AutoExecutor names)
_PARAMETERS = {
    "partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos",
    "time": "timeout_min", "nodes": "nodes", "gpus_per_node": "gpus_per_node",
    "tasks_per_node": "tasks_per_node", "cpus_per_task": "cpus_per_task", "mem": "slurm_mem",
    "constraint": "slurm_constraint", "array_parallelism": "slurm_array_parallelism",
    "setup": "slurm_setup", "additional": "slurm_additional_parameters",
}
# Fields that set how many processes a job runs: a recipe-wide value applies to the
# multi-process stages only (the spec refuses more than one in another stage's override).
_PROCESS_LAYOUT = frozenset({"nodes", "tasks_per_node"})
# With several tasks, a rank that dies would leave the others waiting in a collective until
# distributed.COLLECTIVE_TIMEOUT; srun ends the whole step instead.
_MULTI_TASK_SRUN_ARGS = ("--kill-on-bad-exit=1",)


class SlurmError(BackendError):
    """Submitting to or asking SLURM failed (bad partition or account, no cluster): one line."""


@dataclass
class Handle:
    """A submitted job, future-like: ``state`` and ``done()`` as of the last poll."""

    key: str
    kind: str
    name: str
    job_dir: Path
    job: submitit.Job[Any]
    submitted_at: float

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    @property
    def state(self) -> str:
        state = self.job.watcher.get_state(self.job_id, mode="cache")
        if state == "UNKNOWN" and time.time() - self.submitted_at < UNKNOWN_GRACE_S:
            return "PENDING"  # sbatch accepted it; accounting has not heard of it yet
        return state

    def done(self) -> bool:
        return _base(self.state) not in ACTIVE | {"UNKNOWN"}

    def result(self) -> dict[str, Any]:
        """The job's ``results.json``; never waits (``follow`` does the waiting)."""
        if not is_complete(self.job_dir):
            raise RuntimeError(f"{self.name} has no results (SLURM job {self.job_id}: "
                               f"{self.state})")
        return dict(read_json(self.job_dir / RESULTS_FILE))


@dataclass
class Submission:
    workspace: Path
    handles: dict[str, Handle] = field(default_factory=dict)  # key → every job to follow
    submitted: list[str] = field(default_factory=list)  # keys queued by this call
    in_flight: list[str] = field(default_factory=list)  # keys still queued from an earlier call
    arrays: dict[str, str] = field(default_factory=dict)  # kind → SLURM array id
    finish: submitit.Job[Any] | None = None  # the queued ``finish(workspace)``, if any


def stage_parameters(slurm: SlurmSpec | None, kind: str) -> dict[str, Any]:
    """submitit parameters of one stage: its ``stages`` override, else the recipe-wide value.

    A train job runs ``tasks_per_node`` processes per node (default: one per GPU when there are
    several), which train data-parallel; every other stage runs one process.
    """
    base = slurm or SlurmSpec()
    override = next((stage for name, stage in base.stages.items() if name == kind), SlurmStage())
    multi_process = kind in MULTI_PROCESS_STAGES
    params: dict[str, Any] = {"timeout_min": DEFAULT_TIME_MIN}
    for name, submitit_name in _PARAMETERS.items():
        value = getattr(override, name)
        if value is None and (multi_process or name not in _PROCESS_LAYOUT):
            value = getattr(base, name)
        if value is not None:
            params[submitit_name] = value
    if not multi_process:
        params["tasks_per_node"] = 1
        return params
    gpus = params.get("gpus_per_node", 0)
    tasks = params.setdefault("tasks_per_node", gpus if gpus > 1 else 1)
    if tasks * params.get("nodes", 1) > 1:
        params["slurm_srun_args"] = list(_MULTI_TASK_SRUN_ARGS)
    return params


def job_name(workspace: Path, kind: str) -> str:
    """The SLURM job name of a stage, unique per workspace (so squeue shows whose it is)."""
    tag = hashlib.sha256(str(workspace.resolve()).encode()).hexdigest()[:8]
    return f"xc-{kind}-{tag}"


class SlurmExecutor:
    def __init__(self, workspace: Path, resources: ResourcesSpec,
                 say: Callable[[str], None] = print, detach: bool = False,
                 finish: Callable[[Path], object] | None = None) -> None:
        """``finish(workspace)`` is queued behind every submission that queues anything (see
        the module docstring); it must be importable on the nodes, like a module's function."""
        self.workspace = workspace.resolve()
        self.slurm = resources.slurm
        self.say, self.detach, self.finish = say, detach, finish

    def run(self, plan: PlanSpec) -> RunSummary | None:
        """The ``Executor`` protocol: ``submit`` the plan, then ``follow`` it unless detached.
        Ctrl-C while following only detaches (None): the jobs keep running on the cluster and
        `xcompile status` picks them up."""
        submission = self.submit(plan)
        arrays = ", ".join(f"{kind} {array}" for kind, array in submission.arrays.items())
        self.say(f"queued {len(submission.submitted)} job(s) ({arrays or 'no new arrays'}); "
                 f"{len(submission.in_flight)} already queued or running")
        if self.detach:
            self.say("detached: follow with `xcompile status RECIPE`")
            return None
        try:
            return self.follow(submission,
                               lambda handle, state: self.say(f"{handle.name}: {state}"))
        except KeyboardInterrupt:
            self.say("detached: the jobs keep running; follow with `xcompile status RECIPE`")
            return None

    def submit(self, plan: PlanSpec) -> Submission:
        """Queue every pending job of ``plan`` (a compiler.plan.Plan, materialized) at once.

        Cached jobs and jobs still queued or running from an earlier submission are not
        submitted again; the new arrays depend on the latter instead. Raises ``SlurmError``,
        leaving nothing of this call queued, if SLURM refuses any array.
        """
        pending = plan.pending()
        submission = Submission(self.workspace)
        # dependency ids: an earlier job by its own id, a new array by the array's id
        upstream: dict[str, str] = {}
        for key, handle in _recorded(self.workspace, pending).items():
            if not handle.done():
                submission.handles[key] = handle
                submission.in_flight.append(key)
                upstream[key] = handle.job_id
        new: list[Handle] = []
        kind = ""
        try:
            for kind in JOB_KINDS:
                jobs = [job for job in pending if job.kind == kind and job.key not in upstream]
                if not jobs:
                    continue
                handles = self._submit_stage(kind, jobs, _dependencies(jobs, upstream),
                                             [self._needs(plan, job) for job in jobs])
                new += handles
                submission.arrays[kind] = handles[0].job_id.split("_")[0]
                upstream.update({h.key: submission.arrays[kind] for h in handles})
            if new and self.finish is not None:
                # a new one whenever anything new was queued: one still queued from an earlier
                # submission does not wait for the new arrays
                kind = FINAL_STAGE
                after = "afterany:" + ":".join(sorted(set(upstream.values())))
                submission.finish = self._executor(kind, after).submit(self.finish,
                                                                       self.workspace)
                submission.arrays[kind] = str(submission.finish.job_id)
            for handle in new:
                _write_record(handle)
            if submission.arrays:
                _scontrol("release", list(submission.arrays.values()))
        except BaseException as error:  # Ctrl-C too: nothing may stay held
            _rollback(new, submission.arrays.values())
            if isinstance(error, SlurmError | submitit.core.utils.FailedJobError | ValueError
                          | OSError | subprocess.SubprocessError):
                raise SlurmError(f"SLURM refused the {kind} array: {_one_line(error)} "
                                 "(nothing was queued)") from error
            raise
        for handle in new:
            submission.handles[handle.key] = handle
            submission.submitted.append(handle.key)
        return submission

    def _needs(self, plan: PlanSpec, job: JobSpec) -> list[str]:
        return [str(self.workspace / plan.jobs[dep].rel_dir) for dep in job.deps]

    def _submit_stage(self, kind: str, jobs: Sequence[JobSpec], dependency: str | None,
                      needs: Sequence[list[str]]) -> list[Handle]:
        executor = self._executor(kind, dependency)
        entry = RunCheckpointableJob() if kind in CHECKPOINTABLE else RunJob()
        with executor.batch():
            futures = [executor.submit(entry, str(self.workspace / job.rel_dir), job_needs)
                       for job, job_needs in zip(jobs, needs, strict=True)]
        now = time.time()
        return [Handle(job.key, job.kind, job.name, self.workspace / job.rel_dir, future, now)
                for job, future in zip(jobs, futures, strict=True)]

    def _executor(self, kind: str, dependency: str | None) -> submitit.AutoExecutor:
        """A submitit executor for ``kind``'s jobs: its resources, held, after ``dependency``."""
        executor = submitit.AutoExecutor(folder=self.workspace / SUBMITIT_DIR / kind,
                                         cluster="slurm")
        params = stage_parameters(self.slurm, kind)
        # the job's Python imports this checkout, installed or not
        root = shlex.quote(str(PROJECT_ROOT))
        setup = [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}",
                 *params.pop("slurm_setup", [])]
        # held until the whole plan is queued; requeueable even where JobRequeue=0, since every
        # job is safe to run again (results are written last; training resumes)
        additional = {**params.pop("slurm_additional_parameters", {}), "hold": True,
                      "requeue": True}
        if dependency:
            params["slurm_dependency"] = dependency
        executor.update_parameters(name=job_name(self.workspace, kind), slurm_setup=setup,
                                   slurm_additional_parameters=additional, **params)
        return executor

    def follow(self, submission: Submission, on_update: Callable[[Handle, str], None] | None = None,
               poll_s: float = POLL_S, timeout_s: float | None = None) -> RunSummary:
        """Poll SLURM accounting until every job of ``submission`` has ended; their outcome.

        ``on_update(handle, state)`` is called on every state change. A job that ended without
        results gets a ``failed.json`` naming SLURM's reason (e.g. ``CANCELLED by 0``) unless the
        job wrote its own; one whose inputs failed counts as skipped. Bounded by the jobs
        themselves; ``timeout_s`` (for tests) raises ``TimeoutError`` instead of waiting longer.
        """
        summary = RunSummary()
        remaining = dict(submission.handles)
        seen: dict[str, str] = {}
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while remaining:
            _refresh(remaining.values())
            for key, handle in list(remaining.items()):
                state = handle.state
                if state != seen.get(key):
                    seen[key] = state
                    if on_update is not None:
                        on_update(handle, state)
                if not handle.done():
                    continue
                del remaining[key]
                outcome = settle(handle, state)
                if outcome == COMPLETED:
                    summary.done.append(key)
                elif outcome == SKIPPED:
                    summary.skipped.append(key)
                else:
                    summary.failed[key] = outcome
            if remaining:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{len(remaining)} SLURM job(s) still running after "
                                       f"{timeout_s:.0f}s")
                time.sleep(poll_s)
        return summary

    def status(self, plan: PlanSpec) -> dict[str, str]:
        return status(self.workspace, plan)

    def cancel(self, plan: PlanSpec) -> list[str]:
        return cancel(self.workspace, plan)


def settle(handle: Handle, state: str) -> str:
    """The outcome of an ended job: COMPLETED, SKIPPED (inputs incomplete) or the failure reason,
    recorded in ``failed.json`` when the job could not write one itself."""
    if is_complete(handle.job_dir):
        return COMPLETED
    if _base(state) == "COMPLETED":
        return SKIPPED  # RunJob found an input missing and did nothing
    failed = handle.job_dir / FAILED_FILE
    own = _own_failure(failed, handle.submitted_at) if _base(state) == "FAILED" else None
    if own is not None:
        return own
    # killed from outside (scancel, time limit, memory) or died before running the job
    reason = f"{state} (SLURM job {handle.job_id}; submitit log: {handle.job.paths.stderr})"
    record_failure(handle.job_dir, reason)
    return reason


def status(workspace: Path, plan: PlanSpec) -> dict[str, str]:
    """key → state: COMPLETED (results present), NOT_SUBMITTED, SKIPPED, or SLURM's state from
    accounting (PENDING, RUNNING, FAILED, "CANCELLED by 0", TIMEOUT, …)."""
    workspace = workspace.resolve()
    states = {job.key: COMPLETED if job.key in plan.done else NOT_SUBMITTED
              for job in plan.jobs.values()}
    handles = _recorded(workspace, [job for job in plan.jobs.values() if job.key not in plan.done])
    for key, handle in handles.items():
        if is_complete(handle.job_dir):
            states[key] = COMPLETED
        elif _base(handle.state) == "COMPLETED":
            states[key] = SKIPPED
        else:
            states[key] = handle.state
    return states


def cancel(workspace: Path, plan: PlanSpec) -> list[str]:
    """scancel every job of ``plan`` still queued or running; the keys cancelled."""
    workspace = workspace.resolve()
    pending = [job for job in plan.jobs.values() if job.key not in plan.done]
    active = {key: h for key, h in _recorded(workspace, pending).items() if not h.done()}
    if active:
        try:
            _run(["scancel", *sorted({h.job_id for h in active.values()})])
        except SlurmError as error:
            # scancel still cancels the others when some id is no longer known to SLURM
            if "invalid job id" not in str(error).lower():
                raise
    return sorted(active)


# --- helpers -------------------------------------------------------------------------------------
def _base(state: str) -> str:
    return state.split()[0].upper() if state else "UNKNOWN"


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):  # sbatch's reason is its last line
        if "error" in line.lower():
            return line.removeprefix("sbatch: error: ").removeprefix(
                "Batch job submission failed: ")
    return lines[-1] if lines else type(error).__name__


def _own_failure(failed: Path, since: float) -> str | None:
    """The reason a job recorded itself in ``failed.json`` during this submission, if any."""
    try:
        record = read_json(failed)
    except (OSError, ValueError):
        return None
    return str(record["error"]) if record.get("time", 0) >= since else None


def _dependencies(jobs: Iterable[JobSpec], upstream: dict[str, str]) -> str | None:
    ids = sorted({upstream[dep] for job in jobs for dep in job.deps if dep in upstream})
    return "afterany:" + ":".join(ids) if ids else None


def _recorded(workspace: Path, jobs: Iterable[JobSpec]) -> dict[str, Handle]:
    """Handles of the jobs that have a ``slurm.json``, their states fetched in one sacct call."""
    handles = {}
    for job in jobs:
        job_dir = workspace / job.rel_dir
        try:
            record = read_json(job_dir / RECORD_FILE)
            job_id, folder, submitted_at = (str(record["job_id"]), record["folder"],
                                            float(record["submitted_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # never submitted (or an unreadable record): as good as not submitted
        slurm_job: SlurmJob[Any] = SlurmJob(folder=folder, job_id=job_id)
        handles[job.key] = Handle(job.key, job.kind, job.name, job_dir, slurm_job, submitted_at)
    _refresh(handles.values())
    return handles


def _refresh(handles: Iterable[Handle]) -> None:
    # submitit's watcher asks sacct about every registered job at once; force that one call
    first = next(iter(handles), None)
    if first is not None:
        first.job.watcher.update()


def _rollback(handles: Sequence[Handle], arrays: Iterable[str]) -> None:
    ids = sorted(set(arrays))
    if ids:
        with contextlib.suppress(SlurmError):  # the original error is the one to report
            _run(["scancel", *ids])
    for handle in handles:
        (handle.job_dir / RECORD_FILE).unlink(missing_ok=True)


def _write_record(handle: Handle) -> None:
    # Renamed into place so a reader never sees half a record, but not fsynced like results:
    # that would be most of the time of submitting 1,000 jobs, and a record lost to a machine
    # crash only means that job's state is unknown to `status` (and a re-run submits it again).
    record = {"job_id": handle.job_id, "folder": str(handle.job.paths.folder),
              "kind": handle.kind, "submitted_at": handle.submitted_at}
    tmp = handle.job_dir / f".{RECORD_FILE}.tmp"
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(tmp, handle.job_dir / RECORD_FILE)


def _scontrol(verb: str, ids: Sequence[str]) -> None:
    _run(["scontrol", verb, ",".join(ids)])


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        raise SlurmError(f"{command[0]}: {error}") from error
    if done.returncode != 0:
        detail = _one_line(Exception(done.stderr)) if done.stderr.strip() else done.returncode
        raise SlurmError(f"{' '.join(command[:2])}: {detail}")
    return done.stdout

