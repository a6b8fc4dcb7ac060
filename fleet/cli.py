"""The `fleet` entry point: the console, or with --headless the scripting CLI.

Kept tiny so that `fleet --headless ...` never imports Textual: the console
package is imported only when the console is what was asked for.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--headless" in argv:
        argv.remove("--headless")
        from fleet.headless.main import main as headless_main

        return headless_main(argv)
    from fleet.tui.main import main as console_main

    return console_main(argv)


if __name__ == "__main__":
    sys.exit(main())
