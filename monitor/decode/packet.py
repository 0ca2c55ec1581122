"""Raw-bytes decoding from a captured frame down to the transport payload.

One pass with ``struct.unpack_from`` and integer offsets: no per-layer objects. The decoder knows
every link type a mirror port or ``tcpdump -i any`` produces, VLAN/QinQ tags, IPv6 extension
headers, and the remote-mirroring tunnels (VXLAN, Geneve, GRE, ERSPAN II/III) whose inner packet
is the one that matters. Anything it cannot use costs a counter, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from struct import error as StructError
from struct import unpack_from

# Link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_RAW_ALIASES = (12, 14)  # DLT_RAW as some BSDs number it

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN_TAGS = (0x8100, 0x88A8, 0x9100, 0x9200)
ETH_TEB = 0x6558  # transparent Ethernet bridging (GRE, Geneve)
GRE_ERSPAN_2 = 0x88BE
GRE_ERSPAN_3 = 0x22EB

PROTO_TCP = 6
PROTO_UDP = 17
PROTO_GRE = 47

VXLAN_PORT = 4789
GENEVE_PORT = 6081

_IPV6_EXT = {0, 43, 60}  # hop-by-hop, routing, destination options: (len+1)*8 bytes
_MAX_DEPTH = 4  # tunnels inside tunnels beyond this are not a mirror, they are an attack


class Packet:
    """The transport-level view of one frame that the protocol handlers need.

    Addresses stay packed (4 or 16 bytes); they are turned into text only when an event is
    written, which is rare by design. ``smac`` is the Ethernet (or cooked-capture) source
    address of the frame that carried the IP packet, when it had one: attribution compares it
    with the DHCP lease of the source address. For a tunnelled packet it is the inner frame's
    (the mirror's own outer frame says nothing about the client).
    """

    __slots__ = (
        "dport",
        "dst",
        "flags",
        "payload",
        "proto",
        "seq",
        "smac",
        "sport",
        "src",
        "ts",
        "tunnel",
        "version",
        "vlan",
    )

    def __init__(
        self,
        ts: int,
        version: int,
        src: bytes,
        dst: bytes,
        proto: int,
        sport: int,
        dport: int,
        flags: int,
        seq: int,
        payload: bytes,
        vlan: int | None = None,
        tunnel: str | None = None,
    ) -> None:
        self.ts = ts
        self.version = version
        self.src = src
        self.dst = dst
        self.proto = proto
        self.sport = sport
        self.dport = dport
        self.flags = flags
        self.seq = seq
        self.payload = payload
        self.vlan = vlan
        self.tunnel = tunnel
        self.smac: bytes | None = None

    def __repr__(self) -> str:
        return (
            f"Packet(v{self.version} proto={self.proto} {self.src.hex()}:{self.sport} -> "
            f"{self.dst.hex()}:{self.dport} len={len(self.payload)})"
        )


@dataclass(slots=True)
class DecodeStats:
    frames: int = 0
    ip_packets: int = 0
    non_ip: int = 0
    truncated: int = 0
    unknown_linktype: int = 0
    ipv4_fragments: int = 0
    ipv6_fragments: int = 0
    other_transport: int = 0
    tunnels: dict[str, int] = field(default_factory=dict)


class Decoder:
    """Turns frames into :class:`Packet` records, counting what it cannot use."""

    __slots__ = ("stats",)

    def __init__(self) -> None:
        self.stats = DecodeStats()

    def decode(self, ts: int, linktype: int, data: bytes) -> Packet | None:
        self.stats.frames += 1
        try:
            if linktype == LINKTYPE_ETHERNET:
                # Untagged IPv4/IPv6 is most of a mirror port: skip the generic dispatch.
                if len(data) > 14 and data[12] == 0x08 and data[13] == 0x00:
                    pkt = self._ipv4(ts, data, 14, 0, None, None)
                elif len(data) > 14 and data[12] == 0x86 and data[13] == 0xDD:
                    pkt = self._ipv6(ts, data, 14, 0, None, None)
                else:
                    return self._ethernet(ts, data, 0, 0, None, None)
                if pkt is not None and pkt.tunnel is None:
                    pkt.smac = data[6:12]
                return pkt
            if linktype == LINKTYPE_LINUX_SLL2:
                if len(data) < 20:
                    self.stats.truncated += 1
                    return None
                pkt = self._ethertype(ts, data, 20, unpack_from("!H", data, 0)[0], 0, None, None)
                # ARPHRD_ETHER with a 6-byte address: the sender's MAC (for incoming frames).
                if (
                    pkt is not None
                    and pkt.tunnel is None
                    and data[8:10] == b"\x00\x01"
                    and data[11] == 6
                ):
                    pkt.smac = data[12:18]
                return pkt
            if linktype == LINKTYPE_LINUX_SLL:
                if len(data) < 16:
                    self.stats.truncated += 1
                    return None
                pkt = self._ethertype(ts, data, 16, unpack_from("!H", data, 14)[0], 0, None, None)
                if pkt is not None and pkt.tunnel is None and data[2:6] == b"\x00\x01\x00\x06":
                    pkt.smac = data[6:12]
                return pkt
            if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6) or linktype in _RAW_ALIASES:
                return self._ip_by_version(ts, data, 0, 0, None, None)
            if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
                if len(data) < 4:
                    self.stats.truncated += 1
                    return None
                # The address family is in the capturing host's byte order for NULL; accept
                # either order rather than guess the host.
                fam = unpack_from("<I", data, 0)[0]
                if fam > 0xFFFF:
                    fam = unpack_from(">I", data, 0)[0]
                if fam == 2:
                    return self._ipv4(ts, data, 4, 0, None, None)
                if fam in (24, 28, 30, 10):
                    return self._ipv6(ts, data, 4, 0, None, None)
                self.stats.non_ip += 1
                return None
            self.stats.unknown_linktype += 1
            return None
        except (IndexError, StructError):
            # Every length is checked above; this is the last line of defence for a frame that
            # still manages to surprise, so it costs a counter and not the sensor.
            self.stats.truncated += 1
            return None

    # -- link layer ---------------------------------------------------------------------------

    def _ethernet(
        self, ts: int, data: bytes, off: int, depth: int, vlan: int | None, tunnel: str | None
    ) -> Packet | None:
        if len(data) < off + 14:
            self.stats.truncated += 1
            return None
        pkt = self._ethertype(
            ts, data, off + 14, unpack_from("!H", data, off + 12)[0], depth, vlan, tunnel
        )
        # The innermost Ethernet frame names the sender; an outer one (the mirror's) never does.
        if pkt is not None and pkt.tunnel == tunnel and pkt.smac is None:
            pkt.smac = data[off + 6 : off + 12]
        return pkt

    def _ethertype(
        self,
        ts: int,
        data: bytes,
        off: int,
        etype: int,
        depth: int,
        vlan: int | None,
        tunnel: str | None,
    ) -> Packet | None:
        # 802.1Q, 802.1ad (QinQ) and the older 0x9100 stacking; the outer tag names the VLAN.
        while etype in ETH_VLAN_TAGS:
            if len(data) < off + 4:
                self.stats.truncated += 1
                return None
            tci, etype = unpack_from("!HH", data, off)
            if vlan is None:
                vlan = tci & 0x0FFF
            off += 4
        if etype == ETH_IPV4:
            return self._ipv4(ts, data, off, depth, vlan, tunnel)
        if etype == ETH_IPV6:
            return self._ipv6(ts, data, off, depth, vlan, tunnel)
        self.stats.non_ip += 1
        return None

    def _ip_by_version(
        self, ts: int, data: bytes, off: int, depth: int, vlan: int | None, tunnel: str | None
    ) -> Packet | None:
        if len(data) <= off:
            self.stats.truncated += 1
            return None
        version = data[off] >> 4
        if version == 4:
            return self._ipv4(ts, data, off, depth, vlan, tunnel)
        if version == 6:
            return self._ipv6(ts, data, off, depth, vlan, tunnel)
        self.stats.non_ip += 1
        return None

    # -- network layer ------------------------------------------------------------------------

    def _ipv4(
        self, ts: int, data: bytes, off: int, depth: int, vlan: int | None, tunnel: str | None
    ) -> Packet | None:
        if len(data) < off + 20:
            self.stats.truncated += 1
            return None
        vihl = data[off]
        ihl = (vihl & 0x0F) * 4
        total = unpack_from("!H", data, off + 2)[0]
        if vihl >> 4 != 4 or ihl < 20 or total < ihl:
            self.stats.truncated += 1
            return None
        end = off + total
        if end > len(data):
            # Snapped capture: use what is there; the payload parsers see a short buffer.
            end = len(data)
            if off + ihl > end:
                self.stats.truncated += 1
                return None
        frag = unpack_from("!H", data, off + 6)[0]
        if frag & 0x3FFF:  # MF set or a non-zero offset
            self.stats.ipv4_fragments += 1
            return None
        self.stats.ip_packets += 1
        return self._transport(
            ts,
            4,
            data[off + 12 : off + 16],
            data[off + 16 : off + 20],
            data[off + 9],
            data,
            off + ihl,
            end,
            depth,
            vlan,
            tunnel,
        )

    def _ipv6(
        self, ts: int, data: bytes, off: int, depth: int, vlan: int | None, tunnel: str | None
    ) -> Packet | None:
        if len(data) < off + 40:
            self.stats.truncated += 1
            return None
        if data[off] >> 4 != 6:
            self.stats.truncated += 1
            return None
        plen = unpack_from("!H", data, off + 4)[0]
        nxt = data[off + 6]
        end = off + 40 + plen if plen else len(data)  # 0 = jumbogram: take the frame
        end = min(end, len(data))
        src = data[off + 8 : off + 24]
        dst = data[off + 24 : off + 40]
        pos = off + 40
        # Walk extension headers; bounded by the packet length since each step advances.
        while True:
            if nxt in _IPV6_EXT:
                if pos + 2 > end:
                    self.stats.truncated += 1
                    return None
                nxt, hlen = data[pos], (data[pos + 1] + 1) * 8
                pos += hlen
            elif nxt == 44:  # fragment header
                if pos + 8 > end:
                    self.stats.truncated += 1
                    return None
                offm = unpack_from("!H", data, pos + 2)[0]
                if offm & 0xFFF9:  # offset != 0 or M set: a real fragment
                    self.stats.ipv6_fragments += 1
                    return None
                nxt = data[pos]  # atomic fragment (RFC 6946): the whole datagram is here
                pos += 8
            elif nxt == 51:  # AH
                if pos + 2 > end:
                    self.stats.truncated += 1
                    return None
                nxt, hlen = data[pos], (data[pos + 1] + 2) * 4
                pos += hlen
            else:
                break
        if pos > end:
            self.stats.truncated += 1
            return None
        self.stats.ip_packets += 1
        return self._transport(ts, 6, src, dst, nxt, data, pos, end, depth, vlan, tunnel)

    # -- transport layer and tunnels ----------------------------------------------------------

    def _transport(
        self,
        ts: int,
        version: int,
        src: bytes,
        dst: bytes,
        proto: int,
        data: bytes,
        off: int,
        end: int,
        depth: int,
        vlan: int | None,
        tunnel: str | None,
    ) -> Packet | None:
        if proto == PROTO_TCP:
            if off + 20 > end:
                self.stats.truncated += 1
                return None
            sport, dport, seq = unpack_from("!HHI", data, off)
            doff = (data[off + 12] >> 4) * 4
            if doff < 20 or off + doff > end:
                self.stats.truncated += 1
                return None
            return Packet(
                ts,
                version,
                src,
                dst,
                PROTO_TCP,
                sport,
                dport,
                data[off + 13],
                seq,
                data[off + doff : end],
                vlan,
                tunnel,
            )
        if proto == PROTO_UDP:
            if off + 8 > end:
                self.stats.truncated += 1
                return None
            sport, dport, ulen = unpack_from("!HHH", data, off)
            uend = off + ulen if ulen >= 8 else end
            uend = min(uend, end)
            if depth < _MAX_DEPTH:
                if dport == VXLAN_PORT:
                    return self._vxlan(ts, data, off + 8, uend, depth, vlan)
                if dport == GENEVE_PORT:
                    return self._geneve(ts, data, off + 8, uend, depth, vlan)
            return Packet(
                ts,
                version,
                src,
                dst,
                PROTO_UDP,
                sport,
                dport,
                0,
                0,
                data[off + 8 : uend],
                vlan,
                tunnel,
            )
        if proto == PROTO_GRE and depth < _MAX_DEPTH:
            return self._gre(ts, data, off, end, depth)
        self.stats.other_transport += 1
        return None

    def _count_tunnel(self, name: str) -> None:
        self.stats.tunnels[name] = self.stats.tunnels.get(name, 0) + 1

    def _vxlan(
        self, ts: int, data: bytes, off: int, end: int, depth: int, vlan: int | None
    ) -> Packet | None:
        if off + 8 > end or not data[off] & 0x08:  # I flag: VNI valid
            self.stats.truncated += 1
            return None
        self._count_tunnel("vxlan")
        return self._ethernet(ts, data[off + 8 : end], 0, depth + 1, None, "vxlan")

    def _geneve(
        self, ts: int, data: bytes, off: int, end: int, depth: int, vlan: int | None
    ) -> Packet | None:
        if off + 8 > end:
            self.stats.truncated += 1
            return None
        optlen = (data[off] & 0x3F) * 4
        proto = unpack_from("!H", data, off + 2)[0]
        # Slicing the inner frame checks its length fields against the tunnel payload.
        inner = data[off + 8 + optlen : end]
        self._count_tunnel("geneve")
        if proto == ETH_TEB:
            return self._ethernet(ts, inner, 0, depth + 1, None, "geneve")
        return self._ethertype(ts, inner, 0, proto, depth + 1, None, "geneve")

    def _gre(self, ts: int, data: bytes, off: int, end: int, depth: int) -> Packet | None:
        if off + 4 > end:
            self.stats.truncated += 1
            return None
        flags, proto = unpack_from("!HH", data, off)
        pos = off + 4
        if flags & 0x8000:  # checksum present (+ reserved)
            pos += 4
        if flags & 0x2000:  # key present
            pos += 4
        if flags & 0x1000:  # sequence number present
            pos += 4
        if pos > end:
            self.stats.truncated += 1
            return None
        if proto == GRE_ERSPAN_2:
            if flags & 0x1000:
                pos += 8  # ERSPAN type II header; without a sequence number it is type I (none)
                self._count_tunnel("erspan2")
                name = "erspan2"
            else:
                self._count_tunnel("erspan1")
                name = "erspan1"
            return self._ethernet(ts, data[pos:end], 0, depth + 1, None, name)
        if proto == GRE_ERSPAN_3:
            if pos + 12 > end:
                self.stats.truncated += 1
                return None
            optional = data[pos + 11] & 0x01  # O flag: 8-byte platform-specific subheader
            pos += 12 + (8 if optional else 0)
            self._count_tunnel("erspan3")
            return self._ethernet(ts, data[pos:end], 0, depth + 1, None, "erspan3")
        self._count_tunnel("gre")
        if proto == ETH_TEB:
            return self._ethernet(ts, data[pos:end], 0, depth + 1, None, "gre")
        return self._ethertype(ts, data[pos:end], 0, proto, depth + 1, None, "gre")
