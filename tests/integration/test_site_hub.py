"""A remote site behind the engine (fleet.sites.hub): its machines read from the
console's replica, its commands sent to its agent over a real sshd through a
jump, and refused at once, with a dated reason, when it is away."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time

import pytest

from fleet.engine import Engine
from fleet.sites.hub import SiteAway, SiteHub
from support.agent_sshd import (MAC, OTHER_MAC, fleet, sites, sshd,  # noqa: F401 - fixtures
                                stop_sshd)
from support.waiting import until

pytestmark = pytest.mark.root


async def remote_machine(remote, mac):
    async with await Engine.open(remote, read_only=True) as engine:
        return await engine.machine(mac)


async def test_headless_reads_and_leases_a_remote_sites_machine(sites, xdg):
    listed = fleet(sites["console"], xdg, "machines", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["mac"]: r for r in json.loads(listed.stdout)}
    assert rows[MAC]["state"] == "discovered" and rows[MAC]["distributor"] == "rack2"
    assert OTHER_MAC in rows and listed.stderr == ""

    leased = fleet(sites["console"], xdg, "lease", MAC, "-d", "debian12", "--hostname", "web7")
    assert leased.returncode == 0, leased.stderr
    assert f"{MAC} leased to debian12 as web7" in leased.stdout
    at_site = await remote_machine(sites["remote"], MAC)
    assert at_site.state.value == "leased" and at_site.lease.hostname == "web7"

    # the same lease again: the site refuses it (nothing to change), exit 2
    again = fleet(sites["console"], xdg, "lease", MAC, "-d", "debian12", "--hostname", "web7")
    assert again.returncode == 2, again.stderr
    assert again.stderr.startswith(f"fleet: site rack2: {MAC} is already leased"), again.stderr
    # an unknown MAC is unknown everywhere
    unknown = fleet(sites["console"], xdg, "lease", "ac:1f:6b:00:00:99", "-d", "debian12")
    assert unknown.returncode == 2 and "unknown MAC" in unknown.stderr

    released = fleet(sites["console"], xdg, "release", MAC)
    assert released.returncode == 0, released.stderr
    assert f"{MAC} released at site rack2" in released.stdout
    assert (await remote_machine(sites["remote"], MAC)).lease is None


async def test_a_command_for_an_away_site_is_refused_at_once_with_a_dated_reason(sites, xdg):
    first = fleet(sites["console"], xdg, "machines")
    assert first.returncode == 0 and OTHER_MAC in first.stdout
    stop_sshd(sites["folder"], sites["port"])
    began = time.time()
    refused = fleet(sites["console"], xdg, "lease", OTHER_MAC, "-d", "debian12")
    took = time.time() - began
    assert refused.returncode == 3, refused.stderr
    lines = refused.stderr.splitlines()
    assert len(lines) == 1, refused.stderr
    assert re.match(r"fleet: site rack2 unreachable via gw since \d\d:\d\d:\d\d: ", lines[0]), \
        lines[0]
    assert "Connect call failed" in lines[0]
    assert took < 15
    assert (await remote_machine(sites["remote"], OTHER_MAC)).state.value == "discovered"

    # reads still answer, from what was last known, and say so
    stale = fleet(sites["console"], xdg, "machines")
    assert stale.returncode == 0 and OTHER_MAC in stale.stdout
    assert stale.stderr.startswith("fleet: site rack2 unreachable via gw since "), stale.stderr
    assert "its rows are as last heard at " in stale.stderr


async def held(profile) -> Engine:
    engine = await Engine.open(profile, remote=SiteHub)
    assert isinstance(engine.remote, SiteHub)
    engine.remote.hold()
    await until("rack2 connected", lambda: _true(engine.remote.is_connected("rack2")), 20)
    return engine


async def test_held_channels_lease_fast_and_two_consoles_racing_get_one_lease(sites):
    a, b = await held(sites["console"]), await held(sites["console"])
    try:
        # the replica caught up: the machine is known to both
        await until("the machine in the replica", lambda: a.find_machine(MAC), 10)
        began = time.monotonic()
        results = await asyncio.gather(
            a.lease(MAC, "debian12", "one"), b.lease(MAC, "debian12", "two"),
            return_exceptions=True)
        took = time.monotonic() - began
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert "is already leased" in str(lost[0]) and lost[0].exit_code == 2
        assert took < 2.0
        at_site = await remote_machine(sites["remote"], MAC)
        assert at_site.lease.hostname == won[0].lease.hostname

        # the site goes away (no new connections; the open ones end): refused at once, dated
        listener = (sites["folder"] / "pid").read_text().strip()
        subprocess.run(["pkill", "-P", listener], check=True)
        stop_sshd(sites["folder"], sites["port"])
        await until("rack2 away", lambda: _true(not a.remote.is_connected("rack2")), 20)
        began = time.monotonic()
        with pytest.raises(SiteAway, match=r"^site rack2 unreachable via gw since "):
            await a.release(MAC)
        assert time.monotonic() - began < 1.0
    finally:
        await a.close()
        await b.close()


async def _true(value: bool) -> bool:
    return value


async def test_two_console_processes_leasing_one_machine_at_once_make_one_lease(sites, xdg):
    argv = [sys.executable, "-m", "fleet", "--headless", "--profile", str(sites["console"]),
            "lease", MAC, "-d", "debian12", "--hostname"]
    racers = [subprocess.Popen([*argv, name], env=xdg, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for name in ("left", "right")]
    outcomes = [(p.wait(120), *p.communicate()) for p in racers]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 2], outcomes
    loser = next(err for code, _, err in outcomes if code == 2)
    assert loser.startswith(f"fleet: site rack2: {MAC} is already leased"), loser
    winner = next(out for code, out, _ in outcomes if code == 0)
    at_site = await remote_machine(sites["remote"], MAC)
    assert f"as {at_site.lease.hostname}" in winner
    async with await Engine.open(sites["remote"], read_only=True) as engine:
        leased = [e for e in await engine.events(1000) if e.kind == "machine.leased"]
    assert len(leased) == 1


async def test_a_remote_sites_distributor_is_switched_at_its_site(sites, xdg):
    for word in ("on", "off"):
        switched = fleet(sites["console"], xdg, "distributor", word, "rack2")
        assert switched.returncode == 0, switched.stderr
        assert f"distributor rack2 is {word}" in switched.stdout
    async with await Engine.open(sites["remote"], read_only=True, site="rack2") as engine:
        assert [d.enabled for d in await engine.distributors()] == [False]
        every = await engine.events(100)
    kinds = [e.kind for e in every if e.kind.startswith("distributor.")]
    assert kinds[-2:] == ["distributor.on", "distributor.off"], kinds
    assert all(e.data.get("by") for e in every if e.kind.startswith("distributor."))
    unknown = fleet(sites["console"], xdg, "distributor", "off", "rack9")
    assert unknown.returncode == 2 and "unknown distributor 'rack9'" in unknown.stderr


async def test_a_remote_sites_jobs_are_listed_and_cancelled_there_by_site_and_id(sites, xdg):
    async with await Engine.open(sites["remote"], site="rack2") as engine:  # nobody runs it
        job_id = await engine.jobs.submit("ipxe", {"kind": "ipxe"}, claim=False)
    listed = fleet(sites["console"], xdg, "jobs")
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[:3] == [f"rack2:{job_id}", "ipxe", "queued"]
               for line in listed.stdout.splitlines()), listed.stdout
    cancelled = fleet(sites["console"], xdg, "job", "cancel", f"rack2:{job_id}")
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job rack2:{job_id} cancelled" in cancelled.stdout
    async with await Engine.open(sites["remote"], read_only=True, site="rack2") as engine:
        assert (await engine.jobs.get(job_id)).state.value == "cancelled"
    again = fleet(sites["console"], xdg, "job", "cancel", f"rack2:{job_id}")
    assert again.returncode == 0 and "had already cancelled" in again.stdout, again.stdout
    log = fleet(sites["console"], xdg, "job", "log", f"rack2:{job_id}")
    assert log.returncode == 2 and "run it on its host" in log.stderr, log.stderr
    unknown = fleet(sites["console"], xdg, "job", "cancel", "rack9:1")
    assert unknown.returncode == 2 and "unknown site 'rack9'" in unknown.stderr
    missing = fleet(sites["console"], xdg, "job", "cancel", "rack2:9999")
    assert missing.returncode == 2 and "unknown job 9999" in missing.stderr, missing.stderr
