"""Hypothesis against a real `fleet --headless agent` process over pipes, on a
real SQLite store: every line that is not a valid request for this site
(garbage, cut JSON, unknown ops, oversized or deeply nested frames, fields of
the wrong type, another site's name) gets one error frame, the agent goes on
answering, and the store is byte for byte what it was (its SQL dump)."""

from __future__ import annotations

import asyncio
import json
import select
import sqlite3
import subprocess
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.engine import Engine
from fleet.sites.protocol import ERROR_KINDS, MAX_DEPTH, MAX_FRAME, OPS

MAC = "ac:1f:6b:00:00:42"
#: one valid request of each op (as this site would take it), to spoil one way
VALID = {
    "hello": {"version": "0.1.0", "site": "rack1"},
    "events_since": {"after": 0},
    "follow": {"after": 0},
    "snapshot": {"after_mac": "00"},
    "lease": {"mac": MAC, "deployment": "debian12", "key": "fz-1"},
    "release": {"mac": MAC, "key": "fz-2"},
    "distributor": {"name": "rack1", "enabled": False, "key": "fz-3"},
    "job_cancel": {"job": 1, "key": "fz-4"},
    "job_retry": {"job": 1, "key": "fz-5"},
    "build": {"what": "ipxe", "key": "fz-6"},
    "unfollow": {},
}
WRITING = ["lease", "release", "distributor", "job_cancel", "job_retry", "build"]
assert set(VALID) == set(OPS)

scalars = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.booleans(),
                    st.text(max_size=20))
containers = st.one_of(st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5),
                                                                        scalars, max_size=3))
#: values of a JSON type each field kind refuses
WRONG = {
    "int": st.one_of(st.text(max_size=10), st.floats(allow_nan=False), st.booleans(),
                     containers),
    "bool": st.one_of(st.integers(), st.text(max_size=10), containers),
    "strs": st.one_of(st.text(max_size=10), st.integers(), st.lists(st.integers(), min_size=1,
                                                                    max_size=3)),
}
WRONG_STR = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), containers)


def line(frame: dict) -> bytes:
    return json.dumps(frame).encode() + b"\n"


@st.composite
def wrong_type(draw) -> bytes:
    op = draw(st.sampled_from(sorted(op for op in OPS if OPS[op])))
    frame = {"id": draw(st.integers(1, 10**6)), "op": op, **VALID[op]}
    field = draw(st.sampled_from(sorted(OPS[op])))
    frame[field] = draw(WRONG.get(OPS[op][field].kind, WRONG_STR))
    return line(frame)


@st.composite
def other_site(draw) -> bytes:
    op = draw(st.sampled_from(WRITING))
    site = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
                .filter(lambda s: s != "rack1"))
    return line({"id": draw(st.integers(1, 10**6)), "op": op, "site": site, **VALID[op]})


@st.composite
def cut(draw) -> bytes:
    op = draw(st.sampled_from(WRITING))
    whole = json.dumps({"id": 1, "op": op, **VALID[op]}).encode()
    return whole[:draw(st.integers(1, len(whole) - 1))] + b"\n"


@st.composite
def deep(draw) -> bytes:
    depth = draw(st.integers(MAX_DEPTH + 1, 4000))
    inner = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return (b'{"id": 3, "op": "lease", "mac": ' + inner[0].encode() * depth + b"1"
            + inner[1].encode() * depth + b"}\n")


@st.composite
def oversized(draw) -> bytes:
    size = draw(st.integers(MAX_FRAME, MAX_FRAME + 4096))
    return b'{"id": 4, "op": "lease", "mac": "' + b"a" * size + b'"}\n'


garbage = st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\n", b" ") + b"\n")
unknown_op = st.builds(lambda op, i: line({"id": i, "op": op}),
                       st.text(max_size=30).filter(lambda op: op not in OPS),
                       st.integers(1, 10**6))
LINES = st.one_of(garbage, cut(), unknown_op, wrong_type(), other_site(), deep(), oversized())


class Agent:
    def __init__(self, profile, env):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet", "--headless", "--profile", str(profile), "agent",
             "--site", "rack1"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def reply(self, timeout: float = 15.0) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"no reply within {timeout} s"
        answer = self.proc.stdout.readline()
        assert answer.endswith(b"\n"), "the agent ended"
        return json.loads(answer)


def dump(path) -> list[str]:
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


async def seed(profile) -> None:
    async with await Engine.open(profile) as engine:
        engine.record_sighting(MAC, stage="firmware")
        await engine.flush_sightings()
        await engine.jobs.submit("ipxe", {"kind": "ipxe"}, claim=False)


def test_fuzzed_lines_each_get_one_error_frame_and_the_store_is_unchanged(profile_path, xdg):
    asyncio.run(seed(profile_path))
    agent = Agent(profile_path, xdg)
    try:
        agent.send(line({"id": 0, "op": "hello", **VALID["hello"]}))
        assert agent.reply()["ok"]
        store = profile_path.parent / "t.db"
        before = dump(store)
        began = time.monotonic()
        seen: set[str] = set()

        @settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(LINES)
        def refused(data: bytes) -> None:
            agent.send(data)
            answer = agent.reply()
            assert answer["ok"] is False, (data[:200], answer)
            assert answer["error"]["kind"] in ERROR_KINDS, answer
            assert "\n" not in answer["error"]["message"]
            seen.add(answer["error"]["kind"])

        refused()
        took = time.monotonic() - began
        print(f"1000 fuzzed lines in {took:.1f} s; error kinds: {sorted(seen)}")
        assert {"bad_input", "unknown_op", "too_large", "wrong_site"} <= seen
        agent.send(line({"id": 1, "op": "events_since", "after": 0}))  # still answering
        assert agent.reply()["result"]["last_id"] == 2
        assert dump(store) == before
        assert took < 30
    finally:
        agent.proc.stdin.close()
        assert agent.proc.wait(15) == 0
