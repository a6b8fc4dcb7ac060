"""The access plane against real OpenSSH: jumps, chains, beachheads, blackholes,
default sshd limits, failover and host-key trust (root testbed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from fleet.core.model import HostKey
from fleet.engine import Engine
from support.fixtures import SshFleet
from support import profiles as support_profiles
from support.profiles import use_isolated_env

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path, monkeypatch):
    env = use_isolated_env(monkeypatch, tmp_path)
    return env


def write_profile(tmp: Path, fleet: SshFleet, nodes, *, site_jumps=("gw1", "gw2"),
                  host_keys="strict", connect_timeout=2, beachheads=(),
                  known_hosts: Path | None = None) -> Path:
    """nodes: Sshd objects or (name, address) pairs."""
    pairs = [(n.name, n.address) if hasattr(n, "address") else n for n in nodes]
    return support_profiles.write_profile(tmp, "tb", "ssh_testbed", {
        "operator": {"ssh": {"identity": str(fleet.client_key),
                             "known_hosts": [str(known_hosts or fleet.known_hosts)],
                             "host_keys": host_keys, "connect_timeout": connect_timeout},
                     "beachheads": list(beachheads)},
        "jumps": [{"name": "gw2", "address": "10.90.0.3"},
                  {"name": "inner", "address": "10.91.0.2", "via": "gw1"}],
        "sites": [{"name": "rack1", "jumps": list(site_jumps)},
                  {"name": "rack2", "subnets": ["10.92.0.0/24"], "jumps": ["inner"]}],
        "nodes": [{"name": name, "address": address} for name, address in pairs]})


def jump_known_hosts(tmp: Path, fleet: SshFleet) -> Path:
    path = tmp / "jumps_known_hosts"
    path.write_text("".join(j.known_hosts_line() + "\n" for j in fleet.jumps.values()))
    return path


async def events_of(engine, kind):
    return [e for e in await engine.events(1000) if e.kind == kind]


# ------------------------------------------------------------------ fan-out

async def test_exec_hostname_on_sixty_nodes_behind_one_jump(ssh_fleet, tmp_path, env):
    fleet = ssh_fleet(60, jumps=("gw1",))
    path = write_profile(tmp_path, fleet, fleet.nodes, site_jumps=("gw1",))
    engine = await Engine.open(path)
    try:
        nodes = await engine.access.targets(select="all")
        assert len(nodes) == 60
        t0 = time.monotonic()
        cold = await engine.access.exec(nodes, "hostname", parallel=64, keep_output=True)
        t_cold = time.monotonic() - t0
        assert not cold.failed, [(r.node, r.error) for r in cold.failed]
        assert all(r.stdout == [r.node] for r in cold.results)  # sshd name = its hostname
        assert {r.via for r in cold.results} == {"gw1"}
        t0 = time.monotonic()
        warm = await engine.access.exec(nodes, "hostname", parallel=64, keep_output=True)
        t_warm = time.monotonic() - t0
        assert all(r.stdout == [r.node] for r in warm.results)
        assert engine.access.pool.stats["node_connects"] == 60
        print(f"\n60 nodes via gw1: cold {t_cold:.2f}s, warm {t_warm:.2f}s")
        assert t_warm < t_cold
    finally:
        await engine.close()
    # the same through the CLI, as a script would
    cp = subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile", str(path),
                         "exec", "--select", "all", "-o", "jsonl", "--", "hostname"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert cp.returncode == 0, cp.stderr
    recs = [json.loads(line) for line in cp.stdout.splitlines()]
    outs = {r["node"]: r["line"] for r in recs if r["type"] == "output"}
    assert outs == {n.name: n.name for n in fleet.nodes}
    assert recs[-1]["type"] == "summary" and recs[-1]["ok"] == 60


async def test_two_hops_through_inner(ssh_fleet, tmp_path, env):
    fleet = ssh_fleet(0, nodes2=2, jumps=("gw1",))
    path = write_profile(tmp_path, fleet, fleet.nodes2)
    engine = await Engine.open(path)
    try:
        nodes = await engine.access.targets(select="all")
        route = engine.access.route(nodes[0])
        assert route.kind.value == "jump" and route.chain == ("gw1", "inner")
        report = await engine.access.exec(nodes, "hostname", keep_output=True)
        assert [r.stdout for r in report.results] == [["deep10"], ["deep11"]]
        assert {r.via for r in report.results} == {"inner"}
        # upload-and-run over SFTP, two hops deep; the uploaded file is removed after
        script = tmp_path / "post-boot.sh"
        script.write_text('#!/bin/sh\necho "$(hostname) got $1"; echo "$0"\n')
        report = await engine.access.exec(nodes, script=script, script_args=["x y"],
                                          keep_output=True)
        assert [r.stdout[0] for r in report.results] == ["deep10 got x y", "deep11 got x y"]
        uploaded = [r.stdout[1] for r in report.results]
        assert all(u.startswith("/tmp/fleet-script-") for u in uploaded)
        assert not [u for u in uploaded if Path(u).exists()]  # the sshds share our /tmp
    finally:
        await engine.close()


async def test_beachhead_goes_direct(ssh_fleet, ssh_fleet_topology, tmp_path, env):
    fleet = ssh_fleet(1, jumps=("gw1",))
    (bh,) = fleet.start_nodes(["10.91.0.200"])
    topo = ssh_fleet_topology.topo
    # the operator reaches 10.91.0.200 (only) through a router: gw2's namespace
    topo.sysctl("gw2", {"net.ipv4.ip_forward": 1})
    topo.run("nodes", ["ip", "route", "replace", "10.90.0.0/24", "via", "10.91.0.3"])
    topo.add_route(None, "10.91.0.200/32", via="10.90.0.3")
    try:
        path = write_profile(tmp_path, fleet, [bh, fleet.nodes[0]], site_jumps=("gw1",),
                             beachheads=("10.91.0.200",))
        engine = await Engine.open(path)
        try:
            nodes = await engine.access.targets(["node200", "node10"])
            kinds = [engine.access.route(n).kind.value for n in nodes]
            assert kinds == ["direct-beachhead", "jump"]
            report = await engine.access.exec(nodes, "hostname", keep_output=True)
            r = {x.node: x for x in report.results}
            assert r["node200"].stdout == ["node200"] and r["node200"].via is None
            assert r["node10"].stdout == ["node10"] and r["node10"].via == "gw1"
            # node200 saw the operator's own address: it really was direct
            who = await engine.access.exec([nodes[0]], "echo $SSH_CLIENT", keep_output=True)
            assert who.results[0].stdout[0].split()[0] == "10.90.0.1"
        finally:
            await engine.close()
    finally:
        subprocess.run(["ip", "route", "del", "10.91.0.200/32"], capture_output=True)
        topo.run("nodes", ["ip", "route", "del", "10.90.0.0/24"], check=False)
        topo.sysctl("gw2", {"net.ipv4.ip_forward": 0})


async def test_twenty_blackholed_nodes_fail_within_connect_timeout(ssh_fleet, tmp_path, env):
    fleet = ssh_fleet(5, jumps=("gw1",))
    dropped = fleet.start_nodes([f"10.91.0.{230 + i}" for i in range(20)])
    path = write_profile(tmp_path, fleet, fleet.nodes, site_jumps=("gw1",), connect_timeout=2)
    engine = await Engine.open(path)
    try:
        nodes = await engine.access.targets(select="all")
        assert len(nodes) == 25
        t0 = time.monotonic()
        report = await engine.access.exec(nodes, "hostname")
        took = time.monotonic() - t0
        r = {x.node: x for x in report.results}
        assert {r[s.name].error_kind for s in dropped} == {"unreachable"}
        assert all("connect_timeout" in r[s.name].error for s in dropped)
        assert {r[s.name].error_kind for s in fleet.nodes[:5]} == {"ok"}
        slowest = max(r[s.name].duration_s for s in dropped)
        print(f"\n20 blackholed: all classified in {took:.2f}s (slowest {slowest:.2f}s)")
        assert took < 2 + 1
    finally:
        await engine.close()


async def test_default_sshd_limits_lose_nothing(ssh_fleet, tmp_path, env):
    """100 concurrent tunnelled connects to one sshd with MaxStartups 10:30:100, and
    30 concurrent commands on one connection to it with MaxSessions 10."""
    fleet = ssh_fleet(0, jumps=("gw1",))
    (plain,) = fleet.start_nodes(["10.91.0.100"], default_config=True)
    aliases = [(f"alias{i:03d}", plain.address) for i in range(100)]
    path = write_profile(tmp_path, fleet, aliases, site_jumps=("gw1",), connect_timeout=20)
    engine = await Engine.open(path)
    try:
        nodes = await engine.access.targets(select="all")
        t0 = time.monotonic()
        report = await engine.access.exec(nodes, "hostname", parallel=100, keep_output=True)
        took = time.monotonic() - t0
        assert not report.failed, [(r.node, r.error) for r in report.failed[:5]]
        assert {tuple(r.stdout) for r in report.results} == {("node100",)}
        assert engine.access.pool.stats["node_connects"] == 100
        print(f"\n100 concurrent connects to a default-MaxStartups sshd: 0 failures, {took:.2f}s")

        async def one():
            async with engine.access.session("alias000") as link:
                return (await link.conn.run("sleep 0.3; echo ok", check=True)).stdout.strip()

        outs = await asyncio.gather(*(one() for _ in range(30)))
        assert outs == ["ok"] * 30
    finally:
        await engine.close()


# ------------------------------------------------------------------ failover

async def test_first_jump_killed_mid_run_work_completes_through_second(ssh_fleet, tmp_path, env):
    fleet = ssh_fleet(30, jumps=("gw1", "gw2"))
    path = write_profile(tmp_path, fleet, fleet.nodes, site_jumps=("gw1", "gw2"))
    engine = await Engine.open(path)
    try:
        nodes = await engine.access.targets(select="all")
        task = asyncio.ensure_future(engine.access.exec(nodes, "sleep 1.5; hostname",
                                                        parallel=30, keep_output=True))
        await asyncio.sleep(1.0)
        t_kill = time.monotonic()
        await asyncio.to_thread(fleet.stop, fleet.jumps["gw1"])
        report = await task
        after = time.monotonic() - t_kill
        assert not report.failed, [(r.node, r.error) for r in report.failed[:5]]
        assert all(r.stdout == [r.node] for r in report.results)
        assert {r.via for r in report.results} == {"gw2"}  # the retried ones finished on gw2
        assert max(r.attempts for r in report.results) == 2
        down = await events_of(engine, "jump.down")
        failover = await events_of(engine, "jump.failover")
        assert [e.subject for e in down] == ["gw1"]
        assert failover and failover[0].data == {"from": "gw1", "to": "gw2"}
        print(f"\ngw1 killed mid-run: 30/30 done through gw2 {after:.2f}s after the kill")
    finally:
        await engine.close()


async def test_only_jump_killed_gives_per_node_errors_quickly(ssh_fleet, tmp_path, env):
    fleet = ssh_fleet(10, jumps=("gw1",))
    path = write_profile(tmp_path, fleet, fleet.nodes, site_jumps=("gw1",))
    engine = await Engine.open(path)
    try:
        nodes = await engine.access.targets(select="all")
        task = asyncio.ensure_future(engine.access.exec(nodes, "sleep 3; hostname"))
        await asyncio.sleep(1.0)
        t_kill = time.monotonic()
        await asyncio.to_thread(fleet.stop, fleet.jumps["gw1"])
        report = await task
        after = time.monotonic() - t_kill
        assert [r.error_kind for r in report.results] == ["unreachable"] * 10
        assert all("gw1" in r.error for r in report.results)
        assert after < 5 * 3  # within the keepalive window (5 s x 3)
        print(f"\nonly jump killed: 10 per-node errors {after:.2f}s after the kill")
    finally:
        await engine.close()


# ------------------------------------------------------------------ host keys

async def test_changed_host_key_refused_with_both_fingerprints(ssh_fleet, tmp_path, env):
    fleet = ssh_fleet(1, jumps=("gw1",))
    node = fleet.nodes[0]
    path = write_profile(tmp_path, fleet, [node], site_jumps=("gw1",),
                         known_hosts=jump_known_hosts(tmp_path, fleet), host_keys="accept-new")
    old = asyncssh.generate_private_key("ssh-ed25519")
    kind, body = old.export_public_key().decode().split()[:2]
    old_fp = old.get_fingerprint("sha256")
    new_fp = asyncssh.import_public_key(node.host_public).get_fingerprint("sha256")
    engine = await Engine.open(path)
    try:
        async with engine.store.transaction() as tx:
            await engine.store.nodes.pin_keys(tx, node.name, [HostKey(kind, body, old_fp,
                                                                      "callhome")])
        report = await engine.access.exec(await engine.access.targets([node.name]), "hostname")
        r = report.results[0]
        assert r.error_kind == "host-key"
        assert old_fp in r.error and new_fp in r.error
        assert node.name in r.error and node.address in r.error
        mismatch = await events_of(engine, "hostkey.mismatch")
        assert mismatch[-1].subject == node.name and mismatch[-1].data["old"] == [old_fp]
        assert [k.fingerprint for k in (await engine.node(node.name)).host_keys] == [old_fp]
    finally:
        await engine.close()


async def test_unknown_key_strict_refused_accept_new_pinned(ssh_fleet, tmp_path, env):
    fleet = ssh_fleet(1, jumps=("gw1",))
    node = fleet.nodes[0]
    fp = asyncssh.import_public_key(node.host_public).get_fingerprint("sha256")
    kh = jump_known_hosts(tmp_path, fleet)
    path = write_profile(tmp_path, fleet, [node], site_jumps=("gw1",), known_hosts=kh)
    engine = await Engine.open(path)
    try:
        report = await engine.access.exec(await engine.access.targets([node.name]), "hostname")
        r = report.results[0]
        assert r.error_kind == "host-key" and "unknown host key" in r.error and fp in r.error
        assert (await engine.node(node.name)).host_keys == ()
    finally:
        await engine.close()
    path = write_profile(tmp_path, fleet, [node], site_jumps=("gw1",), known_hosts=kh,
                         host_keys="accept-new")
    engine = await Engine.open(path)
    try:
        report = await engine.access.exec(await engine.access.targets([node.name]), "hostname",
                                          keep_output=True)
        assert report.results[0].stdout == [node.name], report.results[0].error
        keys = (await engine.node(node.name)).host_keys
        assert [(k.fingerprint, k.source) for k in keys] == [(fp, "accept-new")]
        accepted = await events_of(engine, "hostkey.accepted")
        assert [e.subject for e in accepted] == [node.name]
        assert accepted[0].data["fingerprint"] == fp
    finally:
        await engine.close()


async def test_only_jump_silently_gone_errors_within_keepalive_window(
        ssh_fleet, ssh_fleet_topology, tmp_path, env):
    """The jump stops answering without closing anything (nftables drops all it
    receives): keepalives (5 s x 3) notice, and every node gets its error."""
    fleet = ssh_fleet(5, jumps=("gw1",))
    path = write_profile(tmp_path, fleet, fleet.nodes, site_jumps=("gw1",), connect_timeout=2)
    topo = ssh_fleet_topology.topo
    engine = await Engine.open(path)
    try:
        nodes = await engine.access.targets(select="all")
        assert not (await engine.access.exec(nodes, "hostname")).failed
        task = asyncio.ensure_future(engine.access.exec(nodes, "sleep 60"))
        await asyncio.sleep(0.5)
        topo.nft_drop("gw1", "10.90.0.2")
        t0 = time.monotonic()
        report = await asyncio.wait_for(task, 40)
        after = time.monotonic() - t0
        assert [r.error_kind for r in report.results] == ["unreachable"] * 5
        down = await events_of(engine, "jump.down")
        assert [e.subject for e in down] == ["gw1"]
        print(f"\njump silently gone: 5 per-node errors {after:.1f}s later")
        assert 10 < after < 5 * 4 + 2 + 3  # keepalive window + one connect_timeout retry
    finally:
        topo.run("gw1", ["nft", "delete", "table", "inet", "fleet_test"], check=False)
        await engine.close()


def _sleepers(tag: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd[:2] == [b"sleep", tag.encode()]:
                out.append(int(d.name))
    return out


async def test_cancelled_exec_kills_the_remote_command(ssh_fleet, tmp_path, env):
    """Cancelling (Ctrl-C, task.cancel()) closes each command's channel. OpenSSH 9.2
    refuses signals in root sessions and sends no SIGHUP to a session without a
    PTY, so fleet's guard (fleet.access.exec.guarded) kills the command's process
    group when its channel closes: the `sleep` is gone from the nodes."""
    fleet = ssh_fleet(2, jumps=("gw1",))
    path = write_profile(tmp_path, fleet, fleet.nodes, site_jumps=("gw1",))
    engine = await Engine.open(path)
    try:
        nodes = await engine.access.targets(select="all")
        task = asyncio.ensure_future(engine.access.exec(nodes, "sleep 77.5"))
        for _ in range(100):
            if len(_sleepers("77.5")) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(_sleepers("77.5")) == 2
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 1.0
        job = (await engine.store.jobs.list())[0]
        assert job.state.value == "cancelled"
        for _ in range(60):
            if not _sleepers("77.5"):
                break
            await asyncio.sleep(0.05)
        assert _sleepers("77.5") == []
        # seen from the nodes too, with a second exec on the same pooled connections
        report = await engine.access.exec(nodes, "pgrep -f 'sleep 77[.]5' || echo none",
                                          keep_output=True)
        assert not report.failed
        assert all(r.stdout == ["none"] for r in report.results), report.results
    finally:
        await engine.close()
        for pid in _sleepers("77.5"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


async def test_guard_is_invisible_stdin_is_empty_and_a_timeout_kills(ssh_fleet, tmp_path, env):
    """What fleet sends around a command (guarded(): stdin from /dev/null, a stderr
    line with the shell's pid) is not seen: the output is the command's own, in
    order, with its exit status; `cat` reads an empty stdin at once. A command
    that outlives --timeout is killed on the node (its process group), not only
    cut off; and one that backgrounds a child leaves the child alone when it ends
    normally (nothing of fleet's lingers either)."""
    fleet = ssh_fleet(2, jumps=("gw1",))
    path = write_profile(tmp_path, fleet, fleet.nodes, site_jumps=("gw1",))
    engine = await Engine.open(path)
    try:
        nodes = await engine.access.targets(select="all")
        t0 = time.monotonic()
        report = await engine.access.exec(
            nodes, "echo out1; echo err1 >&2; cat; echo out2; exit 3", keep_output=True)
        assert time.monotonic() - t0 < 10
        for r in report.results:
            assert (r.error_kind, r.exit_status) == ("command-failed", 3), r
            assert r.stdout == ["out1", "out2"] and r.stderr == ["err1"], r
        # a timeout kills the command and what it started, on the node
        report = await engine.access.exec(nodes, "sleep 66.25 & sleep 66.5; echo never",
                                          timeout=1.5, keep_output=True)
        assert [r.error_kind for r in report.results] == ["timeout", "timeout"]
        for _ in range(60):
            if not _sleepers("66.25") and not _sleepers("66.5"):
                break
            await asyncio.sleep(0.05)
        assert _sleepers("66.25") == [] and _sleepers("66.5") == []
        # a normal end leaves a backgrounded child running (fleet kills only on
        # cancel or timeout)
        report = await engine.access.exec(
            [nodes[0]], "sleep 66.75 >/dev/null 2>&1 < /dev/null & echo started",
            keep_output=True)
        assert report.results[0].stdout == ["started"] and not report.failed
        await asyncio.sleep(0.3)
        assert len(_sleepers("66.75")) == 1
    finally:
        await engine.close()
        for tag in ("66.25", "66.5", "66.75"):
            for pid in _sleepers(tag):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


async def test_exec_cli_cancelled_by_job_cancel_from_another_process(ssh_fleet, tmp_path,
                                                                      env):
    """`fleet --headless job cancel ID` while `fleet --headless exec` runs: the exec
    stops its remote commands, the job ends cancelled (not overwritten when exec
    finishes), the exec CLI exits 1 naming the cancel; job.* and ssh.command events."""
    fleet = ssh_fleet(3, jumps=("gw1",))
    path = write_profile(tmp_path, fleet, fleet.nodes, site_jumps=("gw1",))
    base = [sys.executable, "-m", "fleet", "--headless", "--profile", str(path)]
    proc = await asyncio.create_subprocess_exec(
        *base, "exec", "--select", "all", "-o", "jsonl", "--", "sleep 88.25",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO)
    try:
        for _ in range(200):
            if len(_sleepers("88.25")) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(_sleepers("88.25")) == 3
        cp = await asyncio.to_thread(subprocess.run, [*base, "jobs", "-o", "json"],
                                     capture_output=True, text=True, cwd=REPO)
        assert cp.returncode == 0, cp.stderr
        running = [j for j in json.loads(cp.stdout) if j["kind"] == "exec"]
        assert running and running[0]["state"] == "running", running
        job_id = running[0]["id"]
        t0 = time.monotonic()
        cp = await asyncio.to_thread(subprocess.run, [*base, "job", "cancel", str(job_id)],
                                     capture_output=True, text=True, cwd=REPO)
        assert cp.returncode == 0, cp.stderr
        out, err = await asyncio.wait_for(proc.communicate(), 15)
        took = time.monotonic() - t0
        assert proc.returncode == 1, (out, err)
        assert f"exec job {job_id} was cancelled" in err.decode()
        assert took < 5, took
        recs = [json.loads(line) for line in out.decode().splitlines()]
        results = [r for r in recs if r["type"] == "result"]
        assert sorted(r["error_kind"] for r in results) == ["cancelled"] * 3
        assert recs[-1]["type"] == "summary" and recs[-1]["failed"] == 3
        for _ in range(60):
            if not _sleepers("88.25"):
                break
            await asyncio.sleep(0.05)
        assert _sleepers("88.25") == []
        engine = await Engine.open(path)
        try:
            job = await engine.jobs.get(job_id)
            assert job.state.value == "cancelled"  # not overwritten by the exec's end
            kinds = [e.kind for e in await engine.events(200) if e.subject == str(job_id)]
            assert "job.started" in kinds and "job.cancelled" in kinds
            assert "job.failed" not in kinds and "job.succeeded" not in kinds
            cmds = await events_of(engine, "ssh.command")
            names = sorted(n.name for n in fleet.nodes)
            runs = [e for e in cmds if e.data["command"] == "sleep 88.25"]
            kills = [e for e in cmds if e.data["command"].startswith("kill -KILL -")]
            assert len(runs) + len(kills) == len(cmds), [e.data["command"] for e in cmds]
            # the command on each node, and the kill of its process group
            assert sorted(e.data["node"] for e in runs) == names
            assert sorted(e.data["node"] for e in kills) == names
            assert {e.data["via"] for e in cmds} == {"gw1"}
            assert {e.data["job"] for e in cmds} == {job_id}
        finally:
            await engine.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in _sleepers("88.25"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
