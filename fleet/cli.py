"""The `fleet` entry point: the console, or with --headless the scripting CLI.

Kept tiny so that `fleet --headless ...` never imports Textual: the console
package is imported only when the console is what was asked for.
"""

from __future__ import annotations

import os
import sys
from typing import Callable


def main(argv: list[str] | None = None, prepare: Callable[[], None] | None = None) -> int:
    """`prepare`: called before fleet's own work starts in this process (run()
    sets up the log file; a headless command a running fleet runs needs none)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--headless" in argv:
        argv.remove("--headless")
        from fleet.headless.main import main as headless_main

        return headless_main(argv, prepare_local=prepare)
    if prepare is not None:
        prepare()
    from fleet.tui.main import main as console_main

    return console_main(argv, services=[_control_socket])


async def _control_socket(engine):
    """The console's control socket: `fleet --headless CMD` beside it runs on the
    console's engine (warm SSH connections). Given from here because the console
    must not import fleet.headless (sibling layers); imported when the engine is
    open, so the console's start does not wait for it."""
    from fleet.headless.control.server import start_control

    return await start_control(engine)


def _silence_warnings() -> None:
    """A user of the command sees fleet's own lines, never a Python warning
    (asyncssh's import alone raises ten CryptographyDeprecationWarnings about
    DSA). This wins over -W and PYTHONWARNINGS on purpose: those are for
    developers of Python code, who meet the warnings in the test suite (tests
    call main(), which leaves the filters alone)."""
    import warnings

    warnings.simplefilter("ignore")


def _log_to_file() -> None:
    """Library log lines go to the log file, fleet's warnings also to stderr;
    the console's terminal gets none (fleet.logsetup)."""
    import logging

    from fleet import logsetup
    from fleet.paths import Paths

    headless = "--headless" in sys.argv[1:]
    logsetup.configure(Paths.default().log_file,
                       stderr_level=logging.WARNING if headless else None)


def run() -> None:
    """The installed `fleet` command and `python -m fleet`: main(), then exit
    without the interpreter's teardown. By then everything is closed (stores,
    connections, the terminal); tearing down a heap of 200 SSH connections took
    a cold `fleet --headless exec` another ~0.1 s. Tests call main() instead.

    First, before anything imports asyncssh, Python's warnings are silenced
    and the library lookup of fleet.libfind is installed: importing fleet itself
    changes neither."""
    _silence_warnings()
    from fleet import libfind

    libfind.install()
    code = main(prepare=_log_to_file)
    if "logging" in sys.modules:  # not imported by a command a running fleet ran
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with that descriptor closed (`2>&-`)
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head) or stream
            pass
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    run()
