"""``xcompile status``: job states per stage, who is running what now, and how far it got.

States are ``runtime.job.STATES``, read from the job folders (``results.jobs.read_job``), so
`status`, `plan`, `show` and the store's ``jobs`` table say the same thing. A job that ran on
SLURM and has not finished takes SLURM's state instead (queued, running, …): its process runs on
another node, where this machine cannot see its lock. A running job's progress comes from its
``progress.json``, which local and SLURM jobs alike write into their folder.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from results.jobs import UnreadableJob, read_job
from runtime.executors.local import describe_progress
from runtime.io import read_json
from runtime.job import (
    FAILED,
    INTERRUPTED,
    INVALID,
    NEW,
    PROGRESS_FILE,
    RUNNING,
    STATES,
    JobState,
    describe_holder,
)
from spec.stages import STAGES


@dataclass
class JobLine:
    name: str
    path: Path
    kind: str
    state: JobState
    backend_state: str | None  # SLURM's word, lower case, for a submitted unfinished job

    @property
    def word(self) -> str:
        return self.backend_state or self.state.word


def job_lines(folders: Mapping[str, Path], backend_states: Mapping[str, str]) -> list[JobLine]:
    """One line per job folder (name → path); ``backend_states`` are SLURM's, by job name."""
    lines = []
    for name, path in folders.items():
        try:
            state = read_job(path).status
        except UnreadableJob:  # a planned job whose folder was never written
            state = JobState(NEW)
        # the folder knows best once the job ended; before, only SLURM sees a remote job
        remote = state.word in (NEW, INTERRUPTED)
        lines.append(JobLine(name, path, name.split("-", 1)[0], state,
                             backend_states.get(name) if remote else None))
    return lines


def stage_table(lines: list[JobLine]) -> Table:
    """Jobs per stage (rows) and state (columns)."""
    counts: dict[tuple[str, str], int] = {}
    for line in lines:
        counts[(line.kind, line.word)] = counts.get((line.kind, line.word), 0) + 1
    states = sorted({word for _, word in counts}, key=_state_order)
    table = Table("stage", *states)
    for kind in STAGES:
        if any(line.kind == kind for line in lines):
            table.add_row(kind, *(str(counts.get((kind, word), "")) for word in states))
    return table


def details(lines: list[JobLine], workspace: Path) -> list[str]:
    """Plain lines under the table: the processes running jobs here, each running job's
    progress, and every interrupted or failed job with where it resumes or why it failed."""
    out = []
    running = [line for line in lines if line.word == RUNNING]
    for line in running:
        if line.state.holder is not None:
            out.append(f"run active in {workspace}: {_holder_line(line.state.holder)}, "
                       f"running {line.name}")
    for line in running:
        progress = _progress(line.path)
        out.append(f"{line.name}: " + ("  ".join(describe_progress(progress)) or "starting"))
    for line in lines:
        if line.word in (INTERRUPTED, FAILED, INVALID):
            out.append(f"{line.name}: {line.state}"
                       + (f": {line.state.error}" if line.state.error else ""))
    return out


def _holder_line(holder: dict[str, Any]) -> str:
    since = holder.get("since")
    when = (f" since {time.strftime('%H:%M:%S', time.localtime(since))}"
            if isinstance(since, (int, float)) else "")
    return describe_holder(holder) + when


def _progress(job_dir: Path) -> dict[str, Any]:
    try:
        return dict(read_json(job_dir / PROGRESS_FILE))  # replaced atomically: never torn
    except (OSError, ValueError):
        return {}  # not reported yet


def _state_order(word: str) -> int:
    return STATES.index(word) if word in STATES else len(STATES)
