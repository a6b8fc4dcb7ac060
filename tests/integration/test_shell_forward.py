"""Shell bridge, recording, forwards, HTTP checks and liveness against asyncssh
servers in this process (fast, no root; support/ssh_lab.py): a jump on
127.0.0.2 and nodes on 127.0.0.1x that accept connections only from the jump's
address, with a PTY shell of their own and direct-tcpip allowed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from fleet.access.forward import ForwardSpec, parse_forward
from fleet.access.http_check import parse_http
from fleet.access.linkcheck import parse_ping
from fleet.access.pool import PoolOptions
from fleet.access.routes import OperatorIPv6
from fleet.access.shell import bridge
from fleet.engine import Engine
from fleet.errors import BadInput
from support.ssh_lab import SshLab


def write_lab_profile(lab: SshLab) -> Path:
    """The lab's profile (site `lo` behind j1) with every server's key known."""
    lab.write_known_hosts(lab.tmp / "known_hosts")
    return lab.write_profile()


async def open_engine(lab: SshLab) -> Engine:
    return await Engine.open(write_lab_profile(lab), pool_options=PoolOptions(
        keepalive_interval=1, backoff_base=0.2, backoff_max=1), operator6=OperatorIPv6())


@pytest.fixture
async def lab(tmp_path, xdg):
    lab = SshLab(tmp_path)
    await lab.start_jump()
    await lab.start_node("n1", "127.0.0.11")
    await lab.start_node("n2", "127.0.0.12")
    yield lab
    await lab.close()


class Keyboard:
    """`read` for the bridge: what a test types, line by line."""

    def __init__(self):
        self.q: asyncio.Queue[bytes] = asyncio.Queue()

    def type(self, text: str) -> None:
        self.q.put_nowait(text.encode())

    async def read(self) -> bytes:
        return await self.q.get()


class Screen:
    def __init__(self):
        self.data = b""
        self.changed = asyncio.Event()

    def write(self, b: bytes) -> None:
        self.data += b
        self.changed.set()

    async def wait_for(self, text: str, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while text.encode() not in self.data:
                self.changed.clear()
                await self.changed.wait()


# ----------------------------------------------------------------------------- shell

async def test_shell_session_bridge_resize_exit_and_recording(lab, tmp_path):
    engine = await open_engine(lab)
    try:
        kb, screen = Keyboard(), Screen()
        async with engine.access.shell("n1", term_type="vt220", term_size=(90, 25)) as s:
            task = asyncio.ensure_future(s.run(kb.read, screen.write))
            await screen.wait_for("welcome to n1")
            kb.type("term\r")
            await screen.wait_for("vt220")
            kb.type("secret\r")
            await screen.wait_for("Password: ")
            kb.type("hunter2\r")  # typed at a password prompt: never recorded
            await screen.wait_for("hunter2")  # (this toy shell echoes it; a real one won't)
            s.resize(120, 40)
            s.resize(120, 40)  # unchanged: not sent again
            kb.type("size\r")
            await screen.wait_for("40 120")
            kb.type("exit 3\r")
            assert await asyncio.wait_for(task, 5) == 3
            path = s.recording.path
        assert lab.sizes["n1"] == [(90, 25), (120, 40)]
        lines = path.read_text().splitlines()
        header = json.loads(lines[0])
        assert header["version"] == 2 and (header["width"], header["height"]) == (90, 25)
        assert header["env"]["TERM"] == "vt220"
        events = [json.loads(x) for x in lines[1:]]
        assert {e[1] for e in events} == {"o", "r"}
        assert [e[2] for e in events if e[1] == "r"] == ["120x40"]
        assert "".join(e[2] for e in events if e[1] == "o") == screen.data.decode()
        assert path.parent == engine.paths.recordings_dir
        opened = [e for e in await engine.events(50) if e.kind == "shell.opened"]
        closed = [e for e in await engine.events(50) if e.kind == "shell.closed"]
        assert opened[0].data["via"] == "j1" and opened[0].data["recording"] == str(path)
        assert closed[0].data["exit_status"] == 3
    finally:
        await engine.close()


async def test_bridge_reports_lost_connection_as_255(lab, tmp_path):
    engine = await open_engine(lab)
    try:
        kb, screen = Keyboard(), Screen()
        async with engine.access.shell("n2", record=False) as s:
            task = asyncio.ensure_future(s.run(kb.read, screen.write))
            await screen.wait_for("welcome to n2")
            await lab.kill("n2")
            assert await asyncio.wait_for(task, 5) == 255
            assert s.recording is None
    finally:
        await engine.close()


async def test_bridge_is_reusable_with_any_process(lab, tmp_path):
    """The console calls `bridge` with its own read/write and a process it opened."""
    engine = await open_engine(lab)
    try:
        async with engine.access.session("n1") as link:
            proc = await link.conn.create_process(term_type="xterm", term_size=(80, 24),
                                                  encoding=None)
            kb, screen = Keyboard(), Screen()
            kb.type("hello\rexit 0\r")
            assert await asyncio.wait_for(bridge(proc, kb.read, screen.write), 5) == 0
            assert b"hello\r\nhello" in screen.data
    finally:
        await engine.close()


async def test_read_only_engine_refuses_shells(lab, tmp_path):
    path = write_lab_profile(lab)
    await (await Engine.open(path)).close()  # create the store first
    engine = await Engine.open(path, read_only=True)
    try:
        with pytest.raises(BadInput, match="read-only"):
            engine.access.shell("n1")
    finally:
        await engine.close()


# ----------------------------------------------------------------------------- forwards

@pytest.fixture
async def web():
    """A tiny HTTP server on 127.0.0.1 (what a node would run on its loopback)."""
    hits = []

    async def handle(reader, writer):
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ")[1].decode()
        hits.append((path, writer.get_extra_info("peername")[0]))
        body = b"ok " + path.encode()
        status = b"200 OK" if path != "/missing" else b"404 Not Found"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.hits = hits
    server.port = server.sockets[0].getsockname()[1]
    yield server
    server.close()


def test_parse_forward_forms():
    assert parse_forward("8080:80") == ForwardSpec("127.0.0.1", 8080, "127.0.0.1", 80)
    assert parse_forward("0.0.0.0:8080:80") == ForwardSpec("0.0.0.0", 8080, "127.0.0.1", 80)
    assert parse_forward("8080:web:80") == ForwardSpec("127.0.0.1", 8080, "web", 80)
    assert parse_forward("[::1]:0:[fd00::5]:443") == ForwardSpec("::1", 0, "fd00::5", 443)
    for bad in ("80", "a:b", "1:2:3:4:5", "8080:0", "99999:80", "8080:"):
        with pytest.raises(BadInput):
            parse_forward(bad)
    assert parse_http("8080") == parse_http("8080/")
    assert parse_http("8080/healthz/x").path == "/healthz/x"
    with pytest.raises(BadInput):
        parse_http("web/x")


def test_parse_ping_summary():
    text = ("--- 10.91.0.11 ping statistics ---\n5 packets transmitted, 4 received, "
            "20% packet loss, time 4005ms\nrtt min/avg/max/mdev = 0.036/0.072/0.196/0.062 ms\n")
    p = parse_ping(text)
    assert (p["transmitted"], p["received"], p["loss_pct"]) == (5, 4, 20.0)
    assert (p["rtt_min_ms"], p["rtt_avg_ms"], p["rtt_max_ms"]) == (0.036, 0.072, 0.196)
    assert parse_ping("ping: connect: Network is unreachable")["received"] is None


async def test_forward_and_http_check_through_jump(lab, web, tmp_path):
    engine = await open_engine(lab)
    try:
        api = engine.access
        fwd = await api.forward("n1", f"0:{web.port}")
        try:
            host, port = fwd.address
            assert host == "127.0.0.1" and port > 0 and fwd.via == "j1"
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://127.0.0.1:{port}/a")
            assert r.status_code == 200 and r.text == "ok /a"
        finally:
            await fwd.aclose()
        # the access layer writes the forward's events (console and CLI alike)
        opened = [e for e in await engine.events(50) if e.kind == "forward.opened"]
        closed = [e for e in await engine.events(50) if e.kind == "forward.closed"]
        assert len(opened) == 1 and len(closed) == 1
        assert opened[0].subject == "n1" and opened[0].data == closed[0].data
        assert opened[0].data == {"node": "n1", "listen_host": "127.0.0.1",
                                  "listen_port": port, "remote_host": "127.0.0.1",
                                  "remote_port": web.port, "via": "j1"}
        rec = await api.http_check("n1", f"{web.port}/b")
        assert rec["status"] == 200 and rec["ok"] and rec["via"] == "j1"
        assert rec["latency_ms"] > 0 and rec["bytes"] == len("ok /b")
        rec = await api.http_check("n1", f"{web.port}/missing")
        assert rec["status"] == 404 and not rec["ok"]
        # the node itself made both connections (its sshd dialled 127.0.0.1)
        assert [p for p, _ in web.hits] == ["/a", "/b", "/missing"]
        # one pooled connection carried all of it
        assert api.pool.stats["node_connects"] == 1
        rec = await api.http_check("n1", "1")  # nothing listens on port 1
        assert rec["status"] is None and "ConnectError" in rec["error"]
    finally:
        await engine.close()


async def test_forward_port_in_use_is_exit_3(lab, web, tmp_path):
    from fleet.errors import EnvironmentProblem

    engine = await open_engine(lab)
    try:
        with pytest.raises(EnvironmentProblem, match="cannot listen"):
            await engine.access.forward("n1", f"127.0.0.1:{web.port}:80")
    finally:
        await engine.close()


# ----------------------------------------------------------------------------- liveness

async def test_check_is_the_access_layers_liveness_probe(lab, tmp_path):
    """engine.access.check(): what `fleet --headless check NODE` prints, for the
    console as well."""
    from fleet.errors import UnknownTarget

    engine = await open_engine(lab)
    try:
        rec = await engine.access.check("n1")
        assert rec["ok"] and rec["via"] == "j1" and rec["error"] is None
        assert rec["latency_ms"] >= 0 and rec["connect_ms"] >= 0
        await lab.kill("n2")
        rec = await engine.access.check("n2", timeout=1.0)
        assert not rec["ok"] and rec["error"].startswith("unreachable")
        with pytest.raises(UnknownTarget):
            await engine.access.check("nosuch")
    finally:
        await engine.close()


async def test_liveness_events_only_on_change(lab, tmp_path):
    engine = await open_engine(lab)
    try:
        from fleet.access.liveness import Liveness

        live = Liveness(engine, interval=0.3, timeout=1.0)
        assert await live.check_once() == {"n1": True, "n2": True}
        assert await live.check_once() == {"n1": True, "n2": True}
        n2 = lab.servers["n2"]
        await lab.kill("n2")
        assert await live.check_once() == {"n1": True, "n2": False}
        assert await live.check_once() == {"n1": True, "n2": False}
        await lab.start_node("n2", n2.address, port=n2.port, host_key=n2.host_key)
        assert await live.check_once() == {"n1": True, "n2": True}
        kinds = [(e.kind, e.subject) for e in await engine.events(50)
                 if e.kind.startswith("node.")]
        assert kinds == [("node.reachable", "n1"), ("node.reachable", "n2"),
                         ("node.unreachable", "n2"), ("node.reachable", "n2")]
        node = await engine.node("n2")
        assert node.reachability.value == "reachable" and node.last_seen is not None
        # the background loop, started from the API, runs rounds until engine close
        loop = engine.access.start_liveness(interval=0.2, timeout=1.0)
        assert engine.access.start_liveness() is loop
        await asyncio.sleep(0.7)
        assert loop.rounds >= 2
    finally:
        await engine.close()


# ----------------------------------------------------------------------------- the CLI

async def _fleet(lab: SshLab, xdg, *args, stdin: bytes | None = None):
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "--headless", "--profile", str(write_lab_profile(lab)), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(xdg, TERM="dumb-fleet"))
    return proc


async def test_cli_shell_with_piped_stdin_and_unknown_node(lab, xdg):
    proc = await _fleet(lab, xdg, "shell", "n1")
    out, err = await asyncio.wait_for(proc.communicate(b"term\rsize\rexit 4\r"), 30)
    assert proc.returncode == 4, err
    assert b"dumb-fleet" in out and b"24 80" in out  # TERM passed; 80x24 without a tty
    proc = await _fleet(lab, xdg, "shell", "nope")
    out, err = await asyncio.wait_for(proc.communicate(b""), 30)
    assert proc.returncode == 2 and b"unknown node 'nope'" in err


async def test_cli_forward_prints_address_and_stops_on_sigint(lab, web, xdg):
    import signal

    proc = await _fleet(lab, xdg, "forward", "n1", f"0:{web.port}")
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    m = __import__("re").match(r"forwarding 127\.0\.0\.1:(\d+) -> n1:127\.0\.0\.1:(\d+) "
                               r"\(via j1\); Ctrl-C stops", line)
    assert m and int(m.group(2)) == web.port, line
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{m.group(1)}/cli")
    assert r.status_code == 200 and r.text == "ok /cli"
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    proc = await _fleet(lab, xdg, "forward", "n1", "80")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"LOCAL:[HOST:]REMOTE" in err


async def test_cli_check_ssh_through_the_access_layer(lab, xdg):
    import json

    proc = await _fleet(lab, xdg, "check", "n1", "-o", "json")
    out, err = await asyncio.wait_for(proc.communicate(b""), 30)
    assert proc.returncode == 0, err
    rec = json.loads(out)
    assert rec["node"] == "n1" and rec["ok"] and rec["via"] == "j1" and rec["check"] == "ssh"
    await lab.kill("n2")
    proc = await _fleet(lab, xdg, "check", "n2")
    out, err = await asyncio.wait_for(proc.communicate(b""), 30)
    assert proc.returncode == 1 and b"n2: unreachable" in out, (out, err)
