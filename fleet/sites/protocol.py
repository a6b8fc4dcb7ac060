"""The site agent's wire format: JSON lines on a byte stream (an SSH channel's
stdin/stdout), one UTF-8 JSON object per line.

    request   {"id": 7, "op": "lease", "mac": "...", "deployment": "...", "key": "..."}
    reply     {"id": 7, "ok": true, "result": {...}}
              {"id": 7, "ok": false, "error": {"kind": "conflict", "message": "one line"}}
    stream    {"stream": "events", "event": {...}}

Every line gets exactly one reply; a line that cannot be read as a request gets
an error reply with `"id": null` when its id could not be read either.

Hand-written on purpose: what is needed is a newline-framed exchange over a
pipe that SSH already authenticates and encrypts, with hard bounds on what a
peer can make the reader hold (frame size, nesting) and stream frames beside
the replies. JSON-RPC libraries bring their own framing (Content-Length
headers) or transports and a dispatch layer, and none bounds a frame while
reading it; the whole format is the two classes below.

Pure code: no engine, no store (the agent above and the console's client both
use it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

#: the protocol's major version; a peer speaking another one is refused
PROTOCOL = 1
#: the longest frame either side reads or writes, newline included
MAX_FRAME = 1 << 20
#: how deep objects and arrays may nest in a frame
MAX_DEPTH = 16
#: a reply leaves this much of MAX_FRAME for the id and the envelope
ENVELOPE_SLACK = 1024

ERROR_KINDS = frozenset({"bad_input", "unknown_op", "too_large", "wrong_site", "version",
                         "environment", "conflict", "not_found", "lagging"})


class ProtocolError(Exception):
    """A request that gets an error reply. `request_id` is echoed when known."""

    def __init__(self, kind: str, message: str, request_id: Any = None):
        assert kind in ERROR_KINDS, kind
        super().__init__(message)
        self.kind = kind
        self.message = one_line(message)
        self.request_id = request_id


def one_line(text: str, limit: int = 2000) -> str:
    """An error message as one bounded line (a peer's text may hold anything)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- encoding ------------------------------------------------------------------

def encode(frame: dict[str, Any]) -> bytes:
    """One frame as a line. A frame over MAX_FRAME is a bug of the writer (replies
    are built to fit), so it raises ValueError rather than send what the peer
    would refuse."""
    line = json.dumps(frame, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode() + b"\n"
    if len(line) > MAX_FRAME:
        raise ValueError(f"frame of {len(line)} bytes is over the {MAX_FRAME}-byte limit")
    return line


def encoded_size(value: Any) -> int:
    """Bytes `value` takes inside a frame (to fill a reply up to the limit)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def reply(request_id: Any, result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error_reply(err: ProtocolError) -> dict[str, Any]:
    return {"id": err.request_id, "ok": False,
            "error": {"kind": err.kind, "message": err.message}}


def stream_frame(stream: str, **fields: Any) -> dict[str, Any]:
    return {"stream": stream, **fields}


# -- reading frames ------------------------------------------------------------

#: reads up to n bytes; b"" at the end of input (StreamReader.read fits)
ReadChunk = Callable[[int], Awaitable[bytes]]

_CHUNK = 64 * 1024


class FrameReader:
    """Lines from a byte source, never holding more than MAX_FRAME bytes of one.

    `next()` returns the next line's bytes (without the newline), None at the
    end of input, or raises ProtocolError for a line over the limit (consumed
    up to its newline, so the next call reads the line after it) or for bytes
    left without a newline at the end of input."""

    def __init__(self, read: ReadChunk, limit: int = MAX_FRAME):
        self._read = read
        self._limit = limit
        self._buffer = bytearray()
        self._eof = False

    async def next(self) -> bytes | None:
        discarding = False
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[:newline + 1]
                if discarding:
                    raise ProtocolError("too_large", self._too_large())
                return line
            if len(self._buffer) >= self._limit:  # the newline cannot fit any more
                discarding = True
                self._buffer.clear()
            if self._eof:
                if discarding:
                    raise ProtocolError("too_large", self._too_large() + " (input ended)")
                if self._buffer:
                    size = len(self._buffer)
                    self._buffer.clear()
                    raise ProtocolError(
                        "bad_input", f"truncated frame: input ended after {size} bytes "
                                     "without a newline")
                return None
            want = min(_CHUNK, self._limit - len(self._buffer))
            chunk = await self._read(want)
            if not chunk:
                self._eof = True
            self._buffer += chunk

    def _too_large(self) -> str:
        return f"frame over the {self._limit}-byte limit; it was skipped"


# -- decoding and checking requests ----------------------------------------------

def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """How deep containers nest in a parsed value (iterative: no recursion limit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        todo.extend((child, level + 1) for child in children)
    return deepest


def parse_frame(line: bytes) -> dict[str, Any]:
    """One line as a JSON object; ProtocolError("bad_input") for anything else."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError("bad_input", f"frame is not UTF-8 (byte {err.start})") from None
    if text.endswith("\r"):
        text = text[:-1]
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates,
                           parse_constant=_no_constants)
    except RecursionError:
        raise ProtocolError("bad_input", f"frame nests deeper than {MAX_DEPTH}") from None
    except ValueError as err:  # JSONDecodeError is a ValueError
        raise ProtocolError("bad_input", f"frame is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_input", "frame is not a JSON object")
    if _depth(value) > MAX_DEPTH:
        raise ProtocolError("bad_input", f"frame nests deeper than {MAX_DEPTH}",
                            _id_or_none(value))
    return value


# -- fields ---------------------------------------------------------------------

MAX_INT = 2**53 - 1  # what every JSON peer reads exactly
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True)
class Field:
    """One request field: its JSON type, bounds, and whether it must be there."""

    kind: str  # "int", "str", "bool", "name" (a site name), "key" (idempotency key),
    #            "text" (lines: a script), "strs" (a list of "str")
    required: bool = False
    low: int = 0
    high: int = MAX_INT
    max_len: int = 256
    default: Any = None
    max_items: int = 32

    def check(self, name: str, value: Any) -> Any:
        if self.kind == "strs":
            if not isinstance(value, list):
                raise ValueError(f"{name} must be a list of strings")
            if len(value) > self.max_items:
                raise ValueError(f"{name} has more than {self.max_items} items")
            item = Field("str", max_len=self.max_len)
            return [item.check(f"{name}[{i}]", v) for i, v in enumerate(value)]
        if self.kind == "text":
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            if len(value) > self.max_len:
                raise ValueError(f"{name} is longer than {self.max_len} characters")
            if not value.replace("\n", "").replace("\t", "").isprintable():
                raise ValueError(f"{name} holds control characters other than newline and tab")
            return value
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer")
            if not self.low <= value <= self.high:
                raise ValueError(f"{name} must be from {self.low} to {self.high}")
        elif self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
        else:
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            if self.kind == "name" and not _NAME.fullmatch(value):
                raise ValueError(f"{name} must be a name of letters, digits, '.', '_', '-' "
                                 "(at most 64)")
            if self.kind == "key" and not _KEY.fullmatch(value):
                raise ValueError(f"{name} must be 1 to 128 of letters, digits, '.', '_', "
                                 "':', '-'")
            if len(value) > self.max_len:
                raise ValueError(f"{name} is longer than {self.max_len} characters")
            if not value.isprintable():
                raise ValueError(f"{name} holds control characters")
        return value


#: the ops and their fields (besides "id", "op" and the optional "site" every
#: request may carry: a request naming another site is refused)
OPS: dict[str, dict[str, Field]] = {
    "hello": {"version": Field("str", required=True, max_len=64),
              "site": Field("name", required=True),
              "protocol": Field("int", high=1000, default=PROTOCOL)},
    "events_since": {"after": Field("int", required=True),
                     "limit": Field("int", low=1, high=5000, default=1000)},
    "follow": {"after": Field("int", required=True)},
    "unfollow": {},
    "snapshot": {"after_mac": Field("str", max_len=64),
                 "after_node": Field("str", max_len=255),
                 "after_job": Field("int")},
    "lease": {"mac": Field("str", required=True, max_len=64),
              "deployment": Field("str", required=True, max_len=128),
              "hostname": Field("str", max_len=253),
              "address": Field("str", max_len=64),
              "key": Field("key", required=True)},
    "release": {"mac": Field("str", required=True, max_len=64),
                "wipe": Field("bool", default=False),
                "key": Field("key", required=True)},
    "distributor": {"name": Field("name", required=True),
                    "enabled": Field("bool", required=True),
                    "key": Field("key", required=True)},
    # the job's id is `job`: a request's `id` is the request's own
    "job_cancel": {"job": Field("int", required=True, low=1),
                   "key": Field("key", required=True)},
    "job_retry": {"job": Field("int", required=True, low=1),
                  "key": Field("key", required=True)},
    # what `fleet --headless build` takes, with the files' texts instead of their
    # paths (the paths that remain are on the site host)
    "build": {"what": Field("str", required=True, max_len=16),
              "label": Field("str", max_len=32),
              "distributor": Field("name"),
              "script": Field("text", max_len=64 * 1024),
              "chain_url": Field("str", max_len=2048),
              "ipxe_dir": Field("str", max_len=4096),
              "ipxe_src": Field("str", max_len=4096),
              "ipxe_targets": Field("strs", max_len=256),
              "grub_cfg": Field("text", max_len=64 * 1024),
              "wiper_root": Field("str", max_len=4096),
              "wiper_modules": Field("strs", max_len=64, max_items=256),
              "key": Field("key", required=True)},
}

_SITE = Field("name")


@dataclass(frozen=True)
class Request:
    id: Any
    op: str
    args: dict[str, Any]  # every field of the op, defaults filled in
    site: str | None = None


def _id_or_none(frame: dict[str, Any]) -> Any:
    """The frame's id when it is a valid one (to echo it in an error)."""
    value = frame.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and -MAX_INT <= value <= MAX_INT:
        return value
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
        return value
    return None


def check_request(frame: dict[str, Any]) -> Request:
    """A parsed frame as a Request, every field checked; ProtocolError if not."""
    request_id = _id_or_none(frame)
    if "id" not in frame or request_id is None:
        raise ProtocolError("bad_input", "request needs an id: an integer or a string "
                                         "of at most 128 characters")
    op = frame.get("op")
    if not isinstance(op, str):
        raise ProtocolError("bad_input", "request needs an op (a string)", request_id)
    fields = OPS.get(op)
    if fields is None:
        raise ProtocolError("unknown_op", f"unknown op {one_line(op, 40)!r}; known: "
                            f"{', '.join(OPS)}", request_id)
    args: dict[str, Any] = {}
    try:
        for name in frame:
            if name not in fields and name not in ("id", "op", "site"):
                raise ValueError(f"unknown field {one_line(name, 40)!r} for {op}")
        for name, spec in fields.items():
            if name in frame and frame[name] is not None:
                args[name] = spec.check(name, frame[name])
            elif spec.required:
                raise ValueError(f"{op} needs {name}")
            else:
                args[name] = spec.default
        site = frame.get("site")
        if site is not None:
            _SITE.check("site", site)
    except ValueError as err:
        raise ProtocolError("bad_input", str(err), request_id) from None
    return Request(request_id, op, args, site)
