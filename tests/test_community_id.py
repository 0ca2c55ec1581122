"""Community ID values agree with the specification's reference implementation, both ways."""

from __future__ import annotations

import ipaddress

import communityid
from hypothesis import given
from hypothesis import strategies as st

from monitor.events.community_id import community_id


def test_spec_example() -> None:
    src = ipaddress.ip_address("128.232.110.120").packed
    dst = ipaddress.ip_address("66.35.250.204").packed
    assert community_id(src, dst, 6, 34855, 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert community_id(dst, src, 6, 80, 34855) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


@given(
    v6=st.booleans(),
    a=st.integers(0, 2**128 - 1),
    b=st.integers(0, 2**128 - 1),
    proto=st.sampled_from([6, 17]),
    sport=st.integers(0, 65535),
    dport=st.integers(0, 65535),
)
def test_matches_reference_implementation(
    v6: bool, a: int, b: int, proto: int, sport: int, dport: int
) -> None:
    if v6:
        src, dst = ipaddress.IPv6Address(a), ipaddress.IPv6Address(b)
    else:
        src, dst = ipaddress.IPv4Address(a % 2**32), ipaddress.IPv4Address(b % 2**32)
    ref = communityid.CommunityID()
    tpl = communityid.FlowTuple(proto, str(src), str(dst), sport, dport)
    assert community_id(src.packed, dst.packed, proto, sport, dport) == ref.calc(tpl)
