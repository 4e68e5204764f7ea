"""Compile a ~1,000-job plan, submit it to SLURM (one array per stage, then the ingest job, as
`xcompile run` does), then cancel it all.

    sudo scripts/slurm-cluster.sh start
    python bench/slurm_submit.py [--partition debug]

Prints the time of each phase and the number of sbatch calls (one per stage array, not one per
job). Nothing is left queued: everything submitted is cancelled, and the bench waits (bounded)
until squeue shows none of it.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from compiler.plan import compile_plan
from compiler.sweep import expand
from compiler.workspace import materialize
from results.ingest import ingest
from runtime.executors.slurm import SlurmExecutor, cancel, job_name
from spec.loader import load_recipe
from spec.stages import STAGES

# 200 models x 3 tasks: 1 tokenize + 200 train + 200 stats + 600 prune = 1,001 jobs (+ the ingest)
RECIPE = """\
name: bench-slurm
prune: {tasks: [single_double_quote, bracket_counting, set_or_string]}
sweep:
  sparsity.target: [%s]
resources: {backend: slurm, slurm: {partition: %s, cpus_per_task: 1, time: 10min}}
"""


def ours_queued(workspace: Path) -> int:
    names = ",".join(job_name(workspace, kind) for kind in STAGES)
    out = subprocess.run(["squeue", "-h", "-r", "-n", names, "-o", "%i"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return len(out.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partition", default="debug")
    parser.add_argument("--models", type=int, default=200)
    args = parser.parse_args()
    targets = ", ".join(str(round(0.001 + i * 0.9 / args.models, 6)) for i in range(args.models))
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        path = Path(tmp) / "bench.yaml"
        path.write_text(RECIPE % (targets, args.partition), encoding="utf-8")
        started = time.perf_counter()
        recipe, doc = load_recipe(path)
        plan = compile_plan(recipe, expand(recipe, doc), workspace)
        materialize(plan, workspace)
        compiled = time.perf_counter()
        submission = SlurmExecutor(workspace, recipe.resources, finish=ingest).submit(plan)
        submitted = time.perf_counter()
        cancelled = cancel(workspace, plan)
        if submission.finish is not None:  # `cancel` leaves the ingest; the bench leaves nothing
            submission.finish.cancel(check=False)
        cancel_done = time.perf_counter()
        deadline = time.monotonic() + 60
        while (left := ours_queued(workspace)) and time.monotonic() < deadline:
            time.sleep(0.5)
        gone = time.perf_counter()
    print(f"jobs: {len(plan.jobs):,} + the ingest in {len(submission.arrays)} arrays "
          f"({', '.join(f'{k} {a}' for k, a in submission.arrays.items())})")
    print(f"compile + materialize: {compiled - started:.2f} s")
    print(f"submit (sbatch x{len(submission.arrays)}, held, then released): "
          f"{submitted - compiled:.2f} s")
    print(f"cancel ({len(cancelled):,} jobs, one scancel): {cancel_done - submitted:.2f} s; "
          f"out of squeue after {gone - cancel_done:.1f} s" + (f" ({left} left!)" if left else ""))
    print(f"compile + submit: {submitted - started:.2f} s")


if __name__ == "__main__":
    main()
