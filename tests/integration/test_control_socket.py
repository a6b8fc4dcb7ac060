"""Headless commands run by a running `fleet --headless serve` through its control
socket: the same records, lines and exit codes as run locally; the socket's
place and mode; stale sockets; another user refused; Ctrl-C cancels.

Real processes: a `serve` on a tmp boot site, `fleet --headless` clients, PXE
boots from the simulated client to make machines.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fleet.headless.control.address import socket_path
from support.boot_site import write_boot_site
from support.pxe_client import ClientSpec, boot, random_mac

FLEET = [sys.executable, "-m", "fleet", "--headless"]


async def _fleet(env, *argv: str, no_control: bool = False, timeout: float = 60):
    """(exit code, stdout, stderr, pid) of one `fleet --headless` process."""
    env = dict(env, **({"FLEET_NO_CONTROL": "1"} if no_control else {}))
    proc = await asyncio.create_subprocess_exec(
        *FLEET, *argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode(), proc.pid


class Serve:
    """`fleet --headless serve` with its stderr (INFO log lines: `err`) and stdout
    (event lines: `out`) collected."""

    def __init__(self, profile: Path, env: dict):
        self.profile, self.env = profile, env
        self.err = self.out = ""
        self.proc = None

    async def start(self) -> "Serve":
        self.proc = await asyncio.create_subprocess_exec(
            *FLEET, "--profile", str(self.profile), "serve", env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._reader = asyncio.gather(self._read("err"), self._read("out"))
        await self.until("fleet.control: control socket ")
        return self

    async def _read(self, name: str):
        stream = self.proc.stderr if name == "err" else self.proc.stdout
        while line := await stream.readline():
            setattr(self, name, getattr(self, name) + line.decode())

    async def until(self, text: str, timeout: float = 30):
        t0 = time.monotonic()
        while text not in self.err + self.out:
            assert self.proc.returncode is None, f"serve ended: {self.err}"
            assert time.monotonic() - t0 < timeout, f"no {text!r} in: {self.err}"
            await asyncio.sleep(0.05)

    async def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        rc = await asyncio.wait_for(self.proc.wait(), 20)
        await self._reader
        return rc


@pytest.fixture
async def site(tmp_path, xdg):
    return write_boot_site(tmp_path, mode="direct")


@pytest.fixture
async def serve(site, xdg):
    s = await Serve(site.path, xdg).start()
    yield s
    await s.stop()


def _steady(rows: list[dict]) -> list[dict]:
    """Machine records without the fields that move with the clock."""
    return [{k: v for k, v in r.items() if k not in ("seen_ago_s", "last_seen")} for r in rows]


async def test_commands_through_serve_match_local_runs(site, serve, xdg):
    p = ["--profile", str(site.path)]
    for _ in range(2):
        r = await boot(ClientSpec(random_mac(), "ipxe-efi"), server=site.address, **site.ports)
        assert r.http_status == 200
    await serve.until("machine.discovered")
    # machines: the same records both ways, and the socket's run happened in serve
    # (a record may still change between the two runs as a boot's last steps are
    # written: then both run again)
    for _ in range(10):
        code, out, err, pid = await _fleet(xdg, *p, "machines", "-o", "json")
        assert (code, err) == (0, "")
        assert f"control: machines for pid {pid}" in serve.err
        local = await _fleet(xdg, *p, "machines", "-o", "json", no_control=True)
        assert local[0] == 0 and f"for pid {local[3]}" not in serve.err
        rows, local_rows = json.loads(out), json.loads(local[1])
        if _steady(rows) == _steady(local_rows):
            break
        await asyncio.sleep(0.5)
    assert len(rows) == 2 and _steady(rows) == _steady(local_rows)

    # lease through the socket: the record and the sentence, then seen by a local run
    mac = rows[0]["mac"]
    code, out, err, pid = await _fleet(xdg, *p, "lease", mac, "-d", "debian12",
                                       "--hostname", "web7")
    assert (code, err) == (0, "") and f"control: lease for pid {pid}" in serve.err
    assert out == f"{mac} leased to debian12 as web7; its next boot installs\n"
    code, out, _, _ = await _fleet(xdg, *p, "machines", "--state", "leased", "-o", "jsonl",
                                   no_control=True)
    assert [json.loads(line)["mac"] for line in out.splitlines()] == [mac]

    # bad input: the same line and exit code as a local run, through the socket
    for argv in (["lease", "00:11:22:33:44:55", "-d", "debian12"],
                 ["lease", mac, "-d", "nosuch"],
                 ["machines", "--state", "bogus"],
                 ["release", "not-a-mac"]):
        through = await _fleet(xdg, *p, *argv)
        here = await _fleet(xdg, *p, *argv, no_control=True)
        assert f"for pid {through[3]}" in serve.err, argv
        assert through[:3] == here[:3], argv
        assert through[0] == 2 and through[2].startswith("fleet: ") and \
            through[2].count("\n") == 1, through


async def test_socket_is_private_and_one_per_profile(site, serve, xdg, tmp_path):
    from fleet.paths import Paths

    path = socket_path(site.path, Paths.default().data_dir)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert path.parent == Path(xdg["XDG_RUNTIME_DIR"]) / "fleet"
    # another profile (same name, another file) gets another socket
    (tmp_path / "other").mkdir()
    other = write_boot_site(tmp_path / "other", mode="direct")
    assert socket_path(other.path, Paths.default().data_dir) != path
    # a command that must run here does not go through (profile check, --no-control)
    code, _, _, pid = await _fleet(xdg, "profile", "check", str(site.path))
    code2, _, _, pid2 = await _fleet(xdg, "--profile", str(site.path), "--no-control",
                                     "machines")
    assert code == code2 == 0
    assert f"pid {pid}" not in serve.err and f"pid {pid2}" not in serve.err
    # --read-only on one side only: runs here, where it refuses the change itself
    code, _, err, pid = await _fleet(xdg, "--profile", str(site.path), "--read-only",
                                     "lease", "00:11:22:33:44:55", "-d", "debian12")
    assert code == 2 and f"pid {pid}" not in serve.err, err


async def test_stale_socket_is_replaced_and_a_live_one_kept(site, xdg):
    from fleet.paths import Paths

    first = await Serve(site.path, xdg).start()
    path = socket_path(site.path, Paths.default().data_dir)
    first.proc.kill()  # no cleanup: the socket file stays, nobody listens
    await first.proc.wait()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    # a client meets the stale socket: runs the command itself, fine
    code, out, err, pid = await _fleet(xdg, "--profile", str(site.path), "machines")
    assert (code, err) == (0, "") and "no machines seen yet" in out
    second = await Serve(site.path, xdg).start()  # replaces the stale socket
    try:
        code, _, err, pid = await _fleet(xdg, "--profile", str(site.path), "info")
        assert code == 0, err
        await second.until(f"control: info for pid {pid}")
    finally:
        assert await second.stop() == 0
    assert not path.exists()  # a clean stop removes it


async def test_a_second_server_on_the_profile_leaves_the_live_one(xdg, profile_path):
    from fleet.engine import Engine
    from fleet.headless.control.server import start_control

    engine = await Engine.open(profile_path)
    try:
        first = await start_control(engine)
        assert first is not None
        inode = os.stat(first.path).st_ino
        assert await start_control(engine) is None  # another fleet serves it
        assert os.stat(first.path).st_ino == inode
        code, _, err, pid = await _fleet(xdg, "--profile", str(profile_path), "machines")
        assert code == 0, err
        await first.close()
        assert not first.path.exists()
        again = await start_control(engine)  # the lock was given back
        assert again is not None
        await again.close()
    finally:
        await engine.close()


async def test_events_follow_is_cancelled_by_ctrl_c(site, serve, xdg):
    proc = await asyncio.create_subprocess_exec(
        *FLEET, "--profile", str(site.path), "events", "--follow", env=xdg,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    await serve.until(f"control: events for pid {proc.pid}")
    first = await asyncio.wait_for(proc.stdout.readline(), 10)  # past events come first
    assert json.loads(first)["kind"]
    # a new event reaches the follower through the socket
    await boot(ClientSpec(random_mac(), "ipxe-efi"), server=site.address, **site.ports)
    while json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))["kind"] != \
            "machine.discovered":
        pass
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rc = await asyncio.wait_for(proc.wait(), 10)
    assert rc == 130 and time.monotonic() - t0 < 3
    await serve.until(f"control: events for pid {proc.pid} exited 130")
    assert (await proc.stderr.read()) == b""


def _raw(path: Path, data: bytes, user: int | None = None) -> list[dict]:
    """Frames a running fleet answers to raw bytes on its socket (as `user`)."""
    script = ("import socket,sys\n"
              "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
              "try: s.sendall(sys.stdin.buffer.read()); s.shutdown(socket.SHUT_WR)\n"
              "except OSError: pass  # a refusal may close it first\n"
              "b=b''\n"
              "while (c:=s.recv(65536)): b+=c\n"
              "sys.stdout.buffer.write(b)\n")
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] \
        if user is not None else []
    r = subprocess.run([*prefix, "/usr/bin/python3", "-c", script, str(path)], input=data,
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


async def test_bad_input_on_the_socket_gets_exit_2(site, serve, xdg):
    from fleet.headless.control.wire import request_frame
    from fleet.headless.control.address import socket_key
    from fleet.paths import Paths

    data_dir = Paths.default().data_dir
    path = socket_path(site.path, data_dir)
    key = socket_key(site.path, data_dir)

    def ask(frame) -> list[dict]:
        data = frame if isinstance(frame, bytes) else json.dumps(frame).encode() + b"\n"
        return _raw(path, data)

    garbage = await asyncio.to_thread(ask, b"{not json\n")
    assert garbage[-1] == {"exit": 2} and "not JSON" in garbage[0]["err"]
    huge = await asyncio.to_thread(ask, b"x" * (2 << 20) + b"\n")
    assert huge[-1] == {"exit": 2} and "limit" in huge[0]["err"]
    odd = await asyncio.to_thread(ask, {**request_frame(key, ["machines"], [], False),
                                        "argv": "machines"})
    assert odd[-1] == {"exit": 2} and "argv must be a list" in odd[0]["err"]
    # an unknown command: argparse's usage and error lines, as a local run prints them
    unknown = await asyncio.to_thread(ask, request_frame(key, ["bogus"], [], False))
    here = await _fleet(xdg, "bogus", no_control=True)
    assert unknown[-1] == {"exit": 2} and here[0] == 2
    assert "".join(f.get("err", "") for f in unknown) == here[2]
    wrong = await asyncio.to_thread(ask, request_frame("0" * 16, ["machines"], [], False))
    assert wrong == [{"local": "this socket serves another profile"}]
    # another fleet version's client (parser or exchange): told to run it itself
    other = await asyncio.to_thread(ask, {**request_frame(key, ["machines"], [], False),
                                          "parser": "1:2"})
    assert other == [{"local": "the running fleet is another fleet version"}]
    newer = await asyncio.to_thread(ask, {**request_frame(key, ["machines"], [], False),
                                          "control": 2})
    assert list(newer[0]) == ["local"] and len(newer) == 1
    local_only = await asyncio.to_thread(ask, request_frame(key, ["serve"], [], False))
    assert list(local_only[0]) == ["local"]
    assert "control: serve" not in serve.err and "control: bogus" not in serve.err
    # the server still serves
    code, _, err, pid = await _fleet(xdg, "--profile", str(site.path), "machines")
    assert code == 0 and f"control: machines for pid {pid}" in serve.err, err


async def test_another_user_is_refused(tmp_path, monkeypatch, xdg):
    """Even with the socket reachable (a runtime dir opened up by mistake), a peer
    of another uid gets a refusal and nothing runs; and a client does not use a
    runtime dir others can enter."""
    if os.geteuid() != 0:
        pytest.fail("needs root to run a client as nobody (the suite runs as root)")
    runtime = Path(tempfile.mkdtemp(prefix="fleet-rt-", dir="/tmp"))
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        env = dict(xdg, XDG_RUNTIME_DIR=str(runtime))
        site = write_boot_site(tmp_path, mode="direct")
        serve = await Serve(site.path, env).start()
        try:
            from fleet.headless.control.address import socket_key
            from fleet.headless.control.wire import request_frame
            from fleet.paths import Paths

            path = socket_path(site.path, Paths.default().data_dir)
            key = socket_key(site.path, Paths.default().data_dir)
            os.chmod(runtime, 0o755)
            os.chmod(path.parent, 0o755)
            os.chmod(path, 0o666)
            ask = json.dumps(request_frame(key, ["machines"], [], False)).encode() + b"\n"
            frames = await asyncio.to_thread(_raw, path, ask, 65534)  # nobody
            assert frames == [{"refused": f"peer uid 65534 is not uid {os.getuid()}"}]
            await serve.until("refused a connection from uid 65534")
            assert "control: machines" not in serve.err
            # this user's client will not trust a dir others can enter: runs here
            code, out, err, pid = await _fleet(env, "--profile", str(site.path), "machines")
            assert code == 0 and f"pid {pid}" not in serve.err, err
        finally:
            await serve.stop()
    finally:
        subprocess.run(["rm", "-rf", str(runtime)], check=False)
