"""Real OpenSSH sshd processes inside testbed namespaces (jumps and nodes).

One sshd per address (`ListenAddress`), each under `unshare --uts --mount` with
its own hostname (so `hostname` tells nodes apart) and an empty directory bind-
mounted over /root (no rc files slowing commands). Many start concurrently;
readiness is read from each sshd's log ("Server listening on"), not slept for.
`default_config=True` leaves MaxSessions/MaxStartups at OpenSSH's defaults
(10 and 10:30:100) so tests can prove fleet respects them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
import subprocess
from pathlib import Path

from support.keys import KeyStore
from support.netns import TestbedError, Topology, kill_pids, pid_alive

SSHD = "/usr/sbin/sshd"
UNSHARE = "/usr/bin/unshare"
READY = "Server listening on"

BASE_CONFIG = """\
ListenAddress {listen}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
StrictModes no
UsePAM no
UseDNS no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
"""
TUNED_LIMITS = "MaxSessions 64\nMaxStartups 500:30:1000\n"

# $0 name, $1 empty home, $2 config, $3 log
LAUNCH = ('echo "$0" > /proc/sys/kernel/hostname && mount --bind "$1" /root && '
          f'exec {SSHD} -D -f "$2" -E "$3"')


@dataclass
class Sshd:
    name: str              # also the hostname inside its UTS namespace
    ns: str
    address: str
    port: int
    host_key: Path
    host_public: str       # "ssh-ed25519 AAAA..."
    conf: Path
    log: Path
    proc: subprocess.Popen = field(repr=False)
    default_config: bool = False

    @property
    def host(self) -> str:
        """known_hosts host pattern for this address and port."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def known_hosts_line(self, alias: bool = False) -> str:
        return f"{self.name + ',' if alias else ''}{self.host} {self.host_public}"

    def alive(self) -> bool:
        return self.proc.poll() is None and pid_alive(self.proc.pid)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class SshdFarm:
    """Starts and stops sshds in a Topology; keeps a known_hosts of the running ones."""

    def __init__(self, topo: Topology, keys: KeyStore):
        self.topo = topo
        self.keys = keys
        self.dir = topo.workdir / "sshd"
        self.home = topo.workdir / "empty-home"
        self.dir.mkdir(exist_ok=True)
        self.home.mkdir(exist_ok=True)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.running: dict[str, Sshd] = {}

    def start(self, specs: Iterable[tuple[str, str, str]], *, port: int = 22,
              default_config: bool = False, extra_config: str = "",
              timeout: float = 30.0) -> list[Sshd]:
        """Start one sshd per (ns, name, address), concurrently; wait until all listen."""
        specs = list(specs)
        for _, name, _ in specs:
            if name in self.running:
                raise TestbedError(f"sshd {name} already running")
        hostkeys = self.keys.host_keys(n for _, n, _ in specs)
        started = []
        for ns, name, address in specs:
            key, pub = hostkeys[name]
            conf, log = self.dir / f"{name}.conf", self.dir / f"{name}.log"
            listen = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
            conf.write_text(BASE_CONFIG.format(
                listen=listen, host_key=key, pid_file=self.dir / f"{name}.pid",
                authorized_keys=self.keys.authorized_keys)
                + ("" if default_config else TUNED_LIMITS) + extra_config)
            log.write_text("")
            proc = self.topo.popen(ns, [UNSHARE, "--uts", "--mount", "--", "/bin/sh", "-c",
                                        LAUNCH, name, str(self.home), str(conf), str(log)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            sshd = Sshd(name, self.topo.ns(ns), address, port, key, pub, conf, log, proc,
                        default_config)
            self.running[name] = sshd
            started.append(sshd)
        self._wait_ready(started, timeout)
        return started

    def _wait_ready(self, sshds: list[Sshd], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(sshds)
        while pending:
            still = []
            for s in pending:
                if READY in s.log_text():
                    continue
                if s.proc.poll() is not None:
                    err = s.proc.stderr.read().decode(errors="replace") if s.proc.stderr else ""
                    raise TestbedError(f"sshd {s.name} exited {s.proc.returncode}: "
                                       f"{err.strip()} {s.log_text().strip()}")
                still.append(s)
            pending = still
            if pending and time.monotonic() > deadline:
                raise TestbedError(f"{len(pending)} sshds not listening after {timeout}s: "
                                   f"{[s.name for s in pending[:10]]}")
            if pending:
                time.sleep(0.02)

    def stop(self, *sshds: Sshd, sessions: bool = True) -> None:
        """Stop sshds (whole process group); with sessions=True also their live
        connections (sshd children that left the group), as a dying host would."""
        children = _descendants([s.proc.pid for s in sshds]) if sessions else []
        self.topo.stop(*(s.proc for s in sshds), grace=1.0)
        if children:
            kill_pids(children)
        for s in sshds:
            if s.proc.stderr:
                s.proc.stderr.close()
            self.running.pop(s.name, None)

    def stop_all(self) -> None:
        self.stop(*self.running.values())

    def known_hosts_text(self, alias: bool = False) -> str:
        return "".join(s.known_hosts_line(alias) + "\n" for s in self.running.values())


def _descendants(roots: list[int]) -> list[int]:
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            parent[int(d)] = int(stat[stat.rindex(")") + 2:].split()[1])
    out, frontier = [], set(roots)
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        out += kids
        frontier = set(kids)
    return out

