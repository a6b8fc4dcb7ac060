"""The route planner's rules, as properties (hypothesis) and worked examples."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fleet.access.routes import (OperatorIPv6, RouteKind, classify_operator_ipv6,
                                 is_public_ipv4, operator_ipv6, plan)
from fleet.core.model import Node
from fleet.profile import JumpConfig, OperatorConfig, Profile, SiteConfig

JUMPS = (JumpConfig("gw1", "10.90.0.2"), JumpConfig("gw2", "10.90.0.3"),
         JumpConfig("inner", "10.91.0.2", via="gw1"), JumpConfig("deeper", "10.92.0.2",
                                                                  via="inner"))


def profile(beachheads=(), site_jumps=("gw1", "gw2"), subnets=("10.91.0.0/24",)) -> Profile:
    return Profile(
        version=1, name="t", path=Path("t.yaml"),
        operator=OperatorConfig(beachheads=tuple(ipaddress.IPv4Network(b) for b in beachheads)),
        jumps=JUMPS,
        sites=(SiteConfig("rack1", tuple(ipaddress.IPv4Network(s) for s in subnets),
                          tuple(site_jumps)),))


# -- strategies --------------------------------------------------------------------

private4 = st.one_of(
    st.integers(0, 2**24 - 1).map(lambda i: str(ipaddress.IPv4Address(0x0A000000 + i))),
    st.integers(0, 2**16 - 1).map(lambda i: str(ipaddress.IPv4Address(0xC0A80000 + i))),
    st.integers(0, 2**20 - 1).map(lambda i: str(ipaddress.IPv4Address(0xAC100000 + i))))
public4 = st.integers(0x01000000, 0xDFFFFFFF).map(
    lambda i: str(ipaddress.IPv4Address(i))).filter(is_public_ipv4)
global6 = st.integers(0x2000 << 112, (0x3FFF << 112) - 1).map(
    lambda i: str(ipaddress.IPv6Address(i)))
ula6 = st.integers(0xFD00 << 112, (0xFDFF << 112) - 1).map(
    lambda i: str(ipaddress.IPv6Address(i)))
link6 = st.integers(0, 2**64 - 1).map(lambda i: str(ipaddress.IPv6Address((0xFE80 << 112) + i)))
any6 = st.one_of(st.none(), global6, ula6, link6, st.just("::1"))
operators = st.builds(OperatorIPv6, st.booleans(), st.booleans())
nets = st.lists(st.tuples(private4, st.integers(8, 32)).map(
    lambda t: str(ipaddress.IPv4Network(f"{t[0]}/{t[1]}", strict=False))), max_size=3)
jump_lists = st.lists(st.sampled_from(["gw1", "gw2", "inner", "deeper"]), unique=True,
                      max_size=4)


def node(address=None, public=None, v6=None, site="rack1") -> Node:
    return Node(name="n", site=site, address=address, public_ipv4=public, ipv6=v6)


# -- properties ----------------------------------------------------------------------

@given(public4, st.one_of(st.none(), private4), any6, operators, nets, jump_lists)
def test_public_ipv4_always_goes_direct(pub, addr, v6, op, beach, jumps):
    r = plan(node(addr, pub, v6), profile(beach, jumps), op)
    assert r.kind is RouteKind.DIRECT_PUBLIC_IPV4
    assert r.target == pub and r.chain == () and pub in r.reason


@given(private4, global6, operators, nets, jump_lists)
def test_global_ipv6_direct_iff_operator_has_global(addr, v6, op, beach, jumps):
    r = plan(node(addr, None, v6), profile(beach, jumps), op)
    assert (r.kind is RouteKind.DIRECT_IPV6) == op.global_
    if op.global_:
        assert r.target == str(ipaddress.IPv6Address(v6))


@given(private4, ula6, operators, nets, jump_lists)
def test_ula_ipv6_direct_iff_operator_has_ula(addr, v6, op, beach, jumps):
    r = plan(node(addr, None, v6), profile(beach, jumps), op)
    assert (r.kind is RouteKind.DIRECT_IPV6) == op.ula


@given(private4, st.one_of(st.none(), link6, st.just("::1")), operators, jump_lists)
def test_link_local_and_loopback_ipv6_never_used(addr, v6, op, jumps):
    r = plan(node(addr, None, v6), profile((), jumps), op)
    assert r.kind is not RouteKind.DIRECT_IPV6


@given(private4, st.integers(8, 32), jump_lists)
def test_beachhead_covering_private_address_goes_direct(addr, prefix, jumps):
    net = str(ipaddress.IPv4Network(f"{addr}/{prefix}", strict=False))
    r = plan(node(addr), profile([net], jumps), OperatorIPv6())
    assert r.kind is RouteKind.DIRECT_BEACHHEAD
    assert r.target == addr and net in r.reason


@given(private4, nets, jump_lists, operators)
def test_private_address_never_direct_without_a_beachhead(addr, beach, jumps, op):
    """The safety rule: fleet never guesses at a private address it has no route to."""
    assume(not any(ipaddress.IPv4Address(addr) in ipaddress.IPv4Network(b) for b in beach))
    r = plan(node(addr, None, None), profile(beach, jumps), op)
    assert r.kind in (RouteKind.JUMP, RouteKind.UNREACHABLE)
    assert (r.kind is RouteKind.JUMP) == bool(jumps)


@given(private4, jump_lists)
def test_jump_chains_follow_site_order_and_via(addr, jumps):
    assume(jumps)
    p = profile((), jumps)
    r = plan(node(addr), p, OperatorIPv6())
    assert r.kind is RouteKind.JUMP and r.target == addr
    assert [c[-1] for c in r.chains] == list(jumps)
    for c in r.chains:
        assert c == tuple(j.name for j in p.jump_chain(c[-1]))
        assert c[0] in ("gw1", "gw2")  # outermost first: always one the operator reaches
    assert jumps[0] in r.reason


@given(st.one_of(st.none(), private4, public4, st.text(max_size=8)), any6, operators, nets,
       jump_lists, st.sampled_from(["rack1", None, "elsewhere"]))
@settings(max_examples=300)
def test_planner_is_total_and_consistent(addr, v6, op, beach, jumps, site):
    r = plan(Node(name="n", site=site, address=addr, ipv6=v6), profile(beach, jumps), op)
    assert r.kind in set(RouteKind)
    assert r.reachable == (r.target is not None)
    assert bool(r.chain) == (r.kind is RouteKind.JUMP)
    assert r.reason
    if r.kind is RouteKind.UNREACHABLE:
        assert r.chains == ()


# -- examples (the reasons people read) --------------------------------------------------

def test_reasons_read_well():
    op = OperatorIPv6()
    assert plan(node("10.91.0.11", "203.0.113.10"), profile(), op).reason == \
        "public IPv4 203.0.113.10"
    assert plan(node("10.91.0.11"), profile(["10.91.0.0/24"]), op).reason == \
        "private 10.91.0.11 covered by beachhead 10.91.0.0/24"
    r = plan(node("10.91.0.11"), profile(), op)
    assert r.reason == "private 10.91.0.11 via site rack1's jumps gw1 (then gw2)"
    assert r.via == "gw1 (then gw2)" and r.alternatives == (("gw2",),)
    assert plan(node("10.91.0.11"), profile(site_jumps=()), op).reason == \
        "no public IPv4, no usable IPv6, 10.91.0.11 is private, and site rack1 declares no jumps"
    deep = plan(node("10.91.0.11"), profile(site_jumps=("deeper",)), op)
    assert deep.chain == ("gw1", "inner", "deeper") and deep.via == "gw1 > inner > deeper"


def test_node_without_site_uses_subnet_match():
    r = plan(node("10.91.0.7", site=None), profile(), OperatorIPv6())
    assert r.kind is RouteKind.JUMP
    r = plan(node("10.99.0.7", site=None), profile(), OperatorIPv6())
    assert r.kind is RouteKind.UNREACHABLE and "no site's subnets" in r.reason


def test_bool_operator_argument_means_global_ipv6():
    assert plan(node("10.1.1.1", v6="2001:db8::1"), profile(site_jumps=()), True).kind \
        is RouteKind.DIRECT_IPV6
    assert plan(node("10.1.1.1", v6="fd00::1"), profile(site_jumps=()), True).kind \
        is RouteKind.UNREACHABLE


def test_operator_ipv6_from_proc_format(tmp_path):
    f = tmp_path / "if_inet6"
    f.write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fe800000000000000000000000000001 02 40 20 80     eth0\n")
    assert operator_ipv6(f) == OperatorIPv6(False, False)
    f.write_text(f.read_text() + "fd770000000000000000000000000001 03 40 00 80      br0\n")
    assert operator_ipv6(f) == OperatorIPv6(False, True)
    f.write_text(f.read_text() + "20010db8000000000000000000000005 04 40 00 80     eth1\n")
    assert operator_ipv6(f) == OperatorIPv6(True, True)
    assert operator_ipv6(tmp_path / "missing") == OperatorIPv6()
    assert classify_operator_ipv6(["::1", "fe80::1", "::ffff:10.0.0.1"]) == OperatorIPv6()


def test_public_ipv4_classification():
    assert is_public_ipv4("203.0.113.10") and is_public_ipv4("8.8.8.8")
    for a in ("10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "127.0.0.1",
              "169.254.1.1", "0.1.2.3", "224.0.0.1", "not-an-ip", None, "2001:db8::1"):
        assert not is_public_ipv4(a), a
