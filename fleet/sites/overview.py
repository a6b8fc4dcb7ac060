"""Every site of a console's profile as it stands now, from what the console
already holds: this process's own sites, and the remote ones as its replica and
held channels know them. Nothing here opens a connection (`site status` does:
fleet.sites.status), so a console can ask it every time a site's row moves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleet import records as rec
from fleet.sites.remote import where
from fleet.sites.replica import console_version

if TYPE_CHECKING:
    from fleet.engine import Engine


async def overview(engine: "Engine") -> list[dict[str, Any]]:
    """One record per site, in the profile's order: site, remote, where, connected,
    version, lag (events not yet copied), last_heard, since, reason (why it is
    away, dated), cursor."""
    hub = engine.remote
    rows = {}
    if hub is not None:
        rows = {r.site: r for r in await (await hub.replica()).sites()}
    out = []
    for site in engine.profile.sites:
        remote = hub is not None and site.name in getattr(hub, "sites", {})
        if not remote:
            here = site.name in engine.here
            out.append({"site": site.name, "remote": False,
                        "where": "local" if here else "elsewhere (no agent)",
                        "connected": here, "version": console_version(), "lag": 0,
                        "last_heard": None, "since": None, "reason": None, "cursor": None})
            continue
        row = rows.get(site.name)
        connected = bool(row is not None and row.connected and hub.is_connected(site.name))
        out.append({
            "site": site.name, "remote": True,
            "where": where(site, engine.profile, hub.route(site.name)),
            "connected": connected, "version": row.version if row else None,
            # away: how far behind is unknown
            "lag": row.site_last_event - row.cursor if row and connected else None,
            "last_heard": row.last_heard if row else None,
            "since": row.since if row else None,
            "reason": None if connected else await hub.away_reason(site.name),
            "cursor": row.cursor if row else 0})
    return out


def away_line(record: dict[str, Any]) -> str:
    """`rack2 away since 10:42:07 (last heard 10:41:55)`."""
    heard = (f"last heard {rec.clock(record['last_heard'])}" if record["last_heard"]
             else "never heard from")
    if record["since"] is None:
        return f"{record['site']} not connected yet ({heard})"
    return f"{record['site']} away since {rec.clock(record['since'])} ({heard})"
