"""Data-parallel training: the layout read from torchrun / SLURM variables, and a real 2-process
gloo training job, killed and resumed, that matches the single-process run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from runtime.training.checkpoint import load_model
from runtime.training.distributed import (
    SINGLE_PROCESS,
    Layout,
    detect_layout,
    first_host,
    port_for_job,
)
from runtime.training.train import describe_device
from spec.recipe import ModelSpec, SparsitySpec, TrainSpec

TrainJobFactory = Callable[..., Path]  # the `train_job` fixture (tests/runtime/conftest.py)

REPO = Path(__file__).resolve().parents[3]

# ---- layout: pure functions of an environment


def test_no_launcher_variables_is_one_process() -> None:
    assert detect_layout({}) == SINGLE_PROCESS
    assert detect_layout({"PATH": "/usr/bin", "SLURM_JOB_ID": "7"}) == SINGLE_PROCESS


def test_torchrun_variables() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node0",
           "MASTER_PORT": "29400"}
    assert detect_layout(env) == Layout(rank=3, world_size=8, local_rank=1,
                                        master_addr="node0", master_port=29400)


def test_torchrun_wins_over_the_slurm_allocation_it_runs_in() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "1234", "SLURM_PROCID": "0", "SLURM_NTASKS": "1",
           "SLURM_JOB_ID": "99", "SLURM_JOB_NODELIST": "gpu01"}
    assert detect_layout(env) == Layout(rank=1, world_size=2, local_rank=1,
                                        master_addr="127.0.0.1", master_port=1234)


def test_slurm_task_layout_with_a_bracketed_nodelist() -> None:
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
           "SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu[007-009,012],cpu3"}
    layout = detect_layout(env)
    assert layout == Layout(rank=5, world_size=8, local_rank=1, master_addr="gpu007",
                            master_port=port_for_job(123456))
    # Every task of the job derives the same port; another job gets another one.
    assert detect_layout({**env, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}).master_port == \
        layout.master_port
    assert port_for_job(123457) != layout.master_port
    assert 1024 < layout.master_port < 65536
    # An explicit MASTER_ADDR / MASTER_PORT overrides the derived ones.
    assert detect_layout({**env, "MASTER_ADDR": "login", "MASTER_PORT": "4242"}) == Layout(
        rank=5, world_size=8, local_rank=1, master_addr="login", master_port=4242)


def test_one_slurm_task_is_the_single_process_path() -> None:
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0",
           "SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "node1"}
    assert detect_layout(env) == SINGLE_PROCESS


@pytest.mark.parametrize(("nodelist", "host"), [
    ("node1", "node1"),
    ("node1,node2", "node1"),
    ("gpu[07-09,12]", "gpu07"),
    ("gpu[12,07-09],cpu[1-2]", "gpu12"),
    ("rack[1-2]-n[03-04]", "rack1-n03"),
    ("a-b[10-11]x", "a-b10x"),
])
def test_first_host_of_a_slurm_hostlist(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


@pytest.mark.parametrize("env", [
    {"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"},  # rank too high
    {"RANK": "x", "WORLD_SIZE": "2"},
    {"RANK": "1", "WORLD_SIZE": "2"},  # torchrun always sets the master; we cannot guess it
])
def test_bad_layouts_raise(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="distributed layout"):
        detect_layout(env)


def test_rows_split_a_global_batch_exactly() -> None:
    for world_size in (1, 2, 3, 4):
        for batch_size in range(world_size, 11):
            rows = [range(batch_size)[Layout(rank=rank, world_size=world_size).rows(batch_size)]
                    for rank in range(world_size)]
            assert [i for part in rows for i in part] == list(range(batch_size))
            assert max(map(len, rows)) - min(map(len, rows)) <= 1


# ---- a real 2-process gloo training job, killed and resumed, against the single-process one

STEPS = 40


def make_job(train_job: TrainJobFactory, workspace: Path, name: str) -> Path:
    return train_job(
        workspace, name, seed=1, model=ModelSpec(n_layer=1, d_model=16, d_head=8),
        # batch 6 over 2 ranks: 3 rows each; eval_tokens 160 = 10 windows = 2 batches, one a rank
        train=TrainSpec(tokens=6 * 16 * STEPS, batch_size=6, eval_every=10, eval_tokens=160,
                        checkpoint_every=10, device="cpu"),
        sparsity=SparsitySpec(target=0.25))


# What `python -m runtime.job` does, printing run_job's return value so each rank's can be read.
RUN_JOB = ("import json, sys; from pathlib import Path; from runtime.job import run_job; "
           "print(json.dumps(run_job(Path(sys.argv[1]))))")
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at its end are killed (a rank whose peer died
    would otherwise wait in a collective for gloo's 30-minute timeout)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def start(job_dir: Path, **launcher: str) -> subprocess.Popen[str]:
    # No inherited launcher variables (a test run inside a SLURM job must stay single-process);
    # one thread: gentle on a shared machine, and the same float reductions in every run.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SLURM_") and key not in LAUNCHER_VARIABLES}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **launcher)
    return subprocess.Popen([sys.executable, "-c", RUN_JOB, str(job_dir)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_ranks(job_dir: Path, world_size: int) -> list[subprocess.Popen[str]]:
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    return [start(job_dir, RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                  MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for rank in range(world_size)]


def returned(process: subprocess.Popen[str]) -> tuple[Any, str]:
    """What run_job returned in ``process``, and its stderr."""
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    return json.loads(stdout.splitlines()[-1]), stderr


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_gloo_ranks_killed_and_resumed_match_one_process(
    tmp_path: Path, processes: list[subprocess.Popen[str]], train_job: TrainJobFactory
) -> None:
    single_dir = make_job(train_job, tmp_path, "train-single")
    pair_dir = make_job(train_job, tmp_path, "train-pair")
    single = start(single_dir)
    ranks = start_ranks(pair_dir, 2)
    processes += [single, *ranks]
    deadline = time.monotonic() + 60
    while not list((pair_dir / "checkpoints").glob("step-*.safetensors")):
        for rank in ranks:
            assert rank.poll() is None, f"a rank ended early: {rank.communicate()[1]}"
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.002)
    for rank in ranks:
        rank.send_signal(signal.SIGKILL)
        rank.wait()
    assert not (pair_dir / "results.json").exists(), "the job finished before the kill"

    # Every rank resumes from the same checkpoint (train() checks it) and finishes the job.
    ranks = start_ranks(pair_dir, 2)
    processes += ranks
    (pair_results, rank0_log), (rank1_result, rank1_log) = map(returned, ranks)
    single_results, _ = returned(single)
    assert "resuming from" in rank0_log and "resuming from" in rank1_log

    # Rank 0 alone reports and writes; rank 1 returns None and leaves no files of its own.
    assert rank1_result is None
    assert pair_results == json.loads((pair_dir / "results.json").read_text())
    files = [sorted(path.name for path in d.iterdir()) for d in (pair_dir, single_dir)]
    assert files[0] == files[1]
    metrics, expected = (read_metrics(d / "metrics.jsonl") for d in (pair_dir, single_dir))
    assert [m["step"] for m in metrics] == [m["step"] for m in expected] == [10, 20, 30, 40]

    # Same up to floating-point reduction order: the batch gradient is summed over two halves
    # and then across ranks instead of in one pass. Measured: weights differ by ~3e-8 at most
    # (values up to 0.15), losses by ~1e-6, the same entries survive the top-k; the tolerances
    # leave ~100x room, while a wrong batch slice or weighting moves weights by ~lr = 1e-2.
    weights = load_model(pair_dir / "model.safetensors").state_dict()
    reference = load_model(single_dir / "model.safetensors").state_dict()
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
        assert torch.equal(weights[name] != 0, tensor != 0), name
    for got, want in zip(metrics, expected, strict=True):
        for key in ("loss", "heldout_loss", "grad_norm"):
            assert got[key] == pytest.approx(want[key], rel=1e-4), (got["step"], key)
        assert got["kept_fraction_per_tensor"] == want["kept_fraction_per_tensor"]
    for key in ("heldout_loss", "train_loss"):
        assert pair_results[key] == pytest.approx(single_results[key], rel=1e-4), key
    for key in ("n_params", "n_nonzero", "tokens", "steps"):
        assert pair_results[key] == single_results[key], key
    cpu = describe_device(torch.device("cpu"))  # e.g. cpu:AVX2
    assert (pair_results["device"], single_results["device"]) == (f"2x{cpu}", cpu)
