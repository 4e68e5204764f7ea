"""The ground-truth suite's summary: how each pruning setting did on each planted circuit.

``xcompile run`` prints it for the groundtruth jobs of the recipe it ran; the rows come from the
store's ``groundtruth`` table (docs/store.md), so the printed table and a query agree.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from results.query import fetch

SUITE_SQL = """
SELECT key, shape, prune_seed, found, node_precision, node_recall, n_edges, planted_edges
FROM groundtruth
WHERE key IN (SELECT unnest(?::VARCHAR[]))
ORDER BY prune_seed, shape
"""


def suite_table(workspace: Path, settings: dict[str, str]) -> Table:
    """One row per groundtruth job (key → its setting in the plan just run) the store holds.
    The plan's label, not the stored ``setting``: a job shared with an earlier recipe's sweep
    point keeps that point's label in the store."""
    rows = fetch(workspace, SUITE_SQL, [list(settings)]).to_pylist()
    rows.sort(key=lambda row: settings[row["key"]])  # stable: seed and shape order kept
    seeds = len({row["prune_seed"] for row in rows}) > 1
    table = Table(title="ground truth: planted circuits recovered")
    table.add_column("shape", no_wrap=True)
    table.add_column("setting", overflow="fold")  # a long sweep label wraps, never truncates
    for column in ("precision", "recall", "edges/planted"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        label = settings[row["key"]] + (f" seed {row['prune_seed']}" if seeds else "")
        if row["found"]:
            scores = [f"{row['node_precision']:.2f}", f"{row['node_recall']:.2f}",
                      f"{row['n_edges']}/{row['planted_edges']}"]
        else:
            scores = ["-", "-", f"not found/{row['planted_edges']}"]
        table.add_row(row["shape"], label, *scores)
    return table
