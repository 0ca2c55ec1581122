#!/usr/bin/env python3
"""Regenerate the crafted edge-case sample captures in pcaps/crafted/.

Real captures (pcaps/real/) show what real clients send; they cannot show what a sensor meets on a
mirror port on a bad day: out-of-order and retransmitted segments, flows seen half-way, odd link
types and file formats, tunnels, malformed and truncated frames. This script builds those cases
packet by packet so that each capture proves one or a few behaviours, and writes next to every
capture the detections a correct sensor must report (NAME.intent.yaml), derived from what the
script itself put in the capture, never from a sensor's output.

Everything is deterministic (fixed timestamps from 2026-01-15T10:00:00Z, documentation address
ranges, seeded random generators, explicit DNS ids), so running the script twice gives
byte-identical files. `--check` proves that and asks tshark whether every capture opens cleanly
and shows the names the intent files claim.

Usage:
    python3 pcaps/crafted/make_crafted_pcaps.py            # rewrite pcaps/crafted/
    python3 pcaps/crafted/make_crafted_pcaps.py --out DIR  # write elsewhere
    python3 pcaps/crafted/make_crafted_pcaps.py --check    # regenerate twice, compare, run tshark
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrSegmentRouting,
)
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import RawPcapWriter

GENERATOR = "pcaps/crafted/make_crafted_pcaps.py"
HERE = Path(__file__).resolve().parent

# 2026-01-15T10:00:00Z; every capture starts here so the files never depend on the clock.
BASE_NS = 1_768_471_200 * 1_000_000_000

# --- addresses (documentation ranges only) ---------------------------------------------------
CLIENT = "192.0.2.10"
CLIENT_B = "192.0.2.11"
RESOLVER = "198.51.100.53"
BENIGN_WEB = "198.51.100.80"
PROXY = "198.51.100.3"
MIRROR_SRC = "192.0.2.1"  # the switch / TAP that exports mirrored traffic
COLLECTOR = "198.51.100.200"  # the sensor's collector interface
VENDOR_IP = {
    "app.clearview.ai": "203.0.113.10",
    "api.clearview.ai": "203.0.113.11",
    "clearview.ai": "203.0.113.12",
    "pimeyes.com": "203.0.113.20",
    "www.pimeyes.com": "203.0.113.21",
    "facecheck.id": "203.0.113.30",
    "lenso.ai": "203.0.113.40",
    "search4faces.com": "203.0.113.50",
}
CLIENT6 = "2001:db8:0:1::10"
RESOLVER6 = "2001:db8:0:53::53"
SERVER6 = "2001:db8:0:443::10"
MAC_CLIENT = "02:00:00:00:00:0a"
MAC_GATEWAY = "02:00:00:00:00:01"
MAC_MIRROR = "02:00:00:00:00:f1"
MAC_COLLECTOR = "02:00:00:00:00:f2"

DECOYS = [
    "notclearview.ai",
    "clearview.ai.example.net",
    "pimeyes.com.cdn.example.org",
    "myfacecheck.id",
]
BENIGN = ["example.org", "www.example.com", "intranet.police.example"]

LINKTYPE_ETHERNET = 1
LINKTYPE_NULL = 0
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

TLS_SEGMENT = 1448  # payload bytes per full segment of a 1500-byte-MTU path with TCP timestamps


# =============================================================================================
# Capture bookkeeping
# =============================================================================================
@dataclass(slots=True)
class Frame:
    data: bytes  # the captured bytes (may be shorter than orig_len)
    orig_len: int
    ts_ns: int
    iface: int = 0
    comment: str | None = None


@dataclass(slots=True)
class Detection:
    frame: int  # 1-based number of the packet that completes the evidence
    evidence: str  # for blind-spot actions: what carried the name (tls-sni, quic-sni, ip)
    name: str
    action: str = "vendor-access"  # or encrypted-dns / ech-observed (blind-spot signals)
    note: str = ""  # intent comment after the frame number


@dataclass
class Capture:
    """One output file plus the intent the script records while building it."""

    name: str
    description: str
    linktype: int = LINKTYPE_ETHERNET
    fmt: str = "pcap"  # pcap | pcap-be | pcap-nsec | pcapng | pcapng-be
    interfaces: list[tuple[int, int]] = field(default_factory=list)  # pcapng: (linktype, tsresol)
    frames: list[Frame] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    must_not_match: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    # What a stateless kernel BPF filter cannot pass (documented sensor limit): (evidence, name)
    prefilter_misses: list[tuple[str, str]] = field(default_factory=list)
    prefilter_note: str = ""
    malformed_expected: bool = False  # tshark expert errors are the point of this capture
    tshark_args: list[str] = field(default_factory=list)
    proves: list[str] = field(default_factory=list)  # README bullet points
    frame_check: bool = False  # --check: tshark must show each hello in its detection's frame
    _ipid: int = 0x1000
    _port: int = 40000
    clock_ns: int = 0  # extra packet time, moved on by wait() (rate-limit windows)

    def __post_init__(self) -> None:
        # str seeds hash with SHA-512 in random.seed(version=2): stable across runs and hosts.
        self.rng = random.Random(f"egress-monitor crafted {self.name}")

    @property
    def suffix(self) -> str:
        return ".pcapng" if self.fmt.startswith("pcapng") else ".pcap"

    def add(
        self,
        data: bytes,
        *,
        orig_len: int | None = None,
        iface: int = 0,
        comment: str | None = None,
    ) -> int:
        n = len(self.frames)
        # Distinct, strictly increasing timestamps with a microsecond and a nanosecond part.
        ts = BASE_NS + self.clock_ns + n * 2_000_000 + (n * 37 % 1000) * 1000 + (n * 7919 % 1000)
        self.frames.append(
            Frame(data, len(data) if orig_len is None else orig_len, ts, iface, comment)
        )
        return n + 1

    @property
    def last(self) -> int:
        return len(self.frames)

    def expect(
        self,
        evidence: str,
        name: str,
        frame: int | None = None,
        *,
        action: str = "vendor-access",
        note: str = "",
    ) -> None:
        frame = self.last if frame is None else frame
        self.detections.append(Detection(frame, evidence, name, action, note))

    def wait(self, seconds: float) -> None:
        """Let packet time pass before the next frame (frames are otherwise ~2 ms apart)."""
        self.clock_ns += int(seconds * 1_000_000_000)

    def never(self, *names: str) -> None:
        for n in names:
            if n not in self.must_not_match:
                self.must_not_match.append(n)

    def ipid(self) -> int:
        self._ipid = (self._ipid + 1) & 0xFFFF
        return self._ipid

    def port(self) -> int:
        self._port += 101
        return self._port


# =============================================================================================
# Link layers: turn an L3 scapy packet into the bytes of one captured frame
# =============================================================================================
LinkFn = Callable[[Packet, bool], bytes]  # (l3 packet, client_to_server) -> frame bytes


def eth_link(
    tags: tuple[tuple[int, int], ...] = (),
    *,
    pad: bool = True,
    cmac: str = MAC_CLIENT,
    smac: str = MAC_GATEWAY,
) -> LinkFn:
    """Ethernet with optional VLAN tags ((tpid, vid), outermost first).

    Frames are padded to the 60-byte Ethernet minimum like frames received on a mirror port, so a
    sensor that trusts the frame length instead of the IP total length sees phantom payload bytes.
    """

    def frame(l3: Packet, c2s: bool) -> bytes:
        pkt: Packet = Ether(src=cmac if c2s else smac, dst=smac if c2s else cmac)
        for tpid, vid in tags:
            pkt = pkt / (Dot1AD(vlan=vid) if tpid == 0x88A8 else Dot1Q(vlan=vid))
        data = bytes(pkt / l3)
        if pad and len(data) < 60:
            data += b"\x00" * (60 - len(data))
        return data

    return frame


def raw_link(l3: Packet, c2s: bool) -> bytes:
    return bytes(l3)


def sll_link(l3: Packet, c2s: bool) -> bytes:
    proto = 0x86DD if isinstance(l3, IPv6) else 0x0800
    mac = bytes.fromhex((MAC_CLIENT if c2s else MAC_GATEWAY).replace(":", "")) + b"\x00\x00"
    hdr = CookedLinux(pkttype=4 if c2s else 0, lladdrtype=1, lladdrlen=6, src=mac, proto=proto)
    return bytes(hdr / l3)


def sll2_link(l3: Packet, c2s: bool) -> bytes:
    proto = 0x86DD if isinstance(l3, IPv6) else 0x0800
    mac = bytes.fromhex((MAC_CLIENT if c2s else MAC_GATEWAY).replace(":", "")) + b"\x00\x00"
    hdr = CookedLinuxV2(
        proto=proto, ifindex=2, lladdrtype=1, pkttype=4 if c2s else 0, lladdrlen=6, src=mac
    )
    return bytes(hdr / l3)


def null_link(af6: int = 24, byteorder: str = "<") -> LinkFn:
    """BSD loopback header: the address family as a 4-byte int (host order for DLT_NULL)."""

    def frame(l3: Packet, c2s: bool) -> bytes:
        af = af6 if isinstance(l3, IPv6) else 2
        return struct.pack(byteorder + "I", af) + bytes(l3)

    return frame


# =============================================================================================
# L3 / L4 helpers
# =============================================================================================
ExtFn = Callable[[str], list[Packet]]  # final destination -> IPv6 extension headers


def ip_hdr(cap: Capture, src: str, dst: str, ext: ExtFn | None = None) -> Packet:
    if ":" in src:
        pkt: Packet = IPv6(src=src, dst=dst, hlim=64)
        for h in ext(dst) if ext else []:
            pkt = pkt / h
        return pkt
    return IP(src=src, dst=dst, ttl=64, id=cap.ipid(), flags="DF")


def udp_dns(
    cap: Capture,
    link: LinkFn,
    cli: str,
    srv: str,
    cport: int,
    wire: bytes,
    *,
    c2s: bool = True,
    ext: ExtFn | None = None,
) -> int:
    if c2s:
        l3 = ip_hdr(cap, cli, srv, ext) / UDP(sport=cport, dport=53) / Raw(wire)
    else:
        l3 = ip_hdr(cap, srv, cli, ext) / UDP(sport=53, dport=cport) / Raw(wire)
    return cap.add(link(l3, c2s))


class TcpConn:
    """Client/server TCP bookkeeping so that every segment carries correct seq/ack numbers."""

    def __init__(
        self,
        cap: Capture,
        link: LinkFn,
        cli: str,
        srv: str,
        sport: int,
        *,
        cport: int | None = None,
        ext: ExtFn | None = None,
    ) -> None:
        self.cap, self.link, self.cli, self.srv, self.ext = cap, link, cli, srv, ext
        self.cport = cap.port() if cport is None else cport
        self.sport = sport
        self.cnext = cap.rng.randrange(1 << 32)
        self.snext = cap.rng.randrange(1 << 32)

    def _l3(
        self,
        c2s: bool,
        flags: str,
        seq: int,
        ack: int,
        payload: bytes = b"",
        options: list | None = None,
    ) -> Packet:
        src, dst = (self.cli, self.srv) if c2s else (self.srv, self.cli)
        sp, dp = (self.cport, self.sport) if c2s else (self.sport, self.cport)
        tcp = TCP(
            sport=sp,
            dport=dp,
            flags=flags,
            seq=seq & 0xFFFFFFFF,
            ack=ack & 0xFFFFFFFF if "A" in flags else 0,
            window=(64240 if c2s else 65160) if "S" in flags else (502 if c2s else 509),
            options=options or [],
        )
        pkt = ip_hdr(self.cap, src, dst, self.ext) / tcp
        return pkt / Raw(payload) if payload else pkt

    def emit(self, c2s: bool, seq: int, payload: bytes, flags: str = "PA") -> int:
        ack = self.snext if c2s else self.cnext
        return self.cap.add(self.link(self._l3(c2s, flags, seq, ack, payload), c2s))

    def handshake(self) -> None:
        opts = [
            ("MSS", 1460),
            ("SAckOK", b""),
            ("Timestamp", (1_000_000, 0)),
            ("NOP", None),
            ("WScale", 7),
        ]
        self.cap.add(self.link(self._l3(True, "S", self.cnext, 0, options=opts), True))
        self.cnext += 1
        self.cap.add(self.link(self._l3(False, "SA", self.snext, self.cnext, options=opts), False))
        self.snext += 1
        self.ack(True)

    def ack(self, c2s: bool) -> int:
        return self.emit(c2s, self.cnext if c2s else self.snext, b"", "A")

    def segments(
        self, c2s: bool, data: bytes, sizes: list[int] | None = None
    ) -> list[tuple[int, bytes]]:
        """Cut data into segments (sizes; the remainder forms the last one) and advance seq."""
        seq = self.cnext if c2s else self.snext
        out, pos = [], 0
        for size in [*(sizes or []), len(data)]:
            chunk = data[pos : pos + size]
            if chunk:
                out.append((seq + pos, chunk))
            pos += len(chunk)
        if c2s:
            self.cnext += len(data)
        else:
            self.snext += len(data)
        return out

    def send(self, c2s: bool, data: bytes, sizes: list[int] | None = None) -> int:
        last = 0
        for seq, chunk in self.segments(c2s, data, sizes):
            last = self.emit(c2s, seq, chunk)
        return last

    def close(self) -> None:
        self.emit(True, self.cnext, b"", "FA")
        self.cnext += 1
        self.emit(False, self.snext, b"", "FA")
        self.snext += 1
        self.ack(True)


# =============================================================================================
# TLS ClientHello builders (by hand: the point is control over every byte)
# =============================================================================================
def _u8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def _u16(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _u24(b: bytes) -> bytes:
    return len(b).to_bytes(3, "big") + b


def _ext(etype: int, body: bytes = b"") -> bytes:
    return struct.pack("!HH", etype, len(body)) + body


def _shorts(*vals: int) -> bytes:
    return b"".join(struct.pack("!H", v) for v in vals)


def _grease(rng: random.Random, avoid: tuple[int, ...] = ()) -> int:
    while True:
        n = rng.randrange(16)
        v = (n << 12) | 0x0A00 | (n << 4) | 0x0A
        if v not in avoid:
            return v


def _sni(name: str) -> bytes:
    return _ext(0, _u16(b"\x00" + _u16(name.encode("ascii"))))


@dataclass(slots=True)
class Hello:
    record: bytes  # the whole TLS record (5-byte header + ClientHello)
    sni_offset: int  # offset of the server_name extension inside record


def _assemble_hello(
    rng: random.Random, ciphers: list[int], exts: list[bytes], sni_ext: bytes
) -> Hello:
    body = (
        b"\x03\x03"
        + rng.randbytes(32)
        + _u8(rng.randbytes(32))
        + _u16(_shorts(*ciphers))
        + b"\x01\x00"
    )
    ext_start = 5 + 4 + len(body) + 2
    record = b"\x16\x03\x01" + _u16(b"\x01" + _u24(body + _u16(b"".join(exts))))
    idx = exts.index(sni_ext)
    return Hello(record, ext_start + sum(len(e) for e in exts[:idx]))


def chrome_hello(rng: random.Random, sni: str, *, ech: str = "grease") -> Hello:
    """Chrome 13x-like hello: GREASE, X25519MLKEM768 (1216-byte share), permuted extensions.

    The server_name extension is placed after key_share and ECH, so with a 1448-byte first
    segment the SNI always lands in the second TCP segment.
    """
    g_cipher = _grease(rng)
    g_group = _grease(rng)
    g_version = _grease(rng)
    g_ext1 = _grease(rng)
    g_ext2 = _grease(rng, avoid=(g_ext1,))
    if ech == "grease":
        ech_body = (
            b"\x00"
            + _shorts(0x0001, 0x0001)
            + bytes([rng.randrange(256)])
            + _u16(rng.randbytes(32))
            + _u16(rng.randbytes(rng.choice([144, 176, 208, 240])))
        )
    else:  # a real ECH outer extension: config from the server's HTTPS record, padded payload
        ech_body = (
            b"\x00"
            + _shorts(0x0001, 0x0001)
            + b"\x5a"
            + _u16(rng.randbytes(32))
            + _u16(rng.randbytes(0x01D0))
        )
    sni_ext = _sni(sni)
    exts = {
        "sni": sni_ext,
        "ems": _ext(23),
        "reneg": _ext(0xFF01, b"\x00"),
        "groups": _ext(10, _u16(_shorts(g_group, 0x11EC, 0x001D, 0x0017, 0x0018))),
        "ecpf": _ext(11, _u8(b"\x00")),
        "ticket": _ext(35),
        "alpn": _ext(16, _u16(_u8(b"h2") + _u8(b"http/1.1"))),
        "status": _ext(5, b"\x01\x00\x00\x00\x00"),
        "sigalgs": _ext(
            13, _u16(_shorts(0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601))
        ),
        "sct": _ext(18),
        "keyshare": _ext(
            51,
            _u16(
                _shorts(g_group)
                + _u16(b"\x00")
                + _shorts(0x11EC)
                + _u16(rng.randbytes(1216))
                + _shorts(0x001D)
                + _u16(rng.randbytes(32))
            ),
        ),
        "pskmodes": _ext(45, _u8(b"\x01")),
        "versions": _ext(43, _u8(_shorts(g_version, 0x0304, 0x0303))),
        "compress": _ext(27, _u8(_shorts(0x0002))),
        "alps": _ext(0x44CD, _u16(_u8(b"h2"))),
        "ech": _ext(0xFE0D, ech_body),
    }
    order = list(exts)
    rng.shuffle(order)
    order.remove("sni")
    after = max(order.index("keyshare"), order.index("ech")) + 1
    order.insert(rng.randint(after, len(order)), "sni")
    ext_list = [_ext(g_ext1), *(exts[k] for k in order), _ext(g_ext2, b"\x00")]
    ciphers = [
        g_cipher,
        0x1301,
        0x1302,
        0x1303,
        0xC02B,
        0xC02F,
        0xC02C,
        0xC030,
        0xCCA9,
        0xCCA8,
        0xC013,
        0xC014,
        0x009C,
        0x009D,
        0x002F,
        0x0035,
    ]
    hello = _assemble_hello(rng, ciphers, ext_list, sni_ext)
    assert hello.sni_offset >= TLS_SEGMENT, "SNI must fall in the second 1448-byte segment"
    assert 1700 <= len(hello.record) <= 2400, len(hello.record)
    return hello


def openssl_hello(rng: random.Random, sni: str) -> Hello:
    """OpenSSL 3 / Firefox-like hello padded (RFC 7685) to the classic 517-byte record."""
    sni_ext = _sni(sni)
    exts = [
        sni_ext,
        _ext(11, _u8(b"\x00\x01\x02")),
        _ext(
            10,
            _u16(
                _shorts(
                    0x001D, 0x0017, 0x001E, 0x0019, 0x0018, 0x0100, 0x0101, 0x0102, 0x0103, 0x0104
                )
            ),
        ),
        _ext(35),
        _ext(22),
        _ext(23),
        _ext(
            13,
            _u16(
                _shorts(
                    0x0403,
                    0x0503,
                    0x0603,
                    0x0807,
                    0x0808,
                    0x081A,
                    0x081B,
                    0x081C,
                    0x0809,
                    0x080A,
                    0x080B,
                    0x0804,
                    0x0805,
                    0x0806,
                    0x0401,
                    0x0501,
                    0x0601,
                )
            ),
        ),
        _ext(43, _u8(_shorts(0x0304, 0x0303))),
        _ext(45, _u8(b"\x01")),
        _ext(51, _u16(_shorts(0x001D) + _u16(rng.randbytes(32)))),
    ]
    ciphers = [
        0x1302,
        0x1303,
        0x1301,
        0xC02C,
        0xC030,
        0x009F,
        0xCCA9,
        0xCCA8,
        0xCCAA,
        0xC02B,
        0xC02F,
        0x009E,
        0xC024,
        0xC028,
        0x006B,
        0xC023,
        0xC027,
        0x0067,
        0xC00A,
        0xC014,
        0x0039,
        0xC009,
        0xC013,
        0x0033,
        0x009D,
        0x009C,
        0x003D,
        0x003C,
        0x0035,
        0x002F,
        0x00FF,
    ]
    unpadded = _assemble_hello(random.Random(0), ciphers, exts, sni_ext)
    pad = 517 - len(unpadded.record) - 4
    assert pad >= 0
    hello = _assemble_hello(rng, ciphers, [*exts, _ext(21, b"\x00" * pad)], sni_ext)
    assert len(hello.record) == 517
    return hello


def server_flight(rng: random.Random) -> bytes:
    """A syntactically valid TLS 1.3 ServerHello + CCS + one opaque record (server direction)."""
    exts = _ext(43, _shorts(0x0304)) + _ext(51, _shorts(0x001D) + _u16(rng.randbytes(32)))
    body = (
        b"\x03\x03"
        + rng.randbytes(32)
        + _u8(rng.randbytes(32))
        + _shorts(0x1301)
        + b"\x00"
        + _u16(exts)
    )
    return (
        b"\x16\x03\x03"
        + _u16(b"\x02" + _u24(body))
        + b"\x14\x03\x03\x00\x01\x01"
        + b"\x17\x03\x03"
        + _u16(rng.randbytes(120))
    )


def tls_flow(
    cap: Capture,
    link: LinkFn,
    hello: Hello,
    *,
    srv: str,
    sport: int = 443,
    cli: str = CLIENT,
    handshake: bool = True,
    sizes: list[int] | None = None,
    order: list[int] | None = None,
    expect: str | None = None,
    ext: ExtFn | None = None,
    close: bool = False,
    action: str = "vendor-access",
    evidence: str = "tls-sni",
    note: str = "",
) -> TcpConn:
    """One TLS connection: optional handshake, the hello (segmented/reordered), server flight.

    expect: the SNI as the sensor must report it (for a blind-spot action without SNI: the
    server IP); the detection is attributed to the segment that completes the hello, i.e. the
    last one emitted.
    """
    conn = TcpConn(cap, link, cli, srv, sport, ext=ext)
    if handshake:
        conn.handshake()
    segs = conn.segments(True, hello.record, sizes)
    for i in order or range(len(segs)):
        conn.emit(True, *segs[i])
    if expect:
        cap.expect(evidence, expect, action=action, note=note)
    conn.send(False, server_flight(cap.rng))
    if close:
        conn.close()
    return conn


# =============================================================================================
# DNS helpers (dnspython for every well-formed message)
# =============================================================================================
def dns_query(
    name: str, rdtype: str = "A", qid: int = 0x1234, **kw: object
) -> dns.message.QueryMessage:
    q = dns.message.make_query(name, rdtype, **kw)
    q.id = qid
    return q


def dns_answer(
    q: dns.message.Message, *rrsets: tuple[str, str, str], rcode: int = dns.rcode.NOERROR
) -> bytes:
    r = dns.message.make_response(q, recursion_available=True)
    for name, rdtype, value in rrsets:
        owner = name if name.endswith(".") else name + "."
        r.answer.append(dns.rrset.from_text(owner, 300, "IN", rdtype, value))
    r.set_rcode(rcode)
    if rcode == dns.rcode.NXDOMAIN:
        zone = q.question[0].name.parent().to_text()
        soa = f"ns1.{zone} hostmaster.{zone} 2026011501 7200 900 1209600 900"
        r.authority.append(dns.rrset.from_text(zone, 900, "IN", "SOA", soa))
    return r.to_wire()


def dns_pair(
    cap: Capture,
    link: LinkFn,
    name: str,
    qid: int,
    *,
    rdtype: str = "A",
    cli: str = CLIENT,
    srv: str = RESOLVER,
    answer: bool = True,
    expect: bool = False,
    ext: ExtFn | None = None,
) -> None:
    """UDP query (and a plain answer) for name; expect marks the query as a dns-query hit."""
    q = dns_query(name, rdtype, qid)
    port = cap.port()
    udp_dns(cap, link, cli, srv, port, q.to_wire(), ext=ext)
    if expect:
        cap.expect("dns-query", name.lower().rstrip("."))
    if answer:
        value = "203.0.113.99" if rdtype == "A" else "2001:db8:0:443::99"
        wire = dns_answer(q, (name, rdtype, value)) if rdtype in ("A", "AAAA") else dns_answer(q)
        udp_dns(cap, link, cli, srv, port, wire, c2s=False, ext=ext)


def http_response(body: bytes = b"ok", status: str = "200 OK") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def http_get(host: str, path: str = "/", extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
        f"{extra}\r\n"
    ).encode()


# =============================================================================================
# The captures
# =============================================================================================
def cap_tls_out_of_order() -> Capture:
    cap = Capture(
        "tls_out_of_order",
        (
            "Chrome-like ClientHellos (~1.8 kB, X25519MLKEM768 key share) split into TCP segments "
            "that "
            "arrive out of order: a two-segment hello whose second segment (carrying the SNI) is "
            "captured before the first, and a three-segment hello captured in the order 3,1,2. "
            "Both "
            "flows start with a 3-way handshake. A benign hello is reordered the same way."
        ),
    )
    cap.tshark_args = ["-o", "tcp.reassemble_out_of_order:TRUE"]
    eth = eth_link()
    h = chrome_hello(cap.rng, "app.clearview.ai")
    tls_flow(
        cap,
        eth,
        h,
        srv=VENDOR_IP["app.clearview.ai"],
        sizes=[TLS_SEGMENT],
        order=[1, 0],
        expect="app.clearview.ai",
        close=True,
    )
    h = chrome_hello(cap.rng, "lenso.ai")
    tls_flow(
        cap, eth, h, srv=VENDOR_IP["lenso.ai"], sizes=[700, 700], order=[2, 0, 1], expect="lenso.ai"
    )
    h = chrome_hello(cap.rng, "www.example.com")
    tls_flow(cap, eth, h, srv=BENIGN_WEB, sizes=[TLS_SEGMENT], order=[1, 0])
    cap.never("www.example.com")
    cap.proves = [
        "reassembly buffers a segment that arrives before the one it follows (seq from the SYN)",
        "a 3-segment hello captured 3,1,2 completes on the packet that fills the last hole",
    ]
    return cap


def cap_tls_retransmission() -> Capture:
    cap = Capture(
        "tls_retransmission",
        (
            "ClientHellos with TCP retransmissions and duplicates: (A) first segment of a split "
            "Chrome hello retransmitted identically before the second; (B) the first 1000 bytes "
            "are "
            "sent, bytes 1000-1448 are lost, then an overlapping retransmission re-segments "
            "600-1448, "
            "then the rest, then that last segment is duplicated; (C) a 517-byte hello seen "
            "mid-flow "
            "(no handshake) that a SPAN port duplicated; (D) a split Chrome hello whose both "
            "segments "
            "are duplicated after completion. Exactly one detection per ClientHello, not per copy. "
            "A benign hello with a retransmitted first segment is the decoy."
        ),
    )
    eth = eth_link()
    # A: identical retransmission of segment 1 before segment 2.
    h = chrome_hello(cap.rng, "app.clearview.ai")
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["app.clearview.ai"], 443)
    conn.handshake()
    s = conn.segments(True, h.record, [TLS_SEGMENT])
    conn.emit(True, *s[0])
    conn.emit(True, *s[0])
    conn.emit(True, *s[1])
    cap.expect("tls-sni", "app.clearview.ai")
    conn.send(False, server_flight(cap.rng))
    # B: overlapping retransmission with different segmentation.
    h = chrome_hello(cap.rng, "api.clearview.ai")
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["api.clearview.ai"], 443)
    conn.handshake()
    base = conn.cnext
    conn.segments(True, h.record)
    rec = h.record
    conn.emit(True, base, rec[:1000])
    # bytes 1000..1448 were lost on the wire (never captured)
    conn.emit(True, base + 600, rec[600:TLS_SEGMENT])
    conn.emit(True, base + TLS_SEGMENT, rec[TLS_SEGMENT:])
    cap.expect("tls-sni", "api.clearview.ai")
    conn.emit(True, base + TLS_SEGMENT, rec[TLS_SEGMENT:])
    conn.send(False, server_flight(cap.rng))
    # C: whole small hello duplicated (mirror duplicate), flow seen mid-way.
    h = openssl_hello(cap.rng, "pimeyes.com")
    conn = TcpConn(cap, eth, CLIENT_B, VENDOR_IP["pimeyes.com"], 443)
    (seg,) = conn.segments(True, h.record)
    conn.emit(True, *seg)
    cap.expect("tls-sni", "pimeyes.com")
    conn.emit(True, *seg)
    conn.send(False, server_flight(cap.rng))
    # D: both segments of a split hello duplicated after the hello completed.
    h = chrome_hello(cap.rng, "facecheck.id")
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["facecheck.id"], 443)
    conn.handshake()
    s = conn.segments(True, h.record, [TLS_SEGMENT])
    conn.emit(True, *s[0])
    conn.emit(True, *s[1])
    cap.expect("tls-sni", "facecheck.id")
    conn.emit(True, *s[0])
    conn.emit(True, *s[1])
    conn.send(False, server_flight(cap.rng))
    conn.close()
    # Decoy: benign hello, first segment retransmitted.
    h = chrome_hello(cap.rng, "www.example.com")
    conn = TcpConn(cap, eth, CLIENT, BENIGN_WEB, 443)
    conn.handshake()
    s = conn.segments(True, h.record, [TLS_SEGMENT])
    conn.emit(True, *s[0])
    conn.emit(True, *s[0])
    conn.emit(True, *s[1])
    cap.never("www.example.com")
    cap.proves = [
        "an identical retransmission is not parsed twice",
        "an overlapping retransmission with different segmentation fills a hole correctly",
        "a duplicated complete hello (SPAN duplicate) yields one detection",
    ]
    return cap


def cap_tls_sni_in_second_segment() -> Capture:
    cap = Capture(
        "tls_sni_in_second_segment",
        (
            "Chrome-like ClientHellos on TCP 443 split at 1448 bytes of payload, in order, with "
            "the "
            "server_name extension entirely in the second segment (it follows the 1216-byte "
            "X25519MLKEM768 key share and a GREASE ECH extension). One flow has a 3-way handshake; "
            "one is seen mid-way (no SYN), so the sensor must anchor on the hello's record header. "
            "Handshake ACKs are padded to the 60-byte Ethernet minimum. A benign split hello is "
            "the "
            "decoy."
        ),
    )
    eth = eth_link()
    h = chrome_hello(cap.rng, "app.clearview.ai")
    tls_flow(
        cap,
        eth,
        h,
        srv=VENDOR_IP["app.clearview.ai"],
        sizes=[TLS_SEGMENT],
        expect="app.clearview.ai",
        close=True,
    )
    h = chrome_hello(cap.rng, "www.pimeyes.com")
    tls_flow(
        cap,
        eth,
        h,
        srv=VENDOR_IP["www.pimeyes.com"],
        handshake=False,
        sizes=[TLS_SEGMENT],
        expect="www.pimeyes.com",
    )
    h = chrome_hello(cap.rng, "www.example.com")
    tls_flow(cap, eth, h, srv=BENIGN_WEB, sizes=[TLS_SEGMENT])
    cap.never("www.example.com")
    cap.proves = [
        "the SNI is found when it is only in the second segment (post-quantum key share first)",
        "a flow without SYN is anchored on the first payload byte 0x16 of the hello",
        "Ethernet padding on small frames is not taken as TCP payload",
    ]
    return cap


def cap_tls_nonstandard_port() -> Capture:
    cap = Capture(
        "tls_nonstandard_port",
        (
            "ClientHellos on ports other than 443: a 517-byte hello on TCP 4443 after a handshake, "
            "a "
            "split Chrome hello on 4443 seen mid-way, a split Chrome hello on 8443 (a default TLS "
            "port). Decoys: a flow on TCP 9999 whose first client payload is an SSH banner and "
            "which "
            "carries a vendor ClientHello later (first payload byte is not a handshake record: no "
            "hit), and a hello for notclearview.ai on 4443."
        ),
    )
    eth = eth_link()
    cap.tshark_args = ["-d", "tcp.port==4443,tls", "-d", "tcp.port==9999,tls"]
    h = openssl_hello(cap.rng, "facecheck.id")
    tls_flow(cap, eth, h, srv=VENDOR_IP["facecheck.id"], sport=4443, expect="facecheck.id")
    h = chrome_hello(cap.rng, "search4faces.com")
    tls_flow(
        cap,
        eth,
        h,
        srv=VENDOR_IP["search4faces.com"],
        sport=4443,
        handshake=False,
        sizes=[TLS_SEGMENT],
        expect="search4faces.com",
    )
    h = chrome_hello(cap.rng, "lenso.ai")
    tls_flow(
        cap,
        eth,
        h,
        srv=VENDOR_IP["lenso.ai"],
        sport=8443,
        sizes=[TLS_SEGMENT],
        expect="lenso.ai",
        close=True,
    )
    # Decoy: SSH banner first, then (oddly) a ClientHello inside the same stream.
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["api.clearview.ai"], 9999)
    conn.handshake()
    conn.send(True, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    conn.send(False, b"SSH-2.0-OpenSSH_9.2p1\r\n")
    conn.send(True, openssl_hello(cap.rng, "api.clearview.ai").record)
    h = openssl_hello(cap.rng, "notclearview.ai")
    tls_flow(cap, eth, h, srv="203.0.113.200", sport=4443)
    cap.never("api.clearview.ai", "notclearview.ai")
    cap.prefilter_misses = [("tls-sni", "search4faces.com")]
    cap.prefilter_note = "\n".join(
        [
            "The kernel-side BPF prefilter is stateless: on a port that is not a configured TLS",
            "port it can pass only segments that begin with a TLS handshake record, so the second",
            "segment of a split hello there never reaches the parser. With --no-prefilter (or",
            "with 4443 in tls_ports) it is detected.",
        ]
    )
    cap.proves = [
        "TLS is recognised on any port by the first client payload byte (0x16 handshake record)",
        "8443 is a default TLS port",
        "a stream that did not start with a handshake record is not searched for hellos",
    ]
    return cap


def cap_tls_ech() -> Capture:
    cap = Capture(
        "tls_ech",
        (
            "Encrypted Client Hello: a Chrome-like outer ClientHello with a real (non-GREASE) "
            "encrypted_client_hello extension (0xfe0d, outer type, config id 0x5a, 464-byte "
            "payload) "
            "whose outer SNI is the vendor's public name clearview.ai; the inner SNI is encrypted "
            "and "
            "unknowable. The outer SNI is still a tls-sni detection. Decoys: an ECH hello whose "
            "outer "
            "SNI is a benign public name, and a GREASE-ECH hello to www.example.com."
        ),
    )
    eth = eth_link()
    h = chrome_hello(cap.rng, "clearview.ai", ech="real")
    tls_flow(cap, eth, h, srv=VENDOR_IP["clearview.ai"], sizes=[TLS_SEGMENT], expect="clearview.ai")
    h = chrome_hello(cap.rng, "ech-public.example.net", ech="real")
    tls_flow(cap, eth, h, srv="198.51.100.81", sizes=[TLS_SEGMENT])
    h = chrome_hello(cap.rng, "www.example.com")
    tls_flow(cap, eth, h, srv=BENIGN_WEB, sizes=[TLS_SEGMENT])
    cap.never("ech-public.example.net", "www.example.com")
    cap.proves = ["an ECH outer hello is parsed like any other; its outer SNI is matched"]
    return cap


def cap_dns_tcp_pipelining() -> Capture:
    cap = Capture(
        "dns_tcp_pipelining",
        (
            "DNS over TCP port 53 on one connection (with handshake): two length-prefixed queries "
            "(A and AAAA for pimeyes.com, ids 0x2001/0x2002) in a single segment; the A response "
            "split across two segments, the second of which also carries the whole AAAA response; "
            "a "
            "query for lenso.ai split byte-wise over 3 segments (1 byte, 7 bytes, rest); a benign "
            "query for example.org. Two transactions for pimeyes.com give two detections."
        ),
    )
    eth = eth_link()
    conn = TcpConn(cap, eth, CLIENT, RESOLVER, 53)
    conn.handshake()
    qa = dns_query("pimeyes.com", "A", 0x2001)
    qaaaa = dns_query("pimeyes.com", "AAAA", 0x2002)
    conn.send(True, _u16(qa.to_wire()) + _u16(qaaaa.to_wire()))
    cap.expect("dns-query", "pimeyes.com")
    cap.expect("dns-query", "pimeyes.com")
    ra = _u16(dns_answer(qa, ("pimeyes.com", "A", VENDOR_IP["pimeyes.com"])))
    raaaa = _u16(dns_answer(qaaaa, ("pimeyes.com", "AAAA", "2001:db8:0:443::20")))
    conn.send(False, ra + raaaa, [20])
    ql = dns_query("lenso.ai", "A", 0x2003)
    conn.send(True, _u16(ql.to_wire()), [1, 7])
    cap.expect("dns-query", "lenso.ai")
    conn.send(False, _u16(dns_answer(ql, ("lenso.ai", "A", VENDOR_IP["lenso.ai"]))))
    qb = dns_query("example.org", "A", 0x2004)
    conn.send(True, _u16(qb.to_wire()))
    conn.send(False, _u16(dns_answer(qb, ("example.org", "A", BENIGN_WEB))))
    conn.close()
    cap.never("example.org")
    cap.proves = [
        "several length-prefixed DNS messages in one TCP segment are all parsed",
        "a DNS message split over segments (even inside the 2-byte length) is reassembled",
        "responses to captured queries add no detection",
    ]
    return cap


def cap_dns_cname_and_nxdomain() -> Capture:
    cap = Capture(
        "dns_cname_and_nxdomain",
        (
            "DNS over UDP: a benign alias img.example.com whose response CNAME chain goes "
            "img.example.com -> edge.example.net -> app.clearview.ai (a dns-cname detection for "
            "app.clearview.ai); a query for facecheck.id answered NXDOMAIN (the query is the "
            "detection, the NXDOMAIN adds none); a response for api.clearview.ai whose query was "
            "not "
            "captured (response-only: a dns-query detection on the response); an HTTPS (type 65) "
            "query and answer for pimeyes.com; a vendor query www.pimeyes.com whose CNAME points "
            "to "
            "pimeyes.com (the question already matched, so no dns-cname); benign example.org."
        ),
    )
    eth = eth_link()
    q = dns_query("img.example.com", "A", 0x3001)
    port = cap.port()
    udp_dns(cap, eth, CLIENT, RESOLVER, port, q.to_wire())
    udp_dns(
        cap,
        eth,
        CLIENT,
        RESOLVER,
        port,
        dns_answer(
            q,
            ("img.example.com", "CNAME", "edge.example.net."),
            ("edge.example.net", "CNAME", "app.clearview.ai."),
            ("app.clearview.ai", "A", VENDOR_IP["app.clearview.ai"]),
        ),
        c2s=False,
    )
    cap.expect("dns-cname", "app.clearview.ai")
    q = dns_query("facecheck.id", "A", 0x3002)
    port = cap.port()
    udp_dns(cap, eth, CLIENT, RESOLVER, port, q.to_wire())
    cap.expect("dns-query", "facecheck.id")
    udp_dns(cap, eth, CLIENT, RESOLVER, port, dns_answer(q, rcode=dns.rcode.NXDOMAIN), c2s=False)
    q = dns_query("api.clearview.ai", "A", 0x3003)
    udp_dns(
        cap,
        eth,
        CLIENT,
        RESOLVER,
        cap.port(),
        dns_answer(q, ("api.clearview.ai", "A", VENDOR_IP["api.clearview.ai"])),
        c2s=False,
    )
    cap.expect("dns-query", "api.clearview.ai")
    q = dns_query("pimeyes.com", "HTTPS", 0x3004)
    port = cap.port()
    udp_dns(cap, eth, CLIENT, RESOLVER, port, q.to_wire())
    cap.expect("dns-query", "pimeyes.com")
    udp_dns(
        cap,
        eth,
        CLIENT,
        RESOLVER,
        port,
        dns_answer(q, ("pimeyes.com", "HTTPS", '1 . alpn="h2,h3" ipv4hint=203.0.113.20')),
        c2s=False,
    )
    q = dns_query("www.pimeyes.com", "A", 0x3005)
    port = cap.port()
    udp_dns(cap, eth, CLIENT, RESOLVER, port, q.to_wire())
    cap.expect("dns-query", "www.pimeyes.com")
    udp_dns(
        cap,
        eth,
        CLIENT,
        RESOLVER,
        port,
        dns_answer(
            q,
            ("www.pimeyes.com", "CNAME", "pimeyes.com."),
            ("pimeyes.com", "A", VENDOR_IP["pimeyes.com"]),
        ),
        c2s=False,
    )
    dns_pair(cap, eth, "example.org", 0x3006)
    cap.never("img.example.com", "edge.example.net", "example.org")
    cap.proves = [
        "a CNAME chain from a benign alias reaching a vendor gives dns-cname with the target",
        "NXDOMAIN answers still leave the query as the (only) detection",
        "a response whose query was not captured gives a dns-query detection on its own",
        "any qtype (HTTPS/65) is matched",
        "a CNAME to a vendor from an already matching question gives no extra dns-cname",
    ]
    return cap


def _hdr(qid: int, qd: int = 1, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, 0, 0, 0)


def _labels(*labels: bytes) -> bytes:
    return b"".join(bytes([len(lab)]) + lab for lab in labels)


AIN = b"\x00\x01\x00\x01"  # QTYPE A, QCLASS IN


def cap_dns_malformed() -> Capture:
    cap = Capture(
        "dns_malformed",
        (
            "Hand-made malformed DNS queries over UDP 53, each of which must be rejected as a "
            "parse "
            "error without a detection, a hang or a crash: a self-pointer (0xc00c at offset 12), a "
            "loop through labels (lenso.ai + pointer back to offset 12), a forward compression "
            "pointer to a vendor name placed after the question (RFC 1035 pointers point to a "
            "prior "
            "occurrence; forward pointers are rejected, as BIND, Knot and dnspython do), a pointer "
            "beyond the end of the message, a 7-byte header, a question cut inside a label, a "
            "question with a complete name but no QTYPE/QCLASS, a 64-byte label (length byte 0x40 "
            "is a reserved label type) in front of clearview.ai, and a 270-octet name ending in "
            "clearview.ai. Afterwards a valid benign query and a valid vendor query that must "
            "still be detected."
        ),
        malformed_expected=True,
    )
    eth = eth_link()
    bad = [
        _hdr(0x4001) + b"\xc0\x0c" + AIN,  # self pointer
        _hdr(0x4002) + _labels(b"lenso", b"ai") + b"\xc0\x0c" + AIN,  # loop through labels
        # forward pointer: the question name points to offset 18, after the question
        _hdr(0x4003) + b"\xc0\x12" + AIN + _labels(b"pimeyes", b"com") + b"\x00",
        _hdr(0x4004) + b"\xc0\xf0" + AIN,  # pointer beyond the end of the message
        _hdr(0x4005)[:7],  # truncated header
        _hdr(0x4006) + b"\x0csearch4faces\x03co",  # truncated question inside a label
        _hdr(0x4007) + _labels(b"facecheck", b"id") + b"\x00",  # name complete, no qtype/qclass
        _hdr(0x4008) + b"\x40" + b"a" * 64 + _labels(b"clearview", b"ai") + b"\x00" + AIN,
        _hdr(0x4009) + _labels(*[b"x" * 63] * 4, b"clearview", b"ai") + b"\x00" + AIN,
    ]
    for wire in bad:
        udp_dns(cap, eth, CLIENT, RESOLVER, cap.port(), wire)
    cap.counters["dns_parse_errors"] = len(bad)
    dns_pair(cap, eth, "example.org", 0x4010)
    dns_pair(cap, eth, "search4faces.com", 0x4011, expect=True)
    cap.never("lenso.ai", "pimeyes.com", "facecheck.id", "clearview.ai", "example.org")
    cap.proves = [
        "compression loops, forward and out-of-range pointers, truncation and bad label lengths "
        "are parse errors (counted), never hangs or crashes",
        "parsing continues with the next packet: a later valid vendor query is detected",
    ]
    return cap


def cap_truncated_packets() -> Capture:
    cap = Capture(
        "truncated_packets",
        (
            "Frames shortened by a small per-packet snaplen (caplen < len): a vendor DNS query cut "
            "inside the Ethernet header (10 bytes), one cut inside the IPv4 header (26 bytes), an "
            "IPv6 DNS query cut inside the IPv6 header (34 bytes), a TLS segment cut inside the "
            "TCP "
            "header (44 bytes), and a 517-byte ClientHello segment cut in the middle of the hello "
            "before its SNI (154 bytes). Then frames that are complete but broken: an Ethernet "
            "frame "
            "with only 12 bytes of IPv4 header, a DNS query with IHL=3, and a DNS query with "
            "IHL=15 "
            "whose header would be longer than its total length. None may crash the sensor; "
            "afterwards a valid vendor DNS query and a valid vendor hello are detected."
        ),
        malformed_expected=True,
    )
    eth = eth_link()
    # Cut inside the Ethernet header / IPv4 header / IPv6 header.
    for qname, cut, cli, srv in (
        ("lenso.ai", 10, CLIENT, RESOLVER),
        ("lenso.ai", 26, CLIENT, RESOLVER),
        ("lenso.ai", 34, CLIENT6, RESOLVER6),
    ):
        q = dns_query(qname, "A", 0x5000 + cut).to_wire()
        full = eth(ip_hdr(cap, cli, srv) / UDP(sport=cap.port(), dport=53) / Raw(q), True)
        cap.add(full[:cut], orig_len=len(full))
    # TLS segment cut inside the TCP header.
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["app.clearview.ai"], 443)
    conn.handshake()
    (seg,) = conn.segments(True, openssl_hello(cap.rng, "app.clearview.ai").record)
    n = conn.emit(True, *seg)
    full = cap.frames[n - 1].data
    cap.frames[n - 1] = Frame(full[:44], len(full), cap.frames[n - 1].ts_ns)
    conn.send(False, server_flight(cap.rng))
    # ClientHello cut in the middle, before the SNI.
    h = openssl_hello(cap.rng, "api.clearview.ai")
    assert h.sni_offset > 100
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["api.clearview.ai"], 443)
    conn.handshake()
    (seg,) = conn.segments(True, h.record)
    n = conn.emit(True, *seg)
    full = cap.frames[n - 1].data
    cap.frames[n - 1] = Frame(full[:154], len(full), cap.frames[n - 1].ts_ns)
    conn.send(False, server_flight(cap.rng))
    # Complete frames with a broken IPv4 header.
    q = dns_query("pimeyes.com", "A", 0x5101).to_wire()
    full = eth(ip_hdr(cap, CLIENT, RESOLVER) / UDP(sport=cap.port(), dport=53) / Raw(q), True)
    cap.add(full[: 14 + 12])  # frame really is this short: 12 bytes of IPv4 header
    for qname, ihl in (("pimeyes.com", 3), ("facecheck.id", 15)):
        q = dns_query(qname, "A", 0x5100 + ihl).to_wire()
        ip = ip_hdr(cap, CLIENT, RESOLVER) / UDP(sport=cap.port(), dport=53) / Raw(q)
        raw = bytearray(bytes(ip))
        assert ihl * 4 < 20 or ihl * 4 > len(raw)
        raw[0] = 0x40 | ihl  # checksum left as computed for IHL=5: the header is bogus anyway
        cap.add(bytes(Ether(src=MAC_CLIENT, dst=MAC_GATEWAY, type=0x0800)) + bytes(raw))
    # Valid traffic afterwards.
    dns_pair(cap, eth, "example.org", 0x5200)
    dns_pair(cap, eth, "clearview.ai", 0x5201, expect=True)
    h = openssl_hello(cap.rng, "www.pimeyes.com")
    tls_flow(cap, eth, h, srv=VENDOR_IP["www.pimeyes.com"], expect="www.pimeyes.com", close=True)
    cap.never("pimeyes.com", "facecheck.id", "example.org")
    cap.proves = [
        "caplen < len in any header or inside a hello never crashes the decoder",
        "truncated or bogus IPv4 headers (IHL < 5, IHL*4 > total length) are dropped",
        "the pipeline continues: later valid DNS and TLS are detected",
    ]
    return cap


def cap_vlan_qinq() -> Capture:
    cap = Capture(
        "vlan_qinq",
        (
            "VLAN-tagged traffic: 802.1Q (VID 100) DNS query for pimeyes.com and IPv6 DNS query "
            "for "
            "www.pimeyes.com; 802.1Q ClientHello for facecheck.id; 802.1ad QinQ (0x88a8 VID 200 + "
            "0x8100 VID 300) DNS query for lenso.ai; double 802.1Q (0x8100 VID 10 + 0x8100 VID 20) "
            "split Chrome hello for app.clearview.ai. Decoys: tagged example.org query and a QinQ "
            "hello to www.example.com."
        ),
    )
    q1 = eth_link(((0x8100, 100),))
    qinq = eth_link(((0x88A8, 200), (0x8100, 300)))
    dbl = eth_link(((0x8100, 10), (0x8100, 20)))
    dns_pair(cap, q1, "pimeyes.com", 0x6001, expect=True)
    dns_pair(
        cap, q1, "www.pimeyes.com", 0x6002, rdtype="AAAA", cli=CLIENT6, srv=RESOLVER6, expect=True
    )
    dns_pair(cap, q1, "example.org", 0x6003)
    tls_flow(
        cap,
        q1,
        openssl_hello(cap.rng, "facecheck.id"),
        srv=VENDOR_IP["facecheck.id"],
        expect="facecheck.id",
    )
    dns_pair(cap, qinq, "lenso.ai", 0x6004, expect=True)
    tls_flow(cap, qinq, openssl_hello(cap.rng, "www.example.com"), srv=BENIGN_WEB)
    tls_flow(
        cap,
        dbl,
        chrome_hello(cap.rng, "app.clearview.ai"),
        srv=VENDOR_IP["app.clearview.ai"],
        sizes=[TLS_SEGMENT],
        expect="app.clearview.ai",
    )
    cap.never("example.org", "www.example.com")
    cap.proves = ["802.1Q, 802.1ad QinQ and stacked 802.1Q tags are skipped before IPv4/IPv6"]
    return cap


def _v6_ext(dst: str) -> list[Packet]:
    return [
        IPv6ExtHdrHopByHop(),
        IPv6ExtHdrDestOpt(),
        IPv6ExtHdrSegmentRouting(addresses=[dst], segleft=0),
    ]


def cap_ipv6_ext_headers() -> Capture:
    cap = Capture(
        "ipv6_ext_headers",
        (
            "IPv6 extension headers and fragments: a DNS query for pimeyes.com over UDP and a "
            "split "
            "Chrome hello for app.clearview.ai over TCP, every packet carrying Hop-by-Hop Options "
            "+ "
            "Destination Options + Routing (segment routing, segments left 0) headers; an IPv6 "
            "atomic fragment (Fragment header with offset 0 and M=0, RFC 6946) holding a complete "
            "DNS query for facecheck.id, which is processed like an unfragmented packet "
            "(detected); "
            "a DNS query for search4faces.com sent as three IPv4 fragments, which the sensor does "
            "not reassemble: counted in ipv4_fragments_skipped (one per fragment frame, 3) and not "
            "detected. Decoy: example.org over IPv6 with the same extension headers."
        ),
    )
    eth = eth_link()
    dns_pair(
        cap,
        eth,
        "pimeyes.com",
        0x7001,
        rdtype="AAAA",
        cli=CLIENT6,
        srv=RESOLVER6,
        expect=True,
        ext=_v6_ext,
    )
    tls_flow(
        cap,
        eth,
        chrome_hello(cap.rng, "app.clearview.ai"),
        cli=CLIENT6,
        srv=SERVER6,
        sizes=[1400],
        expect="app.clearview.ai",
        ext=_v6_ext,
    )
    # Atomic fragment.
    q = dns_query("facecheck.id", "AAAA", 0x7002)
    port = cap.port()
    l3 = (
        IPv6(src=CLIENT6, dst=RESOLVER6, hlim=64)
        / IPv6ExtHdrFragment(offset=0, m=0, id=0x7002)
        / UDP(sport=port, dport=53)
        / Raw(q.to_wire())
    )
    cap.add(eth(l3, True))
    cap.expect("dns-query", "facecheck.id")
    udp_dns(
        cap,
        eth,
        CLIENT6,
        RESOLVER6,
        port,
        dns_answer(q, ("facecheck.id", "AAAA", "2001:db8:0:443::30")),
        c2s=False,
    )
    # IPv4 fragments (EDNS padding makes the query big enough to fragment).
    q = dns_query(
        "search4faces.com",
        "A",
        0x7003,
        use_edns=0,
        payload=1232,
        options=[dns.edns.GenericOption(12, b"\x00" * 400)],
    )
    dgram = (
        IP(src=CLIENT, dst=RESOLVER, ttl=64, id=0x7003)
        / UDP(sport=cap.port(), dport=53)
        / Raw(q.to_wire())
    )
    frags = fragment(dgram, fragsize=160)
    assert len(frags) == 3
    for f in frags:
        cap.add(eth(f, True))
    cap.counters["ipv4_fragments_skipped"] = len(frags)
    dns_pair(
        cap, eth, "example.org", 0x7004, rdtype="AAAA", cli=CLIENT6, srv=RESOLVER6, ext=_v6_ext
    )
    cap.never("search4faces.com", "example.org")
    cap.proves = [
        "Hop-by-Hop, Destination Options and Routing headers are walked to reach UDP/TCP",
        "an atomic IPv6 fragment is treated as a whole packet (RFC 6946)",
        "IPv4 fragments are counted and skipped, never half-parsed",
    ]
    return cap


def _linktype_cap(
    name: str, linktype: int, link: LinkFn, families: list[str], what: str
) -> Capture:
    cap = Capture(
        name,
        (
            f"The same vendor DNS query (A pimeyes.com) in a capture of link type {what}, once per "
            f"variant ({', '.join(families)}), each with its answer, plus a benign query for "
            "example.org."
        ),
        linktype=linktype,
    )
    qid = 0x8000
    for fam in families:
        cli, srv = (CLIENT6, RESOLVER6) if fam.startswith("IPv6") else (CLIENT, RESOLVER)
        link_fn = link[fam] if isinstance(link, dict) else link
        qid += 1
        dns_pair(cap, link_fn, "pimeyes.com", qid, cli=cli, srv=srv, expect=True)
    first = families[0]
    cli, srv = (CLIENT6, RESOLVER6) if first.startswith("IPv6") else (CLIENT, RESOLVER)
    dns_pair(
        cap,
        link[first] if isinstance(link, dict) else link,
        "example.org",
        qid + 1,
        cli=cli,
        srv=srv,
    )
    cap.never("example.org")
    cap.proves = [f"link type {what} is decoded"]
    return cap


def caps_linktypes() -> list[Capture]:
    return [
        _linktype_cap(
            "linktype_sll",
            LINKTYPE_LINUX_SLL,
            sll_link,
            ["IPv4", "IPv6"],
            "113 LINUX_SLL (16-byte cooked header, old `tcpdump -i any`)",
        ),
        _linktype_cap(
            "linktype_sll2",
            LINKTYPE_LINUX_SLL2,
            sll2_link,
            ["IPv4", "IPv6"],
            "276 LINUX_SLL2 (20-byte cooked header, `tcpdump -i any` today)",
        ),
        _linktype_cap(
            "linktype_raw",
            LINKTYPE_RAW,
            raw_link,
            ["IPv4", "IPv6"],
            "101 RAW (IP version taken from the first nibble)",
        ),
        _linktype_cap("linktype_ipv4", LINKTYPE_IPV4, raw_link, ["IPv4"], "228 IPV4"),
        _linktype_cap("linktype_ipv6", LINKTYPE_IPV6, raw_link, ["IPv6"], "229 IPV6"),
        _linktype_cap(
            "linktype_null",
            LINKTYPE_NULL,
            {
                "IPv4 (AF_INET=2)": null_link(),
                "IPv6 (AF_INET6=24, BSD)": null_link(24),
                "IPv6 (AF_INET6=28, FreeBSD)": null_link(28),
                "IPv6 (AF_INET6=30, macOS)": null_link(30),
            },
            [
                "IPv4 (AF_INET=2)",
                "IPv6 (AF_INET6=24, BSD)",
                "IPv6 (AF_INET6=28, FreeBSD)",
                "IPv6 (AF_INET6=30, macOS)",
            ],
            "0 NULL (BSD loopback, 4-byte address family in the writer's host byte order, here "
            "little-endian like the file)",
        ),
        _linktype_cap(
            "linktype_loop",
            LINKTYPE_LOOP,
            {
                "IPv4 (AF_INET=2)": null_link(byteorder=">"),
                "IPv6 (AF_INET6=24)": null_link(24, byteorder=">"),
            },
            ["IPv4 (AF_INET=2)", "IPv6 (AF_INET6=24)"],
            "108 LOOP (OpenBSD loopback, address family in network byte order)",
        ),
    ]


def _ff_traffic(
    cap: Capture,
    link: LinkFn,
    dns_name: str,
    sni: str,
    *,
    chrome: bool,
    iface_tls: int = 0,
    tls_link: LinkFn | None = None,
) -> None:
    dns_pair(cap, link, dns_name, 0x9001, expect=True)
    dns_pair(cap, link, "example.org", 0x9002)
    tl = tls_link or link
    start = cap.last
    if chrome:
        tls_flow(
            cap, tl, chrome_hello(cap.rng, sni), srv=VENDOR_IP[sni], sizes=[TLS_SEGMENT], expect=sni
        )
    else:
        tls_flow(cap, tl, openssl_hello(cap.rng, sni), srv=VENDOR_IP[sni], expect=sni)
    for f in cap.frames[start:]:
        f.iface = iface_tls
    if iface_tls:  # interleave: back to interface 0 after the flow on interface 1
        dns_pair(cap, link, "www.example.com", 0x9003)
        cap.never("www.example.com")
    cap.never("example.org")


def caps_file_formats() -> list[Capture]:
    eth = eth_link()
    out = []
    cap = Capture(
        "file_format_classic_be",
        (
            "Classic pcap written big-endian (magic a1b2c3d4 stored as a1 b2 c3 d4, every header "
            "field big-endian), microsecond timestamps, Ethernet: a DNS query for pimeyes.com, a "
            "benign example.org query and a 517-byte hello for facecheck.id."
        ),
        fmt="pcap-be",
    )
    _ff_traffic(cap, eth, "pimeyes.com", "facecheck.id", chrome=False)
    cap.proves = ["big-endian classic pcap headers are read with the file's byte order"]
    out.append(cap)
    cap = Capture(
        "file_format_classic_nsec",
        (
            "Classic pcap little-endian with the nanosecond magic a1b23c4d (ts fraction in ns), "
            "Ethernet: a DNS query for lenso.ai, a benign example.org query and a split Chrome "
            "hello for app.clearview.ai."
        ),
        fmt="pcap-nsec",
    )
    _ff_traffic(cap, eth, "lenso.ai", "app.clearview.ai", chrome=True)
    cap.proves = ["the nanosecond classic magic is accepted and its fraction read as ns"]
    out.append(cap)
    cap = Capture(
        "file_format_pcapng_nsec",
        (
            "pcapng little-endian, one Ethernet interface whose IDB has if_tsresol=9 (nanosecond "
            "timestamps), EPBs with an opt_comment: a DNS query for search4faces.com, a benign "
            "example.org query and a split Chrome hello for api.clearview.ai."
        ),
        fmt="pcapng",
        interfaces=[(LINKTYPE_ETHERNET, 9)],
    )
    _ff_traffic(cap, eth, "search4faces.com", "api.clearview.ai", chrome=True)
    cap.frames[0].comment = "crafted by " + GENERATOR
    cap.proves = ["pcapng with if_tsresol=9 is read; EPB options are skipped"]
    out.append(cap)
    cap = Capture(
        "file_format_pcapng_two_interfaces",
        (
            "pcapng little-endian with two interfaces of different link types: interface 0 "
            "Ethernet "
            "(default microsecond resolution) carries a DNS query for www.pimeyes.com and a benign "
            "query; interface 1 raw IP (link type 101, if_tsresol=9) carries a TCP flow with a "
            "517-byte hello for clearview.ai; then interface 0 again (benign www.example.com). "
            "A Name Resolution Block sits between the IDBs and the "
            "packets and an Interface Statistics Block closes the file; both must be skipped."
        ),
        fmt="pcapng",
        interfaces=[(LINKTYPE_ETHERNET, 6), (LINKTYPE_RAW, 9)],
    )
    _ff_traffic(
        cap, eth, "www.pimeyes.com", "clearview.ai", chrome=False, iface_tls=1, tls_link=raw_link
    )
    cap.proves = ["per-interface link type and timestamp resolution in pcapng; NRB/ISB skipped"]
    out.append(cap)
    cap = Capture(
        "file_format_pcapng_be",
        (
            "pcapng written big-endian (byte-order magic 1a2b3c4d stored big-endian), one Ethernet "
            "interface with microsecond timestamps: a DNS query for facecheck.id, a benign "
            "example.org query and a 517-byte hello for pimeyes.com."
        ),
        fmt="pcapng-be",
        interfaces=[(LINKTYPE_ETHERNET, 6)],
    )
    _ff_traffic(cap, eth, "facecheck.id", "pimeyes.com", chrome=False)
    cap.proves = ["a big-endian pcapng section is read with its own byte order"]
    out.append(cap)
    return out


# --- tunnels -----------------------------------------------------------------------------------
def _outer(cap: Capture, payload: Packet) -> bytes:
    return bytes(
        Ether(src=MAC_MIRROR, dst=MAC_COLLECTOR)
        / IP(src=MIRROR_SRC, dst=COLLECTOR, ttl=64, id=cap.ipid())
        / payload
    )


def tunnel_link(cap: Capture, kind: str) -> LinkFn:
    """Wrap the inner frame as a mirror source would send it to the collector."""
    inner_eth = eth_link(pad=False)
    state = {"seq": 0}

    def frame(l3: Packet, c2s: bool) -> bytes:
        state["seq"] += 1
        seq = state["seq"]
        if kind == "gre-ip":
            return _gre(0x0000, 0x0800, b"", bytes(l3))
        inner = inner_eth(l3, c2s)
        if kind == "vxlan":
            return _outer(
                cap,
                UDP(sport=49152 + 4789 % 1000, dport=4789)
                / VXLAN(flags=0x08, vni=1001)
                / Raw(inner),
            )
        if kind == "geneve":
            opt = struct.pack("!HBB", 0x0103, 0x80, 1) + b"\x00\x00\x12\x34"  # class, type, len
            hdr = struct.pack("!BBH", len(opt) // 4, 0x00, 0x6558) + struct.pack("!I", 2002 << 8)
            return _outer(cap, UDP(sport=50000, dport=6081) / Raw(hdr + opt + inner))
        if kind == "gre-teb":  # GRE with key and sequence number, transparent Ethernet bridging
            return _gre(0x3000, 0x6558, struct.pack("!II", 0x0000BEEF, seq), inner)
        if kind == "erspan2":
            erspan = struct.pack("!HHI", (1 << 12) | 100, (0 << 13) | (0 << 11) | 17, 0)
            return _gre(0x1000, 0x88BE, struct.pack("!I", seq), erspan + inner)
        if kind in ("erspan3", "erspan3-o"):
            o_flag = kind == "erspan3-o"
            w0 = (2 << 28) | (100 << 16) | (0 << 13) | (0 << 11) | (0 << 10) | 33
            ts = 0x00C0FFEE + seq
            w2 = (0 << 16) | (0 << 15) | (0 << 10) | (1 << 4) | (0 << 3) | (3 << 1) | int(o_flag)
            erspan = struct.pack("!III", w0, ts, w2)
            if o_flag:  # platform-specific subheader, platform id 3
                erspan += struct.pack("!II", (3 << 26) | 0x123, 0x00000456)
            return _gre(0x1000, 0x22EB, struct.pack("!I", seq), erspan + inner)
        raise ValueError(kind)

    def _gre(flags: int, proto: int, opt: bytes, payload: bytes) -> bytes:
        gre = struct.pack("!HH", flags, proto) + opt
        return bytes(
            Ether(src=MAC_MIRROR, dst=MAC_COLLECTOR)
            / IP(src=MIRROR_SRC, dst=COLLECTOR, ttl=64, id=cap.ipid(), proto=47)
            / Raw(gre + payload)
        )

    return frame


def cap_tunnels() -> Capture:
    cap = Capture(
        "tunnels",
        (
            "Mirrored traffic delivered to the collector 198.51.100.200 from the mirror source "
            "192.0.2.1 inside tunnels: VXLAN (UDP 4789, VNI 1001, inner Ethernet) with a DNS query "
            "for pimeyes.com; Geneve (UDP 6081, one 8-byte option TLV, protocol 0x6558) with a "
            "517-byte hello for facecheck.id after a handshake; GRE (0x0800) with an inner IPv4 "
            "DNS "
            "query for lenso.ai; GRE with key and sequence number carrying transparent Ethernet "
            "bridging (0x6558) with a split Chrome hello for app.clearview.ai; ERSPAN type II (GRE "
            "0x88BE with sequence number, 8-byte header) with a hello for www.pimeyes.com seen "
            "mid-flow; ERSPAN type III (GRE 0x22EB, 12-byte header) without the platform-specific "
            "subheader carrying a DNS query for api.clearview.ai, and with it (flag O, +8 bytes) "
            "carrying a hello for search4faces.com. Decoys: example.org in VXLAN and a hello to "
            "www.example.com in GRE/TEB."
        ),
    )
    vx = tunnel_link(cap, "vxlan")
    dns_pair(cap, vx, "pimeyes.com", 0xA001, expect=True)
    dns_pair(cap, vx, "example.org", 0xA002)
    tls_flow(
        cap,
        tunnel_link(cap, "geneve"),
        openssl_hello(cap.rng, "facecheck.id"),
        srv=VENDOR_IP["facecheck.id"],
        expect="facecheck.id",
    )
    dns_pair(cap, tunnel_link(cap, "gre-ip"), "lenso.ai", 0xA003, expect=True)
    teb = tunnel_link(cap, "gre-teb")
    tls_flow(
        cap,
        teb,
        chrome_hello(cap.rng, "app.clearview.ai"),
        srv=VENDOR_IP["app.clearview.ai"],
        sizes=[1380],
        expect="app.clearview.ai",
    )
    tls_flow(cap, teb, openssl_hello(cap.rng, "www.example.com"), srv=BENIGN_WEB)
    tls_flow(
        cap,
        tunnel_link(cap, "erspan2"),
        openssl_hello(cap.rng, "www.pimeyes.com"),
        srv=VENDOR_IP["www.pimeyes.com"],
        handshake=False,
        expect="www.pimeyes.com",
    )
    dns_pair(cap, tunnel_link(cap, "erspan3"), "api.clearview.ai", 0xA004, expect=True)
    tls_flow(
        cap,
        tunnel_link(cap, "erspan3-o"),
        openssl_hello(cap.rng, "search4faces.com"),
        srv=VENDOR_IP["search4faces.com"],
        expect="search4faces.com",
    )
    cap.never("example.org", "www.example.com")
    cap.proves = [
        "VXLAN, Geneve (with options), GRE (IPv4 and TEB with key+seq), ERSPAN II and III (with "
        "and without the platform-specific subheader) are decapsulated",
        "inner flows are tracked by their inner addresses, not the mirror->collector pair",
    ]
    return cap


# --- HTTP --------------------------------------------------------------------------------------
def cap_http_cases() -> Capture:
    cap = Capture(
        "http_cases",
        (
            "HTTP/1.1 requests: a keep-alive connection on port 80 with three requests (Host "
            "app.clearview.ai, www.example.com, facecheck.id); a request to www.example.com that "
            "names lenso.ai only in the path, query and Referer (no hit); Host "
            "WWW.PIMEYES.COM:8080 "
            "on port 8080 (hit www.pimeyes.com); a POST whose body contains 'Host: pimeyes.com' "
            "(no "
            "hit); a chunked POST whose chunk contains a fake request for lenso.ai followed on the "
            "same connection by a request for clearview.ai; Host api.clearview.ai:8000 on port "
            "8000; an absolute-URI proxy request GET http://facecheck.id/... on port 3128; a "
            "request for search4faces.com split across 3 segments in the middle of the Host "
            "header."
        ),
    )
    cap.tshark_args = ["-d", "tcp.port==8000,http"]
    eth = eth_link()
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["app.clearview.ai"], 80)
    conn.handshake()
    conn.send(True, http_get("app.clearview.ai"))
    cap.expect("http-host", "app.clearview.ai")
    conn.send(False, http_response())
    conn.send(True, http_get("www.example.com", "/index.html"))
    conn.send(False, http_response())
    conn.send(True, http_get("facecheck.id", "/search"))
    cap.expect("http-host", "facecheck.id")
    conn.send(False, http_response())
    conn.close()
    # Vendor name only in path, query and Referer.
    conn = TcpConn(cap, eth, CLIENT, BENIGN_WEB, 80)
    conn.handshake()
    conn.send(
        True,
        http_get(
            "www.example.com",
            "/go/lenso.ai?target=https%3A%2F%2Flenso.ai%2F&q=lenso.ai",
            "Referer: https://lenso.ai/results\r\n",
        ),
    )
    conn.send(False, http_response())
    # Upper case Host with port, on 8080 (seen mid-flow).
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["www.pimeyes.com"], 8080)
    conn.send(True, http_get("WWW.PIMEYES.COM:8080"))
    cap.expect("http-host", "www.pimeyes.com")
    conn.send(False, http_response())
    # POST whose body looks like a request with a vendor Host.
    conn = TcpConn(cap, eth, CLIENT, "198.51.100.90", 80)
    conn.handshake()
    body = b"GET / HTTP/1.1\r\nHost: pimeyes.com\r\n\r\n"
    conn.send(
        True,
        b"POST /notes HTTP/1.1\r\nHost: intranet.police.example\r\n"
        b"Content-Type: text/plain\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body,
    )
    conn.send(False, http_response(b"saved"))
    # Chunked body, then another request on the same connection.
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["clearview.ai"], 80)
    conn.handshake()
    smuggled = b"GET / HTTP/1.1\r\nHost: lenso.ai\r\n\r\n"
    chunked = (
        b"POST /upload HTTP/1.1\r\nHost: example.org\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        + f"{len(smuggled):x}\r\n".encode()
        + smuggled
        + b"\r\n"
        + b"5;note=x\r\nhello\r\n0\r\n\r\n"
    )
    conn.send(True, chunked + http_get("clearview.ai", "/after"), [len(chunked) - 12])
    cap.expect("http-host", "clearview.ai")
    conn.send(False, http_response() + http_response())
    # Port 8000.
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["api.clearview.ai"], 8000)
    conn.handshake()
    conn.send(True, http_get("api.clearview.ai:8000", "/v1/search"))
    cap.expect("http-host", "api.clearview.ai")
    conn.send(False, http_response())
    # Absolute-URI proxy request on 3128.
    conn = TcpConn(cap, eth, CLIENT, PROXY, 3128)
    conn.handshake()
    conn.send(
        True,
        b"GET http://facecheck.id/search?q=1 HTTP/1.1\r\nHost: facecheck.id\r\n"
        b"User-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n",
    )
    cap.expect("http-host", "facecheck.id")
    conn.send(False, http_response())
    # Request split across 3 segments inside the Host header.
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["search4faces.com"], 80)
    conn.handshake()
    req = http_get("search4faces.com", "/s")
    i = req.index(b"Host:")
    conn.send(True, req, [i + 2, 11])
    cap.expect("http-host", "search4faces.com")
    conn.send(False, http_response())
    conn.close()
    cap.never(
        "lenso.ai", "pimeyes.com", "www.example.com", "example.org", "intranet.police.example"
    )
    cap.proves = [
        "every request of a keep-alive connection is examined",
        "only the Host header / absolute-URI authority counts, not path, query, Referer or body",
        "Host is lower-cased and its :port removed; 8080, 8000 and 3128 are HTTP ports",
        "Content-Length and chunked bodies are skipped to find the next request",
        "a request split mid-header is reassembled",
    ]
    return cap


def cap_http_connect_tunnel() -> Capture:
    cap = Capture(
        "http_connect_tunnel",
        (
            "HTTP CONNECT through a proxy on TCP 3128: CONNECT app.clearview.ai:443, 200, then a "
            "split Chrome ClientHello with SNI api.clearview.ai inside the tunnel (http-connect "
            "app.clearview.ai, then tls-sni api.clearview.ai); CONNECT www.example.com:443 whose "
            "tunnelled 517-byte hello has SNI pimeyes.com (only tls-sni); CONNECT facecheck.id:443 "
            "refused with 407 (the request is still an http-connect detection); decoy CONNECT "
            "notclearview.ai:443 whose tunnelled hello has SNI notclearview.ai too."
        ),
    )
    eth = eth_link()

    def connect(
        host: str,
        hello: Hello | None,
        *,
        status: str = "200 Connection established",
        vendor: bool,
        sizes: list[int] | None = None,
        sni_hit: str | None = None,
    ) -> None:
        conn = TcpConn(cap, eth, CLIENT, PROXY, 3128)
        conn.handshake()
        conn.send(
            True,
            f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n"
            "User-Agent: Mozilla/5.0\r\nProxy-Connection: keep-alive\r\n\r\n".encode(),
        )
        if vendor:
            cap.expect("http-connect", host)
        conn.send(
            False,
            f"HTTP/1.1 {status}\r\n\r\n".encode()
            if status.startswith("200")
            else f'HTTP/1.1 {status}\r\nProxy-Authenticate: Basic realm="proxy"\r\n'
            "Content-Length: 0\r\n\r\n".encode(),
        )
        if hello is not None:
            conn.send(True, hello.record, sizes)
            if sni_hit:
                cap.expect("tls-sni", sni_hit)
            conn.send(False, server_flight(cap.rng))
        conn.close()

    connect(
        "app.clearview.ai",
        chrome_hello(cap.rng, "api.clearview.ai"),
        vendor=True,
        sizes=[TLS_SEGMENT],
        sni_hit="api.clearview.ai",
    )
    connect(
        "www.example.com",
        openssl_hello(cap.rng, "pimeyes.com"),
        vendor=False,
        sni_hit="pimeyes.com",
    )
    connect("facecheck.id", None, status="407 Proxy Authentication Required", vendor=True)
    connect("notclearview.ai", openssl_hello(cap.rng, "notclearview.ai"), vendor=False)
    cap.never("www.example.com", "notclearview.ai")
    cap.proves = [
        "CONNECT host:port is an http-connect detection whatever the proxy answers",
        "after a 200 the tunnelled ClientHello is parsed and gives its own tls-sni",
    ]
    return cap


def cap_decoys() -> Capture:
    cap = Capture(
        "decoys",
        (
            "Look-alike names over DNS, TLS and HTTP that must never match: notclearview.ai, "
            "clearview.ai.example.net, pimeyes.com.cdn.example.org, myfacecheck.id. And spelling "
            "variants of real vendor names that DO match after normalisation: a DNS query for "
            "CLEARVIEW.AI. (upper case on the wire), a ClientHello with SNI 'PimEyes.com.' "
            "(literal "
            "trailing dot), an HTTP Host 'FaceCheck.ID.' (trailing dot); reported lower-case "
            "without the trailing dot."
        ),
    )
    eth = eth_link()
    for i, name in enumerate(DECOYS):
        dns_pair(cap, eth, name, 0xB001 + i)
        tls_flow(cap, eth, openssl_hello(cap.rng, name), srv=f"198.51.100.{100 + i}")
        conn = TcpConn(cap, eth, CLIENT, f"198.51.100.{100 + i}", 80)
        conn.handshake()
        conn.send(True, http_get(name))
        conn.send(False, http_response())
    dns_pair(cap, eth, "CLEARVIEW.AI.", 0xB010, expect=True)
    tls_flow(
        cap,
        eth,
        openssl_hello(cap.rng, "PimEyes.com."),
        srv=VENDOR_IP["pimeyes.com"],
        expect="pimeyes.com",
    )
    conn = TcpConn(cap, eth, CLIENT, VENDOR_IP["facecheck.id"], 80)
    conn.handshake()
    conn.send(True, http_get("FaceCheck.ID."))
    cap.expect("http-host", "facecheck.id")
    conn.send(False, http_response())
    cap.never(*DECOYS)
    cap.proves = [
        "suffix matching is on label boundaries; a vendor name inside a longer name is no hit",
        "names are compared case-insensitively and without a trailing dot",
    ]
    return cap


# =============================================================================================
# QUIC client Initials (RFC 9000/9001; v2: RFC 9369), protected as a real client protects them
# =============================================================================================
# Written from the RFCs, independently of monitor/protocols/quic.py: these captures are the
# yardstick for that code, and tshark (which decrypts Initials itself) checks them in --check.
QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF
QUIC_RESERVED_VERSION = 0x1A2A3A4A  # 0x?a?a?a?a (RFC 9000 section 15): a server must negotiate
QUIC_INITIAL, QUIC_0RTT, QUIC_HANDSHAKE = 0, 1, 2  # index into the type-bits tuples below
_QUIC_PARAMS: dict[int, tuple[bytes, bytes, tuple[int, int, int]]] = {
    # version: (Initial salt, HKDF label prefix, long-header type bits of Initial/0-RTT/Handshake)
    QUIC_V1: (bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"), b"quic", (0, 1, 2)),
    QUIC_V2: (bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"), b"quicv2", (1, 2, 3)),
}
QUIC_DATAGRAM = 1250  # Chromium's Initial datagram size; RFC 9000 asks for at least 1200


@dataclass(slots=True, frozen=True)
class QuicKeys:
    version: int
    key: bytes
    iv: bytes
    hp: bytes


def _hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = struct.pack("!H", length) + _u8(full) + b"\x00"
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def quic_initial_keys(dcid: bytes, version: int, *, server: bool = False) -> QuicKeys:
    """RFC 9001 5.2 / RFC 9369 3.3: Initial keys from the client's original DCID."""
    salt, prefix, _ = _QUIC_PARAMS[version]
    initial_secret = hmac.new(salt, dcid, hashlib.sha256).digest()  # HKDF-Extract
    secret = _hkdf_expand_label(initial_secret, b"server in" if server else b"client in", 32)
    return QuicKeys(
        version,
        _hkdf_expand_label(secret, prefix + b" key", 16),
        _hkdf_expand_label(secret, prefix + b" iv", 12),
        _hkdf_expand_label(secret, prefix + b" hp", 16),
    )


# RFC 9001 appendix A.1 and RFC 9369 appendix A.1: the client keys for DCID 8394c8f03e515708.
assert quic_initial_keys(bytes.fromhex("8394c8f03e515708"), QUIC_V1).key == bytes.fromhex(
    "1f369613dd76d5467730efcbe3b1a22d"
)
assert quic_initial_keys(bytes.fromhex("8394c8f03e515708"), QUIC_V2).key == bytes.fromhex(
    "8b1a0bc121284290a29e0971b5cd045d"
)


def opaque_keys(rng: random.Random, version: int) -> QuicKeys:
    """Stand-in Handshake / 0-RTT keys: a passive observer never has the real ones."""
    return QuicKeys(version, rng.randbytes(16), rng.randbytes(12), rng.randbytes(16))


def qvarint(v: int) -> bytes:
    for size, prefix in ((1, 0), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if v < 1 << (8 * size - 2):
            return (v | prefix << (8 * size - 8)).to_bytes(size, "big")
    raise ValueError(v)


def q_crypto(offset: int, data: bytes) -> bytes:
    return b"\x06" + qvarint(offset) + qvarint(len(data)) + data


def q_ack(largest: int, first_range: int = 0, delay: int = 0) -> bytes:
    return b"\x02" + qvarint(largest) + qvarint(delay) + qvarint(0) + qvarint(first_range)


Q_PING = b"\x01"


def quic_long_packet(
    keys: QuicKeys,
    ptype: int,
    dcid: bytes,
    scid: bytes,
    payload: bytes,
    pn: int,
    *,
    pn_len: int = 1,
    size: int | None = None,
    token: bytes = b"",
) -> bytes:
    """One protected long-header packet (Initial, 0-RTT or Handshake) of keys.version.

    size: pad the payload with PADDING frames so that the packet is that many bytes long.
    """
    _, _, types = _QUIC_PARAMS[keys.version]
    head = (
        bytes([0xC0 | types[ptype] << 4 | (pn_len - 1)])
        + struct.pack("!I", keys.version)
        + _u8(dcid)
        + _u8(scid)
    )
    if ptype == QUIC_INITIAL:
        head += qvarint(len(token)) + token
    if size is not None:
        payload += bytes(max(0, size - len(head) - 2 - pn_len - len(payload) - 16))
    payload += bytes(max(0, 4 - pn_len - len(payload)))  # the header-protection sample needs it
    header = (
        head
        + struct.pack("!H", 0x4000 | (pn_len + len(payload) + 16))
        + (pn % (1 << (8 * pn_len))).to_bytes(pn_len, "big")
    )
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(keys.key).encrypt(nonce, payload, header)
    pn_off = len(header) - pn_len
    sample = sealed[4 - pn_len : 20 - pn_len]
    mask = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor().update(sample)
    masked_pn = bytes(b ^ m for b, m in zip(header[pn_off:], mask[1 : 1 + pn_len], strict=True))
    assert size is None or len(header) + len(sealed) == size, "frames do not fit the packet"
    return bytes([header[0] ^ (mask[0] & 0x0F)]) + header[1:pn_off] + masked_pn + sealed


def quic_short_packet(rng: random.Random, dcid: bytes, length: int) -> bytes:
    """An opaque 1-RTT packet (short header: fixed bit set, protected bits random)."""
    return bytes([0x40 | rng.randrange(0x40)]) + dcid + rng.randbytes(length)


def _handshake_client_hello(rng: random.Random, ciphers: list[int], exts: list[bytes]) -> bytes:
    """A ClientHello handshake message as QUIC carries it: no record header, empty session id
    (RFC 9001 8.4 forbids the middlebox-compatibility session id)."""
    body = (
        b"\x03\x03"
        + rng.randbytes(32)
        + _u8(b"")
        + _u16(_shorts(*ciphers))
        + b"\x01\x00"
        + _u16(b"".join(exts))
    )
    return b"\x01" + _u24(body)


def _tparam(pid: int, value: bytes) -> bytes:
    return qvarint(pid) + qvarint(len(value)) + value


def _transport_params(rng: random.Random, scid: bytes, *, chrome: bool) -> bytes:
    params = [
        _tparam(0x01, qvarint(30000)),  # max_idle_timeout
        _tparam(0x03, qvarint(1472)),  # max_udp_payload_size
        _tparam(0x04, qvarint(15728640)),  # initial_max_data
        _tparam(0x05, qvarint(6291456)),  # initial_max_stream_data_bidi_local
        _tparam(0x06, qvarint(6291456)),  # initial_max_stream_data_bidi_remote
        _tparam(0x07, qvarint(6291456)),  # initial_max_stream_data_uni
        _tparam(0x08, qvarint(100)),  # initial_max_streams_bidi
        _tparam(0x09, qvarint(103)),  # initial_max_streams_uni
        _tparam(0x0F, scid),  # initial_source_connection_id
    ]
    if chrome:
        params += [
            _tparam(0x20, qvarint(65536)),  # max_datagram_frame_size
            _tparam(0x11, struct.pack("!II", QUIC_V1, QUIC_V1)),  # version_information
            _tparam(31 * rng.randrange(1, 1 << 20) + 27, rng.randbytes(rng.randrange(1, 17))),
        ]
        rng.shuffle(params)
    return b"".join(params)


def _grease_ech(rng: random.Random) -> bytes:
    return _ext(
        0xFE0D,
        b"\x00"
        + _shorts(0x0001, 0x0001)
        + bytes([rng.randrange(256)])
        + _u16(rng.randbytes(32))
        + _u16(rng.randbytes(rng.choice([144, 176, 208, 240]))),
    )


def quic_chrome_hello(rng: random.Random, sni: str, scid: bytes = b"") -> bytes:
    """Chrome 13x QUIC hello: h3, X25519MLKEM768 share (~1.7 kB in all), GREASE, permuted."""
    g_cipher, g_group, g_version = _grease(rng), _grease(rng), _grease(rng)
    g_ext1 = _grease(rng)
    g_ext2 = _grease(rng, avoid=(g_ext1,))
    exts = [
        _sni(sni),
        _ext(10, _u16(_shorts(g_group, 0x11EC, 0x001D, 0x0017, 0x0018))),
        _ext(16, _u16(_u8(b"h3"))),
        _ext(13, _u16(_shorts(0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601))),
        _ext(
            51,
            _u16(
                _shorts(g_group)
                + _u16(b"\x00")
                + _shorts(0x11EC)
                + _u16(rng.randbytes(1216))
                + _shorts(0x001D)
                + _u16(rng.randbytes(32))
            ),
        ),
        _ext(45, _u8(b"\x01")),
        _ext(43, _u8(_shorts(g_version, 0x0304))),
        _ext(27, _u8(_shorts(0x0002))),
        _ext(0x44CD, _u16(_u8(b"h3"))),
        _ext(0x39, _transport_params(rng, scid, chrome=True)),
        _grease_ech(rng),
    ]
    rng.shuffle(exts)
    exts = [_ext(g_ext1), *exts, _ext(g_ext2, b"\x00")]
    return _handshake_client_hello(rng, [g_cipher, 0x1301, 0x1302, 0x1303], exts)


def quic_firefox_hello(
    rng: random.Random, sni: str, scid: bytes, *, alpn: bytes = b"h3", resumption: bool = False
) -> bytes:
    """Firefox (NSS/neqo)-like QUIC hello: fixed extension order, x25519 + P-256 shares, small
    enough for one Initial. resumption adds early_data and a pre_shared_key (last, as
    RFC 8446 4.2.11 requires) as a client sending 0-RTT does."""
    exts = [
        _sni(sni),
        _ext(10, _u16(_shorts(0x001D, 0x0017, 0x0018, 0x0019, 0x0100, 0x0101))),
        _ext(16, _u16(_u8(alpn))),
        _ext(5, b"\x01\x00\x00\x00\x00"),
        _ext(34, _u16(_shorts(0x0403, 0x0503, 0x0603, 0x0203))),
        _ext(
            51,
            _u16(
                _shorts(0x001D)
                + _u16(rng.randbytes(32))
                + _shorts(0x0017)
                + _u16(b"\x04" + rng.randbytes(64))
            ),
        ),
        _ext(43, _u8(_shorts(0x0304))),
        _ext(
            13,
            _u16(
                _shorts(
                    0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0203
                )
            ),
        ),
        _ext(45, _u8(b"\x01")),
        _grease_ech(rng),
        _ext(0x39, _transport_params(rng, scid, chrome=False)),
    ]
    if resumption:
        identity = _u16(rng.randbytes(208)) + struct.pack("!I", rng.randrange(1 << 32))
        exts += [_ext(42), _ext(41, _u16(identity) + _u16(_u8(rng.randbytes(32))))]
    return _handshake_client_hello(rng, [0x1301, 0x1303, 0x1302], exts)


def _server_hello_message(rng: random.Random) -> bytes:
    exts = _ext(43, _shorts(0x0304)) + _ext(51, _shorts(0x001D) + _u16(rng.randbytes(32)))
    body = b"\x03\x03" + rng.randbytes(32) + _u8(b"") + _shorts(0x1301) + b"\x00" + _u16(exts)
    return b"\x02" + _u24(body)


def chaos_frames(rng: random.Random, hello: bytes, packets: int) -> list[bytes]:
    """Chromium-style CRYPTO framing ("chaos protection"): the hello cut into 64-480 byte
    pieces, one extra piece that overlaps two neighbours, all shuffled and dealt over
    `packets` Initials, with PING frames and short PADDING runs between them."""
    lo, hi = 64, 480
    pieces, pos = [], 0
    while pos < len(hello):
        rest = len(hello) - pos
        n = rest if rest <= hi else min(rng.randint(lo, hi), rest - lo)
        pieces.append((pos, hello[pos : pos + n]))
        pos += n
    a = rng.randrange(len(pieces) - 1)
    start = pieces[a + 1][0] - rng.randint(8, 40)
    pieces.append((start, hello[start : pieces[a + 1][0] + rng.randint(8, 40)]))
    rng.shuffle(pieces)
    bins: list[list[tuple[int, bytes]]] = [[] for _ in range(packets)]
    for piece in pieces:  # balance the bytes per packet so each fits one datagram
        min(bins, key=lambda b: sum(len(d) for _, d in b)).append(piece)
    out = []
    for chunk in bins:
        frames = b"".join(
            (Q_PING if rng.random() < 0.5 else bytes(rng.randint(1, 9))) + q_crypto(off, data)
            for off, data in chunk
        )
        out.append(frames)
    return out


class QuicConn:
    """One client's QUIC connection: addresses, connection IDs, Initial keys, packet numbers."""

    def __init__(
        self,
        cap: Capture,
        link: LinkFn,
        cli: str,
        srv: str,
        *,
        sport: int = 443,
        version: int = QUIC_V1,
        scid_len: int = 0,
    ) -> None:
        self.cap, self.link, self.cli, self.srv, self.sport = cap, link, cli, srv, sport
        self.version = version
        self.cport = cap.port()
        self.dcid = cap.rng.randbytes(8)
        self.scid = cap.rng.randbytes(scid_len)
        self.keys = quic_initial_keys(self.dcid, version)
        self.server_cid = b""
        self.pn = 0

    def send(self, datagram: bytes, c2s: bool = True) -> int:
        src, dst = (self.cli, self.srv) if c2s else (self.srv, self.cli)
        sp, dp = (self.cport, self.sport) if c2s else (self.sport, self.cport)
        l3 = ip_hdr(self.cap, src, dst) / UDP(sport=sp, dport=dp) / Raw(datagram)
        return self.cap.add(self.link(l3, c2s))

    def initial(
        self, frames: bytes, *, size: int | None = QUIC_DATAGRAM, to_server_cid: bool = False
    ) -> bytes:
        dcid = self.server_cid if to_server_cid else self.dcid
        pkt = quic_long_packet(self.keys, QUIC_INITIAL, dcid, self.scid, frames, self.pn, size=size)
        self.pn += 1
        return pkt

    def handshake_reply(self) -> None:
        """The server's first flight and the client's answer, as far as an observer sees it:
        server Initial (ACK + ServerHello, server Initial keys) coalesced with an opaque
        Handshake packet; client Initial with an ACK, now sent to the server's chosen CID and
        still under the original keys, coalesced with an opaque Handshake packet; then 1-RTT."""
        rng = self.cap.rng
        self.server_cid = rng.randbytes(8)
        server_keys = quic_initial_keys(self.dcid, self.version, server=True)
        hs_keys = opaque_keys(rng, self.version)
        s_init = quic_long_packet(
            server_keys,
            QUIC_INITIAL,
            self.scid,
            self.server_cid,
            q_ack(self.pn - 1) + q_crypto(0, _server_hello_message(rng)),
            0,
            pn_len=2,
        )
        s_hs = quic_long_packet(
            hs_keys, QUIC_HANDSHAKE, self.scid, self.server_cid, rng.randbytes(960), 0, pn_len=2
        )
        self.send(s_init + s_hs, c2s=False)
        c_hs = quic_long_packet(
            hs_keys, QUIC_HANDSHAKE, self.server_cid, self.scid, rng.randbytes(80), 0, pn_len=2
        )
        c_init = self.initial(q_ack(0), size=1200 - len(c_hs), to_server_cid=True)
        self.send(c_init + c_hs)
        self.send(quic_short_packet(rng, self.server_cid, 90))
        self.send(quic_short_packet(rng, self.scid, 400), c2s=False)
        self.send(quic_short_packet(rng, self.server_cid, 40))


def cap_quic_reorder_split() -> Capture:
    cap = Capture(
        "quic_reorder_split",
        (
            "QUIC v1 client Initials (UDP 443), protected with the keys derived from each "
            "client's Destination Connection ID. (A) A Chrome-like ClientHello (~1.7 kB, "
            "X25519MLKEM768 share, h3) for app.clearview.ai cut into 64-480 byte CRYPTO frames "
            "plus one overlapping duplicate piece, shuffled over 3 Initials (pn 0-2) with PING "
            "and PADDING frames between; captured as pn 0, pn 2, pn 3 (a retransmission "
            "repeating pn 0's frames), then pn 1, which completes the hello; then a mirror "
            "duplicate of that datagram and a full retransmission of the hello in 2 new "
            "Initials (nothing more). (B) A Firefox-like hello for lenso.ai in a single Initial, "
            "answered by the server (Initial with ServerHello coalesced with a Handshake "
            "packet), then the client's ACK-only Initial sent to the server's chosen CID (still "
            "the original keys: not a decrypt failure, not a new connection), Handshake and "
            "1-RTT packets. (C) A benign Chrome-like hello for www.example.com over 2 Initials. "
            "(D) IPv6: a Chrome-like hello for pimeyes.com over 3 Initials captured 3, 1, 2. "
            "(E) 802.1Q VLAN 100: a Firefox-like hello for facecheck.id in one Initial."
        ),
    )
    cap.frame_check = True
    eth = eth_link()
    rng = cap.rng
    # A: shuffled, split, reordered, retransmitted.
    conn = QuicConn(cap, eth, CLIENT, VENDOR_IP["app.clearview.ai"])
    hello = quic_chrome_hello(rng, "app.clearview.ai")
    parts = chaos_frames(rng, hello, 3)
    p0, p1, p2 = (conn.initial(f) for f in parts)
    conn.send(p0)
    conn.send(p2)
    conn.send(conn.initial(parts[0]))  # PTO retransmission: pn 0's frames in a new packet
    n = conn.send(p1)
    cap.expect("quic-sni", "app.clearview.ai", n, note="Initial pn 1 fills the last hole")
    cap.add(cap.frames[n - 1].data)  # the same frame again, as a SPAN port may duplicate it
    for frames in chaos_frames(rng, hello, 2):
        conn.send(conn.initial(frames))
    # B: single Initial, then the server's flight and the client's reply to the new CID.
    conn = QuicConn(cap, eth, CLIENT_B, VENDOR_IP["lenso.ai"], scid_len=8)
    hello = quic_firefox_hello(rng, "lenso.ai", conn.scid)
    conn.send(conn.initial(q_crypto(0, hello)))
    cap.expect("quic-sni", "lenso.ai", note="single Initial")
    conn.handshake_reply()
    # C: benign.
    conn = QuicConn(cap, eth, CLIENT, BENIGN_WEB)
    for frames in chaos_frames(rng, quic_chrome_hello(rng, "www.example.com"), 2):
        conn.send(conn.initial(frames))
    # D: IPv6, captured in the order 3, 1, 2.
    conn = QuicConn(cap, eth, CLIENT6, SERVER6)
    packets = [conn.initial(f) for f in chaos_frames(rng, quic_chrome_hello(rng, "pimeyes.com"), 3)]
    for pkt in (packets[2], packets[0], packets[1]):
        n = conn.send(pkt)
    cap.expect("quic-sni", "pimeyes.com", n, note="IPv6, Initials captured as pn 2, 0, 1")
    # E: VLAN-tagged.
    conn = QuicConn(cap, eth_link(((0x8100, 100),)), CLIENT, VENDOR_IP["facecheck.id"], scid_len=8)
    conn.send(conn.initial(q_crypto(0, quic_firefox_hello(rng, "facecheck.id", conn.scid))))
    cap.expect("quic-sni", "facecheck.id", note="802.1Q VLAN 100")
    cap.never("www.example.com")
    cap.counters["quic_decrypt_failures"] = 0
    cap.proves = [
        "CRYPTO frames shuffled, split, overlapping and spread over reordered Initials are "
        "reassembled; the detection is at the Initial that fills the last hole",
        "retransmitted and duplicated Initials, server packets, Handshake and 1-RTT packets add "
        "nothing; an Initial to the server's chosen CID is no decrypt failure",
        "a single-Initial hello, IPv6 and 802.1Q-tagged QUIC are detected",
    ]
    return cap


def cap_quic_coalesced_v2_vn() -> Capture:
    cap = Capture(
        "quic_coalesced_v2_vn",
        (
            "QUIC on UDP 443 beyond a plain v1 Initial. (A) A resuming Firefox-like client "
            "(pre_shared_key + early_data) sends its hello for api.clearview.ai in an Initial "
            "coalesced with a 0-RTT packet in one 1252-byte datagram, then a 0-RTT-only "
            "datagram. (B) QUIC version 2 (RFC 9369, 0x6b3343cf: own salt, HKDF labels "
            "'quicv2 ...', Initial long-header type bits 01): a Chrome-like hello for "
            "www.pimeyes.com over 2 v2 Initials. (C) A client Initial of the reserved version "
            "0x1a2a3a4a (undecryptable: counted in quic_unknown_versions) and the server's "
            "Version Negotiation packet (UDP source port 443) offering v2 and v1 (counted in "
            "quic_version_negotiation); no detection. (D) Garbage on UDP 443: a long header "
            "of version 1 with Initial type bits, an 8-byte DCID and a random body, which fails "
            "AEAD authentication (quic_decrypt_failures: 1), and a long header whose DCID length "
            "byte is 21 (> 20, malformed: the tracker counts it in its own 'malformed' stat, "
            "which the engine does not export; no engine counter moves)."
        ),
        malformed_expected=True,  # tshark calls the reserved version and the bad header malformed
    )
    cap.frame_check = True
    eth = eth_link()
    rng = cap.rng
    # A: Initial + 0-RTT coalesced.
    conn = QuicConn(cap, eth, CLIENT, VENDOR_IP["api.clearview.ai"], scid_len=8)
    hello = quic_firefox_hello(rng, "api.clearview.ai", conn.scid, resumption=True)
    zero_rtt_keys = opaque_keys(rng, QUIC_V1)
    zrtt = quic_long_packet(zero_rtt_keys, QUIC_0RTT, conn.dcid, conn.scid, rng.randbytes(300), 0)
    init = conn.initial(q_crypto(0, hello), size=1252 - len(zrtt))
    conn.send(init + zrtt)
    cap.expect("quic-sni", "api.clearview.ai", note="Initial coalesced with 0-RTT")
    conn.send(
        quic_long_packet(zero_rtt_keys, QUIC_0RTT, conn.dcid, conn.scid, rng.randbytes(200), 1)
    )
    # B: QUIC v2.
    conn = QuicConn(cap, eth, CLIENT_B, VENDOR_IP["www.pimeyes.com"], version=QUIC_V2)
    for frames in chaos_frames(rng, quic_chrome_hello(rng, "www.pimeyes.com"), 2):
        n = conn.send(conn.initial(frames))
    cap.expect("quic-sni", "www.pimeyes.com", n, note="QUIC v2, second Initial")
    # C: reserved version -> Version Negotiation.
    conn = QuicConn(cap, eth, CLIENT, VENDOR_IP["clearview.ai"], scid_len=8)
    head = (
        bytes([0xC0 | rng.randrange(0x40)])
        + struct.pack("!I", QUIC_RESERVED_VERSION)
        + _u8(conn.dcid)
        + _u8(conn.scid)
    )
    conn.send(head + rng.randbytes(1200 - len(head)))
    versions = struct.pack("!III", 0x3A4A5A6A, QUIC_V2, QUIC_V1)  # with a greased version
    conn.send(
        bytes([0x80 | rng.randrange(0x80)]) + bytes(4) + _u8(conn.scid) + _u8(conn.dcid) + versions,
        c2s=False,
    )
    cap.counters["quic_version_negotiation"] = 1
    cap.counters["quic_unknown_versions"] = 1
    # D: garbage long headers.
    conn = QuicConn(cap, eth, CLIENT_B, "203.0.113.200")
    head = (
        bytes([0xC0 | rng.randrange(0x10)])
        + struct.pack("!I", QUIC_V1)
        + _u8(conn.dcid)
        + b"\x00\x00"
    )
    body_len = 1200 - len(head) - 2
    conn.send(head + struct.pack("!H", 0x4000 | body_len) + rng.randbytes(body_len))
    cap.counters["quic_decrypt_failures"] = 1
    conn.send(bytes([0xC3]) + struct.pack("!I", QUIC_V1) + b"\x15" + rng.randbytes(60))
    cap.proves = [
        "an Initial coalesced with a 0-RTT packet is found; 0-RTT packets are skipped",
        "QUIC v2 Initials are decrypted with the v2 salt, labels and type bits",
        "Version Negotiation and unknown versions are counted, never detected",
        "a long header that fails authentication is a counted decrypt failure; a broken one is "
        "dropped",
    ]
    return cap


# =============================================================================================
# Blind spots: encrypted DNS (DoH, DoT, DoQ) and Encrypted Client Hello
# =============================================================================================
GOOGLE_DNS, CLOUDFLARE_DNS, QUAD9_DNS = "8.8.8.8", "1.1.1.1", "9.9.9.9"
GOOGLE_DNS6 = "2001:4860:4860::8888"


def plain_hello(rng: random.Random, sni: str | None, alpn: tuple[bytes, ...] = ()) -> Hello:
    """A compact TLS 1.3 hello (GnuTLS/OpenSSL-like) with optional SNI and ALPN. Without SNI it
    is what a client sends to an IP literal (DoH/DoT configured by address)."""
    exts = [
        _ext(11, _u8(b"\x00")),
        _ext(10, _u16(_shorts(0x001D, 0x0017, 0x0018))),
        _ext(35),
        _ext(22),
        _ext(23),
        _ext(13, _u16(_shorts(0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501))),
        _ext(43, _u8(_shorts(0x0304, 0x0303))),
        _ext(45, _u8(b"\x01")),
        _ext(51, _u16(_shorts(0x001D) + _u16(rng.randbytes(32)))),
    ]
    if alpn:
        exts.insert(0, _ext(16, _u16(b"".join(_u8(a) for a in alpn))))
    if sni is not None:
        exts.insert(0, _sni(sni))
    ciphers = [0x1302, 0x1303, 0x1301, 0xC02C, 0xC02B, 0xC030, 0xC02F, 0xCCA9, 0xCCA8, 0x00FF]
    body = (
        b"\x03\x03"
        + rng.randbytes(32)
        + _u8(rng.randbytes(32))
        + _u16(_shorts(*ciphers))
        + b"\x01\x00"
    )
    record = b"\x16\x03\x01" + _u16(b"\x01" + _u24(body + _u16(b"".join(exts))))
    return Hello(record, 5 + 4 + len(body) + 2 if sni is not None else -1)


def cap_blind_spots() -> Capture:
    cap = Capture(
        "blind_spots",
        (
            "Signals of traffic the sensor cannot see into, from clients 192.0.2.10 (A), "
            "192.0.2.11 (B) and 2001:db8:0:1::10, over 12 minutes of packet time (the real "
            "public resolver addresses 8.8.8.8, 1.1.1.1, 9.9.9.9 and 2001:4860:4860::8888 are "
            "used on purpose: no-SNI detection depends on them). DoH: A's Chrome-like hello "
            "with SNI dns.google to 8.8.8.8:443 (encrypted-dns); A again 60 s later (same "
            "client and name within 10 minutes: rate-limited, no event); B's hello to "
            "dns.google 1 s later (event); A's hello without SNI to 1.1.1.1:443 (event named "
            "1.1.1.1) and the IPv6 client's to [2001:4860:4860::8888]:443 (event named by that "
            "address). DoT on TCP 853: a hello with SNI dns.quad9.net to 9.9.9.9 (ALPN dot) "
            "and a hello without SNI to 198.51.100.54 (any hello on 853 counts; named by the "
            "server address). DoQ: a QUIC Initial on UDP 853 with SNI dns.adguard-dns.com "
            "(ALPN doq). DoH over HTTP/3: a QUIC Initial on UDP 443 with SNI "
            "cloudflare-dns.com. ECH: a Chrome-like hello with a real ECH extension (0xfe0d, "
            "config id 0x5a, 464-byte payload) whose outer SNI is the client-facing server "
            "cloudflare-ech.com (ech-observed), the same again 5 s later (rate-limited), and "
            "B's hello to cloudflare-ech.com without any ECH extension (no ech-observed: the "
            "extension is required). No event: a Chrome hello with GREASE ECH to "
            "www.example.com (only counted). Vendor access: a hello with a real ECH extension "
            "and outer SNI app.clearview.ai (an ordinary tls-sni). Finally, about 12 minutes after "
            "its first one, A's hello to dns.google again (the window has passed: event)."
        ),
    )
    cap.frame_check = True
    cap.tshark_args = ["-d", "udp.port==853,quic"]
    eth = eth_link()
    rng = cap.rng

    def dot_doh(hello: Hello, srv: str, name: str, note: str, **kw: Any) -> None:
        """A TLS connection whose hello is an encrypted-dns event named `name`, or none."""
        evidence = "ip" if name and name[0].isdigit() else "tls-sni"
        action = "encrypted-dns" if name else "vendor-access"
        tls_flow(
            cap,
            eth,
            hello,
            srv=srv,
            expect=name or None,
            action=action,
            evidence=evidence,
            note=note,
            **kw,
        )

    split = {"sizes": [TLS_SEGMENT]}
    dot_doh(chrome_hello(rng, "dns.google"), GOOGLE_DNS, "dns.google", "client A, DoH", **split)
    cap.wait(60)
    dot_doh(plain_hello(rng, "dns.google", (b"h2", b"http/1.1")), GOOGLE_DNS, "", "")
    cap.wait(1)
    dot_doh(
        plain_hello(rng, "dns.google", (b"h2",)),
        GOOGLE_DNS,
        "dns.google",
        "client B (A's repeat 1 s before was rate-limited)",
        cli=CLIENT_B,
    )
    dot_doh(
        plain_hello(rng, None, (b"h2",)),
        CLOUDFLARE_DNS,
        CLOUDFLARE_DNS,
        "client A, no SNI, public resolver address",
    )
    dot_doh(
        plain_hello(rng, None, (b"h2",)),
        GOOGLE_DNS6,
        GOOGLE_DNS6,
        "IPv6 client, no SNI, public resolver address",
        cli=CLIENT6,
    )
    dot_doh(
        plain_hello(rng, "dns.quad9.net", (b"dot",)),
        QUAD9_DNS,
        "dns.quad9.net",
        "DoT, TCP 853",
        sport=853,
    )
    dot_doh(plain_hello(rng, None), "198.51.100.54", "198.51.100.54", "DoT without SNI", sport=853)
    conn = QuicConn(cap, eth, CLIENT, "198.51.100.57", sport=853, scid_len=8)
    hello = quic_firefox_hello(rng, "dns.adguard-dns.com", conn.scid, alpn=b"doq")
    conn.send(conn.initial(q_crypto(0, hello)))
    cap.expect("quic-sni", "dns.adguard-dns.com", action="encrypted-dns", note="DoQ, UDP 853")
    conn = QuicConn(cap, eth, CLIENT, "198.51.100.58")
    for frames in chaos_frames(rng, quic_chrome_hello(rng, "cloudflare-dns.com"), 2):
        conn.send(conn.initial(frames))
    cap.expect("quic-sni", "cloudflare-dns.com", action="encrypted-dns", note="DoH over HTTP/3")
    ech_front = "198.51.100.59"
    tls_flow(
        cap,
        eth,
        chrome_hello(rng, "cloudflare-ech.com", ech="real"),
        srv=ech_front,
        sizes=[TLS_SEGMENT],
        expect="cloudflare-ech.com",
        action="ech-observed",
        note="real ECH extension",
    )
    cap.wait(5)
    tls_flow(
        cap,
        eth,
        chrome_hello(rng, "cloudflare-ech.com", ech="real"),
        srv=ech_front,
        sizes=[TLS_SEGMENT],
    )
    tls_flow(cap, eth, openssl_hello(rng, "cloudflare-ech.com"), srv=ech_front, cli=CLIENT_B)
    tls_flow(cap, eth, chrome_hello(rng, "www.example.com"), srv=BENIGN_WEB, sizes=[TLS_SEGMENT])
    tls_flow(
        cap,
        eth,
        chrome_hello(rng, "app.clearview.ai", ech="real"),
        srv=VENDOR_IP["app.clearview.ai"],
        sizes=[TLS_SEGMENT],
        expect="app.clearview.ai",
    )
    cap.wait(660)  # ~12 min after A's first dns.google event, 11 after the rate-limited one
    dot_doh(
        chrome_hello(rng, "dns.google"),
        GOOGLE_DNS,
        "dns.google",
        "client A, about 12 minutes after its first event",
        **split,
    )
    cap.never("www.example.com")
    actions = [d.action for d in cap.detections]
    cap.counters["encrypted_dns_events"] = actions.count("encrypted-dns")
    cap.counters["ech_observed_events"] = actions.count("ech-observed")
    cap.counters["blind_spot_suppressed"] = 2  # A's dns.google after 60 s, the ECH repeat
    # hellos with extension 0xfe0d: 6 chrome_hello (GREASE or real ECH), 1 quic_chrome_hello
    # and 1 quic_firefox_hello (GREASE ECH); plain_hello and openssl_hello carry none
    cap.counters["ech_offered_hellos"] = 8
    cap.proves = [
        "a TLS or QUIC hello to a public resolver name, a hello without SNI to a public resolver "
        "address, and any hello on TCP/UDP 853 are encrypted-dns events",
        "encrypted-dns and ech-observed are rate-limited per (client, name) for 10 minutes",
        "ECH to a client-facing server is ech-observed; GREASE ECH is nothing; a vendor outer "
        "SNI stays an ordinary tls-sni",
    ]
    return cap


def all_captures() -> list[Capture]:
    return [
        cap_tls_out_of_order(),
        cap_tls_retransmission(),
        cap_tls_sni_in_second_segment(),
        cap_tls_nonstandard_port(),
        cap_tls_ech(),
        cap_dns_tcp_pipelining(),
        cap_dns_cname_and_nxdomain(),
        cap_dns_malformed(),
        cap_truncated_packets(),
        cap_vlan_qinq(),
        cap_ipv6_ext_headers(),
        *caps_linktypes(),
        *caps_file_formats(),
        cap_tunnels(),
        cap_http_cases(),
        cap_http_connect_tunnel(),
        cap_decoys(),
        cap_quic_reorder_split(),
        cap_quic_coalesced_v2_vn(),
        cap_blind_spots(),
    ]


# =============================================================================================
# Writers
# =============================================================================================
def write_classic(cap: Capture, path: Path) -> None:
    nano = cap.fmt == "pcap-nsec"
    endian = ">" if cap.fmt == "pcap-be" else "<"
    w = RawPcapWriter(
        str(path), linktype=cap.linktype, endianness=endian, nano=nano, snaplen=262144
    )
    w.linktype = cap.linktype  # scapy ignores a falsy linktype argument (LINKTYPE_NULL is 0)
    w.write_header(None)  # write_packet() alone would never write the file header
    for f in cap.frames:
        sec, frac = divmod(f.ts_ns, 1_000_000_000)
        w.write_packet(
            f.data,
            sec=sec,
            usec=frac if nano else frac // 1000,
            caplen=len(f.data),
            wirelen=f.orig_len,
        )
    w.close()


def _pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def _options(e: str, opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    out = b"".join(struct.pack(e + "HH", code, len(v)) + _pad4(v) for code, v in opts)
    return out + struct.pack(e + "HH", 0, 0)


def _block(e: str, btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack(e + "II", btype, total) + body + struct.pack(e + "I", total)


def write_pcapng(cap: Capture, path: Path) -> None:
    """Minimal pcapng writer: SHB, IDBs with if_tsresol, EPBs, optional NRB and ISB."""
    e = ">" if cap.fmt == "pcapng-be" else "<"
    out = [
        _block(
            e,
            0x0A0D0D0A,
            struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)
            + _options(e, [(4, b"egress-monitor " + GENERATOR.encode())]),
        )
    ]
    for i, (linktype, tsresol) in enumerate(cap.interfaces):
        opts = [(2, f"crafted{i}".encode())]
        if tsresol != 6:
            opts.append((9, bytes([tsresol])))
        out.append(_block(e, 1, struct.pack(e + "HHI", linktype, 0, 262144) + _options(e, opts)))
    if len(cap.interfaces) > 1:
        value = bytes([198, 51, 100, 53]) + b"example.org\x00"
        rec = struct.pack(e + "HH", 1, len(value)) + _pad4(value)
        out.append(_block(e, 4, rec + struct.pack(e + "HH", 0, 0)))

    def ts_units(ts_ns: int, iface: int) -> int:
        return ts_ns // (10 ** (9 - cap.interfaces[iface][1]))

    for f in cap.frames:
        t = ts_units(f.ts_ns, f.iface)
        opts = [(1, f.comment.encode())] if f.comment else []
        body = (
            struct.pack(e + "IIIII", f.iface, t >> 32, t & 0xFFFFFFFF, len(f.data), f.orig_len)
            + _pad4(f.data)
            + _options(e, opts)
        )
        out.append(_block(e, 6, body))
    if len(cap.interfaces) > 1:
        for i in range(len(cap.interfaces)):
            mine = [f for f in cap.frames if f.iface == i]
            t0, t1 = ts_units(mine[0].ts_ns, i), ts_units(mine[-1].ts_ns, i)
            body = struct.pack(e + "III", i, t1 >> 32, t1 & 0xFFFFFFFF) + _options(
                e,
                [
                    (2, struct.pack(e + "II", t0 >> 32, t0 & 0xFFFFFFFF)),
                    (3, struct.pack(e + "II", t1 >> 32, t1 & 0xFFFFFFFF)),
                    (4, struct.pack(e + "Q", len(mine))),
                    (5, struct.pack(e + "Q", 0)),
                ],
            )
            out.append(_block(e, 5, body))
    path.write_bytes(b"".join(out))


def write_intent(cap: Capture, path: Path) -> None:
    head = yaml.safe_dump({"description": cap.description}, width=100, sort_keys=False)
    lines = [head.rstrip("\n"), "source: crafted", f"generator: {GENERATOR}"]
    dets = sorted(cap.detections, key=lambda d: d.frame)  # stable: same-frame order kept
    if dets:
        lines.append("detections:")
        for d in dets:
            note = f": {d.note}" if d.note else ""
            if d.action == "vendor-access":
                entry = f"{{evidence: {d.evidence}, name: {d.name}}}"
            else:  # blind-spot signal: the name is an SNI or, without one, the server IP
                entry = (
                    f"{{action: {d.action}, name: '{d.name}'}}"
                    if ":" in d.name
                    else (f"{{action: {d.action}, name: {d.name}}}")
                )
                note = f": {d.evidence}{', ' + d.note if d.note else ''}"
            lines.append(f"  - {entry}  # frame {d.frame}{note}")
    else:
        lines.append("detections: []")
    lines.append(f"must_not_match: [{', '.join(cap.must_not_match)}]")
    if cap.counters:
        lines.append("counters:")
        lines += [f"  {k}: {v}" for k, v in cap.counters.items()]
    if cap.prefilter_misses:
        lines += [f"# {line}" for line in cap.prefilter_note.splitlines()]
        lines.append("prefilter_misses:")
        lines += [f"  - {{evidence: {e}, name: {n}}}" for e, n in cap.prefilter_misses]
    text = "\n".join(lines) + "\n"
    loaded = yaml.safe_load(text)
    assert loaded["detections"] == [
        {"evidence": d.evidence, "name": d.name}
        if d.action == "vendor-access"
        else {"action": d.action, "name": d.name}
        for d in dets
    ]
    path.write_text(text)


README_QUIC_AND_BLIND_SPOTS = [
    "- QUIC: one quic-sni per QUIC connection (client address/port and original Destination",
    "  Connection ID) at the client Initial that completes the ClientHello. CRYPTO frames may be",
    "  shuffled, split, overlapping and spread over reordered Initials; retransmitted or",
    "  duplicated Initials, server packets, 0-RTT, Handshake and 1-RTT packets add nothing. A",
    "  client Initial sent to the server's chosen CID is opened with the original keys (not a",
    "  decrypt failure). QUIC v2 (RFC 9369) Initials are read like v1 ones.",
    "- Version Negotiation packets and long headers of unknown versions are counted",
    "  (quic_version_negotiation, quic_unknown_versions), never detected. A long header with",
    "  Initial type bits that fails AEAD authentication counts in quic_decrypt_failures; a long",
    "  header whose framing is broken is dropped (tracker stat 'malformed', no engine counter).",
    "- A detection may carry `action` (default vendor-access, then written as before).",
    "  `{action: encrypted-dns, name: N}`: a TLS or QUIC ClientHello whose SNI is a public",
    "  resolver host (dns.google, cloudflare-dns.com, dns.quad9.net, ...), a hello without SNI",
    "  to a public resolver address (8.8.8.8, 1.1.1.1, 9.9.9.9, 2001:4860:4860::8888), any",
    "  hello on TCP 853 (DoT) or QUIC Initial on UDP 853 (DoQ); N is the SNI, or the server",
    "  address when there is none. `{action: ech-observed, name: N}`: a hello carrying",
    "  extension 0xfe0d whose outer SNI is an ECH client-facing server (cloudflare-ech.com).",
    "  Both are limited to one event per (client IP, N) per 10 minutes of packet time. A GREASE",
    "  ECH hello to an ordinary site is no event; a vendor outer SNI with ECH is a tls-sni.",
]


def write_readme(caps: list[Capture], path: Path) -> None:
    out = [
        "# Crafted sample captures",
        "",
        f"Generated by `{GENERATOR}` (scapy + dnspython + hand-made bytes); do not edit by hand.",
        "Run `python3 pcaps/crafted/make_crafted_pcaps.py` to regenerate (byte-identical every",
        "time) and `python3 pcaps/crafted/make_crafted_pcaps.py --check` to prove determinism",
        "and let tshark confirm that every capture opens and shows the names the intents claim.",
        "",
        "All timestamps start at 2026-01-15T10:00:00Z; addresses are documentation ranges",
        "(192.0.2.0/24 clients, 198.51.100.0/24 benign servers/resolver/proxy/collector,",
        "203.0.113.0/24 vendor servers, 2001:db8::/32). Small Ethernet frames are padded to 60",
        "bytes, as frames from a mirror port are: use the IP total length, not the frame length.",
        "",
        "Each `NAME.intent.yaml` lists the detections a correct sensor reports, in the order of",
        "the packet that completes each one (the frame number is in a comment).",
        "",
        "## Decisions the sensor must follow",
        "",
        "- One detection per ClientHello / DNS transaction / HTTP request, never per copy:",
        "  retransmissions and mirror duplicates of data already consumed are ignored.",
        "- The detection belongs to the packet that completes the evidence (for an out-of-order",
        "  hello, the segment that fills the last hole).",
        "- A flow seen without its SYN is anchored on a client segment whose first byte is 0x16",
        "  (TLS handshake record) on any port; a stream whose first client payload is something",
        "  else is not searched for hellos (tls_nonstandard_port, port 9999).",
        "- DNS response whose query was not captured: dns-query on the response. NXDOMAIN",
        "  answers add nothing to the query's detection. A CNAME chain gives dns-cname only when",
        "  the question itself did not match.",
        "- DNS names must parse strictly: compression pointers must point strictly backwards",
        "  (forward pointers are errors even when the target is a valid name), label length",
        "  bytes 0x40-0xBF are errors, names over 255 octets are errors, and a question needs",
        "  QTYPE and QCLASS. Each such message increments dns_parse_errors and yields nothing.",
        "- IPv6 atomic fragments (Fragment header, offset 0, M=0; RFC 6946) are processed as",
        "  whole packets and detected. Real IPv4 fragments are not reassembled:",
        "  ipv4_fragments_skipped counts every fragment frame (first and later ones).",
        "- Truncated frames (caplen < len) and bogus IPv4 headers (IHL < 5, IHL*4 > total",
        "  length, header shorter than 20 bytes) are dropped without a detection; a hello whose",
        "  segment was cut before the SNI yields nothing.",
        "- Names are reported lower-case without trailing dot and without :port.",
        "- CONNECT is an http-connect detection when the request is seen, whatever the proxy",
        "  answers (407 included); after a 2xx the tunnelled ClientHello gives its own tls-sni.",
        "- An ECH outer ClientHello is reported with its outer (public) SNI like any other hello;",
        "  real and GREASE ECH extensions look alike on the wire and are simply skipped.",
        *README_QUIC_AND_BLIND_SPOTS,
        "- Counter names used in the intents: dns_parse_errors, ipv4_fragments_skipped,",
        "  quic_version_negotiation, quic_unknown_versions, quic_decrypt_failures,",
        "  encrypted_dns_events, ech_observed_events, blind_spot_suppressed (events not emitted",
        "  because of the rate limit), ech_offered_hellos (hellos carrying extension 0xfe0d, real",
        "  or GREASE).",
        "",
        "## Captures",
        "",
        "| capture | detections | proves |",
        "| --- | --- | --- |",
    ]
    for cap in caps:
        counts: dict[str, int] = {}
        for d in cap.detections:
            kind = d.evidence if d.action == "vendor-access" else d.action
            counts[kind] = counts.get(kind, 0) + 1
        det = ", ".join(f"{n} {k}" for k, n in counts.items()) or "none"
        extra = "".join(f"; {k}={v}" for k, v in cap.counters.items())
        proves = "<br>".join(cap.proves)
        out.append(
            f"| `{cap.name}{cap.suffix}` | {len(cap.detections)} ({det}{extra}) | {proves} |"
        )
    out += ["", "## Descriptions", ""]
    for cap in caps:
        out += [f"### {cap.name}{cap.suffix}", "", cap.description, ""]
    path.write_text("\n".join(out))


def generate(out_dir: Path) -> list[Capture]:
    out_dir.mkdir(parents=True, exist_ok=True)
    caps = all_captures()
    for cap in caps:
        path = out_dir / f"{cap.name}{cap.suffix}"
        if cap.fmt.startswith("pcapng"):
            write_pcapng(cap, path)
        else:
            write_classic(cap, path)
        write_intent(cap, out_dir / f"{cap.name}.intent.yaml")
    write_readme(caps, out_dir / "README.md")
    return caps


# =============================================================================================
# --check: determinism and tshark's opinion
# =============================================================================================
FIELDS = {
    "dns-query": ["dns.qry.name"],
    "dns-cname": ["dns.cname"],
    "tls-sni": ["tls.handshake.extensions_server_name"],
    "http-host": ["http.host", "http.request.uri"],
    "http-connect": ["http.request.uri"],
    "quic-sni": ["tls.handshake.extensions_server_name"],  # tshark decrypts client Initials
    "ip": ["ip.dst", "ipv6.dst"],  # blind-spot signal named by the server address (no SNI)
}


def _norm(value: str) -> str:
    v = value.strip().lower()
    v = re.sub(r"^[a-z]+://", "", v).split("/", 1)[0]
    v = re.sub(r":\d+$", "", v)
    return v.rstrip(".")


def _tshark(path: Path, extra: list[str], *args: str) -> str:
    res = subprocess.run(
        ["tshark", "-n", "-r", str(path), *extra, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout + res.stderr


def _misplaced_hellos(cap: Capture, path: Path) -> list[str]:
    """Detections whose frame holds no ClientHello with that name in tshark's dissection (TCP
    reassembly and QUIC CRYPTO reassembly put the hello in the frame that completes it)."""
    out = _tshark(
        path,
        cap.tshark_args,
        "-Y",
        "tls.handshake.type == 1",
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=;",
        "-e",
        "frame.number",
        "-e",
        "tls.handshake.extensions_server_name",
        "-e",
        "ip.dst",
        "-e",
        "ipv6.dst",
    )
    hellos: dict[int, set[str]] = {}
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) < 4 or not cols[0].isdigit():
            continue
        snis = {_norm(v) for v in cols[1].split(";") if v}
        hellos[int(cols[0])] = snis or {cols[2] or cols[3]}
    return [
        f"{d.name}@{d.frame}"
        for d in cap.detections
        if d.evidence in ("tls-sni", "quic-sni", "ip") and d.name not in hellos.get(d.frame, ())
    ]


def check(out_dir: Path) -> int:
    failures = 0
    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
        generate(Path(t1))
        generate(Path(t2))
        for f in sorted(Path(t1).iterdir()):
            a, b = f.read_bytes(), (Path(t2) / f.name).read_bytes()
            c = (out_dir / f.name).read_bytes() if (out_dir / f.name).exists() else None
            if a != b:
                print(f"NOT DETERMINISTIC: {f.name}")
                failures += 1
            if c != a:
                print(f"differs from {out_dir}: {f.name}")
                failures += 1
    caps = all_captures()
    total = 0
    for cap in caps:
        path = out_dir / f"{cap.name}{cap.suffix}"
        total += path.stat().st_size
        expert = _tshark(path, cap.tshark_args, "-q", "-z", "expert,error")
        m = re.search(r"Errors \((\d+)\)", expert)
        nerr = int(m.group(1)) if m else 0
        status = "ok"
        if nerr and not cap.malformed_expected:
            status = "UNEXPECTED EXPERT ERRORS"
            failures += 1
            print(expert)
        if cap.malformed_expected and not nerr:
            status = "expected malformed packets but tshark found none"
            failures += 1
        seen: dict[str, set[str]] = {}
        for ev, flds in FIELDS.items():
            args = ["-T", "fields", "-E", "occurrence=a", "-E", "separator=,"]
            for fld in flds:
                args += ["-e", fld]
            names: set[str] = set()
            norm = (lambda v: v.strip()) if ev == "ip" else _norm
            for line in _tshark(path, cap.tshark_args, *args).splitlines():
                names |= {norm(v) for v in line.split(",") if v.strip()}
            seen[ev] = names
        missing = [
            f"{d.evidence}:{d.name}" for d in cap.detections if d.name not in seen[d.evidence]
        ]
        everything = set().union(*seen.values())
        raw = path.read_bytes().lower()
        absent = [
            n
            for n in cap.must_not_match
            if n not in everything
            and n.encode() not in raw
            and _labels(*[x.encode() for x in n.split(".")]) not in raw
        ]
        if missing or absent:
            failures += 1
            status = f"tshark does not show {missing}; absent must_not_match {absent}"
        misplaced = _misplaced_hellos(cap, path) if cap.frame_check else []
        if misplaced:
            failures += 1
            status = f"tshark shows no such hello in the detection's frame: {misplaced}"
        print(
            f"{cap.name + cap.suffix:42s} frames={len(cap.frames):3d} "
            f"detections={len(cap.detections):2d} expert_errors={nerr:2d} {status}"
        )
    print(f"total capture size {total} bytes")
    if total >= 2 * 1024 * 1024:
        failures += 1
        print("TOO BIG")
    print("check:", "FAILED" if failures else "passed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE, help="output directory (default: %(default)s)")
    p.add_argument(
        "--check",
        action="store_true",
        help="regenerate twice in temp dirs, compare with --out, run tshark checks",
    )
    a = p.parse_args(argv)
    if a.check:
        if shutil.which("tshark") is None:
            print("tshark not found", file=sys.stderr)
            return 2
        return check(a.out)
    caps = generate(a.out)
    digest = hashlib.sha256()
    for cap in caps:
        digest.update((a.out / f"{cap.name}{cap.suffix}").read_bytes())
    print(f"wrote {len(caps)} captures to {a.out} (sha256 of all: {digest.hexdigest()[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
