"""Run one compiled job folder: ``python -m runtime.job <job_dir>``.

Reads ``config.json``, dispatches on its ``kind`` to ``runtime.jobs.<kind>.run``, and writes
``results.json`` last and atomically, so a folder with results is always a finished job.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from runtime.io import read_json, write_json_atomic

JOBS_DIR = "jobs"  # <workspace>/jobs/<kind>-<key12>/
# The files of a job folder (docs/jobs.md) that more than one part reads or writes.
CONFIG_FILE = "config.json"  # compiler
COMMAND_FILE = "command"  # compiler
LOG_FILE = "log.txt"  # executor
RESULTS_FILE = "results.json"  # runtime, last and atomically: the job is done
PROGRESS_FILE = "progress.json"  # runtime, while it runs
FAILED_FILE = "failed.json"  # executor, when the job failed
METRICS_FILE = "metrics.jsonl"  # train jobs: one JSON line per logged step; ingested
CIRCUIT_FILE = "circuit.json"  # prune jobs: the circuit's nodes; ingested, the explorer reads it
EDGES_FILE = "circuit_edges.parquet"  # prune jobs: the circuit's edges; ingested
EVIDENCE_FILE = "evidence.json"  # prune jobs: what each node responds to; the explorer only
CHECKPOINT_DIR = "checkpoints"  # train jobs: resumable state, step-<8 digits>.safetensors
CHECKPOINT_GLOB = "step-*.safetensors"
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.safetensors$")
LOCK_FILE = "lock"  # flock'ed by the process that runs the job; its holder as JSON
# The descriptor of a lock that the launching process took and handed down (local executor).
LOCK_FD_ENV = "XCOMPILE_JOB_LOCK_FD"
EXIT_BUSY = 75  # EX_TEMPFAIL: another process is running this job
# What executors put on a job's PYTHONPATH, so this checkout runs whether installed or not.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
JOB_KINDS_DIR = Path(__file__).resolve().parent / "jobs"  # runtime/jobs/<kind>.py: run()
LOG_TAIL_BYTES = 16_384  # enough for a traceback; never the whole log of a long training run
START_MARK = "job started"  # the header line of each attempt in log.txt
EXIT_INTERRUPTED = 130  # what a job stopped by Ctrl-C (or the executor's SIGINT) exits with
# How long a lock probe (``job_lock_holder``) can hold a job's lock: a runner that finds it held
# tries again for this long before calling the job busy, as a real owner holds it for hours.
LOCK_RETRY_S = 0.2

# Job states: the one vocabulary of `status`, `plan`, `show` and the store's `jobs` table.
NEW = "new"  # never started: its folder holds at most config.json and command
RUNNING = "running"  # a live process holds the folder's lock
INTERRUPTED = "interrupted"  # started, then stopped (Ctrl-C, kill, preemption): reruns resume
FAILED = "failed"  # failed.json, or the last attempt's log ends in a traceback
DONE = "done"  # results.json
INVALID = "invalid"  # results.json there but unreadable (hand-edited or torn)
STATES = (DONE, RUNNING, INTERRUPTED, NEW, FAILED, INVALID)  # the order displays list them in
TRACEBACK_MARK = "Traceback (most recent call last)"


class Progress:
    """Throttled progress reports a job writes to ``progress.json`` for whoever follows it.

    A report with ``step`` and ``total_steps`` gets an ``eta_s``, from the pace since this
    attempt's first report (so start-up and the steps before a resume do not count), which is
    what a reader of a single snapshot cannot work out.
    """

    def __init__(self, job_dir: Path, min_interval_s: float = 0.5) -> None:
        self.path = job_dir / PROGRESS_FILE
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._first: tuple[float, int] | None = None  # (time, step) of the first report

    def __call__(self, info: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        step, total = info.get("step"), info.get("total_steps")
        # (step, total) when both are ints, the only reports an eta is worked out for; a tuple
        # rather than a flag so that the type checker sees the ints where they are used.
        timed = (step, total) if isinstance(step, int) and isinstance(total, int) else None
        if timed is not None and self._first is None:
            self._first = (now, timed[0])
        if force or now - self._last >= self.min_interval_s:
            self._last = now
            record = {**info, "time": time.time()}
            if timed is not None and self._first is not None and timed[0] > self._first[1]:
                step, total = timed
                pace = (now - self._first[0]) / (step - self._first[1])
                record["eta_s"] = (total - step) * pace
            write_json_atomic(self.path, record)


class JobKind(Protocol):
    def run(
        self, config: dict[str, Any], job_dir: Path, workspace: Path, progress: Progress
    ) -> dict[str, Any] | None:
        """The job's results; None in a data-parallel process other than rank 0, which reports
        for all of them."""
        ...


class JobBusy(Exception):
    """Another live process holds the job's lock: this one must not run it."""

    def __init__(self, job_dir: Path, holder: dict[str, Any]) -> None:
        self.job_dir, self.holder = job_dir, holder
        where = describe_holder(holder)
        super().__init__(f"{job_dir.name} is running in another process ({where})")


class JobLock:
    """An exclusive ``flock`` on ``<job_dir>/lock``: one writer per job folder. The kernel drops
    it when the last process holding the descriptor exits, however it dies, so a stale lock
    cannot outlive its owner (no pid files to clean up)."""

    def __init__(self, job_dir: Path) -> None:
        self.fd = os.open(job_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + LOCK_RETRY_S
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:  # perhaps only a status probe
                    time.sleep(0.02)
                    continue
                os.close(self.fd)
                raise JobBusy(job_dir, _read_holder(job_dir)) from None
        self.holder: dict[str, Any] = {}
        self.record(pid=os.getpid(), host=socket.gethostname(), since=time.time())

    def record(self, **info: Any) -> None:
        """Add ``info`` to the holder record that ``job_lock_holder`` reports to others."""
        self.holder.update(info)
        data = json.dumps(self.holder).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def job_lock_holder(job_dir: Path) -> dict[str, Any] | None:
    """Who runs the job now (``{pid, host, since, job_pid?}``), or None if nobody does.

    Probes with a shared lock, released at once; a runner starting in that instant retries
    (``LOCK_RETRY_S``), so anyone may ask.
    """
    try:
        fd = os.open(job_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(job_dir)
    finally:
        os.close(fd)
    return None


def describe_holder(holder: dict[str, Any]) -> str:
    where = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    if holder.get("job_pid"):
        where += f", job pid {holder['job_pid']}"
    return where


def _read_holder(job_dir: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        holder = json.loads((job_dir / LOCK_FILE).read_bytes() or b"{}")
        if isinstance(holder, dict):
            return holder
    return {}  # written right after locking: a reader can be a moment early


def attempt_header() -> bytes:
    """The line an executor writes to ``log.txt`` before each attempt, so a resumed job's log
    reads as a resumption and its tail never mixes attempts."""
    return (f"--- {START_MARK} {time.strftime('%Y-%m-%d %H:%M:%S')} by pid {os.getpid()} "
            f"on {socket.gethostname()} ---\n").encode()


def log_tail(job_dir: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of the job's latest attempt ("" if it has no log), from its
    header on: an earlier attempt's traceback is history, not the job's state."""
    log = job_dir / LOG_FILE
    if not log.is_file():
        return ""
    with log.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - LOG_TAIL_BYTES))
        text = handle.read().decode("utf-8", errors="replace")
    tail = text.rstrip().splitlines()[-lines:]
    starts = [i for i, line in enumerate(tail) if START_MARK in line and line.startswith("---")]
    return "\n".join(tail[starts[-1]:] if starts else tail)


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.safetensors"


def checkpoint_steps(directory: Path) -> list[tuple[int, Path]]:
    """The training checkpoints in ``directory``, newest first."""
    found = []
    for path in directory.glob(CHECKPOINT_GLOB):
        if match := _CHECKPOINT_NAME.match(path.name):
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


@dataclass(frozen=True)
class JobState:
    """A job's state word and what goes with it."""

    word: str  # one of STATES
    error: str | None = None  # failed: why
    holder: dict[str, Any] | None = None  # running: who runs it (the lock's record)
    resume_step: int | None = None  # interrupted: the checkpoint a rerun starts from

    def __str__(self) -> str:
        if self.word == INTERRUPTED:
            again = "starts again" if self.resume_step is None else (
                f"resumes from step {self.resume_step}")
            return f"{INTERRUPTED} ({again})"
        if self.word == RUNNING and self.holder is not None:
            return f"{RUNNING} ({describe_holder(self.holder)})"
        return self.word


def unfinished_state(job_dir: Path) -> JobState:
    """The state of a job folder without results: running, failed, interrupted or new.

    Started means it has a log (each executor writes one before the job runs); a failure is the
    executor's record or a traceback ending the latest attempt, except the KeyboardInterrupt of
    an executor stopping the job, which is an interruption.
    """
    if (holder := job_lock_holder(job_dir)) is not None:
        return JobState(RUNNING, holder=holder)
    if (job_dir / FAILED_FILE).is_file():
        try:
            error = str(read_json(job_dir / FAILED_FILE).get("error") or FAILED)
        except (OSError, ValueError):
            error = f"unreadable {FAILED_FILE}"
        return JobState(FAILED, error=error)
    if not (job_dir / LOG_FILE).is_file():
        return JobState(NEW)
    tail = log_tail(job_dir, 200)
    last = ([line.strip() for line in tail.splitlines() if line.strip()] or [""])[-1]
    if TRACEBACK_MARK in tail and not last.startswith("KeyboardInterrupt"):
        return JobState(FAILED, error=last or "traceback in log")
    steps = checkpoint_steps(job_dir / CHECKPOINT_DIR)
    return JobState(INTERRUPTED, resume_step=steps[0][0] if steps else None)


def record_failure(job_dir: Path, reason: str) -> None:
    """The executor's failure record: why, the log's end, when (removed when the job reruns)."""
    write_json_atomic(
        job_dir / FAILED_FILE, {"error": reason, "log_tail": log_tail(job_dir), "time": time.time()}
    )


def is_complete(job_dir: Path) -> bool:
    return (job_dir / RESULTS_FILE).is_file()


def run_job(job_dir: Path) -> dict[str, Any] | None:
    """Run the job in ``job_dir`` and write its ``results.json``; returns the results, or None in
    a data-parallel process other than rank 0 (which writes nothing)."""
    job_dir = job_dir.resolve()
    config = read_json(job_dir / CONFIG_FILE)
    kind = config["kind"]
    # A kind is a module of runtime/jobs/, as compiler/code_version.py hashes it; checked against
    # the files rather than spec's stage list, which would put that list in every job's key.
    if not (isinstance(kind, str) and kind.isidentifier() and not kind.startswith("_")
            and (JOB_KINDS_DIR / f"{kind}.py").is_file()):
        raise ValueError(f"{job_dir}: unknown job kind {kind!r}")
    module: JobKind = importlib.import_module(f"runtime.jobs.{kind}")
    started = time.time()
    results = module.run(config, job_dir, job_dir.parent.parent, Progress(job_dir))
    if results is None:
        return None
    results = {
        "kind": kind,
        "key": config["key"],
        "started_at": started,
        "finished_at": time.time(),
        **results,
    }
    write_json_atomic(job_dir / RESULTS_FILE, results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m runtime.job <job_dir>", file=sys.stderr)
        return 2
    job_dir = Path(args[0])
    # The launcher may hold the lock for us (we inherited it); in a data-parallel job only
    # rank 0 writes the folder, so only it owns it (the rank variables that training reads).
    rank = os.environ.get("RANK" if "WORLD_SIZE" in os.environ else "SLURM_PROCID", "0")
    try:
        if LOCK_FD_ENV in os.environ or rank != "0":
            run_job(job_dir)
            return 0
        try:
            lock = JobLock(job_dir)
        except JobBusy as busy:
            print(f"not run: {busy}", file=sys.stderr)
            return EXIT_BUSY
        with lock:
            run_job(job_dir)
    except KeyboardInterrupt:
        # one line, not a traceback: the log's end must read as a stop, not a failure
        print("--- job interrupted: a rerun resumes it ---", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
