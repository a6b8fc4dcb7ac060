"""Interactive shells on nodes: the channel bridge, the recording, the terminal.

Three layers, so the console can reuse the first two:

- `bridge(process, read, write)`: moves bytes between an asyncssh PTY process
  and two callables (`await read() -> bytes`, b"" at end of input;
  `write(bytes)`), until the remote shell exits. Returns its exit code. Knows
  nothing of terminals: the console passes a widget's queue and its render.
- `ShellSession` (`AccessAPI.shell(name, ...)`, an async context manager): a
  PTY process on the node's pooled connection (one session slot), the
  asciicast v2 recording under `engine.paths.recordings_dir`, and the events
  `shell.opened` / `shell.closed` (node, who, duration, exit status, recording).
  Only output ("o") and resize ("r") events are recorded, never input: people
  type passwords.
- `run_terminal_shell(api, name)`: the headless `shell` command: this process's
  tty in raw mode (restored in `finally`, so on exit, errors, cancellation by
  SIGTERM/SIGHUP, and Ctrl-C which reaches the remote side as a byte), SIGWINCH ->
  `change_terminal_size`, stdin read with `loop.add_reader` (never blocking the
  loop), output written to stdout.

Exit status: the remote shell's; killed by a signal -> 128 + its number (as
a local shell reports it); connection lost without a status -> 255 (as ssh).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import json
import os
import re
import signal
import struct
import sys
import termios
import time
import tty
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable

import asyncssh

from fleet.core.model import Severity

if TYPE_CHECKING:
    from fleet.access.api import AccessAPI
    from fleet.access.pool import NodeLink

Read = Callable[[], Awaitable[bytes]]
#: may return an awaitable: the bridge awaits it before reading more (backpressure)
Write = Callable[[bytes], "Awaitable[None] | None"]

LOST_STATUS = 255


def exit_code(process) -> int:
    """The shell's exit status as a local shell would report it."""
    if process.exit_status is not None and process.exit_status >= 0:
        return process.exit_status
    sig = process.exit_signal[0] if process.exit_signal else None
    if sig:
        num = getattr(signal, "SIG" + sig, None)
        return 128 + int(num) if num is not None else LOST_STATUS
    return LOST_STATUS


async def bridge(process, read: Read, write: Write) -> int:
    """Copy `read()` to the process's stdin and its stdout to `write` until the
    remote side closes. The process must be opened with encoding=None (bytes);
    a PTY merges stderr into stdout. Cancelling this cancels both directions."""

    async def pump_in() -> None:
        while True:
            data = await read()
            if not data:
                with contextlib.suppress(OSError, asyncssh.Error):
                    process.stdin.write_eof()
                return
            process.stdin.write(data)
            await process.stdin.drain()

    async def pump_out() -> None:
        while True:
            data = await process.stdout.read(65536)
            if not data:
                return
            done = write(data)
            if done is not None:
                await done

    inbound = asyncio.ensure_future(pump_in())
    try:
        await pump_out()
        await process.wait_closed()
    finally:
        inbound.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await inbound
    return exit_code(process)


class AsciicastWriter:
    """asciicast v2: a JSON header line, then `[seconds, "o", text]` lines (and
    `[seconds, "r", "COLSxROWS"]` on resize). Output only, never input."""

    def __init__(self, path: Path, width: int, height: int, *, term: str, title: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = open(path, "w", encoding="utf-8")
        os.chmod(path, 0o600)  # a shell's output can hold secrets too: owner only
        self._t0 = time.monotonic()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        header = {"version": 2, "width": width, "height": height, "timestamp": int(time.time()),
                  "env": {"TERM": term, "SHELL": "/bin/sh"}, "title": title}
        self._line(header)

    def _line(self, obj) -> None:
        self._f.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def _ts(self) -> float:
        return round(time.monotonic() - self._t0, 6)

    def output(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._line([self._ts(), "o", text])

    def resize(self, cols: int, rows: int) -> None:
        self._line([self._ts(), "r", f"{cols}x{rows}"])

    def close(self) -> None:
        if self._f.closed:
            return
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._line([self._ts(), "o", tail])
        self._f.close()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


class ShellSession:
    """A PTY shell on a node (see the module docstring). Use through
    `AccessAPI.shell()`: `async with api.shell("web1", term_size=(80, 24)) as s:
    code = await s.run(read, write)`."""

    def __init__(self, api: "AccessAPI", name: str, *, term_type: str = "xterm-256color",
                 term_size: tuple[int, int] = (80, 24), record: bool = True):
        self.api = api
        self.engine = api.engine
        self.name = name
        self.term_type = term_type
        self.term_size = term_size
        self.record = record
        self.process = None
        self.link: "NodeLink | None" = None
        self.recording: AsciicastWriter | None = None
        self.exit_status: int | None = None
        self._stack = contextlib.AsyncExitStack()
        self._t0 = 0.0

    async def __aenter__(self) -> "ShellSession":
        from fleet.access.exec import operator_name

        self.who = operator_name()
        await self._stack.__aenter__()
        try:
            self.link = await self._stack.enter_async_context(self.api.session(self.name))
            cols, rows = self.term_size
            self.process = await self.link.conn.create_process(
                term_type=self.term_type, term_size=(cols, rows), encoding=None)
            self._t0 = time.monotonic()
            if self.record:
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                path = self.engine.paths.recordings_dir / f"{_safe(self.name)}-{stamp}-" \
                                                          f"{os.getpid()}.cast"
                self.recording = AsciicastWriter(path, cols, rows, term=self.term_type,
                                                 title=f"fleet shell {self.name}")
            await self._event("shell.opened", f"{self.who} opened a shell on {self.name}",
                              via=self.link.via, term=self.term_type,
                              recording=str(self.recording.path) if self.recording else None)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            if self.process is not None:
                self.process.close()
            if self.recording is not None:
                self.recording.close()
            duration = round(time.monotonic() - self._t0, 3) if self._t0 else 0.0
            with contextlib.suppress(Exception):
                await self._event(
                    "shell.closed", f"{self.who}'s shell on {self.name} closed after "
                                    f"{duration:.1f}s (exit {self.exit_status})",
                    duration_s=duration, exit_status=self.exit_status,
                    recording=str(self.recording.path) if self.recording else None)
        finally:
            await self._stack.aclose()

    async def _event(self, kind: str, message: str, **data) -> None:
        if self.engine.read_only:
            return
        await self.engine.record(self.engine.event(kind, self.name, message,
                                                   severity=Severity.INFO, node=self.name,
                                                   who=self.who, **data))

    def write_output(self, write: Write) -> Write:
        """`write`, plus the recording."""
        rec = self.recording

        def out(data: bytes):
            if rec is not None:
                rec.output(data)
            return write(data)
        return out

    def resize(self, cols: int, rows: int) -> None:
        if (cols, rows) == tuple(self.term_size):
            return
        self.term_size = (cols, rows)
        with contextlib.suppress(OSError, asyncssh.Error):
            self.process.change_terminal_size(cols, rows)
        if self.recording is not None:
            self.recording.resize(cols, rows)

    async def run(self, read: Read, write: Write) -> int:
        try:
            self.exit_status = await bridge(self.process, read, self.write_output(write))
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError,
                ConnectionError):
            self.exit_status = LOST_STATUS
        return self.exit_status


# ---------------------------------------------------------------- the local terminal

def terminal_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal on fd; 80x24 when it is not one."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        if cols and rows:
            return cols, rows
    except OSError:
        pass
    return 80, 24


class _StdinReader:
    """`await read()` for a file descriptor, via loop.add_reader: the loop never
    blocks on the terminal."""

    def __init__(self, fd: int):
        self.fd = fd
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.fd)
        self.queue.put_nowait(data)

    async def read(self) -> bytes:
        return await self.queue.get()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[n:]


@contextlib.contextmanager
def raw_terminal(fd: int):
    """The tty on fd in raw mode; its attributes restored however we leave."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run_terminal_shell(api: "AccessAPI", name: str, *, stdin: int | None = None,
                             stdout: int | None = None, term_type: str | None = None) -> int:
    """The headless `shell NODE`: this terminal, bridged to a shell on the node."""
    in_fd = sys.stdin.fileno() if stdin is None else stdin
    out_fd = sys.stdout.fileno() if stdout is None else stdout
    term = term_type or os.environ.get("TERM") or "xterm-256color"
    loop = asyncio.get_running_loop()
    await api.engine.node(name)  # unknown node: exit 2 before touching the terminal
    async with api.shell(name, term_type=term, term_size=terminal_size(in_fd)) as session:
        reader = None
        hooked: list[int] = []
        try:
            with raw_terminal(in_fd):
                def winch() -> None:
                    session.resize(*terminal_size(in_fd))

                loop.add_signal_handler(signal.SIGWINCH, winch)
                hooked.append(signal.SIGWINCH)
                task = asyncio.current_task()
                for sig in (signal.SIGHUP,):  # the terminal went away: restore and leave
                    loop.add_signal_handler(sig, task.cancel)
                    hooked.append(sig)
                reader = _StdinReader(in_fd)
                return await session.run(reader.read, lambda b: _write_all(out_fd, b))
        finally:
            if reader is not None:
                reader.close()
            for sig in hooked:
                loop.remove_signal_handler(sig)


# ---------------------------------------------------------------- changing hands

class Relay:
    """The two ends of a running session, which can change hands (the console's
    terminal widget, then the real terminal, then the widget again): `read`
    takes from an inbox anyone may `send` to; `write` goes to the current
    `sink`. `await session.run(relay.read, relay.write)`."""

    def __init__(self, sink: Write):
        self.sink = sink
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def send(self, data: bytes) -> None:
        if data:
            self._inbox.put_nowait(data)

    async def read(self) -> bytes:
        return await self._inbox.get()

    def write(self, data: bytes):
        return self.sink(data)


#: ctrl+] leaves the handed-over terminal (as in telnet and virsh console)
DETACH = b"\x1d"


async def hand_terminal(session: ShellSession, relay: Relay, ended: Awaitable, *,
                        in_fd: int, out_fd: int, detach: bytes = DETACH,
                        prelude: bytes = b"") -> bool:
    """Bridge the real terminal on in_fd/out_fd to a running session's channel
    (the same one, not a new shell) until the user types `detach` (-> True) or
    `ended` (the session's run) finishes (-> False).

    The terminal is raw meanwhile and restored after; its size is the remote's
    (SIGWINCH followed) and the previous size is given back on return. The
    previous sink keeps receiving the output as well, so whoever had the
    session before sees its screen current when it takes it back. `prelude`
    is written first (the screen as it was, until the program redraws)."""
    loop = asyncio.get_running_loop()
    previous_sink, previous_size = relay.sink, tuple(session.term_size)
    detached = asyncio.Event()

    def sink(data: bytes):
        with contextlib.suppress(OSError):
            _write_all(out_fd, data)
        return previous_sink(data)

    def typed() -> None:
        try:
            data = os.read(in_fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the terminal went away
            loop.remove_reader(in_fd)
            detached.set()
            return
        cut = data.find(detach)
        relay.send(data if cut < 0 else data[:cut])
        if cut >= 0:
            detached.set()

    def winch() -> None:
        session.resize(*terminal_size(in_fd))

    hooked = False
    with raw_terminal(in_fd):
        relay.sink = sink
        try:
            if prelude:
                _write_all(out_fd, prelude)
            winch()
            loop.add_reader(in_fd, typed)
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
                loop.add_signal_handler(signal.SIGWINCH, winch)
                hooked = True
            waiter = asyncio.ensure_future(detached.wait())
            try:
                await asyncio.wait([waiter, asyncio.ensure_future(ended)],
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(in_fd)
            if hooked:
                loop.remove_signal_handler(signal.SIGWINCH)
            relay.sink = previous_sink
            if session.process is not None:
                session.resize(*previous_size)
    return detached.is_set()
