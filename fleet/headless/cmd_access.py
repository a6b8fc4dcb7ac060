"""Headless commands of the access area; merged into commands.HANDLERS.

Each handler is `async def handler(engine, args, out) -> int` (exit code).
"""

from __future__ import annotations

HANDLERS: dict = {}
