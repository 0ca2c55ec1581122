"""DHCPv6 message parser (RFC 8415), sans-IO.

The IPv6 counterpart of :mod:`monitor.protocols.dhcp`: a REPLY carrying an IA_NA address tells
the sensor which client (DUID, and through a DUID-LL/LLT its MAC) holds which IPv6 address from
when and for how long, with the client's FQDN (option 39) when it sends one; a RELEASE or
DECLINE, or a REPLY with a valid lifetime of 0, ends it. That is what the attribution feature
needs to name the workstation behind an IPv6 source address at the time of an access.

Layout: client/server messages are ``msg-type(1) transaction-id(3) options``; relay messages
(RELAY-FORW 12, RELAY-REPL 13) are ``msg-type(1) hop-count(1) link-address(16)
peer-address(16) options``, with the relayed message inside option 9 (RELAY_MSG). Options are
``code(2) length(2) value``, and IA_NA / IA_TA / IAADDR carry options of their own. The parser
unwraps relays (at most :data:`MAX_RELAY_DEPTH` deep; RFC 8415 allows 8 hops, and a message
nested deeper can only be crafted) and returns the innermost message with the relay hops kept.

Every malformed input raises :class:`Dhcpv6ParseError`; every loop is bounded by the bytes
given, and recursion by :data:`MAX_RELAY_DEPTH`. Identifiers (DUIDs) are lower-case colon hex,
the form dnsmasq and Kea use in their lease files, so the two can be compared directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from monitor.protocols.dhcp import DhcpParseError, decode_wire_name

__all__ = [
    "ADVERTISE",
    "CONFIRM",
    "DECLINE",
    "INFORMATION_REQUEST",
    "MAX_RELAY_DEPTH",
    "MESSAGE_TYPE_NAMES",
    "REBIND",
    "RECONFIGURE",
    "RELAY_FORW",
    "RELAY_REPL",
    "RELEASE",
    "RENEW",
    "REPLY",
    "REQUEST",
    "SOLICIT",
    "Dhcpv6Message",
    "Dhcpv6ParseError",
    "IaAddress",
    "IdentityAssociation",
    "RelayHop",
    "duid_mac",
    "parse_dhcpv6",
]

SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
CONFIRM = 4
RENEW = 5
REBIND = 6
REPLY = 7
RELEASE = 8
DECLINE = 9
RECONFIGURE = 10
INFORMATION_REQUEST = 11
RELAY_FORW = 12
RELAY_REPL = 13

MESSAGE_TYPE_NAMES = {
    SOLICIT: "SOLICIT",
    ADVERTISE: "ADVERTISE",
    REQUEST: "REQUEST",
    CONFIRM: "CONFIRM",
    RENEW: "RENEW",
    REBIND: "REBIND",
    REPLY: "REPLY",
    RELEASE: "RELEASE",
    DECLINE: "DECLINE",
    RECONFIGURE: "RECONFIGURE",
    INFORMATION_REQUEST: "INFORMATION-REQUEST",
    RELAY_FORW: "RELAY-FORW",
    RELAY_REPL: "RELAY-REPL",
}

OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IA_TA = 4
OPT_IAADDR = 5
OPT_ORO = 6
OPT_RELAY_MSG = 9
OPT_STATUS_CODE = 13
OPT_VENDOR_CLASS = 16
OPT_INTERFACE_ID = 18
OPT_CLIENT_FQDN = 39
OPT_CLIENT_LINKLAYER_ADDR = 79  # RFC 6939, added by a relay

STATUS_SUCCESS = 0
LIFETIME_INFINITE = 0xFFFFFFFF

# RFC 8415 section 7.6: HOP_COUNT_LIMIT is 8. A little headroom for hop counters that are off,
# still a hard bound on recursion.
MAX_RELAY_DEPTH = 16
MAX_MESSAGE_LEN = 65535

_OPTION = struct.Struct("!HH")
_IA_NA = struct.Struct("!III")
_IAADDR = struct.Struct("!16sII")

DUID_LLT = 1
DUID_EN = 2
DUID_LL = 3
DUID_UUID = 4


class Dhcpv6ParseError(ValueError):
    """The bytes are not a DHCPv6 message this parser accepts (malformed, truncated or hostile)."""


@dataclass(slots=True, frozen=True)
class RelayHop:
    """One relay agent's wrapper around the message; ``link_address`` and ``peer_address`` are
    ``str(IPv6Address)``. ``client_link_layer_address`` is the RFC 6939 option, colon hex (the
    client's MAC for link-layer type 1), when the relay added it."""

    msg_type: int
    hop_count: int
    link_address: str
    peer_address: str
    interface_id: str | None
    client_link_layer_type: int | None
    client_link_layer_address: str | None


@dataclass(slots=True, frozen=True)
class IaAddress:
    """An IAADDR (option 5): lifetimes in seconds, 0xFFFFFFFF meaning infinite.

    ``status_code`` is the IAADDR's own status option, if any (0 = success)."""

    address: str
    preferred_lifetime: int
    valid_lifetime: int
    status_code: int | None


@dataclass(slots=True, frozen=True)
class IdentityAssociation:
    """An IA_NA (option 3) or IA_TA (option 4; ``t1`` and ``t2`` are None for it)."""

    kind: int
    iaid: int
    t1: int | None
    t2: int | None
    addresses: tuple[IaAddress, ...]
    status_code: int | None


@dataclass(slots=True, frozen=True)
class Dhcpv6Message:
    """What the sensor keeps of one DHCPv6 message (the innermost one, when relayed).

    ``relays`` lists the relay wrappers from the outermost (the one the server saw) to the
    innermost (the relay next to the client); empty when the message was not relayed. ``duid``
    is the client DUID (option 1) in colon hex, ``duid_type`` its type, ``mac`` the link-layer
    address of a DUID-LLT/DUID-LL with hardware type 1 (Ethernet). ``client_fqdn`` is option 39's
    name (``client_fqdn_complete`` False for a partial name), escaped like
    :func:`monitor.protocols.dhcp.decode_wire_name` does.
    """

    msg_type: int
    transaction_id: int
    duid: str | None
    duid_type: int | None
    mac: str | None
    server_duid: str | None
    ia_na: tuple[IdentityAssociation, ...]
    ia_ta: tuple[IdentityAssociation, ...]
    client_fqdn: str | None
    client_fqdn_flags: int | None
    client_fqdn_complete: bool | None
    status_code: int | None
    vendor_class_enterprise: int | None
    option_codes: tuple[int, ...]
    relays: tuple[RelayHop, ...]

    @property
    def message_type_name(self) -> str:
        return MESSAGE_TYPE_NAMES.get(self.msg_type, f"TYPE{self.msg_type}")

    @property
    def link_address(self) -> str | None:
        """The link-address of the relay next to the client (identifies the client's link)."""
        return self.relays[-1].link_address if self.relays else None

    @property
    def peer_address(self) -> str | None:
        """The peer-address of the relay next to the client: the client's own source address."""
        return self.relays[-1].peer_address if self.relays else None

    @property
    def addresses(self) -> tuple[IaAddress, ...]:
        """Every address of every IA_NA and IA_TA, in message order."""
        return tuple(a for ia in (*self.ia_na, *self.ia_ta) for a in ia.addresses)

    @property
    def bound_addresses(self) -> tuple[IaAddress, ...]:
        """For a REPLY: the addresses it gives the client (valid lifetime above 0, no error
        status on the message, the IA or the address). Empty for every other message type."""
        if self.msg_type != REPLY or self.status_code not in (None, STATUS_SUCCESS):
            return ()
        return tuple(
            a
            for ia in (*self.ia_na, *self.ia_ta)
            if ia.status_code in (None, STATUS_SUCCESS)
            for a in ia.addresses
            if a.valid_lifetime > 0 and a.status_code in (None, STATUS_SUCCESS)
        )

    @property
    def ended_addresses(self) -> tuple[IaAddress, ...]:
        """Addresses this message takes away from the client: all of a RELEASE's or DECLINE's,
        and a REPLY's whose valid lifetime is 0 (RFC 8415 section 18.2.10.1)."""
        if self.msg_type in (RELEASE, DECLINE):
            return self.addresses
        if self.msg_type == REPLY:
            return tuple(a for a in self.addresses if a.valid_lifetime == 0)
        return ()


def _hex(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def duid_mac(duid: bytes) -> str | None:
    """The MAC inside a DUID-LLT or DUID-LL of hardware type 1 (Ethernet), else None.

    DUID-LLT: type 1, hardware type (2), time (4), link-layer address; DUID-LL: type 3, hardware
    type (2), link-layer address (RFC 8415 section 11).
    """
    if len(duid) == 14 and duid[:4] == b"\x00\x01\x00\x01":
        return _hex(duid[8:])
    if len(duid) == 10 and duid[:4] == b"\x00\x03\x00\x01":
        return _hex(duid[4:])
    return None


def _options(buf: bytes, start: int, end: int, where: str) -> list[tuple[int, int, int]]:
    """``(code, value_start, value_end)`` for each option in ``buf[start:end]``."""
    out: list[tuple[int, int, int]] = []
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise Dhcpv6ParseError(f"{where}: option header cut after {end - pos} bytes")
        code, length = _OPTION.unpack_from(buf, pos)
        value_end = pos + 4 + length
        if value_end > end:
            raise Dhcpv6ParseError(f"{where}: option {code} length {length} runs past its end")
        out.append((code, pos + 4, value_end))
        pos = value_end
    return out


def _status(buf: bytes, start: int, end: int) -> int:
    if end - start < 2:
        raise Dhcpv6ParseError("status code option shorter than 2 bytes")
    return int.from_bytes(buf[start : start + 2], "big")


def _ia(buf: bytes, kind: int, start: int, end: int) -> IdentityAssociation:
    fixed = 12 if kind == OPT_IA_NA else 4
    if end - start < fixed:
        raise Dhcpv6ParseError(f"option {kind} (IA) shorter than {fixed} bytes")
    t1 = t2 = None
    if kind == OPT_IA_NA:
        iaid, t1, t2 = _IA_NA.unpack_from(buf, start)
    else:
        iaid = int.from_bytes(buf[start : start + 4], "big")
    addresses: list[IaAddress] = []
    status: int | None = None
    for code, vstart, vend in _options(buf, start + fixed, end, f"option {kind} (IA)"):
        if code == OPT_IAADDR:
            if vend - vstart < 24:
                raise Dhcpv6ParseError("option 5 (IAADDR) shorter than 24 bytes")
            raw, preferred, valid = _IAADDR.unpack_from(buf, vstart)
            addr_status: int | None = None
            for scode, sstart, send in _options(buf, vstart + 24, vend, "option 5 (IAADDR)"):
                if scode == OPT_STATUS_CODE and addr_status is None:
                    addr_status = _status(buf, sstart, send)
            addresses.append(IaAddress(str(IPv6Address(raw)), preferred, valid, addr_status))
        elif code == OPT_STATUS_CODE and status is None:
            status = _status(buf, vstart, vend)
    return IdentityAssociation(kind, iaid, t1, t2, tuple(addresses), status)


def _parse(buf: bytes, start: int, end: int, relays: list[RelayHop]) -> Dhcpv6Message:
    if end - start < 4:
        raise Dhcpv6ParseError(f"{end - start} bytes: shorter than a DHCPv6 header")
    msg_type = buf[start]
    if msg_type == 0:
        raise Dhcpv6ParseError("message type 0 is reserved")
    if msg_type in (RELAY_FORW, RELAY_REPL):
        if len(relays) >= MAX_RELAY_DEPTH:
            raise Dhcpv6ParseError(f"relay messages nested deeper than {MAX_RELAY_DEPTH}")
        if end - start < 34:
            raise Dhcpv6ParseError(f"{end - start} bytes: shorter than a relay header")
        inner: tuple[int, int] | None = None
        interface_id: str | None = None
        ll_type: int | None = None
        ll_addr: str | None = None
        for code, vstart, vend in _options(buf, start + 34, end, "relay message"):
            if code == OPT_RELAY_MSG and inner is None:
                inner = (vstart, vend)
            elif code == OPT_INTERFACE_ID and interface_id is None:
                interface_id = _hex(buf[vstart:vend])
            elif code == OPT_CLIENT_LINKLAYER_ADDR and ll_type is None:
                if vend - vstart < 2:
                    raise Dhcpv6ParseError("option 79 (client link-layer address) too short")
                ll_type = int.from_bytes(buf[vstart : vstart + 2], "big")
                ll_addr = _hex(buf[vstart + 2 : vend])
        if inner is None:
            raise Dhcpv6ParseError("relay message without a relay-message option (9)")
        relays.append(
            RelayHop(
                msg_type=msg_type,
                hop_count=buf[start + 1],
                link_address=str(IPv6Address(buf[start + 2 : start + 18])),
                peer_address=str(IPv6Address(buf[start + 18 : start + 34])),
                interface_id=interface_id,
                client_link_layer_type=ll_type,
                client_link_layer_address=ll_addr,
            )
        )
        return _parse(buf, inner[0], inner[1], relays)

    transaction_id = int.from_bytes(buf[start + 1 : start + 4], "big")
    duid_raw: bytes | None = None
    server_duid: str | None = None
    ia_na: list[IdentityAssociation] = []
    ia_ta: list[IdentityAssociation] = []
    fqdn: str | None = None
    fqdn_flags: int | None = None
    fqdn_complete: bool | None = None
    status: int | None = None
    enterprise: int | None = None
    codes: list[int] = []
    for code, vstart, vend in _options(buf, start + 4, end, "message"):
        codes.append(code)
        if code == OPT_CLIENTID and duid_raw is None:
            if vend == vstart:
                raise Dhcpv6ParseError("option 1 (client identifier) is empty")
            duid_raw = buf[vstart:vend]
        elif code == OPT_SERVERID and server_duid is None:
            server_duid = _hex(buf[vstart:vend])
        elif code == OPT_IA_NA:
            ia_na.append(_ia(buf, code, vstart, vend))
        elif code == OPT_IA_TA:
            ia_ta.append(_ia(buf, code, vstart, vend))
        elif code == OPT_CLIENT_FQDN and fqdn_flags is None:
            if vend == vstart:
                raise Dhcpv6ParseError("option 39 (client FQDN) is empty")
            fqdn_flags = buf[vstart]
            try:
                fqdn, fqdn_complete = decode_wire_name(buf[vstart + 1 : vend])
            except DhcpParseError as exc:
                raise Dhcpv6ParseError(f"option 39 (client FQDN): {exc}") from None
        elif code == OPT_STATUS_CODE and status is None:
            status = _status(buf, vstart, vend)
        elif code == OPT_VENDOR_CLASS and enterprise is None:
            if vend - vstart < 4:
                raise Dhcpv6ParseError("option 16 (vendor class) shorter than 4 bytes")
            enterprise = int.from_bytes(buf[vstart : vstart + 4], "big")

    duid_type = None
    mac = None
    if duid_raw is not None:
        duid_type = int.from_bytes(duid_raw[:2], "big") if len(duid_raw) >= 2 else None
        mac = duid_mac(duid_raw)
    return Dhcpv6Message(
        msg_type=msg_type,
        transaction_id=transaction_id,
        duid=None if duid_raw is None else _hex(duid_raw),
        duid_type=duid_type,
        mac=mac,
        server_duid=server_duid,
        ia_na=tuple(ia_na),
        ia_ta=tuple(ia_ta),
        client_fqdn=fqdn,
        client_fqdn_flags=fqdn_flags,
        client_fqdn_complete=fqdn_complete,
        status_code=status,
        vendor_class_enterprise=enterprise,
        option_codes=tuple(codes),
        relays=tuple(relays),
    )


def parse_dhcpv6(payload: bytes | bytearray | memoryview) -> Dhcpv6Message:
    """Parse one DHCPv6 message (the UDP payload of a packet to or from port 546/547).

    Relay messages are unwrapped to the message they carry (see :attr:`Dhcpv6Message.relays`).
    Raises :class:`Dhcpv6ParseError` for a truncated header or option, a reserved message type,
    a relay without option 9 or nested too deep, and malformed IA, IAADDR, FQDN or status
    options.
    """
    buf = bytes(payload)
    if len(buf) > MAX_MESSAGE_LEN:
        raise Dhcpv6ParseError(f"{len(buf)} bytes: larger than a UDP datagram")
    return _parse(buf, 0, len(buf), [])
