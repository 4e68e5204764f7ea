"""The local executor: plain progress lines (what a log or CI sees instead of the live bar),
and two runs of one workspace sharing its jobs."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from compiler.plan import compile_plan
from compiler.sweep import expand
from compiler.workspace import materialize
from runtime.executors.local import LocalExecutor, PlainLines, describe_progress
from runtime.job import LOG_FILE, START_MARK
from spec.loader import load_recipe


def lines_of(sink: io.StringIO) -> list[str]:
    return sink.getvalue().splitlines()


def test_the_first_progress_line_comes_as_soon_as_the_eta_is_known_then_every_interval() -> None:
    sink = io.StringIO()
    plain = PlainLines(Console(file=sink, width=200), every_s=3600.0)
    plain.start("train-abc")
    plain.update({"step": 1, "total_steps": 10})  # no pace yet: nothing to tell
    plain.update({"step": 2, "total_steps": 10, "eta_s": 80.0})
    plain.update({"step": 3, "total_steps": 10, "eta_s": 70.0})  # within the interval
    plain.end("train-abc", None)
    assert lines_of(sink)[0] == "start train-abc"
    assert [line for line in lines_of(sink) if "ETA" in line] == [
        "train-abc:  step 2/10  ETA 1m20s"
    ]
    assert lines_of(sink)[-1].startswith("done train-abc in ")


def test_each_job_gets_its_own_first_eta_line() -> None:
    sink = io.StringIO()
    plain = PlainLines(Console(file=sink, width=200), every_s=3600.0)
    for name in ("train-a", "train-b"):
        plain.start(name)
        plain.update({"step": 2, "total_steps": 4, "eta_s": 5.0})
        plain.end(name, None)
    assert sum("ETA" in line for line in lines_of(sink)) == 2


def test_plain_lines_without_an_eta_say_how_long_the_job_has_run() -> None:
    sink = io.StringIO()
    plain = PlainLines(Console(file=sink, width=200), every_s=0.0)
    plain.start("prune-abc")
    plain.update({"phase": "discretise", "trial": 1, "trials": 4})
    (line,) = [line for line in lines_of(sink) if line.startswith("prune-abc:")]
    assert line.endswith("running 0m00s"), line


def test_a_prune_jobs_progress_says_where_it_is_in_which_phase() -> None:
    assert describe_progress({"phase": "optimise", "step": 119, "steps": 300,
                              "task_loss": 0.2}) == ["optimise 120/300"]
    assert describe_progress({"phase": "discretise", "trial": 1, "trials": 4, "loss": 0.1}) == [
        "loss 0.100", "discretise trial 2/4"]


TINY = """\
name: tiny
data: {corpus: synthetic, max_bytes: 60K, vocab_size: 300, context: 16}
model: {n_layer: 1, d_model: 16, d_head: 8}
train: {tokens: 8K, batch_size: 4, eval_every: 50, eval_tokens: 256, checkpoint_every: 20}
prune: {tasks: [while_return_true], steps: 4, batch_size: 8, train_pairs: 16,
        heldout_pairs: 8, test_pairs: 8, mean_tokens: 1K, loss_threshold: 5.0}
"""


def test_a_job_another_run_finished_since_the_plan_was_made_is_not_run_again(
    tmp_path: Path,
) -> None:
    # Two runs of one workspace share its jobs out: each skips what the other is running
    # (tests/compiler/test_run_processes.py) and what the other has finished meanwhile.
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY, encoding="utf-8")
    workspace = tmp_path / "ws"
    spec, doc = load_recipe(recipe, [])
    plan = compile_plan(spec, expand(spec, doc), workspace)
    materialize(plan, workspace)
    first = LocalExecutor(workspace, Console(file=io.StringIO())).run(plan)
    assert first.ok and len(first.done) == len(plan.pending())

    sink = io.StringIO()
    second = LocalExecutor(workspace, Console(file=sink, width=200)).run(plan)  # a stale plan
    assert second.ok and sorted(second.done) == sorted(first.done)
    for job in plan.jobs.values():
        log = (workspace / job.rel_dir / LOG_FILE).read_text(errors="replace")
        assert log.count(START_MARK) == 1, job.name
    assert sink.getvalue().count("finished by another run meanwhile") == len(plan.jobs)
