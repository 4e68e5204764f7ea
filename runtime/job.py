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
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runtime.io import read_json, write_json_atomic

# The job kinds in dependency order: each stage reads only earlier ones (docs/jobs.md).
STAGES = ("tokenize", "train", "stats", "prune", "groundtruth", "ingest")
JOBS_DIR = "jobs"  # <workspace>/jobs/<kind>-<key12>/
# The files of a job folder (docs/jobs.md) that more than one part reads or writes.
CONFIG_FILE = "config.json"  # compiler
COMMAND_FILE = "command"  # compiler
LOG_FILE = "log.txt"  # executor
RESULTS_FILE = "results.json"  # runtime, last and atomically: the job is done
PROGRESS_FILE = "progress.json"  # runtime, while it runs
FAILED_FILE = "failed.json"  # executor, when the job failed
CHECKPOINT_DIR = "checkpoints"  # train jobs: resumable state
LOCK_FILE = "lock"  # flock'ed by the process that runs the job; its holder as JSON
# The descriptor of a lock that the launching process took and handed down (local executor).
LOCK_FD_ENV = "XCOMPILE_JOB_LOCK_FD"
EXIT_BUSY = 75  # EX_TEMPFAIL: another process is running this job
# What executors put on a job's PYTHONPATH, so this checkout runs whether installed or not.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_BYTES = 16_384  # enough for a traceback; never the whole log of a long training run


class JobSpec(Protocol):
    """What an executor needs of a planned job (compiler.plan.Job satisfies it)."""

    key: str
    kind: str
    name: str
    rel_dir: str
    deps: tuple[str, ...]
    runs_after_failures: bool


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


class Progress:
    """Throttled progress reports a job writes to ``progress.json`` for whoever follows it."""

    def __init__(self, job_dir: Path, min_interval_s: float = 0.5) -> None:
        self.path = job_dir / PROGRESS_FILE
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def __call__(self, info: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.min_interval_s:
            self._last = now
            write_json_atomic(self.path, {**info, "time": time.time()})


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
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
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

    Probes with a shared lock, released at once: a runner starting in that instant would see the
    job as busy, which is why only status displays ask.
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


def log_tail(job_dir: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of the job's log ("" if it has none), read from its end only."""
    log = job_dir / LOG_FILE
    if not log.is_file():
        return ""
    with log.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - LOG_TAIL_BYTES))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


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
    if kind not in STAGES:
        raise ValueError(f"{job_dir}: unknown job kind {kind!r}")
    module: JobKind = importlib.import_module(f"runtime.jobs.{kind}")  # type: ignore[assignment]
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
