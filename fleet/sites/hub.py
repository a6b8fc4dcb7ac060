"""The remote sites behind an engine (Engine.remote): what the console's replica
knows of them, and the commands that go to the site owning their target.

Two ways to run:

- held (`hold()`: the console): one channel per site, kept open by
  Replica.keep (catch-up, then follow, reconnecting with a backoff). Reads come
  from the replica as it stands; a command goes over the held channel, or is
  refused at once with the dated reason when the site is away.
- one-shot (a headless command): the first read or command opens a channel to
  each remote site, syncs it into the replica without following, and keeps the
  channel for the commands of this process until `close`. A site that cannot
  be reached is read as last known.

Every command carries an idempotency key: when the channel is lost before the
reply, the command is sent again with the same key on the next channel (the
site replays its first answer rather than acting twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator

from fleet import records as rec
from fleet.core import lifecycle as lc
from fleet.core.model import Distributor, Machine, Node
from fleet.errors import BadInput, Conflict, EnvironmentProblem, FleetError, UnknownTarget
from fleet.sites.changes import SiteWatch
from fleet.sites.client import ChannelLost, SiteClient, SiteError
from fleet.sites.remote import SiteUnreachable, agent_channel, agent_route
from fleet.sites.replica import Replica, console_version

if TYPE_CHECKING:
    from fleet.access.routes import Route
    from fleet.core.config import SiteConfig
    from fleet.engine import Engine

log = logging.getLogger("fleet.sites")

#: a held channel that is down: how long a command waits for it to come back
#: after losing it mid-command (the retry with the same key)
RETRY_WAIT_S = 5.0
#: a command's reply: a lease or release is small and quick at the site, so a
#: channel that does not answer within this is taken as a cut link
COMMAND_TIMEOUT_S = 5.0
#: held channels: the longest wait between tries to reconnect
MAX_RETRY_S = 10.0
#: a command for a held site with no channel: it is tried at once, and the
#: command waits this long for it before it is refused
KICK_WAIT_S = 2.0
#: held channels: a hello this often, each answered within the call timeout,
#: so a silently cut link is noticed within about 2 + 6 s
HEARTBEAT_S = 2.0


class SiteAway(EnvironmentProblem):
    """A command for a site that cannot be reached now (exit 3)."""


class SiteHub:
    def __init__(self, engine: "Engine", *, call_timeout_s: float = 6.0,
                 sync_timeout_s: float = 20.0):
        self.engine = engine
        self.call_timeout_s = call_timeout_s
        self.sync_timeout_s = sync_timeout_s
        #: the sites reached through an agent (a site neither here nor with an
        #: `agent:` block runs on some other console's host: not reachable from here)
        self.sites: dict[str, "SiteConfig"] = {
            s.name: s for s in engine.profile.sites
            if s.name not in engine.here and s.agent is not None}
        self._routes: dict[str, "Route"] = {}
        self._replica: Replica | None = None
        self._opening = asyncio.Lock()
        self._clients: dict[str, SiteClient] = {}
        self._connected: dict[str, asyncio.Event] = {n: asyncio.Event() for n in self.sites}
        self._tried: dict[str, asyncio.Event] = {n: asyncio.Event() for n in self.sites}
        self._held: dict[str, asyncio.Task] = {}
        self._stalled: dict[str, float] = {}  # when a command last timed out, per site
        self._channels = contextlib.AsyncExitStack()  # one-shot channels, closed at close
        self._synced: set[str] = set()
        self._syncing: asyncio.Task | None = None

    @property
    def holding(self) -> bool:
        return bool(self._held)

    # -- lifecycle ----------------------------------------------------------------------

    def hold(self) -> None:
        """Keep a channel to every remote site from now until `close`."""
        if self._syncing is not None:  # a one-shot sync begun before: the keep loops take over
            self._syncing.cancel()
            self._syncing = None
        for name in self.sites:
            if name not in self._held:
                self._held[name] = asyncio.ensure_future(self._keep(name))
                self._held[name].set_name(f"fleet-site-{name}")

    async def close(self) -> None:
        for task in self._held.values():
            task.cancel()
        for task in self._held.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._held.clear()
        if self._syncing is not None:
            self._syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._syncing
        try:
            await self._channels.aclose()
        finally:
            if self._replica is not None:
                await self._replica.close()
                self._replica = None

    async def replica(self) -> Replica:
        async with self._opening:
            if self._replica is None:
                path = self.engine.paths.state_dir / f"replica-{self.engine.profile.name}.db"
                self._replica = await Replica.open(path, call_timeout_s=self.call_timeout_s,
                                                   heartbeat_s=HEARTBEAT_S)
            return self._replica

    async def watch(self) -> SiteWatch:
        """What changes in the replica, site by site (the console follows it)."""
        return SiteWatch((await self.replica()).store, self.sites)

    async def written(self) -> None:
        """Until this process's replica commits a write (another process's writes
        do not wake it: a reader looks now and then as well)."""
        await (await self.replica()).store.written()

    def route(self, site: str) -> "Route":
        if site not in self._routes:
            self._routes[site] = agent_route(self.sites[site], self.engine.profile,
                                             self.engine.access.operator6)
        return self._routes[site]

    # -- reading ------------------------------------------------------------------------

    async def machines(self, site: str | None = None) -> list[Machine]:
        """Every remote site's machines (or only `site`'s), as the replica has them."""
        replica = await self._ready()
        out: list[Machine] = []
        for site in ([site] if site is not None else self.sites):
            # a machine that has not met its site's boot services yet names no
            # distributor: it is at the site all the same
            out += [_at(rec.machine_from(r), site) for r in await replica.store.machines(site)]
        return out

    async def machine(self, mac: str) -> tuple[str, Machine] | None:
        for site, found in await self._find(mac):
            return site, _at(rec.machine_from(found), site)
        return None

    async def nodes(self, site: str | None = None) -> list[Node]:
        replica = await self._ready()
        out: list[Node] = []
        for site in ([site] if site is not None else self.sites):
            out += [rec.node_from({**r, "site": r.get("site") or site})
                    for r in await replica.store.nodes(site)]
        return out

    async def first_page(self, limit: int) -> tuple[list[Machine], int, list[Node], int]:
        """The first `limit` remote machines (by MAC) and nodes (by name) of all
        sites, and how many there are (as Engine.first_page, from the replica)."""
        replica = await self._ready()
        machines: list[Machine] = []
        nodes: list[Node] = []
        n_machines = n_nodes = 0
        for site in self.sites:
            m, count_m, n, count_n = await replica.store.first_rows(site, limit)
            machines += [_at(rec.machine_from(r), site) for r in m]
            nodes += [rec.node_from({**r, "site": r.get("site") or site}) for r in n]
            n_machines, n_nodes = n_machines + count_m, n_nodes + count_n
        return (sorted(machines, key=lambda x: x.mac)[:limit], n_machines,
                sorted(nodes, key=lambda x: x.name)[:limit], n_nodes)

    async def stale(self) -> list[str]:
        """One line per remote site that is away: what its rows are, and why."""
        replica = await self.replica()
        lines = []
        for site in self.sites:
            row = await replica.store.site(site)
            if row is not None and row.connected:
                continue
            heard = (f"its rows are as last heard at {rec.clock(row.last_heard)}"
                     if row is not None and row.last_heard else "never heard from")
            lines.append(f"{await self.away_reason(site)} ({heard})")
        return lines

    async def _find(self, mac: str) -> list[tuple[str, dict[str, Any]]]:
        replica = await self._ready()
        found = []
        for site in self.sites:
            record = await replica.store.machine(site, mac)
            if record is not None:
                found.append((site, record))
        return found

    async def _ready(self) -> Replica:
        """The replica; one-shot, every remote site synced into it first (at most
        sync_timeout_s: a site that takes longer is read as last known)."""
        replica = await self.replica()
        if self.holding or self._synced == set(self.sites):
            return replica
        if self._syncing is None:
            self._syncing = asyncio.ensure_future(asyncio.gather(
                *(self._sync_once(n) for n in self.sites if n not in self._synced)))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._syncing), self.sync_timeout_s)
        self._synced.update(self.sites)  # whatever answered or not: read it as it is
        return replica

    async def _sync_once(self, site: str) -> None:
        replica = await self.replica()
        try:
            client = await self._open_channel(site)
            await replica.sync(site, client, follow=False)
        except SiteUnreachable as err:
            await replica.mark_away(site, str(err))
        except (ChannelLost, SiteError):
            pass  # sync marked it away, with the reason
        except (OSError, FleetError) as err:
            await replica.mark_away(site, str(err) or type(err).__name__)

    # -- commands -----------------------------------------------------------------------

    async def lease(self, site: str, mac: str, deployment: str, hostname: str | None,
                    address: str | None) -> Machine:
        result = await self.command(site, "lease", mac=mac, deployment=deployment,
                                    hostname=hostname, address=address)
        return _at(rec.machine_from(result["machine"]), site)

    async def release(self, site: str, mac: str, wipe: bool) -> lc.Released:
        before = await self._find(mac)
        result = await self.command(site, "release", mac=mac, wipe=wipe)
        after = _at(rec.machine_from(result["machine"]), site)
        was = rec.machine_from(before[0][1]) if before else None
        changed = was is None or (was.state, was.lease) != (after.state, after.lease)
        if result.get("replayed"):
            message = f"{mac} released at site {site} (by an earlier try of this command)"
        elif changed:
            message = f"{mac} released at site {site}: now {after.state.value}"
        else:
            message = f"{mac} at site {site} holds no lease; nothing changed"
        return lc.Released(after, changed, message, None)

    async def switch_distributor(self, site: str, enabled: bool) -> Distributor:
        result = await self.command(site, "distributor", want="distributor", name=site,
                                    enabled=enabled)
        return rec.distributor_from(result["distributor"])

    async def jobs(self) -> list[tuple[str, dict[str, Any]]]:
        """Every remote site's recent jobs as last snapshotted: (site, job record)."""
        replica = await self._ready()
        return [(site, job) for site in self.sites for job in await replica.store.jobs(site)]

    async def job_command(self, site: str, op: str, job: int) -> dict[str, Any]:
        """job_cancel or job_retry of job `job` at `site`: the agent's result."""
        return await self.command(site, op, want="job", job=job)

    async def command(self, site: str, op: str, *, want: str = "machine",
                      **args: Any) -> dict[str, Any]:
        """Run `op` at `site` once; the agent's result. SiteAway when the site
        cannot be reached; the agent's refusals as Conflict, UnknownTarget,
        BadInput."""
        key = uuid.uuid4().hex
        client = await self._client(site)
        for attempt in (1, 2):
            try:
                result = await asyncio.wait_for(client.call(op, key=key, **args),
                                                min(COMMAND_TIMEOUT_S, self.call_timeout_s))
            except asyncio.TimeoutError:
                # a stalled link: away from now (a held channel's next answered
                # heartbeat brings it back)
                self._stalled[site] = time.time()
                await (await self.replica()).mark_away(
                    site, f"no answer to {op} within {COMMAND_TIMEOUT_S:g} s")
                raise SiteAway(f"{await self.away_reason(site)} ({op} may arrive there "
                               "when the link returns: `machines` will show it)") from None
            except ChannelLost as err:  # the channel ended: once more on the next one
                await self._forget(site, client)
                if attempt == 2:
                    raise SiteAway(f"{await self.away_reason(site)} (the command was sent "
                                   "twice, with one key: it happened once or not at all; "
                                   "`machines` shows which)") from None
                log.info("site %s: %s; trying %s again with the same key", site, err, op)
                client = await self._client(site, wait_s=RETRY_WAIT_S)
                continue
            except SiteError as err:
                raise _refusal(site, err) from None
            if not isinstance(result, dict) or not isinstance(result.get(want), dict):
                raise SiteAway(f"site {site}: its agent answered {op} with no {want}")
            return result
        raise AssertionError("unreachable")

    async def _client(self, site: str, *, wait_s: float = 0.0) -> SiteClient:
        if site not in self.sites:
            raise UnknownTarget(f"site {site!r} is not reached through an agent from here")
        if self.holding:
            if site not in self._clients:  # between tries: try now, not after the backoff
                self._tried[site].clear()
                self._kick(site)
                waits = [asyncio.ensure_future(e.wait())
                         for e in (self._connected[site], self._tried[site])]
                await asyncio.wait(waits, timeout=max(wait_s, KICK_WAIT_S),
                                   return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
            client = self._clients.get(site)
            if client is None or not await self._answering(site):
                raise SiteAway(await self.away_reason(site))
            return client
        if site not in self._clients:
            try:
                await self._open_channel(site)
            except SiteUnreachable as err:
                await (await self.replica()).mark_away(site, str(err))
                raise SiteAway(await self.away_reason(site)) from None
        return self._clients[site]

    async def _open_channel(self, site: str) -> SiteClient:
        """One-shot: a channel kept until close, greeted (hello)."""
        client = await self._channels.enter_async_context(
            agent_channel(self.engine, self.sites[site], self.route(site)))
        await asyncio.wait_for(client.hello(console_version()), self.call_timeout_s)
        self._clients[site] = client
        return client

    async def _forget(self, site: str, client: SiteClient) -> None:
        if self._clients.get(site) is client:
            del self._clients[site]
            self._connected[site].clear()

    async def away_reason(self, site: str) -> str:
        """`site rack2 unreachable via gw3 since 10:42:07: ...`"""
        row = await (await self.replica()).store.site(site)
        route = self.route(site)
        via = f" via {route.via}" if route.chain else ""
        if row is None or row.since is None:
            return f"site {site} unreachable{via}: not connected yet"
        return f"site {site} unreachable{via} since {rec.clock(row.since)}: {row.error}"

    # -- held channels -----------------------------------------------------------------

    async def _keep(self, site: str) -> None:
        replica = await self.replica()
        await replica.keep(site, lambda: self._held_channel(site), max_retry_s=MAX_RETRY_S)

    def _kick(self, site: str) -> None:
        """Start the site's keep loop again (it waits out its backoff between tries)."""
        task = self._held.get(site)
        if task is not None and site not in self._clients:
            task.cancel()
            self._held[site] = asyncio.ensure_future(self._keep(site))
            self._held[site].set_name(f"fleet-site-{site}")

    @contextlib.asynccontextmanager
    async def _held_channel(self, site: str) -> AsyncIterator[SiteClient]:
        try:
            async with agent_channel(self.engine, self.sites[site],
                                     self.route(site)) as client:
                self._clients[site] = client
                self._connected[site].set()
                log.info("site %s: channel open (%s)", site, self.route(site).reason)
                try:
                    yield client
                finally:
                    await self._forget(site, client)
        finally:
            self._tried[site].set()  # a command waiting on this try: it is over

    async def _answering(self, site: str) -> bool:
        """A held channel answered lately: a heartbeat within HEARTBEAT_S plus the
        call timeout, and no command timed out on it since."""
        row = await (await self.replica()).store.site(site)
        heard = row.last_heard if row is not None and row.last_heard else 0.0
        fresh = time.time() - heard < HEARTBEAT_S + self.call_timeout_s
        return fresh and self._stalled.get(site, 0.0) < heard

    def is_connected(self, site: str) -> bool:
        return site in self._clients


def _at(machine: Machine, site: str) -> Machine:
    return machine if machine.distributor else machine.with_(distributor=site)


def _refusal(site: str, err: SiteError) -> FleetError:
    text = f"site {site}: {err.message}"
    if err.kind == "conflict":
        return Conflict(text)
    if err.kind == "not_found" or (err.kind == "bad_input" and err.message.startswith("unknown")):
        return UnknownTarget(text)
    if err.kind in ("bad_input", "too_large", "unknown_op", "wrong_site"):
        return BadInput(text)
    return SiteAway(text)

