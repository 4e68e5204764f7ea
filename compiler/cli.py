"""The ``xcompile`` command line: parse, load the recipe, compile, hand off.

Exit codes are decided in ``main`` only: 0 ok, 1 a job failed, 2 bad input, 128 + the signal
when stopped (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from compiler import estimate
from compiler.plan import Plan, compile_plan
from compiler.sweep import SweepPoint, load_points
from compiler.timing import PlanTiming, time_plan
from compiler.workspace import materialize, reasons
from runtime.executors.base import JOB_KINDS
from runtime.job import JOBS_DIR
from spec.errors import Problem, RecipeError
from spec.recipe import PruneSpec, Recipe

if TYPE_CHECKING:
    from runtime.executors.base import Executor, RunSummary

DEFAULT_WORKSPACE = Path("xcompile-runs")


class _PlainFlagHelp:
    """Typer's rich help prints a type for every flag (`--help <bool>`); a flag takes no value."""

    def get_help_option(self, ctx: Any) -> TyperOption | None:  # ctx: typer's own click
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class _Group(_PlainFlagHelp, TyperGroup):
    pass


class _Command(_PlainFlagHelp, TyperCommand):
    """Arguments without typer's Python types beside them (`RECIPE <list[Path]>`): the
    metavars say what they take. The docstring's paragraphs are re-flowed to the terminal:
    typer's rich mode keeps every line break of the source, which splits each line in two in
    an 80-column terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            paragraphs = inspect.cleandoc(self.help).split("\n\n")
            self.help = "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]


app = typer.Typer(
    name="xcompile",
    help="Compile YAML recipes into weight-sparse transformer training, circuit pruning and a "
    "DuckDB results store.\n\nStart with: xcompile run recipes/quickstart.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
    cls=_Group,
)
out = Console()
err = Console(stderr=True)
command = functools.partial(app.command, cls=_Command)


class BadInput(Exception):
    """Bad arguments, SQL or store state: exit code 2 with this message."""


class JobsFailed(Exception):
    """At least one job failed: exit code 1."""


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP during a run: exit code 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C would be, so the executor stops the running job
    exactly as for Ctrl-C (a `timeout` or a closed terminal must not leave it running)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


RecipeArg = Annotated[
    Path, typer.Argument(help="The recipe YAML file.", metavar="RECIPE", show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="PATH=VALUE",
                 help="Override a field, e.g. --set train.lr=0.02 (repeatable)."),
]
WorkspaceOpt = Annotated[
    Path | None,
    # \\[ : rich markup would take [default: …] for a style tag and drop it
    typer.Option("--workspace", "-w", metavar="DIR",
                 help="Workspace folder \\[default: ./xcompile-runs]."),
]

OutputOpt = Annotated[
    Path | None, typer.Option("-o", "--output", help="Write to a file.", metavar="FILE")
]


def _load(recipe_path: Path, overrides: list[str] | None) -> tuple[Recipe, list[SweepPoint]]:
    return load_points(recipe_path, overrides or [])


def _workspace(option: Path | None) -> Path:
    return (option or DEFAULT_WORKSPACE).resolve()


def _compile(recipe_path: Path, overrides: list[str] | None, workspace: Path) -> Plan:
    recipe, points = _load(recipe_path, overrides)
    return compile_plan(recipe, points, workspace)


@command()
def validate(
    recipes: Annotated[
        list[Path], typer.Argument(help="Recipe files.", metavar="RECIPE", show_default=False)
    ],
    set_: SetOpt = None,
) -> None:
    """Check recipes (syntax, types, ranges, sweeps, task names) without running anything.

    Example: xcompile validate recipes/*.yaml
    """
    problems: list[Problem] = []
    for path in recipes:
        try:
            recipe, points = _load(path, set_)
        except RecipeError as error:
            problems.extend(error.problems)
            continue
        out.print(f"[green]ok[/] {path}: {recipe.name}, {len(points)} sweep point(s)")
    if problems:
        raise RecipeError(problems)


@command()
def plan(
    recipe: RecipeArg,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plan as JSON.", metavar="")
    ] = False,
    limit: Annotated[int, typer.Option(help="Jobs to list individually.", metavar="N")] = 20,
) -> None:
    """Show what `run` would do: jobs per stage, cache hits, and why each job (re-)runs.

    Example: xcompile plan recipes/quickstart.yaml --set train.lr=0.02
    """
    ws = _workspace(workspace)
    compiled = _compile(recipe, set_, ws)
    why = reasons(compiled, ws)
    timing = time_plan(compiled, ws)
    train_jobs = compiled.stage("train")
    # only the models that will train: a cached one costs nothing
    to_train = [job for job in train_jobs if job.key not in compiled.done]
    flops = sum(estimate.job_training_flops(job.config) for job in to_train)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "recipe": compiled.recipe.name,
                    "recipe_hash": compiled.recipe_hash,
                    "workspace": str(ws),
                    "points": [p.values for p in compiled.points],
                    "train_flops": flops,
                    "stages": {kind: _stage_json(compiled, timing, kind) for kind in JOB_KINDS},
                    "est_wall_s": timing.total_s,
                    "jobs": [
                        {
                            "name": j.name,
                            "kind": j.kind,
                            "key": j.key,
                            "deps": list(j.deps),
                            "labels": list(j.labels),
                            "cached": j.key in compiled.done,
                            "why": why.get(j.key),
                            **_job_timing(timing, j.key),
                        }
                        for j in compiled.jobs.values()
                    ],
                }
            )
        )
        return
    table = Table(title=f"plan: {compiled.recipe.name} ({len(compiled.points)} sweep points)")
    for column in ("stage", "jobs", "cached", "to run", "est. wall"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for kind in JOB_KINDS:
        jobs = compiled.stage(kind)
        cached = sum(job.key in compiled.done for job in jobs)
        stage = timing.stages.get(kind)
        wall = "" if stage is None else "?" if stage.seconds is None else _duration(stage.seconds)
        table.add_row(kind, str(len(jobs)), str(cached), str(len(jobs) - cached), wall)
    out.print(table)
    _print_timing(timing)
    tokens = sum(int(job.config["train"]["tokens"]) for job in to_train
                 if job.config.get("control") != "random_init")
    # random_init controls are train jobs that train nothing
    untrained = sum(job.config.get("control") == "random_init" for job in to_train)
    controls = f" (+{untrained} untrained control(s))" if untrained else ""
    cached_models = len(train_jobs) - len(to_train)
    cached_note = f" ({cached_models} cached)" if cached_models else ""
    if to_train:
        out.print(
            f"training: {len(to_train) - untrained} model(s) to train{controls}{cached_note}, "
            f"{_si(tokens, billion='B')} tokens in all, ≈ {_si(flops)}FLOP (6·N·D)"
        )
    elif train_jobs:
        out.print(f"training: nothing to train{cached_note}")
    pending = compiled.pending()
    if not pending:
        out.print("[green]everything is cached[/]")
        return
    jobs_table = Table("job", "sweep point / task", "why it runs", title="jobs to run")
    for job in pending[:limit]:
        label = job.labels[0] + (f" (+{len(job.labels) - 1})" if len(job.labels) > 1 else "")
        jobs_table.add_row(job.name, label, why[job.key])
    out.print(jobs_table)
    if len(pending) > limit:
        out.print(f"… and {len(pending) - limit} more (--limit N, or --json for all)")


def _stage_json(compiled: Plan, timing: PlanTiming, kind: str) -> dict[str, Any]:
    jobs = compiled.stage(kind)
    cached = sum(job.key in compiled.done for job in jobs)
    stage = timing.stages.get(kind)
    return {
        "jobs": len(jobs),
        "cached": cached,
        "to_run": len(jobs) - cached,
        # nothing to run takes no time; null: nothing in the workspace to time it from
        "est_wall_s": 0.0 if stage is None else stage.seconds,
        "untimed": None if stage is None else stage.reason,
        "timed_on_other_hosts": [] if stage is None else sorted(stage.hosts),
    }


def _job_timing(timing: PlanTiming, key: str) -> dict[str, Any]:
    """A pending job's estimate and where it comes from (or why there is none)."""
    estimate = timing.jobs.get(key)
    if estimate is None:  # cached
        return {"est_wall_s": None, "est_wall_from": None}
    return {"est_wall_s": estimate.seconds, "est_wall_from": estimate.reason}


def _print_timing(timing: PlanTiming) -> None:
    """The expected wall time of the jobs to run, and which stages could not be timed."""
    if not timing.stages:
        return
    untimed = [stage for stage in timing.stages.values() if stage.seconds is None]
    total = timing.total_s
    if total is not None:
        line = f"expected wall time: ≈ {_duration(total)}, from this workspace's past jobs"
    elif len(untimed) < len(timing.stages):
        line = (f"expected wall time: ≥ {_duration(timing.timed_s)}, from this workspace's past "
                "jobs; not timed:")
    else:
        line = "expected wall time: not known"
    out.print(line, highlight=False)
    for stage in untimed:
        out.print(f"  {stage.kind}: {stage.reason}", highlight=False)
    for stage in timing.stages.values():
        if stage.hosts:
            hosts = ", ".join(sorted(stage.hosts))
            out.print(f"  {stage.kind}: timed from jobs that ran on {hosts}, not this machine",
                      highlight=False)


def _duration(seconds: float) -> str:
    """Seconds under a minute (a tiny job's estimate must not read 0m00s), else 1m05s, 2h10m."""
    from runtime.executors.local import duration

    return f"{seconds:.1f}s" if seconds < 59.5 else duration(seconds)


def _si(value: float, billion: str = "G") -> str:
    units = (("E", 1e18), ("P", 1e15), ("T", 1e12), (billion, 1e9), ("M", 1e6), ("K", 1e3))
    for unit, size in units:
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


@command()
def run(
    recipe: RecipeArg,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
    backend: Annotated[
        str | None,
        typer.Option(metavar="BACKEND",
                     help="local or slurm \\[default: the recipe's resources.backend]."),
    ] = None,
    detach: Annotated[
        bool, typer.Option(help="slurm: return once the plan is queued; `status` follows it.",
                           metavar="")
    ] = False,
) -> None:
    """Run a recipe: tokenize, train, prune and ingest, skipping everything already done.

    The ingest loads whatever finished into the store once the jobs have ended, failed ones
    or not; on SLURM it is also queued as a last job behind them, so a detached run's store
    fills in on the cluster.

    Each job runs under a lock on its folder: a job that another `xcompile run` (or a hand-run
    command) is running is skipped, with that process's pid and host, and its dependents wait
    for the next run. Ctrl-C, SIGTERM and SIGHUP stop the running job (exit 130, 143, 129);
    a training job resumes from its last checkpoint next time.

    Example: xcompile run recipes/quickstart.yaml --set train.tokens=2M
    """
    ws = _workspace(workspace)
    compiled = _compile(recipe, set_, ws)
    chosen = backend or compiled.recipe.resources.backend
    if chosen not in ("local", "slurm"):
        raise BadInput(f"--backend: unknown backend {chosen!r} (local or slurm)")
    pending = compiled.pending()
    cached = len(compiled.jobs) - len(pending)
    err.print(
        f"{compiled.recipe.name}: {len(compiled.jobs)} jobs, {cached} cached, "
        f"{len(pending)} to run on {chosen} in {ws}"
    )
    materialize(compiled, ws)
    summary = _run(compiled, ws, chosen, detach)
    if summary is None:
        return  # detached: the ingest queued behind the jobs loads the store on the cluster
    ingest_error = _ingest_after_run(ws)
    if summary.busy:
        err.print(
            f"[yellow]{len(summary.busy)} job(s) are running in another process[/] (not touched), "
            f"{len(summary.waiting)} wait for them: run again once they finish",
            highlight=False,
        )
    _report_not_found(compiled, ws)
    if ingest_error is None:  # the table is the store's
        _print_groundtruth(compiled, ws)
    if not summary.ok:
        raise JobsFailed(
            f"{len(summary.failed)} job(s) failed, {len(summary.skipped)} skipped "
            "because their inputs failed; finished jobs are cached"
        )
    if ingest_error is not None:
        raise JobsFailed(f"ingest failed: {ingest_error}; the jobs are cached, "
                         "`xcompile ingest` loads them")
    err.print(f"[green]done[/]: {len(summary.done)} ran, {cached} cached")


def _ingest_after_run(ws: Path) -> str | None:
    """Load what finished into the store, failed jobs or not (ingest is idempotent and cheap:
    a folder already loaded is not read again); why it could not, or None."""
    from results.ingest import ingest as ingest_workspace
    from results.store import StoreError

    try:
        err.print(str(ingest_workspace(ws)), highlight=False)
    except StoreError as error:
        err.print(f"[bold red]FAILED[/] ingest: {error}", highlight=False, soft_wrap=True)
        return str(error)
    return None


def _report_not_found(compiled: Plan, ws: Path) -> None:
    """Name every circuit of the plan that was not found (cached ones too): a missing circuit
    leaves its run out of the frontier plot, which must not pass unnoticed."""
    from results.frontier import circuits_not_found

    prune_jobs = {job.name: job for job in compiled.stage("prune")}
    missing = circuits_not_found(ws / job.rel_dir for job in prune_jobs.values())
    real = [m for m in missing if not prune_jobs[m.job].config.get("control")]
    lines = []
    if real:
        lines.append(f"{len(real)} circuit(s) not found; their runs are left out of the frontier:")
        lines += [f"  {m.job} ({prune_jobs[m.job].labels[0]}): {m.reason}" for m in real]
    if len(missing) > len(real):  # a control that finds nothing is what it is there to show
        lines.append(f"{len(missing) - len(real)} control circuit(s) not found, as a control "
                     "should not (`xcompile query \"select * from circuits where control is not "
                     "null\"`)")
    if lines:
        sys.stderr.write("\n".join(lines) + "\n")  # plain: long reasons must not be re-wrapped


def _print_groundtruth(compiled: Plan, ws: Path) -> None:
    """The ground-truth suite's table, for the plan's groundtruth jobs that finished (read from
    the store, which the run's ingest has just loaded)."""
    from results.groundtruth import suite_table

    # a job's label is "<sweep point>/<shape>[/prune_seed=…]"
    settings = {job.key: job.labels[0].split("/")[0] for job in compiled.stage("groundtruth")}
    if settings:
        with _store_errors():
            out.print(suite_table(ws, settings))


def _run(compiled: Plan, ws: Path, backend: str, detach: bool) -> RunSummary | None:
    """Hand the plan to its executor; SIGTERM and SIGHUP stop it as Ctrl-C does."""
    from runtime.executors.base import BackendError

    try:
        with _stop_on_signals():
            return _executor(compiled, ws, backend, detach).run(compiled)
    except BackendError as error:
        raise BadInput(str(error)) from None
    except KeyboardInterrupt as stop:
        raise Interrupted(getattr(stop, "signum", signal.SIGINT)) from None


def _executor(compiled: Plan, ws: Path, backend: str, detach: bool) -> Executor:
    if backend == "slurm":
        from results.ingest import ingest as ingest_workspace
        from runtime.executors.slurm import SlurmExecutor

        # queued behind the jobs, so that the store fills in on the cluster when detached
        return SlurmExecutor(ws, compiled.recipe.resources,
                             lambda line: err.print(line, highlight=False), detach,
                             finish=ingest_workspace)
    from runtime.executors.local import LocalExecutor

    return LocalExecutor(ws, err)


@command()
def cancel(recipe: RecipeArg, set_: SetOpt = None, workspace: WorkspaceOpt = None) -> None:
    """Cancel a recipe's queued and running SLURM jobs; finished jobs stay cached.

    Example: xcompile cancel recipes/paper.yaml
    """
    from runtime.executors.slurm import cancel as cancel_jobs

    ws = _workspace(workspace)
    cancelled = cancel_jobs(ws, _compile(recipe, set_, ws))
    err.print(f"cancelled {len(cancelled)} job(s)")


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """Store and query problems are bad input (exit 2), with DuckDB's message, no traceback."""
    from results.query import QueryError
    from results.store import StoreError

    try:
        yield
    except QueryError as error:
        raise BadInput(error.detail) from None
    except StoreError as error:
        raise BadInput(str(error)) from None


@command()
def query(
    sql: Annotated[
        str,
        typer.Argument(help="SQL over the store (read-only).", metavar="SQL", show_default=False),
    ],
    workspace: WorkspaceOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, csv, json or parquet.", metavar="FORMAT")
    ] = "table",
    output: OutputOpt = None,
) -> None:
    """Query the results store with SQL. Tables: runs, train_metrics, circuits, circuit_nodes,
    circuit_edges, prune_trials, groundtruth, jobs (runs and circuits are the current rows of
    runs_all and circuits_all, which keep those superseded by a re-run under newer code); views:
    frontier, matched, task_edges, circuit_spread, families, circuit_density (docs/store.md has
    every column). The store is opened read-only: statements that would change it fail.

    Example: xcompile query "select task, n_edges, achieved_loss from circuits" --format csv
    """
    from results.query import run_query

    if fmt == "parquet" and output is None:
        raise BadInput("--format parquet needs -o FILE")
    with _store_errors():
        result = run_query(_workspace(workspace), sql, fmt, output if fmt == "parquet" else None)
    if fmt == "parquet":
        err.print(f"wrote {output}")
    elif output is not None:
        output.write_text(str(result), encoding="utf-8")
    else:
        sys.stdout.write(str(result).rstrip("\n") + "\n")


@command()
def frontier(
    workspace: WorkspaceOpt = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="PNG file.", metavar="FILE")
    ] = Path("frontier.png"),
    protocol: Annotated[
        str | None,
        typer.Option(metavar="PROTOCOL",
                     help="The protocol to plot (see `select distinct protocol from frontier`) "
                     "\\[default: the one with most complete runs]."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(metavar="TASK",
                     help="Plot this task's circuits instead of the geometric mean over tasks, "
                     "for the runs whose model does the task (full-model loss within the "
                     "threshold); e.g. when one task's zero-edge circuits make every mean 0."),
    ] = None,
) -> None:
    """Plot pretraining loss against circuit size (geometric mean of edges over tasks, or one
    task's edges), with the Pareto front; dense and sparse runs distinguished. Every run the
    plot leaves out (a circuit not found, another protocol, not pruned yet) is listed with the
    reason, and each sparse run's ratio to the loss-matched dense circuits is printed.

    Example: xcompile frontier -o frontier.png --task while_return_true
    """
    from results.frontier import (
        check_task,
        default_protocol,
        describe_left_out,
        describe_matched,
        left_out,
        left_out_of_task,
        matched_families,
        matched_runs,
    )
    from results.plots import plot_frontier
    from results.store import StoreError

    ws = _workspace(workspace)
    with _store_errors():
        chosen = protocol or default_protocol(ws)
        if task is not None:
            check_task(ws, chosen, task)
        left = describe_left_out(left_out(ws, chosen) if task is None
                                 else left_out_of_task(ws, chosen, task))
        try:
            path = plot_frontier(ws, output, chosen, task)
        except StoreError as error:
            raise StoreError(f"{error}\n{left}".rstrip()) from None
        matched = describe_matched(matched_runs(ws, chosen, task), task,
                                   matched_families(ws, chosen, task))
    sys.stderr.write(f"wrote {path} (protocol {chosen})\n" + (left + "\n" if left else "")
                     + (matched + "\n" if matched else ""))


@command()
def report(
    workspace: WorkspaceOpt = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="HTML file.", metavar="FILE")
    ] = Path("report.html"),
) -> None:
    """Write one self-contained HTML page: the frontier, runs, training curves and a diagram
    of every circuit.

    Example: xcompile report -o report.html
    """
    from results.report import render_report

    with _store_errors():
        path = render_report(_workspace(workspace), output)
    err.print(f"wrote {path}")


@command()
def show(
    key: Annotated[
        str, typer.Argument(help="A job key or folder-name prefix.", metavar="KEY",
                            show_default=False)
    ],
    workspace: WorkspaceOpt = None,
) -> None:
    """Show one job: resolved config, state, results, log tail and the command to re-run it.
    A prefix that matches several jobs (e.g. `train-`) lists them, one per line.

    Example: xcompile show train-3f2a
    """
    from results.jobs import AmbiguousJob
    from results.show import show_job

    ws = _workspace(workspace)
    with _store_errors():
        try:
            page = show_job(ws, key)
        except AmbiguousJob as ambiguous:
            page = f"{len(ambiguous.matches)} jobs match {key!r}; show one by name:\n" + "\n".join(
                f"  {path.name}" for path in ambiguous.matches)
        sys.stdout.write(page.rstrip("\n") + "\n")


@command()
def circuit(
    keys: Annotated[list[str], typer.Argument(
        help="A prune job key or folder-name prefix; two to compare them side by side.",
        metavar="KEY…", show_default=False)],
    workspace: WorkspaceOpt = None,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="HTML file (default: <workspace>/circuits/<prune job>.html).",
        metavar="FILE",
        show_default=False)] = None,
) -> None:
    """Write one self-contained page that draws a circuit: nodes by layer and site, edges by
    sign and weight, and each node's evidence on hover or click.

    Example: xcompile circuit prune-3f2a -o circuit.html
    """
    from results.circuit_page import default_page_path, render_circuit_page

    ws = _workspace(workspace)
    with _store_errors():
        path = render_circuit_page(ws, keys, output or default_page_path(ws, keys[0]))
    err.print(f"wrote {path}")


@command()
def ingest(workspace: WorkspaceOpt = None) -> None:
    """Load finished job folders into the store (idempotent; `run` does this at its end).

    Example: xcompile ingest -w xcompile-runs
    """
    from results.ingest import ingest as ingest_workspace

    with _store_errors():
        err.print(str(ingest_workspace(_workspace(workspace))))


@command()
def tasks(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.", metavar="")] = False,
    score: Annotated[
        bool,
        typer.Option("--score", metavar="",
                     help="Instead: how well every trained model of the workspace does each "
                     "task — the full model's task loss on held-out pairs, as its prune jobs "
                     "measure it first (chance is ln 2 = 0.693 for two answers). Choose "
                     "prune.tasks from it: only a task the model does has a circuit worth "
                     "pruning."),
    ] = False,
    pairs: Annotated[
        int, typer.Option("--pairs", min=1, metavar="N",
                          help="Held-out pairs per task with --score (a recipe's "
                          "prune.heldout_pairs gives its prune jobs' own numbers).")
    ] = 128,
    workspace: WorkspaceOpt = None,
) -> None:
    """List the task suite: each task's answers and one example minimal pair; with --score,
    each trained model's loss on every task.

    Example: xcompile tasks --score -w xcompile-runs
    """
    if score:
        _score_tasks(_workspace(workspace), pairs, as_json)
        return
    from runtime.tasks import describe_tasks

    rows = describe_tasks()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("task", "answers", "example: end of each prompt → answer", show_lines=True)
    for row in rows:
        example = row["example"]
        lines = [
            f"…{prompt[-40:]!r} → {answer!r}"
            for prompt, answer in zip(example["prompts"], example["answers"], strict=True)
        ]
        table.add_row(
            f"[bold]{row['name']}[/]\n{row['description']}",
            " / ".join(repr(c) for c in row["candidates"]),
            "\n".join(lines),
        )
    out.print(table)


def _score_tasks(ws: Path, n_pairs: int, as_json: bool) -> None:
    from runtime.pruning.scores import score_workspace

    if not (ws / JOBS_DIR).is_dir():
        raise BadInput(f"{ws}: no workspace here (no {JOBS_DIR}/ folder); pass -w")
    with err.status("scoring every task on every trained model…"):
        scores = score_workspace(ws, n_pairs=n_pairs)
    if not scores:
        raise BadInput(f"{ws}: no trained model yet (no finished train job)")
    if as_json:
        out.print_json(json.dumps([row.as_json() for row in scores]))
        return
    threshold = PruneSpec().loss_threshold  # the paper's
    scores.sort(key=lambda r: (r.control or "", r.n_layer, r.sparsity_target < 1, r.d_model,
                               -r.sparsity_target, r.seed))
    table = Table("task", *(f"{row.job.removeprefix('train-')[:6]}\nd{row.d_model}×{row.n_layer}\n"
                            f"k{row.sparsity_target:g} s{row.seed}"
                            + (f"\n{row.control}" if row.control else "") for row in scores),
                  title=f"full-model task loss on {n_pairs} held-out pairs; bold: ≤ "
                        f"{threshold:g} (the paper's threshold)", padding=(0, 1))
    for task in scores[0].losses:
        cells = []
        for row in scores:
            loss = row.losses[task]
            cells.append("–" if loss is None
                         else f"[bold]{loss:.3f}[/]" if loss <= threshold else f"{loss:.3f}")
        table.add_row(task, *cells)
    # its natural width, not the terminal's: a model per column, none of them cut short
    heads = [max(len(part) for part in str(column.header).splitlines())
             for column in table.columns]
    natural = len(max(scores[0].losses, key=len)) + sum(max(h, 5) + 3 for h in heads[1:]) + 4
    Console(width=max(out.width, natural), force_terminal=out.is_terminal).print(table)


@command()
def status(
    recipe: Annotated[
        Path | None,
        typer.Argument(help="A recipe: states of its plan's jobs.", metavar="RECIPE",
                       show_default=False),
    ] = None,
    set_: SetOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Show job states per stage (done, running, interrupted, new, failed) with what runs now
    (which process, step/total, loss, tokens/s, ETA), where each interrupted job resumes and why
    each failed one failed; for a recipe that ran on SLURM, its unfinished jobs' states come from
    SLURM accounting.

    Example: xcompile status recipes/quickstart.yaml
    """
    from results.jobs import job_dirs
    from results.status import details, job_lines, stage_table

    ws = _workspace(workspace)
    if recipe is None:
        folders = {path.name: path for path in job_dirs(ws)}
        backend_states: dict[str, str] = {}
    else:
        compiled = _compile(recipe, set_, ws)
        folders = {job.name: ws / job.rel_dir for job in compiled.jobs.values()}
        backend_states = _backend_states(compiled, ws)
    if not folders:
        out.print(f"no jobs in {ws}")
        return
    lines = job_lines(folders, backend_states)
    out.print(f"jobs in {ws}", highlight=False)
    out.print(stage_table(lines))
    for line in details(lines, ws):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def _backend_states(compiled: Plan, ws: Path) -> dict[str, str]:
    """SLURM's states of the jobs that were submitted there (job name → state, lower case)."""
    from runtime.executors.slurm import NOT_SUBMITTED, RECORD_FILE, status

    if not any((ws / job.rel_dir / RECORD_FILE).is_file() for job in compiled.pending()):
        return {}
    names = {job.key: job.name for job in compiled.jobs.values()}
    return {
        names[key]: state.lower()
        for key, state in status(ws, compiled).items()
        if state != NOT_SUBMITTED
    }


@command()
def schema(
    output: OutputOpt = None,
) -> None:
    """Print the JSON Schema of recipes, for editor completion and validation.

    Example: xcompile schema -o recipe.schema.json
    """
    text = json.dumps(Recipe.model_json_schema(), indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")


def main(argv: list[str] | None = None) -> None:
    # Usage errors are click's (exit 2); ours are mapped here, the one place exit codes live.
    try:
        app(args=argv)
    except (RecipeError, BadInput) as error:
        _fail(str(error) if isinstance(error, RecipeError) else f"error: {error}", 2)
    except JobsFailed as error:
        _fail(f"error: {error}", 1)
    except Interrupted as stop:
        _fail(f"interrupted ({stop}): finished jobs are cached; the running job resumes next "
              "time", 128 + stop.signum)


def _fail(message: str, code: int) -> None:
    # Plain text, not rich: long file paths must not be wrapped or marked up.
    sys.stderr.write(message.rstrip() + "\n")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
