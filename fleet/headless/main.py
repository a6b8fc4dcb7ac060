"""Run one headless command: parse, open the engine, map errors to exit codes.

Errors reach stderr as one plain line (`fleet: ...`), or one `FILE:LINE: key:
message` line per profile problem; never a traceback for bad input.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from fleet.errors import FleetError
from fleet.headless.commands import HANDLERS
from fleet.headless.output import Output
from fleet.headless.parser import build_parser
from fleet.profile import ProfileError, load_profile


def default_profile() -> str:
    return os.environ.get("FLEET_PROFILE") or "demo"


def main(argv: list[str]) -> int:
    argv, command_argv = _split_command(argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    args.argv = command_argv
    out = Output(args.format or "table")
    try:
        if args.command == "profile":
            if args.profile_command == "new":
                from fleet.headless.cmd_profile import new

                return new(args, out)
            return _profile_check(args, out)
        return asyncio.run(_run(args, out))
    except KeyboardInterrupt:
        return 130
    except ProfileError as err:
        print(str(err), file=sys.stderr)
        return err.exit_code
    except FleetError as err:
        print(f"fleet: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        # `fleet ... | head`: the reader went away; that is not our failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """`exec web1 -- uname -a`: what follows `--` is the remote command."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _profile_check(args, out: Output) -> int:
    profile = load_profile(args.file)
    summary = (f"{profile.path}: ok: profile {profile.name!r}, {len(profile.sites)} site(s), "
               f"{len(profile.jumps)} jump(s), {len(profile.deployments)} deployment(s), "
               f"{len(profile.nodes)} node(s)")
    out.record({"file": str(profile.path), "ok": True, "name": profile.name}, summary)
    return 0


async def _run(args, out: Output) -> int:
    from fleet.engine import Engine

    handler = HANDLERS[args.command]
    engine = await Engine.open(args.profile or default_profile(),
                               read_only=bool(args.read_only))
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await handler(engine, args, out)
    except asyncio.CancelledError:
        return 0 if args.command == "serve" else 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await engine.close()
