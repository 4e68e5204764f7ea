"""The ``ingest`` job kind: load every finished job folder into the workspace's DuckDB store.

Idempotent, so it runs at the end of every `xcompile run` (and as the last SLURM job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from results.ingest import ingest
from runtime.job import Progress


def run(
    config: dict[str, Any], job_dir: Path, workspace: Path, progress: Progress
) -> dict[str, Any]:
    progress({"phase": "ingesting"}, force=True)
    summary = ingest(workspace)
    return {"summary": str(summary)}
