"""The console's replica of a site, by cursor: real `fleet --headless agent`
processes on pipes, real stores written by real fleet commands, the replica in
its own SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from fleet.errors import EnvironmentProblem
from fleet.sites.client import ChannelLost, SiteClient
from fleet.sites.replica import Replica
from support.site_agent import AgentChannel, site_rows, write_events

SITE = "rack1"


@pytest.fixture
async def channels():
    """Agents started by a test, ended after it (by their own process ids)."""
    started: list[AgentChannel] = []

    async def start(profile, env) -> AgentChannel:
        channel = await AgentChannel.start(profile, env, SITE)
        started.append(channel)
        return channel

    yield start
    for channel in started:
        channel.kill()
        await channel.close()


async def replica_rows(replica: Replica, site: str = SITE) -> dict:
    return {"machines": await replica.store.machines(site),
            "nodes": await replica.store.nodes(site),
            "events": await replica.store.events(site, 0, 10**9)}


def fleet_cli(profile, env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                           str(profile), *args], env=env, capture_output=True, text=True,
                          timeout=60)


async def wait_for(predicate, timeout: float, what: str, step: float = 0.01):
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(step)


# -- (1) equal to the site's own store ------------------------------------------------

async def test_after_sync_the_replica_equals_the_sites_store_row_for_row(
        profile_path, xdg, tmp_path, channels):
    await write_events(profile_path, 300)
    leased = fleet_cli(profile_path, xdg, "lease", "ac:1f:6b:00:00:01", "-d", "debian12")
    assert leased.returncode == 2  # unknown MAC: nothing written, nothing to copy
    discovered = fleet_cli(profile_path, xdg, "lease", "52:54:00:00:00:05", "-d", "rocky9",
                           "--hostname", "w5")
    assert discovered.returncode == 0, discovered.stderr

    channel = await channels(profile_path, xdg)
    async with await Replica.open(tmp_path / "replica.db", page_size=64) as replica:
        done = await replica.sync(SITE, channel.client, follow=False)
        theirs = await site_rows(profile_path)
        assert done.pages >= 5 and done.events == len(theirs["events"]) >= 301
        assert done.started_over == "first contact"
        ours = await replica_rows(replica)
        assert ours["events"] == theirs["events"]
        assert ours["machines"] == theirs["machines"]
        assert ours["nodes"] == theirs["nodes"] and len(ours["nodes"]) == 3
        assert [m["hostname"] for m in ours["machines"] if m["state"] == "leased"] == ["w5"]
        row = await replica.store.site(SITE)
        assert row.connected and row.cursor == theirs["events"][-1]["id"] == row.rows_as_of
        assert row.store_id and len(row.store_id) == 32
        assert time.time() - row.last_heard < 30


# -- (2) kill -9 of the agent in the middle of a catch-up --------------------------------

async def test_an_agent_killed_during_catch_up_loses_and_doubles_nothing(
        profile_path, xdg, tmp_path, channels):
    last = await write_events(profile_path, 5000)
    rng = random.Random(2026)
    kills = 0
    paged = asyncio.Event()
    async with await Replica.open(tmp_path / "replica.db", page_size=100,
                                  on_page=lambda *_: paged.set()) as replica:
        for _ in range(40):
            channel = await channels(profile_path, xdg)
            paged.clear()
            syncing = asyncio.ensure_future(replica.sync(SITE, channel.client, follow=False))
            waiting = asyncio.ensure_future(paged.wait())
            await asyncio.wait({syncing, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            await asyncio.sleep(rng.uniform(0, 0.02))  # a page is in: kill somewhere after it
            channel.kill()
            try:
                await syncing
            except ChannelLost as lost:
                row = await replica.store.site(SITE)
                assert not row.connected and row.error == str(lost)
                kills += row.cursor < last  # (or it died in the snapshot after)
                # what is there is exactly the start of the log: nothing skipped
                ids = [e["id"] for e in await replica.store.events(SITE, 0, 10**9)]
                assert ids == list(range(1, row.cursor + 1))
            await channel.close()
            if (await replica.store.site(SITE)).cursor == last:
                break
        channel = await channels(profile_path, xdg)  # and once more, not killed
        await replica.sync(SITE, channel.client, follow=False)
        assert kills >= 3, "the catch-up was never interrupted"
        ours = await replica_rows(replica)
    theirs = await site_rows(profile_path)
    assert [e["id"] for e in ours["events"]] == list(range(1, last + 1))
    assert ours["events"] == theirs["events"]
    assert ours["machines"] == theirs["machines"]


CONSOLE = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from support.site_agent import AgentChannel
from fleet.sites.replica import Replica

async def main():
    channel = await AgentChannel.start({profile!r}, dict(__import__("os").environ))
    replica = await Replica.open({replica!r}, page_size=50,
                                 on_page=lambda site, cursor, last: print(cursor, flush=True))
    await replica.sync("rack1", channel.client, follow=False)
    print("done", flush=True)

asyncio.run(main())
"""


async def test_a_console_killed_during_catch_up_resumes_from_its_cursor(
        profile_path, xdg, tmp_path):
    """The console's own process dies (kill -9) at random moments while it
    copies pages: the replica file holds each page with its cursor or neither."""
    last = await write_events(profile_path, 3000)
    path = tmp_path / "replica.db"
    script = CONSOLE.format(tests=str(Path(__file__).parents[1]),
                            profile=str(profile_path), replica=str(path))
    rng = random.Random(7)
    kills = 0
    for _ in range(30):
        console = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, env=xdg, stdout=subprocess.PIPE)
        await asyncio.wait_for(console.stdout.readline(), 30)  # its first page is in
        await asyncio.sleep(rng.uniform(0, 0.05))
        console.kill()
        rest = await console.stdout.read()
        await console.wait()
        if b"done" in rest:
            break
        async with await Replica.open(path) as replica:
            row = await replica.store.site(SITE)
            ids = [e["id"] for e in await replica.store.events(SITE, 0, 10**9)]
        assert ids == list(range(1, row.cursor + 1))
        kills += row.cursor < last  # (or it died in the snapshot after)
    assert kills >= 3
    async with await Replica.open(path) as replica:
        ours = await replica.store.events(SITE, 0, 10**9)
    assert ours == (await site_rows(profile_path))["events"]


# -- (3) live follow -------------------------------------------------------------------

async def test_an_event_another_process_writes_reaches_the_replica_quickly(
        profile_path, xdg, tmp_path, channels):
    await write_events(profile_path, 30)
    channel = await channels(profile_path, xdg)
    async with await Replica.open(tmp_path / "replica.db", refresh_delay_s=0.1,
                                  heartbeat_s=0.5) as replica:
        following = asyncio.ensure_future(replica.sync(SITE, channel.client))
        last = (await site_rows(profile_path))["events"][-1]["id"]

        async def caught_up():
            row = await replica.store.site(SITE)
            return row is not None and row.cursor == last

        await wait_for(caught_up, 30, "catch-up")
        latencies = []
        for i, mac in enumerate(["52:54:00:00:00:01", "52:54:00:00:00:02",
                                 "52:54:00:00:00:03"]):
            cli = await asyncio.create_subprocess_exec(  # the replica keeps running meanwhile
                sys.executable, "-m", "fleet", "--headless", "--profile", str(profile_path),
                "lease", mac, "-d", "debian12", "--hostname", f"live{i}", env=xdg,
                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
            wanted = last + 1 + i

            async def arrived():
                return await replica.store.event(SITE, wanted) is not None

            await wait_for(arrived, 10, f"event {wanted}")
            seen = time.time()
            assert await cli.wait() == 0, await cli.stderr.read()
            event = await replica.store.event(SITE, wanted)
            assert (event["kind"], event["subject"]) == ("machine.leased", mac)
            written = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
            latencies.append(seen - written)
        print(f"live event to replica: {', '.join(f'{s * 1000:.0f} ms' for s in latencies)}")
        assert max(latencies) < 2.0, latencies

        async def rows_fresh():  # the machine rows follow the events shortly after
            machines = {m["mac"]: m for m in await replica.store.machines(SITE)}
            return machines["52:54:00:00:00:03"]["hostname"] == "live2"

        await wait_for(rows_fresh, 10, "machine rows refreshed")
        heard = (await replica.store.site(SITE)).last_heard
        await asyncio.sleep(1.2)  # a quiet site is still heard from (the heartbeat)
        assert (await replica.store.site(SITE)).last_heard > heard
        assert not following.done()

        channel.kill()  # the site goes away: the replica says so, and keeps what it has
        with pytest.raises(ChannelLost):
            await asyncio.wait_for(following, 10)
        known = await replica.last_known(SITE)
        # the reader sees the end of the agent's output, or a heartbeat's write the
        # closed pipe: either way the channel's end is the reason
        assert not known.connected and known.since is not None
        assert ("ended" in known.error or "failed: Connection lost" in known.error), known.error
        assert known.events[-1]["id"] == last + 3
        assert known.machines == (await site_rows(profile_path))["machines"]


# -- (4) a replaced site store ---------------------------------------------------------------

async def test_a_replaced_site_store_starts_that_site_over(profile_path, xdg, tmp_path,
                                                           channels, caplog):
    await write_events(profile_path, 600)
    channel = await channels(profile_path, xdg)
    async with await Replica.open(tmp_path / "replica.db") as replica:
        await replica.sync(SITE, channel.client, follow=False)
        old = await replica.store.site(SITE)
        await channel.close()

        store = profile_path.with_name("t.db")  # the site host rebuilt: a new, shorter store
        for leftover in (store, *(store.with_name(store.name + s) for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        await write_events(profile_path, 30)

        channel = await channels(profile_path, xdg)
        with caplog.at_level(logging.WARNING, "fleet.replica"):
            done = await replica.sync(SITE, channel.client, follow=False)
        assert done.started_over.startswith("its store was replaced")
        assert f"site {SITE}: its store was replaced" in caplog.text
        assert "replicating it again from event 0" in caplog.text
        new = await replica.store.site(SITE)
        assert new.store_id != old.store_id and new.cursor < old.cursor
        assert await replica_rows(replica) == await site_rows(profile_path)


async def test_a_site_store_restored_from_a_backup_starts_that_site_over(
        profile_path, xdg, tmp_path, channels, caplog):
    """Same store id, but its history after the backup is not what was copied."""
    await write_events(profile_path, 100)
    store = profile_path.with_name("t.db")
    backup = tmp_path / "backup.db"
    channel = await channels(profile_path, xdg)
    async with await Replica.open(tmp_path / "replica.db") as replica:
        await replica.sync(SITE, channel.client, follow=False)  # the agent names the store
        source, target = sqlite3.connect(store), sqlite3.connect(backup)
        source.backup(target)
        source.close()
        target.close()
        await write_events(profile_path, 100)
        await replica.sync(SITE, channel.client, follow=False)
        copied = (await replica.store.site(SITE)).cursor
        await channel.close()

        shutil.copy(backup, store)  # the site's host restored, then went on
        for side in ("-wal", "-shm"):
            store.with_name(store.name + side).unlink(missing_ok=True)
        await write_events(profile_path, 150)
        theirs = await site_rows(profile_path)
        assert theirs["events"][-1]["id"] >= copied  # the cursor alone would not notice

        channel = await channels(profile_path, xdg)
        with caplog.at_level(logging.WARNING, "fleet.replica"):
            done = await replica.sync(SITE, channel.client, follow=False)
        assert done.started_over == (f"its event {copied} is not the one the replica holds "
                                     "(restored from a backup?)")
        assert await replica_rows(replica) == theirs


# -- (5) a console restart -------------------------------------------------------------------

async def test_the_replica_survives_a_console_restart(profile_path, xdg, tmp_path, channels):
    await write_events(profile_path, 400)
    path = tmp_path / "replica.db"
    channel = await channels(profile_path, xdg)
    async with await Replica.open(path) as replica:
        first = await replica.sync(SITE, channel.client, follow=False)
    channel.kill()
    await channel.close()

    async with await Replica.open(path) as replica:  # the console again, the site away
        known = await replica.last_known(SITE)
        assert not known.connected  # no channel belongs to this process yet
        assert known.cursor == first.cursor and known.last_heard is not None
        assert known.events == (await site_rows(profile_path))["events"][-1000:]
        assert known.machines == (await site_rows(profile_path))["machines"]

    last = await write_events(profile_path, 60)
    channel = await channels(profile_path, xdg)
    async with await Replica.open(path) as replica:
        again = await replica.sync(SITE, channel.client, follow=False)
        assert again.started_over is None
        assert again.events == last - first.cursor  # only what it missed
        assert await replica_rows(replica) == await site_rows(profile_path)


# -- a site that stops answering, or answers wrongly -------------------------------------------

async def test_an_agent_that_stops_answering_is_marked_away_within_the_call_timeout(
        profile_path, xdg, tmp_path, channels):
    last = await write_events(profile_path, 20)
    channel = await channels(profile_path, xdg)
    async with await Replica.open(tmp_path / "replica.db", heartbeat_s=0.2,
                                  call_timeout_s=1.0) as replica:
        following = asyncio.ensure_future(replica.sync(SITE, channel.client))

        async def connected():
            row = await replica.store.site(SITE)
            return row is not None and row.connected and row.rows_as_of > 0

        await wait_for(connected, 30, "first sync")
        with pytest.raises(RuntimeError, match="already being synced"):
            await replica.sync(SITE, channel.client)
        row = await replica.store.site(SITE)
        assert row.site_last_event == row.cursor == last  # no lag
        channel.proc.send_signal(signal.SIGSTOP)  # a link that carries nothing any more
        stopped = time.monotonic()
        with pytest.raises(ChannelLost, match="did not answer hello within 1 s"):
            await asyncio.wait_for(following, 10)
        assert time.monotonic() - stopped < 1.0 + 0.2 + 2.0  # timeout + heartbeat + slack
        row = (await replica.sites())[0]
        assert not row.connected and row.error == "site rack1 did not answer hello within 1 s"
        assert row.since >= row.last_heard and row.cursor == last
        channel.proc.send_signal(signal.SIGCONT)

        await replica.mark_away(SITE, "ssh: connect to host gw3 port 22: timed out")
        again = await replica.store.site(SITE)
        assert again.since == row.since  # away since the first failure, the newest reason
        assert again.error.startswith("ssh: connect to host gw3")


FAKE_AGENT = """
import json, sys
replies = json.loads(sys.argv[1])
for line, result in zip(sys.stdin, replies):
    request = json.loads(line)
    print(json.dumps({"id": request["id"], "ok": True, "result": result}), flush=True)
sys.stdin.read()
"""

HELLO = {"version": "0.1.0", "site": SITE, "protocol": 1, "last_event_id": 3,
         "store_id": "f" * 32, "by": {"user": "x"}}


def event(i, **more):
    return {"id": i, "ts": "2026-12-06T10:00:00.000Z", "kind": "test.x", "subject": "s",
            "severity": "info", "message": "m", "data": {}, **more}


def page(*events, more=False):
    return {"events": list(events), "last_id": events[-1]["id"] if events else 0, "more": more}


@pytest.mark.parametrize("replies, says", [
    ([HELLO, page(event(2), event(1))], "sent event 1 after 2: out of order"),
    ([HELLO, page({**event(1), "kind": None})], "sent an event that is not one"),
    ([HELLO, {"events": [], "last_id": 0}], "sent a events_since reply without more"),
    ([HELLO, page(event(1), event(2), event(3)),
      {"machines": [{"state": "leased"}], "nodes": [], "last_event_id": 3, "more": False}],
     "sent a snapshot with a record that is not one"),
    ([{**HELLO, "last_event_id": "3"}], "sent a hello reply without last_event_id"),
])
async def test_an_agent_sending_what_is_not_a_reply_breaks_the_channel_not_the_replica(
        tmp_path, replies, says):
    """Not an agent: a process answering with malformed results. What was
    whole before the bad page stays; nothing of the bad page is written."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FAKE_AGENT, json.dumps(replies), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE)

    async def write(data: bytes) -> None:
        proc.stdin.write(data)
        await proc.stdin.drain()

    client = SiteClient(proc.stdout.read, write, site=SITE).start()
    try:
        async with await Replica.open(tmp_path / "replica.db") as replica:
            with pytest.raises(ChannelLost, match=re.escape(says)):
                await replica.sync(SITE, client, follow=False)
            row = await replica.store.site(SITE)
            assert row is None or (not row.connected and says in row.error)
            written = [e["id"] for e in await replica.store.events(SITE, 0, 100)]
            assert written == ([1, 2, 3] if "snapshot" in says else [])
            assert await replica.store.machines(SITE) == []
    finally:
        await client.close()
        proc.kill()
        await proc.wait()


WRITER = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from support.site_agent import write_events

async def main():
    print("writing", flush=True)
    for _ in range({count} // 30):  # in bursts, as a busy site writes them
        last = await write_events({profile!r}, 30)
        await asyncio.sleep(0.01)
    print(last, flush=True)

asyncio.run(main())
"""


async def test_events_written_during_catch_up_and_follow_arrive_once_each(
        profile_path, xdg, tmp_path, channels):
    """Another process commits events one by one all through the catch-up, the
    snapshot and the start of the follow: the hand-over between them misses
    and repeats nothing."""
    await write_events(profile_path, 3000)
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER.format(tests=str(Path(__file__).parents[1]),
                                            profile=str(profile_path), count=1500),
        env=xdg, stdout=subprocess.PIPE)
    await writer.stdout.readline()  # it is writing
    channel = await channels(profile_path, xdg)
    at_hello = []
    async with await Replica.open(tmp_path / "replica.db", page_size=200, refresh_delay_s=0.1,
                                  on_page=lambda site, cursor, last: at_hello.append(last)
                                  ) as replica:
        following = asyncio.ensure_future(replica.sync(SITE, channel.client))
        await wait_for(lambda: asyncio.sleep(0, bool(at_hello)), 30, "the first page")
        assert writer.returncode is None  # the catch-up began in the middle of the writing
        last = int((await asyncio.wait_for(writer.communicate(), 120))[0])
        assert writer.returncode == 0 and 3000 < at_hello[0] < last

        async def caught_up():
            row = await replica.store.site(SITE)
            return row is not None and row.cursor == last and row.rows_as_of == last

        await wait_for(caught_up, 30, "the replica reaching the writer's last event")
        assert not following.done()
        assert await replica_rows(replica) == await site_rows(profile_path)
        following.cancel()
        with pytest.raises(asyncio.CancelledError):
            await following
        row = await replica.store.site(SITE)
        assert not row.connected and row.error == "the console stopped following it"
    assert (tmp_path / "replica.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_bytes(b"not a database" * 100), "file is not a database"),
    (lambda p: p.parent.rmdir() or p.parent.write_text("a file"), "console is not a folder"),
])
async def test_a_replica_file_that_cannot_be_used_is_an_environment_problem(tmp_path, make,
                                                                            says):
    path = tmp_path / "console" / "replica.db"
    path.parent.mkdir()
    make(path)
    with pytest.raises(EnvironmentProblem, match=f"replica {re.escape(str(path))}: .*{says}"):
        await Replica.open(path)


# -- keeping a site: away, back, caught up ---------------------------------------------------

async def test_keep_marks_a_site_away_and_catches_up_when_it_is_back(profile_path, xdg,
                                                                    tmp_path):
    """The link to the site fails (the agent killed, then the remote command
    failing: a site host the console cannot use) while the site goes on writing;
    when the link heals the replica has every event once, within seconds."""
    await write_events(profile_path, 100)
    link = {"profile": profile_path, "opened": 0}
    started: list[AgentChannel] = []

    @contextlib.asynccontextmanager
    async def connect():
        channel = await AgentChannel.start(link["profile"], xdg, SITE)
        started.append(channel)
        link["opened"] += 1
        try:
            yield channel.client
        finally:
            await channel.close()

    async def row_is(predicate):
        async def check():
            row = await replica.store.site(SITE)
            return row is not None and predicate(row)
        return check

    async with await Replica.open(tmp_path / "replica.db", heartbeat_s=0.3,
                                  call_timeout_s=2.0, refresh_delay_s=0.1) as replica:
        keeping = asyncio.ensure_future(replica.keep(SITE, connect, first_retry_s=0.2,
                                                     max_retry_s=0.4))
        try:
            await wait_for(await row_is(lambda r: r.connected and r.rows_as_of >= 100), 30,
                           "first sync")
            link["profile"] = tmp_path / "gone.yaml"  # from now on the agent fails at once
            started[-1].kill()
            await wait_for(await row_is(lambda r: not r.connected), 10, "marked away")
            last = await write_events(profile_path, 300)  # the site goes on meanwhile
            await wait_for(lambda: asyncio.sleep(0, link["opened"] >= 3), 30, "retries")
            away = await replica.store.site(SITE)
            assert not away.connected and away.cursor < last
            assert away.error == f"the agent of site {SITE} ended"

            link["profile"] = profile_path  # healed
            healed = time.monotonic()
            await wait_for(await row_is(lambda r: r.connected and r.cursor == last
                                        and r.rows_as_of == last), 30, "caught up")
            print(f"healed to caught up: {time.monotonic() - healed:.2f} s")
            assert time.monotonic() - healed < 5
            assert await replica_rows(replica) == await site_rows(profile_path)
        finally:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
            for channel in started:
                channel.kill()
                await channel.close()


# -- jobs ------------------------------------------------------------------------------------

async def test_the_sites_recent_jobs_are_in_the_replica_and_follow_their_changes(
        profile_path, xdg, tmp_path, channels):
    from fleet.engine import Engine
    from fleet.sites.agent import SNAPSHOT_JOBS

    script = "#!ipxe\n" + "echo x\n" * 800  # big inputs: the jobs take several frames
    async with await Engine.open(profile_path) as engine:
        ids = [await engine.jobs.submit("ipxe", {"kind": "ipxe", "script": script},
                                        claim=False) for _ in range(SNAPSHOT_JOBS + 20)]
    newest = ids[-SNAPSHOT_JOBS:]
    channel = await channels(profile_path, xdg)
    async with await Replica.open(tmp_path / "replica.db", refresh_delay_s=0.1) as replica:
        following = asyncio.ensure_future(replica.sync(SITE, channel.client))

        async def jobs_in():
            known = await replica.last_known(SITE)
            return known is not None and len(known.jobs) == SNAPSHOT_JOBS

        await wait_for(jobs_in, 30, "the jobs in the replica")
        known = await replica.last_known(SITE)
        assert [j["id"] for j in known.jobs] == newest[::-1]  # newest first
        assert {j["state"] for j in known.jobs} == {"queued"}
        assert known.jobs[0]["kind"] == "ipxe" and known.jobs[0]["inputs"]["script"] == script

        cancelled = fleet_cli(profile_path, xdg, "job", "cancel", str(newest[-1]))
        assert cancelled.returncode == 0, cancelled.stderr

        async def cancelled_in():
            jobs = (await replica.last_known(SITE)).jobs
            return jobs[0]["state"] == "cancelled"

        await wait_for(cancelled_in, 10, "the cancel in the replica")
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following


# -- a console too slow for its site ----------------------------------------------------------

async def test_a_follow_the_agent_ends_for_lagging_is_resumed_by_cursor(
        profile_path, xdg, tmp_path):
    """A slow link: the console reads its channel in small sips while the site
    writes a burst; the agent ends the follow (`lagging`), the replica catches
    up by events_since and follows again; every event once, in order."""
    from fleet.engine import Engine
    from fleet.sites.agent import FOLLOW_BUFFER

    await write_events(profile_path, 30)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "--headless", "--profile", str(profile_path), "agent",
        "--site", SITE, env=xdg, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, limit=1 << 21)
    slow = asyncio.Event()

    async def read(n: int) -> bytes:
        if slow.is_set():
            await asyncio.sleep(0.01)
            return await proc.stdout.read(min(n, 1024))
        return await proc.stdout.read(n)

    async def write(data: bytes) -> None:
        proc.stdin.write(data)
        await proc.stdin.drain()

    client = SiteClient(read, write, site=SITE).start()
    try:
        # snapshots and heartbeats go on meanwhile: a call whose reply races the
        # follow's end must not keep that follow from ending
        async with await Replica.open(tmp_path / "replica.db", refresh_delay_s=0.1,
                                      heartbeat_s=0.5) as replica:
            following = asyncio.ensure_future(replica.sync(SITE, client))

            async def at(cursor: int):
                async def check():
                    row = await replica.store.site(SITE)
                    return row is not None and row.cursor == cursor
                return check

            await wait_for(await at((await site_rows(profile_path))["events"][-1]["id"]), 30,
                           "catch-up")
            slow.set()
            async with await Engine.open(profile_path) as engine:
                await engine.record(*(engine.event("test.burst", f"s{i}", "burst", blob="b" * 500)
                                      for i in range(3 * FOLLOW_BUFFER)))
                last = await engine.last_event_id()
            await asyncio.sleep(3)  # the agent's feed reads the burst; the pipe is full
            slow.clear()
            await wait_for(await at(last), 60, "resumed to the last event")
            assert replica.lagged >= 1, "the agent never ended the follow"
            assert not following.done()
            ours = await replica.store.events(SITE, 0, 10**9)
            assert ours == (await site_rows(profile_path))["events"]
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
    finally:
        await client.close()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


# -- kill -9 of the site's serve while it writes -----------------------------------------------

async def test_a_serve_killed_while_it_writes_loses_and_doubles_nothing(tmp_path, xdg,
                                                                         channels):
    """The site's `serve` records machines that boot (HTTP script requests from
    new MACs) while the replica follows the site; serve is killed with SIGKILL
    in the middle, three times, and started again. Then the channel goes too
    and the next one resumes from the cursor: the replica holds every event the
    site's store committed, once each, in order."""
    import httpx

    from support.boot_site import write_boot_site
    from support.site_agent import mac_of

    site = write_boot_site(tmp_path, mode="direct")
    base = f"http://{site.address}:{site.http}"

    async def start_serve() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleet", "--headless", "--profile", str(site.path), "serve",
            env=xdg, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        async with httpx.AsyncClient(base_url=base, timeout=2) as http:
            async def up():
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/boot/00:00:00:00:00:01.ipxe")).status_code < 500
                return False
            await wait_for(up, 30, "serve answering", step=0.05)
        return proc

    booted = 0

    async def boot_many(stop: asyncio.Event) -> None:
        nonlocal booted
        async with httpx.AsyncClient(base_url=base, timeout=2) as http:
            async def one(mac: str) -> None:
                with contextlib.suppress(httpx.HTTPError):
                    await http.get(f"/boot/{mac}.ipxe")
            while not stop.is_set():
                await asyncio.gather(*(one(mac_of(10_000 + booted + i)) for i in range(20)))
                booted += 20

    channel = await channels(site.path, xdg)
    path = tmp_path / "replica.db"
    async with await Replica.open(path, refresh_delay_s=0.2) as replica:
        following = asyncio.ensure_future(replica.sync(SITE, channel.client))
        rng = random.Random(99)
        for _ in range(3):
            serve = await start_serve()
            stop = asyncio.Event()
            booting = asyncio.ensure_future(boot_many(stop))
            before = (await replica.store.site(SITE) or SimpleNamespace(cursor=0)).cursor

            async def moved():
                row = await replica.store.site(SITE)
                return row is not None and row.cursor > before + 20

            await wait_for(moved, 30, "serve's events reaching the replica")
            await asyncio.sleep(rng.uniform(0, 0.3))
            serve.send_signal(signal.SIGKILL)  # in the middle of its writes
            await serve.wait()
            stop.set()
            await booting
        assert not following.done()
        channel.kill()  # and the channel too: the next one resumes from the cursor
        with pytest.raises(ChannelLost):
            await asyncio.wait_for(following, 10)
        cursor = (await replica.store.site(SITE)).cursor
        again = await channels(site.path, xdg)
        done = await replica.sync(SITE, again.client, follow=False)
        assert done.started_over is None
        ours = await replica.store.events(SITE, 0, 10**9)
    theirs = (await site_rows(site.path))["events"]
    discovered = sum(e["kind"] == "machine.discovered" for e in theirs)
    print(f"{booted} boots, {discovered} machines discovered, {len(theirs)} events; "
          f"the last channel resumed from {cursor}")
    assert discovered >= 60
    assert [e["id"] for e in ours] == [e["id"] for e in theirs]  # each once, in order
    assert ours == theirs
