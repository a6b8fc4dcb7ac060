"""Network-namespace topology builder for the root testbed.

A `Topology` creates namespaces, bridges, veths, taps, addresses, routes,
sysctls and nftables drops, runs commands inside namespaces, and removes all of
it again (fixture finalizer, atexit, or SIGTERM). Everything it creates carries
this process's pid in its name (`ft<pid>-<name>` namespaces, `ft<pid><letter>N`
root links), so `sweep_stale()` can remove what a dead test process left behind.

Safety: every test subnet is routed `unreachable` in the root namespace (with a
high metric, so a real connected route still wins) before anything starts, so a
probe to an address nobody owns can never leave the machine. Root testbed use is
serialized across processes with a flock on /run/fleet-testbed.lock.
"""

from __future__ import annotations

import atexit
import fcntl
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

# The standard subnet plan (see tests/testbed and shared/notes/testbed.md).
SITE = "10.77.0.0/24"
SITE6 = "fd77::/64"
JUMP_LINK = "10.90.0.0/24"
NODES = "10.91.0.0/24"
NODES2 = "10.92.0.0/24"
TEST_SUBNETS: tuple[str, ...] = (SITE, SITE6, JUMP_LINK, NODES, NODES2)

GUARD_METRIC = 4242  # unreachable guard routes; connected routes (metric 0) win
LOCK_PATH = "/run/fleet-testbed.lock"
LOCK_INHERIT_ENV = "FLEET_TESTBED_LOCK_INHERITED"  # set for children of the holder
PREFIX = "ft"
TAG = f"{PREFIX}{os.getpid()}"
NS_RE = re.compile(rf"^{PREFIX}(\d+)-")
LINK_RE = re.compile(rf"^{PREFIX}(\d+)[a-z]")
WORKDIR_GLOB = "fleet-testbed-*"
WORK_ROOT = Path("/tmp")  # never under /root: sshd bind-mounts an empty dir there

IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"
SYSCTL = shutil.which("sysctl") or "/usr/sbin/sysctl"


class TestbedError(RuntimeError):
    __test__ = False  # not a test class


# ---------------------------------------------------------------- commands

def sh(argv: Sequence[str], *, check: bool = True, input: str | None = None,
       timeout: float = 30) -> subprocess.CompletedProcess:
    """Run argv, capture text output; raise TestbedError with stderr on failure."""
    cp = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                        timeout=timeout)
    if check and cp.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} -> {cp.returncode}: {cp.stderr.strip()}")
    return cp


def ns_argv(ns: str | None, argv: Sequence[str]) -> list[str]:
    """argv prefixed with `ip netns exec NS` (ns None = root namespace)."""
    return list(argv) if ns is None else [IP, "netns", "exec", ns, *argv]


def ip(ns: str | None, *args: str, check: bool = True, input: str | None = None):
    return sh([IP, *(["-n", ns] if ns else []), *args], check=check, input=input)


# ---------------------------------------------------------------- processes

def pid_alive(pid: int) -> bool:
    """True unless /proc says gone or zombie (`kill -0` lies on this VM)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return False


def _wait_dead(pids: Iterable[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if pid_alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if pid_alive(p)]
    return left


def kill_pids(pids: Iterable[int], timeout: float = 3.0) -> None:
    """SIGKILL pids and wait (via /proc) until each is gone or a zombie."""
    pids = list(pids)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    left = _wait_dead(pids, timeout)
    if left:
        raise TestbedError(f"processes survived SIGKILL: {left}")


def stop_processes(procs: Iterable[subprocess.Popen], grace: float = 2.0) -> None:
    """SIGTERM each process group, SIGKILL what is left after `grace`, reap."""
    procs = list(procs)
    for p in procs:
        _signal_group(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    groups = _process_groups()
    for p in procs:
        members = groups.get(p.pid, [])
        if p.poll() is None or members:
            _signal_group(p.pid, signal.SIGKILL)
            kill_pids(members)
        p.wait(5)


def _process_groups() -> dict[int, list[int]]:
    """{pgid: live member pids}, from one pass over /proc."""
    out: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] not in ("Z", "X"):
            out.setdefault(int(fields[2]), []).append(int(d))
    return out


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is pgid."""
    return _process_groups().get(pgid, [])


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- lock, guards

_lock_fd: int | None = None


def acquire_testbed_lock(timeout: float = 1800) -> None:
    """Hold the session-wide testbed flock until this process exits (idempotent)."""
    global _lock_fd
    if _lock_fd is not None or os.environ.get(LOCK_INHERIT_ENV):
        return
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not told:
                print(f"fleet testbed: waiting for {LOCK_PATH}", file=sys.stderr)
                told = True
            if time.monotonic() > deadline:
                os.close(fd)
                raise TestbedError(f"{LOCK_PATH} held by another process for {timeout}s")
            time.sleep(0.2)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _lock_fd = fd


_protected: dict[str, int] = {}


def _guard_route(subnet: str, op: str) -> None:
    ip(None, "route", op, "unreachable", subnet, "metric", str(GUARD_METRIC),
       check=(op != "del"))


def protect_subnets(subnets: Iterable[str] = TEST_SUBNETS) -> list[str]:
    """Route each subnet `unreachable` in the root namespace (reference counted)."""
    subnets = [str(ipaddress.ip_network(s)) for s in subnets]
    for s in subnets:
        if _protected.get(s, 0) == 0:
            _guard_route(s, "replace")
        _protected[s] = _protected.get(s, 0) + 1
    return subnets


def unprotect_subnets(subnets: Iterable[str] = TEST_SUBNETS) -> None:
    for s in (str(ipaddress.ip_network(s)) for s in subnets):
        n = _protected.get(s, 0) - 1
        if n <= 0:
            _protected.pop(s, None)
            _guard_route(s, "del")
        else:
            _protected[s] = n


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def ns_pids(ns: str) -> list[int]:
    cp = ip(None, "netns", "pids", ns, check=False)
    return [int(x) for x in cp.stdout.split()]


def sweep_stale() -> list[str]:
    """Remove namespaces, root links and workdirs of dead test processes."""
    removed = []
    me = os.getpid()
    for ns in list_netns():
        m = NS_RE.match(ns)
        if m and int(m[1]) != me and not pid_alive(int(m[1])):
            kill_pids(ns_pids(ns))
            ip(None, "netns", "del", ns, check=False)
            removed.append(ns)
    for link in sorted(os.listdir("/sys/class/net")):
        m = LINK_RE.match(link)
        if m and int(m[1]) != me and not pid_alive(int(m[1])):
            ip(None, "link", "del", link, check=False)
            removed.append(link)
    for d in WORK_ROOT.glob(WORKDIR_GLOB):
        pid = d.name.rsplit("-", 1)[-1].split("_")[0]
        if pid.isdigit() and int(pid) != me and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed


# ---------------------------------------------------------------- cleanup hooks

_live: list["Topology"] = []
_workdirs: list[Path] = []
_hooks_installed = False


def make_workdir(name: str) -> Path:
    """A fresh /tmp/fleet-testbed-<name>-<pid>_* directory, removed by cleanup_all()."""
    d = Path(tempfile.mkdtemp(prefix=f"fleet-testbed-{name}-{os.getpid()}_", dir=WORK_ROOT))
    _workdirs.append(d)
    return d


def cleanup_all() -> None:
    """Close every live Topology of this process and remove its workdirs
    (session finalizer, atexit, SIGTERM)."""
    for topo in list(reversed(_live)):
        try:
            topo.close()
        except Exception as e:  # keep going: the rest must still be removed
            print(f"fleet testbed cleanup: {e}", file=sys.stderr)
    while _workdirs:
        shutil.rmtree(_workdirs.pop(), ignore_errors=True)


def _final_cleanup() -> None:
    """cleanup_all() plus every guard route this process still holds."""
    cleanup_all()
    for s in list(_protected):
        _guard_route(s, "del")
    _protected.clear()


def _on_signal(signum, frame):
    _final_cleanup()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_cleanup_hooks() -> None:
    """atexit + SIGTERM/SIGHUP cleanup (signals only from the main thread)."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_final_cleanup)
    try:
        for s in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(s) in (signal.SIG_DFL, None):
                signal.signal(s, _on_signal)
    except ValueError:  # not the main thread
        pass


# ---------------------------------------------------------------- topology

_used_names: set[str] = set()
_seq = itertools.count()


def _unique(base: str) -> str:
    name, k = base, 1
    while name in _used_names:
        name, k = f"{base}{k}", k + 1
    _used_names.add(name)
    return name


class Topology:
    """Namespaces and links of one test topology; `close()` removes all of it.

    Namespace arguments take a logical name given to `add_ns` (or the real
    name); None means the root namespace, "the operator".
    """

    def __init__(self, name: str = "t", *, protect: Iterable[str] = ()):
        acquire_testbed_lock()
        install_cleanup_hooks()
        self.name = name
        self.namespaces: dict[str, str] = {}
        self.root_links: list[str] = []
        self.root_routes: list[list[str]] = []
        self.procs: list[subprocess.Popen] = []
        self.protected = protect_subnets(protect)
        self.workdir = make_workdir(name)
        self.closed = False
        _live.append(self)

    # names
    def ns(self, name: str | None) -> str | None:
        if name is None:
            return None
        return self.namespaces.get(name, name)

    def root_link_name(self, letter: str) -> str:
        name = _unique(f"{TAG}{letter}{next(_seq)}")
        if len(name) > 15 or not letter.isalpha():
            raise TestbedError(f"bad root link name {name!r}")
        return name

    # building
    def add_ns(self, name: str, *, forward: bool = False) -> str:
        real = _unique(f"{TAG}-{name}")
        ip(None, "netns", "add", real)
        self.namespaces[name] = real
        ip(real, "link", "set", "lo", "up")
        self.sysctl(real, {"net.ipv4.ip_forward": int(forward),
                           "net.ipv6.conf.all.forwarding": int(forward),
                           "net.ipv6.conf.all.accept_dad": 0,
                           "net.ipv6.conf.default.accept_dad": 0})
        return real

    def sysctl(self, ns: str | None, values: dict[str, object]) -> None:
        args = [f"{k}={v}" for k, v in values.items()]
        sh(ns_argv(self.ns(ns), [SYSCTL, "-q", "-w", *args]))

    def add_bridge(self, ns: str | None, name: str | None = None) -> str:
        name = name or (self.root_link_name("b") if ns is None else "br0")
        ip(self.ns(ns), "link", "add", name, "type", "bridge",
           "stp_state", "0", "forward_delay", "0")
        if ns is None:
            self.root_links.append(name)
        ip(self.ns(ns), "link", "set", name, "up")
        return name

    def add_veth(self, ns_a: str | None, name_a: str | None, ns_b: str | None, name_b: str,
                 *, master_a: str | None = None, master_b: str | None = None,
                 mac_a: str | None = None, mac_b: str | None = None) -> tuple[str, str]:
        """veth pair A<->B; an end in the root namespace gets a generated name."""
        a, b = self.ns(ns_a), self.ns(ns_b)
        if a is None:
            name_a = self.root_link_name("v")
        if b is None:
            raise TestbedError("put the root end of a veth on side A")
        args = ["link", "add", name_a, *(["address", mac_a] if mac_a else []),
                *(["master", master_a] if master_a else []),
                "type", "veth", "peer", "name", name_b,
                *(["address", mac_b] if mac_b else []), "netns", b]
        ip(a, *args)
        if a is None:
            self.root_links.append(name_a)
        ip(a, "link", "set", name_a, "up")
        if master_b:
            ip(b, "link", "set", name_b, "master", master_b)
        ip(b, "link", "set", name_b, "up")
        return name_a, name_b

    def add_tap(self, ns: str, name: str, master: str | None = "br0") -> str:
        ip(self.ns(ns), "tuntap", "add", "dev", name, "mode", "tap")
        ip(self.ns(ns), "link", "set", name, *(["master", master] if master else []), "up")
        return name

    def add_addr(self, ns: str | None, dev: str, *cidrs: str) -> None:
        """Add addresses (v4 or v6, `nodad` for v6) in one `ip -batch`."""
        lines = []
        for c in cidrs:
            v6 = ipaddress.ip_interface(c).version == 6
            lines.append(f"addr add {c} dev {dev}{' nodad' if v6 else ''}\n")
        for i in range(0, len(lines), 500):
            ip(self.ns(ns), "-batch", "-", input="".join(lines[i:i + 500]))

    def add_route(self, ns: str | None, dest: str, *, via: str | None = None,
                  dev: str | None = None, kind: str | None = None) -> None:
        args = [*([kind] if kind else []), dest, *(["via", via] if via else []),
                *(["dev", dev] if dev else [])]
        ip(self.ns(ns), "route", "replace", *args)
        if ns is None:
            self.root_routes.append(args)

    def nft_drop(self, ns: str, daddr: str, *, hook: str = "input") -> None:
        """Drop packets to `daddr` (address, range a-b or prefix) in a namespace."""
        fam = "ip6" if ":" in daddr else "ip"
        rules = (f"add table inet fleet_test\n"
                 f"add chain inet fleet_test {hook} "
                 f"{{ type filter hook {hook} priority 0; policy accept; }}\n"
                 f"add rule inet fleet_test {hook} {fam} daddr {daddr} drop\n")
        sh(ns_argv(self.ns(ns), [NFT, "-f", "-"]), input=rules)

    # running
    def run(self, ns: str | None, argv: Sequence[str], *, check: bool = True,
            input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        return sh(ns_argv(self.ns(ns), argv), check=check, input=input, timeout=timeout)

    def popen(self, ns: str | None, argv: Sequence[str], **kw) -> subprocess.Popen:
        """Start argv in its own process group; stopped (whole group) by close()."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(ns_argv(self.ns(ns), argv), start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, *procs: subprocess.Popen, grace: float = 2.0) -> None:
        stop_processes(procs, grace)
        for p in procs:
            if p in self.procs:
                self.procs.remove(p)

    def close(self) -> None:
        """Kill processes, delete links, namespaces, routes and the workdir."""
        if self.closed:
            return
        self.closed = True
        try:
            stop_processes(self.procs, grace=1.0)
            self.procs.clear()
            for real in self.namespaces.values():
                kill_pids(ns_pids(real))
            for link in reversed(self.root_links):
                if os.path.exists(f"/sys/class/net/{link}"):
                    ip(None, "link", "del", link, check=False)
            for real in self.namespaces.values():
                ip(None, "netns", "del", real, check=False)
            for args in self.root_routes:
                ip(None, "route", "del", *args, check=False)
            unprotect_subnets(self.protected)
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self.workdir in _workdirs:
                _workdirs.remove(self.workdir)
            left = [n for n in self.namespaces.values() if n in list_netns()]
            left += [k for k in self.root_links if os.path.exists(f"/sys/class/net/{k}")]
            if left:
                raise TestbedError(f"topology {self.name}: left behind {left}")
        finally:
            if self in _live:
                _live.remove(self)

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
