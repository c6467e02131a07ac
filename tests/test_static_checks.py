"""Lint and types are tests: ruff (pyflakes, pycodestyle, bugbear) and mypy over the app, the local host and
the tools, with the settings in pyproject.toml. A finding fails the suite like any other defect."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.parametrize("command", [["ruff", "check", "--no-cache"], ["mypy", "--no-incremental"]],
                         ids=["ruff", "mypy"])
def test_static_check_is_clean(command):
    finished = subprocess.run([sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
