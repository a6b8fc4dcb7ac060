"""Shells, forwards, HTTP checks, liveness and link checks against real OpenSSH
behind a jump (root testbed). The shell is driven through a real pty running
`python -m fleet --headless shell NODE`, as a person's terminal would."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import httpx
import pytest

from fleet.engine import Engine
from support.fixtures import SshFleet
from support import profiles as support_profiles
from support.profiles import use_isolated_env

pytestmark = pytest.mark.root


@pytest.fixture
def env(tmp_path, monkeypatch):
    env = use_isolated_env(monkeypatch, tmp_path)
    return env


def write_profile(tmp: Path, fleet: SshFleet, nodes, *, connect_timeout=2) -> Path:
    return support_profiles.write_profile(tmp, "tb", "ssh_testbed", {
        "operator": {"ssh": {"identity": str(fleet.client_key),
                             "known_hosts": [str(fleet.known_hosts)],
                             "connect_timeout": connect_timeout}},
        "nodes": [{"name": n.name, "address": n.address} for n in nodes]})


def fleet_argv(path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fleet", "--headless", "--profile", str(path), *args]


async def events_of(path: Path, kind: str):
    engine = await Engine.open(path)
    try:
        return [e for e in await engine.events(1000) if e.kind == kind]
    finally:
        await engine.close()


# ------------------------------------------------------------------ the pty driver

class PtyProcess:
    """A child on a fresh pty (its controlling terminal), read through the master."""

    def __init__(self, argv, env, cols=100, rows=30):
        self.master, self.slave = os.openpty()
        self.set_size(cols, rows)
        self.before = termios.tcgetattr(self.slave)

        def ctty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, env=env, preexec_fn=ctty,
                                     close_fds=True)
        self.buf = b""

    def set_size(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match:
        rx = re.compile(pattern.encode())
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen in {self.buf[-2000:]!r}")
            r, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if r:
                try:
                    self.buf += os.read(self.master, 65536)
                except OSError:  # EIO: every slave fd closed
                    pass

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([self.master], [], [], 0.1)
            if r:
                try:
                    self.buf += os.read(self.master, 65536)
                except OSError:
                    pass
        return self.proc.wait(timeout=1)

    def attrs(self):
        return termios.tcgetattr(self.slave)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def recordings(env) -> list[Path]:
    return sorted(Path(env["XDG_STATE_HOME"]).rglob("*.cast"))


def check_asciicast(path: Path) -> tuple[dict, list]:
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] > 0 and header["height"] > 0
    events = [json.loads(line) for line in lines[1:]]
    assert events, "no events recorded"
    last = 0.0
    for ev in events:
        assert isinstance(ev, list) and len(ev) == 3
        assert isinstance(ev[0], float | int) and ev[0] >= last
        assert ev[1] in ("o", "r") and isinstance(ev[2], str)
        last = ev[0]
    return header, events


# ------------------------------------------------------------------ shell

async def test_shell_in_a_real_pty_hostname_resize_exit_and_recording(ssh_fleet, tmp_path,
                                                                       env):
    fleet = ssh_fleet(1, jumps=("gw1",))
    node = fleet.nodes[0]
    path = write_profile(tmp_path, fleet, [node])
    env = dict(env, TERM="xterm-fleettest")
    p = PtyProcess(fleet_argv(path, "shell", node.name), env, cols=100, rows=30)
    try:
        # in raw mode while the shell runs
        p.expect(r"[#$] ", timeout=30)
        assert not p.attrs()[3] & termios.ICANON and not p.attrs()[3] & termios.ECHO
        p.send("hostname; echo $TERM; echo E-$((2+3))\r")
        m = p.expect(r"\n(\S+)\r?\n(\S+)\r?\nE-5")
        assert m.group(1).decode() == node.name
        assert m.group(2).decode() == "xterm-fleettest"
        p.send("stty size; echo E-$((3+4))\r")
        assert p.expect(r"\n(\d+ \d+)\r?\nE-7").group(1) == b"30 100"
        # the window changes: TIOCSWINSZ (the kernel signals the foreground group) + SIGWINCH
        p.set_size(111, 33)
        os.kill(p.proc.pid, signal.SIGWINCH)
        await asyncio.sleep(0.5)
        p.send("stty size; echo E-$((4+4))\r")
        assert p.expect(r"\n(\d+ \d+)\r?\nE-8").group(1) == b"33 111"
        p.send("exit 7\r")
        assert p.wait() == 7  # the remote shell's status is fleet's
        assert p.attrs() == p.before  # the terminal is restored
    finally:
        p.close()
    (cast,) = recordings(env)
    header, events = check_asciicast(cast)
    assert (header["width"], header["height"]) == (100, 30)
    assert header["env"]["TERM"] == "xterm-fleettest"
    out = "".join(e[2] for e in events if e[1] == "o")
    assert node.name in out and "33 111" in out
    assert ["r", "111x33"] in [e[1:] for e in events]
    assert oct(cast.stat().st_mode & 0o777) == "0o600"
    opened = await events_of(path, "shell.opened")
    closed = await events_of(path, "shell.closed")
    assert [e.subject for e in opened] == [node.name] == [e.subject for e in closed]
    assert closed[0].data["exit_status"] == 7 and closed[0].data["duration_s"] > 0
    assert closed[0].data["recording"] == str(cast)


async def test_shell_terminal_restored_when_the_node_dies_or_on_sigterm(ssh_fleet, tmp_path,
                                                                        env):
    fleet = ssh_fleet(2, jumps=("gw1",))
    a, b = fleet.nodes
    path = write_profile(tmp_path, fleet, [a, b])
    # the node dies under the shell: exit 255 (as ssh), terminal restored
    p = PtyProcess(fleet_argv(path, "shell", a.name), env)
    try:
        p.expect(r"[#$] ", timeout=30)
        assert p.attrs() != p.before
        await asyncio.to_thread(fleet.stop, a)
        assert p.wait() == 255
        assert p.attrs() == p.before
    finally:
        p.close()
    # SIGTERM while the shell runs: terminal restored too
    p = PtyProcess(fleet_argv(path, "shell", b.name), env)
    try:
        p.expect(r"[#$] ", timeout=30)
        assert p.attrs() != p.before
        p.proc.send_signal(signal.SIGTERM)
        assert p.wait() == 130
        assert p.attrs() == p.before
    finally:
        p.close()
    closed = await events_of(path, "shell.closed")
    assert sorted(e.subject for e in closed) == sorted([a.name, b.name])


# ------------------------------------------------------------------ forward and HTTP

@pytest.fixture
def http_server(ssh_fleet_topology, tmp_path):
    """`python -m http.server` inside the nodes namespace, on its loopback."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("fleet-forward-ok\n")
    topo = ssh_fleet_topology.topo
    proc = topo.popen("nodes", ["/usr/bin/python3", "-m", "http.server", "18080", "--bind",
                                "127.0.0.1", "--directory", str(root)],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        cp = topo.run("nodes", ["/usr/bin/python3", "-c",
                                "import socket; socket.create_connection(('127.0.0.1', 18080))"],
                      check=False)
        if cp.returncode == 0:
            break
        time.sleep(0.1)
    yield 18080
    topo.stop(proc)


async def test_forward_through_jump_to_http_server(ssh_fleet, http_server, tmp_path, env):
    fleet = ssh_fleet(1, jumps=("gw1",))
    node = fleet.nodes[0]
    path = write_profile(tmp_path, fleet, [node])
    proc = subprocess.Popen(fleet_argv(path, "forward", node.name, f"0:{http_server}",
                                       "-o", "jsonl"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = await asyncio.to_thread(proc.stdout.readline)
        rec = json.loads(line)
        assert rec["type"] == "listening" and rec["via"] == "gw1"
        assert rec["listen_host"] == "127.0.0.1" and rec["listen_port"] > 0
        async with httpx.AsyncClient() as client:
            for _ in range(3):  # several connections over the one pooled connection
                r = await client.get(f"http://127.0.0.1:{rec['listen_port']}/index.html")
                assert r.status_code == 200 and r.text == "fleet-forward-ok\n"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    opened = await events_of(path, "forward.opened")
    closed = await events_of(path, "forward.closed")
    assert opened[0].data["listen_port"] == rec["listen_port"] and len(closed) == 1


async def test_http_check_through_jump(ssh_fleet, http_server, tmp_path, env):
    fleet = ssh_fleet(1, jumps=("gw1",))
    node = fleet.nodes[0]
    path = write_profile(tmp_path, fleet, [node])
    cp = subprocess.run(fleet_argv(path, "check", node.name, "--http",
                                   f"{http_server}/index.html", "-o", "json"),
                        capture_output=True, text=True, env=env, timeout=60)
    assert cp.returncode == 0, cp.stderr
    rec = json.loads(cp.stdout)
    assert rec["status"] == 200 and rec["ok"] and rec["bytes"] == len("fleet-forward-ok\n")
    assert rec["via"] == "gw1" and rec["latency_ms"] > 0
    # a missing page is a failed check; a closed port says why
    cp = subprocess.run(fleet_argv(path, "check", node.name, "--http", f"{http_server}/nope"),
                        capture_output=True, text=True, env=env, timeout=60)
    assert cp.returncode == 1 and "HTTP 404" in cp.stdout
    cp = subprocess.run(fleet_argv(path, "check", node.name, "--http", "18099", "-o", "json"),
                        capture_output=True, text=True, env=env, timeout=60)
    rec = json.loads(cp.stdout)
    assert cp.returncode == 1 and rec["status"] is None and "ConnectError" in rec["error"]
    # the plain SSH check
    cp = subprocess.run(fleet_argv(path, "check", node.name, "-o", "json"),
                        capture_output=True, text=True, env=env, timeout=60)
    assert cp.returncode == 0 and json.loads(cp.stdout)["ok"] is True


# ------------------------------------------------------------------ liveness

async def test_liveness_killed_node_unreachable_then_back(ssh_fleet, tmp_path, env):
    fleet = ssh_fleet(2, jumps=("gw1",))
    a, b = fleet.nodes
    path = write_profile(tmp_path, fleet, [a, b])
    engine = await Engine.open(path)
    sub = engine.follow(await engine.store.events.max_id())

    async def next_event(kind: str, subject: str, timeout: float):
        async with asyncio.timeout(timeout):
            async for e in sub:
                if e.kind == kind and e.subject == subject:
                    return e

    try:
        interval = 1.0
        live = engine.access.start_liveness(interval=interval)
        await next_event("node.reachable", a.name, 20)
        await asyncio.sleep(interval * 2.5)  # more rounds: no more events while nothing changes
        t0 = time.monotonic()
        await asyncio.to_thread(fleet.stop, a)
        e = await next_event("node.unreachable", a.name, interval + 2 + 3)
        took = time.monotonic() - t0
        assert e.data["previous"] == "reachable" and e.data["error"]
        assert (await engine.node(a.name)).reachability.value == "unreachable"
        await asyncio.to_thread(fleet.start_nodes, [a.address])
        t1 = time.monotonic()
        await next_event("node.reachable", a.name, interval + 2 + 3)
        back = time.monotonic() - t1
        print(f"\nliveness: killed node unreachable after {took:.2f}s, back after {back:.2f}s")
        assert took < interval + 2 + 1
        events = [x for x in await engine.events(500) if x.kind.startswith("node.")]
        assert [x.kind for x in events if x.subject == b.name] == ["node.reachable"]
        assert [x.kind for x in events if x.subject == a.name] == [
            "node.reachable", "node.unreachable", "node.reachable"]
        assert live.rounds >= 4
    finally:
        await engine.close()


# ------------------------------------------------------------------ link check

async def test_link_check_ping_and_iperf(ssh_fleet, tmp_path, env):
    fleet = ssh_fleet(2, jumps=("gw1",))
    a, b = fleet.nodes
    path = write_profile(tmp_path, fleet, [a, b])
    cp = subprocess.run(fleet_argv(path, "link", a.name, b.name, "--iperf", "--seconds", "1",
                                   "-o", "json"),
                        capture_output=True, text=True, env=env, timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    rec = json.loads(cp.stdout)
    assert rec["address"] == b.address and rec["ok"]
    assert rec["ping"]["transmitted"] == 5 and rec["ping"]["received"] == 5
    assert rec["ping"]["rtt_avg_ms"] >= 0 and rec["ping"]["loss_pct"] == 0.0
    assert rec["iperf"]["received_bps"] > 1e6 and rec["iperf_skipped"] is None
    print(f"\nlink {a.name}->{b.name}: rtt {rec['ping']['rtt_avg_ms']} ms, "
          f"{rec['iperf']['received_bps'] / 1e9:.2f} Gbit/s")
    checked = await events_of(path, "link.checked")
    assert checked[0].subject == f"{a.name}->{b.name}"
    # to a dropped address: no replies, exit 1
    (gone,) = fleet.start_nodes(["10.91.0.231"])
    path = write_profile(tmp_path, fleet, [a, gone])
    cp = subprocess.run(fleet_argv(path, "link", a.name, gone.name, "--count", "2", "-o",
                                   "json"), capture_output=True, text=True, env=env, timeout=60)
    rec = json.loads(cp.stdout)
    assert cp.returncode == 1 and rec["ping"]["received"] == 0 and not rec["ok"]
