"""Partitions with nftables between namespaces (support/partition.py), and the
delaying relay run inside a namespace: two namespaces `a` and `b` on a bridge
in 10.92.0.0/24 (routed unreachable in the root namespace by the Topology)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.netns import NODES2, Topology
from support.partition import Partition, tables

pytestmark = pytest.mark.root

A, B, PORT = "10.92.0.10", "10.92.0.11", 7000
TESTS = Path(__file__).resolve().parents[1]

ECHO = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
def echo(c):
    while d := c.recv(65536):
        c.sendall(d)
    c.close()
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
"""

# prints "ok <seconds for connect + one echo>", "timeout" or "refused"
PROBE = """
import socket, sys, time
t = time.monotonic()
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.sendall(b"x"); assert c.recv(1) == b"x"
    print("ok", time.monotonic() - t)
except (socket.timeout, TimeoutError):
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"""


@pytest.fixture
def pair(testbed_guard):
    topo = Topology("part", protect=(NODES2,))
    try:
        topo.add_ns("lan")
        topo.add_bridge("lan", "br0")
        for name, addr in (("a", A), ("b", B)):
            topo.add_ns(name)
            topo.add_veth(name, "eth0", "lan", f"to-{name}", master_b="br0")
            topo.add_addr(name, "eth0", f"{addr}/24")
        topo.popen("b", [sys.executable, "-c", ECHO, B, str(PORT)])
        deadline = time.monotonic() + 10
        while probe(topo, "a", B, PORT) != "ok":
            assert time.monotonic() < deadline, "echo server in b never answered"
            time.sleep(0.05)
        yield topo
    finally:
        topo.close()


def probe(topo: Topology, ns: str, host: str, port: int, timeout: float = 1.0) -> str:
    out = topo.run(ns, [sys.executable, "-c", PROBE, host, str(port), str(timeout)],
                   timeout=timeout + 10).stdout.split()
    return out[0] if out else "?"


def probe_time(topo, ns, host, port) -> float:
    out = topo.run(ns, [sys.executable, "-c", PROBE, host, str(port), "5"]).stdout.split()
    assert out[0] == "ok", out
    return float(out[1])


def pings(topo: Topology, ns: str, host: str) -> bool:
    return topo.run(ns, ["ping", "-n", "-c", "1", "-W", "1", host], check=False).returncode == 0


def test_partition_between_namespaces_drops_then_heals(pair):
    topo = pair
    assert probe(topo, "a", B, PORT) == "ok" and pings(topo, "a", B)
    with Partition(topo, "a", "b") as p:
        assert probe(topo, "a", B, PORT) == "timeout"   # dropped, not refused
        assert not pings(topo, "a", B)
        assert not pings(topo, "b", A)                  # both ways
        p.cut()                                         # idempotent
        assert tables(topo.ns("a")) == [p.table] and tables(topo.ns("b")) == [p.table]
    assert probe(topo, "a", B, PORT) == "ok" and pings(topo, "a", B) and pings(topo, "b", A)
    p.heal()                                            # idempotent
    assert tables(topo.ns("a")) == [] and tables(topo.ns("b")) == []
    assert tables(None) == []


def test_partition_from_an_address_and_cut_again_after_heal(pair):
    topo = pair
    p = Partition(topo, "a", B)
    for _ in range(2):                                  # the same partition, twice
        p.cut()
        assert probe(topo, "a", B, PORT) == "timeout" and not pings(topo, "a", B)
        assert pings(topo, "b", B)                       # b itself is fine
        p.heal()
        assert probe(topo, "a", B, PORT) == "ok" and pings(topo, "a", B)
    assert tables(topo.ns("a")) == [] and tables(topo.ns("b")) == []


# one connection, echoing a byte every 100 ms; prints each round trip, in ms
TALKER = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
for i in range(int(sys.argv[3])):
    t = time.monotonic()
    c.sendall(b"x"); assert c.recv(1) == b"x"
    print(round((time.monotonic() - t) * 1000), flush=True)
    time.sleep(0.1)
"""


def test_established_connection_stalls_and_resumes(pair):
    """Packets are dropped, not refused: a live TCP connection is not reset by the
    cut; its next exchange waits for the heal and TCP's next retransmit (backing off
    exponentially: about 3 s for a 1.5 s cut), then goes on."""
    topo = pair
    talker = topo.popen("a", [sys.executable, "-c", TALKER, B, str(PORT), "12"],
                        stdout=subprocess.PIPE, text=True)
    rtts = [int(talker.stdout.readline()) for _ in range(3)]
    with Partition(topo, "a", "b"):
        time.sleep(1.5)
    rtts += [int(line) for line in talker.stdout]
    assert talker.wait(30) == 0, rtts
    print(f"round trips across a 1.5 s cut (ms): {rtts}")
    assert len(rtts) == 12
    assert max(rtts) >= 1000                     # one exchange waited out the cut
    assert sorted(rtts)[-2] < 100                # the others were ordinary


def test_bad_peer_is_a_clear_error(pair):
    with pytest.raises(ValueError):
        Partition(pair, "a", "no-such-namespace")


def test_relay_runs_inside_a_namespace_and_delays(pair):
    """`ip netns exec a python -m support.relay ...`: connect + one echo through it
    costs one round trip of 2 x 250 ms (the relay completes the client's connect
    itself, and the upstream connect overlaps the first byte's trip); a partition
    behind it stalls it."""
    topo = pair
    relay = topo.popen("a", [sys.executable, "-m", "support.relay", "--listen",
                             "127.0.0.1:7001", "--to", f"{B}:{PORT}", "--delay-ms", "250"],
                       stdout=subprocess.PIPE, text=True, cwd=TESTS)
    assert relay.stdout.readline().strip() == "relay listening on 127.0.0.1:7001"
    direct = probe_time(topo, "a", B, PORT)
    relayed = probe_time(topo, "a", "127.0.0.1", 7001)
    print(f"connect + echo: direct {direct * 1000:.1f} ms, via relay {relayed * 1000:.0f} ms")
    assert 0.5 <= relayed < 0.5 + 0.15 + direct
    with Partition(topo, "a", "b"):
        assert probe(topo, "a", "127.0.0.1", 7001, timeout=2.0) == "timeout"
    topo.stop(relay)
