"""Run a plan's jobs on this machine, one subprocess at a time, in dependency order.

One at a time because a training job already uses every core. Each job is
``python -m runtime.job <dir>`` with its output in ``log.txt``; the display follows the job's
``progress.json``. A failed job gets a ``failed.json`` and its dependents are skipped, the rest
of the plan goes on. Ctrl-C (or SIGTERM/SIGHUP, which the CLI turns into the same interrupt)
stops the running job's whole process group (its checkpoints stay, so it resumes) and leaves
every finished job cached.

Each job runs under its folder's lock (``runtime.job.JobLock``), taken here and inherited by the
job's process, so it stays held even if this driver is killed with SIGKILL. A job whose lock is
held by another run is not touched: it is reported busy and its dependents wait for next time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from runtime.executors.base import JobSpec, PlanSpec, RunSummary
from runtime.io import read_json
from runtime.job import (
    COMMAND_FILE,
    FAILED_FILE,
    LOCK_FD_ENV,
    LOG_FILE,
    PROGRESS_FILE,
    PROJECT_ROOT,
    RESULTS_FILE,
    JobBusy,
    JobLock,
    attempt_header,
    is_complete,
    log_tail,
    record_failure,
)

POLL_S = 0.25
PLAIN_EVERY_S = 10.0  # between progress lines when stderr is not a terminal


def job_environment(lock_fd: int) -> dict[str, str]:
    """The child's environment: this project importable even when not pip-installed, and the
    descriptor of the job's lock, which it inherits."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env[LOCK_FD_ENV] = str(lock_fd)
    return env


class PlainLines:
    """Progress as plain lines, for logs, CI and ``> file``, where the live display draws
    nothing: one line per job start and end, a progress line as soon as a job's ETA is known,
    and then one every ``every_s``."""

    def __init__(self, console: Console, every_s: float = PLAIN_EVERY_S) -> None:
        self.console, self.every_s = console, every_s
        self.name, self.started, self.last, self.told_eta = "", 0.0, 0.0, False

    def start(self, name: str) -> None:
        self.name, self.told_eta = name, False
        self.started = self.last = time.monotonic()
        self._print(f"start {name}")

    def update(self, info: dict[str, Any]) -> None:
        now = time.monotonic()
        first_eta = "eta_s" in info and not self.told_eta
        if now - self.last < self.every_s and not first_eta:
            return
        self.last, self.told_eta = now, self.told_eta or "eta_s" in info
        # Without an ETA (a prune job judging circuits) the time so far tells a stuck job from a
        # long one; otherwise a log repeats the same line every interval.
        running = [] if "eta_s" in info else [f"running {duration(now - self.started)}"]
        self._print("  ".join([f"{self.name}:", *describe_progress(info), *running]))

    def end(self, name: str, error: str | None) -> None:
        took = duration(time.monotonic() - self.started)
        self._print(f"done {name} in {took}" if error is None else f"failed {name} after {took}")

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


class FinishedElsewhere(Exception):
    """The job was finished by another run of the workspace after this run's plan was made."""


class LocalExecutor:
    def __init__(self, workspace: Path, console: Console | None = None) -> None:
        self.workspace = workspace
        self.console = console or Console(stderr=True)

    def run(self, plan: PlanSpec) -> RunSummary:
        """Run the pending jobs of ``plan`` in its (dependency) order."""
        jobs = plan.pending()
        summary = RunSummary()
        blocked: set[str] = set()  # failed, or their inputs did
        busy: set[str] = set()  # another run has them, or their inputs
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        )
        plain = None if self.console.is_terminal else PlainLines(self.console)
        with Progress(*columns, console=self.console, transient=False) as progress:
            overall = progress.add_task("jobs", total=len(jobs), info="")
            current = progress.add_task("", total=None, info="", visible=False)
            for job in jobs:
                if any(dep in blocked for dep in job.deps):
                    blocked.add(job.key)
                    summary.skipped.append(job.key)
                    progress.advance(overall)
                    continue
                if any(dep in busy for dep in job.deps):
                    busy.add(job.key)
                    summary.waiting.append(job.key)
                    progress.advance(overall)
                    continue
                progress.update(
                    current,
                    description=job.name,
                    total=None,
                    completed=0,
                    info="starting",
                    visible=True,
                )
                def show(info: dict[str, Any]) -> None:
                    _show(progress, current, info)
                    if plain is not None:
                        plain.update(info)

                if plain is not None:
                    plain.start(job.name)
                try:
                    error = self._run_one(job, show)
                except JobBusy as holder:
                    busy.add(job.key)
                    summary.busy[job.key] = str(holder)
                    self.console.print(f"[yellow]skipped[/] {holder}", highlight=False)
                    progress.advance(overall)
                    continue
                except FinishedElsewhere:
                    summary.done.append(job.key)
                    self.console.print(f"[dim]done[/] {job.name}: finished by another run "
                                       "meanwhile", highlight=False)
                    progress.advance(overall)
                    continue
                if plain is not None:
                    plain.end(job.name, error)
                if error is None:
                    summary.done.append(job.key)
                else:
                    blocked.add(job.key)
                    summary.failed[job.key] = error
                    self._report_failure(job, error)
                progress.advance(overall)
            progress.update(current, visible=False)
        return summary

    def _run_one(self, job: JobSpec, show: Callable[[dict[str, Any]], None]) -> str | None:
        """Run one job; its failure reason, or None. Raises (touching nothing) ``JobBusy`` if
        another process holds the job's lock, ``FinishedElsewhere`` if another run finished it
        since this run's plan was made: so two runs of one workspace share its jobs out."""
        job_dir = self.workspace / job.rel_dir
        with JobLock(job_dir) as lock:
            if is_complete(job_dir):
                raise FinishedElsewhere(job.name)
            return self._run_locked(job, job_dir, lock, show)

    def _run_locked(self, job: JobSpec, job_dir: Path, lock: JobLock,
                    show: Callable[[dict[str, Any]], None]) -> str | None:
        with open(job_dir / LOG_FILE, "ab") as log:
            (job_dir / FAILED_FILE).unlink(missing_ok=True)
            (job_dir / PROGRESS_FILE).unlink(missing_ok=True)
            # each attempt starts with a header, so a resumed job's log reads as a resumption
            log.write(attempt_header())
            log.flush()
            child = subprocess.Popen(
                [sys.executable, "-m", "runtime.job", str(job_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=job_environment(lock.fd),
                pass_fds=(lock.fd,),
                start_new_session=True,  # Ctrl-C reaches us; we stop the child deliberately
            )
            lock.record(job_pid=child.pid)
            try:
                while child.poll() is None:
                    time.sleep(POLL_S)
                    if (job_dir / PROGRESS_FILE).is_file():  # replaced atomically: never torn
                        show(read_json(job_dir / PROGRESS_FILE))
            except KeyboardInterrupt:
                _stop(child)
                raise
        if child.returncode == 0 and (job_dir / RESULTS_FILE).is_file():
            return None
        reason = _last_error_line(job_dir) or f"exit code {child.returncode}"
        record_failure(job_dir, reason)
        return reason

    def _report_failure(self, job: JobSpec, error: str) -> None:
        job_dir = self.workspace / job.rel_dir
        self.console.print(f"[bold red]FAILED[/] {job.name}: {error}")
        tail = log_tail(job_dir)
        if tail:
            self.console.print(f"[dim]--- last lines of {job_dir / LOG_FILE} ---[/]")
            self.console.print(tail, markup=False, highlight=False)
        self.console.print(
            f"re-run by hand: [bold]{(job_dir / COMMAND_FILE).read_text().strip()}[/]"
        )


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Interrupt the job's process group like Ctrl-C would, then insist. A second Ctrl-C or
    SIGTERM meanwhile is held back: it must not leave the job running without us."""
    stops = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        for sig, wait_s in ((signal.SIGINT, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(child.pid, sig)
                child.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # anything the job started and left behind
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


def _last_error_line(job_dir: Path) -> str:
    lines = [line for line in log_tail(job_dir, 50).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else ""


def describe_progress(info: dict[str, Any]) -> list[str]:
    """A ``progress.json`` record as words: step/total, loss, tokens/s, phase, ETA (what it has).
    The plain lines and `xcompile status` print the same words."""
    parts = _describe(info)
    step, total = info.get("step"), info.get("total_steps")
    if isinstance(step, int) and isinstance(total, int):
        parts.insert(0, f"step {step}/{total}")
    if isinstance(info.get("eta_s"), (int, float)):
        parts.append(f"ETA {duration(info['eta_s'])}")
    return parts


def _describe(info: dict[str, Any]) -> list[str]:
    parts = []
    if isinstance(info.get("loss"), (int, float)):
        parts.append(f"loss {info['loss']:.3f}")
    if "tokens_per_s" in info:
        parts.append(f"{info['tokens_per_s']:,.0f} tok/s")
    if "phase" in info:  # a prune job: where in which phase, out of how much
        phase = str(info["phase"])
        for done, total, unit in (("step", "steps", ""), ("trial", "trials", "trial ")):
            if isinstance(info.get(done), int) and isinstance(info.get(total), int):
                phase += f" {unit}{info[done] + 1}/{info[total]}"
        parts.append(phase)
    return parts


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def _show(progress: Progress, task: Any, info: dict[str, Any]) -> None:
    text = "  ".join(_describe(info))
    total, step = info.get("total_steps"), info.get("step")
    if isinstance(total, int) and isinstance(step, int):
        progress.update(task, total=total, completed=step, info=text)
    else:
        progress.update(task, info=text)
