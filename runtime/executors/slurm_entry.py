"""What a SLURM job runs: one compiled job folder, in the submitit worker's own process.

Pickled by reference (this module is importable on the node through the PYTHONPATH the executor
exports in the batch script), so the pickle is small and the code is the checkout's.

The job runs in-process rather than as ``python -m runtime.job`` in a child: submitit's signal
handlers (SIGUSR2 before a time limit or at preemption → checkpoint and requeue; SIGTERM
ignored, as preemption may send it first) then act on the process doing the work, with no child
to keep in step. Its stdout and stderr go
to the job folder's ``log.txt`` at the file-descriptor level, so native code (torch) lands there
too; submitit's own ``*.out``/``*.err`` under ``<workspace>/slurm/`` keep only its bookkeeping.

A data-parallel training job runs as several SLURM tasks, each calling ``RunJob`` on the same
folder. Rank 0 (``SLURM_PROCID``) owns the folder's files, as in training itself: it logs to
``log.txt``, clears the previous attempt's ``failed.json``/``progress.json`` and records a
failure; rank N logs to ``log.rank<N>.txt`` and writes nothing else. A non-zero rank's own error
is therefore only in its log: rank 0 then fails in its next collective and records that, unless
srun (``--kill-on-bad-exit``) ends it first and ``follow`` records SLURM's reason.
submitit agrees: on SIGUSR2 only task 0 checkpoints and requeues (the others carry on until the
requeue ends them), and every task of the requeued job loads the one job pickle task 0 wrote, so
all ranks resume from the same training checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from runtime.job import (
    FAILED_FILE,
    LOG_FILE,
    PROGRESS_FILE,
    attempt_header,
    is_complete,
    record_failure,
    run_job,
)

SKIPPED = "skipped"


class RunJob:
    """Run ``job_dir`` once every folder in ``needs`` is complete; a no-op if one is not.

    The stage arrays depend on each other with ``afterany`` (see slurm.py), so a job starts even
    when one of its inputs failed; it then returns ``{"skipped": [...]}`` without touching its
    folder, exactly like the local executor skipping the dependents of a failed job.
    """

    def __call__(self, job_dir: str, needs: list[str]) -> dict[str, Any] | None:
        """The job's results; None on a data-parallel rank other than 0."""
        folder = Path(job_dir)
        # every task sees the same inputs, so all of them skip alike
        missing = [need for need in needs if not is_complete(Path(need))]
        if missing:
            print(f"{folder.name}: inputs not complete, skipped: {missing}", flush=True)
            return {SKIPPED: missing}
        rank = task_rank()
        if rank == 0:
            (folder / FAILED_FILE).unlink(missing_ok=True)
            (folder / PROGRESS_FILE).unlink(missing_ok=True)
        _limit_threads()
        with _output_to(folder / log_name(rank)):
            os.write(1, attempt_header())  # a requeued job's log reads as a resumption
            try:
                return run_job(folder)
            except Exception as error:
                traceback.print_exc()
                sys.stderr.flush()
                if rank == 0:
                    # one line, but the whole message: pydantic's first line names only the model
                    reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
                    record_failure(folder, reason)
                raise


class RunCheckpointableJob(RunJob, Checkpointable):
    """A training job: on preemption or time-out submitit asks for a checkpoint and requeues.

    Training saves its own checkpoints in the job folder and resumes from the newest one when
    started again, so ``Checkpointable``'s default (the same call again) is the checkpoint: at
    most ``train.checkpoint_every`` steps are redone.
    """


def task_rank() -> int:
    """This task's rank among the job's SLURM tasks (0 when the job runs one)."""
    return int(os.environ.get("SLURM_PROCID", "0"))


def log_name(rank: int) -> str:
    """The log file of task ``rank``: ``log.txt`` for rank 0, ``log.rank<N>.txt`` for others."""
    return LOG_FILE if rank == 0 else f"{Path(LOG_FILE).stem}.rank{rank}{Path(LOG_FILE).suffix}"


def _limit_threads() -> None:
    # torch sizes its pool by the machine's cores, not the allocation; read before torch loads.
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus:
        os.environ.setdefault("OMP_NUM_THREADS", cpus)


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Point fds 1 and 2 at ``log`` (appended: a requeued job adds to the same log)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for handle in (fd, *saved):
            os.close(handle)
