"""What the installed `fleet` command leaves on stderr: fleet's own lines only,
never a Python warning (asyncssh's import raises CryptographyDeprecationWarnings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

INSTALLED = Path(sys.executable).with_name("fleet")


def _run(argv: list[str], how: str, xdg: dict) -> subprocess.CompletedProcess:
    """The installed command with PYTHONWARNINGS=default, or `python -W default -m fleet`."""
    assert INSTALLED.is_file(), f"{INSTALLED}: the install puts the command there"
    if how == "-W":
        cmd = [sys.executable, "-W", "default", "-m", "fleet", *argv]
        env = xdg
    else:
        cmd = [str(INSTALLED), *argv]
        env = {**xdg, "PYTHONWARNINGS": "default"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("command", [["check", "nosuch"], ["shell", "nosuch"],
                                     ["forward", "nosuch", "8080:80"]])
@pytest.mark.parametrize("how", ["PYTHONWARNINGS", "-W"])
def test_bad_input_is_one_fleet_line_even_with_warnings_enabled(profile_path, xdg, command,
                                                                how):
    r = _run(["--headless", "--profile", str(profile_path), *command], how, xdg)
    assert r.returncode == 2, r.stderr
    assert r.stderr == "fleet: unknown node 'nosuch'\n"


@pytest.mark.parametrize("how", ["PYTHONWARNINGS", "-W"])
def test_exec_on_a_node_without_a_route_prints_no_warning(profile_path, xdg, how):
    r = _run(["--headless", "--profile", str(profile_path), "--format", "jsonl",
              "exec", "web1", "--", "true"], how, xdg)
    assert r.returncode == 1, r.stderr
    assert '"error_kind":"unreachable"' in r.stdout
    assert r.stderr == ""


def test_asyncssh_does_warn_when_imported_without_the_entry_point(xdg):
    """The warnings the entry point silences are real (else the test above
    would prove nothing)."""
    r = subprocess.run([sys.executable, "-W", "default", "-c", "import asyncssh"],
                       capture_output=True, text=True, env=xdg, timeout=60)
    assert "CryptographyDeprecationWarning" in r.stderr
