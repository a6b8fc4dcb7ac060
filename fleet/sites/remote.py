"""The console's channel to a remote site's agent: an SSH session to the site's
agent host (its profile `agent:` block), opened through the access layer's
route planner and pool (the operator's key; host keys checked against
known_hosts and pins, never accepted silently), running the agent command
with `--site NAME` on it.

The agent host is reached like a node: through jump `via` when given, else by
the planner's rules (public address, IPv6, beachheads, the site's jumps). A
host name without `via` goes through the site's jumps (which resolve it) or,
when the site has none, straight to the name.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import shlex
from typing import TYPE_CHECKING, AsyncIterator

import asyncssh

from fleet.access.pool import AccessError
from fleet.access.routes import Route, RouteKind, plan
from fleet.core.config import SiteConfig, agent_host_name
from fleet.core.model import Node
from fleet.errors import EnvironmentProblem
from fleet.sites.client import ChannelLost, SiteClient
from fleet.sites.protocol import one_line

if TYPE_CHECKING:
    from fleet.engine import Engine
    from fleet.profile import Profile


class SiteUnreachable(EnvironmentProblem):
    """The channel to a site's agent did not open (no route, SSH refused...)."""


def agent_node(site: SiteConfig) -> Node:
    """The agent host as the pool sees it: a node named after its site (the
    name host keys are matched and pinned under)."""
    agent = site.agent
    assert agent is not None, f"site {site.name} runs here"
    try:
        address = ipaddress.ip_address(agent.host)
    except ValueError:
        address = None
    return Node(name=agent_host_name(site.name), site=site.name, port=agent.port, user=agent.user,
                address=agent.host if address is None or address.version == 4 else None,
                ipv6=agent.host if address is not None and address.version == 6 else None)


def agent_route(site: SiteConfig, profile: "Profile", operator6) -> Route:
    agent = site.agent
    assert agent is not None, f"site {site.name} runs here"
    node = agent_node(site)

    def through(chains: list[tuple[str, ...]], reason: str) -> Route:
        return Route(node.name, RouteKind.JUMP, agent.host, agent.port, chains[0],
                     tuple(chains[1:]), reason)

    if agent.via:
        return through([tuple(j.name for j in profile.jump_chain(agent.via))],
                       f"agent host {agent.host} via jump {agent.via}")
    try:
        ipaddress.ip_address(agent.host)
    except ValueError:  # a host name: the planner reads addresses only
        chains = [tuple(j.name for j in profile.jump_chain(n)) for n in site.jumps]
        if chains:
            return through(chains, f"agent host {agent.host} via site {site.name}'s jumps")
        return Route(node.name, RouteKind.DIRECT_PUBLIC_IPV4, agent.host, agent.port,
                     reason=f"agent host name {agent.host}, reached directly")
    return plan(node, profile, operator6)


def where(site: SiteConfig, profile: "Profile", route: Route | None = None) -> str:
    """`fleet@10.92.0.2 via gw3` (or `local`), as the operator reads it."""
    agent = site.agent
    if agent is None:
        return "local"
    user = agent.user or profile.operator.ssh.user
    port = f":{agent.port}" if agent.port != 22 else ""
    text = f"{user}@{agent.host}{port}"
    return f"{text} via {route.via}" if route is not None and route.chain else text


@contextlib.asynccontextmanager
async def agent_channel(engine: "Engine", site: SiteConfig, route: Route
                        ) -> AsyncIterator[SiteClient]:
    """A client on the agent of `site` (a remote one) while inside; the remote
    agent is sent end of input and the session closed after. SiteUnreachable
    when the session does not open."""
    agent = site.agent
    assert agent is not None, f"site {site.name} runs here"
    if not route.reachable:
        raise SiteUnreachable(f"no route to agent host {agent.host}: {route.reason}")
    pool = await engine.access.get_pool()
    command = f"{agent.command} --site {shlex.quote(site.name)}"
    try:
        async with pool.session(agent_node(site), route) as link:
            try:
                proc = await link.conn.create_process(command, encoding=None)
            except (asyncssh.Error, OSError) as err:
                raise SiteUnreachable(f"cannot start the agent: {err}") from None

            async def write(data: bytes) -> None:
                proc.stdin.write(data)
                await proc.stdin.drain()

            client = SiteClient(proc.stdout.read, write, site=site.name).start()
            # stderr is read all along: left unread, it would fill the channel's
            # window and hold up the frames on stdout
            last_words: collections.deque[str] = collections.deque(maxlen=1)
            drain = asyncio.ensure_future(_drain(proc.stderr, last_words))
            try:
                yield client
            except ChannelLost as err:  # the agent's own words say why it ended
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(drain), 2.0)
                said = last_words[0] if last_words else ""
                raise ChannelLost(f"{err}: {said}" if said else str(err)) from None
            finally:
                await _end(proc)
                drain.cancel()
                await client.close()
    except AccessError as err:
        raise SiteUnreachable(str(err)) from None


async def _drain(stderr, last_words: "collections.deque[str]") -> None:
    """Keep the agent's last line on stderr (`fleet: ...`, a shell's `not found`)."""
    with contextlib.suppress(Exception):
        while line := await stderr.readline():
            if text := line.decode(errors="replace").strip():
                last_words.append(one_line(text, 300))


async def _end(proc) -> None:
    with contextlib.suppress(Exception):
        proc.stdin.write_eof()
    try:
        await asyncio.wait_for(proc.wait_closed(), 5.0)
    except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing: the channel goes anyway
        proc.close()
