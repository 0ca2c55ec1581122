"""The raw-bytes decoder reaches the transport payload through every encapsulation a mirror
port or a capture tool produces, and turns anything else into counters."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import GRE, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from monitor.decode.packet import Decoder

PAYLOAD = b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x03abc\x00\x00\x01\x00\x01"


def udp4() -> IP:
    return IP(src="192.0.2.10", dst="198.51.100.53") / UDP(sport=40000, dport=53) / PAYLOAD


def assert_dns_payload(pkt) -> None:  # type: ignore[no-untyped-def]
    assert pkt is not None
    assert (pkt.sport, pkt.dport, pkt.proto) == (40000, 53, 17)
    assert pkt.payload == PAYLOAD


def test_ethernet_ipv4_udp() -> None:
    pkt = Decoder().decode(1, 1, bytes(Ether() / udp4()))
    assert_dns_payload(pkt)
    assert pkt.src == socket.inet_aton("192.0.2.10")


def test_ethernet_padding_is_not_payload() -> None:
    frame = bytes(Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1, dport=443) / b"x")
    pkt = Decoder().decode(1, 1, frame + b"\0" * 20)
    assert pkt is not None and pkt.payload == b"x"


def test_vlan_and_qinq_tags_are_skipped_and_outer_vlan_kept() -> None:
    d = Decoder()
    pkt = d.decode(1, 1, bytes(Ether() / Dot1Q(vlan=110) / udp4()))
    assert_dns_payload(pkt)
    assert pkt.vlan == 110
    pkt = d.decode(1, 1, bytes(Ether() / Dot1AD(vlan=300) / Dot1Q(vlan=120) / udp4()))
    assert_dns_payload(pkt)
    assert pkt.vlan == 300


def test_ipv6_extension_headers_are_walked() -> None:
    frame = (
        Ether()
        / IPv6(src="2001:db8::1", dst="2001:db8::53")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting()
        / UDP(sport=40000, dport=53)
        / PAYLOAD
    )
    pkt = Decoder().decode(1, 1, bytes(frame))
    assert_dns_payload(pkt)
    assert pkt.version == 6


def test_ipv6_atomic_fragment_is_decoded_but_real_fragments_are_counted() -> None:
    d = Decoder()
    atomic = (
        Ether() / IPv6() / IPv6ExtHdrFragment(offset=0, m=0) / UDP(sport=40000, dport=53) / PAYLOAD
    )
    assert_dns_payload(d.decode(1, 1, bytes(atomic)))
    first = (
        Ether() / IPv6() / IPv6ExtHdrFragment(offset=0, m=1) / UDP(sport=40000, dport=53) / PAYLOAD
    )
    assert d.decode(1, 1, bytes(first)) is None
    assert d.stats.ipv6_fragments == 1


def test_ipv4_fragments_are_counted_and_skipped() -> None:
    d = Decoder()
    assert d.decode(1, 1, bytes(Ether() / IP(flags="MF") / UDP() / b"x")) is None
    assert d.decode(1, 1, bytes(Ether() / IP(frag=10) / (b"x" * 8))) is None
    assert d.stats.ipv4_fragments == 2


@pytest.mark.parametrize(
    ("linktype", "header"),
    [
        (113, struct.pack("!HHH8sH", 0, 1, 6, b"\0" * 8, 0x0800)),  # Linux SLL
        (276, struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\0" * 8)),  # Linux SLL2
        (101, b""),  # raw IP
        (228, b""),  # IPv4
        (0, struct.pack("<I", 2)),  # BSD loopback, little-endian host
        (0, struct.pack(">I", 2)),  # BSD loopback, big-endian host
        (108, struct.pack(">I", 2)),  # OpenBSD loop
    ],
)
def test_link_types(linktype: int, header: bytes) -> None:
    assert_dns_payload(Decoder().decode(1, linktype, header + bytes(udp4())))


@pytest.mark.parametrize("family", [24, 28, 30])
def test_null_linktype_ipv6_families(family: int) -> None:
    frame = struct.pack("<I", family) + bytes(IPv6() / UDP(sport=40000, dport=53) / PAYLOAD)
    assert_dns_payload(Decoder().decode(1, 0, frame))


def test_vxlan_inner_frame() -> None:
    d = Decoder()
    frame = Ether() / IP() / UDP(sport=50000, dport=4789) / VXLAN(vni=7) / Ether() / udp4()
    pkt = d.decode(1, 1, bytes(frame))
    assert_dns_payload(pkt)
    assert pkt.tunnel == "vxlan" and d.stats.tunnels == {"vxlan": 1}


def test_geneve_with_options_inner_frame() -> None:
    inner = bytes(Ether() / udp4())
    opt = struct.pack("!HBB", 0x0102, 0x03, 1) + b"\0" * 4  # one 8-byte option TLV
    geneve = struct.pack("!BBHI", 2, 0, 0x6558, 5 << 8) + opt
    frame = bytes(Ether() / IP() / UDP(sport=50000, dport=6081) / (geneve + inner))
    assert_dns_payload(Decoder().decode(1, 1, frame))


def test_gre_ip_and_gre_teb_with_key_and_sequence() -> None:
    d = Decoder()
    assert_dns_payload(d.decode(1, 1, bytes(Ether() / IP() / GRE(proto=0x0800) / udp4())))
    gre = struct.pack("!HHII", 0x3000, 0x6558, 42, 7)
    assert_dns_payload(
        d.decode(1, 1, bytes(Ether() / IP(proto=47) / (gre + bytes(Ether() / udp4()))))
    )


def test_erspan_type2_and_type3_with_subheader() -> None:
    d = Decoder()
    inner = bytes(Ether() / udp4())
    erspan2 = struct.pack("!HHI", 0x1000, 0x88BE, 1) + struct.pack("!II", (1 << 28) | 5, 0)
    assert_dns_payload(d.decode(1, 1, bytes(Ether() / IP(proto=47) / (erspan2 + inner))))
    for o_flag in (0, 1):
        hdr = struct.pack("!HHI", 0x1000, 0x22EB, 2) + struct.pack("!III", (2 << 28) | 5, 0, o_flag)
        sub = b"\0" * 8 if o_flag else b""
        pkt = d.decode(1, 1, bytes(Ether() / IP(proto=47) / (hdr + sub + inner)))
        assert_dns_payload(pkt)
        assert pkt.tunnel == "erspan3"


def test_tcp_fields() -> None:
    frame = (
        Ether()
        / IPv6(src="2001:db8::1", dst="2001:db8::2")
        / TCP(sport=50000, dport=443, seq=123, flags="PA")
        / b"hello"
    )
    pkt = Decoder().decode(5, 1, bytes(frame))
    assert pkt is not None
    assert (pkt.seq, pkt.flags, pkt.payload, pkt.ts) == (123, 0x18, b"hello", 5)


def test_snapped_frame_gives_short_payload_not_error() -> None:
    frame = bytes(Ether() / IP() / TCP(dport=443) / (b"\x16\x03\x01" + b"a" * 500))
    pkt = Decoder().decode(1, 1, frame[:100])
    assert pkt is not None and len(pkt.payload) == 100 - 14 - 20 - 20


@settings(max_examples=500)
@given(
    linktype=st.sampled_from([0, 1, 101, 108, 113, 228, 229, 276, 999]),
    data=st.binary(max_size=200),
)
def test_random_frames_never_raise(linktype: int, data: bytes) -> None:
    Decoder().decode(0, linktype, data)


VALID_FRAMES = [
    bytes(Ether() / Dot1Q(vlan=5) / udp4()),
    bytes(Ether() / IP() / UDP(dport=4789) / VXLAN() / Ether() / udp4()),
    bytes(Ether() / IPv6() / IPv6ExtHdrHopByHop() / TCP(dport=443) / b"\x16\x03\x01\x00\x05\x01"),
    bytes(
        Ether()
        / IP()
        / GRE(proto=0x88BE, seqnum_present=1, sequence_number=1)
        / (b"\0" * 8)
        / Ether()
        / udp4()
    ),
]


@settings(max_examples=500)
@given(idx=st.integers(0, len(VALID_FRAMES) - 1), data=st.data())
def test_mutated_frames_never_raise(idx: int, data: st.DataObject) -> None:
    frame = bytearray(VALID_FRAMES[idx])
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    Decoder().decode(0, 1, bytes(frame[:cut]))
