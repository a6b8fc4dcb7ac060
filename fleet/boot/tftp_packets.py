"""TFTP packet codec: pure functions, no I/O.

Covers RFC 1350 (RRQ, WRQ, DATA, ACK, ERROR) and RFC 2347 (OACK and the
option list that follows the mode in a request). Option *semantics* (blksize,
timeout, tsize, windowsize) belong to the server; here an option is just a
name/value pair of strings.

Parsing never raises anything but :class:`PacketError`, whatever the bytes: the
server turns that into ERROR 4 (or drops the datagram) and carries on.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

__all__ = [
    "Opcode",
    "ErrorCode",
    "PacketError",
    "Request",
    "Data",
    "Ack",
    "Error",
    "OAck",
    "Packet",
    "parse_packet",
    "encode_request",
    "encode_rrq",
    "encode_wrq",
    "encode_data",
    "encode_ack",
    "encode_error",
    "encode_oack",
    "MAX_OPTIONS",
    "DEFAULT_BLKSIZE",
]

DEFAULT_BLKSIZE = 512
#: At most this many option pairs are read from a request; the rest are ignored.
MAX_OPTIONS = 64

_HDR = struct.Struct("!HH")
_OP = struct.Struct("!H")


class Opcode(enum.IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(enum.IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_NEGOTIATION = 8  # RFC 2347


class PacketError(ValueError):
    """A datagram that is not a well-formed TFTP packet."""


@dataclass(frozen=True, slots=True)
class Request:
    """RRQ or WRQ.

    ``filename`` is the raw bytes from the wire (the server decides which
    names it accepts); ``mode`` is lower-cased ASCII. ``options`` keeps the
    client's order and spelling of names (``(name, value)`` pairs, first
    occurrence of a name wins, names compared case-insensitively).
    """

    opcode: Opcode
    filename: bytes
    mode: str
    options: tuple[tuple[str, str], ...] = ()
    truncated_options: bool = False

    def option_map(self) -> dict[str, tuple[str, str]]:
        """Lower-cased name -> (name as sent, value)."""
        return {name.lower(): (name, value) for name, value in self.options}


@dataclass(frozen=True, slots=True)
class Data:
    block: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    block: int


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class OAck:
    options: tuple[tuple[str, str], ...] = field(default=())

    def option_map(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.options}


Packet = Request | Data | Ack | Error | OAck


def _ascii(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise PacketError(f"{what} is not ASCII") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise PacketError(f"{what} has control characters")
    return text


def _parse_options(fields: list[bytes]) -> tuple[tuple[tuple[str, str], ...], bool]:
    """Pairs of NUL-terminated strings; a dangling name is ignored."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    truncated = False
    for i in range(0, len(fields) - 1, 2):
        if len(out) >= MAX_OPTIONS:
            truncated = True
            break
        try:
            name = _ascii(fields[i], "option name")
            value = _ascii(fields[i + 1], "option value")
        except PacketError:
            continue  # one bad option does not spoil the request
        key = name.lower()
        if not name or key in seen:
            continue
        seen.add(key)
        out.append((name, value))
    return tuple(out), truncated


def _parse_request(opcode: Opcode, body: bytes) -> Request:
    fields = body.split(b"\0")
    # A well-formed request ends with NUL, so the last split field is empty.
    # Filename and mode must be terminated; an unterminated trailing option
    # field is dropped.
    if len(fields) < 3:
        raise PacketError("request without NUL-terminated filename and mode")
    filename, mode_raw = fields[0], fields[1]
    if not filename:
        raise PacketError("empty filename")
    mode = _ascii(mode_raw, "mode").lower()
    if not mode:
        raise PacketError("empty mode")
    rest = fields[2:-1]  # terminated option strings only
    options, truncated = _parse_options(rest)
    return Request(opcode, filename, mode, options, truncated)


def parse_packet(data: bytes) -> Packet:
    """Decode one datagram; raise :class:`PacketError` if it is not TFTP."""
    if len(data) < 2:
        raise PacketError("short packet")
    (op,) = _OP.unpack_from(data)
    try:
        opcode = Opcode(op)
    except ValueError:
        raise PacketError(f"unknown opcode {op}") from None
    if opcode in (Opcode.RRQ, Opcode.WRQ):
        return _parse_request(opcode, bytes(data[2:]))
    if opcode is Opcode.DATA:
        if len(data) < 4:
            raise PacketError("short DATA")
        return Data(_HDR.unpack_from(data)[1], bytes(data[4:]))
    if opcode is Opcode.ACK:
        if len(data) < 4:
            raise PacketError("short ACK")
        return Ack(_HDR.unpack_from(data)[1])
    if opcode is Opcode.ERROR:
        if len(data) < 4:
            raise PacketError("short ERROR")
        code = _HDR.unpack_from(data)[1]
        msg = bytes(data[4:]).split(b"\0", 1)[0]
        return Error(code, msg.decode("ascii", "replace"))
    # OACK
    fields = bytes(data[2:]).split(b"\0")
    options, _ = _parse_options(fields[:-1])
    return OAck(options)


# -- encoders ---------------------------------------------------------------

def _cstr(value: str | bytes) -> bytes:
    raw = value.encode("ascii") if isinstance(value, str) else bytes(value)
    return raw + b"\0"


def encode_request(
    opcode: Opcode,
    filename: str | bytes,
    mode: str = "octet",
    options: dict[str, str | int] | list[tuple[str, str | int]] | None = None,
) -> bytes:
    if isinstance(filename, str):
        filename = filename.encode("utf-8")
    parts = [_OP.pack(opcode), bytes(filename) + b"\0", _cstr(mode)]
    items = options.items() if isinstance(options, dict) else (options or [])
    for name, value in items:
        parts.append(_cstr(name))
        parts.append(_cstr(str(value)))
    return b"".join(parts)


def encode_rrq(filename: str | bytes, mode: str = "octet", options=None) -> bytes:
    return encode_request(Opcode.RRQ, filename, mode, options)


def encode_wrq(filename: str | bytes, mode: str = "octet", options=None) -> bytes:
    return encode_request(Opcode.WRQ, filename, mode, options)


def encode_data(block: int, payload: bytes) -> bytes:
    return _HDR.pack(Opcode.DATA, block & 0xFFFF) + payload


def encode_ack(block: int) -> bytes:
    return _HDR.pack(Opcode.ACK, block & 0xFFFF)


def encode_error(code: int, message: str) -> bytes:
    msg = message.encode("ascii", "replace")[:400]
    return _HDR.pack(Opcode.ERROR, int(code) & 0xFFFF) + msg + b"\0"


def encode_oack(options: dict[str, str | int] | list[tuple[str, str | int]]) -> bytes:
    items = options.items() if isinstance(options, dict) else options
    parts = [_OP.pack(Opcode.OACK)]
    for name, value in items:
        parts.append(_cstr(name))
        parts.append(_cstr(str(value)))
    return b"".join(parts)
