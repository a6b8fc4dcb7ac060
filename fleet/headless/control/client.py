"""`fleet --headless CMD`: first ask a running fleet on this profile to run it.

No socket, no listener, a command that must run here (wire.runs_locally), or a
running fleet that declines (another read-only mode): None, and the command
runs in this process as it always did. Otherwise the output is relayed as it
comes and the exit code is the command's. SIGINT/SIGTERM send a cancel (the
command stops as it would here: exit 130); a second one, or no end within
CLOSE_SECONDS, ends this process at once.

Imports only what the exchange needs: the engine, asyncssh and the handlers
stay unloaded, which is the point (a warm `exec` from a fresh process).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

from fleet.headless.control.address import (ControlUnavailable, peer_uid, socket_key,
                                            socket_path)
from fleet.headless.control.wire import request_frame, runs_locally
from fleet.headless.signals import CLOSE_SECONDS, SIGNALS
from fleet.sites.protocol import FrameReader, ProtocolError, encode, parse_frame

#: a running fleet has this long to take up the request
ANSWER_SECONDS = 10.0
#: how often a wait for the next frame looks at the clock
POLL_SECONDS = 0.25


def disabled() -> bool:
    return os.environ.get("FLEET_NO_CONTROL", "") not in ("", "0")


def through_running_fleet(argv: list[str], command: list[str], args) -> int | None:
    """The exit code of the command run by a running fleet, or None: run it here."""
    if disabled() or runs_locally(args):
        return None
    from fleet.headless.main import default_profile
    from fleet.paths import Paths, find_profile

    profile, _ = find_profile(args.profile or default_profile())
    if profile is None:
        return None  # running it here says what is wrong
    try:
        data_dir = Paths.default().data_dir
        path = socket_path(profile, data_dir)
    except (ControlUnavailable, OSError):
        return None
    request = request_frame(socket_key(profile, data_dir), argv, command,
                            bool(args.read_only))
    return _exchange(path, request)


def _exchange(path: Path, request: dict) -> int | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(str(path))
        except OSError:  # none there, or a stale socket nobody listens on
            return None
        if peer_uid(sock) != os.getuid():
            return None
        sock.sendall(encode(request))
        return _relay(sock)
    finally:
        sock.close()


def _relay(sock: socket.socket) -> int | None:
    """Prints what the command writes; its exit code, or None when the running
    fleet declines before taking the command up."""
    wait = _Wait(sock)

    def on_signal(signum, frame) -> None:
        if wait.signalled is not None:
            _exit_now("stopping at once (second signal)")
        wait.signalled = time.monotonic()
        with contextlib.suppress(OSError):
            sock.sendall(encode({"cancel": True}))

    previous = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    try:
        frames = FrameReader(wait.read)
        started = False
        sock.settimeout(POLL_SECONDS)
        while True:
            try:
                line = _now(frames.next())
                frame = parse_frame(line) if line is not None else None
            except _NoAnswer:
                print("fleet: the running fleet on this profile does not answer; "
                      "FLEET_NO_CONTROL=1 runs the command in this process", file=sys.stderr)
                return 3
            except (ProtocolError, OSError) as err:
                print(f"fleet: control socket: {getattr(err, 'message', err)}", file=sys.stderr)
                return 130 if wait.signalled is not None else 3
            if frame is None:
                if wait.signalled is not None:
                    return 130
                if not started:
                    return None  # it closed before taking the command up (quitting)
                print("fleet: the running fleet went away during the command",
                      file=sys.stderr)
                return 3
            if "out" in frame:
                sys.stdout.write(str(frame["out"]))
                sys.stdout.flush()
            elif "err" in frame:
                sys.stderr.write(str(frame["err"]))
                sys.stderr.flush()
            elif "exit" in frame:
                code = frame["exit"]
                return code if isinstance(code, int) and 0 <= code <= 255 else 1
            elif "run" in frame:
                started = wait.started = True
            elif ("local" in frame or "refused" in frame) and not started:
                return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _NoAnswer(Exception):
    pass


class _Wait:
    """FrameReader's read: recv with a short timeout, so that after a signal the
    wait ends by CLOSE_SECONDS, and before the command is taken up by
    ANSWER_SECONDS."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.since = time.monotonic()
        self.started = False
        self.signalled: float | None = None

    async def read(self, n: int) -> bytes:
        while True:
            try:
                return self.sock.recv(n)
            except socket.timeout:
                now = time.monotonic()
                if self.signalled is not None and now - self.signalled > CLOSE_SECONDS:
                    _exit_now(f"still stopping after {CLOSE_SECONDS:g}s; exiting anyway")
                if not self.started and now - self.since > ANSWER_SECONDS:
                    raise _NoAnswer() from None


def _now(coroutine):
    """Runs a coroutine that never suspends (FrameReader over a blocking recv)
    without an event loop: asyncio's import alone is ~50 ms of a warm command."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the frame reader suspended")


def _exit_now(why: str) -> None:
    try:
        os.write(sys.stderr.fileno(), f"fleet: {why}\n".encode())
    except (OSError, ValueError):
        pass
    os._exit(130)
