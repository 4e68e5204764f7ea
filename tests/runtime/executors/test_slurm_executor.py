"""The SLURM executor on the real single-node cluster: arrays, dependencies, requeue, failures.

Plans are compiled from a tiny recipe exactly as the CLI does (load → expand → compile →
materialize). Every wait is bounded; each test cancels whatever it left queued.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console
from safetensors.torch import load_file

from compiler.plan import Plan, compile_plan
from compiler.sweep import expand
from compiler.workspace import materialize
from results.ingest import ingest
from results.query import fetch
from runtime.executors.base import JobSpec
from runtime.executors.local import LocalExecutor
from runtime.executors.slurm import (
    ACTIVE,
    COMPLETED,
    RECORD_FILE,
    SKIPPED,
    SlurmError,
    SlurmExecutor,
    cancel,
    job_name,
    stage_parameters,
    status,
)
from runtime.io import read_json
from runtime.job import FAILED_FILE, LOG_FILE
from runtime.training.train import describe_device
from spec.loader import load_recipe
from spec.recipe import ResourcesSpec, SlurmSpec, SlurmStage

REPO = Path(__file__).resolve().parents[3]
# The dense point trains for minutes, the sparse one for a moment.
LONG_VICTIM = "sweep={zip: [{sparsity.target: [1.0, 0.5], train.tokens: [4M, 8K]}]}"
VICTIM, BYSTANDER = "sparsity.target=1.0,train.tokens=4M", "sparsity.target=0.5,train.tokens=8K"
VARYING = re.compile(r"time|per_s|_at$")
FOLLOW_S = float(os.environ.get("XCOMPILE_SLURM_TEST_FOLLOW_S", "240"))
CPU = describe_device(torch.device("cpu"))  # the SLURM node is this machine
TINY: dict[str, Any] = {
    "seed": 0,
    "data": {"corpus": "synthetic", "max_bytes": "60K", "vocab_size": 300, "context": 16},
    "model": {"n_layer": 1, "d_model": 32, "d_head": 8, "d_mlp": 64},
    "train": {"tokens": "8K", "batch_size": 4, "eval_every": 50, "eval_tokens": 256,
              "checkpoint_every": 20, "device": "cpu"},
    "sparsity": {"target": 0.5},
    "prune": {"tasks": ["single_double_quote"], "steps": 5, "train_pairs": 16,
              "heldout_pairs": 8, "batch_size": 8, "mean_tokens": "1K"},
}


def compile_tiny(tmp_path: Path, workspace: Path, partition: str, *, sweep: bool = True,
                 overrides: tuple[str, ...] = (), **slurm: Any) -> Plan:
    """Compile and materialize the tiny recipe, exactly as `xcompile run` does."""
    recipe = {"name": "tiny", **TINY,
              "sweep": {"sparsity.target": [1.0, 0.5]} if sweep else {},
              "resources": {"backend": "slurm", "slurm": {
                  "partition": partition, "cpus_per_task": 1, "time": "10min", **slurm}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    spec, doc = load_recipe(path, list(overrides))
    plan = compile_plan(spec, expand(spec, doc), workspace)
    materialize(plan, workspace)
    return plan


def executor_for(plan: Plan, workspace: Path) -> SlurmExecutor:
    """As the CLI makes it: the ingest queued behind every submission that queues anything."""
    return SlurmExecutor(workspace, plan.recipe.resources, finish=ingest)


# a row of sacct in one of these has more to tell; with -D a requeued run's row stays REQUEUED
UNSETTLED = ACTIVE - {"REQUEUED"}


def sacct(job_id: str, fields: str, *flags: str) -> list[list[str]]:
    """``fields`` of each of ``job_id``'s rows, once accounting has recorded how they all ended:
    slurmdbd hears from slurmctld asynchronously, so a job can be gone from squeue while sacct
    still says PENDING (seen in CI on a loaded machine)."""
    def rows() -> list[list[str]]:
        out = subprocess.run(["sacct", "-n", "-X", "-P", *flags, "-j", job_id, "-o",
                              f"State,{fields}"], capture_output=True, text=True, timeout=20,
                             check=True).stdout
        return [line.split("|") for line in out.splitlines() if line.strip()]

    last: list[list[str]] = []

    def settled() -> bool:
        last[:] = rows()
        return bool(last) and not any(row[0].split()[0] in UNSETTLED for row in last)

    wait_for(settled, f"accounting of job {job_id}", 60)
    return [row[1:] for row in last]


def ours_in_squeue(workspace: Path) -> list[str]:
    names = ",".join(job_name(workspace, kind) for kind in
                     ("tokenize", "train", "stats", "prune", "ingest"))
    out = subprocess.run(["squeue", "-h", "-n", names, "-o", "%i %j %T"], capture_output=True,
                         text=True, timeout=20, check=True).stdout
    return out.splitlines()


def wait_for(condition: Any, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.3)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    ws = (tmp_path / "ws").resolve()
    yield ws
    # leave nothing of ours queued, whatever happened
    ids = [line.split()[0] for line in ours_in_squeue(ws)] if shutil.which("squeue") else []
    if ids:
        subprocess.run(["scancel", *ids], timeout=20, check=False)


def key_of(plan: Plan, kind: str, label: str) -> str:
    # prune labels carry the task: "<point>/<task>"
    return next(job.key for job in plan.stage(kind)
                if any(mine.split("/")[0] == label for mine in job.labels))


# --- no cluster needed ---------------------------------------------------------------------------
def test_stage_overrides_map_to_submitit_parameters() -> None:
    slurm = SlurmSpec(partition="cpu", account="lab", time=120, mem="8G", setup=["module load x"],
                      stages={"train": SlurmStage(partition="gpu", gpus_per_node=1, time=1440,
                                                  constraint="a100", array_parallelism=4,
                                                  additional={"exclusive": "user"})})
    assert stage_parameters(slurm, "prune") == {
        "slurm_partition": "cpu", "slurm_account": "lab", "timeout_min": 120, "slurm_mem": "8G",
        "slurm_setup": ["module load x"], "tasks_per_node": 1}
    assert stage_parameters(slurm, "train") == {
        "slurm_partition": "gpu", "slurm_account": "lab", "timeout_min": 1440,
        "slurm_mem": "8G", "gpus_per_node": 1, "slurm_constraint": "a100",
        "slurm_array_parallelism": 4, "slurm_setup": ["module load x"],
        "slurm_additional_parameters": {"exclusive": "user"}, "tasks_per_node": 1}
    assert stage_parameters(None, "ingest") == {"timeout_min": 24 * 60, "tasks_per_node": 1}


KILL_ON_BAD_EXIT = {"slurm_srun_args": ["--kill-on-bad-exit=1"]}


@pytest.mark.parametrize(("slurm", "train", "others"), [
    # one process per GPU by default, and the recipe-wide layout is training's alone
    (SlurmSpec(gpus_per_node=4, nodes=2),
     {"gpus_per_node": 4, "nodes": 2, "tasks_per_node": 4, **KILL_ON_BAD_EXIT},
     {"gpus_per_node": 4, "tasks_per_node": 1}),
    (SlurmSpec(gpus_per_node=1), {"gpus_per_node": 1, "tasks_per_node": 1},
     {"gpus_per_node": 1, "tasks_per_node": 1}),
    # an explicit count wins over the GPUs; several nodes of one task each are ranks too
    (SlurmSpec(gpus_per_node=8, tasks_per_node=2),
     {"gpus_per_node": 8, "tasks_per_node": 2, **KILL_ON_BAD_EXIT},
     {"gpus_per_node": 8, "tasks_per_node": 1}),
    (SlurmSpec(nodes=3), {"nodes": 3, "tasks_per_node": 1, **KILL_ON_BAD_EXIT},
     {"tasks_per_node": 1}),
    # CPU data parallelism: the train override alone
    (SlurmSpec(stages={"train": SlurmStage(tasks_per_node=2)}),
     {"tasks_per_node": 2, **KILL_ON_BAD_EXIT}, {"tasks_per_node": 1}),
])
def test_tasks_per_node_is_data_parallel_training_only(
        slurm: SlurmSpec, train: dict[str, Any], others: dict[str, Any]) -> None:
    assert stage_parameters(slurm, "train") == {"timeout_min": 24 * 60, **train}
    for kind in ("tokenize", "stats", "prune", "ingest"):
        assert stage_parameters(slurm, kind) == {"timeout_min": 24 * 60, **others}, kind


# --- on the cluster ------------------------------------------------------------------------------
@pytest.mark.slurm
def test_sweep_is_one_array_per_stage_and_prune_starts_after_train(
        tmp_path: Path, workspace: Path, partition: str) -> None:
    plan = compile_tiny(tmp_path, workspace, partition)
    started = time.monotonic()
    submission = executor_for(plan, workspace).submit(plan)
    submit_s = time.monotonic() - started
    assert sorted(submission.arrays) == ["ingest", "prune", "stats", "tokenize", "train"]
    assert len(submission.submitted) == len(plan.jobs) == 7  # the ingest is no job of the plan
    assert submission.finish is not None
    assert submission.arrays["ingest"] == str(submission.finish.job_id)
    for kind in {job.kind for job in plan.jobs.values()}:
        array = submission.arrays[kind]
        ids = {h.job_id.split("_")[0] for h in submission.handles.values() if h.kind == kind}
        assert ids == {array}, f"{kind} is not one array"
        for job in plan.stage(kind):
            assert read_json(workspace / job.rel_dir / RECORD_FILE)["job_id"].startswith(array)

    summary = executor_for(plan, workspace).follow(submission, timeout_s=FOLLOW_S)
    print(f"submit {submit_s:.2f}s, plan done in {time.monotonic() - started:.1f}s")
    assert summary.ok, summary
    assert sorted(summary.done) == sorted(plan.jobs)
    # accounting: prune tasks start only after every train task has ended (afterany on its array)
    train_end = max(row[1] for row in sacct(submission.arrays["train"], "Start,End"))
    prune_start = min(row[0] for row in sacct(submission.arrays["prune"], "Start,End"))
    assert prune_start >= train_end
    # and the ingest after every job: nobody else ingested, so it loaded all of them
    assert len(submission.finish.result().loaded) == len(plan.jobs)
    prune_end = max(row[1] for row in sacct(submission.arrays["prune"], "Start,End"))
    assert sacct(submission.arrays["ingest"], "Start")[0][0] >= prune_end
    for job in plan.jobs.values():
        assert (workspace / job.rel_dir / LOG_FILE).is_file(), job.name
    assert set(status(workspace, plan).values()) == {COMPLETED}


# `scontrol requeue` (SLURM restarts the job), and submitit's preemption signal (its handler calls
# our Checkpointable's checkpoint() and requeues the job itself)
INTERRUPTIONS = {"scontrol-requeue": ["scontrol", "requeue"],
                 "preemption-signal": ["scancel", "--signal=USR2"]}


@pytest.mark.slurm
@pytest.mark.parametrize(("how", "tasks"), [("scontrol-requeue", 1), ("preemption-signal", 1),
                                            # task 0 alone checkpoints and requeues
                                            ("preemption-signal", 2)])
def test_requeued_training_resumes_from_its_checkpoint_and_matches_uninterrupted(
        tmp_path: Path, workspace: Path, partition: str, how: str, tasks: int) -> None:
    # ~600 steps: long enough to requeue after a checkpoint and before the end
    plan = compile_tiny(tmp_path, workspace, partition, sweep=False,
                        stages={"train": {"tasks_per_node": tasks}},
                        overrides=("train.tokens=40K", "train.checkpoint_every=10"))
    executor = executor_for(plan, workspace)
    submission = executor.submit(plan)
    train = next(h for h in submission.handles.values() if h.kind == "train")
    checkpoints = train.job_dir / "checkpoints"
    wait_for(lambda: any(checkpoints.glob("step-*.safetensors")), "first checkpoint", 120)
    assert not (train.job_dir / "results.json").exists()
    subprocess.run([*INTERRUPTIONS[how], train.job_id], timeout=20, check=True)

    # the same ranks, uninterrupted: resuming must not change a bit (against one process, 600
    # steps of top-k masks drift by far more than test_two_task_gloo_training's tolerance)
    reference = train_by_hand(plan, workspace, train.job_dir, tmp_path / "reference", tasks)

    summary = executor.follow(submission, timeout_s=FOLLOW_S)
    assert summary.ok, summary
    log = (train.job_dir / LOG_FILE).read_text()
    assert "resuming from" in log
    if how == "preemption-signal":
        assert "Calling checkpoint method" in log and "Requeued job" in log
    else:
        assert "Bypassing signal SIGTERM" in log  # submitit lets SLURM's KillWait end it
    if tasks > 1:  # every rank resumed (train() checks they resumed from the same checkpoint)
        other = (train.job_dir / "log.rank1.txt").read_text()
        assert "resuming from" in other and "Not checkpointing nor requeuing" in other
    assert not (train.job_dir / FAILED_FILE).exists()
    # every run of the job, requeues included (-D)
    assert [row[0] for row in sacct(train.job_id, "State", "-D")] == ["REQUEUED", "COMPLETED"]
    assert_same_model(train.job_dir, reference, data_parallel=False)


def train_by_hand(plan: Plan, workspace: Path, job_dir: Path, reference: Path,
                  ranks: int = 1) -> Path:
    """Run the training job of ``job_dir`` once more, uninterrupted, as ``ranks`` local processes
    of one thread each (like SLURM tasks of one CPU), in workspace ``reference``; its job folder
    there. Needs the plan's tokenize job to have finished in ``workspace``."""
    tokenize = plan.stage("tokenize")[0]
    shutil.copytree(workspace / tokenize.rel_dir, reference / tokenize.rel_dir)
    copy = reference / job_dir.relative_to(workspace)
    copy.mkdir(parents=True)
    shutil.copy(job_dir / "config.json", copy)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    with socket.socket() as sock:  # a free port for the ranks' rendezvous (torchrun's variables)
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    launch = [{"RANK": str(rank), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port} if ranks > 1 else {}
              for rank in range(ranks)]
    processes = [subprocess.Popen([sys.executable, "-m", "runtime.job", str(copy)], cwd=REPO,
                                  env={**env, **variables}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for variables in launch]
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=180)
            assert process.returncode == 0, stderr
    finally:  # a rank whose peer failed would wait in a collective for 30 minutes
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return copy


@dataclass(frozen=True)
class Stages:
    """A plan cut down to some of its stages (PlanSpec), so a test queues only what it needs."""

    plan: Plan
    kinds: frozenset[str]

    @property
    def jobs(self) -> Mapping[str, JobSpec]:
        return {key: job for key, job in self.plan.jobs.items() if job.kind in self.kinds}

    @property
    def done(self) -> AbstractSet[str]:
        return self.plan.done

    def pending(self) -> Sequence[JobSpec]:
        return [job for job in self.plan.pending() if job.kind in self.kinds]


def assert_same_model(job_dir: Path, reference: Path, *, data_parallel: bool) -> None:
    """The two job folders' final weights are bit-identical; for a data-parallel run against one
    process, equal within tests/runtime/test_distributed.py's tolerance (its comment has the
    measured differences: reduction order changes the last bits) with the same nonzero entries."""
    weights = load_file(job_dir / "model.safetensors")
    expected = load_file(reference / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        if data_parallel:
            torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
            assert torch.equal(weights[name] != 0, tensor != 0), name
        else:
            assert torch.equal(weights[name], tensor), name


@pytest.mark.slurm
def test_two_task_gloo_training_matches_one_process(
        tmp_path: Path, workspace: Path, partition: str) -> None:
    # 40 steps of batch 4 (2 rows a rank) on a d_model-16 model: the cluster's 2 CPUs, one a rank
    plan = compile_tiny(tmp_path, workspace, partition, sweep=False,
                        stages={"train": {"tasks_per_node": 2}},
                        overrides=("model.d_model=16", "model.d_mlp=32",
                                   f"train.tokens={4 * 16 * 40}", "train.eval_every=20"))
    executor = executor_for(plan, workspace)
    submission = executor.submit(Stages(plan, frozenset({"tokenize", "train"})))
    assert sorted(h.kind for h in submission.handles.values()) == ["tokenize", "train"]
    train = next(h for h in submission.handles.values() if h.kind == "train")
    started = time.monotonic()
    summary = executor.follow(submission, timeout_s=FOLLOW_S)
    print(f"tokenize + 2-task train on SLURM in {time.monotonic() - started:.1f}s")
    assert summary.ok, summary
    results = train.result()
    assert results["device"] == f"2x{CPU}" and results["steps"] == 40
    assert read_json(train.job_dir / "config.json")["train"]["device"] == "cpu"
    # rank 0 alone wrote the job's files; rank 1 only its log
    names = sorted(path.name for path in train.job_dir.iterdir())
    assert [n for n in names if n.startswith(("results", "metrics", "failed"))] == [
        "metrics.jsonl", "results.json"]
    assert [n for n in names if n.startswith("log")] == ["log.rank1.txt", "log.txt"]
    assert "Traceback" not in (train.job_dir / "log.rank1.txt").read_text()

    reference = train_by_hand(plan, workspace, train.job_dir, tmp_path / "reference")
    assert read_json(reference / "results.json")["device"] == CPU
    assert_same_model(train.job_dir, reference, data_parallel=True)


@pytest.mark.slurm
def test_scancel_fails_that_job_the_rest_continues_and_rerun_submits_only_the_missing(
        tmp_path: Path, workspace: Path, partition: str) -> None:
    # the victim trains far longer than KillWait (5 s): submitit ignores SIGTERM, so a cancelled
    # job works on until SIGKILL, and a short one could finish first on an idle machine
    plan = compile_tiny(tmp_path, workspace, partition, overrides=(LONG_VICTIM,))
    executor = executor_for(plan, workspace)
    submission = executor.submit(plan)
    victim = submission.handles[key_of(plan, "train", VICTIM)]
    wait_for(lambda: (victim.job_dir / LOG_FILE).exists(), "victim running")
    subprocess.run(["scancel", victim.job_id], timeout=20, check=True)

    summary = executor.follow(submission, timeout_s=FOLLOW_S)
    assert list(summary.failed) == [victim.key]
    assert "CANCELLED" in summary.failed[victim.key]
    assert "CANCELLED" in read_json(victim.job_dir / FAILED_FILE)["error"]
    downstream = {job.key for job in plan.jobs.values() if victim.key in job.deps}
    downstream |= {job.key for job in plan.jobs.values() if set(job.deps) & downstream}
    assert set(summary.skipped) == downstream and len(downstream) == 2  # its stats and prune
    assert key_of(plan, "prune", BYSTANDER) in summary.done
    states = status(workspace, plan)
    assert states[victim.key].startswith("CANCELLED")
    assert {states[key] for key in downstream} == {SKIPPED}

    rerun = compile_tiny(tmp_path, workspace, partition, overrides=(LONG_VICTIM,))
    again = executor_for(rerun, workspace).submit(rerun)
    assert set(again.submitted) == {victim.key, *downstream}
    assert not again.in_flight and again.finish is not None
    # and a third submission while those are queued submits nothing at all, not even an ingest
    # (the second one's waits for them)
    third = executor_for(rerun, workspace).submit(compile_tiny(
        tmp_path, workspace, partition, overrides=(LONG_VICTIM,)))
    assert third.submitted == [] and set(third.in_flight) == set(again.submitted)
    assert third.finish is None and not third.arrays
    assert sorted(cancel(workspace, rerun)) == sorted(again.submitted)
    # cancel leaves the ingest, which then loads whatever finished, and ends
    wait_for(lambda: not ours_in_squeue(workspace), "cancelled jobs and the ingest leave squeue",
             90)
    assert sacct(str(again.finish.job_id), "State") == [["COMPLETED"]]


@pytest.mark.slurm
def test_a_failing_job_records_its_own_reason_and_its_dependents_are_skipped(
        tmp_path: Path, workspace: Path, partition: str) -> None:
    plan = compile_tiny(tmp_path, workspace, partition, sweep=False)
    train = plan.stage("train")[0]
    config = read_json(workspace / train.rel_dir / "config.json")
    config["model"]["d_head"] = 7  # does not divide d_model: the job fails at once
    (workspace / train.rel_dir / "config.json").write_text(json.dumps(config))
    executor = executor_for(plan, workspace)
    submission = executor.submit(plan)
    summary = executor.follow(submission, timeout_s=FOLLOW_S)
    assert list(summary.failed) == [train.key]
    assert summary.failed[train.key].startswith("ValidationError"), summary.failed
    assert read_json(workspace / train.rel_dir / FAILED_FILE)["error"] == summary.failed[train.key]
    assert {plan.jobs[key].kind for key in summary.skipped} == {"stats", "prune"}
    assert {plan.jobs[key].kind for key in summary.done} == {"tokenize"}
    assert submission.handles[train.key].state == "FAILED"
    assert submission.handles[plan.stage("tokenize")[0].key].result()["vocab_size"] == 300


@pytest.mark.slurm
def test_bad_partition_is_one_clear_error_and_nothing_is_queued(
        tmp_path: Path, workspace: Path, partition: str) -> None:
    # only prune's partition is wrong: the arrays before it are accepted, then taken back
    plan = compile_tiny(tmp_path, workspace, partition,
                        stages={"prune": {"partition": "no-such-partition"}})
    with pytest.raises(SlurmError) as error:
        executor_for(plan, workspace).submit(plan)
    message = str(error.value)
    assert "\n" not in message and "invalid partition" in message.lower(), message
    assert "prune" in message and "nothing was queued" in message, message
    assert ours_in_squeue(workspace) == []
    assert not list(workspace.glob(f"jobs/*/{RECORD_FILE}"))
    assert not list(workspace.glob(f"jobs/*/{LOG_FILE}")), "a job ran before the rollback"


@pytest.mark.slurm
def test_same_store_contents_as_the_local_backend(
        tmp_path: Path, workspace: Path, partition: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = compile_tiny(tmp_path, workspace, partition, sweep=False)
    executor = executor_for(plan, workspace)
    submission = executor.submit(plan)
    # the local run meanwhile, one thread like the SLURM jobs (identical float reductions)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    local_ws = tmp_path / "local"
    local_plan = compile_tiny(tmp_path, local_ws, partition, sweep=False)
    assert LocalExecutor(local_ws, Console(file=io.StringIO())).run(local_plan).ok
    ingest(local_ws)  # as `xcompile run` does after a local run
    assert executor.follow(submission, timeout_s=FOLLOW_S).ok
    # the SLURM workspace's store is the cluster's ingest job's, as after `run --detach`
    assert submission.finish is not None and submission.finish.result().loaded
    for table in ("runs", "train_metrics", "circuits", "circuit_nodes"):
        expected = stored(local_ws, table)
        assert stored(workspace, table) == expected, table
        assert expected or table == "circuit_nodes", f"{table} is empty"  # tiny: maybe no circuit


def stored(workspace: Path, table: str) -> list[dict[str, Any]]:
    """A table's rows, sorted, without what differs between any two runs (times, speeds)."""
    rows = fetch(workspace, f"select * from {table}").to_pylist()
    rows = [{k: v for k, v in row.items() if not VARYING.search(k)} for row in rows]
    return sorted(rows, key=repr)


def test_resources_default_to_the_recipe_wide_block() -> None:
    resources = ResourcesSpec(backend="slurm", slurm=SlurmSpec(partition="p", qos="high"))
    assert stage_parameters(resources.slurm, "train")["slurm_qos"] == "high"
