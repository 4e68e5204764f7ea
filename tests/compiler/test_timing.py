"""`plan`'s wall-time estimates, timed from a real workspace: one tiny recipe run once (about ten
seconds), then planned with changes, so each pending job's estimate can be checked against the
finished job it was scaled from."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tiny import tiny_recipe

from compiler.estimate import job_training_flops
from compiler.plan import Plan, compile_plan
from compiler.sweep import load_points
from compiler.timing import time_plan

SEARCH = {"search": {"trials": 2}}
RECIPE = tiny_recipe("timed", prune=SEARCH)
# The same recipe with a second model of twice the tokens: the first is cached.
SWEPT = tiny_recipe("timed", prune=SEARCH, sweep={"train.tokens": ["40K", "80K"]})


def xcompile(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(recipe, workspace) after one real run of the recipe."""
    root = tmp_path_factory.mktemp("timing")
    recipe = root / "timed.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    (root / "swept.yaml").write_text(SWEPT, encoding="utf-8")
    result = xcompile("run", str(recipe), "-w", str(root / "ws"))
    assert result.returncode == 0, result.stderr
    return recipe, root / "ws"


def finished(ws: Path, kind: str) -> dict[str, Any]:
    """The one finished job of ``kind``: its config, run time and start-up, read from its files."""
    (job_dir,) = [d for d in (ws / "jobs").glob(f"{kind}-*") if (d / "results.json").is_file()]
    results = json.loads((job_dir / "results.json").read_text())
    lock = json.loads((job_dir / "lock").read_text())
    return {
        "config": json.loads((job_dir / "config.json").read_text()),
        "run_s": results["finished_at"] - results["started_at"],
        "startup_s": results["started_at"] - lock["since"],
    }


def plan_json(recipe: Path, ws: Path, *overrides: str) -> dict[str, Any]:
    args = [arg for override in overrides for arg in ("--set", override)]
    result = xcompile("plan", str(recipe), "-w", str(ws), "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pending(plan: dict[str, Any], kind: str) -> dict[str, Any]:
    (job,) = [job for job in plan["jobs"] if job["kind"] == kind and not job["cached"]]
    return job


def compiled(recipe: Path, ws: Path, *overrides: str) -> Plan:
    spec, points = load_points(recipe, list(overrides))
    return compile_plan(spec, points, ws)


def test_a_pending_train_job_is_scaled_from_the_finished_one(ran: tuple[Path, Path]) -> None:
    recipe, ws = ran
    plan = plan_json(recipe, ws, "train.tokens=80K")
    train, stats, prune = (finished(ws, kind) for kind in ("train", "stats", "prune"))
    # twice the tokens, the same model: twice the FLOPs, so twice the run time, plus start-up
    assert plan["train_flops"] == 2 * job_training_flops(train["config"])
    expected = train["startup_s"] + 2 * train["run_s"]
    assert pending(plan, "train")["est_wall_s"] == pytest.approx(expected, rel=1e-9)
    assert "1 past train job(s) of 16,064 parameters" in pending(plan, "train")["est_wall_from"]
    # stats: the median of its past jobs (one); prune: the same model and work as the past one
    for kind, past in (("stats", stats), ("prune", prune)):
        assert pending(plan, kind)["est_wall_s"] == pytest.approx(
            past["startup_s"] + past["run_s"], rel=1e-9)
    stages = plan["stages"]
    assert stages["tokenize"] == {"jobs": 1, "cached": 1, "to_run": 0, "est_wall_s": 0.0,
                                  "untimed": None, "timed_on_other_hosts": []}
    assert stages["train"]["est_wall_s"] == pending(plan, "train")["est_wall_s"]
    assert plan["est_wall_s"] == pytest.approx(
        sum(stage["est_wall_s"] for stage in stages.values()), rel=1e-9)
    assert all(job["est_wall_s"] is None for job in plan["jobs"] if job["cached"])


def test_a_prune_job_is_scaled_by_its_work_and_cached_models_cost_nothing(
    ran: tuple[Path, Path],
) -> None:
    recipe, ws = ran
    prune = finished(ws, "prune")
    # three times the steps and twice the trials on the same model: six times the work
    plan = plan_json(recipe, ws, "prune.steps=12", "prune.search.trials=4")
    assert pending(plan, "prune")["est_wall_s"] == pytest.approx(
        prune["startup_s"] + 6 * prune["run_s"], rel=1e-9)
    assert plan["train_flops"] == 0 and plan["stages"]["train"]["to_run"] == 0
    text = xcompile("plan", str(recipe), "-w", str(ws), "--set", "prune.steps=12").stdout
    assert "training: nothing to train (1 cached)" in text
    assert "expected wall time: ≈ " in text


def test_flops_count_only_the_models_that_will_train(ran: tuple[Path, Path]) -> None:
    recipe, ws = ran
    swept = recipe.with_name("swept.yaml")
    plan = plan_json(swept, ws)
    train = finished(ws, "train")
    assert plan["stages"]["train"]["cached"] == 1 and plan["stages"]["train"]["to_run"] == 1
    assert plan["train_flops"] == 2 * job_training_flops(train["config"])  # the 80K model only
    text = xcompile("plan", str(swept), "-w", str(ws)).stdout
    assert "training: 1 model(s) to train (1 cached), 80K tokens in all, ≈ 7.96GFLOP" in text


def test_a_fresh_workspace_has_nothing_to_time_from(ran: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    recipe, _ = ran
    plan = plan_json(recipe, tmp_path / "fresh")
    assert plan["est_wall_s"] is None
    assert set(plan["stages"]) == {"tokenize", "train", "stats", "prune", "groundtruth"}
    for kind in ("tokenize", "train", "stats", "prune"):
        stage = plan["stages"][kind]
        assert stage["est_wall_s"] is None
        assert stage["untimed"] == f"no past {kind} job in this workspace to time from"
    text = xcompile("plan", str(recipe), "-w", str(tmp_path / "fresh")).stdout
    assert "expected wall time: not known" in text
    assert "train: no past train job in this workspace to time from" in text


def test_jobs_of_this_host_come_first_and_others_are_named(ran: tuple[Path, Path]) -> None:
    recipe, ws = ran
    plan = compiled(recipe, ws, "train.tokens=80K")
    here = time_plan(plan, ws)
    elsewhere = time_plan(plan, ws, host="another-machine")
    assert here.stages["train"].hosts == set()
    # no job of that host: the estimate is the same, from this one's, and says so
    assert elsewhere.stages["train"].hosts == {socket.gethostname()}
    assert elsewhere.stages["train"].seconds == here.stages["train"].seconds


def test_a_resumed_train_job_is_no_rate_and_the_nearest_model_size_is(
    ran: tuple[Path, Path], tmp_path: Path,
) -> None:
    recipe, original = ran
    ws = tmp_path / "ws"
    shutil.copytree(original, ws)
    train = finished(ws, "train")
    (job_dir,) = [d for d in (ws / "jobs").glob("train-*") if (d / "results.json").is_file()]
    # A past job of a 4x wider model whose run took 100 s: the 16-wide one must still be timed
    # from the 16-wide past job, and a 64-wide one from the wider job.
    wide = ws / "jobs" / "train-000000000000"
    shutil.copytree(job_dir, wide)
    config = json.loads((wide / "config.json").read_text())
    config["model"]["d_model"] = 64
    (wide / "config.json").write_text(json.dumps(config))
    results = json.loads((wide / "results.json").read_text())
    results["finished_at"] = results["started_at"] + 100.0
    (wide / "results.json").write_text(json.dumps(results))
    narrow = time_plan(compiled(recipe, ws, "train.tokens=80K"), ws).stages["train"]
    assert narrow.seconds == pytest.approx(train["startup_s"] + 2 * train["run_s"], rel=1e-9)
    wider = time_plan(compiled(recipe, ws, "model.d_model=64", "train.tokens=80K"), ws)
    assert wider.stages["train"].seconds == pytest.approx(train["startup_s"] + 200.0, rel=1e-9)
    # The narrow job's last attempt resumed: it trained only part of its tokens, so it is no
    # rate, and a narrow model is timed from the wide job's rate instead.
    with (job_dir / "log.txt").open("a") as log:
        log.write("resuming from checkpoints/step-00000020.safetensors at step 20\n")
    resumed = time_plan(compiled(recipe, ws, "train.tokens=80K"), ws).stages["train"]
    flops = 2 * job_training_flops(train["config"])
    wide_flops = job_training_flops(config)
    assert resumed.seconds == pytest.approx(
        train["startup_s"] + flops * 100.0 / wide_flops, rel=1e-9)
