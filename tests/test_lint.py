"""The house style's checkers (shared/STYLE.md: ruff check + format and mypy on segkit/) pass on the package."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize(
    "tool",
    [
        ["ruff", "check", "segkit", "tests", "scripts"],
        ["ruff", "format", "--check", "segkit", "tests", "scripts"],
        ["mypy", "segkit"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_package_passes_the_style_checkers(tool):
    res = subprocess.run([sys.executable, "-m", *tool], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
