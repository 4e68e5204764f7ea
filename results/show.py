"""``xcompile show KEY``: everything about one job, read from its folder (no store needed)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from results.circuit_page import PAGES_DIR
from results.diagram import SITE_ROWS
from results.ingest import METRICS_PARQUET
from results.jobs import circuit_nodes, find_job, read_job
from runtime.job import CIRCUIT_FILE, COMMAND_FILE, METRICS_FILE, log_tail

LOG_LINES = 20


def _section(title: str, body: str) -> str:
    return f"── {title} " + "─" * max(0, 60 - len(title)) + "\n" + body.rstrip() + "\n"


def _metrics_summary(job_dir: Path) -> str | None:
    if (job_dir / METRICS_PARQUET).is_file():
        import pyarrow.parquet as pq  # only jobs that have the file pay for the import

        rows = pq.read_table(job_dir / METRICS_PARQUET).to_pylist()
    elif (job_dir / METRICS_FILE).is_file():
        lines = (job_dir / METRICS_FILE).read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    else:
        return None
    if not rows:
        return "no steps logged"
    first, last = rows[0], rows[-1]
    evals = [r for r in rows if r.get("heldout_loss") is not None]
    text = (f"{len(rows)} logged steps, step {first.get('step')} → {last.get('step')}\n"
            f"loss {first.get('loss')} → {last.get('loss')}; "
            f"kept fraction {first.get('kept_fraction')} → {last.get('kept_fraction')}")
    if evals:
        text += f"\nheld-out loss (last of {len(evals)} evals): {evals[-1]['heldout_loss']}"
    return text


def _circuit_summary(job_dir: Path) -> str | None:
    path = job_dir / CIRCUIT_FILE
    if not path.is_file():
        return None
    sites = Counter((n["layer"], n["kind"], n["site"]) for n in circuit_nodes(path.read_bytes()))

    def model_order(item: tuple[tuple[int | None, str, str], int]) -> tuple[bool, int, int]:
        layer, kind, _ = item[0]  # final_in (layer None) comes last
        rank = SITE_ROWS.index(kind) if kind in SITE_ROWS else len(SITE_ROWS)
        return layer is None, layer or 0, rank

    ordered = sorted(sites.items(), key=model_order)
    return "\n".join(f"{site:<16} {n} node(s)" for (_, _, site), n in ordered) or "no nodes"


def _circuit_page_line(workspace: Path, job_dir: Path) -> str:
    page = Path(workspace) / PAGES_DIR / f"{job_dir.name}.html"
    make = f"xcompile circuit {job_dir.name} -w {workspace}"
    return f"{page}\n(re)write it: {make}" if page.is_file() else f"none yet; write it: {make}"


def _pretty(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def show_job(workspace: Path, key_prefix: str) -> str:
    """A text page on the job whose folder name or key starts with ``key_prefix``.

    Raises ``StoreError`` if no job or more than one matches.
    """
    job = read_job(find_job(workspace, key_prefix))
    header = f"{job.name}  kind={job.kind}  state={job.status}\nkey   {job.key}\nfolder {job.path}"
    if job.error:
        header += f"\nerror {job.error}"
    parts = [header + "\n"]
    command = job.path / COMMAND_FILE
    parts.append(_section("reproduce", command.read_text() if command.is_file()
                          else "(no command file)"))
    parts.append(_section("config", _pretty(job.config)))
    if job.results is not None:
        parts.append(_section("results", _pretty(job.results)))
    tail = (job.failed or {}).get("traceback_tail") or (job.failed or {}).get("log_tail")
    if tail:
        parts.append(_section("failure", str(tail)))
    for title, summary in (("metrics", _metrics_summary(job.path)),
                           ("circuit", _circuit_summary(job.path))):
        if summary is not None:
            parts.append(_section(title, summary))
    if job.kind == "prune":
        parts.append(_section("circuit page", _circuit_page_line(workspace, job.path)))
    parts.append(_section(f"log (last {LOG_LINES} lines of the latest attempt)",
                          log_tail(job.path, LOG_LINES) or "(no log)"))
    return "\n".join(parts)
