"""The access plane against asyncssh servers in this process (no root).

A little lab on loopback (support/ssh_lab.py): jumps j1 127.0.0.2 and j2 127.0.0.3 (they forward
direct-tcpip from their own address), nodes n01.. on 127.0.0.1x that accept
connections only from a jump's address, and a `bh` node that accepts anyone
(reached through a beachhead). The jumps can "blackhole" a destination (the
channel open never answers) like a firewalled node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from fleet.access.pool import PoolOptions
from fleet.access.routes import OperatorIPv6
from fleet.core.model import HostKey, JobState, Reachability
from fleet.engine import Engine
from support.ssh_lab import BLACKHOLE, SshLab


def write_lab_profile(lab: SshLab, *, jumps=("j1", "j2"), host_keys="strict",
                      connect_timeout=1.0, known_hosts="./known_hosts",
                      beachheads=("127.0.0.20",), extra_nodes=()) -> Path:
    """The lab as these tests see it: site `lo` behind `jumps`, a beachhead, a node
    its jumps blackhole, and one in a site that declares no jumps."""
    return lab.write_profile({
        "operator": {"ssh": {"known_hosts": [known_hosts], "host_keys": host_keys,
                             "connect_timeout": connect_timeout},
                     "beachheads": list(beachheads)},
        "sites": [{"name": "lo", "jumps": list(jumps)},
                  {"name": "nojump", "subnets": ["127.0.1.0/24"]}],
        "nodes": [{"name": "blackholed", "site": "lo", "address": BLACKHOLE, "port": 22},
                  {"name": "island", "site": "nojump", "address": "127.0.1.5"},
                  *extra_nodes]})


async def open_engine(lab: SshLab, tmp: Path, pool_options: PoolOptions | None = None,
                      **kw) -> Engine:
    # keep it quick; IPv6 is irrelevant on loopback
    return await Engine.open(write_lab_profile(lab, **kw), pool_options=pool_options or PoolOptions(
        keepalive_interval=1, backoff_base=0.2, backoff_max=1), operator6=OperatorIPv6())


@pytest.fixture
async def lab(tmp_path, xdg):
    lab = SshLab(tmp_path)
    await lab.start_jump("j1")
    await lab.start_jump("j2")
    for i in range(1, 6):
        await lab.start_node(f"n0{i}", f"127.0.0.{10 + i}")
    await lab.start_node("bh", "127.0.0.20", from_anyone=True)
    lab.write_known_hosts(tmp_path / "known_hosts")
    yield lab
    await lab.close()


NODES = [f"n0{i}" for i in range(1, 6)]


async def events_of(engine, kind):
    return [e for e in await engine.events(500) if e.kind == kind]


# ----------------------------------------------------------------------------- exec

async def test_exec_hostname_through_jump_and_beachhead(lab, tmp_path):
    engine = await open_engine(lab, tmp_path)
    try:
        api = engine.access
        targets = await api.targets(NODES + ["bh"])
        lines = []
        report = await api.exec(targets, "hostname",
                                on_line=lambda n, s, l: lines.append((n, s, l)))
        assert [r.error_kind for r in report.results] == ["ok"] * 6
        assert sorted(lines) == sorted((n, "stdout", n) for n in NODES + ["bh"])
        vias = {r.node: r.via for r in report.results}
        assert vias["bh"] is None and {vias[n] for n in NODES} == {"j1"}
        assert {r.route for r in report.results} == {"jump", "direct-beachhead"}
        # the job and its log
        job = await engine.store.jobs.get(report.job_id)
        assert job.kind == "exec" and job.state is JobState.SUCCEEDED and job.progress == 1.0
        logs = [line for _, _, line in await engine.store.jobs.logs(report.job_id)]
        assert sorted(l.split(":")[0] for l in logs) == sorted(NODES + ["bh"])
        started = await events_of(engine, "exec.started")
        finished = await events_of(engine, "exec.finished")
        assert started[-1].data["command"] == "hostname"
        assert started[-1].subject == finished[-1].subject == str(report.job_id)
        assert started[-1].data["who"] and set(started[-1].data["nodes"]) == set(NODES + ["bh"])
        assert finished[-1].data["exit_codes"] == {n: 0 for n in NODES + ["bh"]}
        assert (await engine.node("n01")).reachability is Reachability.REACHABLE
        # warm: the connections are reused
        before = dict(api.pool.stats)
        report2 = await api.exec(targets, "hostname")
        assert not report2.failed
        assert api.pool.stats["node_connects"] == before["node_connects"]
        assert api.pool.stats["jump_connects"] == before["jump_connects"] == 1
    finally:
        await engine.close()


async def test_error_kinds(lab, tmp_path):
    other = asyncssh.generate_private_key("ssh-ed25519")
    await lab.start_node("noauth", "127.0.0.30",
                         authorized=asyncssh.import_authorized_keys(
                             other.export_public_key().decode()))
    # a node listening on a port that then closes: connection refused at the jump
    gone = await lab.start_node("gone", "127.0.0.31")
    lab.write_known_hosts(tmp_path / "known_hosts")
    await gone.kill()
    engine = await open_engine(lab, tmp_path, connect_timeout=1.0)
    try:
        api = engine.access
        nodes = await api.targets(["n01", "n02", "n03", "noauth", "gone", "blackholed",
                                   "island"])
        t0 = time.monotonic()
        results = {}
        cmds = {"n01": "exit 3", "n02": "sleep 3", "n03": "echo out; echo err >&2"}

        async def run(node):
            r = await api.exec([node], cmds.get(node.name, "hostname"), timeout=0.5,
                               keep_output=True)
            results[node.name] = r.results[0]

        await asyncio.gather(*(run(n) for n in nodes))
        took = time.monotonic() - t0
        kinds = {n: r.error_kind for n, r in results.items()}
        assert kinds == {"n01": "command-failed", "n02": "timeout", "n03": "ok",
                         "noauth": "auth", "gone": "unreachable", "blackholed": "unreachable",
                         "island": "unreachable"}, {n: r.error for n, r in results.items()}
        assert results["n01"].exit_status == 3
        assert results["n03"].stdout == ["out"] and results["n03"].stderr == ["err"]
        assert "connect_timeout" in results["blackholed"].error
        assert 0.9 <= results["blackholed"].duration_s < 2.0
        assert "declares no jumps" in results["island"].error
        assert results["island"].duration_s < 0.5
        assert took < 3.0
        assert (await engine.node("gone")).reachability is Reachability.UNREACHABLE
    finally:
        await engine.close()


async def test_twenty_blackholed_fail_together_within_connect_timeout(lab, tmp_path):
    extra = [{"name": f"bh{i:02d}", "site": "lo", "address": BLACKHOLE, "port": 2000 + i}
             for i in range(20)]
    engine = await open_engine(lab, tmp_path, connect_timeout=1.0, extra_nodes=extra)
    try:
        nodes = await engine.access.targets([f"bh{i:02d}" for i in range(20)] + NODES)
        t0 = time.monotonic()
        report = await engine.access.exec(nodes, "hostname")
        took = time.monotonic() - t0
        kinds = {r.node: r.error_kind for r in report.results}
        assert [kinds[f"bh{i:02d}"] for i in range(20)] == ["unreachable"] * 20
        assert [kinds[n] for n in NODES] == ["ok"] * 5
        assert took < 1.0 + 1.0, took  # all in one connect_timeout, not 20/8 rounds
    finally:
        await engine.close()


async def test_blackholed_opens_give_their_slot_back(lab, tmp_path):
    """With only 4 open slots per jump, 40 blackholed nodes would take 10 waves of
    connect_timeout if each held its slot until timing out; a slot is held for
    open_slot_hold only, so all 40 fail within one connect_timeout (+ margin) and
    the live nodes are not delayed by them."""
    extra = [{"name": f"bh{i:02d}", "site": "lo", "address": BLACKHOLE, "port": 2000 + i}
             for i in range(40)]
    engine = await open_engine(lab, tmp_path, PoolOptions(opens_per_jump=4, open_slot_hold=0.05),
                               connect_timeout=1.0, extra_nodes=extra)
    try:
        names = [f"bh{i:02d}" for i in range(40)]
        nodes = await engine.access.targets(names + NODES)
        t0 = time.monotonic()
        done: dict[str, float] = {}
        report = await engine.access.exec(
            nodes, "hostname", parallel=100,
            on_result=lambda r: done.setdefault(r.node, time.monotonic() - t0))
        kinds = {r.node: r.error_kind for r in report.results}
        assert [kinds[n] for n in names] == ["unreachable"] * 40
        assert [kinds[n] for n in NODES] == ["ok"] * 5
        assert max(done[n] for n in names) < 1.0 + 1.0, done  # not 10 waves of 1 s
        assert max(done[n] for n in NODES) < 1.0, done
    finally:
        await engine.close()


async def test_handshakes_per_jump_and_per_target_are_capped(lab, tmp_path):
    for i in range(40):
        await lab.start_node(f"m{i:02d}", f"127.0.0.{100 + i}")
    lab.write_known_hosts(tmp_path / "known_hosts")
    n01 = lab.servers["n01"]
    # 30 names for one sshd: 30 concurrent connects to the same target
    aliases = [{"name": f"a{i:02d}", "site": "lo", "address": n01.address, "port": n01.port}
               for i in range(30)]
    (tmp_path / "known_hosts").open("a").write("".join(
        f"a{i:02d} {' '.join(n01.host_key.export_public_key().decode().split()[:2])}\n"
        for i in range(30)))
    engine = await open_engine(lab, tmp_path, connect_timeout=10, extra_nodes=aliases)
    try:
        lab.auth_max = 0
        lab.preauth["n01"]["max"] = 0
        nodes = await engine.access.targets(select="name=m*")
        report = await engine.access.exec(nodes, "hostname", parallel=40)
        assert not report.failed, [r.error for r in report.failed]
        assert 2 <= lab.auth_max <= PoolOptions().handshakes_per_jump  # through j1 at once
        nodes = await engine.access.targets(select="name=a*")
        report = await engine.access.exec(nodes, "hostname", parallel=30, keep_output=True)
        assert not report.failed, [r.error for r in report.failed]
        assert {tuple(r.stdout) for r in report.results} == {("n01",)}
        assert 2 <= lab.preauth["n01"]["max"] <= 8  # unauthenticated at one sshd at once
    finally:
        await engine.close()


async def test_sessions_per_connection_are_capped(lab, tmp_path):
    engine = await open_engine(lab, tmp_path)
    try:
        api = engine.access
        await api.get_pool()

        async def one():
            async with api.session("n01") as link:
                r = await link.conn.run("sleep 0.2; echo hi", check=True)
                return r.stdout.strip()

        out = await asyncio.gather(*(one() for _ in range(20)))
        assert out == ["hi"] * 20
        assert lab.sessions_max["n01"] == PoolOptions().sessions_per_connection
    finally:
        await engine.close()


async def test_script_upload_and_run(lab, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho \"script on $NODE with $1\"\nexit 4\n")
    engine = await open_engine(lab, tmp_path)
    try:
        nodes = await engine.access.targets(["n01", "n02"])
        report = await engine.access.exec(nodes, script=script, script_args=["a b"],
                                          keep_output=True)
        assert [r.stdout for r in report.results] == [["script on n01 with a b"],
                                                     ["script on n02 with a b"]]
        assert [r.exit_status for r in report.results] == [4, 4]
        assert not list(Path("/tmp").glob("fleet-script-*"))  # removed after the run
    finally:
        await engine.close()


# ----------------------------------------------------------------------------- failover

async def test_failover_to_second_jump_and_back(lab, tmp_path):
    engine = await open_engine(lab, tmp_path)
    try:
        api = engine.access
        nodes = await api.targets(NODES)
        first = await api.exec(nodes, "hostname")
        assert {r.via for r in first.results} == {"j1"} and not first.failed
        j1 = lab.servers["j1"]
        await j1.kill()
        await asyncio.sleep(0.1)
        second = await api.exec(nodes, "hostname", keep_output=True)
        assert not second.failed, [r.error for r in second.failed]
        assert {r.via for r in second.results} == {"j2"}
        assert [r.stdout for r in second.results] == [[n] for n in NODES]
        down = await events_of(engine, "jump.down")
        fo = await events_of(engine, "jump.failover")
        assert down and down[0].subject == "j1"
        assert fo and fo[0].data["to"] == "j2"
        # j1 comes back on its port: the background retry notices, new work prefers it
        await lab.start_jump("j1", port=j1.port)
        for _ in range(60):
            if await events_of(engine, "jump.up"):
                break
            await asyncio.sleep(0.1)
        assert [e.subject for e in await events_of(engine, "jump.up")] == ["j1"]
    finally:
        await engine.close()


async def test_first_jump_dead_from_the_start_fails_over_at_connect(lab, tmp_path):
    await lab.servers["j1"].kill()
    engine = await open_engine(lab, tmp_path)
    try:
        t0 = time.monotonic()
        report = await engine.access.exec(await engine.access.targets(NODES), "hostname")
        assert time.monotonic() - t0 < 1.0  # refused at once, no waiting on j1 per node
        assert not report.failed and {r.via for r in report.results} == {"j2"}
        down = await events_of(engine, "jump.down")
        assert [e.subject for e in down] == ["j1"] and "j1" in down[0].data["error"]
        assert len(await events_of(engine, "jump.failover")) == 1  # once, not per node
        assert engine.access.pool.jump_states()["j1"]["down"] is True
    finally:
        await engine.close()


async def test_jump_killed_mid_run_work_completes_through_second(lab, tmp_path):
    engine = await open_engine(lab, tmp_path)
    try:
        api = engine.access
        nodes = await api.targets(NODES)
        task = asyncio.ensure_future(api.exec(nodes, "sleep 1; echo done", keep_output=True))
        for _ in range(100):  # every command running (through j1) before j1 dies
            if len(lab.procs) >= len(NODES):
                break
            await asyncio.sleep(0.02)
        assert len(lab.procs) >= len(NODES)
        await lab.servers["j1"].kill()
        report = await task
        assert not report.failed, [r.error for r in report.failed]
        assert {r.via for r in report.results} == {"j2"}
        assert max(r.attempts for r in report.results) == 2
    finally:
        await engine.close()


async def test_single_jump_down_gives_per_node_errors_quickly(lab, tmp_path):
    engine = await open_engine(lab, tmp_path, jumps=("j1",))
    try:
        api = engine.access
        nodes = await api.targets(NODES)
        assert not (await api.exec(nodes, "hostname")).failed
        await lab.servers["j1"].kill()
        t0 = time.monotonic()
        report = await api.exec(nodes, "hostname")
        assert time.monotonic() - t0 < 2.0
        assert [r.error_kind for r in report.results] == ["unreachable"] * 5
        assert all("j1" in r.error for r in report.results)
    finally:
        await engine.close()


async def test_node_refuses_connections_not_from_a_jump(lab, tmp_path):
    # declaring n01's address a beachhead makes fleet go direct, which n01 refuses
    engine = await open_engine(lab, tmp_path, beachheads=("127.0.0.11",))
    try:
        api = engine.access
        (n01,) = await api.targets(["n01"])
        assert api.route(n01).kind.value == "direct-beachhead"
        report = await api.exec([n01], "hostname")
        assert report.results[0].error_kind == "unreachable"
    finally:
        await engine.close()


# ----------------------------------------------------------------------------- trust

async def test_unknown_host_key_refused_under_strict(lab, tmp_path):
    lab.write_known_hosts(tmp_path / "known_hosts", skip=("n02",))
    engine = await open_engine(lab, tmp_path)
    try:
        report = await engine.access.exec(await engine.access.targets(["n01", "n02"]),
                                          "hostname")
        r = {x.node: x for x in report.results}
        assert r["n01"].error_kind == "ok"
        assert r["n02"].error_kind == "host-key"
        fp = lab.host_key("n02").get_fingerprint("sha256")
        assert "unknown host key" in r["n02"].error and fp in r["n02"].error
        assert (await engine.node("n02")).host_keys == ()
    finally:
        await engine.close()


async def test_accept_new_pins_and_records(lab, tmp_path):
    lab.write_known_hosts(tmp_path / "known_hosts", skip=("n02", "j2"))
    engine = await open_engine(lab, tmp_path, host_keys="accept-new", jumps=("j2",))
    try:
        report = await engine.access.exec(await engine.access.targets(["n02"]), "hostname")
        assert report.results[0].error_kind == "ok", report.results[0].error
        fp = lab.host_key("n02").get_fingerprint("sha256")
        node = await engine.node("n02")
        assert [(k.fingerprint, k.source) for k in node.host_keys] == [(fp, "accept-new")]
        accepted = await events_of(engine, "hostkey.accepted")
        assert {e.subject for e in accepted} == {"n02", "j2"}
        assert any(e.data.get("fingerprint") == fp for e in accepted)
    finally:
        await engine.close()
    # the pin now stands on its own: strict, and known_hosts without n02 or j2
    engine = await open_engine(lab, tmp_path, host_keys="strict", jumps=("j2",))
    try:
        report = await engine.access.exec(await engine.access.targets(["n02"]), "hostname")
        assert report.results[0].error_kind == "ok", report.results[0].error
    finally:
        await engine.close()


async def test_changed_host_key_refused_with_both_fingerprints(lab, tmp_path):
    engine = await open_engine(lab, tmp_path, host_keys="accept-new")
    try:
        old = asyncssh.generate_private_key("ssh-ed25519")
        kind, body = old.export_public_key().decode().split()[:2]
        old_fp = old.get_fingerprint("sha256")
        async with engine.store.transaction() as tx:
            await engine.store.nodes.pin_keys(tx, "n03", [HostKey(kind, body, old_fp, "callhome")])
        # known_hosts lists n03's real key by address, but a pin is authoritative
        assert "127.0.0.13" in (tmp_path / "known_hosts").read_text()
        report = await engine.access.exec(await engine.access.targets(["n03"]), "hostname")
        r = report.results[0]
        new_fp = lab.host_key("n03").get_fingerprint("sha256")
        assert r.error_kind == "host-key"
        assert old_fp in r.error and new_fp in r.error and "n03" in r.error
        assert "CHANGED" in r.error and "127.0.0.13" in r.error
        mism = await events_of(engine, "hostkey.mismatch")
        assert mism and mism[-1].subject == "n03" and mism[-1].data["new"] == new_fp
        # never re-pinned under accept-new
        assert [k.fingerprint for k in (await engine.node("n03")).host_keys] == [old_fp]
    finally:
        await engine.close()


async def test_cert_authority_known_hosts(lab, tmp_path):
    ca = asyncssh.generate_private_key("ssh-ed25519")
    host = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_host_certificate(host, "n09", principals=["n09"])
    s = await lab.start_node("n09", "127.0.0.19", host_key=(host, cert))
    kh = tmp_path / "known_hosts"
    lab.write_known_hosts(kh, skip=("n09",))
    with kh.open("a") as f:
        f.write(f"@cert-authority n09 {ca.export_public_key().decode()}")
    engine = await open_engine(lab, tmp_path)
    try:
        report = await engine.access.exec(await engine.access.targets(["n09"]), "hostname")
        assert report.results[0].error_kind == "ok", report.results[0].error
    finally:
        await engine.close()
    assert s.port


# ----------------------------------------------------------------------------- CLI

async def test_cli_routes_and_exec_jsonl(lab, tmp_path, xdg):
    path = write_lab_profile(lab)

    async def fleet(*argv):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleet", "--headless", "--profile", str(path), *argv,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=xdg)
        out, err = await proc.communicate()
        return proc.returncode, out.decode(), err.decode()

    rc, out, err = await fleet("routes", "n01", "island", "bh", "-o", "json")
    assert rc == 0, err
    rows = {r["node"]: r for r in json.loads(out)}
    assert rows["n01"]["kind"] == "jump" and rows["n01"]["via"] == ["j1"]
    assert rows["n01"]["alternatives"] == [["j2"]]
    assert rows["bh"]["kind"] == "direct-beachhead"
    assert rows["island"]["kind"] == "unreachable"

    rc, out, err = await fleet("exec", "n01", "n02", "island", "-o", "jsonl", "--", "hostname")
    assert rc == 1, err
    recs = [json.loads(line) for line in out.splitlines()]
    output = [r for r in recs if r["type"] == "output"]
    results = {r["node"]: r for r in recs if r["type"] == "result"}
    assert sorted((r["node"], r["line"]) for r in output) == [("n01", "n01"), ("n02", "n02")]
    assert results["n01"]["error_kind"] == "ok" and results["n01"]["exit_status"] == 0
    assert results["island"]["error_kind"] == "unreachable"
    assert set(results["n01"]) >= {"node", "exit_status", "duration_s", "error_kind", "error"}
    assert recs[-1]["type"] == "summary" and recs[-1]["failed"] == 1

    rc, out, err = await fleet("exec", "--select", "name=n0*", "--", "hostname")
    assert rc == 0, err
    assert sorted(l.split()[0] for l in out.splitlines() if " | " in l) == NODES
    assert "5 node(s): 5 ok" in out

    rc, out, err = await fleet("exec", "nosuch", "--", "hostname")
    assert rc == 2 and "unknown node" in err
    rc, out, err = await fleet("exec", "n01")
    assert rc == 2 and "no command" in err


async def test_cancelled_exec_is_recorded_as_cancelled(lab, tmp_path):
    engine = await open_engine(lab, tmp_path)
    try:
        api = engine.access
        nodes = await api.targets(["n01", "n02"])
        task = asyncio.ensure_future(api.exec(nodes, "sleep 5"))
        for _ in range(50):
            jobs = await engine.store.jobs.list()
            if jobs and jobs[0].state is JobState.RUNNING:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        job = (await engine.store.jobs.list())[0]
        assert job.kind == "exec" and job.state is JobState.CANCELLED
        finished = await events_of(engine, "exec.finished")
        assert finished[-1].data["state"] == "cancelled"
        # the pool still works afterwards
        report = await api.exec(nodes, "hostname")
        assert not report.failed
    finally:
        await engine.close()


async def test_exec_is_a_job_with_progress_logs_result_and_ssh_command_events(lab, tmp_path):
    engine = await open_engine(lab, tmp_path)
    try:
        api = engine.access
        report = await api.exec(await api.targets(NODES + ["bh"]), "hostname")
        assert report.state == "succeeded" and not report.failed
        job = await engine.jobs.get(report.job_id)
        assert job.kind == "exec" and job.state is JobState.SUCCEEDED
        assert job.progress == 1.0 and job.phase == "6/6 nodes"
        assert job.result["nodes"] == 6 and job.result["ok"] == 6
        assert job.result["exit_codes"] == {n: 0 for n in NODES + ["bh"]}
        logs = [line for _, _, line in await engine.jobs.logs(report.job_id)]
        assert sorted(l.split(":")[0] for l in logs) == sorted(NODES + ["bh"])
        assert all(": ok exit 0 in " in l for l in logs), logs
        about = [e.kind for e in await engine.events(200) if e.subject == str(report.job_id)]
        for kind in ("job.queued", "job.started", "job.succeeded", "exec.started",
                     "exec.finished"):
            assert kind in about, (kind, about)
        cmds = await events_of(engine, "ssh.command")
        assert len(cmds) == 6
        by_node = {e.data["node"]: e for e in cmds}
        assert set(by_node) == set(NODES + ["bh"])
        assert all(e.subject == e.data["node"] for e in cmds)
        assert {e.data["command"] for e in cmds} == {"hostname"}  # verbatim, not the guard
        assert by_node["bh"].data["via"] is None and by_node["n01"].data["via"] == "j1"
        assert {e.data["job"] for e in cmds} == {report.job_id}

        # a failing node: the job fails, and keeps the summary as its result
        bad = await api.exec(await api.targets(["n01", "island"]), "hostname")
        job = await engine.jobs.get(bad.job_id)
        assert job.state is JobState.FAILED and bad.state == "failed"
        assert job.result["failed"] == 1 and job.result["by_kind"] == {"ok": 1,
                                                                       "unreachable": 1}
        # island has no route: nothing was sent to it, so no ssh.command
        cmds = [e for e in await events_of(engine, "ssh.command") if e.data["job"] == bad.job_id]
        assert [e.data["node"] for e in cmds] == ["n01"]
    finally:
        await engine.close()


async def test_ssh_command_events_for_1000_commands_are_batched(lab, tmp_path):
    """CommandLog: 1000 commands become 1000 events in one transaction."""
    engine = await open_engine(lab, tmp_path)
    try:
        log = engine.access.commands
        commits = []
        engine.store.on_commit(lambda: commits.append(1))
        for i in range(1000):
            log.add(f"n{i}", "true", via="j1", job=7)
        await log.flush()
        assert len(commits) == 1
        cmds = [
            e for e in await engine.events(2000) if e.kind == "ssh.command"]
        assert len(cmds) == 1000
        assert cmds[0].data == {"node": cmds[0].subject, "command": "true", "via": "j1",
                                "job": 7}
    finally:
        await engine.close()


async def test_exec_cancelled_by_another_process(lab, tmp_path, xdg):
    """`fleet --headless job cancel ID` (another process) while exec runs here: the
    exec stops within a second or so, its report says cancelled, the remote
    commands are killed (the guard), and the job stays cancelled."""
    engine = await open_engine(lab, tmp_path)
    try:
        api = engine.access
        nodes = await api.targets(["n01", "n02"])
        task = asyncio.ensure_future(api.exec(nodes, "sleep 30"))
        for _ in range(100):
            jobs = await engine.store.jobs.list()
            if jobs and jobs[0].state is JobState.RUNNING and len(lab.procs) >= 2:
                break
            await asyncio.sleep(0.05)
        job_id = jobs[0].id
        await asyncio.sleep(0.2)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleet", "--headless", "--profile",
            str(tmp_path / "lab.yaml"), "job", "cancel", str(job_id),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=xdg)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        t0 = time.monotonic()
        report = await asyncio.wait_for(task, 10)
        assert time.monotonic() - t0 < 3
        assert report.state == "cancelled" and report.cancelled
        assert [r.error_kind for r in report.results] == ["cancelled", "cancelled"]
        assert len(report.failed) == 2
        # fleet killed their process groups (the pid from the guard)
        assert await _all_ended(lab), [p.returncode for p in lab.procs]
        job = await engine.jobs.get(job_id)
        assert job.state is JobState.CANCELLED
        finished = await events_of(engine, "exec.finished")
        assert finished[-1].data["state"] == "cancelled"
        assert not [e for e in await engine.events(200)
                    if e.subject == str(job_id) and e.kind in ("job.failed", "job.succeeded")]
    finally:
        await engine.close()


async def _wait_running(lab, n: int) -> None:
    for _ in range(100):
        if len(lab.procs) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(lab.procs)} of {n} commands started")


async def _all_ended(lab) -> bool:
    for _ in range(60):
        if all(p.returncode is not None for p in lab.procs):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_closing_the_engine_kills_running_exec_commands(lab, tmp_path):
    """Quitting the console or stopping `serve` closes the engine while an exec runs:
    the job is interrupted before the pool closes, so its remote commands are
    killed through the still-open connections (not left running, to run twice on
    a retry)."""
    engine = await open_engine(lab, tmp_path)
    closed = False
    try:
        nodes = await engine.access.targets(["n01", "n02"])
        task = asyncio.ensure_future(engine.access.exec(nodes, "sleep 31; echo never"))
        await _wait_running(lab, 2)
        await asyncio.sleep(0.2)  # the guards' pid lines are in
        await engine.close()
        closed = True
        assert await _all_ended(lab), [p.returncode for p in lab.procs]
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        store = await open_engine(lab, tmp_path)
        try:
            job = (await store.store.jobs.list())[0]
            assert job.kind == "exec" and job.state is JobState.INTERRUPTED
            kills = [e.data["command"] for e in await store.events(200)
                     if e.kind == "ssh.command" and e.data["command"].startswith("kill ")]
            assert len(kills) == 2, kills  # every command sent is audited, kills too
        finally:
            await store.close()
    finally:
        if not closed:
            await engine.close()


async def test_a_cancel_while_the_exec_reply_is_on_its_way_still_kills(lab, tmp_path,
                                                                       monkeypatch):
    """The node has started the command but its reply to the exec request has not
    reached fleet when the run is cancelled: the command is killed once the reply
    comes. The slow reply is simulated (asyncssh's create_process returns late):
    a round trip's timing is not something the lab can hold open on purpose."""
    real = asyncssh.SSHClientConnection.create_process

    async def slow_reply(self, *args, **kwargs):
        process = await real(self, *args, **kwargs)
        await asyncio.sleep(1.0)
        return process

    monkeypatch.setattr(asyncssh.SSHClientConnection, "create_process", slow_reply)
    engine = await open_engine(lab, tmp_path)
    try:
        nodes = await engine.access.targets(["n01"])
        task = asyncio.ensure_future(engine.access.exec(nodes, "sleep 32; echo never"))
        await _wait_running(lab, 1)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _all_ended(lab), "the command outlived its cancelled run"
    finally:
        await engine.close()


async def test_login_script_noise_before_the_pid_line_is_output_and_kills_still_work(
        lab, tmp_path):
    """A login script that writes to stderr without ending its line puts text in
    front of the guard's pid line: that text is the user's output, the pid is still
    read (a timeout kills the command), and the tag is never shown."""
    lab.login_noise = "motd: no newline here "
    engine = await open_engine(lab, tmp_path)
    try:
        nodes = await engine.access.targets(["n01"])
        report = await engine.access.exec(nodes, "echo err >&2", keep_output=True)
        assert report.results[0].stderr == ["motd: no newline here ", "err"], report.results
        report = await engine.access.exec(nodes, "sleep 33; echo never", timeout=1.0,
                                          keep_output=True)
        r = report.results[0]
        assert (r.error_kind, r.error) == ("timeout", "still running after 1s; killed"), r
        assert not any("fleet-pid" in line for line in r.stdout + r.stderr), r
        assert await _all_ended(lab), "the timed-out command is still running"
    finally:
        await engine.close()


async def test_command_log_flush_inside_a_transaction_does_not_deadlock(lab, tmp_path):
    """exec's finish flushes queued ssh.command events inside its own transaction
    while the batcher's timer may be flushing too (waiting for that transaction):
    neither may wait for the other."""
    engine = await open_engine(lab, tmp_path)
    try:
        log = engine.access.commands
        log.add("n01", "echo one")
        async with engine.store.transaction() as tx:
            background = asyncio.ensure_future(log.flush())  # waits for the store
            await asyncio.sleep(0.05)
            log.add("n02", "echo two")
            await asyncio.wait_for(log.flush(tx), 2)
        await asyncio.wait_for(background, 2)
        cmds = sorted(e.data["command"] for e in await engine.events(50)
                      if e.kind == "ssh.command")
        assert cmds == ["echo one", "echo two"]
    finally:
        await engine.close()


async def test_coalesced_jump_writes_keep_order_and_survive_close():
    """The jump connection's writes are joined per loop turn (fleet.access.pool.
    _coalesce_writes): nothing is lost or reordered, also when the transport is
    closed in the same turn as the writes."""
    import socket

    from fleet.access.pool import _coalesce_writes

    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)

    class Conn:  # what _coalesce_writes looks at on an SSHClientConnection
        _transport = transport

    _coalesce_writes(Conn)
    assert "write" in vars(transport)
    chunks = [f"{i:04d}".encode() * (i % 7 + 1) for i in range(300)]
    for c in chunks:
        transport.write(c)
    transport.close()  # same turn: the queued bytes go out first
    b.setblocking(False)
    got = bytearray()
    for _ in range(200):
        try:
            data = b.recv(65536)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        if not data:
            break
        got += data
    b.close()
    assert bytes(got) == b"".join(chunks)
