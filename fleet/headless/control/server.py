"""The control server: a running fleet runs headless commands sent to its socket.

Started by `serve` and (through fleet.cli) by the console, with their engine.
Each connection is one command: its peer must be this user (SO_PEERCRED); its
request is checked (wire.py), its argv parsed by the headless parser (usage
errors go back as the same lines and exit 2 as locally), then the same handler
runs against this engine with an Output writing to the connection. A cancel
frame, or the client hanging up, cancels the command as a signal would.

One server per profile: a lock file beside the socket is held while serving, so
a second fleet on the profile leaves a live socket alone, and a socket whose
lock nobody holds is stale (its fleet died) and is replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import fcntl
import functools
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.errors import FleetError
from fleet.headless.control.address import (ControlUnavailable, peer_pid, peer_uid,
                                            socket_key, socket_path)
from fleet.headless.control.wire import (PARSER_STAMP, Request, check_request,
                                         runs_locally, text_frames)
from fleet.headless.output import Output
from fleet.headless.parser import build_parser
from fleet.headless.signals import COMMAND_SECONDS
from fleet.sites.protocol import FrameReader, ProtocolError, encode, parse_frame

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger("fleet.control")

#: a client has this long to send its request once connected
REQUEST_SECONDS = 10.0
#: options naming files, read by the handler: relative to the client's cwd
PATH_OPTIONS = ("script", "grub_cfg", "ipxe_dir", "ipxe_src", "wiper_root")


async def start_control(engine: "Engine") -> "ControlServer | None":
    """This engine's control server, or None (another fleet serves the profile,
    or the runtime directory cannot be trusted: said in the log)."""
    try:
        return await ControlServer.start(engine)
    except ControlUnavailable as err:
        log.warning("no control socket: %s", err)
    except OSError as err:  # the commands still run, each in its own process
        log.warning("no control socket: %s", err.strerror or err)
    return None


class ControlServer:
    def __init__(self, engine: "Engine", path: Path, lock_fd: int):
        self.engine = engine
        self.path = path
        self.key = socket_key(engine.profile.path, engine.paths.data_dir)
        self._lock_fd = lock_fd
        self._server: asyncio.AbstractServer | None = None
        self._running: set[asyncio.Task] = set()

    @classmethod
    async def start(cls, engine: "Engine") -> "ControlServer | None":
        path = socket_path(engine.profile.path, engine.paths.data_dir, create=True)
        lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            log.info("control socket %s is served by another fleet", path)
            return None
        self = cls(engine, path, lock_fd)
        try:
            sock = _bind_private(path)
            self._server = await asyncio.start_unix_server(self._connection, sock=sock)
        except BaseException:
            self._release()
            raise
        _parser()  # built now, not in the first command's time
        log.info("control socket %s", path)
        return self

    async def close(self) -> None:
        """Stop listening, cancel the commands still running, remove the socket."""
        if self._server is None:
            return
        self._server.close()
        self._server = None
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(list(self._running), timeout=COMMAND_SECONDS)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # ours: we hold the lock
        self._release()

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1

    # -- one connection, one command ------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._running.add(task)
        send = _Sender(writer)
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock)
            if uid != os.getuid():
                log.warning("control socket: refused a connection from uid %d", uid)
                send({"refused": f"peer uid {uid} is not uid {os.getuid()}"})
                return
            await self._command(FrameReader(reader.read), send, peer_pid(sock))
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # a bug here must not take the console down
            log.exception("control socket: a command failed")
        finally:
            self._running.discard(task)
            send.flush()  # the frames of this turn
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), 5)
            writer.close()

    async def _command(self, frames: FrameReader, send: "_Sender", pid: int) -> None:
        try:
            line = await asyncio.wait_for(frames.next(), REQUEST_SECONDS)
            if line is None:
                return
            request = check_request(parse_frame(line))
        except ProtocolError as err:
            if err.kind == "version":  # another fleet's client: it can run it itself
                send({"local": err.message})
                return
            send({"err": f"fleet: control socket: {err.message}\n"})
            send({"exit": 2})
            return
        except asyncio.TimeoutError:
            message = f"no request within {REQUEST_SECONDS:g}s"
            send({"err": f"fleet: control socket: {message}\n"})
            send({"exit": 2})
            return
        if request.key != self.key:
            send({"local": "this socket serves another profile"})
            return
        if request.parser != PARSER_STAMP:
            send({"local": "the running fleet is another fleet version"})
            return
        out_stream, err_stream = _FrameStream(send, "out"), _FrameStream(send, "err")
        parsed = _parse(request, out_stream, err_stream)
        if isinstance(parsed, int):
            send({"exit": parsed})
            return
        why = runs_locally(parsed) or self._mismatch(request)
        if why:
            send({"local": why})
            return
        send({"run": True})
        log.info("control: %s for pid %d", parsed.command, pid)
        out = Output(parsed.format or "table", out_stream, err_stream)
        code = await self._run(parsed, out, frames)
        log.info("control: %s for pid %d exited %d", parsed.command, pid, code)
        send({"exit": code})

    def _mismatch(self, request: Request) -> str | None:
        if request.read_only != self.engine.read_only:
            return ("the running fleet is " + ("read-only" if self.engine.read_only
                                               else "not read-only"))
        return None

    async def _run(self, args: argparse.Namespace, out: Output, frames: FrameReader) -> int:
        """The handler's exit code; after a cancel (or the client gone), what it
        returns within COMMAND_SECONDS, else 130, as after a signal locally."""
        command = asyncio.ensure_future(_handler(self.engine, args, out))
        stop = asyncio.ensure_future(_cancelled(frames))
        try:
            await asyncio.wait({command, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server is closing
            command.cancel()
            raise
        finally:
            stop.cancel()
        if not command.done():
            command.cancel()
            await asyncio.wait({command}, timeout=COMMAND_SECONDS)
        if not command.done() or command.cancelled():
            return 130
        return command.result()


async def _cancelled(frames: FrameReader) -> None:
    """Returns at a cancel frame or when the client hangs up; ignores the rest."""
    while True:
        try:
            line = await frames.next()
        except ProtocolError:
            continue
        if line is None:
            return
        with contextlib.suppress(ProtocolError):
            if parse_frame(line).get("cancel") is True:
                return


async def _handler(engine: "Engine", args: argparse.Namespace, out: Output) -> int:
    from fleet.headless.commands import HANDLERS
    from fleet.headless.main import error_line

    try:
        return await HANDLERS[args.command](engine, args, out)
    except FleetError as err:
        out.error(error_line(err))
        return err.exit_code
    except asyncio.CancelledError:
        return 130
    except Exception as err:  # what would be a traceback locally; the console lives on
        log.exception("control socket: %s failed", args.command)
        out.error(f"fleet: internal error in {args.command}: {err!r} (see the log)")
        return 1


class _Sender:
    """Frames to the client, written once per event-loop turn: a fan-out's
    hundreds of output lines become a few sends, not one syscall each."""

    def __init__(self, writer: asyncio.StreamWriter):
        self._writer = writer
        self._pending: list[bytes] = []

    def __call__(self, frame: dict) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(encode(frame))

    def flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if data and not self._writer.is_closing():
            self._writer.write(data)


class _FrameStream:
    """A text stream whose writes become frames on the connection."""

    def __init__(self, send, name: str):
        self._send = send
        self._name = name

    def write(self, text: str) -> int:
        for frame in text_frames(self._name, text):
            self._send(frame)
        return len(text)

    def flush(self) -> None:
        pass


class _ParserExit(Exception):
    def __init__(self, status: int):
        self.status = status


#: (stdout, stderr) of the request being parsed (parsing is synchronous)
_parser_streams: contextvars.ContextVar[tuple[_FrameStream, _FrameStream]] = \
    contextvars.ContextVar("parser_streams")


class _ClientParser(argparse.ArgumentParser):
    """Prints usage, errors and --help to the client; raises instead of exiting."""

    def _print_message(self, message, file=None):
        if message:
            out, err = _parser_streams.get()
            (err if file is sys.stderr else out).write(message)

    def exit(self, status=0, message=None):
        if message:
            _parser_streams.get()[1].write(message)
        raise _ParserExit(status)


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """Built once (~10-30 ms) and reused: parse_args keeps no state."""
    return build_parser(_ClientParser)


def _parse(request: Request, out: _FrameStream, err: _FrameStream
           ) -> argparse.Namespace | int:
    """The request's argv parsed as `fleet --headless` parses it, or the exit code
    after argparse's usage error (or --help), its lines sent to the client."""
    token = _parser_streams.set((out, err))
    try:
        args = _parser().parse_args(request.argv)
    except _ParserExit as stop:
        return stop.status
    finally:
        _parser_streams.reset(token)
    args.argv = list(request.command)
    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value and not os.path.isabs(value):
            setattr(args, name, os.path.join(request.cwd, value))
    return args


def _bind_private(path: Path) -> socket.socket:
    """A listening socket at `path`, mode 0600 from its first moment: bound under
    a temporary name, chmod'ed, then renamed over any stale socket."""
    temp = path.with_name(f".{os.getpid()}.tmp")  # never longer than the final name
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temp))
        os.chmod(temp, 0o600)
        os.rename(temp, path)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return sock
