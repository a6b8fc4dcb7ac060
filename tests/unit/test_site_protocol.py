"""The site agent's wire format: frames read within a bound, every field checked,
and whatever arrives either becomes a request or a ProtocolError of a known kind."""

from __future__ import annotations

import json
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.sites.identity import key_fingerprint_from_auth_file, ssh_identity
from fleet.sites.protocol import (ERROR_KINDS, MAX_DEPTH, MAX_FRAME, FrameReader, ProtocolError,
                                  check_request, encode, parse_frame)


def source(data: bytes, chunk: int = 7, watch=None):
    """A byte source handing out `data` a few bytes at a time."""
    pos = 0

    async def read(n: int) -> bytes:
        nonlocal pos
        assert n > 0
        if watch is not None:
            watch(n)
        out = data[pos:pos + min(n, chunk)]
        pos += len(out)
        return out

    return read


async def drain(reader: FrameReader) -> list:
    """Every line or error until the end of input."""
    out: list = []
    while True:
        try:
            line = await reader.next()
        except ProtocolError as err:
            out.append((err.kind, err.message))
            continue
        if line is None:
            return out
        out.append(line)


# -- framing -------------------------------------------------------------------

async def test_lines_split_across_reads_come_out_whole():
    data = b'{"a":1}\n{"b":2}\r\n\n{"c":3}\n'
    assert await drain(FrameReader(source(data, chunk=3))) == [
        b'{"a":1}', b'{"b":2}\r', b'', b'{"c":3}']


async def test_an_oversized_line_is_skipped_without_holding_it():
    limit = 100
    held = []
    reader = FrameReader(source(b"x" * 1000 + b"\nok\n", chunk=64,
                                watch=lambda n: held.append(len(reader._buffer) + n)),
                         limit=limit)
    out = await drain(reader)
    assert out[0][0] == "too_large" and "100-byte limit" in out[0][1]
    assert out[1:] == [b"ok"]
    assert max(held) <= limit, "the reader asked for more than the limit can hold"


async def test_a_line_of_exactly_the_limit_passes_and_one_more_byte_does_not():
    limit = 50
    fits = b"a" * (limit - 1) + b"\n"
    over = b"b" * limit + b"\n"
    out = await drain(FrameReader(source(fits + over + b"c\n", chunk=1000), limit=limit))
    assert out[0] == b"a" * (limit - 1)
    assert out[1][0] == "too_large"
    assert out[2] == b"c"


async def test_bytes_without_a_newline_at_the_end_are_a_truncated_frame():
    out = await drain(FrameReader(source(b'{"id":1}\n{"id":2,"op":"hel')))
    assert out[0] == b'{"id":1}'
    assert out[1][0] == "bad_input" and "truncated" in out[1][1] and "17 bytes" in out[1][1]
    assert len(out) == 2


async def test_an_oversized_frame_cut_by_the_end_of_input_is_reported_once():
    out = await drain(FrameReader(source(b"y" * 500, chunk=50), limit=100))
    assert [kind for kind, _ in out] == ["too_large"]


def test_encode_refuses_a_frame_over_the_limit():
    assert encode({"id": 1}) == b'{"id":1}\n'
    with pytest.raises(ValueError, match="over the"):
        encode({"blob": "x" * MAX_FRAME})


# -- frames and requests ----------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    (b"\xff\xfe{}", "not UTF-8"),
    (b"garbage", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"text"', "not a JSON object"),
    (b'{"id": NaN, "op": "hello"}', "not JSON"),
    (b'{"id": 1, "id": 2, "op": "hello"}', "duplicate key"),
    (b'{"id": 1, "op": "hello"', "not JSON"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "deeper"),
])
def test_frames_that_are_not_json_objects_are_bad_input(line, message):
    with pytest.raises(ProtocolError) as caught:
        parse_frame(line)
    assert caught.value.kind == "bad_input"
    assert message in caught.value.message


def nested(depth: int) -> bytes:
    return b'{"id":1,"op":"hello","x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_nesting_is_bounded():
    parse_frame(nested(MAX_DEPTH))
    with pytest.raises(ProtocolError) as caught:
        parse_frame(nested(MAX_DEPTH + 1))
    assert caught.value.kind == "bad_input" and caught.value.request_id == 1


def request(**frame):
    return check_request(json.loads(json.dumps(frame)))


def test_a_build_request_takes_script_text_and_lists():
    r = request(id=1, op="build", what="ipxe", script="#!ipxe\n\tchain x\n",
                ipxe_targets=["bin/undionly.kpxe"], key="b-1")
    assert r.args["script"] == "#!ipxe\n\tchain x\n"
    assert r.args["ipxe_targets"] == ["bin/undionly.kpxe"] and r.args["label"] is None


def test_a_valid_request_gets_its_defaults():
    r = request(id=3, op="events_since", after=10)
    assert (r.id, r.op, r.args, r.site) == (3, "events_since", {"after": 10, "limit": 1000},
                                            None)
    r = request(id="a-1", op="lease", mac="52:54:00:00:00:01", deployment="d", key="k:1",
                site="rack1")
    assert r.args["hostname"] is None and r.site == "rack1"


@pytest.mark.parametrize("frame, kind, message", [
    ({"op": "hello"}, "bad_input", "needs an id"),
    ({"id": True, "op": "hello"}, "bad_input", "needs an id"),
    ({"id": 2**60, "op": "hello"}, "bad_input", "needs an id"),
    ({"id": "x" * 129, "op": "hello"}, "bad_input", "needs an id"),
    ({"id": [1], "op": "hello"}, "bad_input", "needs an id"),
    ({"id": 1}, "bad_input", "needs an op"),
    ({"id": 1, "op": 5}, "bad_input", "needs an op"),
    ({"id": 1, "op": "format_disk"}, "unknown_op", "unknown op 'format_disk'"),
    ({"id": 1, "op": "hello", "site": "r"}, "bad_input", "hello needs version"),
    ({"id": 1, "op": "hello", "version": 1, "site": "r"}, "bad_input", "must be a string"),
    ({"id": 1, "op": "hello", "version": "1", "site": "../etc"}, "bad_input", "must be a name"),
    ({"id": 1, "op": "hello", "version": "1", "site": "r", "protocol": "1"}, "bad_input",
     "must be an integer"),
    ({"id": 1, "op": "events_since", "after": True}, "bad_input", "must be an integer"),
    ({"id": 1, "op": "events_since", "after": -1}, "bad_input", "from 0"),
    ({"id": 1, "op": "events_since", "after": 0, "limit": 5001}, "bad_input", "to 5000"),
    ({"id": 1, "op": "events_since", "after": 0, "limit": 1.5}, "bad_input", "integer"),
    ({"id": 1, "op": "follow", "after": 0, "extra": 1}, "bad_input", "unknown field 'extra'"),
    ({"id": 1, "op": "lease", "mac": "m", "deployment": "d"}, "bad_input", "needs key"),
    ({"id": 1, "op": "lease", "mac": "m", "deployment": "d", "key": "a b"}, "bad_input",
     "key must be"),
    ({"id": 1, "op": "lease", "mac": "m" * 65, "deployment": "d", "key": "k"}, "bad_input",
     "longer than 64"),
    ({"id": 1, "op": "lease", "mac": "m\n", "deployment": "d", "key": "k"}, "bad_input",
     "control characters"),
    ({"id": 1, "op": "release", "mac": "m", "wipe": 1, "key": "k"}, "bad_input",
     "true or false"),
    ({"id": 1, "op": "unfollow", "site": 7}, "bad_input", "site must be a string"),
    ({"id": 1, "op": "distributor", "name": "rack1", "key": "k"}, "bad_input",
     "needs enabled"),
    ({"id": 1, "op": "distributor", "name": "rack1", "enabled": "on", "key": "k"},
     "bad_input", "true or false"),
    ({"id": 1, "op": "job_cancel", "job": 0, "key": "k"}, "bad_input", "from 1"),
    ({"id": 1, "op": "job_retry", "job": "7", "key": "k"}, "bad_input", "integer"),
    ({"id": 1, "op": "build", "what": "iso", "script": "#!ipxe\n\x1b[2J", "key": "k"},
     "bad_input", "control characters other than newline"),
    ({"id": 1, "op": "build", "what": "iso", "script": "x" * 70000, "key": "k"},
     "bad_input", "longer than 65536"),
    ({"id": 1, "op": "build", "what": "iso", "wiper_modules": "e1000", "key": "k"},
     "bad_input", "must be a list of strings"),
    ({"id": 1, "op": "build", "what": "iso", "ipxe_targets": ["a", 3], "key": "k"},
     "bad_input", "ipxe_targets[1] must be a string"),
    ({"id": 1, "op": "build", "what": "iso", "wiper_modules": ["m"] * 257, "key": "k"},
     "bad_input", "more than 256 items"),
])
def test_every_field_is_checked(frame, kind, message):
    with pytest.raises(ProtocolError) as caught:
        request(**frame)
    assert caught.value.kind == kind
    assert message in caught.value.message
    if type(frame.get("id")) is int and frame["id"] == 1:
        assert caught.value.request_id == 1  # echoed, so the client can match it


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(["id", "op", "after", "limit", "key", "mac", "site",
                                     "version", "wipe", "deployment"]),
                    json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
))
def test_any_line_is_a_request_or_a_protocol_error(line):
    try:
        check_request(parse_frame(line))
    except ProtocolError as err:
        assert err.kind in ERROR_KINDS
        assert "\n" not in err.message


# -- who is on the channel -----------------------------------------------------------

def test_the_key_fingerprint_is_the_one_ssh_keygen_prints(tmp_path):
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    expected = subprocess.run(["ssh-keygen", "-lf", str(key) + ".pub"], check=True,
                              capture_output=True, text=True).stdout.split()[1]
    kind, blob = (tmp_path / "k.pub").read_text().split()[:2]
    auth = tmp_path / "auth"
    auth.write_text(f"password\npublickey {kind} {blob}\n")
    assert key_fingerprint_from_auth_file(str(auth)) == expected
    by = ssh_identity({"USER": "alice", "SSH_CONNECTION": "10.0.0.9 50000 10.0.0.1 22",
                       "SSH_USER_AUTH": str(auth)})
    assert by == {"user": "alice", "from": "10.0.0.9", "key": expected}


def test_identity_without_ssh_is_the_user_alone(tmp_path):
    assert ssh_identity({"USER": "bob"}) == {"user": "bob"}
    assert ssh_identity({"USER": "bob", "SSH_USER_AUTH": str(tmp_path / "gone")}) == {
        "user": "bob"}


# -- layers -----------------------------------------------------------------------------

@pytest.mark.parametrize("module, line", [
    # the wire format reaching into the store: the console's side could not use it
    ("fleet/sites/protocol.py", "import fleet.store.db"),
    # the agent reaching up into the CLI that runs it
    ("fleet/sites/agent.py", "import fleet.headless.output"),
])
def test_the_site_modules_keep_their_layers(tmp_path, module, line):
    from support.layers import copy_of_project, lint

    tree = copy_of_project(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # a deliberate back-edge\n")
    cp = lint(tree)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "fleet layers BROKEN" in cp.stdout
    assert module.removesuffix(".py").replace("/", ".") in cp.stdout
