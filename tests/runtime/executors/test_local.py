"""The local executor's plain progress lines (what a log or CI sees instead of the live bar)."""

from __future__ import annotations

import io

from rich.console import Console

from runtime.executors.local import PlainLines


def lines_of(sink: io.StringIO) -> list[str]:
    return sink.getvalue().splitlines()


def test_the_first_progress_line_comes_as_soon_as_the_eta_is_known_then_every_interval() -> None:
    sink = io.StringIO()
    plain = PlainLines(Console(file=sink, width=200), every_s=3600.0)
    plain.start("train-abc")
    plain.update({"step": 1, "total_steps": 10})  # no pace yet: nothing to tell
    plain.update({"step": 2, "total_steps": 10, "eta_s": 80.0})
    plain.update({"step": 3, "total_steps": 10, "eta_s": 70.0})  # within the interval
    plain.end("train-abc", None)
    assert lines_of(sink)[0] == "start train-abc"
    assert [line for line in lines_of(sink) if "ETA" in line] == [
        "train-abc:  step 2/10  ETA 1m20s"
    ]
    assert lines_of(sink)[-1].startswith("done train-abc in ")


def test_each_job_gets_its_own_first_eta_line() -> None:
    sink = io.StringIO()
    plain = PlainLines(Console(file=sink, width=200), every_s=3600.0)
    for name in ("train-a", "train-b"):
        plain.start(name)
        plain.update({"step": 2, "total_steps": 4, "eta_s": 5.0})
        plain.end(name, None)
    assert sum("ETA" in line for line in lines_of(sink)) == 2
