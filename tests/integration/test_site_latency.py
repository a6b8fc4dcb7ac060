"""A remote site over a slow link: a relay adds 250 ms each way between the
console and the site's jump (tests/support/relay.py; this kernel has no netem).
What the site writes reaches the console's replica within 750 ms (one way plus
slack), and a lease through the held channel costs one round trip, not an SSH
handshake and a remote interpreter start."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from fleet.engine import Engine
from fleet.sites.hub import SiteHub
from support.agent_sshd import (MAC, agent_command, console_profile,  # noqa: F401
                                remote_profile, sshd)
from support.relay import Relay
from support.site_agent import mac_of
from support.waiting import until

pytestmark = pytest.mark.root

DELAY = 0.25


async def test_site_events_arrive_within_750_ms_and_a_lease_is_one_round_trip(
        tmp_path, xdg, sshd):  # noqa: F811 - a fixture
    remote = remote_profile(tmp_path)
    async with await Engine.open(remote) as site:
        site.record_sighting(MAC, stage="firmware")
        await site.flush_sightings()
        async with Relay(("127.0.0.1", sshd["port"]), delay=DELAY) as relay:
            host_key = (sshd["folder"] / "host.pub").read_text().split()
            known = tmp_path / "known_hosts_relay"
            known.write_text(
                (sshd["folder"] / "known_hosts").read_text()
                + f"[127.0.0.1]:{relay.address[1]} {host_key[0]} {host_key[1]}\n")
            console = console_profile(tmp_path, sshd, agent_command(xdg, remote),
                                      known_hosts=known, jump_port=relay.address[1])
            engine = await Engine.open(console, remote=SiteHub)
            try:
                hub = engine.remote
                hub.hold()
                await until("the site's machine in the replica",
                            lambda: engine.find_machine(MAC), 30)
                replica = await hub.replica()

                delays = []
                for i in range(5):
                    before = await replica.store.count_events("rack2")
                    began = time.monotonic()
                    site.record_sighting(mac_of(1000 + i), stage="firmware")
                    await site.flush_sightings()
                    while await replica.store.count_events("rack2") == before:
                        assert time.monotonic() - began < 5, "the event never arrived"
                        await _tick()
                    delays.append(time.monotonic() - began)
                assert statistics.median(delays) < 0.75, delays
                assert max(delays) < 1.0, delays

                began = time.monotonic()
                leased = await engine.lease(MAC, "debian12", "slow1")
                took = time.monotonic() - began
                assert leased.lease.hostname == "slow1"
                # one round trip (2 x 250 ms) plus at most 100 ms
                assert took < 2 * DELAY + 0.1, took
                print(f"event delays {[round(d, 3) for d in delays]}; lease {took:.3f} s")
            finally:
                await engine.close()


async def _tick() -> None:
    await asyncio.sleep(0.01)
