"""`fleet` without --headless: parse the console's options and run the app."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from fleet.profile import ProfileError, load_profile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet", description="fleet: a terminal console for bare-metal fleets. "
        "Add --headless for the scripting CLI (fleet --headless --help).",
        epilog="Keys: ? lists them with their ids; remap any in ~/.config/fleet/config.yaml "
        "(keymap: {verb.lease: ctrl+l}).")
    parser.add_argument("--profile", "-p", metavar="NAME|PATH",
                        default=os.environ.get("FLEET_PROFILE") or "demo",
                        help="profile name or YAML path (default: $FLEET_PROFILE, else demo)")
    parser.add_argument("--theme", metavar="NAME", default=os.environ.get("FLEET_THEME"),
                        help="console theme: fleet-dark (default), fleet-light, high-contrast, "
                        "k9s, or a themes/*.yaml of your own (default: $FLEET_THEME, else "
                        "`theme:` in ~/.config/fleet/config.yaml)")
    parser.add_argument("--read-only", action="store_true",
                        help="disable every change (lease, release, switches)")
    return parser


def main(argv: list[str], services: Sequence = ()) -> int:
    """`services`: see FleetApp (started with the engine, closed before it)."""
    args = build_parser().parse_args(argv)
    try:
        profile = load_profile(args.profile)
    except ProfileError as err:
        print(str(err), file=sys.stderr)
        return err.exit_code
    from fleet.tui.app import FleetApp

    app = FleetApp(profile, read_only=args.read_only, theme_name=args.theme,
                   services=services)
    app.run()
    return app.return_code or 0
