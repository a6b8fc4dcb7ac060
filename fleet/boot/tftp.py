"""Read-only asyncio TFTP server for network boot.

Protocols: RFC 1350 (lockstep, 512-byte blocks), RFC 2347 (option negotiation;
the OACK echoes only the options accepted, in the client's order and spelling),
RFC 2348 blksize (8..65464, clamped to ``max_blksize``, default 1468 so a block
fits a 1500-byte MTU), RFC 2349 timeout (1..255 s) and tsize (always answered
with the real size when asked), RFC 7440 windowsize (clamped to
``max_windowsize``). Block numbers roll over from 65535 to 0.

Why hand-written rather than a PyPI package (checked 2026-11, see
shared/notes/boot-facts.md for the throughput figures):

- py3tftp 1.3.0 (last release 2021-05) is asyncio-native but OACKs
  ``timeout='1.0'``, which strict clients reject; 7.8 MiB/s lockstep.
- tftpy 0.8.7 is threaded and synchronous (14.5 MiB/s); fbtftp and pypxe are
  threaded/forking too.
- ``tftp`` 0.2.1 (2026-10, "Development Status :: 3 - Alpha") has an asyncio
  server (12.7 MiB/s lockstep, 101 MiB/s at windowsize 16) but is ~60 modules
  (CLI, relay, capture decoder) with its own ``netimps`` dependency and its own
  backend/policy model: it would be a new runtime dependency, and we still need
  our own resolver hook, path policy, session cap and events around it.

So this module is ~one file plus a pure codec (:mod:`fleet.boot.tftp_packets`),
with no dependency beyond the standard library. It drives plain non-blocking
sockets with ``loop.add_reader`` (no transport/protocol objects, no task per
session or per packet): an ACK is handled and the next window sent inside the
read callback.

Behaviour worth knowing:

- **Read-only.** WRQ gets ERROR 2. Unknown opcodes and malformed requests get
  ERROR 4; stray DATA/ACK/OACK/ERROR on the listening port and anything other
  than ACK/ERROR on a session socket are dropped. Nothing a client sends can
  raise out of the server.
- **Sessions.** Each transfer gets its own UDP socket (a new server TID) bound
  to the local address the request arrived on (IP_PKTINFO when the listener is
  bound to a wildcard, so replies leave from the address the client used) and
  ``connect()``-ed to the client, so the kernel filters other sources.
  Retransmission happens only on timeout (per session: ``timeout`` or the
  client's ``timeout`` option), never on a duplicate ACK (Sorcerer's
  Apprentice); after ``retries`` timeouts in a row the session is dropped. An
  ERROR from the client (OVMF aborts its first, tsize-only, transfer this way)
  or an ICMP port-unreachable ends the session at once. Beyond
  ``max_sessions`` concurrent sessions, or ``max_per_client`` from one client
  address, a request gets ERROR 0 "server busy": one host flooding RRQs it
  never acknowledges holds at most its own few slots. Until the client
  acknowledges something, a session retransmits at the server's ``timeout``
  (or the client's shorter one) and ends after ``unacked_seconds``; after
  that, any silence longer than ``idle_seconds`` ends it whatever ``timeout``
  option the client asked for (up to 255 s times the retries otherwise).
  A second RRQ from a client address/port that already has a session is taken
  as a retransmitted request and ignored when it is identical and the session
  is alive (not past its first packet, or ACKed within the last timeout);
  otherwise the old session is dropped and the new request served. Refusals
  (ERROR 1/2/4, busy) go out from the listening socket to the client's port;
  no session socket is made for them. A resolver that raises anything but
  :class:`Refused` gets the client ERROR 0 and a logged traceback.
- **Windows** (RFC 7440): a window is read with one ``pread`` and sent in one
  loop. An ACK for the last block of the window moves on; an ACK for an earlier
  block of the window resumes right after it; an ACK outside the window is
  ignored. A timeout resends the window from the first unacknowledged block.
- **File names.** Refused with ERROR 2 (reason logged and reported as a
  "refused" event): longer than 255 bytes, not UTF-8, ASCII control characters
  (NUL included), any ``..`` component. Backslashes are treated as path
  separators (so ``..\\..\\x`` is a ``..`` traversal and ``boot\\pxe.0`` means
  ``boot/pxe.0``). Leading slashes are stripped: ``/pxelinux.0`` (which many
  firmwares send) is ``pxelinux.0`` under the root. Symlinks inside the root
  are followed only when the result stays inside the root; the opened file is
  checked again through ``/proc/self/fd``; only regular files are served
  (opened with O_NONBLOCK, so a FIFO cannot stall the loop). A missing file is
  answered at once with ERROR 1 (iPXE EFI probes ``autoexec.ipxe`` first).
- **Resolver.** ``resolver(name, client) -> FileSource | None`` is called with
  the already-sanitized relative name, on the event loop (keep it quick, read
  an in-memory view). It may raise :class:`Refused` to answer with a given
  error. ``None`` falls back to ``root`` when one is set, else ERROR 1.
  Paths a resolver returns are trusted (not confined to the root).
- **Modes.** ``octet`` as is. ``netascii`` is converted (LF -> CR LF,
  CR -> CR NUL) in memory, for files up to ``netascii_max`` bytes (16 MiB;
  larger ones get ERROR 2); tsize then reports the file's size on the server,
  which is what the client ends up with after decoding (RFC 2349). ``mail``
  and anything else get ERROR 4.
- **Events.** ``on_event(kind, **fields)`` with kinds ``transfer-start``,
  ``transfer-done`` (bytes, seconds, blksize, windowsize, ...),
  ``transfer-failed`` (reason; ``client_abort=True`` when the client sent
  ERROR) and ``refused`` (code, reason). An exception in the callback is
  logged and swallowed. File contents are never logged.

Local file reads are blocking ``pread`` calls on the event loop: boot files
sit in the page cache, and a thread hop per window would cost more than the
read.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleet.boot.tftp_packets import (
    ErrorCode,
    Opcode,
    PacketError,
    Request,
    encode_error,
    encode_oack,
    parse_packet,
)

__all__ = [
    "TftpServer",
    "FileSource",
    "Refused",
    "Resolver",
    "sanitize_filename",
    "netascii_encode",
]

log = logging.getLogger("fleet.boot.tftp")

MAX_NAME_BYTES = 255
BLKSIZE_MIN = 8
BLKSIZE_MAX = 65464
WINDOWSIZE_MAX = 65535
DEFAULT_NETASCII_MAX = 16 * 1024 * 1024

_DATA_HDR = struct.Struct("!HH")
_ACK_HDR = struct.Struct("!HH")
_RECV_SIZE = 65536
_DRAIN = 64  # datagrams handled per readiness callback before yielding
LISTENER_RCVBUF = 4 * 1024 * 1024  # see _grow_receive_buffer
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

# Linux constants the socket module of 3.11 lacks.
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class Refused(Exception):
    """Raised (by the name policy or a resolver) to refuse a request."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = int(code)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FileSource:
    """What a resolver hands back: a file path or the bytes themselves."""

    path: Path | str | None = None
    data: bytes | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("FileSource needs exactly one of path= or data=")

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        return os.stat(self.path).st_size  # type: ignore[arg-type]


Resolver = Callable[[str, tuple[str, int]], "FileSource | None"]
EventCallback = Callable[..., None]


def sanitize_filename(raw: bytes | str) -> str:
    """Turn a requested name into a safe relative path, or raise :class:`Refused`."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_NAME_BYTES:
        raise Refused(ErrorCode.ACCESS_VIOLATION, f"file name longer than {MAX_NAME_BYTES} bytes")
    if b"\0" in raw:
        raise Refused(ErrorCode.ACCESS_VIOLATION, "NUL byte in file name")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(ErrorCode.ACCESS_VIOLATION, "file name is not UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise Refused(ErrorCode.ACCESS_VIOLATION, "control character in file name")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused(ErrorCode.ACCESS_VIOLATION, "'..' in file name")
    if not parts:
        raise Refused(ErrorCode.FILE_NOT_FOUND, "empty file name")
    return "/".join(parts)


def netascii_encode(data: bytes) -> bytes:
    """RFC 764 netascii as TFTP uses it: CR -> CR NUL, then LF -> CR LF."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


# -- readers ----------------------------------------------------------------

class _FdReader:
    __slots__ = ("fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        out = os.pread(self.fd, length, offset)
        if len(out) < length:  # rare: short read without EOF, or the file shrank
            parts = [out]
            got = len(out)
            while got < length:
                more = os.pread(self.fd, length - got, offset + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            out = b"".join(parts)
        return out

    def read_all(self) -> bytes:
        return self.read(0, self.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _BytesReader:
    __slots__ = ("data", "size")

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.size = len(data)

    def read(self, offset: int, length: int) -> bytes | memoryview:
        return self.data[offset:offset + length]

    def read_all(self) -> bytes:
        return bytes(self.data)

    def close(self) -> None:
        pass


def _open_regular(path: str, flags: int = _OPEN_FLAGS) -> _FdReader:
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise Refused(ErrorCode.FILE_NOT_FOUND, "file not found") from None
    except PermissionError:
        raise Refused(ErrorCode.ACCESS_VIOLATION, "permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(ErrorCode.ACCESS_VIOLATION, "symlink changed while opening") from None
        raise Refused(ErrorCode.ACCESS_VIOLATION, f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise Refused(ErrorCode.FILE_NOT_FOUND, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise Refused(ErrorCode.ACCESS_VIOLATION, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return _FdReader(fd, st.st_size)


# -- sessions ---------------------------------------------------------------

_OACK_PHASE = 0
_DATA_PHASE = 1


class _Session:
    """One read transfer on its own socket; driven entirely by callbacks."""

    __slots__ = (
        "server", "loop", "key", "client", "request", "name", "reader", "size",
        "blksize", "window", "timeout", "oack", "sock", "fd", "phase", "acked",
        "sent_hi", "last_block", "deadline", "timer", "tries", "closed",
        "started", "retransmits", "duplicate_acks", "mode", "last_progress",
    )

    def __init__(self, server: "TftpServer", key, client, request: Request, name: str,
                 reader, blksize: int, window: int, timeout: float,
                 oack: list[tuple[str, str]] | None) -> None:
        self.server = server
        self.loop = server._loop
        self.key = key
        self.client = client
        self.request = request
        self.name = name
        self.reader = reader
        self.size = reader.size
        self.blksize = blksize
        self.window = window
        self.timeout = timeout
        self.oack = oack
        self.mode = request.mode
        self.sock: socket.socket | None = None
        self.fd = -1
        self.phase = _OACK_PHASE if oack else _DATA_PHASE
        self.acked = 0
        self.sent_hi = 0
        self.last_block = self.size // blksize + 1  # the short (maybe empty) one
        self.deadline = 0.0
        self.last_progress = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.tries = 0
        self.closed = False
        self.started = time.monotonic()
        self.retransmits = 0
        self.duplicate_acks = 0

    @property
    def progressed(self) -> bool:
        return self.acked > 0 or (self.phase == _DATA_PHASE and self.oack is not None)

    def takes_duplicate(self, request: Request) -> bool:
        """Is ``request`` (same client address and port) a retransmission of ours?

        Identical, and either we have not moved past the first packet or the
        client ACKed within the last timeout: a late duplicate RRQ must not
        kill a live transfer. A client that restarted the same request after
        going silent for a timeout, or asks for something else, gets a new
        session instead.
        """
        if request != self.request:
            return False
        return not self.progressed or self.loop.time() - self.last_progress < self.timeout

    # lifecycle
    def open(self, local: tuple) -> None:
        family = self.server._family
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(local)
            sock.connect(self.client)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.fd = sock.fileno()
        self.loop.add_reader(self.fd, self._on_readable)
        self.last_progress = self.loop.time()
        self.deadline = self.last_progress + self._interval()
        self.timer = self.loop.call_at(self.deadline, self._on_timer)
        self._send_first()

    def _interval(self) -> float:
        """Seconds before a retransmission: the client's timeout once it has
        acknowledged something, the shorter of its and ours before."""
        if self.progressed:
            return self.timeout
        return min(self.timeout, self.server.timeout)

    def _give_up_at(self) -> float:
        server = self.server
        silence = server.idle_seconds if self.progressed else server.unacked_seconds
        return self.last_progress + silence

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sock is not None:
            try:
                self.loop.remove_reader(self.fd)
            except Exception:  # loop already closed
                pass
            self.sock.close()
            self.sock = None
        self.reader.close()
        self.server._release(self)

    def _finish(self) -> None:
        seconds = time.monotonic() - self.started
        self.close()
        self.server._emit(
            "transfer-done", client=self.client, filename=self.name, bytes=self.size,
            seconds=round(seconds, 6), blksize=self.blksize, windowsize=self.window,
            mode=self.mode, retransmits=self.retransmits,
            duplicate_acks=self.duplicate_acks,
        )

    def fail(self, reason: str, *, send_error: tuple[int, str] | None = None,
             client_abort: bool = False) -> None:
        if self.closed:
            return
        if send_error is not None and self.sock is not None:
            try:
                self.sock.send(encode_error(*send_error))
            except OSError:
                pass
        seconds = time.monotonic() - self.started
        acked_bytes = min(self.size, max(0, self.acked) * self.blksize) if self.phase == _DATA_PHASE else 0
        self.close()
        log.info("tftp %s:%s %s failed: %s", self.client[0], self.client[1], self.name, reason)
        self.server._emit(
            "transfer-failed", client=self.client, filename=self.name, reason=reason,
            bytes=acked_bytes, seconds=round(seconds, 6), blksize=self.blksize,
            windowsize=self.window, client_abort=client_abort,
        )

    # sending
    def _send(self, packet: bytes) -> bool:
        try:
            self.sock.send(packet)  # type: ignore[union-attr]
        except BlockingIOError:
            return False  # socket buffer full: treat as lost, the timer recovers
        except ConnectionRefusedError:
            self.fail("client port unreachable")
            return False
        except OSError as exc:
            self.fail(f"send failed: {exc.strerror or exc}")
            return False
        return True

    def _send_first(self) -> None:
        if self.phase == _OACK_PHASE:
            self._send(encode_oack(self.oack))  # type: ignore[arg-type]
        else:
            self._send_window(1)

    def _send_window(self, first: int) -> None:
        last = min(first + self.window - 1, self.last_block)
        bs = self.blksize
        offset = (first - 1) * bs
        want = min((last - first + 1) * bs, self.size - offset)
        try:
            buf = self.reader.read(offset, want) if want > 0 else b""
        except OSError as exc:
            self.fail(f"read error: {exc.strerror or exc}",
                      send_error=(ErrorCode.NOT_DEFINED, "read error"))
            return
        if len(buf) != want:
            self.fail("file changed during transfer",
                      send_error=(ErrorCode.NOT_DEFINED, "file changed during transfer"))
            return
        mv = memoryview(buf)
        pack = _DATA_HDR.pack
        send = self.sock.send  # type: ignore[union-attr]
        self.sent_hi = last
        pos = 0
        try:
            for block in range(first, last + 1):
                send(pack(3, block & 0xFFFF) + mv[pos:pos + bs])
                pos += bs
        except BlockingIOError:
            pass  # the rest of the window is "lost"; the client ACKs what it got
        except ConnectionRefusedError:
            self.fail("client port unreachable")
        except OSError as exc:
            self.fail(f"send failed: {exc.strerror or exc}")

    # receiving
    def _on_readable(self) -> None:
        # One datagram per callback: the selector is level-triggered, and in
        # lockstep a second recv() would almost always be a wasted EAGAIN.
        if self.closed:
            return
        try:
            data = self.sock.recv(_RECV_SIZE)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionRefusedError:
            self.fail("client port unreachable")
            return
        except OSError as exc:
            self.fail(f"receive failed: {exc.strerror or exc}")
            return
        if len(data) < 4 or data[0] != 0:
            return
        op = data[1]
        if op == Opcode.ACK:
            self._on_ack(_ACK_HDR.unpack_from(data)[1])
        elif op == Opcode.ERROR:
            try:
                pkt = parse_packet(data)
                detail = f"{pkt.code}: {pkt.message}"  # type: ignore[union-attr]
            except PacketError:
                detail = "malformed"
            self.fail(f"client aborted (ERROR {detail})", client_abort=True)
        # anything else on a session socket is ignored

    def _progress(self) -> None:
        self.tries = 0
        self.last_progress = now = self.loop.time()
        self.deadline = now + self.timeout

    def _on_ack(self, n: int) -> None:
        if self.phase == _OACK_PHASE:
            if n == 0:
                self.phase = _DATA_PHASE
                self._progress()
                self._send_window(1)
            return
        acked = self.acked
        k = acked + ((n - acked) & 0xFFFF)
        if k == acked or k > self.sent_hi:
            self.duplicate_acks += 1  # duplicate or stray: never retransmit on it
            return
        self.acked = k
        self._progress()
        if k >= self.last_block:
            self._finish()
        else:
            self._send_window(k + 1)

    def _on_timer(self) -> None:
        self.timer = None
        if self.closed:
            return
        now = self.loop.time()
        give_up = self._give_up_at()
        if now >= give_up:
            if self.progressed:
                self.fail(f"no acknowledgement for {self.server.idle_seconds:g}s")
            else:
                self.fail(f"never acknowledged within {self.server.unacked_seconds:g}s")
            return
        if now < self.deadline:
            self.timer = self.loop.call_at(min(self.deadline, give_up), self._on_timer)
            return
        self.tries += 1
        if self.tries > self.server.retries:
            self.fail(f"timeout after {self.server.retries} retries")
            return
        self.retransmits += 1
        self.deadline = now + self._interval()
        self.timer = self.loop.call_at(min(self.deadline, give_up), self._on_timer)
        if self.phase == _OACK_PHASE:
            self._send(encode_oack(self.oack))  # type: ignore[arg-type]
        else:
            self._send_window(self.acked + 1)


# -- server -----------------------------------------------------------------

class TftpServer:
    """Read-only TFTP server; see the module docstring."""

    def __init__(
        self,
        root: Path | str | None = None,
        resolver: Resolver | None = None,
        host: str = "0.0.0.0",
        port: int = 69,
        *,
        max_sessions: int = 256,
        max_per_client: int | None = None,
        unacked_seconds: float = 6.0,
        idle_seconds: float = 60.0,
        timeout: float = 1.0,
        retries: int = 5,
        max_blksize: int = 1468,
        max_windowsize: int = 64,
        on_event: EventCallback | None = None,
        netascii_max: int = DEFAULT_NETASCII_MAX,
    ) -> None:
        if root is None and resolver is None:
            raise ValueError("TftpServer needs a root directory, a resolver, or both")
        if not BLKSIZE_MIN <= max_blksize <= BLKSIZE_MAX:
            raise ValueError(f"max_blksize must be in {BLKSIZE_MIN}..{BLKSIZE_MAX}")
        if not 1 <= max_windowsize <= WINDOWSIZE_MAX:
            raise ValueError(f"max_windowsize must be in 1..{WINDOWSIZE_MAX}")
        if timeout <= 0 or retries < 0 or max_sessions < 1:
            raise ValueError("timeout must be > 0, retries >= 0, max_sessions >= 1")
        if max_per_client is not None and max_per_client < 1:
            raise ValueError("max_per_client must be >= 1 (or None: no per-client cap)")
        if unacked_seconds <= 0 or idle_seconds <= 0:
            raise ValueError("unacked_seconds and idle_seconds must be > 0")
        self.root = Path(root) if root is not None else None
        self.resolver = resolver
        self.host = host
        self._port = port
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self.unacked_seconds = float(unacked_seconds)
        self.idle_seconds = float(idle_seconds)
        self.timeout = float(timeout)
        self.retries = retries
        self.max_blksize = max_blksize
        self.max_windowsize = max_windowsize
        self.on_event = on_event
        self.netascii_max = netascii_max
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._family = socket.AF_INET
        self._wildcard = False
        self._bound_host = host
        self._sessions: dict[tuple, _Session] = {}
        self._per_client: dict[str, int] = {}  # client address -> its sessions
        self.stats = {"requests": 0, "refused": 0, "done": 0, "failed": 0, "malformed": 0}

    # public ------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self._bound_host, self._port)

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    @property
    def running(self) -> bool:
        return self._sock is not None

    async def start(self) -> None:
        """Bind and start serving. OSError (port in use, no permission) propagates."""
        if self._sock is not None:
            raise RuntimeError("TftpServer already started")
        loop = asyncio.get_running_loop()
        infos = socket.getaddrinfo(self.host or None, self._port, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _grow_receive_buffer(sock)
            sock.bind(sockaddr)
            ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
            self._wildcard = ip.is_unspecified
            if self._wildcard:
                try:
                    if family == socket.AF_INET:
                        sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
                    else:
                        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
                except OSError:
                    self._wildcard = False  # fall back: sessions bind the wildcard
        except BaseException:
            sock.close()
            raise
        self._loop = loop
        self._sock = sock
        self._family = family
        bound = sock.getsockname()
        self._port = bound[1]
        self._bound_host = bound[0]
        loop.add_reader(sock.fileno(), self._on_listener_readable)
        log.info("tftp listening on %s port %d (root=%s, resolver=%s)", bound[0], bound[1],
                 self.root, "yes" if self.resolver else "no")

    async def stop(self) -> None:
        """Stop listening and close every session socket (clients get ERROR 0)."""
        sock, self._sock = self._sock, None
        if sock is not None and self._loop is not None:
            try:
                self._loop.remove_reader(sock.fileno())
            except Exception:
                pass
            sock.close()
        for session in list(self._sessions.values()):
            session.fail("server stopped", send_error=(ErrorCode.NOT_DEFINED, "server shutting down"))
        self._sessions.clear()
        self._per_client.clear()

    async def __aenter__(self) -> "TftpServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # internals ---------------------------------------------------------------
    def _emit(self, kind: str, **fields) -> None:
        if kind == "transfer-done":
            self.stats["done"] += 1
        elif kind == "transfer-failed":
            self.stats["failed"] += 1
        elif kind == "refused":
            self.stats["refused"] += 1
        if self.on_event is None:
            return
        try:
            self.on_event(kind, **fields)
        except Exception:
            log.exception("tftp on_event callback failed for %s", kind)

    def _release(self, session: _Session) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
            self._count_client(session.key[0], -1)

    def _count_client(self, address: str, delta: int) -> None:
        left = self._per_client.get(address, 0) + delta
        if left > 0:
            self._per_client[address] = left
        else:
            self._per_client.pop(address, None)

    def _on_listener_readable(self) -> None:
        sock = self._sock
        for _ in range(_DRAIN):
            if sock is None or self._sock is not sock:
                return
            try:
                if self._wildcard:
                    data, anc, _flags, client = sock.recvmsg(_RECV_SIZE, 256)
                    local = self._local_from_ancillary(anc)
                else:
                    data, client = sock.recvfrom(_RECV_SIZE)
                    local = None
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors queued on the socket
                log.debug("tftp listener recv: %s", exc)
                continue
            try:
                self._on_request_datagram(data, client, local)
            except Exception:  # never let one datagram take the server down
                log.exception("tftp: unexpected error handling a datagram from %s", client)

    def _local_from_ancillary(self, anc) -> tuple | None:
        for level, kind, payload in anc:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(payload) >= 12:
                # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
                return (socket.inet_ntop(socket.AF_INET, payload[8:12]), 0)
            if level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(payload) >= 20:
                # struct in6_pktinfo { in6_addr addr; unsigned int ifindex; }
                addr = socket.inet_ntop(socket.AF_INET6, payload[:16])
                ifindex = struct.unpack_from("=I", payload, 16)[0]
                scope = ifindex if ipaddress.ip_address(addr).is_link_local else 0
                return (addr, 0, 0, scope)
        return None

    def _local_for_session(self, local: tuple | None) -> tuple:
        if local is not None:
            return local
        if self._family == socket.AF_INET6:
            return (self._bound_host, 0, 0, 0)
        return (self._bound_host, 0)

    def _reply_error(self, client, code: int, message: str) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.sendto(encode_error(code, message), client)
        except OSError as exc:
            log.debug("tftp: could not send ERROR to %s: %s", client, exc)

    def _refuse(self, client, code: int, reason: str, filename: str | None = None,
                *, message: str | None = None) -> None:
        log.info("tftp %s:%s refused %r: %s", client[0], client[1], filename, reason)
        self._reply_error(client, code, message or reason)
        self._emit("refused", client=(client[0], client[1]), filename=filename,
                   code=int(code), reason=reason)

    def _on_request_datagram(self, data: bytes, client, local, deferred: bool = False) -> None:
        if len(data) < 2:
            self.stats["malformed"] += 1
            return
        op = (data[0] << 8) | data[1]
        if op in (Opcode.DATA, Opcode.ACK, Opcode.ERROR, Opcode.OACK):
            return  # stray transfer packet on the request port: drop (never answer ERROR)
        try:
            packet = parse_packet(data)
        except PacketError as exc:
            self.stats["malformed"] += 1
            log.debug("tftp %s: malformed packet: %s", client, exc)
            self._reply_error(client, ErrorCode.ILLEGAL_OPERATION, f"malformed request: {exc}")
            return
        assert isinstance(packet, Request)
        shown = packet.filename.decode("utf-8", "backslashreplace")[:300]
        if packet.opcode == Opcode.WRQ:
            self._refuse(client, ErrorCode.ACCESS_VIOLATION, "write request to a read-only server",
                         shown, message="read-only server")
            return
        self.stats["requests"] += 1
        key = tuple(client[:2])
        existing = self._sessions.get(key)
        if existing is not None:
            if not deferred:
                # Let this loop iteration's other callbacks (an ERROR from the
                # same client on the session socket) run first.
                self._loop.call_soon(self._redo, data, client, local)  # type: ignore[union-attr]
                return
            if existing.takes_duplicate(packet):
                return  # a retransmitted RRQ; the session retransmits on its own
            existing.fail("superseded by a new request from the same client port")
        if (self.max_per_client is not None
                and self._per_client.get(key[0], 0) >= self.max_per_client):
            self._refuse(client, ErrorCode.NOT_DEFINED,
                         f"server busy ({self.max_per_client} sessions from {key[0]})",
                         shown, message="server busy")
            return
        if len(self._sessions) >= self.max_sessions:
            self._refuse(client, ErrorCode.NOT_DEFINED,
                         f"server busy ({self.max_sessions} sessions)", shown,
                         message="server busy")
            return
        try:
            name = sanitize_filename(packet.filename)
        except Refused as r:
            self._refuse(client, r.code, r.reason, shown)
            return
        mode = packet.mode
        if mode not in ("octet", "netascii"):
            self._refuse(client, ErrorCode.ILLEGAL_OPERATION, f"unsupported mode {mode!r}", name)
            return
        try:
            reader = self._resolve(name, (client[0], client[1]))
            if mode == "netascii":
                reader = self._netascii(reader)
        except Refused as r:
            self._refuse(client, r.code, r.reason, name)
            return
        except Exception as exc:
            log.exception("tftp resolver failed for %r", name)
            self._refuse(client, ErrorCode.NOT_DEFINED, f"internal error: {type(exc).__name__}",
                         name, message="internal error")
            return
        self._start_session(key, client, local, packet, name, reader)

    def _redo(self, data, client, local) -> None:
        if self._sock is None:
            return
        try:
            self._on_request_datagram(data, client, local, deferred=True)
        except Exception:
            log.exception("tftp: unexpected error handling a datagram from %s", client)

    def _resolve(self, name: str, client: tuple[str, int]):
        if self.resolver is not None:
            src = self.resolver(name, client)
            if src is not None:
                if src.data is not None:
                    return _BytesReader(src.data)
                return _open_regular(os.fspath(src.path))
        if self.root is None:
            raise Refused(ErrorCode.FILE_NOT_FOUND, "file not found")
        return self._open_under_root(name)

    def _open_under_root(self, name: str) -> _FdReader:
        root = os.path.realpath(self.root)
        prefix = root if root.endswith(os.sep) else root + os.sep
        real = os.path.realpath(os.path.join(root, name))
        if not real.startswith(prefix):
            raise Refused(ErrorCode.ACCESS_VIOLATION, "path resolves outside the root")
        reader = _open_regular(real, _OPEN_FLAGS | getattr(os, "O_NOFOLLOW", 0))
        try:
            opened = os.readlink(f"/proc/self/fd/{reader.fd}")
        except OSError:
            opened = None  # no /proc: the realpath check above stands
        if opened is not None and not opened.startswith(prefix):
            reader.close()
            raise Refused(ErrorCode.ACCESS_VIOLATION, "path resolves outside the root")
        return reader

    def _netascii(self, reader):
        if reader.size > self.netascii_max:
            reader.close()
            raise Refused(ErrorCode.ACCESS_VIOLATION,
                          f"netascii limited to {self.netascii_max} bytes; use octet mode")
        try:
            raw = reader.read_all()
        finally:
            reader.close()
        return _NetasciiReader(netascii_encode(bytes(raw)), len(raw))

    def _negotiate(self, request: Request, tsize: int):
        """Return (accepted options for the OACK or None, blksize, windowsize, timeout)."""
        blksize, window, timeout = 512, 1, self.timeout
        accepted: list[tuple[str, str]] = []
        for name, value in request.options:
            key = name.lower()
            if not value.isdigit() or len(value) > 10:
                continue
            v = int(value)
            if key == "blksize":
                if v < BLKSIZE_MIN:
                    continue
                blksize = min(v, self.max_blksize, BLKSIZE_MAX)
                accepted.append((name, str(blksize)))
            elif key == "timeout":
                if not 1 <= v <= 255:
                    continue
                timeout = float(v)
                accepted.append((name, str(v)))
            elif key == "tsize":
                accepted.append((name, str(tsize)))
            elif key == "windowsize":
                if v < 1:
                    continue
                window = min(v, self.max_windowsize, WINDOWSIZE_MAX)
                accepted.append((name, str(window)))
        return (accepted or None), blksize, window, timeout

    def _start_session(self, key, client, local, request: Request, name: str, reader) -> None:
        tsize = getattr(reader, "size_on_server", reader.size)
        oack, blksize, window, timeout = self._negotiate(request, tsize)
        session = _Session(self, key, client, request, name, reader, blksize, window, timeout, oack)
        self._sessions[key] = session
        self._count_client(key[0], 1)
        self._emit("transfer-start", client=(client[0], client[1]), filename=name,
                   size=tsize, blksize=blksize, windowsize=window, mode=request.mode,
                   timeout=timeout, options={n: v for n, v in request.options})
        try:
            session.open(self._local_for_session(local))
        except OSError as exc:
            if self._sessions.pop(key, None) is not None:
                self._count_client(key[0], -1)
            reader.close()
            session.closed = True
            log.warning("tftp: cannot open a session socket for %s: %s", client, exc)
            self._reply_error(client, ErrorCode.NOT_DEFINED, "server error")
            self._emit("transfer-failed", client=(client[0], client[1]), filename=name,
                       reason=f"session socket: {exc.strerror or exc}", bytes=0, seconds=0.0,
                       blksize=blksize, windowsize=window, client_abort=False)


def _grow_receive_buffer(sock: socket.socket) -> None:
    """A rack powering on sends hundreds of RRQs at once; the default buffer
    (~208 KiB) dropped ~30% of them in the 500-client bench (each retried 1 s
    later). Past net.core.rmem_max when allowed (root / CAP_NET_ADMIN)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, LISTENER_RCVBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LISTENER_RCVBUF)


class _NetasciiReader(_BytesReader):
    __slots__ = ("size_on_server",)

    def __init__(self, data: bytes, size_on_server: int) -> None:
        super().__init__(data)
        self.size_on_server = size_on_server
