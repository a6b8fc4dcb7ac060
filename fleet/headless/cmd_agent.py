"""`fleet --headless agent`: this site served over stdin/stdout (fleet.sites.agent),
as a console starts it with `ssh site-host fleet --headless agent`.

stdout carries frames only; errors before serving (profile, store, an unknown
--site) are one `fleet: ...` line on stderr with the usual exit code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.errors import BadInput
from fleet.sites.agent import SiteAgent
from fleet.sites.channel import ChannelClosed, StdioChannel
from fleet.sites.identity import ssh_identity

if TYPE_CHECKING:
    from fleet.engine import Engine


def served_site(engine: "Engine", name: str | None) -> str:
    sites = [s.name for s in engine.profile.sites]
    if name is None:
        if len(sites) == 1:
            return sites[0]
        raise BadInput(f"the profile has {len(sites)} sites ({', '.join(sites) or 'none'}); "
                       "name this agent's with --site")
    if name not in sites:
        raise BadInput(f"unknown site {name!r}; the profile has: {', '.join(sites) or 'none'}")
    return name


async def agent(engine: "Engine", args, out) -> int:
    site = served_site(engine, args.site)
    channel = await StdioChannel().open()
    server = SiteAgent(engine, site, ssh_identity(), channel.send)
    await server.prepare()
    try:
        await server.serve(channel.reader)
    except ChannelClosed:  # the console went away: nothing left to answer
        pass
    finally:
        channel.close()
    return 0


HANDLERS: dict = {"agent": agent}
