"""`site status`: every site of the profile, as the console sees it now.

A local site (no `agent:`) is this host's store. A remote site is reached over
SSH (fleet.sites.remote), greeted and synced into the console's replica without
following; one that cannot be reached is shown as away, with a dated reason and
what the replica last knew of it. Sites are asked at once, each bounded by the
pool's connect timeout and the replica's call timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet import records as rec
from fleet.core.config import SiteConfig
from fleet.sites.client import ChannelLost, SiteError
from fleet.sites.protocol import PROTOCOL
from fleet.sites.remote import SiteUnreachable, agent_channel, agent_route, where
from fleet.sites.replica import Replica, console_version

if TYPE_CHECKING:
    from fleet.engine import Engine


def replica_path(engine: "Engine") -> Path:
    return engine.paths.state_dir / f"replica-{engine.profile.name}.db"


async def site_status(engine: "Engine", *, call_timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """One record per site, in the profile's order. In a process that holds the
    sites' channels (a console, a serve: engine.remote holding), its replica is
    read as it is; otherwise each remote site is reached and synced first."""
    if getattr(engine.remote, "holding", False):
        return await _records(engine, await engine.remote.replica())  # type: ignore[union-attr]
    async with await Replica.open(replica_path(engine), call_timeout_s=call_timeout_s) as replica:
        return await _records(engine, replica)


async def _records(engine: "Engine", replica: Replica) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(
        _local(site) if site.agent is None or site.name in engine.here
        else _remote(engine, replica, site) for site in engine.profile.sites)))


async def _local(site: SiteConfig) -> dict[str, Any]:
    return {"site": site.name, "where": "local", "connected": True,
            "version": console_version(), "protocol": PROTOCOL, "lag": 0,
            "last_heard": time.time(), "reason": None, "skew": None, "last_known": None}


async def _remote(engine: "Engine", replica: Replica, site: SiteConfig) -> dict[str, Any]:
    route = agent_route(site, engine.profile, engine.access.operator6)
    skew = None
    away = "unreachable"
    try:
        if not getattr(engine.remote, "holding", False):
            # (a process that holds the channels, a console or a serve, keeps the
            # replica current itself: it is read as it is)
            async with agent_channel(engine, site, route) as client:
                await replica.sync(site.name, client, follow=False)
    except SiteUnreachable as err:
        await replica.mark_away(site.name, str(err))
    except ChannelLost as err:  # sync marked it away; this reason holds the agent's last words
        await replica.mark_away(site.name, str(err))
    except SiteError as err:  # the agent answered, and refused (sync marked it away)
        away = "refused by its agent"
        if err.kind == "version":
            skew = (f"version skew: {err.message}; `fleet --headless site install "
                    f"{site.name}` puts this console's there")
            await replica.mark_away(site.name, skew)
    row = await replica.store.site(site.name)
    if row is None:  # held, and not heard from yet
        await replica.mark_away(site.name, "not connected yet")
        row = await replica.store.site(site.name)
    assert row is not None
    if row.connected and row.version not in (None, console_version()):
        skew = (f"agent runs fleet {row.version}, this console {console_version()} (same "
                f"site protocol {PROTOCOL}: it works; `fleet --headless site install "
                f"{site.name}` puts fleet {console_version()} there)")
    record: dict[str, Any] = {
        "site": site.name, "where": where(site, engine.profile, route),
        "connected": row.connected, "version": row.version, "protocol": PROTOCOL,
        # away: how far behind is unknown (last_known says up to where it was copied)
        "lag": row.site_last_event - row.cursor if row.connected else None,
        "last_heard": row.last_heard, "reason": None, "skew": skew, "last_known": None}
    if not row.connected:
        via = f" via {route.via}" if route.chain else ""
        record["reason"] = f"{away}{via} since {rec.clock(row.since)}: {row.error}"
        known = await replica.last_known(site.name, events=0)
        assert known is not None
        states = Counter(m["state"] for m in known.machines)
        record["last_known"] = {"machines": len(known.machines), "by_state": dict(states),
                                "nodes": len(known.nodes), "cursor": known.cursor,
                                "last_heard": known.last_heard}
    return record


def last_known_text(known: dict[str, Any] | None) -> str:
    """`2 machines (1 leased, 1 discovered), 0 nodes (stale: last heard 10:41:55)`."""
    if not known or known["last_heard"] is None:
        return "never heard from"
    states = ", ".join(f"{n} {s}" for s, n in sorted(known["by_state"].items()))
    return (f"{known['machines']} machines" + (f" ({states})" if states else "")
            + f", {known['nodes']} nodes (stale: last heard {rec.clock(known['last_heard'])})")
