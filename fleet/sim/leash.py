"""Run a command that dies with the process that started it (Linux).

    python -m fleet.sim.leash PARENT_PID PROGRAM ARG...

The demo's child processes (the second site's `serve`, its agents) are started
through this: it asks the kernel for SIGTERM when the parent goes
(PR_SET_PDEATHSIG, kept across exec) and then becomes PROGRAM. A parent killed
with SIGKILL, which can clean up nothing itself, so leaves no orphans behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def command(parent_pid: int, argv: list[str]) -> list[str]:
    """The argv that runs `argv` on a leash to `parent_pid`."""
    return [sys.executable, "-m", "fleet.sim.leash", str(parent_pid), *argv]


def main(args: list[str]) -> int:
    if len(args) < 2 or not args[0].isdigit():
        print("usage: python -m fleet.sim.leash PARENT_PID PROGRAM ARG...", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        print(f"fleet: prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}",
              file=sys.stderr)
        return 3
    if os.getppid() != int(args[0]):  # the parent went before the leash was on
        return 3
    os.execv(args[1], args[1:])
    return 3  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
