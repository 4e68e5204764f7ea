"""README tells a reader to `git apply` the experiment patches in docs/experiments; they must
still apply to the code they sit beside (the corpus patch once needed ``--3way`` after the
corpus moved under it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from compiler.code_version import ROOT

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
