"""The site agent: one site's engine served over a JSON-lines channel
(fleet.sites.protocol), the way `ssh site-host fleet --headless agent` runs it.

One request at a time, in order; a `follow` streams events beside the replies
until `unfollow` or the end of input. A line that is not a valid request gets
an error reply and the agent goes on serving; nothing reaches the store before
a request has passed every check.

    hello          version and site check, the store's id; must come first
    events_since   the events after a cursor, in id order, as many as fit a frame
    follow         stream frames of every event after a cursor, then live ones
    unfollow       stop streaming
    snapshot       machines, nodes and recent jobs as `--format json` prints
                   them, paged
    lease/release  lifecycle commands with an idempotency key: a retry with the
                   same key gets the first result and acts no second time
    distributor    switch the site's boot services on or off (keyed too)
    job_cancel, job_retry, build
                   the jobs commands (keyed); a build or retry is queued and
                   run by a worker at the site, not by this short-lived agent

The events a command writes carry `by`: who the SSH channel belongs to
(fleet.sites.identity).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
import uuid
from importlib import metadata
from typing import Any, Awaitable, Callable

from fleet import records as rec
from fleet.core import lifecycle as lc
from fleet.core.model import Artifact, Event, Job, Machine
from fleet.engine import Acting, Engine
from fleet.errors import BadInput, Conflict, EnvironmentProblem, FleetError, UnknownTarget
from fleet.sites.protocol import (ENVELOPE_SLACK, MAX_FRAME, PROTOCOL, FrameReader,
                                  ProtocolError, Request, check_request, encoded_size,
                                  error_reply, one_line, parse_frame, reply, stream_frame)
from fleet.store.command_keys import CommandKeys, KeptResult, KeyTaken
from fleet.store.feed import Lagging
from fleet.store.on_behalf import on_behalf

log = logging.getLogger("fleet.agent")

#: how long a command's idempotency key is kept (a retry comes within minutes)
KEEP_KEYS_S = 30 * 24 * 3600
#: the meta key naming this store: a console's cursor is only good for the store
#: it came from (a rebuilt store starts its event ids again)
STORE_ID_KEY = "site.store_id"
#: what a reply's result may take of a frame
_BUDGET = MAX_FRAME - ENVELOPE_SLACK
#: how many recent jobs a snapshot carries (a console shows the latest ones)
SNAPSHOT_JOBS = 500
#: how many live events may wait for a slow console; past it the follow ends
#: with a `lagging` error and the console reads on by events_since
FOLLOW_BUFFER = 4096

Send = Callable[[dict[str, Any]], Awaitable[None]]


def fleet_version() -> str:
    try:
        return metadata.version("fleet")
    except metadata.PackageNotFoundError:
        return "unknown"


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A record as JSON output prints it (the '_' fields are table renderings)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def machine_record(m: Machine, now: float | None = None) -> dict[str, Any]:
    return _public(rec.machine(m, now))


def job_record(j: Job, now: float | None = None) -> dict[str, Any]:
    return _public(rec.job(j, now))


def artifact_record(a: Artifact) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "name": a.name, "path": a.path, "sha256": a.sha256,
            "size": a.size, "version": a.version, "created_at": rec.iso(a.created_at)}


class SiteAgent:
    def __init__(self, engine: Engine, site: str, by: dict[str, str], send: Send):
        self.engine = engine
        self.site = site
        self.by = dict(by)
        self._send = send
        self.keys = CommandKeys(engine.store)
        self._greeted = False
        self.store_id: str | None = None
        self._follow: asyncio.Task | None = None
        self._after_reply: Callable[[], None] | None = None
        self._handlers = {
            "hello": self._hello, "events_since": self._events_since,
            "follow": self._start_follow, "unfollow": self._unfollow,
            "snapshot": self._snapshot, "lease": self._lease, "release": self._release,
            "distributor": self._distributor, "job_cancel": self._job_cancel,
            "job_retry": self._job_retry, "build": self._build,
        }

    async def prepare(self) -> None:
        """Name the store (once per store) and forget idempotency keys older than
        KEEP_KEYS_S."""
        store = self.engine.store
        if self.engine.read_only:
            self.store_id = await store.meta.get(STORE_ID_KEY)
            return
        async with store.transaction() as tx:  # two agents starting at once: one names it
            self.store_id = await store.meta.get(STORE_ID_KEY)
            if self.store_id is None:
                self.store_id = uuid.uuid4().hex
                await store.meta.set(tx, STORE_ID_KEY, self.store_id)
        await self.keys.forget_before(self.engine.clock() - KEEP_KEYS_S)

    async def serve(self, frames: FrameReader) -> None:
        """Answer every line until the end of input."""
        try:
            while True:
                try:
                    line = await frames.next()
                except ProtocolError as err:  # oversized or truncated: no request to read
                    await self._send(error_reply(err))
                    continue
                if line is None:
                    return
                await self.answer(line)
        finally:
            await self._stop_follow()

    async def answer(self, line: bytes) -> None:
        request_id = None
        try:
            request = check_request(parse_frame(line))
            request_id = request.id
            frame = reply(request.id, await self._dispatch(request))
        except ProtocolError as err:
            frame = error_reply(err)
        except Exception as err:  # noqa: BLE001 - every failure becomes an error frame
            frame = error_reply(_as_protocol_error(err, request_id))
        try:
            await self._send(frame)
        except ValueError:  # a result over the frame limit: a bug here, not the peer's
            log.exception("reply over the frame limit")
            await self._send(error_reply(ProtocolError(
                "too_large", "the reply is over the frame limit", request_id)))
        then, self._after_reply = self._after_reply, None
        if then is not None:
            then()

    async def _dispatch(self, request: Request) -> Any:
        if request.site is not None and request.site != self.site:
            raise ProtocolError("wrong_site", f"this agent serves site {self.site!r}, "
                                f"not {request.site!r}", request.id)
        if request.op != "hello" and not self._greeted:
            raise ProtocolError("bad_input", f"{request.op} before hello: send hello first "
                                "(version and site)", request.id)
        return await self._handlers[request.op](request)

    # -- ops ------------------------------------------------------------------------

    async def _hello(self, request: Request) -> dict[str, Any]:
        args = request.args
        if args["protocol"] != PROTOCOL:
            raise ProtocolError(
                "version", f"this agent (fleet {fleet_version()}) speaks site protocol "
                f"{PROTOCOL}, the console (fleet {args['version']}) speaks "
                f"{args['protocol']}: install the same fleet version on both", request.id)
        self._greeted = True
        return {"version": fleet_version(), "site": self.site, "protocol": PROTOCOL,
                "last_event_id": await self.engine.last_event_id(),
                "store_id": self.store_id, "by": self.by}

    async def _check_cursor(self, after: int, request: Request) -> None:
        """A cursor past the last event came from another store (this one was
        rebuilt): answering from it would skip events without a word."""
        last = await self.engine.last_event_id()
        if after > last:
            raise ProtocolError(
                "conflict", f"cursor {after} is past this site's last event {last}: it "
                f"belongs to another store than this one ({self.store_id}); start again "
                "from 0", request.id)

    async def _events_since(self, request: Request) -> dict[str, Any]:
        after, limit = request.args["after"], request.args["limit"]
        await self._check_cursor(after, request)
        batch = await self.engine.store.events.since(after, limit + 1)
        out: list[dict[str, Any]] = []
        used = 0
        for event in batch[:limit]:
            record = rec.event(event)
            size = encoded_size(record) + 1
            if used + size > _BUDGET:
                if not out:
                    raise ProtocolError("too_large", f"event {event.id} alone is over the "
                                        "frame limit", request.id)
                break
            out.append(record)
            used += size
        last = out[-1]["id"] if out else after
        return {"events": out, "last_id": last, "more": len(out) < len(batch)}

    async def _start_follow(self, request: Request) -> dict[str, Any]:
        if self._follow is not None and not self._follow.done():
            raise ProtocolError("conflict", "already following: unfollow first", request.id)
        after = request.args["after"]
        await self._check_cursor(after, request)
        sub = self.engine.feed.subscribe(after, limit=FOLLOW_BUFFER)

        def start() -> None:  # after the reply: every stream frame comes after it
            self._follow = asyncio.ensure_future(self._stream(sub))
            self._follow.set_name("fleet-agent-follow")

        self._after_reply = start
        return {"following": True, "after": after}

    async def _stream(self, sub) -> None:
        sent = 0
        try:
            async for event in sub:
                frame = stream_frame("events", event=rec.event(event))
                try:
                    await self._send(frame)
                except ValueError:  # one event over the frame limit: say so, go on
                    await self._send(stream_frame("events", error={
                        "kind": "too_large",
                        "message": f"event {event.id} is over the frame limit"}))
                sent = event.id
        except Lagging as err:  # the follow ends here; the console resumes by cursor
            log.warning("follow ended: the console is too slow (%s)", err)
            await self._send(stream_frame("events", error={
                "kind": "lagging", "message": f"the console fell behind ({err}) after event "
                f"{sent}: the follow ended; read on with events_since from your cursor"}))
        finally:
            sub.close()

    async def _unfollow(self, request: Request) -> dict[str, Any]:
        was = await self._stop_follow()
        return {"following": False, "was_following": was}

    async def _stop_follow(self) -> bool:
        task, self._follow = self._follow, None
        if task is None or task.done():
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return True

    async def _snapshot(self, request: Request) -> dict[str, Any]:
        """Machines by MAC, then nodes by name, then the SNAPSHOT_JOBS most recent
        jobs by id, as many as fit a frame; `more` says to ask again with the
        returned after_mac/after_node/after_job. The event id is read before the
        rows: replaying the events after it may repeat a change the rows already
        show, never miss one."""
        last_event_id = await self.engine.last_event_id()
        after_mac = request.args["after_mac"]
        after_node = request.args["after_node"]
        after_job = request.args["after_job"]
        now = time.time()
        machines = sorted(await self.engine.machines(), key=lambda m: m.mac)
        nodes = sorted(await self.engine.nodes(), key=lambda n: n.name)
        jobs = sorted(await self.engine.recent_jobs(SNAPSHOT_JOBS), key=lambda j: j.id)
        out_m, after_mac, used, full = _page(machines, lambda m: m.mac, after_mac,
                                             lambda m: machine_record(m, now), 0)
        out_n: list[dict[str, Any]] = []
        out_j: list[dict[str, Any]] = []
        if not full:
            out_n, after_node, used, full = _page(nodes, lambda n: n.name, after_node,
                                                  rec.node, used)
        if not full:
            out_j, after_job, used, full = _page(jobs, lambda j: j.id, after_job,
                                                 lambda j: job_record(j, now), used)
        if full and not out_m and not out_n and not out_j:
            raise ProtocolError("too_large", "one record is over the frame limit", request.id)
        return {"machines": out_m, "nodes": out_n, "jobs": out_j,
                "last_event_id": last_event_id, "more": full, "after_mac": after_mac,
                "after_node": after_node, "after_job": after_job}

    async def _lease(self, request: Request) -> dict[str, Any]:
        a = request.args
        return await self._once(
            request, lambda: self.engine.lease(a["mac"], a["deployment"], a["hostname"],
                                               a["address"]),
            refuse_unchanged=True)

    async def _release(self, request: Request) -> dict[str, Any]:
        a = request.args
        return await self._once(request, lambda: self.engine.release(a["mac"], wipe=a["wipe"]),
                                refuse_unchanged=False)

    async def _distributor(self, request: Request) -> dict[str, Any]:
        a = request.args
        if a["name"] != self.site:  # another site's boot services: its own agent's
            raise ProtocolError("wrong_site", f"this agent serves site {self.site!r}; "
                                f"distributor {a['name']!r} is switched through its own "
                                "site", request.id)

        async def act() -> dict[str, Any]:
            before = {d.name: d.enabled for d in await self.engine.distributors()}
            d = await self.engine.switch_distributor(a["name"], a["enabled"])
            return {"distributor": _public(rec.distributor(d)),
                    "changed": before.get(d.name) != d.enabled}

        return await self._keyed(request, act)

    async def _job_cancel(self, request: Request) -> dict[str, Any]:
        job_id = request.args["job"]
        await self._job(job_id, request)  # an unknown job: not_found before any write

        async def act() -> dict[str, Any]:
            before = await self.engine.jobs.get(job_id)
            job = await self.engine.jobs.cancel(job_id)
            return {"job": job_record(job), "changed": not before.state.finished}

        return await self._keyed(request, act)

    async def _job_retry(self, request: Request) -> dict[str, Any]:
        job_id = request.args["job"]
        job = await self._job(job_id, request)
        if not job.state.finished:
            raise ProtocolError("conflict", f"job {job_id} is {job.state.value}; only a "
                                "finished job can be retried", request.id)

        async def act() -> dict[str, Any]:
            new_id = await self.engine.jobs.retry(job_id, claim=False)
            self._run_at_site(new_id)
            return {"job": job_record(await self.engine.jobs.get(new_id)),
                    "retry_of": job_id}

        return await self._keyed(request, act)

    async def _build(self, request: Request) -> dict[str, Any]:
        options = {k: v for k, v in request.args.items() if k not in ("what", "key")}
        await self.engine.jobs.start()  # its recovery writes are nobody's command

        async def act() -> dict[str, Any]:
            outcome = await self.engine.builds.build(request.args["what"], wait=False,
                                                     claim=False, **options)
            job = None
            if outcome.job_id is not None:
                self._run_at_site(outcome.job_id)
                job = job_record(await self.engine.jobs.get(outcome.job_id))
            artifact = outcome.artifact
            return {"cached": outcome.cached, "job": job,
                    "artifact": artifact_record(artifact) if artifact else None}

        return await self._keyed(request, act)

    async def _job(self, job_id: int, request: Request) -> Job:
        await self.engine.jobs.start()  # its recovery writes are nobody's command
        job = await self.engine.find_job(job_id)
        if job is None:
            raise ProtocolError("not_found", f"unknown job {job_id} at site {self.site}",
                                request.id)
        return job

    def _run_at_site(self, job_id: int) -> None:
        """A queued job outlives this agent (its channel may close at once): a
        detached `job run` claims it, as `build --no-wait` does; a site's
        `serve` worker may take it first (a claim is atomic)."""
        argv = [sys.executable, "-m", "fleet", "--headless", "--profile",
                str(self.engine.profile.path), "job", "run", str(job_id)]
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True,
                         env=dict(os.environ))

    # -- idempotent commands ----------------------------------------------------------

    async def _keyed(self, request: Request,
                     act: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Run `act` once per idempotency key, for the commands whose writes are
        not lifecycle transitions: the key is kept in the transaction of their
        first write (fleet.store.on_behalf), which carries `by` like every event
        they write, and gets the final result once `act` returns. A command that
        wrote nothing keeps its key on its own."""
        key = request.args["key"]
        args = {k: v for k, v in request.args.items() if k != "key"}
        kept = await self.keys.get(key)
        if kept is not None:
            return self._replay_result(kept, request, args)

        async def first(tx, events: list[Event]) -> None:
            await self.keys.keep(tx, key, request.op, args, {"events": [e.id for e in events]},
                                 self.by, self.engine.clock())

        try:
            with on_behalf(self.by, first) as acting:
                result = await act()
            if acting.used:
                await self.keys.settle(key, result)
            else:
                async with self.engine.store.transaction() as tx:
                    await self.keys.keep(tx, key, request.op, args, result, self.by,
                                         self.engine.clock())
        except KeyTaken:  # the same key, through another channel, got there first
            kept = await self.keys.get(key)
            if kept is None:
                raise
            return self._replay_result(kept, request, args)
        return {**result, "replayed": False}

    def _replay_result(self, kept: KeptResult, request: Request, args: dict[str, Any]
                       ) -> dict[str, Any]:
        self._check_same(kept, request, args)
        result = kept.result if isinstance(kept.result, dict) else {}
        return {**result, "replayed": True}

    def _check_same(self, kept: KeptResult, request: Request, args: dict[str, Any]) -> None:
        if kept.op != request.op or kept.request != args:
            raise ProtocolError(
                "conflict", f"key {kept.key!r} was used for another command ({kept.op} "
                f"{_args_text(kept.request)} at {rec.iso(kept.created_at)})", request.id)

    async def _once(self, request: Request, act: Callable[[], Awaitable[Machine]], *,
                    refuse_unchanged: bool) -> dict[str, Any]:
        """Run `act` once per idempotency key. The key and the change commit in one
        transaction (Engine.acting), so a retry finds either both or neither.
        `refuse_unchanged`: a command that would change nothing was done by
        someone else (two operators leasing one machine): refuse it."""
        key = request.args["key"]
        args = {k: v for k, v in request.args.items() if k != "key"}
        kept = await self.keys.get(key)
        if kept is not None:
            return self._replay(kept, request, args)
        done: dict[str, Any] = {}

        async def then(tx, transition: lc.Transition) -> None:
            # the key first: a retry racing its first attempt is a replay, not a refusal
            done["machine"] = machine_record(transition.machine)
            await self.keys.keep(tx, key, request.op, args, done["machine"], self.by,
                                 self.engine.clock())
            if refuse_unchanged and not transition.changed:  # rolls the key back too
                raise Conflict(f"{transition.machine.mac} is already "
                               f"{transition.machine.state.value}; nothing changed")

        try:
            with Engine.acting(Acting(by=self.by, then=then)):
                await act()
        except KeyTaken:  # the same key, through another channel, got there first
            kept = await self.keys.get(key)
            if kept is None:
                raise
            return self._replay(kept, request, args)
        except Conflict as err:
            raise ProtocolError("conflict", f"{err}{await self._who(args.get('mac'), str(err))}",
                                request.id) from None
        return {"machine": done["machine"], "replayed": False}

    def _replay(self, kept: KeptResult, request: Request, args: dict[str, Any]
                ) -> dict[str, Any]:
        self._check_same(kept, request, args)
        return {"machine": kept.result, "replayed": True}

    async def _who(self, mac: str | None, message: str) -> str:
        """" (leased by USER from ADDR, key FP at TIME)" when `message` is about
        the machine's lease and its lease event says who; "" otherwise."""
        if not mac:
            return ""
        try:
            machine = await self.engine.machine(mac)
        except FleetError:
            return ""
        if machine.lease is None or not message.startswith(machine.mac):
            return ""  # not about this machine's lease (a hostname held elsewhere...)
        events = await self.engine.events(50, machine.mac)
        leased = [e for e in events if e.kind == "machine.leased"
                  and e.data.get("lease_id") == machine.lease.id]
        return _who_text(leased[-1]) if leased else ""


def _who_text(event: Event) -> str:
    by = event.data.get("by")
    when = rec.iso(event.ts)
    if not isinstance(by, dict):
        return f" (leased at {when}, not through an agent)"
    text = f" (leased by {by.get('user', '?')}"
    if by.get("from"):
        text += f" from {by['from']}"
    if by.get("key"):
        text += f", key {by['key']}"
    return text + f" at {when})"


def _args_text(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items() if v is not None)


def _as_protocol_error(err: Exception, request_id: Any) -> ProtocolError:
    if isinstance(err, Conflict):
        return ProtocolError("conflict", str(err), request_id)
    if isinstance(err, UnknownTarget):
        return ProtocolError("not_found", str(err), request_id)
    if isinstance(err, BadInput):
        return ProtocolError("bad_input", str(err), request_id)
    if isinstance(err, (EnvironmentProblem, FleetError)):
        return ProtocolError("environment", str(err), request_id)
    log.exception("agent request failed")
    return ProtocolError("environment", f"the agent failed: {type(err).__name__}: "
                         f"{one_line(str(err), 300)}", request_id)


def _page(items, key, after, record_of, used: int):
    """The records of `items` whose key is past `after`, while they fit the
    frame budget with the `used` bytes before them: (records, the last key
    sent, bytes used, whether the budget ran out)."""
    out: list[dict[str, Any]] = []
    for item in items:
        if after is not None and key(item) <= after:
            continue
        record = record_of(item)
        used += encoded_size(record) + 1
        if used > _BUDGET:
            return out, after, used, True
        out.append(record)
        after = key(item)
    return out, after, used, False
