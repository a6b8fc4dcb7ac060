"""How the console reaches a site's agent host: like a node (fleet.sites.remote)."""

from __future__ import annotations

import textwrap

import pytest

from fleet.access.routes import OperatorIPv6, RouteKind
from fleet.profile import parse_profile
from fleet.sites.remote import agent_node, agent_route, where

PROFILE = """\
version: 1
operator:
  ssh: {user: ops}
  beachheads: [10.5.0.0/24]
jumps:
  - {name: gw1, address: 198.51.100.1}
  - {name: gw2, address: 198.51.100.2}
  - {name: inner, address: 10.90.0.2, via: gw1}
sites:
  - name: rack2
    jumps: [gw1, gw2]
    agent: %s
"""


def route_of(agent: str, operator6: OperatorIPv6 = OperatorIPv6()):
    profile = parse_profile(textwrap.dedent(PROFILE % agent), "p.yaml")
    site = profile.site("rack2")
    return agent_route(site, profile, operator6), where(site, profile,
                                                        agent_route(site, profile, operator6))


@pytest.mark.parametrize("agent, kind, target, chain, alternatives, shown", [
    ("{host: 10.92.0.2, via: inner}", RouteKind.JUMP, "10.92.0.2", ("gw1", "inner"), (),
     "ops@10.92.0.2 via gw1 > inner"),
    ("{host: 10.92.0.2}", RouteKind.JUMP, "10.92.0.2", ("gw1",), (("gw2",),),
     "ops@10.92.0.2 via gw1 (then gw2)"),
    ("{host: 10.5.0.9, user: fleet, port: 2222}", RouteKind.DIRECT_BEACHHEAD, "10.5.0.9", (),
     (), "fleet@10.5.0.9:2222"),
    ("{host: 203.0.113.9}", RouteKind.DIRECT_PUBLIC_IPV4, "203.0.113.9", (), (),
     "ops@203.0.113.9"),
    ("{host: site2.example.net}", RouteKind.JUMP, "site2.example.net", ("gw1",), (("gw2",),),
     "ops@site2.example.net via gw1 (then gw2)"),
])
def test_the_agent_host_is_routed_like_a_node(agent, kind, target, chain, alternatives, shown):
    route, text = route_of(agent)
    assert (route.kind, route.target, route.chain, route.alternatives) == (
        kind, target, chain, alternatives)
    assert text == shown


def test_a_host_name_of_a_site_without_jumps_is_reached_directly():
    profile = parse_profile("version: 1\nsites:\n  - name: r\n    agent: {host: h.example.net}\n",
                            "p.yaml")
    route = agent_route(profile.site("r"), profile, OperatorIPv6())
    assert (route.kind.direct, route.target, route.chain) == (True, "h.example.net", ())


def test_an_ipv6_agent_host_needs_the_operators_ipv6():
    profile = parse_profile("version: 1\nsites:\n  - name: r\n    agent: {host: '2001:db8::5'}\n",
                            "p.yaml")
    site = profile.site("r")
    assert agent_node(site).ipv6 == "2001:db8::5" and agent_node(site).address is None
    assert agent_route(site, profile, OperatorIPv6(global_=True)).kind is RouteKind.DIRECT_IPV6
    unreachable = agent_route(site, profile, OperatorIPv6())
    assert not unreachable.reachable and "no routable IPv6" in unreachable.reason
