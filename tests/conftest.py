"""The real single-node SLURM cluster (scripts/slurm-cluster.sh), for every test that needs it.

A test that needs the cluster asks for the ``partition`` fixture: skipped when SLURM is not
installed or not up, unless XCOMPILE_REQUIRE_SLURM=1 (CI), where a missing cluster is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REQUIRE = os.environ.get("XCOMPILE_REQUIRE_SLURM") == "1"
START_HINT = "start it with: sudo scripts/slurm-cluster.sh start"


def fail_or_skip(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason}; {START_HINT}", pytrace=False)
    pytest.skip(f"{reason}; {START_HINT}")


@pytest.fixture(scope="session")
def partition() -> str:
    """The default partition, once the node is usable."""
    if shutil.which("sinfo") is None:
        fail_or_skip("SLURM not installed (no sinfo on PATH)")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %a %T"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except subprocess.CalledProcessError as exc:
        fail_or_skip(f"SLURM cluster not reachable (sinfo: {(exc.stderr or '').strip()!r})")
    except (subprocess.SubprocessError, OSError) as exc:
        fail_or_skip(f"sinfo failed: {exc}")
    rows = [line.split() for line in out.splitlines() if line.strip()]
    usable = [r for r in rows if r[1] == "up" and r[2] in ("idle", "mixed", "allocated")]
    if not usable:
        fail_or_skip(f"no usable SLURM partition (sinfo: {out.strip()!r})")
    default = [r for r in usable if r[0].endswith("*")]
    return (default or usable)[0][0].rstrip("*")
