"""Plots, the HTML report and `show`: files are produced and hold what they should."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest

from results import StoreError, synthetic
from results.ingest import ingest
from results.plots import plot_frontier, plot_training_curves
from results.query import fetch
from results.report import render_report
from results.show import show_job

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Collects the elements the report must have."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags
                if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def test_plots_are_pngs(workspace: Path, tmp_path: Path) -> None:
    frontier = plot_frontier(workspace, tmp_path / "frontier.png")
    curves = plot_training_curves(workspace, tmp_path / "curves.png")
    for path in (frontier, curves):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_frontier_plot_needs_circuits(tmp_path: Path) -> None:
    synthetic.train_job(tmp_path, sparsity_target=0.1, heldout_loss=2.0)
    ingest(tmp_path)
    with pytest.raises(StoreError, match="frontier is empty"):
        plot_frontier(tmp_path, tmp_path / "f.png")


def test_report_is_one_self_contained_page(workspace: Path, tmp_path: Path) -> None:
    # A task name with markup must come out as text: the template autoescapes.
    train = next((workspace / "jobs").glob("train-*"))
    synthetic.prune_job(workspace, train, "<script>alert(1)</script>", 5)
    ingest(workspace)
    html = render_report(workspace, tmp_path / "report.html").read_text()
    page = Page()
    page.feed(html)

    tasks = ("bracket_counting", "single_double_quote")  # the protocol of the three other runs
    for img_id in ("frontier-plot", "curves-plot", *(f"frontier-plot-{t}" for t in tasks)):
        (img,) = page.find("img", id=img_id)
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert len(page.find("img", **{"class": "task-frontier"})) == len(tasks)
    matched = fetch(workspace, "SELECT count(*) AS n FROM matched WHERE protocol = ?",
                    [f"mean@0.15:{','.join(tasks)}"]).to_pylist()[0]["n"]
    assert matched > 0
    assert html.split('id="matched-tasks"')[1].split("</table>")[0].count("<tr") == 1 + matched
    runs_rows = html.split('id="runs-table"')[1].split("</table>")[0].count("<tr")
    assert runs_rows == 1 + 4
    assert len(page.find("div", **{"class": "circuit"})) == 9
    assert len(page.find("svg")) == 9
    assert len(page.find("circle")) > 0
    assert "<script>" not in html and "&lt;script&gt;" in html
    # Nothing is fetched from elsewhere; the only links are to circuit pages written beside it.
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            if tag == "a" and name == "href" and value.startswith("circuits/"):
                assert (tmp_path / value).is_file(), value
                continue
            assert not value or value.startswith("data:"), (name, value)
    assert "http://" not in html and "https://" not in html


def test_show_job(workspace: Path) -> None:
    train = next((workspace / "jobs").glob("train-*"))
    text = show_job(workspace, train.name.split("-", 1)[1][:8])
    assert f"{train.name}  kind=train  state=done" in text
    assert f"python -m runtime.job {train}" in text  # how to reproduce it
    assert "50 logged steps" in text and '"heldout_loss"' in text
    prune = next((workspace / "jobs").glob("prune-*"))
    assert "node(s)" in show_job(workspace, prune.name)
    with pytest.raises(StoreError, match="ambiguous"):
        show_job(workspace, "train-")
    with pytest.raises(StoreError, match="no job matches"):
        show_job(workspace, "zzzz")


def test_report_of_a_store_without_circuits(tmp_path: Path) -> None:
    ingest(tmp_path)  # no jobs at all
    html = render_report(tmp_path, tmp_path / "a.html").read_text()
    assert "No run has a found circuit for every task yet." in html
    synthetic.train_job(tmp_path, sparsity_target=0.1, heldout_loss=2.0)
    ingest(tmp_path)
    html = render_report(tmp_path, tmp_path / "b.html").read_text()
    assert 'id="curves-plot"' in html and "No circuits yet" in html
