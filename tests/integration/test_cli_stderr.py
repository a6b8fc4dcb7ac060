"""What the installed `fleet` command leaves on stderr: fleet's own lines only,
never a Python warning (asyncssh's import raises CryptographyDeprecationWarnings)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.paths import Paths
from support.profiles import dump_profile

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


# ----------------------------------------------------------------------------- logs

async def _serve_until_reachable(lab, profile, env) -> tuple[str, str]:
    """`fleet --headless serve` (installed) until its liveness round reaches the
    lab's node over SSH through the jump, then SIGTERM: (stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(INSTALLED), "--headless", "--profile", str(profile), "serve",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = b""
    try:
        async def reachable():
            nonlocal out
            while b'"node.reachable"' not in out:
                line = await proc.stdout.readline()
                assert line, "serve ended early"
                out += line
        await asyncio.wait_for(reachable(), 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return (out + rest).decode(), err.decode()


@pytest.fixture
async def lab(tmp_path, xdg):
    from support.ssh_lab import SshLab

    lab = SshLab(tmp_path)
    await lab.start_jump("j1")
    await lab.start_node("n01", "127.0.0.11")
    lab.write_known_hosts(tmp_path / "known_hosts")
    yield lab
    await lab.close()


async def test_serve_keeps_library_logs_off_stderr_and_in_the_log_file(lab, xdg, tmp_path):
    profile = lab.write_profile()
    out, err = await _serve_until_reachable(lab, profile, xdg)
    assert "fleet.site: started liveness" in err  # fleet's own lines stay
    assert "asyncssh" not in err and "asyncio" not in err, err
    log_file = Paths.default().log_file
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(log_file.parent.stat().st_mode) == 0o700
    logged = log_file.read_text()
    assert "fleet.site: started liveness" in logged
    assert "asyncssh" not in logged  # libraries at WARNING by default

    # more detail on request, still in the file only (a fresh store: the node is
    # new to it, so it is reported reachable again)
    fresh = dump_profile(tmp_path / "lab2.yaml",
                         lab.profile_data({"name": "lab2", "store": "./lab2.db"}))
    out, err = await _serve_until_reachable(lab, fresh, {**xdg, "FLEET_LOG_LEVEL": "DEBUG"})
    assert "asyncssh" not in err, err
    logged = log_file.read_text()
    assert re.search(r" \d+ INFO asyncssh: .*Opening SSH connection to 127\.0\.0\.2", logged)


def test_info_lists_the_log_file_every_command_creates(profile_path, xdg):
    r = subprocess.run([str(INSTALLED), "--headless", "--profile", str(profile_path),
                        "--format", "json", "info"], capture_output=True, text=True, env=xdg,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["log_file"] == str(Paths.default().log_file)
    assert Path(info["log_file"]).is_file()


@pytest.mark.parametrize("stderr_level, shown", [("logging.WARNING", True), ("None", False)])
def test_asyncio_s_socket_send_lines_go_to_the_file_only(tmp_path, stderr_level, shown):
    """What the console left on the terminal after quitting: asyncio's warning
    about writes to a closed socket. The headless commands and the console
    (stderr_level None) route it to the file; fleet's own warnings reach stderr
    from the headless commands only."""
    log_file = tmp_path / "state" / "fleet" / "logs" / "fleet.log"
    code = (f"import logging\nfrom pathlib import Path\nfrom fleet import logsetup\n"
            f"logsetup.configure(Path({str(log_file)!r}), stderr_level={stderr_level})\n"
            "logging.getLogger('asyncio').warning('socket.send() raised exception.')\n"
            "logging.getLogger('asyncssh').info('Opening SSH connection')\n"
            "logging.getLogger('fleet.access.pool').warning('jump gw1 is down')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "socket.send()" not in r.stderr and "asyncssh" not in r.stderr
    assert ("jump gw1 is down" in r.stderr) is shown, r.stderr
    logged = log_file.read_text()
    assert "WARNING asyncio: socket.send() raised exception." in logged
    assert "WARNING fleet.access.pool: jump gw1 is down" in logged
    assert "asyncssh" not in logged  # a library's INFO: below the file's level
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    for folder in (log_file.parent, log_file.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
