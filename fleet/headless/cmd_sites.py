"""`fleet --headless site status`: every site, local or reached over SSH
(fleet.sites.status). Exit 0 when every site answered, 1 when some are away.
`fleet --headless site install SITE`: this fleet version on a remote site's
agent host (fleet.sites.install); progress on stderr, one record on stdout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from fleet import records as rec
from fleet.headless.output import Output

if TYPE_CHECKING:
    from fleet.engine import Engine

SITE_COLUMNS = [("site", "site"), ("where", "where"), ("connected", "connected"),
                ("version", "version"), ("lag", "lag"), ("_heard", "last heard")]


async def site(engine: "Engine", args, out: Output) -> int:
    if args.site_command == "install":
        return await install(engine, args, out)
    return await status(engine, args, out)


async def install(engine: "Engine", args, out: Output) -> int:
    from fleet.sites.install import Options
    from fleet.sites.install import install as install_site

    def say(line: str) -> None:
        out.error(line)

    options = Options(venv=args.venv, wheels=Path(args.wheels) if args.wheels else None,
                      unit=not args.no_unit, profile_path=args.profile_path)
    row = await install_site(engine, args.site, options, say)
    verb = {"already": "already", "installed": "installed", "upgraded": "upgraded to"}
    text = (f"{row['site']}: {verb[row['action']]} fleet {row['version']} in {row['venv']} "
            f"on {row['where']}; profile {row['profile']}; unit: {row['unit_state']}")
    out.record(row, text)
    return 0


async def status(engine: "Engine", args, out: Output) -> int:
    from fleet.sites.status import last_known_text, site_status

    if not engine.profile.sites:
        out.records([], SITE_COLUMNS, empty="no sites in this profile")
        return 0
    now = time.time()
    rows = await site_status(engine)
    for row in rows:
        row["_heard"] = rec.ago(row["last_heard"], now) if row["where"] != "local" else "now"
        if out.format != "table":
            row["last_heard"] = rec.iso(row["last_heard"])
            if row["last_known"]:
                row["last_known"]["last_heard"] = rec.iso(row["last_known"]["last_heard"])
    out.records(rows, SITE_COLUMNS)
    if out.format == "table":
        for row in rows:
            if row["reason"]:
                out.text(f"{row['site']}: {row['reason']}; last known: "
                         f"{last_known_text(row['last_known'])}")
            elif row["skew"]:  # connected, to another fleet version
                out.text(f"{row['site']}: {row['skew']}")
    return 0 if all(row["connected"] for row in rows) else 1


HANDLERS: dict = {"site": site}
