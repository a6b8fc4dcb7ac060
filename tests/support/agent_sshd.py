"""A plain OpenSSH sshd on 127.0.0.1 for the site agent's tests: the operator's
key authorized, ExposeAuthInfo on (the agent reads who came in), a known_hosts
file with its host key. Root: sshd switches users."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture
def sshd(tmp_path):
    """OpenSSH's sshd on 127.0.0.1 with ExposeAuthInfo (root: it switches users)."""
    folder = tmp_path / "sshd"
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
    yield {"port": port, "folder": folder, "fingerprint": fingerprint}
    proc.terminate()
    proc.wait(10)
