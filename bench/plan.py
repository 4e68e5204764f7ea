"""Plan a 10,000-point sweep with 3 tasks each (≈ 40k jobs) and print the time.

    python bench/plan.py

Goal: under 1 s on a 2-core machine (load + validate + expand + key + cache check).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from compiler.plan import compile_plan
from compiler.sweep import expand
from spec.loader import load_recipe

RECIPE = """\
name: bench
prune: {tasks: [single_double_quote, bracket_counting, set_or_string]}
sweep:
  sparsity.target: [%s]
  train.lr: [%s]
"""


def main() -> None:
    targets = ", ".join(str(round(0.001 + i * 0.0099, 5)) for i in range(100))
    lrs = ", ".join(str(round(0.001 * (i + 1), 5)) for i in range(100))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(RECIPE % (targets, lrs), encoding="utf-8")
        started = time.perf_counter()
        recipe, doc = load_recipe(path)
        points = expand(recipe, doc)
        expanded = time.perf_counter()
        plan = compile_plan(recipe, points, Path(tmp) / "ws")
        finished = time.perf_counter()
    print(f"points: {len(points):,}  jobs: {len(plan.jobs):,}")
    print(f"load + expand + validate: {expanded - started:.3f} s")
    print(f"compile plan (keys, cache check): {finished - expanded:.3f} s")
    print(f"total: {finished - started:.3f} s  (goal < 1 s)")


if __name__ == "__main__":
    main()
