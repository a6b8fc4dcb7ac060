"""Run one headless command: parse, open the engine, map errors to exit codes.

Errors reach stderr as one plain line (`fleet: ...`), or one `FILE:LINE: key:
message` line per profile problem; never a traceback for bad input.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from fleet.errors import FleetError
from fleet.headless.output import Output
from fleet.headless.parser import build_parser

# Light on purpose: a command a running fleet runs (fleet.headless.control)
# needs no engine, asyncio, handlers or profile loader; fleet.headless.local
# imports those when the command runs here.


def default_profile() -> str:
    return os.environ.get("FLEET_PROFILE") or "demo"


def main(argv: list[str], prepare_local: Callable[[], None] | None = None) -> int:
    """`prepare_local`: called before the command runs in this process (the
    installed command's log file: a command a running fleet runs logs there)."""
    argv, command_argv = _split_command(argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    args.argv = command_argv
    out = Output(args.format or "table")
    try:
        if not args.no_control:
            from fleet.headless.control.client import through_running_fleet

            code = through_running_fleet(argv, command_argv, args)
            if code is not None:
                return code
        if prepare_local is not None:
            prepare_local()
        from fleet.headless.local import run_here

        return run_here(args, out)
    except KeyboardInterrupt:
        return 130
    except FleetError as err:
        print(error_line(err), file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        # `fleet ... | head`: the reader went away; that is not our failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def error_line(err: FleetError) -> str:
    """`fleet: ...`; a profile's problems as their own FILE:LINE: lines."""
    from fleet.profile import ProfileError

    return str(err) if isinstance(err, ProfileError) else f"fleet: {err}"


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """`exec web1 -- uname -a`: what follows `--` is the remote command."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []
