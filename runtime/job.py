"""Run one compiled job folder: ``python -m runtime.job <job_dir>``.

Reads ``config.json``, dispatches on its ``kind`` to ``runtime.jobs.<kind>.run``, and writes
``results.json`` last and atomically, so a folder with results is always a finished job.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from runtime.io import read_json, write_json_atomic

JOB_KINDS = ("tokenize", "train", "stats", "prune", "ingest")
JOBS_DIR = "jobs"  # <workspace>/jobs/<kind>-<key12>/
# The files of a job folder (docs/jobs.md) that more than one part reads or writes.
CONFIG_FILE = "config.json"  # compiler
COMMAND_FILE = "command"  # compiler
LOG_FILE = "log.txt"  # executor
RESULTS_FILE = "results.json"  # runtime, last and atomically: the job is done
PROGRESS_FILE = "progress.json"  # runtime, while it runs
FAILED_FILE = "failed.json"  # executor, when the job failed
CHECKPOINT_DIR = "checkpoints"  # train jobs: resumable state
LOG_TAIL_BYTES = 16_384  # enough for a traceback; never the whole log of a long training run


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


def is_complete(job_dir: Path) -> bool:
    return (job_dir / RESULTS_FILE).is_file()


def run_job(job_dir: Path) -> dict[str, Any] | None:
    """Run the job in ``job_dir`` and write its ``results.json``; returns the results, or None in
    a data-parallel process other than rank 0 (which writes nothing)."""
    job_dir = job_dir.resolve()
    config = read_json(job_dir / CONFIG_FILE)
    kind = config["kind"]
    if kind not in JOB_KINDS:
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
    run_job(Path(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
