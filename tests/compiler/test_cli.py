"""The real `xcompile` command: exit codes, messages without tracebacks, plan output."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compiler.cli import app
from results import synthetic
from results.store import TABLES, VIEW_NAMES
from spec.loader import load_recipe

Xcompile = Callable[..., subprocess.CompletedProcess[str]]  # the `xcompile` fixture


RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate_and_plan(
    recipe: Path, tmp_path: Path, xcompile: Xcompile
) -> None:
    assert xcompile("validate", str(recipe)).returncode == 0
    result = xcompile("plan", str(recipe), "--json", "-w", str(tmp_path))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    kinds = {job["kind"] for job in plan["jobs"]}
    suite = load_recipe(recipe)[0].groundtruth
    models = set() if suite is not None and suite.only else {"tokenize", "train", "stats", "prune"}
    assert kinds == models | (set() if suite is None else {"groundtruth"})
    assert all(not job["cached"] for job in plan["jobs"])


def test_bad_recipe_exits_2_with_position_and_no_traceback(
    tmp_path: Path, xcompile: Xcompile
) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: x\ntrain:\n  lr: fast\n", encoding="utf-8")
    result = xcompile("plan", str(recipe), "-w", str(tmp_path))
    assert result.returncode == 2
    assert f"{recipe}:3:7: train.lr: Input should be a valid number" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_override_and_bad_arguments_exit_2(tmp_path: Path, xcompile: Xcompile) -> None:
    quickstart = str(RECIPES[[p.name for p in RECIPES].index("quickstart.yaml")])
    result = xcompile("validate", quickstart, "--set", "model.n_layer=0")
    assert result.returncode == 2
    assert (
        "--set model.n_layer=0: model.n_layer: Input should be greater than or equal to 1"
        in result.stderr
    )
    assert xcompile("plan").returncode == 2
    result = xcompile("run", quickstart, "--backend", "k8s", "-w", str(tmp_path))
    assert result.returncode == 2 and "unknown backend 'k8s'" in result.stderr
    assert not (tmp_path / "jobs").exists()  # nothing half-written
    scored = xcompile("tasks", "--score", "-w", str(tmp_path / "none"))
    assert scored.returncode == 2 and "no workspace here" in scored.stderr
    (tmp_path / "empty" / "jobs").mkdir(parents=True)
    scored = xcompile("tasks", "--score", "-w", str(tmp_path / "empty"))
    assert scored.returncode == 2 and "no trained model yet" in scored.stderr
    assert "Traceback" not in scored.stderr


def test_every_verb_has_help_with_an_example(xcompile: Xcompile) -> None:
    for verb in ("validate", "plan", "run", "schema"):
        result = xcompile(verb, "--help")
        assert result.returncode == 0 and "Example: xcompile" in result.stdout, verb


VERBS = sorted(command.name or command.callback.__name__ for command in app.registered_commands)


@pytest.mark.parametrize("verb", VERBS)
def test_help_shows_defaults_and_plain_metavars(verb: str) -> None:
    result = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "200"})
    text = result.stdout
    assert result.exit_code == 0 and "Example: xcompile" in text
    assert not re.search(r"<(bool|str|int|path|list\[\w+\])>", text, re.I), text  # typer's types
    if "--workspace" in text:
        assert "DIR" in text and "[default: ./xcompile-runs]" in text
    if "--set" in text:
        assert "PATH=VALUE" in text


def test_help_paragraphs_flow_to_the_terminal_width() -> None:
    # run's docstring breaks its second paragraph after "failed ones"; 200 columns hold the line
    text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).stdout
    assert "have ended, failed ones or not; on SLURM" in text


def test_query_help_names_every_table_and_view_a_researcher_reads() -> None:
    text = CliRunner().invoke(app, ["query", "--help"], env={"COLUMNS": "200"}).stdout
    bookkeeping = {"ingested", "bootstrap_draws", "store_meta"}
    assert [name for name in (*TABLES, *VIEW_NAMES)
            if name not in bookkeeping and name not in text] == []


def test_schema_is_json_schema(xcompile: Xcompile) -> None:
    schema = json.loads(xcompile("schema").stdout)
    assert schema["title"] == "Recipe" and "sparsity" in schema["properties"]


def test_query_is_read_only_and_bad_sql_exits_2(tmp_path: Path, xcompile: Xcompile) -> None:
    ws = tmp_path / "ws"
    train = synthetic.train_job(ws, sparsity_target=0.1, heldout_loss=2.0)
    synthetic.prune_job(ws, train, "single_double_quote", 40)
    assert xcompile("ingest", "-w", str(ws)).returncode == 0
    store = ws / "store.duckdb"
    before = store.read_bytes()
    for sql in ("delete from runs", "drop table circuits", "selec 1"):
        result = xcompile("query", sql, "-w", str(ws))
        assert result.returncode == 2 and "Traceback" not in result.stderr, sql
    assert store.read_bytes() == before
    rows = json.loads(
        xcompile("query", "select task, n_edges from circuits", "-w", str(ws), "-f", "json").stdout
    )
    assert rows == [{"task": "single_double_quote", "n_edges": 40}]


def test_circuit_writes_a_page_show_names_it_and_a_train_job_exits_2(
    tmp_path: Path, xcompile: Xcompile
) -> None:
    ws = tmp_path / "ws"
    train = synthetic.train_job(ws, sparsity_target=0.1, heldout_loss=2.0)
    prune = synthetic.prune_job(ws, train, "single_double_quote", 40)
    assert xcompile("ingest", "-w", str(ws)).returncode == 0
    page = ws / "circuits" / f"{prune.name}.html"
    assert f"xcompile circuit {prune.name}" in xcompile("show", prune.name, "-w", str(ws)).stdout
    done = xcompile("circuit", prune.name[:10], "-w", str(ws))
    assert done.returncode == 0 and page.is_file(), done.stderr
    assert "<svg" not in page.read_text() and "single_double_quote" in page.read_text()
    assert str(page) in xcompile("show", prune.name, "-w", str(ws)).stdout
    refused = xcompile("circuit", train.name, "-w", str(ws))
    assert refused.returncode == 2 and "give the key of a prune job" in refused.stderr
