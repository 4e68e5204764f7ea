"""The circuit explorer page (results/circuit_page.py) in a real headless browser.

Uses the DevTools harness of test_report_browser.py (its ``browser``/``page`` fixtures, shared
through conftest.py, skip without chromium). Every count the page draws is checked against
the store.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
from test_report_browser import Page

from results import synthetic
from results.circuit_page import render_circuit_page
from results.ingest import ingest
from results.store import store_path

# What one view draws, measured in the page; one round trip per question.
VIEWS_JS = """
[...document.querySelectorAll("section.view")].map((v) => ({
  nodes: v.querySelectorAll("circle.node").length,
  edges: v.querySelectorAll("line.edge").length,
  visibleEdges: v.querySelectorAll("line.edge:not(.faded)").length,
  collapsedBoxes: v.querySelectorAll("rect.collbox").length,
  shown: v.querySelector(".shown").textContent,
  title: v.querySelector("h2").textContent,
}))
"""


def store_counts(ws: Path) -> dict[str, tuple[int, int]]:
    """Per prune job folder name: (nodes, edges) in the store."""
    with duckdb.connect(str(store_path(ws)), read_only=True) as con:
        rows = con.execute(
            "SELECT c.key, (SELECT count(*) FROM circuit_nodes n WHERE n.prune_key = c.key), "
            "(SELECT count(*) FROM circuit_edges e WHERE e.prune_key = c.key) FROM circuits c"
        ).fetchall()
    return {f"prune-{key[:12]}": (nodes, edges) for key, nodes, edges in rows}


def click(page: Page, selector: str) -> None:
    page.evaluate(f"document.querySelector({selector!r}).dispatchEvent("
                  "new MouseEvent('click', {bubbles: true}))")


def test_every_circuit_page_draws_the_store(workspace: Path, page: Page, tmp_path: Path) -> None:
    counts = store_counts(workspace)
    assert len(counts) == 8
    for name, (n_nodes, n_edges) in counts.items():
        html = render_circuit_page(workspace, [name], tmp_path / f"{name}.html")
        page.load(html.as_uri())
        assert page.errors() == [], name
        [view] = page.evaluate(VIEWS_JS)
        assert (view["nodes"], view["edges"]) == (n_nodes, n_edges), name
        assert view["visibleEdges"] == n_edges and view["shown"] == (
            f"showing {n_edges} of {n_edges} edges")


def test_a_node_shows_its_evidence_and_controls_work(workspace: Path, page: Page,
                                                     tmp_path: Path) -> None:
    name, (n_nodes, n_edges) = next(iter(store_counts(workspace).items()))
    page.load(render_circuit_page(workspace, [name], tmp_path / "c.html").as_uri())

    click(page, "circle.node")
    panel = page.evaluate("""(() => { const p = document.querySelector(".panel");
      return {text: p.textContent, hit: p.querySelector(".ctx .hit")?.textContent,
              markup: p.querySelectorAll(".ctx b").length,
              selected: document.querySelectorAll("circle.node.selected").length}; })()""")
    assert "Top held-out pretraining contexts" in panel["text"]
    assert "Ablating this node alone" in panel["text"] and "answer \":\"" in panel["text"]
    assert panel["hit"] and panel["selected"] == 1
    assert "</script><b>" in panel["text"] and panel["markup"] == 0  # shown as text, not markup

    # The magnitude filter hides exactly the edges under it (compared with the store).
    with duckdb.connect(str(store_path(workspace)), read_only=True) as con:
        kept = con.execute("SELECT count(*) FROM circuit_edges WHERE prune_key LIKE ? AND "
                           "abs(weight) >= 0.5", [name.removeprefix("prune-") + "%"]).fetchone()[0]
    assert 0 < kept < n_edges
    page.evaluate("""(() => { const f = document.querySelector(".filter"); f.value = "0.5";
      f.dispatchEvent(new Event("input")); })()""")
    [view] = page.evaluate(VIEWS_JS)
    assert view["visibleEdges"] == kept and view["shown"] == f"showing {kept} of {n_edges} edges"

    # Collapsing a site keeps every node and edge, folded into one box per cell.
    click(page, "text.rowlabel[data-site='mlp_out']")
    [view] = page.evaluate(VIEWS_JS)
    assert view["collapsedBoxes"] >= 1 and (view["nodes"], view["edges"]) == (n_nodes, n_edges)
    assert page.errors() == []


def test_compare_page_puts_two_circuits_side_by_side(tmp_path: Path, page: Page) -> None:
    ws = tmp_path / "ws"
    dense = synthetic.train_job(ws, sparsity_target=1.0, heldout_loss=2.0, seed=0)
    sparse = synthetic.train_job(ws, sparsity_target=0.1, heldout_loss=2.1, seed=1)
    a = synthetic.prune_job(ws, dense, "while_return_true", 400, n_nodes=40)
    b = synthetic.prune_job(ws, sparse, "while_return_true", 60, n_nodes=15)
    evil = synthetic.prune_job(ws, sparse, "<script>alert(1)</script>", 5)
    ingest(ws)
    counts = store_counts(ws)
    page.load(render_circuit_page(ws, [a.name, b.name], tmp_path / "compare.html").as_uri())
    assert page.errors() == []
    views = page.evaluate(VIEWS_JS)
    assert [(v["nodes"], v["edges"]) for v in views] == [counts[a.name], counts[b.name]]
    boxes = page.evaluate("[...document.querySelectorAll('section.view')]"
                          ".map((v) => v.getBoundingClientRect().top)")
    assert boxes[0] == boxes[1]  # side by side, not stacked

    page.load(render_circuit_page(ws, [evil.name], tmp_path / "evil.html").as_uri())
    assert page.errors() == []
    [view] = page.evaluate(VIEWS_JS)
    assert view["title"].startswith("<script>alert(1)</script>")

