"""A job kind's code version covers every project module it can import, and nothing else."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.code_version import DISPATCHER, ROOT, closure, code_version, entry_module

KINDS = ("tokenize", "train", "stats", "prune")
PACKAGES = ("spec", "compiler", "runtime", "results")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's packages, to edit."""
    root = tmp_path / "project"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


def edit(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")


def versions(root: Path) -> dict[str, str]:
    return {kind: code_version(kind, root) for kind in KINDS}


def test_a_copy_of_the_project_has_the_same_versions(project: Path) -> None:
    # what makes comparing an edited copy with ROOT meaningful below
    assert versions(project) == versions(ROOT)


@pytest.mark.parametrize(
    ("module", "changed"),
    [
        ("runtime/training/distributed.py", {"train", "stats", "prune"}),
        ("spec/recipe.py", {"tokenize", "train", "stats", "prune"}),
        ("runtime/pruning/circuit.py", {"prune"}),
        # found by runtime/tasks' own discovery; the synthetic corpus speaks the tasks' words
        ("runtime/tasks/strings.py", {"tokenize", "prune"}),
        ("spec/tasks.py", {"tokenize", "train", "stats", "prune"}),  # via spec/recipe.py
        ("results/ingest.py", set()),  # no job imports the results layer
        ("results/report.py", set()),
        ("compiler/cli.py", set()),
    ],
)
def test_editing_a_module_changes_exactly_the_kinds_that_import_it(
    project: Path, module: str, changed: set[str]
) -> None:
    # versions are cached per process and project folder: only the edited copy is ever read
    before = versions(ROOT)
    edit(project / module)
    after = versions(project)
    assert {kind for kind in KINDS if before[kind] != after[kind]} == changed


def test_train_closure_reaches_the_training_code_and_not_pruning() -> None:
    modules = closure((DISPATCHER, entry_module("train")), ROOT)
    assert {"runtime.training.distributed", "runtime.training.train", "runtime.model",
            "spec.recipe", "runtime.job"} <= modules.keys()
    assert not any(name.startswith(("runtime.pruning", "results")) for name in modules)


PLAN = """\
import sys
from pathlib import Path
from compiler.plan import compile_plan
from compiler.sweep import expand
from compiler.workspace import materialize
from spec.loader import load_recipe
recipe, doc = load_recipe(Path(sys.argv[1]))
materialize(compile_plan(recipe, expand(recipe, doc), Path(sys.argv[2])), Path(sys.argv[2]))
"""


def test_plan_says_the_train_code_changed_after_an_edit_to_the_model_spec(
    project: Path, tmp_path: Path
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\ndata: {corpus: synthetic}\n", encoding="utf-8")
    workspace = tmp_path / "ws"

    def python(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=project, capture_output=True,
                              text=True, timeout=120, check=True)
        return done.stdout

    def plan() -> dict[str, dict[str, str]]:
        out = python("-m", "compiler.cli", "plan", str(recipe), "-w", str(workspace), "--json")
        return {job["kind"]: job for job in json.loads(out)["jobs"]}

    python("-c", PLAN, str(recipe), str(workspace))  # a run that compiled its jobs
    first = plan()
    edit(project / "results" / "report.py")
    assert {kind: job["key"] for kind, job in plan().items()} == {
        kind: job["key"] for kind, job in first.items()
    }
    recipe_py = project / "spec" / "recipe.py"
    text = recipe_py.read_text(encoding="utf-8")
    line = 'description="MLP width; 4·d_model when unset."'
    assert line in text
    recipe_py.write_text(text.replace(line, 'description="MLP width (4·d_model if unset)."'),
                         encoding="utf-8")
    train = plan()["train"]
    assert train["key"] != first["train"]["key"]
    assert "code of the train job changed" in train["why"]
