"""`fleet --headless site status` over a real sshd: a profile with a local site
and a remote one whose agent runs behind a jump; then the sshd stops and the
remote site is away, with its reason and what the replica last knew."""

from __future__ import annotations

import json
import shlex
import socket
import sys
import time

import pytest
import yaml

from fleet.sites.replica import Replica
from support.profiles import write_profile
from support.agent_sshd import (MAC, OTHER_MAC, agent_command, console_profile, fleet,
                                remote_profile, sites, sshd, stop_sshd)  # noqa: F401 - sshd: a fixture


@pytest.mark.root
async def test_site_status_shows_local_and_remote_then_the_remote_away(sites, xdg):
    lease = fleet(sites["remote"], xdg, "lease", MAC, "-d", "debian12")
    assert lease.returncode == 0, lease.stderr

    seen = fleet(sites["console"], xdg, "site", "status", "--format", "json")
    assert seen.returncode == 0, seen.stderr
    rows = {r["site"]: r for r in json.loads(seen.stdout)}
    assert rows["rack1"]["where"] == "local" and rows["rack1"]["connected"] is True
    rack2 = rows["rack2"]
    assert rack2["where"] == f"root@127.0.0.1:{sites['port']} via gw"
    assert rack2["connected"] is True and rack2["lag"] == 0 and rack2["reason"] is None
    assert rack2["version"] == rows["rack1"]["version"] and rack2["skew"] is None
    # the replica holds the lease made at the remote store
    async with await Replica.open(xdg["XDG_STATE_HOME"] + "/fleet/replica-console.db") as r:
        known = await r.last_known("rack2")
    assert {m["mac"]: m["state"] for m in known.machines} == {MAC: "leased",
                                                              OTHER_MAC: "discovered"}
    assert "machine.leased" in [e["kind"] for e in known.events]

    stop_sshd(sites["folder"], sites["port"])
    began = time.time()
    away = fleet(sites["console"], xdg, "site", "status", "--format", "json")
    assert away.returncode == 1, away.stderr
    rows = {r["site"]: r for r in json.loads(away.stdout)}
    assert rows["rack1"]["connected"] is True
    rack2 = rows["rack2"]
    assert rack2["connected"] is False and rack2["lag"] is None  # unknown while away
    since = time.strftime("%H:%M:%S", time.localtime(began))
    assert rack2["reason"].startswith("unreachable via gw since "), rack2["reason"]
    assert "jump gw: 127.0.0.1" in rack2["reason"] and "Connect call failed" in rack2["reason"]
    assert rack2["last_known"]["machines"] == 2
    assert rack2["last_known"]["by_state"] == {"leased": 1, "discovered": 1}
    assert rack2["last_known"]["last_heard"] is not None

    table = fleet(sites["console"], xdg, "site", "status")
    assert table.returncode == 1
    line = [ln for ln in table.stdout.splitlines() if ln.startswith("rack2: ")]
    assert len(line) == 1 and "unreachable via gw since" in line[0], table.stdout
    nodes = rack2["last_known"]["nodes"]
    assert nodes == 3  # the remote profile declares three
    heard = time.strftime("%H:%M:%S", time.localtime(known.last_heard))
    assert (f"last known: 2 machines (1 discovered, 1 leased), {nodes} nodes (stale: last "
            f"heard {heard})") in line[0], line[0]
    # dated from when it went away, kept across tries
    went = rack2["reason"].split(" since ")[1][:8]
    assert went[:5] == since[:5]
    assert f"unreachable via gw since {went}: jump gw" in line[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: connects are refused


def test_a_site_with_no_route_is_away_and_the_exit_is_1(tmp_path, xdg):
    port = closed_port()
    console = write_profile(tmp_path, name="console", overrides={
        "operator": {"beachheads": ["127.0.0.1"], "ssh": {"connect_timeout": 3}},
        "sites": [{"name": "rack2", "agent": {"host": "127.0.0.1", "port": port}},
                  {"name": "rack3", "agent": {"host": "10.93.0.2"}}],
    })
    began = time.monotonic()
    seen = fleet(console, xdg, "site", "status", "--format", "json")
    assert seen.returncode == 1, seen.stderr
    assert time.monotonic() - began < 30
    rows = {r["site"]: r for r in json.loads(seen.stdout)}
    assert rows["rack1"]["connected"] is True and rows["rack1"]["where"] == "local"
    assert rows["rack2"]["where"] == f"root@127.0.0.1:{port}"
    assert rows["rack2"]["reason"].startswith("unreachable since ")
    assert f"127.0.0.1:{port}: Connect call failed" in rows["rack2"]["reason"]
    # no beachhead, no jump: fleet does not guess a route
    assert "no route to agent host 10.93.0.2" in rows["rack3"]["reason"]
    assert rows["rack3"]["last_known"]["last_heard"] is None
    table = fleet(console, xdg, "site", "status")
    assert "rack3: unreachable since" in table.stdout and "never heard from\n" in table.stdout


def test_only_local_sites_exit_0_and_an_unusable_replica_is_an_environment_problem(
        tmp_path, xdg):
    console = write_profile(tmp_path, name="console")
    seen = fleet(console, xdg, "site", "status")
    assert seen.returncode == 0, seen.stderr
    assert [ln.split()[:2] for ln in seen.stdout.splitlines()[1:]] == [["rack1", "local"],
                                                                      ["rack2", "local"]]
    state = tmp_path / "state" / "fleet"
    (state / "replica-console.db").unlink()
    (state / "replica-console.db").mkdir()  # where the file should be: a folder
    broken = fleet(console, xdg, "site", "status")
    assert broken.returncode == 3
    assert broken.stderr.startswith("fleet: cannot open the replica "), broken.stderr


@pytest.mark.root
async def test_an_agent_speaking_another_protocol_is_a_clear_skew_message(tmp_path, xdg,
                                                                          sshd):  # noqa: F811
    """An agent of another major protocol version: a real agent process whose
    protocol number is changed before it starts (no other fleet version is at hand)."""
    remote = remote_profile(tmp_path)
    other = ("python -c " + shlex.quote(
        "import runpy, fleet.sites.protocol as p; p.PROTOCOL = 2; "
        "runpy.run_module('fleet', run_name='__main__')"))
    other = other.replace("python", shlex.quote(sys.executable), 1)
    console = console_profile(tmp_path, sshd, agent_command(xdg, remote, other))
    seen = fleet(console, xdg, "site", "status", "--format", "json")
    assert seen.returncode == 1, seen.stderr
    rack2 = {r["site"]: r for r in json.loads(seen.stdout)}["rack2"]
    assert rack2["connected"] is False
    assert rack2["skew"].startswith("version skew: this agent (fleet "), rack2["skew"]
    assert "speaks site protocol 2, the console" in rack2["skew"]
    assert "install the same fleet version on both" in rack2["skew"]
    assert "Traceback" not in seen.stdout + seen.stderr
    table = fleet(console, xdg, "site", "status")
    assert rack2["reason"].startswith("refused by its agent via gw since "), rack2["reason"]
    assert ": version skew: this agent (fleet " in rack2["reason"]
    line = [ln for ln in table.stdout.splitlines() if ln.startswith("rack2: ")]
    assert len(line) == 1 and ": version skew: this agent" in line[0], table.stdout


@pytest.mark.root
async def test_an_agent_host_with_an_unknown_host_key_is_refused_not_trusted(tmp_path, xdg,
                                                                             sshd):  # noqa: F811
    remote = remote_profile(tmp_path)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    console = console_profile(tmp_path, sshd, agent_command(xdg, remote), known_hosts=empty)
    seen = fleet(console, xdg, "site", "status", "--format", "json")
    assert seen.returncode == 1, seen.stderr
    rack2 = {r["site"]: r for r in json.loads(seen.stdout)}["rack2"]
    assert rack2["connected"] is False
    assert "host key" in rack2["reason"] and "jump gw" in rack2["reason"], rack2["reason"]
    pins = fleet(console, xdg, "trust", "list", "--format", "json")
    assert json.loads(pins.stdout) == []  # nothing was trusted on first use


@pytest.mark.parametrize("command, says", [
    ("no-such-fleet --headless agent", "no-such-fleet: command not found"),
    ("REMOTE_WITHOUT_RACK2", "fleet: unknown site 'rack2'"),
])
@pytest.mark.root
async def test_an_agent_that_cannot_start_says_why_in_the_reason(tmp_path, xdg, sshd,  # noqa: F811
                                                                   command, says):
    remote = remote_profile(tmp_path)
    if command == "REMOTE_WITHOUT_RACK2":  # the site host's profile has no site rack2
        data = yaml.safe_load(remote.read_text())
        data["sites"] = [s for s in data["sites"] if s["name"] != "rack2"]
        data["nodes"] = [n for n in data["nodes"] if n.get("site") != "rack2"]
        remote.write_text(yaml.safe_dump(data))
        command = agent_command(xdg, remote)
    console = console_profile(tmp_path, sshd, command)
    seen = fleet(console, xdg, "site", "status", "--format", "json")
    assert seen.returncode == 1, seen.stderr
    rack2 = {r["site"]: r for r in json.loads(seen.stdout)}["rack2"]
    assert rack2["reason"].startswith("unreachable via gw since "), rack2["reason"]
    assert "the agent of site rack2 ended" in rack2["reason"] and says in rack2["reason"], \
        rack2["reason"]


@pytest.mark.root
async def test_an_agent_that_writes_much_on_stderr_is_still_heard(tmp_path, xdg, sshd):  # noqa: F811
    """stderr shares the SSH channel's window with the frames: 4 MB on stderr
    before the agent starts must not hold its replies up."""
    remote = remote_profile(tmp_path)
    noisy = "head -c 4000000 /dev/zero | tr '\\0' x >&2; echo >&2; " + agent_command(xdg, remote)
    console = console_profile(tmp_path, sshd, noisy)
    seen = fleet(console, xdg, "site", "status", "--format", "json")
    assert seen.returncode == 0, seen.stdout + seen.stderr
    assert {r["site"]: r for r in json.loads(seen.stdout)}["rack2"]["connected"] is True
