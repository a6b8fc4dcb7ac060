"""`fleet --headless site status`: every site, local or reached over SSH
(fleet.sites.status). Exit 0 when every site answered, 1 when some are away."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fleet import records as rec
from fleet.headless.output import Output

if TYPE_CHECKING:
    from fleet.engine import Engine

SITE_COLUMNS = [("site", "site"), ("where", "where"), ("connected", "connected"),
                ("version", "version"), ("lag", "lag"), ("_heard", "last heard")]


async def site(engine: "Engine", args, out: Output) -> int:
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
