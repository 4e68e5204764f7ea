"""Time the results store: ingest of 1M training-metric rows, and the frontier over 10k runs.

    python bench/store.py [--metrics-format jsonl|parquet]

Goals: ingest of 1,000,000 ``train_metrics`` rows (100 train jobs × 10,000 logged steps, from job
folders) under 2 s; ``SELECT * FROM frontier`` over 10,000 runs × 3 tasks under 100 ms.
Writing the synthetic files is not timed.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from results import synthetic
from results.ingest import CIRCUITS_SCHEMA, RUNS_SCHEMA, ingest
from results.query import open_readonly
from results.store import connect, insert, store_path

METRIC_JOBS, METRIC_ROWS = 100, 10_000
FRONTIER_RUNS, TASKS = 10_000, ("single_double_quote", "bracket_counting", "set_or_string")


def bench_ingest(workspace: Path, metrics_format: str) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of one ingest: on a shared machine, CPU time says
    what the wall time would be uncontended (about CPU / cores used)."""
    for seed in range(METRIC_JOBS):
        synthetic.train_job(workspace, sparsity_target=0.01 + seed / METRIC_JOBS,
                            heldout_loss=2.0 + seed / 100, seed=seed, n_metrics=METRIC_ROWS,
                            metrics_format=metrics_format)
    started, cpu = time.perf_counter(), time.process_time()
    summary = ingest(workspace)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert summary.metrics_rows == METRIC_JOBS * METRIC_ROWS, summary
    return elapsed, cpu


def fill_frontier(workspace: Path) -> None:
    """10k runs and 30k circuits straight into the store: the query is timed, not ingest.

    Shaped like the paper's trade-off: sparser runs have smaller circuits and higher loss."""
    rng = random.Random(0)
    runs, circuits = [], []
    for i in range(FRONTIER_RUNS):
        target = 1.0 if i % 10 == 0 else 10 ** rng.uniform(-3, -0.5)
        key = f"run{i:06d}"
        runs.append({"key": key, "sparsity_target": target, "n_layer": 8, "d_model": 256,
                     "heldout_loss": 1.0 - 0.08 * math.log10(target) + rng.gauss(0, 0.05)})
        for task in TASKS:
            edges = int(5000 * target ** 0.6 * math.exp(rng.gauss(0, 0.5))) + 5
            circuits.append({"key": f"{key}-{task}", "run_key": key, "task": task,
                             "loss_threshold": 0.15, "ablation": "mean", "found": True,
                             "n_edges": edges})
    con = connect(store_path(workspace), read_only=False)
    try:
        insert(con, "runs_all", pa.Table.from_pylist(runs, schema=RUNS_SCHEMA))
        insert(con, "circuits_all", pa.Table.from_pylist(circuits, schema=CIRCUITS_SCHEMA))
    finally:
        con.close()


def bench_frontier(workspace: Path, repeats: int = 7) -> tuple[float, int, int]:
    """Median time of the whole frontier into Arrow (what plots and exports consume)."""
    con = open_readonly(workspace)
    try:
        times, rows = [], None
        for _ in range(repeats):
            started = time.perf_counter()
            rows = con.sql("SELECT * FROM frontier").to_arrow_table()
            times.append(time.perf_counter() - started)
    finally:
        con.close()
    assert rows is not None
    return statistics.median(times), rows.num_rows, sum(rows["pareto"].to_pylist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics-format", choices=("jsonl", "parquet"), default="jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seconds, cpu = bench_ingest(Path(tmp) / "metrics", args.metrics_format)
        print(f"ingest {METRIC_JOBS * METRIC_ROWS:,} train_metrics rows "
              f"({METRIC_JOBS} jobs, metrics.{args.metrics_format}): {seconds:.2f} s wall, "
              f"{cpu:.2f} s CPU (goal < 2 s)")
        fill_frontier(Path(tmp) / "frontier")
        median, n_rows, n_pareto = bench_frontier(Path(tmp) / "frontier")
        print(f"frontier over {FRONTIER_RUNS:,} runs × {len(TASKS)} tasks: {median * 1000:.1f} ms "
              f"median of 7 ({n_rows:,} rows, {n_pareto} Pareto; goal < 100 ms)")


if __name__ == "__main__":
    main()
