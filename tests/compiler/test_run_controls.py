"""`xcompile run` with controls: the control jobs run and land in the store, judged.

Kept to 9 jobs (each a subprocess): the dense baseline and seed fan-out are the plan's tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import duckdb
from tiny import tiny_recipe

Xcompile = Callable[..., subprocess.CompletedProcess[str]]  # the `xcompile` fixture

RECIPE = tiny_recipe("tiny-controls", train={"tokens": "20K", "checkpoint_every": 200},
                     controls=["random_init", "shuffled_task"])


def test_controls_and_pruning_seeds_land_in_the_store(tmp_path: Path, xcompile: Xcompile) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    ws = tmp_path / "ws"
    result = xcompile("run", str(recipe), "-w", str(ws))
    assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(ws / "store.duckdb"), read_only=True)
    runs = con.sql("SELECT control, tokens FROM runs ORDER BY control NULLS FIRST").fetchall()
    circuits = con.sql("SELECT c.control, r.control, c.found, c.not_distinguishable "
                       "FROM circuits c JOIN runs r ON r.key = c.run_key "
                       "ORDER BY c.control NULLS FIRST").fetchall()
    con.close()
    # the model and its untrained twin (0 tokens)
    assert runs[0][0] is None and runs[0][1] > 0 and runs[1] == ("random_init", 0)
    # the real circuit (judged: a loose threshold, so every control reaches it too), the
    # untrained twin's and the shuffled task's on the real model
    (real, untrained, shuffled) = circuits
    assert real[:3] == (None, None, True) and real[3] is not None
    assert untrained[:2] == ("random_init", "random_init")
    assert shuffled[:2] == ("shuffled_task", None) and shuffled[3] is None
