"""The demo's second site: `fleet --headless serve` on a demo profile with a site
that has an `agent:` starts that site as its own `serve` process (its own store,
boot services and simulated machines) and a site host behind the demo's jump,
where `site status` runs the real agent over SSH. A lease from the demo's
profile goes there and the node it becomes answers through the second site's
jump. The children die with the demo, also when it is killed."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from fleet.engine import Engine
from fleet.sim.api import start_demo
from fleet.sim.profiles import free_ports, write_demo_profile
from fleet.sites.client import ChannelLost
from fleet.sites.remote import SiteUnreachable, agent_channel, agent_node, agent_route
from fleet.sites.replica import Replica, console_version
from support.procs import alive, descendants
from support.waiting import until

SITE = "demo-east"
MACHINES = 3


def two_sites(folder: Path, octet: int, name: str = "demo") -> Path:
    """The bundled demo with its second site; the first in 127.<octet>/16, the
    second in the /16 after it."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_demo_profile(folder, name=name, machines=MACHINES, misbehave=False,
                              install_seconds=2, ports=free_ports(), subnet_octet=octet,
                              second_site=free_ports(),
                              options={"stagger_seconds": 2, "ipxe_size": 16384})


class Serve:
    """`fleet --headless serve` as a child; `started` is when its site (the demo
    and its second site included) was up, as its log says."""

    def __init__(self, profile: Path, env: dict[str, str]):
        self.profile, self.env = profile, env
        self.proc: asyncio.subprocess.Process
        self.began = 0.0
        self.started: float | None = None
        self.lines: list[str] = []
        self._read: asyncio.Task

    async def __aenter__(self) -> "Serve":
        self.began = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleet", "--headless", "--profile", str(self.profile),
            "serve", env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._read = asyncio.ensure_future(self._stderr())
        return self

    async def _stderr(self) -> None:
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.lines.append(text)
            if self.started is None and "fleet.site: started demo" in text:
                self.started = time.monotonic() - self.began

    async def up(self, timeout: float = 30.0) -> float:
        await until("serve started its demo", lambda: _ready(self), timeout, every=0.05)
        return self.started

    async def __aexit__(self, *exc) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 20)
        await asyncio.wait_for(self._read, 5)


async def _ready(serve: Serve):
    if serve.proc.returncode is not None:
        raise AssertionError(f"serve ended ({serve.proc.returncode}): {serve.lines[-5:]}")
    return serve.started


async def fleet_json(env, profile: Path, *args: str):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "--headless", "--profile", str(profile), "--format",
        "json", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, (json.loads(out) if out.strip() else None), err.decode()


async def both_connected(env, profile: Path):
    rc, rows, err = await fleet_json(env, profile, "site", "status")
    sites = {r["site"]: r for r in rows or []}
    return sites if rc == 0 and sites.get(SITE, {}).get("connected") else None


async def east_machines(xdg, profile: Path) -> list[dict]:
    """What the console's replica holds of the second site's machines."""
    path = Path(xdg["XDG_STATE_HOME"]) / "fleet" / f"replica-{profile.stem}.db"
    async with await Replica.open(path) as replica:
        known = await replica.last_known(SITE, events=0)
    return known.machines if known is not None else []


def east_children(pid: int) -> dict[int, str]:
    return {p: c for p, c in descendants(pid).items() if f"--profile {SITE}" in c}


async def _open(engine, site, route) -> bool:
    """False while a channel still opens (the pool may hold its connection a moment)."""
    async with agent_channel(engine, site, route) as client:
        await client.hello(console_version())
    return False


async def all_gone(pids) -> bool:
    return not [p for p in pids if alive(p)]


async def test_the_demo_serves_its_second_site_through_an_agent(tmp_path, xdg):
    (tmp_path / "solo").mkdir()
    solo = write_demo_profile(tmp_path / "solo", name="solo", machines=MACHINES,
                              misbehave=False, install_seconds=2, ports=free_ports(),
                              subnet_octet=223,
                              options={"stagger_seconds": 2, "ipxe_size": 16384})
    profile = two_sites(tmp_path / "two", 221)
    async with Serve(solo, xdg) as one:  # the demo as it started before: one site
        one_site = await one.up()

    async with Serve(profile, xdg) as serve:
        two_site = await serve.up()
        sites = await until("demo-east connected", lambda: both_connected(xdg, profile), 60,
                            every=0.2)
        connected = time.monotonic() - serve.began
        assert sites["demo"]["connected"] and sites["demo"]["where"] == "local"
        east = sites[SITE]
        assert east["where"] == "root@127.222.0.3 via demo-jump", east
        assert east["version"] == sites["demo"]["version"] == console_version()
        assert east["skew"] is None and east["reason"] is None and east["lag"] == 0

        async def discovered():  # the second site's machines, in the console's replica
            await both_connected(xdg, profile)
            ms = await east_machines(xdg, profile)
            return ms if len([m for m in ms if m["state"] == "discovered"]) == MACHINES \
                else None

        east_ms = await until("demo-east's machines in the replica", discovered, 60)
        in_replica = time.monotonic() - serve.began
        rc, listed, err = await fleet_json(xdg, profile, "machines")
        assert rc == 0, err
        # both sites' machines (the second's through its agent), each MAC once
        by_site = {site: sorted(m["mac"] for m in listed if m["distributor"] == site)
                   for site in ("demo", SITE)}
        assert by_site[SITE] == sorted(m["mac"] for m in east_ms)
        assert len(by_site["demo"]) == MACHINES and len({m["mac"] for m in listed}) == 6

        # a lease from the demo's profile goes to the second site, which installs it
        mac = by_site[SITE][0]
        rc, _, err = await fleet_json(xdg, profile, "lease", mac, "-d", "debian12",
                                      "--hostname", "east1")
        assert rc == 0, err

        async def provisioned():
            ms = {m["mac"]: m["state"] for m in await east_machines(xdg, profile)} \
                if await both_connected(xdg, profile) else {}
            return ms.get(mac) == "provisioned"

        await until("the second site's leased machine provisioned", provisioned, 60)
        # and its node answers through the second site's jump (its key pinned by the
        # demo), once it has rebooted from its disk after calling home
        deadline = time.monotonic() + 30
        while True:
            ran = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fleet", "--headless", "--profile", str(profile),
                "exec", "east1", "--", "hostname", env=xdg, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(ran.communicate(), 60)
            if ran.returncode == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert ran.returncode == 0 and b"east1 | east1" in out, (out, err)

        children = east_children(serve.proc.pid)
        assert any(c.endswith(f"--profile {SITE} serve") for c in children.values()), children
        serve.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.proc.wait(), 20) == 0, serve.lines[-10:]
    await until("the second site's processes gone", lambda: all_gone(children), 10)
    print(f"demo start (serve to 'started demo'): one site {one_site:.2f}s, with the "
          f"second site {two_site:.2f}s; demo-east connected after {connected:.2f}s, its "
          f"{MACHINES} machines in the replica after {in_replica:.2f}s")
    assert two_site < one_site + 1.5, (one_site, two_site)


async def test_killing_the_demo_kills_its_second_site_and_agents(tmp_path, xdg):
    profile = two_sites(tmp_path, 225)
    async with Serve(profile, xdg) as serve:
        await serve.up()
        await until("demo-east connected", lambda: both_connected(xdg, profile), 60)
        async with await Engine.open(profile, read_only=True) as engine:
            site = engine.profile.site(SITE)
            route = agent_route(site, engine.profile, engine.access.operator6)
            async with agent_channel(engine, site, route) as client:
                hello = await client.hello(console_version())
                assert hello["site"] == SITE
                children = east_children(serve.proc.pid)
                kinds = ["agent" if f" agent --site {SITE}" in c else c.split()[-1]
                         for c in children.values()]
                # this channel's agent (the demo's own process may hold another)
                assert kinds.count("serve") == 1 and "agent" in kinds, children
                serve.proc.kill()  # SIGKILL: the demo cleans up nothing itself
                await until("the second site's serve and agent gone",
                            lambda: all_gone(children), 10)
                with pytest.raises(ChannelLost):
                    await asyncio.wait_for(client.call("snapshot", after_mac=None,
                                                       after_node=None), 10)


async def test_the_site_host_answers_only_through_the_jump_and_runs_only_fleet(tmp_path, xdg):
    profile = two_sites(tmp_path, 227)
    engine = await Engine.open(profile)
    try:
        demo = await start_demo(engine)
        # the first site's process serves the first site only: the second's boot
        # services are its own serve's
        assert set(engine.boot.stats()) == {"demo"}
        site = engine.profile.site(SITE)
        from fleet.access.keys import operator_key

        key = asyncssh.read_private_key(str((await operator_key(engine)).private_path))
        with pytest.raises((asyncssh.Error, OSError)):  # straight to the site host: no
            async with asyncssh.connect("127.228.0.3", 2222, client_keys=[key],
                                        known_hosts=None, username="root",
                                        connect_timeout=5) as conn:
                await conn.run("fleet --version")
        route = agent_route(site, engine.profile, engine.access.operator6)
        pool = await engine.access.get_pool()
        async with pool.session(agent_node(site), route) as link:
            other = await link.conn.run("cat /etc/passwd")
        assert other.exit_status == 127 and "not found" in other.stderr
        async with agent_channel(engine, site, route) as client:
            hello = await client.hello(console_version())
        assert hello["site"] == SITE and hello["version"] == console_version()
        # the keys the demo made for the second site are pinned, listed and forgettable
        from fleet.access.trust import forget_pins, pinned_keys

        listed = {(r["name"], r["kind"], r["source"]) for r in await pinned_keys(engine)}
        assert {("demo-east.agent", "agent", "demo"), ("demo-east-jump", "jump", "demo"),
                ("demo-jump", "jump", "demo")} <= listed, listed
        assert len(await forget_pins(engine, "demo-east.agent")) == 1
        assert not [r for r in await pinned_keys(engine) if r["kind"] == "agent"]
        with pytest.raises(SiteUnreachable, match="host key"):  # strict: now unknown
            await until("the forgotten key refused", lambda: _open(engine, site, route), 10)
        serve_pid = demo.remote[0].serve.pid
    finally:
        await engine.close()
    assert not alive(serve_pid)  # the demo's stop stopped it


async def test_a_second_site_that_cannot_start_is_said_in_an_event(tmp_path, xdg):
    """Its serve ends at once (its HTTP port is taken): the demo goes on with its
    first site and says why the second one stopped, in the serve's own words."""
    import socket

    from fleet.profile import load_profile

    profile = two_sites(tmp_path, 229)
    port = load_profile(profile).site(SITE).distributor.ports.http
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        engine = await Engine.open(profile)
        try:
            await start_demo(engine)

            async def stopped():
                return [e for e in await engine.events(200) if e.kind == "demo.site_stopped"]

            event = (await until("the second site's end said", stopped, 30))[0]
        finally:
            await engine.close()
    assert event.subject == SITE and event.severity.value == "error"
    assert "(exit 3)" in event.message and f"{port}" in event.message, event.message
    assert "Traceback" not in event.message
