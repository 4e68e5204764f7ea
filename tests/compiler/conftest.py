"""The real `xcompile` command, run as a subprocess so exit codes and stderr are what users see."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

Xcompile = Callable[..., subprocess.CompletedProcess[str]]


def _xcompile(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def xcompile() -> Xcompile:
    return _xcompile
