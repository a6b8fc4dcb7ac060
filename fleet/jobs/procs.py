"""Process facts from /proc: is a PID alive (this VM reaps slowly, so `kill -0`
can call a dead process alive), which processes are in a group, kill a group
and wait until it is really gone."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses
    rest = raw[raw.rfind(")") + 2:].split()
    return rest  # rest[0] = state, rest[2] = pgrp, rest[19] = starttime


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


_BTIME = _boot_time()


def pid_alive(pid: int | None, *, started_before: float | None = None) -> bool:
    """True if `pid` runs and is not a zombie. With `started_before` (epoch), a
    process that started later is a reused PID, so it counts as dead."""
    if not pid or pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    if started_before is not None:
        started = _BTIME + int(fields[19]) / _CLK_TCK
        if started > started_before + 1.0:
            return False
    return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or fields[0] in ("Z", "X", "x"):
            continue
        if int(fields[2]) == pgid:
            out.append(int(entry))
    return out


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def kill_group_and_wait(pgid: int, timeout: float = 5.0) -> bool:
    """SIGKILL the group and wait until /proc shows none of it alive."""
    kill_group(pgid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        kill_group(pgid)
        await asyncio.sleep(0.05)
    return not group_members(pgid)
