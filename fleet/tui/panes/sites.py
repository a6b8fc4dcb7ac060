from __future__ import annotations

from typing import Any, Hashable

from fleet import records
from fleet.tui.panes.base import Pane, clock_text
from fleet.tui.widgets.linetable import Column


def _lag(value: Any, _now: float) -> str:
    return "-" if value is None else str(value)


class SitesPane(Pane):
    """Every site of the profile: this process's own, and the remote ones as the
    console's replica and held channels know them (fleet.sites.overview): where
    it is reached, connected or away (and why, since when), the agent's version,
    how many of its events are not copied yet, when it was last heard from."""

    kind = "sites"
    title = "Sites"
    number = 6
    COLUMNS = [
        Column("site", "Site", 10),
        Column("where", "Where", 28),
        Column("state", "State", 9, styled=True),
        Column("version", "Version", 8),
        Column("lag", "Lag", 5, fmt=_lag),
        Column("last_heard", "Last heard", 14, fmt=clock_text),
        Column("reason", "Away because", 30),
    ]
    SORT = "site"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        #: site -> its record (fleet.sites.overview), for the details view
        self.records: dict[str, dict[str, Any]] = {}

    def row(self, r: dict[str, Any]):
        self.records[r["site"]] = r
        state = "connected" if r["connected"] else "away"
        local = r["where"] == "local"
        values = (r["site"], r["where"], "local" if local else state,
                  "(this)" if local else r["version"], r["lag"], r["last_heard"],
                  _why(r["reason"]) if r["reason"] else None)
        return r["site"], values, {"state": state}

    async def record(self, key: Hashable) -> tuple[str, dict]:
        r = dict(self.records[str(key)])
        for field in ("last_heard", "since"):
            r[field] = records.iso(r[field])
        return f"site {key}", r

    def record_subject(self, key: Hashable, record: dict) -> str | None:
        return None  # its events are in the events pane, marked with the site


def _why(reason: str) -> str:
    """`since 10:42:07: Connect call failed ...`: the reason without the `site
    rack2 unreachable via gw` the row already says."""
    if " since " in reason:
        return "since " + reason.split(" since ", 1)[1]
    return reason.split(": ", 1)[1] if ": " in reason else reason
