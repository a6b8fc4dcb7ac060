"""The console's replica of its sites, kept by cursor over each site's agent
channel (fleet.sites.client), in the console's own SQLite file
(fleet.sites.replica_store).

`sync(site, client)` brings one site up to date and keeps it there:

1. hello: the agent's store_id must be the one replicated, and the site's
   history must still hold the replica's last event; otherwise the site's store
   was replaced (or rewound to a backup) and the site is replicated again from
   event 0, which the log says.
2. catch-up: events_since from the cursor, page by page (the next page asked
   for while one is written); each page and the cursor after it commit in one
   transaction.
3. a snapshot of machines, nodes and recent jobs replaces the site's rows.
4. follow from the cursor: live events are applied as they come (in small
   batches, cursor with them), the rows are refreshed by a snapshot shortly
   after events arrive, and a hello every few seconds keeps `last_heard`
   fresh and notices a link that stopped answering.

When the channel ends or stops answering, the site is marked away with the
reason and the time; everything replicated stays readable (`last_known`).
`keep(site, connect)` does all of it again and again: reconnecting with a
backoff, each time resuming from the cursor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from contextlib import AbstractAsyncContextManager
from typing import Any, Awaitable, Callable

from fleet.errors import FleetError
from fleet.sites.client import ChannelLost, SiteClient, SiteError
from fleet.sites.replica_store import ReplicaStore, SiteRow

log = logging.getLogger("fleet.replica")

#: called after each committed page of a catch-up: (site, cursor, site's last event id)
Progress = Callable[[str, int, int], None]
#: opens a channel to a site's agent: the client while inside, the channel closed after
Connect = Callable[[], AbstractAsyncContextManager[SiteClient]]


def console_version() -> str:
    try:
        return metadata.version("fleet")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class CatchUp:
    """What one catch-up did."""

    site: str
    events: int = 0  # events fetched (an event already replicated is not counted twice)
    pages: int = 0
    seconds: float = 0.0
    cursor: int = 0
    started_over: str | None = None  # why the site was replicated again from 0


@dataclass
class LastKnown:
    """A site as the replica last saw it. `connected` False: stale, as of `last_heard`."""

    site: str
    connected: bool
    last_heard: float | None
    since: float | None
    error: str | None
    store_id: str | None
    cursor: int
    site_last_event: int  # the site's last event id when last heard: lag = this - cursor
    rows_as_of: int
    machines: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)  # recent ones, newest first


class Replica:
    def __init__(self, store: ReplicaStore, *, page_size: int = 1000,
                 refresh_delay_s: float = 1.0, heartbeat_s: float = 5.0,
                 call_timeout_s: float = 15.0, version: str | None = None,
                 clock: Callable[[], float] = time.time, on_page: Progress | None = None):
        self.store = store
        self.page_size = page_size
        self.refresh_delay_s = refresh_delay_s
        self.heartbeat_s = heartbeat_s
        self.call_timeout_s = call_timeout_s
        self.version = version or console_version()
        self.clock = clock
        self.on_page = on_page
        self._syncing: set[str] = set()
        self.lagged = 0  # follows an agent ended because this console fell behind

    @classmethod
    async def open(cls, path: Path | str, **options: Any) -> "Replica":
        return cls(await ReplicaStore.open(path), **options)

    async def close(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> "Replica":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- reading -----------------------------------------------------------------------

    async def sites(self) -> list[SiteRow]:
        return await self.store.sites()

    async def last_known(self, site: str, events: int = 1000) -> LastKnown | None:
        """What the replica holds of `site` (its last `events` events), whether or
        not it is connected; None for a site never heard from."""
        async with self.store.reading() as view:
            row = await view.site(site)
            if row is None:
                return None
            return LastKnown(site=site, connected=row.connected, last_heard=row.last_heard,
                             since=row.since, error=row.error, store_id=row.store_id,
                             cursor=row.cursor, site_last_event=row.site_last_event,
                             rows_as_of=row.rows_as_of, machines=await view.machines(site),
                             nodes=await view.nodes(site),
                             events=await view.latest_events(site, events),
                             jobs=await view.jobs(site))

    # -- syncing -----------------------------------------------------------------------

    async def sync(self, site: str, client: SiteClient, *, follow: bool = True) -> CatchUp:
        """Catch `site` up through `client`, then (with `follow`) apply its live
        events until the channel ends (it never returns then). Whatever ends it
        (ChannelLost, SiteError, a cancel), the site is marked away with the
        reason before the error leaves."""
        if site in self._syncing:
            raise RuntimeError(f"site {site} is already being synced")
        self._syncing.add(site)
        try:
            done = await self.catch_up(site, client)
            await self.refresh(site, client)
            if follow:
                await self.follow(site, client)
            return done
        except asyncio.CancelledError:
            await self._away(site, "the console stopped following it")
            raise
        except Exception as err:
            await self._away(site, _reason(err))
            raise
        finally:
            self._syncing.discard(site)

    async def keep(self, site: str, connect: Connect, *, first_retry_s: float = 0.5,
                   max_retry_s: float = 30.0, stable_s: float = 10.0) -> None:
        """Keep `site` synced for as long as this runs (cancel it to stop):
        open a channel with `connect`, sync and follow through it, and after
        the channel fails or does not open, mark the site away with the reason
        and try again, waiting from first_retry_s doubling up to max_retry_s
        (back to the first wait after a channel that lasted stable_s)."""
        wait = first_retry_s
        while True:
            began = time.monotonic()
            try:
                async with connect() as client:
                    await self.sync(site, client)
            except (ChannelLost, SiteError):
                pass  # sync marked the site away, with the reason
            except (OSError, FleetError) as err:  # the channel did not open
                await self.mark_away(site, _reason(err))
            except Exception as err:  # noqa: BLE001 - e.g. the SSH connection lost as the
                # channel closed: whatever ended it, the site is away and tried again
                log.warning("site %s: the channel ended with %r", site, err)
                await self.mark_away(site, _reason(err))
            if time.monotonic() - began >= stable_s:
                wait = first_retry_s
            log.info("site %s: away; trying again in %g s", site, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, max_retry_s)

    async def mark_away(self, site: str, reason: str) -> None:
        """`site` cannot be reached (its channel did not open): say why, from now."""
        await self.store.lost(site, self.clock(), reason)

    async def _away(self, site: str, reason: str) -> None:
        try:
            await self.mark_away(site, reason)
        except Exception:  # noqa: BLE001 - the replica itself failing must not hide why
            log.exception("site %s: could not record that it is away", site)

    async def catch_up(self, site: str, client: SiteClient) -> CatchUp:
        """Every event after the cursor, page by page (see the module's note)."""
        began = time.monotonic()
        hello = await self._call(client, "hello", client.hello(self.version), HELLO)
        done = CatchUp(site, started_over=await self._check_history(site, client, hello))
        await self.store.heard(site, self.clock(), version=hello.get("version"),
                               last_event_id=hello["last_event_id"])
        row = await self.store.site(site)
        assert row is not None

        def ask(after: int) -> asyncio.Future:
            return asyncio.ensure_future(self._call(
                client, "events_since",
                client.call("events_since", after=after, limit=self.page_size), EVENTS))

        after = row.cursor
        asking = ask(after)
        try:
            while True:
                page = await asking
                events = page["events"]
                _check_order(site, after, events)
                if page["more"]:  # the agent reads the next page while this one is written
                    after = page["last_id"]
                    asking = ask(after)
                done.cursor = await self.store.apply_events(site, events, self.clock())
                done.events += len(events)
                done.pages += 1
                if self.on_page is not None:
                    self.on_page(site, done.cursor, hello["last_event_id"])
                if not page["more"]:
                    break
        finally:
            asking.cancel()
            if asking.done() and not asking.cancelled():
                asking.exception()  # a prefetch that failed after this one: already said
        done.seconds = time.monotonic() - began
        return done

    async def refresh(self, site: str, client: SiteClient) -> int:
        """Replace the site's machines, nodes and jobs with a snapshot; returns
        how many machines it has."""
        machines: list[dict[str, Any]] = []
        nodes: list[dict[str, Any]] = []
        jobs: list[dict[str, Any]] | None = None  # None: an agent that sends no jobs
        position: dict[str, Any] = {}
        as_of: int | None = None
        while True:
            page = await self._call(client, "snapshot", client.call("snapshot", **position),
                                    SNAPSHOT)
            if as_of is None:  # the rows show at least every change up to the first page's
                as_of = page["last_event_id"]
            page_jobs = page.get("jobs")
            if not (all(_has(m, mac=str, state=str) for m in page["machines"])
                    and all(_has(n, name=str) for n in page["nodes"])
                    and (page_jobs is None or isinstance(page_jobs, list)
                         and all(_has(j, id=int, state=str) for j in page_jobs))):
                raise ChannelLost(f"the agent of site {site} sent a snapshot with a record "
                                  "that is not one")
            machines += page["machines"]
            nodes += page["nodes"]
            if page_jobs is not None:
                jobs = (jobs or []) + page_jobs
            if not page["more"]:
                break
            position = {k: page[k] for k in ("after_mac", "after_node", "after_job")
                        if page.get(k) is not None}
        await self.store.replace_rows(site, machines, nodes, as_of or 0, self.clock(), jobs)
        return len(machines)

    async def follow(self, site: str, client: SiteClient) -> None:
        """Apply live events from the cursor until the channel ends (raises).
        An agent that ends the follow because this console fell behind (a
        `lagging` error) is caught up with by cursor, then followed again."""
        while True:
            try:
                await self._follow_live(site, client)
            except SiteError as err:
                if err.kind != "lagging":
                    raise
                log.warning("site %s: %s; catching up from the cursor", site, err.message)
                self.lagged += 1
                await self.catch_up(site, client)

    async def _follow_live(self, site: str, client: SiteClient) -> None:
        row = await self.store.site(site)
        assert row is not None
        await self._call(client, "follow", client.call("follow", after=row.cursor))
        arrived: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        changed = asyncio.Event()

        async def receive() -> None:
            async for event in client.events():
                arrived.put_nowait(event)

        async def apply() -> None:
            while True:
                batch = [await arrived.get()]
                while not arrived.empty() and len(batch) < self.page_size:
                    batch.append(arrived.get_nowait())
                cursor = (await self.store.site(site)).cursor  # type: ignore[union-attr]
                fresh = [e for e in batch if not (_has(e, id=int) and e["id"] <= cursor)]
                _check_order(site, cursor, fresh)
                await self.store.apply_events(site, fresh, self.clock())
                changed.set()

        async def refresh_after_changes() -> None:
            while True:
                await changed.wait()
                await asyncio.sleep(self.refresh_delay_s)  # one snapshot for a burst
                changed.clear()
                await self.refresh(site, client)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(self.heartbeat_s)
                hello = await self._call(client, "hello", client.hello(self.version), HELLO)
                await self.store.heard(site, self.clock(), version=hello.get("version"),
                                       last_event_id=hello["last_event_id"])

        try:
            async with asyncio.TaskGroup() as group:
                for part in (receive, apply, refresh_after_changes, heartbeat):
                    group.create_task(part(), name=f"fleet-replica-{site}-{part.__name__}")
        except BaseExceptionGroup as failed:  # the first part that failed says why
            raise failed.exceptions[0] from None

    # -- helpers -------------------------------------------------------------------------

    async def _call(self, client: SiteClient, op: str, call: Awaitable[Any],
                    shape: dict[str, type] | None = None) -> Any:
        """A request that must be answered within call_timeout_s (a link that
        stopped carrying anything is a lost channel, not a hang), with a result
        of `shape` (the fields this module reads, and their types)."""
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancel that
            # races with the reply, and a follow whose other part failed (a lagging
            # stream) then waited forever for this one to stop
            async with asyncio.timeout(self.call_timeout_s):
                result = await call
        except TimeoutError:
            raise ChannelLost(f"site {client.site} did not answer {op} within "
                              f"{self.call_timeout_s:g} s") from None
        for name, kind in (shape or {}).items():
            value = result.get(name) if isinstance(result, dict) else None
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ChannelLost(f"the agent of site {client.site} sent a {op} reply "
                                  f"without {name} ({kind.__name__})")
        return result

    async def _check_history(self, site: str, client: SiteClient,
                             hello: dict[str, Any]) -> str | None:
        """Start the site over when what the replica holds cannot be the start of
        the site's history any more; returns why, or None."""
        row = await self.store.site(site)
        store_id, last = hello.get("store_id"), hello["last_event_id"]
        why = None
        if row is None or (row.store_id is None and row.cursor == 0):  # nothing copied yet
            why = None if row is not None and store_id is None else "first contact"
        elif row.store_id != store_id:
            why = (f"its store was replaced (store id {store_id}, the replica's came from "
                   f"{row.store_id})")
        elif row.cursor > last:
            why = (f"its store ends at event {last} but the replica holds events up to "
                   f"{row.cursor} (restored from a backup?)")
        elif row.cursor > 0:
            page = await self._call(client, "events_since",
                                    client.call("events_since", after=row.cursor - 1, limit=1),
                                    EVENTS)
            theirs = page["events"][0] if page["events"] else None
            if theirs != await self.store.event(site, row.cursor):
                why = (f"its event {row.cursor} is not the one the replica holds (restored "
                       "from a backup?)")
        if why is None:
            return None
        if why == "first contact":
            log.info("site %s: first contact (store %s): replicating it from event 0", site,
                     store_id)
        else:
            log.warning("site %s: %s: replicating it again from event 0", site, why)
        await self.store.start_over(site, store_id)
        return why


HELLO = {"last_event_id": int}
EVENTS = {"events": list, "last_id": int, "more": bool}
SNAPSHOT = {"machines": list, "nodes": list, "last_event_id": int, "more": bool}
_EVENT = {"id": int, "kind": str, "subject": str, "severity": str, "message": str}


def _has(record: Any, **fields: type) -> bool:
    return isinstance(record, dict) and all(isinstance(record.get(k), t)
                                            for k, t in fields.items())


def _check_order(site: str, after: int, events: list[Any]) -> None:
    """Events must be whole and their ids rise past the cursor: anything else
    would move the cursor over events never copied."""
    previous = after
    for event in events:
        if not _has(event, **_EVENT) or isinstance(event["id"], bool):
            raise ChannelLost(f"the agent of site {site} sent an event that is not one "
                              f"(after {previous})")
        if event["id"] <= previous:
            raise ChannelLost(f"the agent of site {site} sent event {event['id']} after "
                              f"{previous}: out of order")
        previous = event["id"]


def _reason(err: Exception) -> str:
    return str(err) or type(err).__name__
