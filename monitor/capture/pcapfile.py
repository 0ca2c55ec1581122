"""Streaming reader for classic pcap and pcapng, over files and pipes.

Why not scapy's readers on the hot path: they build a metadata object per record and issue two
``read()`` calls per packet. This reader pulls large chunks and walks the records with
``struct.unpack_from``, yielding plain tuples, which is what lets a 1M-packet replay finish in
seconds. It never seeks, so it also reads tcpdump's filtered output from a pipe.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

CHUNK = 1 << 20
MAX_RECORD = 1 << 18  # larger than any snaplen libpcap writes (262144)

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D

# A frame as the pipeline consumes it: (timestamp in ns since the epoch, link type, captured bytes,
# original length on the wire). A tuple, not a dataclass: it is created once per packet.
Frame = tuple[int, int, bytes, int]


class CaptureFormatError(ValueError):
    """The input is not a capture file this reader understands."""


@dataclass(slots=True)
class ReaderStats:
    records: int = 0
    bytes: int = 0
    truncated_tail: bool = False
    skipped_blocks: int = 0
    link_types: set[int] = field(default_factory=set)


class _Buffer:
    """A byte window over a stream that refills in large chunks."""

    __slots__ = ("buf", "eof", "pos", "stream")

    def __init__(self, stream: BinaryIO, initial: bytes = b"") -> None:
        self.stream = stream
        self.buf = initial
        self.pos = 0
        self.eof = False

    def ensure(self, n: int) -> bool:
        """Make ``n`` bytes available at ``pos``; False at end of stream."""
        avail = len(self.buf) - self.pos
        if avail >= n:
            return True
        parts = [self.buf[self.pos :]]
        # read1: what the stream has now (one system call), not a full CHUNK. On tcpdump's
        # pipe a full-size read() would wait while tcpdump filters the next megabyte, and that
        # wait, not the filtering, made the two processes take turns instead of overlapping.
        read = getattr(self.stream, "read1", self.stream.read)
        while avail < n and not self.eof:
            chunk = read(max(CHUNK, n - avail))
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            avail += len(chunk)
        self.buf = b"".join(parts)
        self.pos = 0
        return avail >= n


def read_frames(stream: BinaryIO, stats: ReaderStats | None = None) -> Iterator[Frame]:
    """Yield every frame of a pcap or pcapng stream, detecting the format from its magic."""
    if stats is None:
        stats = ReaderStats()
    head = _read_exact(stream, 4)
    if len(head) < 4:
        raise CaptureFormatError("empty or too short to be a capture file")
    magic_le = struct.unpack("<I", head)[0]
    if magic_le == PCAPNG_SHB:
        yield from _read_pcapng(_Buffer(stream, head), stats)
    elif magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) or struct.unpack(">I", head)[0] in (
        PCAP_MAGIC_US,
        PCAP_MAGIC_NS,
    ):
        yield from _read_pcap(_Buffer(stream, head), stats)
    else:
        raise CaptureFormatError(f"unknown magic number 0x{head.hex()}: not pcap or pcapng")


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _read_pcap(b: _Buffer, stats: ReaderStats) -> Iterator[Frame]:
    if not b.ensure(24):
        raise CaptureFormatError("truncated pcap file header")
    magic = struct.unpack_from("<I", b.buf, 0)[0]
    if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        endian = "<"
    else:
        endian = ">"
        magic = struct.unpack_from(">I", b.buf, 0)[0]
    nano = magic == PCAP_MAGIC_NS
    # The upper bits of the link-type field carry FCS flags (pcap-savefile(5)).
    linktype = struct.unpack_from(endian + "I", b.buf, 20)[0] & 0x0FFFFFFF
    stats.link_types.add(linktype)
    b.pos += 24
    rec = struct.Struct(endian + "IIII")
    unpack_from = rec.unpack_from
    frac_mult = 1 if nano else 1000
    while True:
        buf = b.buf
        pos = b.pos
        end = len(buf)
        # Inner loop over what is buffered; refill only when a record straddles the edge.
        while pos + 16 <= end:
            sec, frac, caplen, wirelen = unpack_from(buf, pos)
            if caplen > MAX_RECORD:
                raise CaptureFormatError(
                    f"record at offset {pos} claims {caplen} bytes: corrupt pcap file"
                )
            start = pos + 16
            stop = start + caplen
            if stop > end:
                break
            stats.records += 1
            stats.bytes += caplen
            yield sec * 1_000_000_000 + frac * frac_mult, linktype, buf[start:stop], wirelen
            pos = stop
        b.pos = pos
        if not b.ensure(16):
            if len(b.buf) - b.pos:
                stats.truncated_tail = True
            return
        caplen = unpack_from(b.buf, b.pos)[2]
        if caplen > MAX_RECORD:
            raise CaptureFormatError(f"record claims {caplen} bytes: corrupt pcap file")
        if not b.ensure(16 + caplen):
            stats.truncated_tail = True
            return


@dataclass(slots=True)
class _Interface:
    linktype: int
    # Timestamp units per second and the multiplier that turns one unit into nanoseconds; when the
    # resolution is not a power of ten dividing 1e9, ``per_second`` is used for an exact division.
    per_second: int
    ns_mult: int
    snaplen: int


def _read_pcapng(b: _Buffer, stats: ReaderStats) -> Iterator[Frame]:
    endian = "<"
    interfaces: list[_Interface] = []
    while True:
        if not b.ensure(12):
            if len(b.buf) - b.pos:
                stats.truncated_tail = True
            return
        buf, pos = b.buf, b.pos
        btype = struct.unpack_from(endian + "I", buf, pos)[0]
        if btype == PCAPNG_SHB:
            bom = struct.unpack_from("<I", buf, pos + 8)[0]
            if bom == PCAPNG_BOM:
                endian = "<"
            elif bom == 0x4D3C2B1A:
                endian = ">"
            else:
                raise CaptureFormatError(f"bad pcapng byte-order magic at offset {pos}")
            interfaces = []
        blen = struct.unpack_from(endian + "I", buf, pos + 4)[0]
        if blen < 12 or blen % 4 or blen > MAX_RECORD + 64:
            raise CaptureFormatError(f"pcapng block at offset {pos} has invalid length {blen}")
        if not b.ensure(blen):
            stats.truncated_tail = True
            return
        buf, pos = b.buf, b.pos
        body = pos + 8
        body_end = pos + blen - 4
        if btype == 1:  # Interface Description Block
            linktype, _res, snaplen = struct.unpack_from(endian + "HHI", buf, body)
            per_second, ns_mult = _tsresol(buf, body + 8, body_end, endian)
            interfaces.append(_Interface(linktype, per_second, ns_mult, snaplen))
            stats.link_types.add(linktype)
        elif btype == 6 or btype == 2:  # Enhanced Packet Block / obsolete Packet Block
            if btype == 6:
                ifid, ts_hi, ts_lo, caplen, wirelen = struct.unpack_from(
                    endian + "IIIII", buf, body
                )
            else:
                ifid, _drops, ts_hi, ts_lo, caplen, wirelen = struct.unpack_from(
                    endian + "HHIIII", buf, body
                )
            data_start = body + 20
            if ifid >= len(interfaces) or data_start + caplen > body_end:
                stats.skipped_blocks += 1
            else:
                itf = interfaces[ifid]
                ts = (ts_hi << 32) | ts_lo
                ts_ns = ts * itf.ns_mult if itf.ns_mult else ts * 1_000_000_000 // itf.per_second
                stats.records += 1
                stats.bytes += caplen
                yield ts_ns, itf.linktype, buf[data_start : data_start + caplen], wirelen
        elif btype == 3:  # Simple Packet Block: interface 0, no timestamp
            wirelen = struct.unpack_from(endian + "I", buf, body)[0]
            if not interfaces:
                stats.skipped_blocks += 1
            else:
                itf = interfaces[0]
                caplen = min(wirelen, body_end - body - 4)
                if itf.snaplen:
                    caplen = min(caplen, itf.snaplen)
                stats.records += 1
                stats.bytes += caplen
                yield 0, itf.linktype, buf[body + 4 : body + 4 + caplen], wirelen
        elif btype != PCAPNG_SHB:
            stats.skipped_blocks += 1
        b.pos = pos + blen


def _tsresol(buf: bytes, pos: int, end: int, endian: str) -> tuple[int, int]:
    """Read if_tsresol from IDB options; the default is microseconds (pcapng spec 4.2)."""
    while pos + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = buf[pos + 4]
            if value & 0x80:
                per_second = 1 << (value & 0x7F)
                return per_second, 0
            exp = value & 0x7F
            if exp <= 9:
                return 10**exp, 10 ** (9 - exp)
            return 10**exp, 0
        pos += 4 + ((length + 3) & ~3)
    return 1_000_000, 1000


def peek_link_type(path: str) -> int | None:
    """The link type of a capture file's first interface, or None if it cannot be read."""
    stats = ReaderStats()
    try:
        with open(path, "rb") as f:
            next(read_frames(f, stats), None)
    except (OSError, CaptureFormatError):
        return None
    return min(stats.link_types) if len(stats.link_types) == 1 else None
