"""The site agent as a console meets it: a real `fleet --headless agent`
process on real pipes and a real store, with other fleet processes beside it."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.engine import Engine
from fleet.sites.client import ChannelLost, SiteClient, SiteError
from fleet.sites.protocol import ERROR_KINDS, MAX_FRAME
from support.agent_sshd import ROOT, free_port, keygen, sshd  # noqa: F401 - sshd is a fixture
from support.profiles import XDG_VARS

MAC = "ac:1f:6b:00:00:42"
OTHER_MAC = "ac:1f:6b:00:00:43"


def agent_argv(profile, site: str | None = "rack1") -> list[str]:
    argv = [sys.executable, "-m", "fleet", "--headless", "--profile", str(profile), "agent"]
    return argv + ["--site", site] if site is not None else argv


class AgentProcess:
    """One `fleet --headless agent` subprocess and the console's end of its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.streamed: list[dict] = []
        self._next_id = 0

    @classmethod
    async def start(cls, profile, env, *, site: str | None = "rack1",
                    extra_env: dict | None = None) -> "AgentProcess":
        return await cls.spawn(agent_argv(profile, site), {**env, **(extra_env or {})})

    @classmethod
    async def spawn(cls, argv: list[str], env: dict) -> "AgentProcess":
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, limit=2 * MAX_FRAME)
        return cls(proc)

    async def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def send(self, frame: dict) -> None:
        await self.write(json.dumps(frame).encode() + b"\n")

    async def frame(self, timeout: float = 15) -> dict:
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert line.endswith(b"\n"), f"agent ended: {await self._stderr()}"
        return json.loads(line)

    async def reply(self, timeout: float = 15) -> dict:
        """The next reply; stream frames on the way are kept in `streamed`."""
        while True:
            frame = await self.frame(timeout)
            if "stream" in frame:
                self.streamed.append(frame)
                continue
            return frame

    async def call(self, op: str, **fields) -> dict:
        self._next_id += 1
        await self.send({"id": self._next_id, "op": op, **fields})
        answer = await self.reply()
        assert answer["id"] == self._next_id, answer
        return answer

    async def hello(self, site: str = "rack1") -> dict:
        answer = await self.call("hello", version="0.1.0", site=site)
        assert answer["ok"], answer
        return answer["result"]

    async def close(self) -> int:
        """End of input: the agent answers what it has and exits."""
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        return await asyncio.wait_for(self.proc.wait(), 15)

    async def _stderr(self) -> str:
        with_timeout = asyncio.wait_for(self.proc.stderr.read(), 5)
        return (await with_timeout).decode(errors="replace")


@pytest.fixture
async def seeded(profile_path):
    """Two discovered machines in the profile's store."""
    async with await Engine.open(profile_path) as engine:
        engine.record_sighting(MAC, stage="firmware")
        engine.record_sighting(OTHER_MAC, stage="firmware")
        await engine.flush_sightings()
    return profile_path


@pytest.fixture
async def agents():
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.proc.returncode is None:
            agent.proc.kill()
            await agent.proc.wait()


async def open_agent(agents, profile, env, **kw) -> AgentProcess:
    agent = await AgentProcess.start(profile, env, **kw)
    agents.append(agent)
    return agent


async def store_facts(profile) -> dict:
    """What a test compares before and after: nothing written means all equal."""
    async with await Engine.open(profile, read_only=True) as engine:
        return {
            "last_event_id": await engine.last_event_id(),
            "keys": (await engine.store.fetchone("SELECT count(*) FROM command_keys"))[0],
            "leases": (await engine.store.fetchone(
                "SELECT count(*) FROM leases WHERE deployment != ''"))[0],
            "states": {m.mac: m.state.value for m in await engine.machines()},
        }


def lease_args(key: str, mac: str = MAC, **more) -> dict:
    return {"mac": mac, "deployment": "debian12", "key": key, **more}


# -- hello, lease, events_since -----------------------------------------------------

async def test_a_lease_through_the_agent_is_in_the_events_after_the_cursor_with_who(
        seeded, xdg, agents, tmp_path):
    public, fingerprint = keygen(tmp_path / "op")
    kind, blob = public.split()[:2]
    auth = tmp_path / "auth"  # what sshd's ExposeAuthInfo writes
    auth.write_text(f"publickey {kind} {blob}\n")
    agent = await open_agent(agents, seeded, xdg, extra_env={
        "USER": "alice", "SSH_CONNECTION": "10.0.0.9 50022 10.0.0.1 22",
        "SSH_USER_AUTH": str(auth)})

    hello = await agent.hello()
    assert hello["site"] == "rack1" and hello["protocol"] == 1 and hello["version"]
    cursor = hello["last_event_id"]
    assert cursor == 2  # the two machine.discovered events

    leased = await agent.call("lease", **lease_args("k-1", hostname="web42"))
    assert leased["ok"], leased
    machine = leased["result"]["machine"]
    assert (machine["mac"], machine["state"], machine["hostname"]) == (MAC, "leased", "web42")
    assert leased["result"]["replayed"] is False

    since = await agent.call("events_since", after=cursor)
    events = since["result"]["events"]
    assert [(e["kind"], e["subject"]) for e in events] == [("machine.leased", MAC)]
    assert events[0]["id"] == cursor + 1 == since["result"]["last_id"]
    assert since["result"]["more"] is False
    assert events[0]["data"]["by"] == {"user": "alice", "from": "10.0.0.9", "key": fingerprint}
    # the whole log, in id order, in pages
    page = await agent.call("events_since", after=0, limit=2)
    assert [e["id"] for e in page["result"]["events"]] == [1, 2]
    assert page["result"]["more"] is True
    assert await agent.close() == 0
    assert (await store_facts(seeded))["states"][MAC] == "leased"


async def test_the_snapshot_is_what_json_output_prints(seeded, xdg, agents):
    agent = await open_agent(agents, seeded, xdg)
    await agent.hello()
    snap = (await agent.call("snapshot"))["result"]
    out = subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile", str(seeded),
                          "--format", "json", "machines"], env=xdg, capture_output=True,
                         text=True, check=True).stdout
    printed = json.loads(out)
    drop = {"seen_ago_s"}  # relative to the moment each was made
    assert [{k: v for k, v in m.items() if k not in drop} for m in snap["machines"]] == [
        {k: v for k, v in m.items() if k not in drop} for m in sorted(printed,
                                                                      key=lambda m: m["mac"])]
    assert [n["name"] for n in snap["nodes"]] == ["db1", "edge1", "web1"]
    assert snap["more"] is False and snap["last_event_id"] == 2


async def test_pages_fit_a_frame_and_the_cursor_misses_and_repeats_nothing(
        profile_path, xdg, agents):
    """Events and machines worth several frames come in pages under the limit;
    following the cursors gets each exactly once, in order."""
    async with await Engine.open(profile_path) as engine:
        await engine.record(*(engine.event("test.bulk", f"s{i}", "bulk", blob="b" * 9000)
                              for i in range(300)))
        for i in range(2500):
            engine.record_sighting(f"52:54:00:00:{i // 256:02x}:{i % 256:02x}",
                                   stage="firmware")
        await engine.flush_sightings()
        last = await engine.last_event_id()
    agent = await open_agent(agents, profile_path, xdg)
    await agent.hello()

    ids, pages, after = [], 0, 0
    while True:
        await agent.send({"id": 1, "op": "events_since", "after": after, "limit": 5000})
        line = await asyncio.wait_for(agent.proc.stdout.readline(), 15)
        assert len(line) <= MAX_FRAME
        page = json.loads(line)["result"]
        ids += [e["id"] for e in page["events"]]
        after, pages = page["last_id"], pages + 1
        if not page["more"]:
            break
    assert ids == list(range(1, last + 1)) and pages >= 3

    macs, pages, cursor = [], 0, {}
    while True:
        await agent.send({"id": 2, "op": "snapshot", **cursor})
        line = await asyncio.wait_for(agent.proc.stdout.readline(), 15)
        assert len(line) <= MAX_FRAME
        page = json.loads(line)["result"]
        macs += [m["mac"] for m in page["machines"]]
        cursor = {"after_mac": page["after_mac"], "after_node": page["after_node"]}
        pages += 1
        if not page["more"]:
            break
    assert len(macs) == 2500 and macs == sorted(set(macs)) and pages >= 2


async def test_a_cursor_from_another_store_is_refused_not_answered_empty(seeded, xdg, agents):
    first = await open_agent(agents, seeded, xdg)
    second = await open_agent(agents, seeded, xdg)
    one, two = await asyncio.gather(first.hello(), second.hello())
    assert one["store_id"] == two["store_id"] and len(one["store_id"]) == 32
    for op in ("events_since", "follow"):
        answer = await first.call(op, after=one["last_event_id"] + 1)
        assert answer["error"]["kind"] == "conflict", answer
        assert f"past this site's last event {one['last_event_id']}" in answer["error"]["message"]
    assert (await first.call("events_since", after=one["last_event_id"]))["result"][
        "events"] == []


# -- follow -------------------------------------------------------------------------

async def test_follow_streams_an_event_another_process_writes(seeded, xdg, agents):
    agent = await open_agent(agents, seeded, xdg)
    cursor = (await agent.hello())["last_event_id"]
    started = await agent.call("follow", after=cursor - 1)  # one old event, then live
    assert started["ok"] and started["result"]["following"] is True
    first = await agent.frame()
    assert first["stream"] == "events" and first["event"]["id"] == cursor

    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "--headless", "--profile", str(seeded), "lease", MAC,
        "--deployment", "debian12", "--hostname", "cli42", env=xdg,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await cli.communicate()
    assert cli.returncode == 0, err.decode()
    live = await agent.frame(timeout=10)
    assert live["stream"] == "events"
    assert (live["event"]["kind"], live["event"]["subject"]) == ("machine.leased", MAC)
    assert live["event"]["data"]["hostname"] == "cli42"
    assert live["event"]["id"] == cursor + 1
    assert "by" not in live["event"]["data"]  # not written through an agent

    again = await agent.call("follow", after=0)
    assert again["error"]["kind"] == "conflict"
    stopped = await agent.call("unfollow")
    assert stopped["result"] == {"following": False, "was_following": True}
    assert await agent.close() == 0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def test_a_console_that_does_not_read_ends_the_follow_not_the_agents_memory(
        seeded, xdg, agents):
    """The console stops reading while the site writes far more events than
    the pipe holds: the agent keeps at most FOLLOW_BUFFER of them, then ends
    the follow with a `lagging` error and goes on answering."""
    from fleet.sites.agent import FOLLOW_BUFFER

    agent = await open_agent(agents, seeded, xdg)
    cursor = (await agent.hello())["last_event_id"]
    assert (await agent.call("follow", after=cursor))["ok"]
    before = rss_kib(agent.proc.pid)
    count = 10 * FOLLOW_BUFFER
    async with await Engine.open(seeded) as engine:  # ~2 KiB each: 80 MiB if all were held
        for start in range(0, count, 5000):
            await engine.record(*(engine.event("test.bulk", f"s{i}", "bulk", blob="b" * 2000)
                                  for i in range(start, min(count, start + 5000))))
        last = await engine.last_event_id()

    async def agent_read_them_all() -> None:  # the agent's feed has seen the last one
        while True:
            await asyncio.sleep(0.2)
            grown = rss_kib(agent.proc.pid) - before
            if grown < 0 or agent.proc.returncode is not None:
                return
            peak.append(grown)
            if len(peak) > 25:  # 5 s: it has read them
                return

    peak: list[int] = []
    await agent_read_them_all()
    print(f"agent grew by at most {max(peak) // 1024} MiB for {count} events not read")
    assert max(peak) < 40 * 1024, peak
    streamed, error = [], None
    while error is None:
        frame = await agent.frame(timeout=15)
        assert frame.get("stream") == "events", frame
        if "error" in frame:
            error = frame["error"]
        else:
            streamed.append(frame["event"]["id"])
    assert error["kind"] == "lagging" and "events_since" in error["message"], error
    assert streamed == list(range(cursor + 1, cursor + 1 + len(streamed)))
    assert len(streamed) < count  # it did not hold them all
    # the agent still answers, and the console reads on by cursor
    page = await agent.call("events_since", after=streamed[-1], limit=10)
    assert [e["id"] for e in page["result"]["events"]][0] == streamed[-1] + 1
    assert (await agent.call("follow", after=last))["ok"]  # a new follow may start
    assert await agent.close() == 0


# -- idempotency and races ------------------------------------------------------------

async def test_a_retry_with_the_same_key_leases_once(seeded, xdg, agents):
    first = await open_agent(agents, seeded, xdg)
    await first.hello()
    done = await first.call("lease", **lease_args("retry-1"))
    assert done["ok"] and done["result"]["replayed"] is False
    await first.close()  # the reply was "lost": the console reconnects and retries

    second = await open_agent(agents, seeded, xdg)
    await second.hello()
    again = await second.call("lease", **lease_args("retry-1"))
    assert again["ok"], again
    assert again["result"]["replayed"] is True
    assert again["result"]["machine"]["lease_id"] == done["result"]["machine"]["lease_id"]

    reused = await second.call("lease", **lease_args("retry-1", mac=OTHER_MAC))
    assert reused["error"]["kind"] == "conflict"
    assert "was used for another command" in reused["error"]["message"]

    facts = await store_facts(seeded)
    assert facts["leases"] == 1 and facts["keys"] == 1
    assert facts["states"] == {MAC: "leased", OTHER_MAC: "discovered"}
    async with await Engine.open(seeded, read_only=True) as engine:
        kinds = [e.kind for e in await engine.events(100)]
    assert kinds.count("machine.leased") == 1


@pytest.mark.parametrize("second_hostname", ["same", "other"])
async def test_two_agents_leasing_one_machine_at_once_one_wins(seeded, xdg, agents,
                                                               second_hostname):
    a = await open_agent(agents, seeded, xdg, extra_env={"USER": "alice"})
    b = await open_agent(agents, seeded, xdg, extra_env={"USER": "bob"})
    await asyncio.gather(a.hello(), b.hello())
    hostnames = ("web1x", "web1x" if second_hostname == "same" else "web2x")
    await asyncio.gather(
        a.send({"id": 1, "op": "lease", **lease_args("a-1", hostname=hostnames[0])}),
        b.send({"id": 1, "op": "lease", **lease_args("b-1", hostname=hostnames[1])}))
    answers = await asyncio.gather(a.reply(), b.reply())
    oks = [r for r in answers if r["ok"]]
    refused = [r for r in answers if not r["ok"]]
    assert len(oks) == 1 and len(refused) == 1, answers
    error = refused[0]["error"]
    assert error["kind"] == "conflict"
    winner = "alice" if answers[0]["ok"] else "bob"
    assert "already leased" in error["message"] and f"leased by {winner}" in error["message"]
    facts = await store_facts(seeded)
    assert facts["leases"] == 1 and facts["keys"] == 1 and facts["states"][MAC] == "leased"


async def test_a_hostname_held_by_another_machine_is_a_conflict(seeded, xdg, agents):
    agent = await open_agent(agents, seeded, xdg, extra_env={"USER": "alice"})
    await agent.hello()
    assert (await agent.call("lease", **lease_args("h-1", hostname="web7")))["ok"]
    taken = await agent.call("lease", **lease_args("h-2", mac=OTHER_MAC, hostname="web7"))
    assert taken["error"]["kind"] == "conflict"
    message = taken["error"]["message"]
    assert message.startswith("hostname web7 is in use: ac:1f:6b:00:00:42 holds it")
    assert "leased by" not in message  # that is about the other machine
    facts = await store_facts(seeded)
    assert facts["states"][OTHER_MAC] == "discovered" and facts["keys"] == 1


async def test_a_release_names_who_released_and_who_retired_the_node(seeded, xdg, agents):
    from fleet.core.model import Node

    agent = await open_agent(agents, seeded, xdg, extra_env={"USER": "carol"})
    await agent.hello()
    assert (await agent.call("lease", **lease_args("r-1", hostname="db9")))["ok"]
    async with await Engine.open(seeded) as engine:  # as its call-home would register it
        async with engine.store.transaction() as tx:
            await engine.store.nodes.save(tx, Node(name="db9", site="rack1", mac=MAC,
                                                   source="callhome", address="10.91.0.9"))
        cursor = await engine.last_event_id()
    released = await agent.call("release", mac=MAC, wipe=False, key="r-2")
    assert released["ok"] and released["result"]["machine"]["state"] == "discovered"
    events = (await agent.call("events_since", after=cursor))["result"]["events"]
    assert [(e["kind"], e["data"]["by"]["user"]) for e in events] == [
        ("machine.released", "carol"), ("node.retired", "carol")]


# -- distributors, jobs, builds ----------------------------------------------------------

async def events_after(profile, cursor: int) -> list:
    async with await Engine.open(profile, read_only=True) as engine:
        return await engine.store.events.since(cursor, 10**6)


async def wait_job(profile, job_id: int, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        async with await Engine.open(profile, read_only=True) as engine:
            job = await engine.find_job(job_id)
        if job.state.finished:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.state.value}"
        await asyncio.sleep(0.1)


async def test_a_distributor_switch_is_keyed_says_who_and_stays_at_its_site(
        seeded, xdg, agents):
    agent = await open_agent(agents, seeded, xdg, extra_env={"USER": "dave"})
    cursor = (await agent.hello())["last_event_id"]
    off = await agent.call("distributor", name="rack1", enabled=False, key="d-1")
    assert off["ok"], off
    assert off["result"]["distributor"]["enabled"] is False
    assert (off["result"]["changed"], off["result"]["replayed"]) == (True, False)
    again = await agent.call("distributor", name="rack1", enabled=False, key="d-1")
    assert again["result"] == {**off["result"], "replayed": True}
    reused = await agent.call("distributor", name="rack1", enabled=True, key="d-1")
    assert reused["error"]["kind"] == "conflict"
    other = await agent.call("distributor", name="rack2", enabled=True, key="d-2")
    assert other["error"]["kind"] == "wrong_site" and "rack2" in other["error"]["message"]
    same = await agent.call("distributor", name="rack1", enabled=False, key="d-3")
    assert same["ok"] and same["result"]["changed"] is False  # already off: nothing to do
    events = await events_after(seeded, cursor)
    assert [(e.kind, e.subject, e.data["by"]["user"]) for e in events] == [
        ("distributor.off", "rack1", "dave")]
    facts = await store_facts(seeded)
    assert facts["keys"] == 2 and facts["last_event_id"] == cursor + 1
    async with await Engine.open(seeded, read_only=True) as engine:
        assert {d.name: d.enabled for d in await engine.distributors()} == {
            "rack1": False, "rack2": False}


async def test_job_cancel_and_retry_through_the_agent_act_once_per_key(seeded, xdg, agents):
    async with await Engine.open(seeded) as engine:  # a build nobody has claimed yet
        job_id = await engine.jobs.submit("ipxe", {"kind": "ipxe"}, claim=False)
    agent = await open_agent(agents, seeded, xdg, extra_env={"USER": "erin"})
    cursor = (await agent.hello())["last_event_id"]

    early = await agent.call("job_retry", job=job_id, key="j-0")
    assert early["error"]["kind"] == "conflict" and "queued" in early["error"]["message"]
    missing = await agent.call("job_cancel", job=9999, key="j-9")
    assert missing["error"] == {"kind": "not_found", "message": "unknown job 9999 at site rack1"}

    cancelled = await agent.call("job_cancel", job=job_id, key="j-1")
    assert cancelled["ok"], cancelled
    assert cancelled["result"]["job"]["state"] == "cancelled"
    assert cancelled["result"]["changed"] is True
    replay = await agent.call("job_cancel", job=job_id, key="j-1")
    assert replay["result"]["replayed"] is True
    assert replay["result"]["job"]["state"] == "cancelled"

    retried = await agent.call("job_retry", job=job_id, key="j-2")
    assert retried["ok"], retried
    new_id = retried["result"]["job"]["id"]
    assert new_id != job_id and retried["result"]["retry_of"] == job_id
    assert retried["result"]["job"]["inputs"]["_retry_of"] == job_id
    twice = await agent.call("job_retry", job=job_id, key="j-2")
    assert twice["result"]["replayed"] is True and twice["result"]["job"]["id"] == new_id

    events = await events_after(seeded, cursor)
    assert [(e.kind, e.subject, e.data.get("by", {}).get("user")) for e in events][:2] == [
        ("job.cancelled", str(job_id), "erin"), ("job.queued", str(new_id), "erin")]
    # the retry runs at the site, after this agent answered
    assert (await wait_job(seeded, new_id)).state.value == "succeeded"
    async with await Engine.open(seeded, read_only=True) as engine:
        assert len(await engine.recent_jobs()) == 2  # one retry, not two
        kept = (await engine.store.fetchone("SELECT count(*) FROM command_keys"))[0]
    assert kept == 2


async def test_a_build_through_the_agent_is_queued_run_at_the_site_and_keyed(
        seeded, xdg, agents):
    agent = await open_agent(agents, seeded, xdg, extra_env={"USER": "fay"})
    cursor = (await agent.hello())["last_event_id"]
    bad = await agent.call("build", what="floppy", key="b-0")
    assert bad["error"]["kind"] == "bad_input" and "unknown build kind" in bad["error"]["message"]
    other = await agent.call("build", what="ipxe", distributor="rack9", key="b-0")
    assert other["error"]["kind"] in {"bad_input", "not_found"}, other
    assert (await store_facts(seeded))["last_event_id"] == cursor  # refused: nothing written

    built = await agent.call("build", what="ipxe", distributor="rack1", key="b-1")
    assert built["ok"], built
    result = built["result"]
    assert result["cached"] is False and result["artifact"] is None
    assert result["job"]["state"] == "queued" and result["job"]["kind"] == "ipxe"
    done = await wait_job(seeded, result["job"]["id"])
    assert done.state.value == "succeeded", done.error

    again = await agent.call("build", what="ipxe", distributor="rack1", key="b-1")
    assert again["result"] == {**result, "replayed": True}  # the first result, no new job
    cached = await agent.call("build", what="ipxe", distributor="rack1", key="b-2")
    assert cached["result"]["cached"] is True and cached["result"]["job"] is None
    assert cached["result"]["artifact"]["id"] == done.result["artifact"]
    events = await events_after(seeded, cursor)
    queued = [e for e in events if e.kind == "job.queued"]
    assert len(queued) == 1 and queued[0].data["by"]["user"] == "fay"
    assert "by" not in next(e for e in events if e.kind == "job.succeeded").data  # the worker's


# -- bad input --------------------------------------------------------------------------

async def test_bad_input_gets_an_error_frame_and_nothing_is_written(seeded, xdg, agents):
    before = await store_facts(seeded)
    agent = await open_agent(agents, seeded, xdg)
    early = await agent.call("lease", **lease_args("early"))
    assert early["error"]["kind"] == "bad_input" and "hello first" in early["error"]["message"]

    wrong = await agent.call("hello", version="0.1.0", site="rack2")
    assert wrong["error"] == {"kind": "wrong_site",
                              "message": "this agent serves site 'rack1', not 'rack2'"}
    newer = await agent.call("hello", version="9.0.0", site="rack1", protocol=2)
    assert newer["error"]["kind"] == "version"
    assert "speaks site protocol 1" in newer["error"]["message"]
    assert "9.0.0" in newer["error"]["message"]
    await agent.hello()

    cases = [
        (b"garbage\n", "bad_input"),
        (b"\n", "bad_input"),
        (b'{"id": 5, "op": "format_disks"}\n', "unknown_op"),
        (json.dumps({"id": 6, "op": "lease", **lease_args("t"), "site": "rack2"}).encode()
         + b"\n", "wrong_site"),
        (json.dumps({"id": 7, "op": "lease", "mac": MAC, "deployment": 12, "key": "t"}
                    ).encode() + b"\n", "bad_input"),
        (json.dumps({"id": 8, "op": "lease", **lease_args("t", mac="zz:zz")}).encode()
         + b"\n", "bad_input"),
        (json.dumps({"id": 9, "op": "lease", **lease_args("t"), "deployment": "nope"}
                    ).encode() + b"\n", "not_found"),
        (json.dumps({"id": 10, "op": "release", "mac": OTHER_MAC, "wipe": "yes", "key": "t"}
                    ).encode() + b"\n", "bad_input"),
        (b'{"id": 11, "op": "lease", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", "bad_input"),
        (b'{"id": 12, "op": "lease", "mac": "' + b"a" * (MAX_FRAME + 10) + b'"}\n',
         "too_large"),
    ]
    for line, kind in cases:
        writer = asyncio.ensure_future(agent.write(line))
        answer = await agent.reply()
        await writer
        assert answer["ok"] is False and answer["error"]["kind"] == kind, (line[:80], answer)
        assert "\n" not in answer["error"]["message"]
    assert (await agent.call("hello", version="0.1.0", site="rack1"))["ok"]
    assert await store_facts(seeded) == before


async def test_a_frame_cut_by_the_end_of_input_gets_an_error_and_the_agent_exits(
        seeded, xdg, agents):
    agent = await open_agent(agents, seeded, xdg)
    await agent.hello()
    await agent.write(b'{"id": 2, "op": "lease", "mac": "ac:1f')
    agent.proc.stdin.close()
    answer = await agent.reply()
    assert answer["id"] is None and answer["error"]["kind"] == "bad_input"
    assert "truncated frame" in answer["error"]["message"]
    assert await agent.close() == 0
    assert await agent.proc.stdout.read() == b""


def fuzz_lines(rng: random.Random, count: int) -> list[bytes]:
    """Lines no agent may act on: garbage, broken JSON, oversized, deep, and
    requests with fields of the wrong type, size or name."""
    ops = ["hello", "events_since", "follow", "snapshot", "lease", "release", "unfollow", "x"]
    junk = [None, True, -1, 2**70, 1.5, "", "x" * 300, [], {}, [[[]]], "\u0000", "rack2"]
    out = []
    for _ in range(count):
        shape = rng.randrange(7)
        if shape == 0:
            out.append(bytes(rng.choice([b for b in range(256) if b != 10])
                             for _ in range(rng.randrange(1, 200))))
        elif shape == 1:
            whole = json.dumps({"id": rng.randrange(100), "op": rng.choice(ops),
                                "key": "k", "mac": MAC}).encode()
            out.append(whole[:rng.randrange(1, len(whole) - 1)])
        elif shape == 2:
            out.append(b"[" * rng.randrange(17, 3000))
        elif shape == 3:
            out.append(b"z" * (MAX_FRAME + rng.randrange(1, 5000)))
        else:  # an object with one field wrong
            frame = {"id": rng.randrange(100), "op": rng.choice(ops[:6]), **lease_args("f"),
                     "after": 0, "version": "1", "site": "rack1", "wipe": False}
            frame[rng.choice(list(frame))] = rng.choice(junk)
            frame["extra" if rng.random() < 0.5 else "site"] = rng.choice(junk[1:])
            out.append(json.dumps(frame).encode())
    return [line.replace(b"\n", b" ") + b"\n" for line in out]


async def test_fuzzed_frames_each_get_an_error_and_the_agent_still_answers(seeded, xdg,
                                                                          agents):
    before = await store_facts(seeded)
    agent = await open_agent(agents, seeded, xdg)
    await agent.hello()
    lines = fuzz_lines(random.Random(1414), 300)

    async def feed():
        for line in lines:
            await agent.write(line)

    writer = asyncio.ensure_future(feed())
    answers = [await agent.reply(timeout=30) for _ in lines]
    await writer
    assert all(a["ok"] is False and a["error"]["kind"] in ERROR_KINDS for a in answers), [
        a for a in answers if a["ok"] or a["error"]["kind"] not in ERROR_KINDS]
    kinds = {a["error"]["kind"] for a in answers}
    assert {"bad_input", "too_large"} <= kinds
    assert (await agent.call("hello", version="0.1.0", site="rack1"))["ok"]
    assert await agent.close() == 0
    assert await store_facts(seeded) == before


# -- starting ------------------------------------------------------------------------------

def test_an_agent_needs_to_know_its_site(profile_path, xdg):
    base = [sys.executable, "-m", "fleet", "--headless", "--profile", str(profile_path), "agent"]
    cp = subprocess.run(base, env=xdg, capture_output=True, text=True, input="", timeout=60)
    assert cp.returncode == 2 and cp.stdout == ""
    assert cp.stderr.strip() == ("fleet: the profile has 2 sites (rack1, rack2); name this "
                                 "agent's with --site")
    cp = subprocess.run(base + ["--site", "rack9"], env=xdg, capture_output=True, text=True,
                        input="", timeout=60)
    assert cp.returncode == 2
    assert cp.stderr.strip() == "fleet: unknown site 'rack9'; the profile has: rack1, rack2"


def test_requests_from_a_file_get_replies_in_a_file(seeded, xdg, tmp_path):
    requests = tmp_path / "requests"
    requests.write_text(
        '{"id": 1, "op": "hello", "version": "0.1.0", "site": "rack1"}\n'
        'nonsense\n'
        '{"id": 2, "op": "events_since", "after": 1}\n')
    replies = tmp_path / "replies"
    with open(requests, "rb") as stdin, open(replies, "wb") as stdout:
        cp = subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                             str(seeded), "agent", "--site", "rack1"], env=xdg, stdin=stdin,
                            stdout=stdout, stderr=subprocess.PIPE, timeout=60)
    assert cp.returncode == 0, cp.stderr
    frames = [json.loads(line) for line in replies.read_text().splitlines()]
    assert [f["ok"] for f in frames] == [True, False, True]
    assert [e["id"] for e in frames[2]["result"]["events"]] == [2]
    assert os.path.getsize(replies) > 0


def test_an_agent_with_nothing_to_read_exits_at_once(seeded, xdg):
    """stdin on /dev/null: the event loop cannot wait on it (epoll refuses it)."""
    with open(os.devnull, "rb") as nothing:
        cp = subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                             str(seeded), "agent", "--site", "rack1"], env=xdg, stdin=nothing,
                            capture_output=True, timeout=30)
    assert (cp.returncode, cp.stdout, cp.stderr) == (0, b"", b"")
    with open(os.devnull, "wb") as sink:  # and replies into /dev/null are written, not waited on
        cp = subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile",
                             str(seeded), "agent", "--site", "rack1"], env=xdg, stdout=sink,
                            stderr=subprocess.PIPE, timeout=30,
                            input=b'{"id": 1, "op": "hello", "version": "1", "site": "rack1"}\n')
    assert (cp.returncode, cp.stderr) == (0, b"")


async def test_one_key_sent_through_two_agents_at_once_acts_once(seeded, xdg, agents):
    """A console that retried on a second channel while the first attempt was
    still running: one acts, the other gets the first result."""
    a = await open_agent(agents, seeded, xdg)
    b = await open_agent(agents, seeded, xdg)
    await asyncio.gather(a.hello(), b.hello())
    frame = {"id": 1, "op": "lease", **lease_args("twice")}
    await asyncio.gather(a.send(frame), b.send(frame))
    answers = await asyncio.gather(a.reply(), b.reply())
    assert all(r["ok"] for r in answers), answers
    assert sorted(r["result"]["replayed"] for r in answers) == [False, True]
    assert answers[0]["result"]["machine"]["lease_id"] == \
        answers[1]["result"]["machine"]["lease_id"]
    facts = await store_facts(seeded)
    assert facts["leases"] == 1 and facts["keys"] == 1


# -- over a real SSH channel ---------------------------------------------------------------

@pytest.mark.root
async def test_the_agent_over_ssh_knows_the_operators_key(seeded, xdg, agents, sshd):
    folder = sshd["folder"]
    xdg_vars = " ".join(f"{k}={shlex.quote(xdg[k])}" for k in XDG_VARS)
    remote = (f"cd {shlex.quote(str(ROOT))} && env {xdg_vars} "
              + " ".join(shlex.quote(a) for a in agent_argv(seeded)))
    agent = await AgentProcess.spawn(
        ["ssh", "-p", str(sshd["port"]), "-i", str(folder / "operator"),
         "-o", f"UserKnownHostsFile={folder / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "root@127.0.0.1", remote], xdg)
    agents.append(agent)
    hello = await agent.hello()
    expected = {"user": "root", "from": "127.0.0.1", "key": sshd["fingerprint"]}
    assert hello["by"] == expected
    assert (await agent.call("lease", **lease_args("ssh-1")))["ok"]
    events = (await agent.call("events_since", after=hello["last_event_id"]))["result"]["events"]
    assert [e["kind"] for e in events] == ["machine.leased"]
    assert events[0]["data"]["by"] == expected
    assert await agent.close() == 0  # end of input on the channel ends the agent


# -- the console's end: SiteClient ------------------------------------------------------------

def client_of(proc: asyncio.subprocess.Process, site: str = "rack1") -> SiteClient:
    async def write(data: bytes) -> None:
        proc.stdin.write(data)
        await proc.stdin.drain()

    return SiteClient(proc.stdout.read, write, site=site).start()


async def test_the_client_leases_follows_and_reads_refusals(seeded, xdg, agents):
    agent = await open_agent(agents, seeded, xdg)
    client = client_of(agent.proc)
    hello = await client.hello("0.1.0")
    assert hello["site"] == "rack1"
    leased = await client.call("lease", **lease_args("c-1"))
    assert leased["machine"]["state"] == "leased"
    with pytest.raises(SiteError) as refused:
        await client.call("lease", **lease_args("c-2"))
    assert refused.value.kind == "conflict" and "already leased" in refused.value.message

    await client.call("follow", after=hello["last_event_id"] + 1)
    events = client.events()
    cli = subprocess.run([sys.executable, "-m", "fleet", "--headless", "--profile", str(seeded),
                          "lease", OTHER_MAC, "-d", "debian12"], env=xdg, capture_output=True,
                         timeout=60)
    assert cli.returncode == 0, cli.stderr
    event = await asyncio.wait_for(events.__anext__(), 10)
    assert (event["kind"], event["subject"]) == ("machine.leased", OTHER_MAC)
    # calls go on beside the stream
    assert (await client.call("unfollow"))["was_following"] is True

    agent.proc.stdin.close()  # the agent ends: the client says so instead of hanging
    with pytest.raises(ChannelLost, match="ended"):
        await asyncio.wait_for(events.__anext__(), 10)
    with pytest.raises(ChannelLost):
        await client.call("hello", version="0.1.0", site="rack1")
    await client.close()


@pytest.mark.parametrize("says, lost", [
    ("sys.stdout.buffer.write(b'x' * (2 << 20) + b'\\n')", "over the 1048576-byte limit"),
    ("sys.stdout.buffer.write(b'[1, 2]\\n')", "not a JSON object"),
    ("pass", "ended"),
])
async def test_an_agent_that_misbehaves_fails_the_call_not_the_client(says, lost):
    """Not an agent: a process that sends an oversized or foreign frame, or
    ends without a reply."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"import sys; sys.stdin.readline(); {says}; sys.stdout.flush()",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    client = client_of(proc)
    try:
        with pytest.raises(ChannelLost, match=lost.replace("[", r"\[")):
            await asyncio.wait_for(client.hello("0.1.0"), 15)
    finally:
        await client.close()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.mark.root
async def test_the_client_over_an_asyncssh_channel(seeded, xdg, sshd):
    """The way the console will hold a site: an asyncssh connection (host key
    checked against known_hosts) running the agent on a session channel."""
    import asyncssh

    folder = sshd["folder"]
    xdg_vars = " ".join(f"{k}={shlex.quote(xdg[k])}" for k in XDG_VARS)
    remote = (f"cd {shlex.quote(str(ROOT))} && env {xdg_vars} "
              + " ".join(shlex.quote(a) for a in agent_argv(seeded)))
    async with asyncssh.connect("127.0.0.1", port=sshd["port"], username="root",
                                client_keys=[str(folder / "operator")],
                                known_hosts=str(folder / "known_hosts")) as conn:
        proc = await conn.create_process(remote, encoding=None)

        async def write(data: bytes) -> None:
            proc.stdin.write(data)
            await proc.stdin.drain()

        client = SiteClient(proc.stdout.read, write, site="rack1").start()
        hello = await client.hello("0.1.0")
        assert hello["by"]["key"] == sshd["fingerprint"]
        leased = await client.call("lease", **lease_args("over-ssh"))
        assert leased["machine"]["state"] == "leased" and leased["replayed"] is False
        again = await client.call("lease", **lease_args("over-ssh"))
        assert again["replayed"] is True
        proc.stdin.write_eof()
        await asyncio.wait_for(proc.wait(), 15)
        assert proc.exit_status == 0
        await client.close()
    assert (await store_facts(seeded))["leases"] == 1
