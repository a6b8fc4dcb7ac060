"""One SIGINT/SIGTERM stops a headless command, always, within CLOSE_SECONDS.

The command runs as its own task. A signal cancels it once; `main` then waits
for it and closes the engine with deadlines counted from the signal, so a part
that swallows the cancellation or hangs while stopping delays the exit by
seconds, not for ever. Past the last deadline a timer thread ends the process
(`os._exit`): it works even when the event loop or the interpreter's teardown
is blocked. The store is SQLite with a journal, so nothing committed is lost.

A second signal while stopping ends the process at once (the operator asked
twice), with the same exit code.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: from the first signal to the end of the process, whatever hangs
CLOSE_SECONDS = 15.0
#: of which the command's own cleanup (e.g. serve stopping its services) may take
COMMAND_SECONDS = 10.0


class SignalStop:
    """Signal handlers for one command task; installed before anything slow."""

    def __init__(self, task: asyncio.Task, *, exit_code: int,
                 close_seconds: float = CLOSE_SECONDS):
        self.exit_code = exit_code  # what a stopped command exits with
        self.close_seconds = close_seconds
        import asyncio  # here: fleet.headless.control's client uses only the constants

        self.signalled_at: float | None = None
        self.stopped = asyncio.Event()
        self._task = task
        self._timer: threading.Timer | None = None
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal)

    def watch(self, task: asyncio.Task) -> None:
        """From now on a signal cancels `task`."""
        self._task = task
        if self.signalled_at is not None:
            task.cancel()

    def deadline(self, share: float) -> float:
        """Seconds left until `share` seconds after the signal (no signal: share)."""
        if self.signalled_at is None:
            return share
        return max(0.0, self.signalled_at + share - time.monotonic())

    def _on_signal(self) -> None:
        if self.signalled_at is not None:
            _exit_now(self.exit_code, "stopping at once (second signal)")
        self.signalled_at = time.monotonic()
        self.stopped.set()
        self._timer = threading.Timer(self.close_seconds, _exit_now,
                                      (self.exit_code, f"still stopping after "
                                       f"{self.close_seconds:g}s; exiting anyway"))
        self._timer.daemon = True
        self._timer.start()
        self._task.cancel()

    def remove(self) -> None:
        for sig in SIGNALS:
            self._loop.remove_signal_handler(sig)

    def disarm(self) -> None:
        """The process is about to exit normally: no forced exit."""
        if self._timer is not None:
            self._timer.cancel()


def _exit_now(code: int, why: str) -> None:
    # os.write, not print: the main thread may hold the stream's lock
    try:
        os.write(sys.stderr.fileno(), f"fleet: {why}\n".encode())
    except (OSError, ValueError, AttributeError):
        pass
    os._exit(code)
