"""The ground-truth suite's summary: how each pruning setting did on each planted circuit.

``xcompile run`` prints it for the groundtruth jobs of the recipe it ran; the rows come from the
store's ``groundtruth`` table (docs/store.md), so the printed table and a query agree.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from results.query import fetch

SUITE_SQL = """
SELECT shape, setting, prune_seed, found, node_precision, node_recall, n_edges, planted_edges
FROM groundtruth
WHERE key IN (SELECT unnest(?::VARCHAR[]))
ORDER BY setting, prune_seed, shape
"""


def suite_table(workspace: Path, keys: list[str]) -> Table:
    """One row per groundtruth job in ``keys`` that the store holds."""
    rows = fetch(workspace, SUITE_SQL, [keys]).to_pylist()
    seeds = len({row["prune_seed"] for row in rows}) > 1
    table = Table(title="ground truth: planted circuits recovered")
    table.add_column("shape", no_wrap=True)
    table.add_column("setting", overflow="fold")  # a long sweep label wraps, never truncates
    for column in ("precision", "recall", "edges/planted"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        label = str(row["setting"]) + (f" seed {row['prune_seed']}" if seeds else "")
        if row["found"]:
            scores = [f"{row['node_precision']:.2f}", f"{row['node_recall']:.2f}",
                      f"{row['n_edges']}/{row['planted_edges']}"]
        else:
            scores = ["-", "-", f"not found/{row['planted_edges']}"]
        table.add_row(row["shape"], label, *scores)
    return table
