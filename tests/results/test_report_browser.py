"""The HTML report in a real headless browser: it loads without console errors and shows its parts.

Drives Debian's chromium over the DevTools protocol (one websocket, websocket-client) rather
than through a test framework: those download their own browser builds, which our machines
cannot fetch. Without chromium the tests skip, unless XCOMPILE_REQUIRE_BROWSER=1 (scripts/test
sets it after scripts/install-chromium.sh), where a skip would hide a report nobody looked at.

Also a script: ``python tests/results/test_report_browser.py [WORKSPACE] OUT.png`` ingests a copy
of WORKSPACE (or makes a synthetic one), renders its report and screenshots it; see
scripts/screenshot-report.sh, which keeps docs/report.png.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from results import synthetic
from results.ingest import ingest
from results.report import render_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = 1280, 900  # the viewport; screenshots grow to the page's full height
START_TIMEOUT_S = 30.0  # a cold chromium on a busy 2-core machine takes a few seconds
CALL_TIMEOUT_S = 60.0
# Without the background-networking flags chromium keeps trying to reach Google's services,
# which our machines refuse; --no-sandbox because CI runs as root.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
    f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-port=0",
)

# What the page shows, measured in the page: an element counts as visible when it has a box and
# is not hidden by CSS. Returned as one JSON-able value, so one round trip answers everything.
INSPECT_JS = """
(() => {
  const visible = (el) => {
    const box = el.getBoundingClientRect(), style = getComputedStyle(el);
    return box.width > 0 && box.height > 0 && style.display !== "none"
      && style.visibility !== "hidden" && Number(style.opacity) > 0;
  };
  const image = (id) => {
    const el = document.getElementById(id);
    return el && {visible: visible(el), complete: el.complete, naturalWidth: el.naturalWidth,
                  width: el.getBoundingClientRect().width};
  };
  const table = document.getElementById("runs-table");
  const svgs = [...document.querySelectorAll("div.circuit > svg")];
  return {
    title: document.title,
    frontier: image("frontier-plot"),
    curves: image("curves-plot"),
    runsTable: table && {visible: visible(table), rows: table.rows.length},
    circuits: document.querySelectorAll("div.circuit").length,
    captionsOnly: [...document.querySelectorAll("div.circuit.no-diagram")].filter(visible).length,
    svgs: svgs.length,
    explore: [...document.querySelectorAll("div.circuit a.explore")].map((a) => a.href),
    svgsVisible: svgs.filter(visible).length,
    svgsWithDots: svgs.filter((s) => s.querySelector("circle")).length,
    // SVG clips what is drawn past its width: a heading longer than the grid was cut off once.
    svgsClipped: svgs.filter((s) => [...s.querySelectorAll("text")].some((t) => {
      const box = t.getBBox();
      return box.x < 0 || box.x + box.width > s.viewBox.baseVal.width;
    })).length,
    // Circuit cards sit side by side, not one per row with the right of the page empty.
    circuitRows: new Set([...document.querySelectorAll("div.circuit")].map((c) => c.offsetTop))
      .size,
    // Wider content than the viewport means a horizontal scrollbar: a layout bug at 1280 px.
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  };
})()
"""


class BrowserMissing(Exception):
    """Chromium or the websocket client is not installed."""


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise BrowserMissing("chromium is not installed (scripts/install-chromium.sh installs it)")


class Page:
    """One chromium tab over the DevTools protocol; records console errors and exceptions."""

    def __init__(self, ws_url: str) -> None:
        try:
            import websocket  # websocket-client, in the dev extra
        except ImportError as err:
            raise BrowserMissing("websocket-client is not installed: pip install -e '.[dev]'"
                                 ) from err
        # suppress_origin: chromium refuses websockets that carry an Origin it was not told of.
        self._ws = websocket.create_connection(ws_url, timeout=CALL_TIMEOUT_S,
                                               suppress_origin=True)
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def close(self) -> None:
        self._ws.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if "method" in message:  # an event that came in meanwhile: keep it
                self.events.append(message)

    def wait_for(self, event: str, timeout_s: float = CALL_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e["method"] == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {timeout_s:.0f} s")
            self.events.append(json.loads(self._ws.recv()))

    def load(self, url: str) -> None:
        """Navigate to ``url`` and wait for its load event; earlier events are dropped."""
        self.events.clear()
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"cannot load {url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser-logged errors (e.g. a failed load)."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled" and params["type"] in (
                    "error", "assert"):
                text = " ".join(str(a.get("value", a.get("description", "")))
                                for a in params["args"])
                found.append(f"console.{params['type']}: {text}")
            elif event["method"] == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details["text"]
                found.append(f"exception: {text}")
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                found.append(f"log ({entry['source']}): {entry['text']} {entry.get('url', '')}")
        return found

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        """A PNG of the whole page at the viewport's width."""
        height = self.evaluate("document.documentElement.scrollHeight")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=int(height),
                  deviceScaleFactor=1, mobile=False)
        try:
            return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        finally:
            self.call("Emulation.clearDeviceMetricsOverride")


class Chromium:
    """A headless chromium with a fresh profile, ended (by its own pid) on close."""

    def __init__(self) -> None:
        self._profile = Path(tempfile.mkdtemp(prefix="xc-chromium-"))
        self._proc = subprocess.Popen(
            [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
             "about:blank"],
            # Its own process group, so close() ends its helper processes (renderers,
            # crashpad) with it rather than leaving them to wind down on their own.
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            port = self._port()
            self.page = Page(self._page_ws_url(port))
        except BaseException:
            self.close()
            raise

    def _port(self) -> int:
        # With port 0 chromium picks a free one and writes it to this file: no race over ports.
        active = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr \
                    else ""
                raise RuntimeError(f"chromium exited with {self._proc.returncode}:\n{stderr}")
            lines = active.read_text().split() if active.exists() else []
            if len(lines) >= 2:  # the port, then the browser's websocket path
                return int(lines[0])
            time.sleep(0.1)
        raise TimeoutError(f"chromium wrote no DevToolsActivePort in {START_TIMEOUT_S:.0f} s")

    def _page_ws_url(self, port: int) -> str:
        from urllib.request import urlopen

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the about:blank tab may show up a moment after the port
            with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                targets = json.load(response)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium opened no page: {targets}")
            time.sleep(0.1)

    def close(self) -> None:
        if hasattr(self, "page"):
            self.page.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)
            try:
                self._proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._proc.stderr:
            self._proc.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    try:
        chrome = Chromium()
    except BrowserMissing as err:
        if os.environ.get("XCOMPILE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"XCOMPILE_REQUIRE_BROWSER=1 but {err}")
        pytest.skip(str(err))
    yield chrome
    chrome.close()


@pytest.fixture
def page(browser: Chromium) -> Page:
    return browser.page


def mixed_workspace(root: Path) -> Path:
    """Dense and sparse runs of two sizes, found and not-found circuits, one unfinished run."""
    ws = root / "ws"
    for seed, (target, loss, d_model) in enumerate(
            [(1.0, 2.0, 64), (0.1, 2.2, 64), (0.05, 2.5, 128), (0.02, 3.0, 64)]):
        train = synthetic.train_job(ws, sparsity_target=target, heldout_loss=loss,
                                    d_model=d_model, seed=seed, n_metrics=300)
        synthetic.prune_job(ws, train, "single_double_quote", int(1000 * target) + 9,
                            n_nodes=6 + 10 * seed)
        synthetic.prune_job(ws, train, "bracket_counting", int(400 * target) + 30,
                            found=seed != 3)
        if seed == 0:  # like a real failed search: no node kept, so no diagram
            synthetic.prune_job(ws, train, "with_as", 0, found=False, n_nodes=0)
    synthetic.train_job(ws, sparsity_target=0.2, heldout_loss=2.4, seed=9, done=False)
    ingest(ws)
    return ws


def test_report_in_browser(page: Page, tmp_path: Path) -> None:
    ws = mixed_workspace(tmp_path)
    html = render_report(ws, tmp_path / "report.html")
    page.load(html.as_uri())

    assert page.errors() == []
    shown = page.evaluate(INSPECT_JS)
    assert shown["title"].startswith("xcompile report")
    for name in ("frontier", "curves"):
        image = shown[name]
        assert image is not None, f"no {name} image"
        assert image["visible"] and image["complete"], image
        assert image["naturalWidth"] > 0 and image["width"] > 0, image
    assert shown["runsTable"] == {"visible": True, "rows": 1 + 4}  # header + finished runs
    assert shown["circuits"] == 9 and shown["captionsOnly"] == 1
    assert shown["svgs"] == shown["svgsVisible"] == 8
    assert shown["svgsWithDots"] == 8 and shown["svgsClipped"] == 0
    assert shown["circuitRows"] < shown["circuits"]
    # Every drawn circuit links its explorer page, written beside the report; each one loads.
    assert len(shown["explore"]) == 8
    for href in shown["explore"]:
        page.load(href)
        assert page.errors() == [] and page.evaluate("document.querySelectorAll("
                                                     "'circle.node').length") > 0, href
    page.load(html.as_uri())
    assert shown["scrollWidth"] <= shown["innerWidth"], "the page scrolls sideways"

    png = page.screenshot()
    (tmp_path / "report.png").write_bytes(png)
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == WIDTH and height > HEIGHT, (width, height)  # the full page, not the viewport


def test_errors_are_seen(page: Page, tmp_path: Path) -> None:
    # The report test passes on an empty error list; make sure a broken page does not.
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><title>broken</title>"
                      "<script>console.error('logged'); throw new Error('thrown');</script>"
                      '<img src="missing.png">')
    page.load(broken.as_uri())
    errors = "\n".join(page.errors())
    assert "console.error: logged" in errors
    assert "Error: thrown" in errors
    assert "missing.png" in errors


def screenshot_report(workspace: Path | None, out_png: Path) -> None:
    """Screenshot the report of a copy of ``workspace`` (left untouched), else a synthetic one."""
    with tempfile.TemporaryDirectory(prefix="xc-report-") as tmp:
        if workspace is None:
            copy = mixed_workspace(Path(tmp))
        else:
            copy = Path(tmp) / "ws"
            # Weights are large and the store never reads them.
            shutil.copytree(workspace, copy, ignore=shutil.ignore_patterns(
                "*.safetensors", "checkpoints", "store.duckdb*"))
            ingest(copy)
        html = render_report(copy, Path(tmp) / "report.html")
        if workspace is not None:  # name the workspace the reader knows, not the temporary copy
            html.write_text(html.read_text().replace(str(copy), str(workspace.resolve())))
        chrome = Chromium()
        try:
            chrome.page.load(html.as_uri())
            if chrome.page.errors():
                raise SystemExit(f"the report logged errors: {chrome.page.errors()}")
            out_png.write_bytes(chrome.page.screenshot())
        finally:
            chrome.close()
    print(f"wrote {out_png}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(f"usage: {sys.argv[0]} [WORKSPACE] OUT.png")
    screenshot_report(Path(sys.argv[1]) if len(sys.argv) == 3 else None, Path(sys.argv[-1]))
