"""Liveness: is each node still answering over SSH?

    live = engine.access.start_liveness(interval=30)   # a task the engine cancels at close
    await live.check_once()                             # one round (tests, `check`)

Every `interval` seconds, each node with a route gets one cheap SSH-level
check on its pooled connection: an OpenSSH `keepalive@openssh.com` global
request with want-reply, a round trip to the node's own sshd through the
tunnel (no session, no process on the node, no MaxSessions slot). A node with
no open connection is (re)connected first, bounded by connect_timeout, so a
node that comes back is noticed. The answer must arrive within `timeout`
(default: connect_timeout + 2 s); otherwise the connection is closed (a silent
node's half-open link is not kept) and the node is unreachable.

Each round updates `NodeRepo.set_reachability` (one transaction: last_seen for
reachable nodes) and emits `node.reachable` / `node.unreachable` only when a
node's state changes from what the store said (the first round against
`unknown` counts as a change).

A node that has just called home is `booting` (its installer reboots into the
OS; a demo machine powering on from disk is too): it is checked 2, 3, 5, 8 and
13 s after it began booting, then every 15 s, and stays `booting` (no event)
while it does not answer, until BOOT_GRACE (10 minutes) has passed: only then
is it `unreachable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from fleet.core.durations import format_duration
from fleet.core.model import Reachability, Severity
from fleet.errors import FleetError

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)


async def ssh_ping(conn, timeout: float) -> None:
    """A keepalive round trip on `conn`; raises on silence or a closed connection."""
    if conn.is_closed():
        raise ConnectionError("connection closed")
    request = getattr(conn, "_make_global_request", None)
    if request is None:  # asyncssh without it: a session running `true`
        await asyncio.wait_for(conn.run("true", check=False), timeout)
        return
    await asyncio.wait_for(request(b"keepalive@openssh.com"), timeout)
    if conn.is_closed():
        raise ConnectionError("connection closed")


async def check_node(api, name: str, timeout: float | None = None) -> dict:
    """One SSH-level check of `name` over its route (what `fleet --headless check
    NODE` and the console show): connect through the pool (reused when open),
    then a keepalive round trip. Returns {node, check, ok, latency_ms,
    connect_ms, via, error}; unknown names raise UnknownTarget."""
    import asyncssh

    from fleet.access.pool import AccessError

    await api.engine.node(name)
    if timeout is None:
        timeout = float(api.engine.profile.operator.ssh.connect_timeout) + 2
    rec = {"node": name, "check": "ssh", "ok": False, "latency_ms": None, "connect_ms": None,
           "via": None, "error": None}
    t0 = time.monotonic()
    try:
        link = await api.connection(name)
        rec["via"] = link.via
        t1 = time.monotonic()
        await ssh_ping(link.conn, timeout)
        rec["latency_ms"] = round((time.monotonic() - t1) * 1000, 1)
        rec["connect_ms"] = round((t1 - t0) * 1000, 1)
        rec["ok"] = True
    except (AccessError, TimeoutError, asyncio.TimeoutError, OSError, asyncssh.Error) as err:
        rec["error"] = f"{getattr(err, 'kind', 'unreachable')}: {err or 'no answer'}"
    return rec


#: seconds after its call-home at which a booting node is checked, then every
#: BOOT_EVERY seconds until it answers or BOOT_GRACE has passed
BOOT_CHECKS = (2.0, 3.0, 5.0, 8.0, 13.0)
BOOT_EVERY = 15.0
#: how long a node that called home may stay silent before it is unreachable
#: (an installer's reboot, firmware POST, a slow first boot)
BOOT_GRACE = 600.0


def boot_check_due(age: float, grace: float = BOOT_GRACE) -> float | None:
    """The latest scheduled boot check at or before `age` seconds after the
    call-home (an offset from it), or None before the first one. Past the grace,
    the grace itself is the last check: the one that calls the node unreachable."""
    if age < BOOT_CHECKS[0]:
        return None
    if age >= grace:
        return grace
    if age < BOOT_CHECKS[-1]:
        return max(t for t in BOOT_CHECKS if t <= age)
    return BOOT_CHECKS[-1] + BOOT_EVERY * int((age - BOOT_CHECKS[-1]) // BOOT_EVERY)


def _booting_since(node) -> float | None:
    return node.booting_since if node.booting_since is not None else node.registered_at


class Liveness:
    def __init__(self, engine: "Engine", interval: float = 30.0, *, timeout: float | None = None,
                 parallel: int = 64, boot_grace: float = BOOT_GRACE, tick: float = 0.5):
        self.engine = engine
        self.interval = interval
        ssh = engine.profile.operator.ssh
        self.timeout = timeout if timeout is not None else float(ssh.connect_timeout) + 2.0
        self.parallel = parallel
        self.boot_grace = boot_grace
        self.tick = tick  # how often booting nodes are looked at between rounds
        self.state: dict[str, Reachability] = {}
        self.rounds = 0
        self._boot_checked: dict[str, float] = {}  # name -> offset of its last boot check
        self._task: asyncio.Task | None = None

    def start(self) -> asyncio.Task:
        if self._task is None or self._task.done():
            self._task = self.engine.spawn(self.run(), "fleet-liveness")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def run(self) -> None:
        """A round over every node each `interval`; between rounds, booting nodes
        on their own quicker schedule (BOOT_CHECKS)."""
        next_round = time.monotonic()
        while True:
            try:
                if time.monotonic() >= next_round:
                    next_round = time.monotonic() + self.interval
                    await self.check_once()
                else:
                    due = await self.booting_due()
                    if due:
                        await self.check_once(due)
            except asyncio.CancelledError:
                raise
            except FleetError as err:  # a full disk, an unusable key: say so, no traceback
                log.error("liveness: %s", err)
            except Exception:
                log.exception("liveness round failed")
            await asyncio.sleep(max(0.0, min(self.tick, next_round - time.monotonic())))

    async def booting_due(self) -> list[str]:
        """Booting nodes whose next scheduled check has come (marked as done)."""
        now = self.engine.clock()
        due = []
        for name, since in await self.engine.store.nodes.booting():
            offset = boot_check_due(now - (since or 0.0), self.boot_grace)
            if offset is not None and offset > self._boot_checked.get(name, -1.0):
                self._boot_checked[name] = offset
                due.append(name)
        return due

    def _booting(self, node, now: float) -> bool:
        """Called home, never answered since, and still within the boot grace."""
        # the store's word wins when it says booting: the node may have called
        # home again (a reinstall) since this loop last saw it
        was = (node.reachability if node.reachability is Reachability.BOOTING
               else self.state.get(node.name, node.reachability))
        since = _booting_since(node)
        return (was is Reachability.BOOTING and since is not None
                and now - since < self.boot_grace)

    async def _check(self, api, node) -> tuple[bool, str | None]:
        from fleet.access.pool import AccessError

        route = api.route(node)
        if not route.reachable:
            return False, f"no route: {route.reason}"
        pool = await api.get_pool()
        try:
            link = await asyncio.wait_for(pool.connection(node, route), self.timeout * 2)
            await ssh_ping(link.conn, self.timeout)
            return True, None
        except AccessError as err:
            return False, f"{err.kind}: {err}"
        except (asyncio.TimeoutError, TimeoutError):
            cached = pool.cached(node.name)
            if cached is not None:
                cached.lost = True
                cached.conn.close()
            return False, f"no answer within {self.timeout:g}s"
        except Exception as err:  # the connection died under the request
            return False, f"{type(err).__name__}: {err}"

    async def check_once(self, names: list[str] | None = None) -> dict[str, bool]:
        """One round over every node (or those named); returns name -> reachable.
        A booting node that does not answer stays booting, without an event,
        until its boot grace has passed."""
        api = self.engine.access
        nodes = await self.engine.nodes(everywhere=False)  # remote ones: their site checks
        if names is not None:
            wanted = set(names)
            nodes = [n for n in nodes if n.name in wanted]
        sem = asyncio.Semaphore(self.parallel)
        results: dict[str, tuple[bool, str | None]] = {}

        async def one(node):
            async with sem:
                results[node.name] = await self._check(api, node)

        await asyncio.gather(*(one(n) for n in nodes))
        self.rounds += 1
        now = self.engine.clock()
        events = []
        verdicts: dict[str, Reachability] = {}
        for node in nodes:
            ok, error = results[node.name]
            old = self.state.get(node.name, node.reachability)
            if ok:
                new = Reachability.REACHABLE
            elif self._booting(node, now):
                new = Reachability.BOOTING
            else:
                new = Reachability.UNREACHABLE
            verdicts[node.name] = new
            self.state[node.name] = new
            if new is not Reachability.BOOTING:
                self._boot_checked.pop(node.name, None)
            if new is old or new is Reachability.BOOTING:
                continue
            word = new.value
            msg = f"{node.name} is {word}"
            began = _booting_since(node)
            if old is Reachability.BOOTING and began is not None:
                since = format_duration(now - began)
                what = ("its call-home" if began == node.registered_at
                        else "it began booting")
                msg += (f", {since} after {what}" if ok else
                        f": no answer in {since} since {what}")
            if error:
                msg += f": {error}"
            events.append(self.engine.event(
                f"node.{word}", node.name, msg,
                severity=Severity.INFO if ok else Severity.WARNING,
                node=node.name, error=error, previous=old.value))
        if not self.engine.read_only:
            store = self.engine.store
            async with store.transaction() as tx:
                for node in nodes:
                    await store.nodes.set_reachability(
                        tx, node.name, verdicts[node.name], now, results[node.name][1])
                if events:
                    await store.events.append(tx, events)
        else:
            for e in events:
                log.info("%s: %s", e.kind, e.message)
        return {n: ok for n, (ok, _) in results.items()}
