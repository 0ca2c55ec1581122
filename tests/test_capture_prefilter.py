"""The BPF prefilter, run by the real libpcap (tcpdump) on files: it passes what the parsers
need, over IPv4 and IPv6, tagged or not, and drops the bulk a mirror port carries."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.utils import rdpcap, wrpcap

from monitor.capture.prefilter import PortConfig, build_filter

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")

PORTS = PortConfig(
    dns=frozenset({53}),
    tls=frozenset({443, 8443, 853}),
    http=frozenset({80, 8080, 3128, 8000}),
    quic=frozenset({443, 853}),
)
HELLO = b"\x16\x03\x01\x02\x00\x01" + b"\0" * 40
SERVER_HELLO = b"\x16\x03\x03\x00\x7a\x02" + b"\0" * 40
APPDATA = b"\x17\x03\x03\x00\x20" + b"\0" * 32
MAC = "02:00:00:00:00:01"  # given, so scapy does not ARP for the destination
CCS = b"\x14\x03\x03\x00\x01\x01\x17\x03\x03\x00\x20" + b"\0" * 32


def v4(l4):  # type: ignore[no-untyped-def]
    return IP(src="192.0.2.10", dst="198.51.100.1") / l4


def v6(l4):  # type: ignore[no-untyped-def]
    return IPv6(src="2001:db8::10", dst="2001:db8::1") / l4


CASES = {
    # name: (layer-3 packet, should pass)
    "dns query": (v4(UDP(sport=40000, dport=53) / (b"\0" * 20)), True),
    "dns response": (v4(UDP(sport=53, dport=40000) / (b"\0" * 20)), True),
    "v6 dns response": (v6(UDP(sport=53, dport=40000) / (b"\0" * 20)), True),
    "dns answer over tcp": (v4(TCP(sport=53, dport=40000, flags="PA") / (b"\0" * 20)), True),
    "dns over tcp that looks like a hello": (
        v4(TCP(sport=40000, dport=53, flags="PA") / HELLO),
        True,
    ),
    "client tls payload": (v4(TCP(sport=40000, dport=443, flags="PA") / HELLO), True),
    "client appdata on 443": (v4(TCP(sport=40000, dport=443, flags="PA") / APPDATA), False),
    "client ccs on 443": (v4(TCP(sport=40000, dport=443, flags="PA") / CCS), False),
    "hello continuation": (v4(TCP(sport=40000, dport=443, flags="PA") / (b"\x00\x0a" * 30)), True),
    "v6 client appdata": (v6(TCP(sport=40000, dport=443, flags="PA") / APPDATA), False),
    "server tls payload": (v4(TCP(sport=443, dport=40000, flags="PA") / APPDATA), False),
    "bare ack to 443": (v4(TCP(sport=40000, dport=443, flags="A")), False),
    "syn-ack": (v4(TCP(sport=443, dport=40000, flags="SA")), False),
    "syn on any port": (v4(TCP(sport=40000, dport=22, flags="S")), True),
    "hello on unlisted port": (v4(TCP(sport=40000, dport=4443, flags="PA") / HELLO), True),
    "v6 hello on unlisted port": (v6(TCP(sport=40000, dport=4443, flags="PA") / HELLO), True),
    "server hello": (v4(TCP(sport=443, dport=40000, flags="PA") / SERVER_HELLO), False),
    "v6 server hello": (v6(TCP(sport=443, dport=40000, flags="PA") / SERVER_HELLO), False),
    "server hello on unlisted port": (
        v4(TCP(sport=4443, dport=40000, flags="PA") / SERVER_HELLO),
        False,
    ),
    "ssh payload": (v4(TCP(sport=40000, dport=22, flags="PA") / b"SSH-2.0-x\r\n"), False),
    "http request": (v4(TCP(sport=40000, dport=80, flags="PA") / b"GET / HTTP/1.1\r\n\r\n"), True),
    "quic long header": (v4(UDP(sport=40000, dport=443) / (b"\xc0\0\0\0\x01" + b"\0" * 40)), True),
    "quic short header": (v4(UDP(sport=40000, dport=443) / (b"\x40" + b"\0" * 40)), False),
    "quic from server": (v4(UDP(sport=443, dport=40000) / (b"\xc0\0\0\0\x01" + b"\0" * 40)), False),
    "quic v1 handshake": (
        v4(UDP(sport=40000, dport=443) / (b"\xe0\0\0\0\x01" + b"\0" * 40)),
        False,
    ),
    "quic v2 initial": (
        v4(UDP(sport=40000, dport=443) / (b"\xd0\x6b\x33\x43\xcf" + b"\0" * 40)),
        True,
    ),
    "quic unknown version": (
        v4(UDP(sport=40000, dport=443) / (b"\xc0\x0a\x0a\x0a\x0a" + b"\0" * 40)),
        True,
    ),
    "quic version negotiation": (
        v4(UDP(sport=443, dport=40000) / (b"\x80\0\0\0\0" + b"\0" * 40)),
        True,
    ),
    "v6 quic version negotiation": (
        v6(UDP(sport=443, dport=40000) / (b"\x80\0\0\0\0" + b"\0" * 40)),
        True,
    ),
    "ntp": (v4(UDP(sport=123, dport=123) / (b"\0" * 48)), False),
    "v6 client tls payload": (v6(TCP(sport=40000, dport=443, flags="PA") / HELLO), True),
    "v6 server tls payload": (v6(TCP(sport=443, dport=40000, flags="PA") / APPDATA), False),
    "v6 quic long header": (
        v6(UDP(sport=40000, dport=443) / (b"\xc0\0\0\0\x01" + b"\0" * 40)),
        True,
    ),
    "v6 quic short header": (v6(UDP(sport=40000, dport=443) / (b"\x40" + b"\0" * 40)), False),
    "v6 dns": (v6(UDP(sport=40000, dport=53) / (b"\0" * 20)), True),
    "v6 extension headers": (
        IPv6() / IPv6ExtHdrHopByHop() / UDP(sport=40000, dport=53) / (b"\0" * 20),
        True,
    ),
    "v4 fragment": (IP(flags="MF") / UDP(sport=40000, dport=53) / (b"\0" * 20), True),
    "dhcp request": (v4(UDP(sport=68, dport=67) / (b"\x01" + b"\0" * 240)), True),
    "dhcpv6 solicit": (v6(UDP(sport=546, dport=547) / (b"\x01" + b"\0" * 20)), True),
    "kerberos udp": (v4(UDP(sport=40000, dport=88) / (b"\x6a" + b"\0" * 40)), True),
    "kerberos tcp reply": (v4(TCP(sport=88, dport=40000, flags="PA") / (b"\0" * 40)), True),
    "smb2 session setup": (
        v4(
            TCP(sport=40000, dport=445, flags="PA")
            / (b"\0\0\0\x60\xfeSMB" + b"\x40\0" + b"\0" * 6 + b"\x01\0" + b"\0" * 80)
        ),
        True,
    ),
    "smb2 read": (
        v4(
            TCP(sport=40000, dport=445, flags="PA")
            / (b"\0\0\0\x60\xfeSMB" + b"\x40\0" + b"\0" * 6 + b"\x08\0" + b"\0" * 80)
        ),
        False,
    ),
    "vxlan": (v4(UDP(sport=40000, dport=4789) / (b"\x08" + b"\0" * 60)), True),
}


def tagged(packet, tagging: str):  # type: ignore[no-untyped-def]
    """``packet`` in an Ethernet frame, untagged, with an 802.1Q tag, or QinQ."""
    if tagging == "untagged":
        return Ether(src=MAC, dst=MAC) / packet
    if tagging == "802.1Q":
        return Ether(src=MAC, dst=MAC) / Dot1Q(vlan=110) / packet
    return Ether(src=MAC, dst=MAC) / Dot1AD(vlan=300) / Dot1Q(vlan=110) / packet


def passed(tmp_path: Path, frames: list, expression: str) -> int:  # type: ignore[type-arg]
    src, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    wrpcap(str(src), frames)
    subprocess.run(
        ["tcpdump", "-r", str(src), "-w", str(out), expression], check=True, capture_output=True
    )
    counted = subprocess.run(
        ["tcpdump", "-r", str(out), "--count"], capture_output=True, text=True, check=True
    ).stdout
    return int(counted.split()[0])


@pytest.mark.parametrize("tagging", ["untagged", "802.1Q", "QinQ"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_filter_passes_what_parsers_need_and_nothing_else(
    tmp_path: Path, name: str, tagging: str
) -> None:
    packet, expected = CASES[name]
    frame = tagged(packet, tagging)
    assert passed(tmp_path, [frame], build_filter(PORTS)) == int(expected)


def test_vlan_free_variant_compiles_for_link_types_without_tags(tmp_path: Path) -> None:
    sll2 = Path(__file__).resolve().parent.parent / "pcaps" / "real" / "sll2_any.pcap"
    for vlan, ok in ((True, False), (False, True)):
        proc = subprocess.run(
            ["tcpdump", "-r", str(sll2), "-d", build_filter(PORTS, vlan=vlan)],
            capture_output=True,
            text=True,
        )
        assert (proc.returncode == 0) is ok, proc.stderr


def test_empty_port_lists_switch_their_clauses_off(tmp_path: Path) -> None:
    empty = PortConfig(dns=frozenset(), tls=frozenset(), http=frozenset(), quic=frozenset())
    dns = Ether() / v4(UDP(sport=40000, dport=53) / (b"\0" * 20))
    hello = Ether() / v4(TCP(sport=40000, dport=4443, flags="PA") / HELLO)
    assert passed(tmp_path, [dns], build_filter(empty)) == 0
    assert passed(tmp_path, [hello], build_filter(empty)) == 1


def passing_frames(tmp_path: Path, frames: list, expression: str) -> set[bytes]:  # type: ignore[type-arg]
    """The frames (as bytes) that pass ``expression``, all filtered in one tcpdump run."""
    src, out = tmp_path / "batch.pcap", tmp_path / "batch-out.pcap"
    wrpcap(str(src), frames)
    subprocess.run(
        ["tcpdump", "-r", str(src), "-w", str(out), expression], check=True, capture_output=True
    )
    return {bytes(p) for p in rdpcap(str(out))}


@pytest.mark.parametrize("tagging", ["untagged", "802.1Q", "QinQ"])
def test_worker_and_main_halves_are_disjoint_and_make_the_whole(
    tmp_path: Path, tagging: str
) -> None:
    """The two-process replay's halves: each packet the whole filter passes goes to exactly
    one of them (plain DNS answers and QUIC to the worker; queries, TCP, fragments and
    extension headers to the main process)."""
    frames = {}
    for name, (packet, _) in CASES.items():
        frames[name] = bytes(tagged(packet, tagging))
    assert len(set(frames.values())) == len(frames)
    batch = [Ether(raw) for raw in frames.values()]
    whole = passing_frames(tmp_path, batch, build_filter(PORTS))
    worker_half = passing_frames(tmp_path, batch, build_filter(PORTS, part="worker"))
    main_half = passing_frames(tmp_path, batch, build_filter(PORTS, part="main"))
    assert whole == {frames[n] for n, (_, ok) in CASES.items() if ok}
    assert not worker_half & main_half
    assert worker_half | main_half == whole
    worker = {
        "dns response",
        "v6 dns response",
        "dns answer over tcp",
        "quic long header",
        "quic v2 initial",
        "quic unknown version",
        "quic version negotiation",
        "v6 quic long header",
        "v6 quic version negotiation",
    }
    assert worker_half == {frames[n] for n in worker}
