"""DHCPv4 message parser (RFC 2131, options per RFC 2132), sans-IO.

DHCP is the one place where a workstation says, in cleartext and at the moment it happens,
"this MAC, with this host name, now holds this IP address" (ACK), and "it does not any more"
(RELEASE, DECLINE). The attribution feature uses that to tie an address seen in a vendor access
back to a workstation, as of the time of the access, because addresses change hands. So the
parser keeps what identifies the client (chaddr, client identifier, host name, client FQDN,
vendor class, parameter request list) and what dates the binding (message type, addresses,
lease time, server identifier), and nothing else.

Layout (RFC 2131 section 2): a fixed 236-byte BOOTP header, the magic cookie 99.130.83.99,
then options as code/length/value with PAD (0) and END (255) single bytes. Option 52 (overload)
moves further options into the ``file`` and then the ``sname`` header fields, and RFC 3396 says
an option that appears more than once is one option whose values are concatenated in the order
they appear (options field, then ``file``, then ``sname``); both are honoured here, so a client
cannot hide its host name from the sensor by splitting it or moving it.

Every malformed input raises :class:`DhcpParseError` (never ``IndexError``, ``struct.error``,
``UnicodeError`` ...); every loop is bounded by the bytes given. Text the client chose (host
name, vendor class, FQDN labels) is never decoded blindly: bytes outside printable ASCII and
the backslash are written as ``\\xNN``, so a log line built from it cannot be forged with
control characters and two different byte strings never give the same text.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

__all__ = [
    "DHCPACK",
    "DHCPDECLINE",
    "DHCPDISCOVER",
    "DHCPINFORM",
    "DHCPNAK",
    "DHCPOFFER",
    "DHCPRELEASE",
    "DHCPREQUEST",
    "MESSAGE_TYPE_NAMES",
    "DhcpMessage",
    "DhcpParseError",
    "decode_wire_name",
    "parse_dhcp",
    "safe_text",
]

DHCPDISCOVER = 1
DHCPOFFER = 2
DHCPREQUEST = 3
DHCPDECLINE = 4
DHCPACK = 5
DHCPNAK = 6
DHCPRELEASE = 7
DHCPINFORM = 8

MESSAGE_TYPE_NAMES = {
    DHCPDISCOVER: "DISCOVER",
    DHCPOFFER: "OFFER",
    DHCPREQUEST: "REQUEST",
    DHCPDECLINE: "DECLINE",
    DHCPACK: "ACK",
    DHCPNAK: "NAK",
    DHCPRELEASE: "RELEASE",
    DHCPINFORM: "INFORM",
}

BOOTREQUEST = 1
BOOTREPLY = 2

OPT_PAD = 0
OPT_HOSTNAME = 12
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMETER_REQUEST_LIST = 55
OPT_VENDOR_CLASS = 60
OPT_CLIENT_ID = 61
OPT_CLIENT_FQDN = 81
OPT_END = 255

MAGIC_COOKIE = b"\x63\x82\x53\x63"
HEADER_LEN = 236
OPTIONS_OFFSET = HEADER_LEN + 4
_SNAME = slice(44, 108)
_FILE = slice(108, 236)
# A DHCP message travels in one UDP datagram; nothing larger can be real.
MAX_MESSAGE_LEN = 65535
LEASE_INFINITE = 0xFFFFFFFF  # RFC 2131 section 3.3

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s")

# Client FQDN flags (RFC 4702 section 2.1).
FQDN_S = 0x01  # the server should do the A update
FQDN_O = 0x02  # the server overrode the client's S choice
FQDN_E = 0x04  # the name is in DNS wire format (else deprecated ASCII)
FQDN_N = 0x08  # the server should do no DNS update

_PRINTABLE = frozenset(range(0x20, 0x7F)) - {0x5C}
_TEXT_ESCAPES = tuple(chr(b) if b in _PRINTABLE else f"\\x{b:02x}" for b in range(256))
_LABEL_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_LABEL_ESCAPES = tuple(
    chr(b) if b in _LABEL_PLAIN else (f"\\{chr(b)}" if 0x20 < b < 0x7F else f"\\{b:03d}")
    for b in range(256)
)


class DhcpParseError(ValueError):
    """The bytes are not a DHCPv4 message this parser accepts (malformed, truncated or hostile)."""


def safe_text(data: bytes) -> str:
    """Client-chosen bytes as text that cannot carry control characters or pass for other bytes.

    Printable ASCII stays as is; every other byte, and the backslash itself, becomes ``\\xNN``.
    """
    return "".join([_TEXT_ESCAPES[b] for b in data])


def decode_wire_name(data: bytes) -> tuple[str, bool]:
    """A DNS wire-format name without compression (RFC 4702 / RFC 4704) as text.

    Returns ``(text, complete)``: ``complete`` is False for a partial name (one that does not end
    with the root label, meaning "complete it for me"). Labels are joined with dots, no trailing
    dot; label bytes other than letters, digits, ``-`` and ``_`` are written with master-file
    escapes (``\\.`` for a dot inside a label, ``\\DDD`` for non-printable bytes), so a label can
    never pass for two. Case is kept as sent.
    """
    end = len(data)
    if end > 255:
        raise DhcpParseError("wire-format name longer than 255 bytes")
    labels: list[str] = []
    pos = 0
    while pos < end:
        length = data[pos]
        if length == 0:
            if pos + 1 != end:
                raise DhcpParseError("bytes after the root label of a wire-format name")
            return ".".join(labels), True
        if length > 63:
            raise DhcpParseError(f"label length {length} in a wire-format name")
        pos += 1
        if pos + length > end:
            raise DhcpParseError("wire-format name label runs past its option")
        labels.append("".join([_LABEL_ESCAPES[b] for b in data[pos : pos + length]]))
        pos += length
    return ".".join(labels), False


def _mac_text(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def _ipv4(data: bytes, what: str) -> str:
    if len(data) != 4:
        raise DhcpParseError(f"{what}: length {len(data)}, not 4")
    return str(IPv4Address(data))


def _u32(data: bytes, what: str) -> int:
    if len(data) != 4:
        raise DhcpParseError(f"{what}: length {len(data)}, not 4")
    return int.from_bytes(data, "big")


def _walk_options(
    buf: bytes, start: int, end: int, field: str, out: dict[int, bytearray], order: list[int]
) -> None:
    """Collect the options in ``buf[start:end]``, concatenating repeats (RFC 3396).

    A field may run out without END as long as its last option ends exactly at the field's end:
    a few embedded stacks omit END, and the fixed-size ``sname``/``file`` are often just padded
    with zeros (PAD). An option cut by the end of its field is an error.
    """
    pos = start
    while pos < end:
        code = buf[pos]
        if code == OPT_PAD:
            pos += 1
            continue
        if code == OPT_END:
            return
        if pos + 1 >= end:
            raise DhcpParseError(f"option {code} in {field}: no length byte")
        length = buf[pos + 1]
        value_end = pos + 2 + length
        if value_end > end:
            raise DhcpParseError(f"option {code} in {field}: length {length} runs past the field")
        if code in out:
            out[code] += buf[pos + 2 : value_end]
        else:
            out[code] = bytearray(buf[pos + 2 : value_end])
            order.append(code)
        pos = value_end


@dataclass(slots=True, frozen=True)
class DhcpMessage:
    """What the sensor keeps of one DHCPv4 message.

    Addresses are dotted-quad strings (``"0.0.0.0"`` when the header field is empty). ``chaddr``
    is the first ``hlen`` bytes of the client hardware address as lower-case colon hex, which
    for Ethernet (``htype`` 1, ``hlen`` 6) is the MAC; :attr:`mac` is set only in that case.
    ``client_id`` (option 61) is colon hex too, the form dnsmasq and Kea write in their lease
    files. Text options are escaped with :func:`safe_text`. ``lease_time`` is in seconds,
    0xFFFFFFFF meaning infinite. ``options`` holds every option after RFC 3396 concatenation,
    in first-appearance order, as ``(code, value)`` pairs; ``overload`` is option 52's value
    (0 when absent). ``sname`` and ``file`` are the header strings (up to the first NUL,
    escaped), empty when those fields carried options.
    """

    op: int
    htype: int
    hlen: int
    hops: int
    xid: int
    secs: int
    flags: int
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    chaddr: str
    sname: str
    file: str
    message_type: int | None
    requested_ip: str | None
    server_id: str | None
    lease_time: int | None
    hostname: str | None
    client_fqdn: str | None
    client_fqdn_flags: int | None
    client_fqdn_complete: bool | None
    client_id: str | None
    vendor_class: str | None
    parameter_request_list: tuple[int, ...] | None
    overload: int
    options: tuple[tuple[int, bytes], ...]

    @property
    def message_type_name(self) -> str | None:
        if self.message_type is None:
            return "BOOTREPLY" if self.op == BOOTREPLY else "BOOTREQUEST"
        return MESSAGE_TYPE_NAMES.get(self.message_type, f"TYPE{self.message_type}")

    @property
    def mac(self) -> str | None:
        """The client's MAC address, when the hardware address is Ethernet."""
        return self.chaddr if self.htype == 1 and self.hlen == 6 else None

    @property
    def client_id_mac(self) -> str | None:
        """The MAC inside a client identifier of type 1 (Ethernet), as most clients send it."""
        cid = self.client_id
        if cid is not None and len(cid) == 20 and cid.startswith("01:"):
            return cid[3:]
        return None

    @property
    def bound_ip(self) -> str | None:
        """The address this message binds, gives back or refuses, per message type.

        ACK: ``yiaddr`` (or ``ciaddr`` for the ACK to an INFORM, whose ``yiaddr`` is 0);
        REQUEST: option 50 (SELECTING, INIT-REBOOT) or ``ciaddr`` (RENEWING, REBINDING);
        RELEASE, DECLINE: ``ciaddr`` or option 50 (RFC 2131 puts a DECLINE's address in 50);
        INFORM: ``ciaddr`` (the client already has it); a BOOTP reply without DHCP message type:
        ``yiaddr``. None for DISCOVER, OFFER, NAK and whenever the address would be 0.0.0.0.
        A REQUEST is only a claim until the server ACKs it, and RELEASE/DECLINE end a binding:
        callers must look at :attr:`message_type` to know which of the three they hold.
        """
        mtype = self.message_type
        zero = "0.0.0.0"
        candidates: tuple[str | None, ...]
        if mtype == DHCPACK:
            candidates = (self.yiaddr, self.ciaddr)
        elif mtype == DHCPREQUEST:
            candidates = (self.requested_ip, self.ciaddr)
        elif mtype in (DHCPRELEASE, DHCPDECLINE):
            candidates = (self.ciaddr, self.requested_ip)
        elif mtype == DHCPINFORM:
            candidates = (self.ciaddr,)
        elif mtype is None and self.op == BOOTREPLY:
            candidates = (self.yiaddr,)
        else:
            return None
        for addr in candidates:
            if addr is not None and addr != zero:
                return addr
        return None

    def option(self, code: int) -> bytes | None:
        """The (concatenated) value of option ``code``, or None."""
        for c, value in self.options:
            if c == code:
                return value
        return None


def _header_string(field: bytes) -> str:
    return safe_text(field.split(b"\x00", 1)[0])


def parse_dhcp(payload: bytes | bytearray | memoryview) -> DhcpMessage:
    """Parse one DHCPv4 message (the UDP payload of a packet to or from port 67/68).

    Raises :class:`DhcpParseError` for anything that is not a well-formed message: shorter than
    the header and cookie, a wrong magic cookie, an ``op`` other than 1 or 2, ``hlen`` over 16,
    a truncated option, or a known option with a value of the wrong size.
    """
    buf = bytes(payload)
    if len(buf) < OPTIONS_OFFSET:
        raise DhcpParseError(f"{len(buf)} bytes: shorter than the BOOTP header and cookie")
    if len(buf) > MAX_MESSAGE_LEN:
        raise DhcpParseError(f"{len(buf)} bytes: larger than a UDP datagram")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr) = (
        _HEADER.unpack_from(buf, 0)
    )
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpParseError(f"op {op} is neither BOOTREQUEST nor BOOTREPLY")
    if hlen > 16:
        raise DhcpParseError(f"hlen {hlen} is larger than the 16-byte chaddr field")
    if buf[HEADER_LEN:OPTIONS_OFFSET] != MAGIC_COOKIE:
        raise DhcpParseError("no DHCP magic cookie")

    values: dict[int, bytearray] = {}
    order: list[int] = []
    _walk_options(buf, OPTIONS_OFFSET, len(buf), "options", values, order)
    overload = 0
    raw_overload = values.get(OPT_OVERLOAD)
    if raw_overload is not None:
        if len(raw_overload) != 1 or raw_overload[0] not in (1, 2, 3):
            raise DhcpParseError(f"option 52 (overload): bad value {bytes(raw_overload)!r}")
        overload = raw_overload[0]
        # RFC 2131 section 4.1: the options field first, then 'file', then 'sname'.
        if overload & 1:
            _walk_options(buf, _FILE.start, _FILE.stop, "file", values, order)
        if overload & 2:
            _walk_options(buf, _SNAME.start, _SNAME.stop, "sname", values, order)

    def get(code: int) -> bytes | None:
        value = values.get(code)
        return None if value is None else bytes(value)

    message_type: int | None = None
    raw = get(OPT_MESSAGE_TYPE)
    if raw is not None:
        if len(raw) != 1:
            raise DhcpParseError(f"option 53 (message type): length {len(raw)}, not 1")
        message_type = raw[0]

    raw = get(OPT_REQUESTED_IP)
    requested_ip = None if raw is None else _ipv4(raw, "option 50 (requested IP)")
    raw = get(OPT_SERVER_ID)
    server_id = None if raw is None else _ipv4(raw, "option 54 (server identifier)")
    raw = get(OPT_LEASE_TIME)
    lease_time = None if raw is None else _u32(raw, "option 51 (lease time)")

    raw = get(OPT_HOSTNAME)
    # Some clients (older Windows among them) send the name NUL-terminated.
    hostname = None if raw is None else safe_text(raw.rstrip(b"\x00"))
    raw = get(OPT_VENDOR_CLASS)
    vendor_class = None if raw is None else safe_text(raw)
    raw = get(OPT_CLIENT_ID)
    client_id = None if raw is None else _mac_text(raw)
    raw = get(OPT_PARAMETER_REQUEST_LIST)
    prl = None if raw is None else tuple(raw)

    client_fqdn: str | None = None
    fqdn_flags: int | None = None
    fqdn_complete: bool | None = None
    raw = get(OPT_CLIENT_FQDN)
    if raw is not None:
        if len(raw) < 3:
            raise DhcpParseError(f"option 81 (client FQDN): length {len(raw)}, less than 3")
        fqdn_flags = raw[0]
        name = raw[3:]
        if fqdn_flags & FQDN_E:
            client_fqdn, fqdn_complete = decode_wire_name(name)
        else:
            # Deprecated ASCII encoding (RFC 4702 section 2.3.1): a trailing dot marks a
            # fully qualified name; a NUL terminator is tolerated.
            text = name.rstrip(b"\x00")
            fqdn_complete = text.endswith(b".")
            client_fqdn = safe_text(text.rstrip(b"."))

    return DhcpMessage(
        op=op,
        htype=htype,
        hlen=hlen,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=str(IPv4Address(ciaddr)),
        yiaddr=str(IPv4Address(yiaddr)),
        siaddr=str(IPv4Address(siaddr)),
        giaddr=str(IPv4Address(giaddr)),
        chaddr=_mac_text(chaddr[:hlen]),
        sname="" if overload & 2 else _header_string(buf[_SNAME]),
        file="" if overload & 1 else _header_string(buf[_FILE]),
        message_type=message_type,
        requested_ip=requested_ip,
        server_id=server_id,
        lease_time=lease_time,
        hostname=hostname,
        client_fqdn=client_fqdn,
        client_fqdn_flags=fqdn_flags,
        client_fqdn_complete=fqdn_complete,
        client_id=client_id,
        vendor_class=vendor_class,
        parameter_request_list=prl,
        overload=overload,
        options=tuple((code, bytes(values[code])) for code in order),
    )
