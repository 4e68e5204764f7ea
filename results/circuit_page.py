"""``xcompile circuit KEY [KEY2] -o circuit.html``: one self-contained page per circuit (or two
side by side), drawn in the browser from the store's ``circuit_nodes`` and ``circuit_edges``.

The page is the template ``circuit.html.j2`` plus one JSON document per circuit, inlined as
``<script type="application/json">`` (``<``, ``>`` and ``&`` escaped, so no data can close the
tag); the page's own script reads it and builds the SVG with ``textContent`` only, never HTML from
data. Node evidence comes from the prune job's ``evidence.json`` (runtime/pruning/evidence.py),
which the store does not hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from results.diagram import SITE_ROWS
from results.jobs import find_job, read_job
from results.query import fetch
from results.store import StoreError
from runtime.job import EVIDENCE_FILE

PAGES_DIR = "circuits"  # <workspace>/circuits/<prune job>.html: where a page goes by default

CIRCUIT_SQL = """
SELECT c.key, c.run_key, c.task, c.found, c.reason, c.loss_threshold, c.ablation,
       c.achieved_loss, c.full_model_loss, c.sufficiency_loss, c.necessity_loss,
       c.n_nodes, c.n_edges, r.n_layer, r.d_model, r.sparsity_target, r.heldout_loss
FROM circuits c LEFT JOIN runs r ON r.key = c.run_key
WHERE c.key = ?
"""
NODES_SQL = """
SELECT site, "index", kind, layer FROM circuit_nodes WHERE prune_key = ?
ORDER BY layer NULLS LAST, site, "index"
"""
EDGES_SQL = """
SELECT src_site, src_index, dst_site, dst_index, weight FROM circuit_edges WHERE prune_key = ?
"""


def default_page_path(workspace: Path, key_prefix: str) -> Path:
    """Where ``xcompile circuit KEY`` writes without ``-o``, and where ``show`` looks."""
    return Path(workspace) / PAGES_DIR / f"{find_job(workspace, key_prefix).name}.html"


def _evidence(job_dir: Path) -> dict[str, Any] | None:
    path = job_dir / EVIDENCE_FILE
    if not path.is_file():
        return None  # a prune job from before evidence.json existed
    document = json.loads(path.read_text(encoding="utf-8"))
    by_node = {f"{n['site']}:{n['index']}": {k: v for k, v in n.items() if k not in ("site",
                                                                                     "index")}
               for n in document.pop("nodes")}
    return {**document, "by_node": by_node}


def circuit_data(workspace: Path, key_prefix: str) -> dict[str, Any]:
    """Everything one circuit's view draws: the store's row, nodes and edges, and evidence.

    Edges refer to nodes by position in ``nodes``; an edge to a node the circuit does not keep
    would be a broken store, and is an error rather than a silently missing line."""
    job = read_job(find_job(workspace, key_prefix))
    if job.kind != "prune":
        raise StoreError(f"{job.name} is a {job.kind} job; give the key of a prune job")
    rows = fetch(workspace, CIRCUIT_SQL, [job.key]).to_pylist()
    if not rows:
        raise StoreError(f"{job.name} is not in the store: run `xcompile ingest` first")
    circuit = rows[0]
    nodes = fetch(workspace, NODES_SQL, [job.key]).to_pylist()
    position = {(n["site"], n["index"]): i for i, n in enumerate(nodes)}
    edges = []
    for e in fetch(workspace, EDGES_SQL, [job.key]).to_pylist():
        try:
            edges.append([position[(e["src_site"], e["src_index"])],
                          position[(e["dst_site"], e["dst_index"])], e["weight"]])
        except KeyError as missing:
            raise StoreError(f"{job.name}: an edge ends at {missing}, not a kept node") from None
    return {
        "name": job.name,
        "circuit": circuit,
        "n_layer": circuit["n_layer"] or 1 + max([n["layer"] or 0 for n in nodes] or [0]),
        "sites": list(SITE_ROWS),
        "nodes": [[n["site"], n["index"], n["kind"], n["layer"]] for n in nodes],
        "edges": edges,
        "evidence": _evidence(job.path),
    }


def _inline_json(obj: Any) -> Markup:
    # Inside <script> only "</" could end the element; escaping <, > and & rules out any tag.
    text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def render_circuit_page(workspace: Path, key_prefixes: list[str], out_html: Path) -> Path:
    """Write the page of one circuit, or of two side by side (a comparison)."""
    if not 1 <= len(key_prefixes) <= 2:
        raise StoreError("give one prune job key, or two to compare")
    circuits = [circuit_data(workspace, key) for key in key_prefixes]
    env = jinja2.Environment(loader=jinja2.PackageLoader("results", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("circuit.html.j2").render(
        circuits=[{**c, "json": _inline_json(c)} for c in circuits])
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(html, encoding="utf-8")
    return out_html
