"""Do two workspaces hold the same numbers? Every finished train, stats and prune job of NEW is
matched to the job of REF with the same config (keys and code versions aside, upstream jobs
matched the same way) and their results.json compared value by value, timings aside; train jobs'
weights are compared tensor by tensor.

    python docs/experiments/compare_workspaces.py NEW REF

Used to check that a change to code every job hashes, but not to its arithmetic, re-ran the
reproduction to the same numbers (README: the paper's comparison).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

TIMINGS = {"started_at", "finished_at", "device"}


def load(ws: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    jobs = {}
    for job in ws.glob("jobs/*-*"):
        if job.name.startswith(("train-", "stats-", "prune-")) and (job / "results.json").is_file():
            jobs[job.name] = (json.loads((job / "config.json").read_text()),
                              json.loads((job / "results.json").read_text()))
    return jobs


def identity(name: str, jobs: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> str:
    config = jobs[name][0]
    upstream = sorted(identity(Path(rel).name, jobs) for kind, rel in config["inputs"].items()
                      if Path(rel).name in jobs)
    own = {k: v for k, v in config.items() if k not in ("key", "meta", "inputs")}
    return json.dumps([own, upstream], sort_keys=True)


def untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items()
                if k not in TIMINGS and not k.endswith(("_s", "_per_s"))}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def main(new_ws: Path, ref_ws: Path) -> int:
    new, ref = load(new_ws), load(ref_ws)
    by_identity = {identity(name, ref): name for name in ref}
    same, different, unmatched = 0, 0, 0
    for name in sorted(new):
        match = by_identity.get(identity(name, new))
        if match is None:
            unmatched += 1
            print(f"{name}: no job of the same config in {ref_ws}")
            continue
        a, b = untimed(new[name][1]), untimed(ref[match][1])
        a.pop("key"), b.pop("key")
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if name.startswith("train-"):
            wa, wb = (load_file(str(ws / "jobs" / n / "model.safetensors"))
                      for ws, n in ((new_ws, name), (ref_ws, match)))
            if wa.keys() != wb.keys() or any(not torch.equal(wa[k], wb[k]) for k in wa):
                differ.append("weights")
        print(f"{name} = {match}: " + ("identical" if not differ else f"DIFFERENT {differ}"))
        same, different = same + (not differ), different + bool(differ)
    print(f"{same} identical, {different} different, {unmatched} without a match")
    return 1 if different or unmatched else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
