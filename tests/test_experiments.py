"""The lab tools in docs/experiments still work: README tells a reader to `git apply` its patches,
which must apply to the code they sit beside (the corpus patch once needed ``--3way`` after the
corpus moved under it), and the notebook compares workspaces with compare_workspaces.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from compiler.code_version import ROOT
from results import synthetic

PATCHES = sorted((ROOT / "docs" / "experiments").glob("*.patch"))


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs a git checkout")
@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.name)
def test_patch_applies_to_this_checkout(patch: Path) -> None:
    check = subprocess.run(["git", "apply", "--check", str(patch)], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_there_are_patches_to_check() -> None:
    assert PATCHES


def _compare(new: Path, ref: Path) -> int:
    sys.path.insert(0, str(ROOT / "docs" / "experiments"))
    try:
        import compare_workspaces
    finally:
        sys.path.pop(0)
    return compare_workspaces.main(new, ref)


def test_compare_workspaces_matches_jobs_by_config_across_code_versions(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    train = synthetic.train_job(ref, sparsity_target=0.1, heldout_loss=2.2)
    save_file({"wte": torch.arange(4.0)}, str(train / "model.safetensors"))
    prune = synthetic.prune_job(ref, train, "while_return_true", 12)
    new = tmp_path / "new"
    shutil.copytree(ref, new)
    # newer code re-ran both: new keys, later finishes, the same numbers
    synthetic.rerun_job(new / "jobs" / prune.name, "0.2.0",
                        train=synthetic.rerun_job(new / "jobs" / train.name, "0.2.0"))
    assert _compare(new, ref) == 0

    results = json.loads((prune / "results.json").read_text())
    results["n_edges"] += 1
    (prune / "results.json").write_text(json.dumps(results))
    assert _compare(new, ref) == 1
