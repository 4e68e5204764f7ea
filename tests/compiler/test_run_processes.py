"""`xcompile run` and its processes: signals, one owner per job folder, progress without a TTY."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import tiny_recipe

from runtime.job import LOCK_FILE, PROGRESS_FILE, START_MARK, job_lock_holder

# One slow training job (4M tokens: minutes even on a fast idle CPU), so a run is still
# training whenever the test acts on it (every test stops it); checkpoints every 20 steps so
# there is one to resume from.
SLOW = tiny_recipe("slow", train={"tokens": "4M"}, sparsity={"target": 0.05})


def start_run(recipe: Path, workspace: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "compiler.cli", "run", str(recipe), "-w", str(workspace)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(condition: object, run: subprocess.Popen[str], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert run.poll() is None, run.communicate()[1]
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.2)


def train_dir(workspace: Path) -> Path:
    (folder,) = workspace.glob("jobs/train-*")
    return folder


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def checkpointed(workspace: Path) -> bool:
    return bool(list(workspace.glob("jobs/train-*/checkpoints/*.safetensors")))


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW, encoding="utf-8")
    return path


def stop(run: subprocess.Popen[str], workspace: Path, sig: signal.Signals) -> str:
    """Send ``sig`` to a training run; check that its job's process group went with it."""
    job_pid = json.loads((train_dir(workspace) / LOCK_FILE).read_text())["job_pid"]
    assert group_alive(job_pid)
    run.send_signal(sig)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 128 + sig, stderr
    assert "interrupted" in stderr and "resumes next time" in stderr
    assert not group_alive(job_pid)  # the job and everything it started are gone
    assert job_lock_holder(train_dir(workspace)) is None
    return stderr


def test_sigterm_and_sighup_stop_the_job_like_ctrl_c_and_the_next_run_resumes(
    recipe: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    run = start_run(recipe, workspace)
    wait_for(lambda: checkpointed(workspace), run)
    stop(run, workspace, signal.SIGTERM)  # what `timeout` sends

    again = start_run(recipe, workspace)
    log = train_dir(workspace) / "log.txt"
    wait_for(lambda: "resuming from" in log.read_text(errors="replace"), again)
    stop(again, workspace, signal.SIGHUP)  # a closed terminal
    assert log.read_text(errors="replace").count(START_MARK) == 2


def test_a_second_run_skips_the_job_the_first_is_running(recipe: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    first = start_run(recipe, workspace)
    wait_for(lambda: bool(list(workspace.glob(f"jobs/train-*/{LOCK_FILE}")))
             and (job_lock_holder(train_dir(workspace)) or {}).get("job_pid"), first)
    second = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "run", str(recipe), "-w", str(workspace)],
        capture_output=True, text=True, timeout=300,
    )
    assert first.poll() is None  # still training: the second run neither waited nor stopped it
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    assert second.returncode == 0, second.stderr
    assert f"is running in another process (pid {first.pid} on " in second.stderr
    assert "1 job(s) are running in another process" in second.stderr
    assert "2 wait for them" in second.stderr  # stats and prune
    log = (train_dir(workspace) / "log.txt").read_text(errors="replace")
    assert log.count(START_MARK) == 1  # trained by the first run only


def test_without_a_terminal_the_run_prints_job_lines_and_progress_with_an_eta(
    recipe: Path, tmp_path: Path
) -> None:
    workspace, output = tmp_path / "ws", tmp_path / "run.log"
    with output.open("w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "compiler.cli", "run", str(recipe), "-w", str(workspace)],
            stdout=sink, stderr=subprocess.STDOUT, text=True,
        )
        progress = re.compile(r"^train-\w{12}: +step \d+/\d+ .*tok/s +ETA \d+[hm]\d\d[ms]$", re.M)
        wait_for(lambda: progress.search(output.read_text()), run)
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
    lines = output.read_text().splitlines()
    assert any(re.fullmatch(r"start tokenize-\w{12}", line) for line in lines)
    assert any(re.fullmatch(r"done tokenize-\w{12} in \d+m\d\ds", line) for line in lines)
    assert any(re.fullmatch(r"start train-\w{12}", line) for line in lines)


def test_status_shows_the_active_run_and_the_running_jobs_step_and_eta(
    recipe: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    run = start_run(recipe, workspace)

    def timed() -> bool:  # the job has reported often enough to know its pace
        progress = list(workspace.glob(f"jobs/train-*/{PROGRESS_FILE}"))
        return bool(progress) and "eta_s" in progress[0].read_text()

    wait_for(timed, run)
    status = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "status", "-w", str(workspace)],
        capture_output=True, text=True, timeout=120,
    )
    stop(run, workspace, signal.SIGTERM)
    assert status.returncode == 0, status.stderr
    name = train_dir(workspace).name
    assert f"run active in {workspace}: pid {run.pid} on " in status.stdout
    assert f"running {name}" in status.stdout
    step = re.search(rf"^{name}: step (\d+)/(\d+) +loss \d+\.\d+ +[\d,]+ tok/s +"
                     r"ETA \d+[hm]\d\d[ms]$", status.stdout, re.M)
    assert step is not None, status.stdout
    assert 0 < int(step[1]) < int(step[2])
