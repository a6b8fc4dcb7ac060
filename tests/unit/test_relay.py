"""The delaying relay (support/relay.py), on loopback: it adds its delay once
each way, keeps order and throughput, bounds what it holds, carries half-closes
and resets, cuts and heals, runs as a process, and carries a real SSH session."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.keys import KeyStore
from support.relay import CHUNK, Relay
from support.sshd import BASE_CONFIG, READY, SSHD

D = 0.25           # the one-way delay
SLACK = 0.15       # allowed above the ideal round trip
TESTS = Path(__file__).resolve().parents[1]


async def echo_server():
    """An echo server on loopback; returns (server, address, accepted list)."""
    accepted = []

    async def handle(r, w):
        accepted.append(w)
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[:2], accepted


async def ping(r, w, payload=b"p") -> float:
    t = time.monotonic()
    w.write(payload)
    await w.drain()
    assert await asyncio.wait_for(r.readexactly(len(payload)), 10) == payload
    return time.monotonic() - t


async def test_ping_pong_round_trip_is_twice_the_delay():
    server, addr, _ = await echo_server()
    async with server, Relay(addr, delay=D) as relay:
        r, w = await asyncio.open_connection(*relay.address)
        rtts = [await ping(r, w) for _ in range(4)]  # the first includes the connect
        w.close()
        dr, dw = await asyncio.open_connection(*addr)
        direct = min([await ping(dr, dw) for _ in range(4)])
        dw.close()
    print(f"relay RTTs {[round(x * 1000) for x in rtts]} ms, direct {direct * 1000:.2f} ms")
    for rtt in rtts:
        assert 2 * D <= rtt < 2 * D + SLACK, rtts
    assert direct < 0.05


async def test_20mb_arrive_intact_at_window_bound_throughput():
    size = 20 * 1024 * 1024
    payload = random.Random(1).randbytes(size)
    got = hashlib.sha256()
    done = asyncio.Event()
    n = 0

    async def sink(r, w):
        nonlocal n
        while data := await r.read(1 << 20):
            got.update(data)
            n += len(data)
        done.set()
        w.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    async with server, Relay(server.sockets[0].getsockname()[:2], delay=D) as relay:
        r, w = await asyncio.open_connection(*relay.address)
        t = time.monotonic()
        for i in range(0, size, 1 << 20):
            w.write(payload[i:i + (1 << 20)])
            await w.drain()
        w.write_eof()
        await asyncio.wait_for(done.wait(), 60)
        elapsed = time.monotonic() - t
        w.close()
    bound = relay.window / D  # bytes/s: what the window allows over the delay
    rate = size / elapsed
    print(f"20 MiB through a {D * 1000:.0f} ms relay in {elapsed:.2f} s = "
          f"{rate / 2**20:.1f} MiB/s (window bound {bound / 2**20:.0f} MiB/s; "
          f"one delay per 64 KiB chunk would take {size / CHUNK * D:.0f} s); "
          f"peak held {relay.peak_in_flight / 2**20:.2f} MiB")
    assert n == size and got.digest() == hashlib.sha256(payload).digest()
    assert rate > 0.5 * bound
    assert relay.peak_in_flight <= relay.window + CHUNK


async def test_holding_is_bounded_and_the_sender_blocks():
    """A receiver that does not read: the relay holds at most window + one chunk,
    then stops reading, so the sender's writes block; reading later gets every byte."""
    start_reading = asyncio.Event()
    got = hashlib.sha256()
    done = asyncio.Event()

    async def lazy(r, w):
        await start_reading.wait()
        while data := await r.read(1 << 20):
            got.update(data)
        done.set()
        w.close()

    size = 24 * 1024 * 1024  # more than the window plus both sockets' buffers
    payload = random.Random(2).randbytes(size)
    server = await asyncio.start_server(lazy, "127.0.0.1", 0)
    async with server, Relay(server.sockets[0].getsockname()[:2], delay=0.02,
                             window=1 << 20) as relay:
        r, w = await asyncio.open_connection(*relay.address)
        w.write(payload)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(w.drain()), 1.0)
        held = relay.peak_in_flight
        start_reading.set()
        await asyncio.wait_for(w.drain(), 30)
        w.write_eof()
        await asyncio.wait_for(done.wait(), 30)
        w.close()
    assert held <= (1 << 20) + CHUNK
    assert relay.peak_in_flight <= (1 << 20) + CHUNK
    assert got.digest() == hashlib.sha256(payload).digest()


async def test_order_kept_and_delay_paid_once_per_stream():
    """300 small writes with pauses: all arrive in order, each about one delay after
    it was sent, and the stream takes its sending time plus one delay, not 300 delays."""
    d = 0.1
    arrivals: list[tuple[float, bytes]] = []
    done = asyncio.Event()

    async def recorder(r, w):
        buf = b""
        while data := await r.read(65536):
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                arrivals.append((time.monotonic(), line))
        done.set()
        w.close()

    rng = random.Random(3)
    server = await asyncio.start_server(recorder, "127.0.0.1", 0)
    async with server, Relay(server.sockets[0].getsockname()[:2], delay=d) as relay:
        r, w = await asyncio.open_connection(*relay.address)
        sent = {}
        t0 = time.monotonic()
        for i in range(300):
            msg = f"{i:05d}".encode() + b"x" * rng.randrange(0, 3000)
            sent[msg] = time.monotonic()
            w.write(msg + b"\n")
            await w.drain()
            if rng.random() < 0.2:
                await asyncio.sleep(rng.uniform(0, 0.01))
        w.write_eof()
        await asyncio.wait_for(done.wait(), 30)
        total = time.monotonic() - t0
        w.close()
    assert [m for _, m in arrivals] == list(sent)
    lags = [t - sent[m] for t, m in arrivals]
    assert min(lags) >= d - 0.005 and max(lags) < d + SLACK, (min(lags), max(lags))
    assert total < 3 * d + 2.0


async def test_half_close_travels_both_ways():
    events = []

    async def replier(r, w):
        data = await r.read()                     # until the client's EOF
        events.append(("server got", data, time.monotonic()))
        w.write(b"bye")
        w.write_eof()
        await w.drain()
        await asyncio.sleep(0.3)
        w.close()

    server = await asyncio.start_server(replier, "127.0.0.1", 0)
    async with server, Relay(server.sockets[0].getsockname()[:2], delay=0.1) as relay:
        r, w = await asyncio.open_connection(*relay.address)
        t = time.monotonic()
        w.write(b"hello")
        w.write_eof()                              # half-close: we can still read
        reply = await asyncio.wait_for(r.read(), 5)  # until the server's EOF
        back = time.monotonic() - t
        w.close()
    assert events[0][1] == b"hello"
    assert events[0][2] - t >= 0.1
    assert reply == b"bye"
    assert 0.2 <= back < 0.2 + SLACK


async def test_reset_on_one_side_aborts_the_other():
    server_saw = asyncio.Queue()

    async def watcher(r, w):
        try:
            server_saw.put_nowait(await r.read(100))
            server_saw.put_nowait(await r.read(100))
        except ConnectionError as e:
            server_saw.put_nowait(e)

    server = await asyncio.start_server(watcher, "127.0.0.1", 0)
    async with server, Relay(server.sockets[0].getsockname()[:2], delay=0.05) as relay:
        r, w = await asyncio.open_connection(*relay.address)
        w.write(b"a")
        assert await asyncio.wait_for(server_saw.get(), 5) == b"a"
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        w.transport.abort()                        # RST, not FIN
        end = await asyncio.wait_for(server_saw.get(), 5)
    assert end == b"" or isinstance(end, ConnectionError)


async def test_cut_holds_everything_and_heal_resumes():
    server, addr, accepted = await echo_server()
    d = 0.1
    async with server, Relay(addr, delay=d) as relay:
        r, w = await asyncio.open_connection(*relay.address)
        assert await ping(r, w, b"before") < 2 * d + SLACK
        relay.cut()
        w.write(b"during")
        await w.drain()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.readexactly(6), 5 * d)
        r2, w2 = await asyncio.open_connection(*relay.address)  # a new connection waits too
        w2.write(b"new")
        await asyncio.sleep(3 * d)
        assert len(accepted) == 1
        t = time.monotonic()
        relay.heal()
        assert await asyncio.wait_for(r.readexactly(6), 5) == b"during"
        assert await asyncio.wait_for(r2.readexactly(3), 5) == b"new"
        held_for = time.monotonic() - t
        assert len(accepted) == 2
        assert await ping(r, w, b"after") < 2 * d + SLACK
        w.close()
        w2.close()
    assert 2 * d <= held_for < 3 * d + SLACK


async def test_relay_reset_aborts_connections():
    server, addr, _ = await echo_server()
    async with server, Relay(addr, delay=0.05) as relay:
        r, w = await asyncio.open_connection(*relay.address)
        await ping(r, w)
        relay.reset()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(ping(r, w), 5)


async def test_runs_as_a_process_with_signals_to_cut_and_heal():
    server, addr, _ = await echo_server()
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "support.relay", "--listen", "127.0.0.1:0",
        "--to", f"{addr[0]}:{addr[1]}", "--delay-ms", str(D * 1000),
        stdout=subprocess.PIPE, env=env)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert line.startswith("relay listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        async with server:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            rtt = await ping(r, w)
            assert 2 * D <= rtt < 2 * D + SLACK
            proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(0.1)
            w.write(b"x")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(r.readexactly(1), 4 * D)
            proc.send_signal(signal.SIGUSR2)
            assert await asyncio.wait_for(r.readexactly(1), 5) == b"x"
            w.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# ------------------------------------------------------------------ SSH

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback_sshd(tmp_path):
    """A real OpenSSH sshd on 127.0.0.1 (support/sshd.py's config), as this user."""
    keys = KeyStore(tmp_path / "keys")
    (host_key, host_public), = keys.host_keys(["relayed"]).values()
    port = free_port()
    conf, log = tmp_path / "sshd.conf", tmp_path / "sshd.log"
    conf.write_text(BASE_CONFIG.format(listen=f"127.0.0.1:{port}", host_key=host_key,
                                       pid_file=tmp_path / "sshd.pid",
                                       authorized_keys=keys.authorized_keys))
    log.write_text("")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation
    proc = subprocess.Popen([SSHD, "-D", "-f", str(conf), "-E", str(log)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while READY not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        yield port, keys, host_public, tmp_path
    finally:
        proc.terminate()
        proc.wait(5)


def ssh_true(port: int, keys: KeyStore, host_public: str, tmp: Path) -> float:
    known = tmp / f"known_hosts_{port}"
    known.write_text(f"[127.0.0.1]:{port} {host_public}\n")
    argv = ["/usr/bin/ssh", "-F", "/dev/null", "-p", str(port), "-i", str(keys.client_key),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "IdentitiesOnly=yes",
            f"{getpass.getuser()}@127.0.0.1", "true"]
    t = time.monotonic()
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return time.monotonic() - t


@pytest.mark.slow
async def test_ssh_session_through_the_relay(loopback_sshd):
    """`ssh ... true` through the relay works, with the host key checked, and takes
    longer than direct by its round trips (about 8) times 2 x delay."""
    port, keys, host_public, tmp = loopback_sshd
    d = 0.1
    direct = min([await asyncio.to_thread(ssh_true, port, keys, host_public, tmp)
                  for _ in range(2)])
    async with Relay(("127.0.0.1", port), delay=d) as relay:
        relayed = await asyncio.to_thread(ssh_true, relay.address[1], keys, host_public, tmp)
    trips = (relayed - direct) / (2 * d)
    print(f"ssh true: direct {direct:.3f} s, through a {d * 1000:.0f} ms relay "
          f"{relayed:.3f} s = {trips:.2f} extra round trips")
    assert relay.connections == 1
    assert 4 <= trips <= 12  # OpenSSH's exchanges for a key login and one command
