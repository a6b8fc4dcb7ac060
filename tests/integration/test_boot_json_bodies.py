"""Hostile JSON bodies against the real HTTP service: `/api/callhome` and
`/api/wiped` answer every body under the size limit with a 4xx, never a 500,
and the service goes on answering."""

from __future__ import annotations

import json
import random
import time

import pytest

from fleet.boot.http import MAX_BODY
from fleet.boot.jsonbody import MAX_DEPTH
from support.boot_lab import close_lab, open_lab

ENDPOINTS = ("/api/callhome", "/api/wiped")
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def lab(tmp_path, xdg):
    lab = await open_lab(tmp_path)
    yield lab
    await close_lab(lab)


def deep(depth: int, opener: str = "[", closer: str = "]", closed: bool = True) -> bytes:
    return (opener * depth + ("1" + closer * depth if closed else "")).encode()


def fuzz_bodies(seed: int, count: int) -> list[bytes]:
    """Bodies a careless or hostile client sends: deep nesting of every kind,
    brackets inside strings and escapes, truncated and corrupted JSON, bytes."""
    rnd = random.Random(seed)
    valid = json.dumps({"token": "1.abc", "hostname": "web7", "address": "10.0.0.5",
                        "host_keys": ["ssh-ed25519 AAAA"], "disks": ["vda"]}).encode()
    out = [deep(MAX_BODY // 2 - 8), deep(MAX_BODY - 8, closed=False),
           ('{"a":' * (MAX_BODY // 6)).encode(), deep(MAX_DEPTH + 1),
           ('{"token": [' * 2000 + '"x"' + "]}" * 2000).encode(),
           b'"' + b'\\"' * (MAX_BODY // 2 - 2), b'{"token": "' + b"[" * 60000 + b'"}',
           b"", b"\xff\xfe", b"null", b"[]", b"1e999999", b"-", valid[:-1]]
    for _ in range(count):
        kind = rnd.randrange(5)
        if kind == 0:  # mixed nesting, sometimes closed
            depth = rnd.randrange(MAX_DEPTH, MAX_BODY // 3)
            opens = "".join(rnd.choice('[{') if i % 2 else "[" for i in range(depth))
            body = opens.replace("{", '{"k":').encode()[:MAX_BODY - 16]
        elif kind == 1:  # a valid body cut short
            body = valid[:rnd.randrange(len(valid))]
        elif kind == 2:  # a valid body with bytes flipped
            raw = bytearray(valid)
            for _ in range(rnd.randrange(1, 8)):
                raw[rnd.randrange(len(raw))] = rnd.randrange(256)
            body = bytes(raw)
        elif kind == 3:  # random bytes
            body = rnd.randbytes(rnd.randrange(1, 4096))
        else:  # brackets and quotes thrown together
            body = "".join(rnd.choice('[]{}",:\\1a ') for _ in range(rnd.randrange(1, 20000)))
            body = body.encode()
        out.append(body)
    return out


async def test_hostile_bodies_are_4xx_never_500(lab):
    bodies = fuzz_bodies(seed=1302, count=120)
    assert all(len(b) <= MAX_BODY for b in bodies)
    t0 = time.monotonic()
    for path in ENDPOINTS:
        for body in bodies:
            r = await lab.client.post(path, content=body, headers=JSON)
            assert 400 <= r.status_code < 500, (path, body[:60], r.status_code, r.text)
    took = time.monotonic() - t0
    print(f"{2 * len(bodies)} hostile bodies in {took:.2f}s")
    assert (await lab.client.get("/healthz")).text == "ok\n"


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_deep_nesting_under_the_limit_is_a_400_saying_so(lab, path):
    r = await lab.client.post(path, content=deep(30000), headers=JSON)
    assert r.status_code == 400, r.text
    r = await lab.client.post(path, content=b'{"token": ', headers=JSON)
    assert r.status_code == 400, r.text


async def test_callhome_says_why_a_deep_body_is_refused(lab):
    r = await lab.client.post("/api/callhome", content=deep(30000), headers=JSON)
    assert r.status_code == 400 and f"deeper than {MAX_DEPTH} levels" in r.text, r.text
    [invalid] = await lab.events_of("callhome.invalid")
    assert "deeper than" in invalid.data["reason"]


async def test_nesting_within_the_limit_still_reaches_the_checks(lab):
    # a bracket-heavy string is not nesting: the call-home's own checks answer
    body = {"token": "1.a", "hostname": "web7", "host_keys": ["ssh-foo " + "[" * 5000]}
    r = await lab.client.post("/api/callhome", json=body)
    assert r.status_code == 400 and "unsupported key type" in r.text, r.text
