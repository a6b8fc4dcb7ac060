"""One "public IPv4" rule (fleet.core.values.is_public_ipv4), used by the route
planner and the profile checks alike: properties over the whole IPv4 space."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.access import routes
from fleet.core.values import DOCUMENTATION4, is_public_ipv4
from fleet.profile import values as profile_values

# IANA special-purpose registry, "Globally Reachable: False" (written out here
# independently of the code under test)
NOT_GLOBAL = [ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "240.0.0.0/4")]
MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")

any4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


def _in(net: str):
    n = ipaddress.IPv4Network(net)
    return st.integers(0, n.num_addresses - 1).map(lambda i: n.network_address + i)


def test_one_function_everywhere():
    assert routes.is_public_ipv4 is is_public_ipv4
    assert profile_values.is_public_ipv4 is is_public_ipv4


@given(any4)
def test_public_means_globally_reachable_unicast_or_documentation(addr):
    expected = any(addr in n for n in DOCUMENTATION4) or (
        not any(addr in n for n in NOT_GLOBAL) and addr not in MULTICAST)
    assert is_public_ipv4(addr) is expected
    assert is_public_ipv4(str(addr)) is expected  # text and address objects agree


@given(any4)
def test_public_is_never_private_except_documentation(addr):
    public = is_public_ipv4(addr)
    private = profile_values.is_private_ipv4(addr)
    if any(addr in n for n in DOCUMENTATION4):
        assert public and private
    elif addr not in MULTICAST:
        assert public != private  # every other unicast address is exactly one of them
    else:
        assert not public and not private


@given(any4)
def test_public_implies_python_is_global(addr):
    if is_public_ipv4(addr) and not any(addr in n for n in DOCUMENTATION4):
        assert addr.is_global


@given(st.one_of(_in("192.0.0.0/24"), _in("198.18.0.0/15")))
def test_ietf_assignments_and_benchmarking_are_not_public(addr):
    # the two blocks routes.py and profile/values.py used to disagree on
    assert not is_public_ipv4(addr)
    assert not is_public_ipv4(str(addr))
    assert profile_values.is_private_ipv4(addr)


@pytest.mark.parametrize("value", [None, "", "web1", "2001:db8::1", "10.0.0.256", "1.2.3"])
def test_not_an_ipv4_is_not_public(value):
    assert not is_public_ipv4(value)


def test_examples():
    for a in ("8.8.8.8", "1.1.1.1", "203.0.113.7", "198.51.100.1", "192.0.2.9", "198.20.0.1"):
        assert is_public_ipv4(a), a
    for a in ("192.0.0.9", "192.0.0.170", "198.18.0.1", "198.19.255.255", "100.64.0.1",
              "224.0.0.1", "255.255.255.255", "0.0.0.0"):
        assert not is_public_ipv4(a), a
