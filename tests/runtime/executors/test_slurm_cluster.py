"""submitit against the real single-node SLURM cluster started by scripts/slurm-cluster.sh.

Skipped when SLURM is not installed or not up, unless XCOMPILE_REQUIRE_SLURM=1 (CI), in which
case a missing cluster is a failure. Every wait is bounded so a broken cluster fails fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

pytestmark = pytest.mark.slurm  # the cluster itself comes from the `partition` fixture (conftest)

WAIT_S = float(os.environ.get("XCOMPILE_SLURM_TEST_WAIT_S", "60"))

submitit = pytest.importorskip("submitit")

# The job functions below live in this test module, which the job's Python cannot import:
# ship them by value instead of by reference.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --- functions run inside SLURM jobs -----------------------------------------------------------
def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def write_file(path: str, text: str) -> str:
    Path(path).write_text(text)
    return path


def read_file(path: str) -> str:
    return Path(path).read_text()


def fail() -> None:
    raise RuntimeError("this job fails on purpose")


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# --- helpers ---------------------------------------------------------------------------------
def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout


@pytest.fixture
def executor(tmp_path: Path, partition: str):
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    ex.update_parameters(timeout_min=5, slurm_partition=partition, cpus_per_task=1, mem_gb=1)
    return ex


def wait_done(job, timeout: float = WAIT_S) -> None:
    """Wait for a submitit job to finish, refreshing its state from sacct; bounded."""
    deadline = time.monotonic() + timeout
    while not job.done(force_check=True):
        if time.monotonic() > deadline:
            job.get_info(mode="force")
            pytest.fail(f"job {job.job_id} not finished after {timeout:.0f}s (state {job.state})")
        time.sleep(0.5)


def wait_state(job, wanted: set[str], timeout: float = WAIT_S) -> str:
    """Wait until sacct reports the job in one of `wanted` states (prefix match); bounded."""
    deadline = time.monotonic() + timeout
    while True:
        job.get_info(mode="force")
        state = job.state
        if any(state.upper().startswith(w) for w in wanted):
            return state
        if time.monotonic() > deadline:
            pytest.fail(f"job {job.job_id} state {state!r} after {timeout:.0f}s, wanted {wanted}")
        time.sleep(0.5)


def after_ok(executor, job) -> None:
    """Make the executor's next submissions depend on `job` succeeding."""
    executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{job.job_id}"})


def sacct_state(job_id: str) -> str:
    out = _run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State")
    return out.strip().splitlines()[0] if out.strip() else ""


# --- tests -----------------------------------------------------------------------------------
def test_trivial_function_returns_result(executor) -> None:
    job = executor.submit(add, 2, 3)
    wait_done(job)
    assert job.result() == 5
    assert wait_state(job, {"COMPLETED"}) == "COMPLETED"


def test_job_array_of_three(executor) -> None:
    jobs = executor.map_array(square, [1, 2, 3])
    assert len(jobs) == 3
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1, "expected one array job"
    for job in jobs:
        wait_done(job)
    assert [j.result() for j in jobs] == [1, 4, 9]


def test_afterok_chain_sees_first_output(executor, tmp_path: Path) -> None:
    target = tmp_path / "first.txt"
    first = executor.submit(write_file, str(target), "from the first job")
    after_ok(executor, first)
    second = executor.submit(read_file, str(target))
    wait_done(second)
    assert first.result() == str(target)
    assert second.result() == "from the first job"


def test_failed_job_cancels_dependent(executor) -> None:
    first = executor.submit(fail)
    after_ok(executor, first)
    second = executor.submit(add, 1, 1)
    wait_done(first)
    assert wait_state(first, {"FAILED"}).startswith("FAILED")
    with pytest.raises(Exception, match="fails on purpose"):
        first.result()
    # kill_invalid_depend: the dependent job is cancelled, not left pending forever.
    wait_done(second)
    assert wait_state(second, {"CANCELLED"}).startswith("CANCELLED")
    # A job that never ran has no result file; submitit would wait 15 s for one before raising.
    second._results_timeout_s = 0
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        second.result()


def test_scancel_running_job_is_cancelled(executor) -> None:
    job = executor.submit(sleep_for, 600)
    wait_state(job, {"RUNNING"})
    _run("scancel", job.job_id)
    deadline = time.monotonic() + WAIT_S
    while not sacct_state(job.job_id).startswith("CANCELLED"):
        if time.monotonic() > deadline:
            pytest.fail(f"scancel: job {job.job_id} is {sacct_state(job.job_id)!r} in sacct")
        time.sleep(0.5)
    wait_done(job)
    assert job.state.startswith("CANCELLED")
