"""Imports go one way: spec ← compiler ← runtime ← results, with the CLI on top.

A lower layer reaching up is how spec came to import the runtime (and torch) to validate a task
name; this walks every project module's imports (inside functions too) to keep it from coming
back.
"""

from __future__ import annotations

import pytest

from compiler.code_version import ROOT, module_imports

LAYERS = ("spec", "compiler", "runtime", "results")
CLI = "compiler.cli"
# Lower-layer modules allowed to import higher ones, and why: exact (module, target) pairs, so
# an allowance for one module never covers another (``runtime.job`` is not ``runtime.jobs.*``).
ALLOWED = {
    # the job-folder contract (file names, stages, states) that the compiler writes and reads
    ("compiler.plan", "runtime.job"), ("compiler.workspace", "runtime.job"),
    # and the past jobs' folders that plan's wall-time estimates are timed from
    ("compiler.timing", "runtime.job"),
    # its atomic writes
    ("compiler.workspace", "runtime.io"),
}


def project_modules() -> list[str]:
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for layer in LAYERS for path in (ROOT / layer).rglob("*.py")
    )


def layer_of(module: str) -> int:
    return len(LAYERS) if module == CLI else LAYERS.index(module.split(".")[0])


def allowed(module: str, target: str) -> bool:
    # ``from a import b`` lists ``a.b`` too, where ``b`` may be a name in ``a``
    return any(module == low and (target == high or target.startswith(f"{high}."))
               for low, high in ALLOWED)


@pytest.mark.parametrize("module", project_modules())
def test_no_import_reaches_a_higher_layer(module: str) -> None:
    path = ROOT.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names, _ = module_imports(path, ROOT)
    upward = sorted(
        {name for name in names if name.split(".")[0] in LAYERS
         and layer_of(name) > layer_of(module) and not allowed(module, name)}
    )
    assert upward == []


def test_spec_needs_no_torch() -> None:
    for module in project_modules():
        if module.startswith("spec"):
            path = ROOT.joinpath(*module.split("."))
            path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
            assert "torch" not in module_imports(path, ROOT)[1], module
