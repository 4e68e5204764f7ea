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
    prune = replanned.stage("prune")[0]
    assert reasons(replanned, workspace)[prune.key] == "new"  # its folder is written, no more
    (workspace / prune.rel_dir / "log.txt").write_text("--- job started … ---\n")
    assert reasons(replanned, workspace)[prune.key] == "interrupted (starts again)"


def test_diff_configs_names_fields() -> None:
    assert diff_configs({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3, "d": 4}}) == [
        "a.c: 2 → 3",
        "a.d: added (4)",
    ]


SEEDED = """\
name: t
seeds: 3
prune: {tasks: [single_double_quote, bracket_counting], seeds: 2}
sweep:
  sparsity.target: [1.0, 0.1]
"""


def counts(plan) -> dict[str, int]:
    return {kind: len(plan.stage(kind)) for kind in ("tokenize", "train", "stats", "prune")}


def test_seeds_fan_out_models_and_pruning_over_one_tokenizer(tmp_path: Path) -> None:
    plan = compile_text(tmp_path, SEEDED)
    # 2 points x 3 model seeds, each pruned on 2 tasks x 2 pruning seeds
    assert counts(plan) == {"tokenize": 1, "train": 6, "stats": 6, "prune": 24}
    assert sorted({job.config["seed"] for job in plan.stage("train")}) == [0, 1, 2]
    # pruning seeds start at the model's seed and share its train and stats jobs
    for train in plan.stage("train"):
        prunes = [j for j in plan.stage("prune") if j.deps[1] == train.key]
        assert sorted({j.config["seed"] for j in prunes}) == [train.config["seed"],
                                                              train.config["seed"] + 1]
        assert len(prunes) == 4 and len({j.deps[2] for j in prunes}) == 1
    assert plan.points[1].label == "sparsity.target=1.0,seed=1"
    # prune.seeds alone adds prune jobs only; without seeds the keys are those of before
    unseeded = compile_text(tmp_path,
                            SEEDED.replace("seeds: 3\n", "").replace(", seeds: 2", ""))
    only_prune = compile_text(tmp_path, SEEDED.replace("seeds: 3\n", ""))
    assert counts(only_prune) == {"tokenize": 1, "train": 2, "stats": 2, "prune": 8}
    assert set(unseeded.jobs) <= set(only_prune.jobs)
    listed = compile_text(tmp_path, SEEDED.replace("seeds: 3", "seeds: [5, 9]"))
    assert sorted(j.config["seed"] for j in listed.stage("train")) == [5, 5, 9, 9]


def test_controls_compile_into_jobs_that_share_upstream_work(tmp_path: Path) -> None:
    text = """\
name: t
controls: [random_init, shuffled_task, dense_baseline]
prune: {tasks: [single_double_quote, bracket_counting]}
sweep:
  sparsity.target: [0.1, 0.05]
"""
    plan = compile_text(tmp_path, text)
    trains = plan.stage("train")
    by_control = {c: [j for j in trains if j.control == c]
                  for c in (None, "dense_baseline", "random_init")}
    # two sparse points, one dense baseline shared by both, an untrained twin of all three
    assert [len(by_control[c]) for c in by_control] == [2, 1, 3]
    assert by_control["dense_baseline"][0].config["sparsity"]["target"] == 1.0
    assert "control" not in by_control["dense_baseline"][0].config  # an ordinary dense job
    assert all(j.config["control"] == "random_init" for j in by_control["random_init"])
    assert len(plan.stage("tokenize")) == 1 and len(plan.stage("stats")) == 6
    # per model and task: the real circuit, the shuffled task on the same model and stats,
    # and the untrained twin's circuit
    prunes = plan.stage("prune")
    assert len(prunes) == 3 * 2 * 3
    shuffled = [j for j in prunes if j.config.get("control") == "shuffled_task"]
    real = [j for j in prunes if "control" not in j.config]
    assert len(shuffled) == len(real) == 6
    assert {j.deps for j in shuffled} == {j.deps for j in real}
    # a sweep that has the dense point already gets no second one
    with_dense = compile_text(tmp_path, text.replace("[0.1, 0.05]", "[1.0, 0.1]"))
    dense = [j for j in with_dense.stage("train")
             if j.config["sparsity"]["target"] == 1.0 and "control" not in j.config]
    assert len(dense) == 1 and dense[0].control is None


def test_seeds_and_controls_are_validated(tmp_path: Path) -> None:
    import pytest

    from spec.errors import RecipeError

    for bad, message in [
        ("seeds: 0", "greater than or equal to 1"),
        ("seeds: [1, 1]", "more than once"),
        ("controls: [random]", "random_init"),
        ("seeds: 2\nsweep: {seed: [0, 1]}", "'seed' is swept and `seeds` is set"),
    ]:
        with pytest.raises(RecipeError, match=message) as error:
            compile_text(tmp_path, f"name: t\n{bad}\n")
        assert "r.yaml:" in str(error.value)
