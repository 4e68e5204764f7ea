"""Every command README.md and its lab notebook (docs/reproduction.md) show is executed, on a
quickstart-shaped workspace (a dense and a weight-sparse model, two task circuits each) built by
a tiny recipe through the real CLI.

A README command with no invocation below fails the coverage test, so a new example cannot slip
through untested. SLURM commands are checked for `--help` only; the two scripts and the bench
programs (minutes each) for existing and parsing.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from tiny import tiny_recipe

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# README's reproduction section keeps its experiments' details in a notebook of their own
DOCS = README + (ROOT / "docs" / "reproduction.md").read_text(encoding="utf-8")

# The quickstart's shape (sweep of a dense and a sparse model, two tasks) at seconds of work.
TINY_QUICKSTART = tiny_recipe(
    "quickstart", train={"tokens": "20K"}, sweep={"sparsity.target": [1.0, 0.25]},
    prune={"tasks": ["while_return_true", "with_as"], "steps": 2, "train_pairs": 8,
           "heldout_pairs": 8, "mean_tokens": "1K"})

# README's bad-recipe example, reproduced line for line.
BAD_RECIPE = """\
name: bad
seed: 0
model:
  n_layr: 2
train:
  lr: 0.01
  batch_size: "16"
sparsity:
  target: 0.25
  anneal:
    curve: linear
    start: 0.6
    end: 0.5
"""

R, SQL = "tiny.yaml", "select * from runs"
# README command → the argument lists that execute it (placeholders filled in, optional parts
# tried one by one).
INVOCATIONS: dict[str, list[list[str]]] = {
    "xcompile run": [["run", R]],
    # the suite itself runs in tests/compiler/test_run_groundtruth.py, at seconds of work
    "xcompile run recipes/groundtruth.yaml": [["plan", str(ROOT / "recipes/groundtruth.yaml")]],
    "xcompile run R [--backend local|slurm] [--detach]": [["run", R, "--backend", "local"]],
    "xcompile run R --backend slurm": [["run", "--help"]],
    "xcompile cancel R": [["cancel", "--help"]],
    "xcompile validate R…": [["validate", R, str(ROOT / "recipes/quickstart.yaml")]],
    "xcompile plan": [["plan", R]],
    "xcompile plan R [--json]": [["plan", R], ["plan", R, "--json"]],
    "xcompile status R": [["status", R]],
    "xcompile status [R]": [["status"], ["status", R]],
    "xcompile query": [["query", SQL]],
    'xcompile query "SQL" [-f table|csv|json|parquet] [-o FILE]': [
        ["query", SQL, "-f", fmt] for fmt in ("table", "csv", "json")
    ] + [["query", SQL, "-f", "parquet", "-o", "runs.parquet"]],
    "xcompile frontier -o frontier.png": [["frontier", "-o", "frontier.png"]],
    "xcompile frontier -o frontier.png [--task TASK]": [
        ["frontier", "-o", "frontier.png"],
        ["frontier", "-o", "frontier.png", "--task", "while_return_true"]],
    "xcompile frontier -o frontier.png --task while_return_true": [
        ["frontier", "-o", "frontier.png", "--task", "while_return_true"]],
    # the tiny workspace prunes no quote circuit: the same flag on a task it has
    "xcompile frontier --task single_double_quote": [
        ["frontier", "--task", "while_return_true"]],
    "xcompile frontier -o frontier.png --task single_double_quote": [
        ["frontier", "-o", "frontier.png", "--task", "while_return_true"]],
    "xcompile report -o report.html": [["report", "-o", "report.html"]],
    "xcompile show train-": [["show", "train-"]],
    "xcompile show KEY": [["show", "KEY"]],
    "xcompile ingest": [["ingest"]],
    "xcompile tasks": [["tasks"]],
    "xcompile tasks [--score]": [["tasks"], ["tasks", "--score"], ["tasks", "--score", "--json"]],
    "xcompile tasks --score": [["tasks", "--score"]],
    "xcompile schema": [["schema"]],
    "xcompile schema -o recipe.schema.json": [["schema", "-o", "recipe.schema.json"]],
    "xcompile report": [["report"]],
    "xcompile frontier": [["frontier"]],
    "xcompile show": [["show", "PRUNE"]],
    "xcompile circuit prune-3f2a -o circuit.html": [["circuit", "PRUNE", "-o", "circuit.html"]],
    "xcompile circuit KEY -o circuit.html": [["circuit", "PRUNE", "-o", "circuit.html"]],
    "xcompile circuit KEY [KEY2] [-o FILE]": [["circuit", "PRUNE"],
                                               ["circuit", "PRUNE", "PRUNE2", "-o", "two.html"]],
    "xcompile circuit DENSE SPARSE -o compare.html": [
        ["circuit", "PRUNE", "PRUNE2", "-o", "compare.html"]],
}


def readme_commands() -> set[str]:
    """Commands in ```sh blocks and in `inline code` that starts with a program name."""
    commands = {
        line.split("  #")[0].strip()
        for block in re.findall(r"```sh\n(.*?)```", DOCS, flags=re.DOTALL)
        for line in block.splitlines()
    }
    commands |= {span.replace("\\|", "|")
                 for span in re.findall(r"`((?:xcompile|bash|python) [^`]*)`", DOCS)}
    return {command for command in commands if command}


def invocations(command: str) -> list[list[str]]:
    """How a README command is executed here. A shipped recipe's `run` is planned instead: its
    overrides must parse and its plan compile, but a test does not train its models."""
    if command.startswith("xcompile run recipes/"):
        _, _, recipe, *rest = shlex.split(command)
        return [["plan", str(ROOT / recipe), *plan_options(rest)]]
    if command not in INVOCATIONS and command.startswith('xcompile query "'):
        return [shlex.split(command)[1:]]  # a literal query: it must bind to the store's schema
    return INVOCATIONS[command]


def plan_options(run_options: list[str]) -> list[str]:
    """A `run` command's options that `plan` takes too: all but where and how jobs run."""
    kept, skip = [], False
    for option in run_options:
        if skip:
            skip = False
        elif option == "--backend":
            skip = True  # and its value
        elif option not in ("--detach", "--no-detach"):
            kept.append(option)
    return kept


def xcompile_commands() -> list[str]:
    return sorted(command for command in readme_commands() if command.startswith("xcompile "))


def test_every_readme_command_has_an_invocation() -> None:
    for command in xcompile_commands():
        assert invocations(command), command
    assert set(INVOCATIONS) <= set(xcompile_commands())  # no stale entries


def test_scripts_and_bench_programs_named_in_readme_exist_and_parse() -> None:
    others = [command for command in readme_commands() if not command.startswith("xcompile ")]
    assert others
    for command in others:
        program, script = shlex.split(command)[:2]
        assert (ROOT / script).is_file(), command
        check = ["bash", "-n"] if program == "bash" else [sys.executable, "-m", "py_compile"]
        assert subprocess.run([*check, str(ROOT / script)]).returncode == 0, command


def _xcompile(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny recipe and its finished default workspace (./xcompile-runs)."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / R).write_text(TINY_QUICKSTART, encoding="utf-8")
    result = _xcompile(folder, "run", R)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize("command", xcompile_commands())
def test_readme_command_runs(quickstart: Path, command: str) -> None:
    train = sorted(p.name for p in (quickstart / "xcompile-runs/jobs").glob("train-*"))
    assert len(train) == 2  # the quickstart's shape: one dense, one sparse model
    prune = sorted(p.name for p in (quickstart / "xcompile-runs/jobs").glob("prune-*"))
    placeholders = {"KEY": train[0][:12], "PRUNE": prune[0], "PRUNE2": prune[-1]}
    for args in invocations(command):
        args = [placeholders.get(arg, arg) for arg in args]
        result = _xcompile(quickstart, *args)
        assert result.returncode == 0, (args, result.stderr)
        if "-o" in args:
            assert (quickstart / args[args.index("-o") + 1]).stat().st_size > 0, args
        else:
            assert result.stdout or result.stderr, args
        if args[0] == "show" and args[1] == "train-":
            assert all(f"  {name}" in result.stdout for name in train)


def test_every_circuit_of_the_quickstart_has_its_counted_edges_and_nodes_as_rows(
    quickstart: Path,
) -> None:
    # README's edge rule, in the store: one circuit_edges row per counted edge (issue 14)
    store = quickstart / "xcompile-runs" / "store.duckdb"
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute(
            "SELECT c.key, c.n_nodes, c.n_edges, "
            "(SELECT count(*) FROM circuit_nodes n WHERE n.prune_key = c.key), "
            "(SELECT count(*) FROM circuit_edges e WHERE e.prune_key = c.key) "
            "FROM circuits c WHERE c.found").fetchall()
    assert rows, "the quickstart found no circuit"
    for key, n_nodes, n_edges, node_rows, edge_rows in rows:
        assert (node_rows, edge_rows) == (n_nodes, n_edges), key


def test_readme_bad_recipe_example_prints_what_readme_shows(tmp_path: Path) -> None:
    block = README.split("$ xcompile plan bad.yaml", 1)[1].split("```", 1)[0]
    command, *shown = ("xcompile plan bad.yaml" + block).strip().splitlines()
    (tmp_path / "bad.yaml").write_text(BAD_RECIPE, encoding="utf-8")
    result = _xcompile(tmp_path, *shlex.split(command)[1:])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    printed = result.stderr.strip().splitlines()
    assert len(printed) == len(shown)
    for line, expected in zip(printed, shown, strict=True):
        assert line.startswith(expected.removesuffix("…)")), (line, expected)
