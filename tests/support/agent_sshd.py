"""A plain OpenSSH sshd on 127.0.0.1 for the site agent's tests: the operator's
key authorized, ExposeAuthInfo on (the agent reads who came in), a known_hosts
file with its host key. Root: sshd switches users."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.profiles import XDG_VARS, write_profile

ROOT = Path(__file__).resolve().parents[2]

# Two sites for the tests: rack2's agent behind jump gw (both this sshd), the
# remote store holding two machines the tests lease
MAC = "ac:1f:6b:00:00:42"
OTHER_MAC = "ac:1f:6b:00:00:43"


def fleet(profile, env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                           str(profile), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def remote_profile(tmp_path):
    """rack2's own profile and store (the agent serves rack2 from it)."""
    (tmp_path / "site2").mkdir()
    return write_profile(tmp_path / "site2", name="site2")


def agent_command(xdg, remote, python: str = "") -> str:
    """The agent command as the profile says it (`--site rack2` is added)."""
    xdg_vars = " ".join(f"{k}={shlex.quote(xdg[k])}" for k in XDG_VARS)
    python = python or f"{shlex.quote(sys.executable)} -m fleet"
    return (f"cd {shlex.quote(str(ROOT))} && env {xdg_vars} {python} --headless "
            f"--profile {shlex.quote(str(remote))} agent")


def console_profile(tmp_path, sshd, command: str, known_hosts=None,  # noqa: F811
                    jump_port: int | None = None):
    """The console's profile: rack2 reached through jump gw (the sshd, or
    `jump_port` in front of it, a relay's)."""
    folder, port = sshd["folder"], sshd["port"]
    return write_profile(tmp_path, name="console", overrides={
        "operator": {"ssh": {"identity": str(folder / "operator"),
                             "known_hosts": [str(known_hosts or folder / "known_hosts")],
                             "connect_timeout": 5}},
        "jumps": [{"name": "gw", "address": "127.0.0.1", "port": jump_port or port}],
        "sites": [{"name": "rack2", "agent": {"host": "127.0.0.1", "port": port, "via": "gw",
                                              "user": "root", "command": command}}],
    })


def stop_sshd(folder, port: int) -> None:
    """The sshd this test started (its pid file), and its port closed."""
    os.kill(int((folder / "pid").read_text()), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)
    raise AssertionError("sshd still listening")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> tuple[str, str]:
    """A new ed25519 key at `path`: (public line, fingerprint as ssh-keygen prints it)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], check=True,
                                 capture_output=True, text=True).stdout.split()[1]
    return Path(f"{path}.pub").read_text().strip(), fingerprint


def sshd_config(folder: Path, address: str) -> Path:
    """An sshd config for `address`:22 in a namespace: the host key, the operator's
    authorized key and ExposeAuthInfo from `folder` (keys made with keygen)."""
    conf = folder / f"sshd-{address}.conf"
    conf.write_text(
        f"ListenAddress {address}:22\nHostKey {folder / 'host'}\n"
        f"PidFile {folder / f'sshd-{address}.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "StrictModes no\nUsePAM no\nUseDNS no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "ExposeAuthInfo yes\nPrintMotd no\nPrintLastLog no\n")
    return conf


@pytest.fixture
def sshd(tmp_path):
    """OpenSSH's sshd on 127.0.0.1 with ExposeAuthInfo (root: it switches users)."""
    with running_sshd(tmp_path / "sshd") as info:
        yield info


@contextlib.contextmanager
def running_sshd(folder: Path):
    """The sshd of the `sshd` fixture, for code that is not a test (benchmarks)."""
    folder.mkdir()
    host_public, _ = keygen(folder / "host")
    operator_public, fingerprint = keygen(folder / "operator")
    (folder / "authorized_keys").write_text(operator_public + "\n")
    port = free_port()
    (folder / "conf").write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {folder / 'host'}\n"
        f"PidFile {folder / 'pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "StrictModes no\nUsePAM no\nUseDNS no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "ExposeAuthInfo yes\nPrintMotd no\nPrintLastLog no\n")
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_public}\n")
    log = folder / "log"
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(folder / "conf"), "-E", str(log)])
    deadline = time.monotonic() + 10
    while "Server listening on" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    try:
        yield {"port": port, "folder": folder, "fingerprint": fingerprint}
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def sites(tmp_path, xdg, sshd):  # noqa: F811 - the fixture above
    """rack2's own store holding MAC and OTHER_MAC, discovered; the console's
    profile reaching rack2's agent on the sshd through jump gw (the same sshd)."""
    from fleet.engine import Engine

    remote = remote_profile(tmp_path)
    async with await Engine.open(remote) as engine:
        engine.record_sighting(MAC, stage="firmware")
        engine.record_sighting(OTHER_MAC, stage="firmware")
        await engine.flush_sightings()
    console = console_profile(tmp_path, sshd, agent_command(xdg, remote))
    return {"console": console, "remote": remote, "folder": sshd["folder"],
            "port": sshd["port"]}
