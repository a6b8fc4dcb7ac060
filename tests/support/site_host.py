"""A site host for `site install`: a namespace on its own /24 (per test process,
routed from the root namespace over a veth and nowhere else: no package index
is reachable from it), a real sshd there, and an unprivileged user whose home
(under /tmp, outside the test's 0700 tmp dirs) is the host's disk. Root only.

The sshd is also the jump `gw` the console reaches the agent host through (as
root, the operator's user); the agent host is reached as the user."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from support.keys import KeyStore
from support.netns import Topology
from support.sshd import Sshd, SshdFarm

# a /24 of its own per test process: two worktrees' runs do not collide
NET = f"10.97.{os.getpid() % 250}"
SUBNET = f"{NET}.0/24"


@dataclass
class SiteHost:
    address: str
    user: str
    home: Path
    sshd: Sshd
    known_hosts: Path
    client_key: Path

    def as_user(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """A command as the site host's user (its files are on this disk)."""
        return subprocess.run(["/usr/sbin/runuser", "-u", self.user, "--", *argv], cwd=self.home,
                              capture_output=True, text=True, timeout=timeout,
                              env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"})


def add_user(name: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix="fleet-sitehost-", dir="/tmp"))
    base.chmod(0o755)
    home = base / name
    subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell",
                    "/bin/sh", "--user-group", name], check=True, capture_output=True)
    # sshd without PAM refuses a locked account ("!" in shadow); "*": no password, not locked
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    return home


def remove_user(name: str) -> None:
    """The user and its home (one this module made), if there."""
    try:
        home = Path(pwd.getpwnam(name).pw_dir)
    except KeyError:
        return
    subprocess.run(["userdel", name], check=False, capture_output=True)
    if home.parent.name.startswith("fleet-sitehost-"):
        shutil.rmtree(home.parent, ignore_errors=True)


def start(topo: Topology, keys: KeyStore, user: str) -> SiteHost:
    """On a Topology made with protect=(SUBNET,)."""
    topo.add_ns("sitehost")
    outside, _ = topo.add_veth(None, None, "sitehost", "eth0")
    topo.add_addr(None, outside, f"{NET}.1/24")
    topo.add_addr("sitehost", "eth0", f"{NET}.2/24")
    remove_user(user)  # left by a run that was killed
    home = add_user(user)
    # sshd reads authorized keys as the user: the session's key store is root's
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").write_text(Path(f"{keys.client_key}.pub").read_text())
    subprocess.run(["chown", "-R", f"{user}:{user}", str(ssh)], check=True)
    farm = SshdFarm(topo, keys)
    # ~/.ssh/environment: a test gives the user's sessions another PATH
    [sshd] = farm.start([("sitehost", "sitehost", f"{NET}.2")], extra_config=(
        f"PermitUserEnvironment yes\nMatch User {user}\n"
        f"  AuthorizedKeysFile {ssh / 'authorized_keys'}\n"))
    known = topo.workdir / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    return SiteHost(f"{NET}.2", user, home, sshd, known, keys.client_key)
