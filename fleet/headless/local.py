"""Run a headless command in this process: open the engine, run the handler,
stop on SIGINT/SIGTERM within deadlines, close (what fleet.headless.main does
when no running fleet runs the command for it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from fleet.headless.output import Output
from fleet.headless.signals import CLOSE_SECONDS, COMMAND_SECONDS, SignalStop

#: how long tasks still running after the engine closed get to end
LEFTOVER_SECONDS = 1.0


def run_here(args, out: Output) -> int:
    if args.command == "profile":
        if args.profile_command == "new":
            from fleet.headless.cmd_profile import new

            return new(args, out)
        return _profile_check(args, out)
    stops: list[SignalStop] = []
    try:
        return asyncio.run(_run(args, out, stops))
    finally:
        for stop in stops:
            stop.disarm()


def _profile_check(args, out: Output) -> int:
    from fleet.profile import load_profile

    profile = load_profile(args.file)
    summary = (f"{profile.path}: ok: profile {profile.name!r}, {len(profile.sites)} site(s), "
               f"{len(profile.jumps)} jump(s), {len(profile.deployments)} deployment(s), "
               f"{len(profile.nodes)} node(s)")
    out.record({"file": str(profile.path), "ok": True, "name": profile.name}, summary)
    return 0


async def _run(args, out: Output, stops: list[SignalStop]) -> int:
    stopped_code = 0 if args.command == "serve" else 130
    # the handlers first: a signal while the store opens stops fleet too
    stop = SignalStop(asyncio.current_task(), exit_code=stopped_code)
    stops.append(stop)
    try:
        from fleet.engine import Engine
        from fleet.headless.commands import HANDLERS
        from fleet.headless.main import default_profile

        engine = await Engine.open(args.profile or default_profile(),
                                   read_only=bool(args.read_only),
                                   site=_served_site(args), remote=_remote_for(args))
        command = asyncio.ensure_future(HANDLERS[args.command](engine, args, out))
        stop.watch(command)
        try:
            code = await _outcome(command, stop, args.command)
        finally:
            await _close(engine, stop)
        await _end_leftovers(code, stop)
        return code
    except asyncio.CancelledError:
        return stopped_code
    finally:
        stop.remove()


def _served_site(args) -> str | None:
    """The one site `agent --site` and `serve --site` serve (a site host's)."""
    return args.site if args.command in ("agent", "serve") else None


def _remote_for(args):
    """How this command reaches remote sites: through their agents (fleet.sites.hub),
    except where this process serves one site itself (`agent`, `serve --site`)."""
    if args.command == "agent" or _served_site(args):
        return None
    from fleet.sites.hub import SiteHub

    return SiteHub


async def _outcome(command: asyncio.Task, stop: SignalStop, name: str) -> int:
    """The command's exit code; after a signal, what it returns within
    COMMAND_SECONDS of the signal, else the stopped code."""
    signalled = asyncio.ensure_future(stop.stopped.wait())
    try:
        await asyncio.wait({command, signalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
    if not command.done():  # cancelled by the signal: its own cleanup runs now
        await asyncio.wait({command}, timeout=stop.deadline(COMMAND_SECONDS))
    if not command.done():
        print(f"fleet: {name} did not stop within {COMMAND_SECONDS:g}s; closing anyway",
              file=sys.stderr)
        command.cancel()
        return stop.exit_code
    if command.cancelled():
        return stop.exit_code
    return command.result()


async def _close(engine, stop: SignalStop) -> None:
    """engine.close(), within CLOSE_SECONDS of a signal (or of now)."""
    closing = asyncio.ensure_future(engine.close())
    done, _ = await asyncio.wait({closing}, timeout=stop.deadline(CLOSE_SECONDS - 1))
    if not done:
        print("fleet: closing took too long; exiting anyway", file=sys.stderr)
        closing.cancel()
        return
    closing.result()


async def _end_leftovers(code: int, stop: SignalStop) -> None:
    """Tasks still running once the engine is closed get LEFTOVER_SECONDS to end
    after a cancel. asyncio.run would wait for ever for one that swallows it; such
    a process ends here instead, its output flushed (everything is closed)."""
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in left:
        task.cancel()
    if not left:
        return
    _, pending = await asyncio.wait(left, timeout=min(LEFTOVER_SECONDS,
                                                      stop.deadline(CLOSE_SECONDS)))
    if pending:
        names = ", ".join(sorted(t.get_name() for t in pending))
        print(f"fleet: exiting without waiting for {names}", file=sys.stderr)
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
