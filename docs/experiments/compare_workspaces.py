"""Do two workspaces hold the same numbers? Every finished train, stats and prune job of NEW is
matched to the job of REF with the same config (keys and code versions aside, upstream jobs
matched the same way: the identity by which the store supersedes a job re-run by newer code)
and their results.json compared value by value, timings aside; train jobs' weights are compared
tensor by tensor.

    python docs/experiments/compare_workspaces.py NEW REF

Used to check that a change to code every job hashes, but not to its arithmetic, re-ran the
reproduction to the same numbers (README: the paper's comparison).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from results.jobs import JobFolder, job_dirs, job_identities, read_job

TIMINGS = {"started_at", "finished_at", "device"}
COMPARED = ("train", "stats", "prune")


def load(ws: Path) -> dict[str, JobFolder]:
    """Every finished train, stats and prune job by its identity (results.jobs.job_identities);
    of a job re-run by newer code, the newest, as in the store's current rows."""
    jobs = [read_job(path) for path in job_dirs(ws)]
    identities = job_identities(jobs)
    done = [(job, job.results) for job in jobs if job.kind in COMPARED and job.results is not None]
    done.sort(key=lambda pair: float(pair[1].get("finished_at") or 0.0))
    return {identities[job.name]: job for job, _ in done}


def untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items()
                if k not in TIMINGS and not k.endswith(("_s", "_per_s"))}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def main(new_ws: Path, ref_ws: Path) -> int:
    new, ref = load(new_ws), load(ref_ws)
    same, different, unmatched = 0, 0, 0
    for identity, job in sorted(new.items(), key=lambda item: item[1].name):
        match = ref.get(identity)
        if match is None:
            unmatched += 1
            print(f"{job.name}: no job of the same config in {ref_ws}")
            continue
        a, b = untimed(job.results), untimed(match.results)
        a.pop("key"), b.pop("key")
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if job.kind == "train":
            wa, wb = (load_file(str(j.path / "model.safetensors")) for j in (job, match))
            if wa.keys() != wb.keys() or any(not torch.equal(wa[k], wb[k]) for k in wa):
                differ.append("weights")
        print(f"{job.name} = {match.name}: "
              + ("identical" if not differ else f"DIFFERENT {differ}"))
        same, different = same + (not differ), different + bool(differ)
    print(f"{same} identical, {different} different, {unmatched} without a match")
    return 1 if different or unmatched else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
