"""import-linter over a copy of the project, for tests that add a deliberate
back-edge and expect the layer contract in pyproject.toml to break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))")


def lint(tree: Path) -> subprocess.CompletedProcess:
    """import-linter over the `fleet` package in `tree`, with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", LINT], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


def copy_of_project(dest: Path) -> Path:
    shutil.copytree(ROOT / "fleet", dest / "fleet",
                    ignore=shutil.ignore_patterns("__pycache__", "bundled"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest
