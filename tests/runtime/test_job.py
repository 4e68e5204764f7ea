"""The job dispatcher: a config runs the runtime/jobs/ module its kind names, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.executors.base import JOB_KINDS
from runtime.job import CONFIG_FILE, RESULTS_FILE, run_job
from spec.stages import STAGES


# ingest is a stage but no job: the results layer runs it (docs/jobs.md)
@pytest.mark.parametrize("kind", ["nope", "__init__", "_private", "jobs.prune", "../train", 3,
                                  "ingest"])
def test_a_kind_that_is_no_job_module_is_refused(tmp_path: Path, kind: object) -> None:
    job_dir = tmp_path / "jobs" / "x"
    job_dir.mkdir(parents=True)
    (job_dir / CONFIG_FILE).write_text(json.dumps({"kind": kind, "key": "k"}))
    with pytest.raises(ValueError, match="unknown job kind"):
        run_job(job_dir)
    assert not (job_dir / RESULTS_FILE).exists()


def test_every_job_kind_has_its_job_module() -> None:
    jobs = Path(__file__).resolve().parents[2] / "runtime" / "jobs"
    assert sorted(p.stem for p in jobs.glob("[!_]*.py")) == sorted(JOB_KINDS)
    assert [stage for stage in STAGES if stage not in JOB_KINDS] == ["ingest"]  # results' own
