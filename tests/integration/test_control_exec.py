"""`fleet --headless exec` through a running fleet's control socket uses its
pooled SSH connections: a second exec opens no new connection. Ctrl-C on the
client stops the remote commands. The SSH servers are the in-process lab
(support/ssh_lab.py), which sees every connection; the running fleet is an
engine with its control server in this process, the clients real processes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest

from fleet.engine import Engine
from fleet.headless.control.server import start_control
from support.ssh_lab import SshLab

FLEET = [sys.executable, "-m", "fleet", "--headless"]
NODES = ("n01", "n02", "n03")


@pytest.fixture
async def lab(tmp_path, xdg):
    lab = SshLab(tmp_path)
    await lab.start_jump("j1")
    for i, name in enumerate(NODES, 1):
        await lab.start_node(name, f"127.0.0.{10 + i}")
    lab.write_known_hosts(tmp_path / "known_hosts")
    yield lab
    await lab.close()


@pytest.fixture
async def running(lab):
    """The running fleet: an engine on the lab's profile with its control socket."""
    profile = lab.write_profile()
    engine = await Engine.open(profile)
    server = await start_control(engine)
    assert server is not None
    yield profile, server
    await server.close()
    await engine.close()


def connections(lab: SshLab) -> dict[str, int]:
    return {name: len(s.conns) for name, s in lab.servers.items()}


async def _fleet(env, *argv, no_control=False):
    env = dict(env, **({"FLEET_NO_CONTROL": "1"} if no_control else {}))
    proc = await asyncio.create_subprocess_exec(*FLEET, *map(str, argv), env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_second_exec_through_the_socket_opens_no_connection(lab, running, xdg):
    profile, _ = running
    argv = ["--profile", profile, "exec", "--select", "all", "-o", "jsonl", "--",
            "echo", "hi from $NODE"]
    assert connections(lab) == {"j1": 0, "n01": 0, "n02": 0, "n03": 0}
    code, out, err = await _fleet(xdg, *argv)
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(x["line"] for x in lines if x["type"] == "output") == \
        [f"hi from {n}" for n in NODES]
    assert lines[-1]["type"] == "summary" and lines[-1]["ok"] == 3
    first = connections(lab)
    assert first == {"j1": 1, "n01": 1, "n02": 1, "n03": 1}  # made by the running fleet

    t0 = time.monotonic()
    code, out, err = await _fleet(xdg, *argv)
    took = time.monotonic() - t0
    assert (code, err) == (0, "") and out.count('"error_kind":"ok"') == 3
    assert connections(lab) == first  # warm: the pooled connections, nothing new
    print(f"second exec through the socket: {took:.2f}s, no new SSH connection")

    # the same command run here connects for itself (the count does move)
    code, out, err = await _fleet(xdg, *argv, no_control=True)
    assert code == 0 and out.count('"error_kind":"ok"') == 3
    assert connections(lab) == {name: n + 1 for name, n in first.items()}


async def test_exit_code_and_stderr_lines_come_back(lab, running, xdg):
    profile, _ = running
    code, out, err = await _fleet(xdg, "--profile", profile, "exec", "n01", "n02", "--",
                                  "if [ $NODE = n01 ]; then echo oops >&2; exit 3; fi")
    assert code == 1 and err == ""
    assert "n01 ! oops" in out and "command-failed" in out
    code, out, err = await _fleet(xdg, "--profile", profile, "check", "nosuch")
    assert (code, out, err) == (2, "", "fleet: unknown node 'nosuch'\n")


async def test_a_relative_script_path_is_the_clients(lab, running, xdg, tmp_path):
    """exec --script FILE: FILE is read relative to the client's directory, not the
    running fleet's."""
    profile, _ = running
    here = tmp_path / "client-cwd"
    here.mkdir()
    (here / "probe.sh").write_text('echo "probe on $NODE: $1"\n')
    assert (await _fleet(xdg, "--profile", profile, "exec", "n02", "--", "true"))[0] == 0
    assert connections(lab)["n02"] == 1
    proc = await asyncio.create_subprocess_exec(
        *FLEET, "--profile", str(profile), "exec", "n02", "--script", "probe.sh", "--",
        "arg1", env=xdg, cwd=here, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert (proc.returncode, err) == (0, b""), err
    assert b"n02 | probe on n02: arg1" in out
    assert connections(lab)["n02"] == 1  # the running fleet's pooled connection ran it


async def test_ctrl_c_on_the_client_stops_the_remote_commands(lab, running, xdg):
    profile, _ = running
    proc = await asyncio.create_subprocess_exec(
        *FLEET, "--profile", str(profile), "exec", "--select", "all", "--", "sleep 30",
        env=xdg, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while len([p for p in lab.procs if p.returncode is None]) < len(NODES):
        assert time.monotonic() - t0 < 20, "the remote commands did not start"
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    t1 = time.monotonic()
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert (proc.returncode, err) == (130, b""), (out, err)  # as a local Ctrl-C
    assert time.monotonic() - t1 < 5
    for p in lab.procs:  # the sleeps were killed, not left to run out
        await asyncio.wait_for(p.wait(), 5)
    assert time.monotonic() - t0 < 25


async def test_job_cancel_from_another_client_ends_exec_with_its_stderr_line(lab, running, xdg):
    profile, _ = running
    proc = await asyncio.create_subprocess_exec(
        *FLEET, "--profile", str(profile), "exec", "--select", "all", "-o", "jsonl", "--",
        "sleep 30", env=xdg, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while len([p for p in lab.procs if p.returncode is None]) < len(NODES):
        assert time.monotonic() - t0 < 20, "the remote commands did not start"
        await asyncio.sleep(0.05)
    code, out, err = await _fleet(xdg, "--profile", profile, "jobs", "-o", "json")
    job = [j for j in json.loads(out) if j["kind"] == "exec" and j["state"] == "running"][0]
    code, out, err = await _fleet(xdg, "--profile", profile, "job", "cancel", job["id"])
    assert code == 0, err
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 1
    assert err.decode() == (f"fleet: exec job {job['id']} was cancelled; 0 of 3 node(s) had "
                            "finished; the others' commands were stopped\n")
    results = [json.loads(x) for x in out.splitlines() if b'"result"' in x]
    assert sorted(r["error_kind"] for r in results) == ["cancelled"] * 3
