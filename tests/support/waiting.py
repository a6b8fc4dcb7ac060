"""Waiting for a condition in async tests, with what was last seen in the failure."""

from __future__ import annotations

import asyncio
import time


async def until(what: str, check, timeout: float, every: float = 0.3):
    """`await check()` every `every` seconds until it is truthy (returned) or
    `timeout` passes (AssertionError naming `what` and the last value)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
