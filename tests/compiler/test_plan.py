"""The plan shares identical work, keys are content hashes, and done jobs are cache hits."""

from __future__ import annotations

from pathlib import Path

from compiler.keys import diff_configs, job_key
from compiler.plan import compile_plan
from compiler.sweep import expand
from compiler.workspace import materialize, reasons
from runtime.io import read_json, write_json_atomic
from spec.loader import load_recipe

RECIPE = """\
name: t
prune: {tasks: [single_double_quote, bracket_counting]}
sweep:
  sparsity.target: [1.0, 0.1]
  prune.k_coef: [1.0e-4, 1.0e-3]
"""


def compile_text(tmp_path: Path, text: str = RECIPE, overrides: tuple[str, ...] = ()):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    recipe, doc = load_recipe(path, overrides)
    return compile_plan(recipe, expand(recipe, doc), tmp_path / "ws")


def test_identical_work_is_shared(tmp_path: Path) -> None:
    plan = compile_text(tmp_path)
    counts = {kind: len(plan.stage(kind)) for kind in ("tokenize", "train", "stats", "prune")}
    # 4 points, but k_coef only changes pruning: 1 tokenizer, 2 models, 2 stats, 2·2·2 prunes
    assert counts == {"tokenize": 1, "train": 2, "stats": 2, "prune": 8}
    train = plan.stage("train")[0]
    assert set(train.labels) == {
        "sparsity.target=1.0,prune.k_coef=0.0001",
        "sparsity.target=1.0,prune.k_coef=0.001",
    }


def test_every_dependency_comes_first(tmp_path: Path) -> None:
    plan = compile_text(tmp_path)
    seen: set[str] = set()
    for job in plan.jobs.values():
        assert set(job.deps) <= seen
        seen.add(job.key)
    prune = plan.stage("prune")[0]
    assert [plan.jobs[dep].kind for dep in prune.deps] == ["tokenize", "train", "stats"]
    assert prune.config["inputs"]["train"] == plan.jobs[prune.deps[1]].rel_dir


def test_keys_are_deterministic_and_sensitive(tmp_path: Path) -> None:
    first = compile_text(tmp_path)
    again = compile_text(tmp_path)
    assert list(first.jobs) == list(again.jobs)
    changed = compile_text(tmp_path, overrides=("train.lr=0.02",))
    assert first.stage("tokenize")[0].key == changed.stage("tokenize")[0].key
    assert {j.key for j in first.stage("train")}.isdisjoint(j.key for j in changed.stage("train"))
    assert job_key("train", "{}", ["x"], "v1") != job_key("train", "{}", ["x"], "v2")
    assert job_key("t", "{}", ["a", "b"], "v") == job_key("t", "{}", ["b", "a"], "v")


def test_done_jobs_are_cache_hits_and_reasons_explain_reruns(tmp_path: Path) -> None:
    plan = compile_text(tmp_path)
    workspace = tmp_path / "ws"
    materialize(plan, workspace)
    job_dir = workspace / plan.stage("tokenize")[0].rel_dir
    assert read_json(job_dir / "config.json")["key"] == plan.stage("tokenize")[0].key
    assert "-m runtime.job" in (job_dir / "command").read_text()
    for job in plan.stage("tokenize") + plan.stage("train"):
        write_json_atomic(workspace / job.rel_dir / "results.json", {"ok": True})
    replanned = compile_text(tmp_path)
    assert replanned.done == {j.key for j in plan.stage("tokenize") + plan.stage("train")}
    changed = compile_text(tmp_path, overrides=("train.lr=0.02",))
    why = reasons(changed, workspace)
    train_reasons = {why[job.key] for job in changed.stage("train")}
    assert train_reasons == {"changed: train.lr: 0.01 → 0.02"}
    assert why[changed.stage("prune")[0].key] == "upstream changed: stats, train"
    assert reasons(replanned, workspace)[replanned.stage("prune")[0].key] == (
        "started before but not finished"
    )


def test_diff_configs_names_fields() -> None:
    assert diff_configs({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3, "d": 4}}) == [
        "a.c: 2 → 3",
        "a.d: added (4)",
    ]
