"""SSH keys for the testbed: one client key pair, one host key per sshd name.

Keys are ed25519, made by `ssh-keygen` into a directory under /tmp (never under
/root, which the sshds hide behind an empty bind mount), and cached by name so a
node restarted under the same name keeps its host key, as a real one would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

SSH_KEYGEN = "/usr/bin/ssh-keygen"


class KeyStore:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        (self.dir / "host").mkdir(parents=True, exist_ok=True)
        self.client_key = self.dir / "id_ed25519"
        if not self.client_key.exists():
            _keygen([(self.client_key, "fleet-test-client")])
        self.client_public = self.client_key.with_suffix(".pub").read_text().strip()
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(self.client_public + "\n")

    def host_key_path(self, name: str) -> Path:
        return self.dir / "host" / f"{name}_ed25519"

    def host_keys(self, names: Iterable[str]) -> dict[str, tuple[Path, str]]:
        """{name: (private key path, "ssh-ed25519 AAAA...")}, generating missing ones."""
        names = list(dict.fromkeys(names))
        missing = [(self.host_key_path(n), n) for n in names if not self.host_key_path(n).exists()]
        for i in range(0, len(missing), 32):  # concurrently, in bounded batches
            _keygen(missing[i:i + 32])
        out = {}
        for n in names:
            path = self.host_key_path(n)
            kind, blob, *_ = Path(f"{path}.pub").read_text().split()
            out[n] = (path, f"{kind} {blob}")
        return out


def _keygen(items: list[tuple[Path, str]]) -> None:
    procs = [(p, subprocess.Popen([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", c,
                                   "-f", str(p)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
             for p, c in items]
    for p, proc in procs:
        _, err = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"ssh-keygen {p}: {err.decode().strip()}")
