"""Time the circuit explorer page on a 2,000-node circuit in headless Chromium.

    python bench/circuit_page.py [--nodes 2000] [--edges-per-node 5] [--repeats 5]

Goal: the page is drawn (JSON parsed, SVG built, load event fired) in under 2 s. Reports the
median over ``--repeats`` loads of (a) navigate → load event, as the browser sees it, and (b) the
page's own ``render()`` time. Writing the synthetic job folder and the page is not timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "results")]  # the DevTools harness lives there

from test_report_browser import Chromium  # noqa: E402

from results import synthetic  # noqa: E402
from results.circuit_page import render_circuit_page  # noqa: E402
from results.ingest import ingest  # noqa: E402
from runtime.job import CIRCUIT_FILE, EDGES_FILE, EVIDENCE_FILE  # noqa: E402

N_LAYER = 4
# Nodes per layer by site, in proportion: MLP neurons dominate, as in real circuits.
SHARE = {"attn_in": 1, "q": 1, "k": 1, "v": 1, "attn_out": 1, "mlp_in": 1, "mlp_neuron": 4,
         "mlp_out": 1}


def big_circuit(n_nodes: int) -> list[dict[str, object]]:
    per_layer = n_nodes // (N_LAYER + 1)  # a share for final_in too, roughly
    unit = per_layer // sum(SHARE.values())
    nodes = [{"site": f"l{layer}.{kind}", "index": i}
             for layer in range(N_LAYER) for kind, share in SHARE.items()
             for i in range(unit * share)]
    nodes += [{"site": "final_in", "index": i} for i in range(n_nodes - len(nodes))]
    return nodes


def write_workspace(root: Path, n_nodes: int, edges_per_node: int) -> tuple[Path, str]:
    ws = root / "ws"
    train = synthetic.train_job(ws, sparsity_target=0.1, heldout_loss=2.0, n_layer=N_LAYER,
                                d_model=1024)
    nodes = big_circuit(n_nodes)
    n_edges = edges_per_node * n_nodes
    config = {"seed": 0, "task": "while_return_true", "prune": {"loss_threshold": 0.15},
              "inputs": {"train": f"jobs/{train.name}"}}
    results = {"task": "while_return_true", "loss_threshold": 0.15, "achieved_loss": 0.14,
               "full_model_loss": 0.05, "sufficiency_loss": 0.14, "necessity_loss": 0.69,
               "n_nodes": len(nodes), "n_edges": n_edges, "found": True}
    prune = synthetic.write_job(ws, "prune", config, results, {
        CIRCUIT_FILE: json.dumps({"nodes": nodes}),
        EDGES_FILE: synthetic.circuit_edges(nodes, n_edges),
        EVIDENCE_FILE: json.dumps(synthetic.evidence("while_return_true", nodes)),
    })
    ingest(ws)
    return ws, prune.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--edges-per-node", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xc-bench-page-") as tmp:
        ws, name = write_workspace(Path(tmp), args.nodes, args.edges_per_node)
        page_path = render_circuit_page(ws, [name], Path(tmp) / "circuit.html")
        size_mb = page_path.stat().st_size / 1e6
        chrome = Chromium()
        try:
            loads, renders = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                chrome.page.load(page_path.as_uri())
                loads.append(time.perf_counter() - started)
                drawn = chrome.page.evaluate(
                    "[document.querySelectorAll('circle.node').length,"
                    " document.querySelectorAll('line.edge').length,"
                    " Number(document.querySelector('section.view').dataset.renderMs)]")
                renders.append(drawn[2] / 1000)
            if chrome.page.errors():
                raise SystemExit(f"the page logged errors: {chrome.page.errors()}")
        finally:
            chrome.close()
    print(f"{drawn[0]} nodes, {drawn[1]} edges drawn; page {size_mb:.1f} MB")
    print(f"navigate → load: median {statistics.median(loads):.2f} s "
          f"(min {min(loads):.2f}, max {max(loads):.2f}) over {args.repeats} loads")
    print(f"render(): median {statistics.median(renders):.2f} s   goal < 2 s")


if __name__ == "__main__":
    main()
