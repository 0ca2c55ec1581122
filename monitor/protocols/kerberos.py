"""Kerberos V5 KDC messages (RFC 4120), reduced to who asked whom for what, and a TCP framer.

Attribution needs the identities that travel in clear on port 88: the client principal and its
realm, the service asked for, the KDC's error code (a wrong password and an unknown user look
very different), whether the request carried pre-authentication (only then is it a real logon
attempt rather than a probe), and the HostAddresses that Windows fills with the workstation's
NetBIOS name. Everything else (tickets, encrypted parts, timestamps, nonces) is skipped over
without being decoded.

The DER reading is done by hand rather than with pyasn1: only five message shapes matter, they
are walked by explicit tag, and a hand-written walker can promise what the sensor needs: every
length is checked against the bytes that hold it, nothing recurses on input-controlled depth,
lists are capped, and any malformed input raises :class:`KerberosParseError` (never
``IndexError``, ``UnicodeError`` ...). Unknown context tags inside a SEQUENCE are skipped, as
the extension markers of the RFC 4120 module allow; BER-only forms that DER forbids and no
Kerberos implementation sends (indefinite lengths, high tag numbers) are rejected.

Messages other than the five KDC messages (AP-REQ, AP-REP, KRB-SAFE, KRB-PRIV, KRB-CRED) are
returned as a record with only ``msg_type`` set, after checking their pvno and msg-type: they
never carry a client name in clear. Any other APPLICATION tag raises.

Text is decoded as UTF-8 (what Windows and MIT put in KerberosString despite the IA5 rule).
A string that is not valid, printable UTF-8, or contains a backslash, is written with ``\\xNN``
escapes for its non-ASCII-printable bytes and backslashes, so two different wire names never
give the same text and the result is always safe to log.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from monitor.flows.framing import LengthPrefixedFramer

__all__ = [
    "ADDRTYPE_INET",
    "ADDRTYPE_INET6",
    "ADDRTYPE_NETBIOS",
    "KDC_ERR_CLIENT_REVOKED",
    "KDC_ERR_C_PRINCIPAL_UNKNOWN",
    "KDC_ERR_KEY_EXPIRED",
    "KDC_ERR_PREAUTH_FAILED",
    "KDC_ERR_PREAUTH_REQUIRED",
    "KDC_ERR_S_PRINCIPAL_UNKNOWN",
    "MSG_AP_REP",
    "MSG_AP_REQ",
    "MSG_AS_REP",
    "MSG_AS_REQ",
    "MSG_KRB_CRED",
    "MSG_KRB_ERROR",
    "MSG_KRB_PRIV",
    "MSG_KRB_SAFE",
    "MSG_TGS_REP",
    "MSG_TGS_REQ",
    "PA_ENCRYPTED_CHALLENGE",
    "PA_ENC_TIMESTAMP",
    "PA_PK_AS_REQ",
    "PA_PK_AS_REQ_OLD",
    "PA_TGS_REQ",
    "KerberosAddress",
    "KerberosFramingError",
    "KerberosMessage",
    "KerberosParseError",
    "KerberosPrincipal",
    "KerberosTcpFramer",
    "parse_kerberos",
]

MSG_AS_REQ = 10
MSG_AS_REP = 11
MSG_TGS_REQ = 12
MSG_TGS_REP = 13
MSG_AP_REQ = 14
MSG_AP_REP = 15
MSG_KRB_SAFE = 20
MSG_KRB_PRIV = 21
MSG_KRB_CRED = 22
MSG_KRB_ERROR = 30

# Error codes (RFC 4120 7.5.9) that tell attribution what happened to a logon.
KDC_ERR_C_PRINCIPAL_UNKNOWN = 6  # no such user
KDC_ERR_S_PRINCIPAL_UNKNOWN = 7  # no such service
KDC_ERR_CLIENT_REVOKED = 18  # account disabled, locked out or expired
KDC_ERR_KEY_EXPIRED = 23  # password expired
KDC_ERR_PREAUTH_FAILED = 24  # wrong password
KDC_ERR_PREAUTH_REQUIRED = 25  # first round of every normal logon

# PA-DATA types (IANA "Kerberos Pre-authentication and Typed Data").
PA_TGS_REQ = 1
PA_ENC_TIMESTAMP = 2
PA_PK_AS_REQ_OLD = 14
PA_PK_AS_REQ = 16
PA_ENCRYPTED_CHALLENGE = 138
# Pre-authentication that proves knowledge of the key or a certificate: an AS-REQ carrying one
# of these is a real logon attempt, not a probe for the realm's pre-auth methods. (With FAST,
# RFC 6113, the proof travels inside the encrypted armor and only PA-FX-FAST is visible.)
_AUTHENTICATING_PADATA = frozenset(
    (PA_ENC_TIMESTAMP, PA_PK_AS_REQ_OLD, PA_PK_AS_REQ, PA_ENCRYPTED_CHALLENGE)
)

ADDRTYPE_INET = 2
ADDRTYPE_NETBIOS = 20
ADDRTYPE_INET6 = 24

# Honest principals have one to three components and requests a handful of PA-DATA and
# addresses; the caps only bound the work a crafted message can ask for.
MAX_NAME_COMPONENTS = 16
MAX_LIST_ITEMS = 64

_KDC_REQ = frozenset((MSG_AS_REQ, MSG_TGS_REQ))
_KDC_REP = frozenset((MSG_AS_REP, MSG_TGS_REP))
_OTHER = frozenset((MSG_AP_REQ, MSG_AP_REP, MSG_KRB_SAFE, MSG_KRB_PRIV, MSG_KRB_CRED))
_KNOWN = _KDC_REQ | _KDC_REP | _OTHER | {MSG_KRB_ERROR}

_SEQUENCE = 0x30
_INTEGER = 0x02
_OCTET_STRING = 0x04
_APPLICATION_1 = 0x61  # Ticket
# KerberosString is GeneralString; UTF8String and IA5String are accepted because some
# implementations have sent them and nothing is gained by losing the name.
_STRING_TAGS = frozenset((0x1B, 0x0C, 0x16))

_Span = tuple[int, int]


class KerberosParseError(ValueError):
    """The bytes are not a Kerberos message this parser accepts (malformed, truncated, other)."""


class KerberosFramingError(KerberosParseError):
    """The TCP byte stream has no valid Kerberos record marker.

    ``messages`` holds the complete records that preceded the bad marker in the same ``feed``
    call, so they are not lost with the stream.
    """

    def __init__(self, reason: str, messages: list[bytes]) -> None:
        super().__init__(reason)
        self.messages = messages


def _text(raw: bytes) -> str:
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if s.isprintable() and "\\" not in s:
            return s
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw)


@dataclass(slots=True, frozen=True)
class KerberosPrincipal:
    """A PrincipalName: its name-type and its name-string components as text."""

    name_type: int
    components: tuple[str, ...]

    @property
    def text(self) -> str:
        """Components joined with ``/``, a ``/`` or ``@`` inside a component escaped with ``\\``.

        That is MIT's ``krb5_unparse_name`` form, so ``user@REALM`` built from it can only be
        split one way.
        """
        return "/".join(c.replace("/", "\\/").replace("@", "\\@") for c in self.components)

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True, frozen=True)
class KerberosAddress:
    """One HostAddress: ``addr_type`` (2 IPv4, 20 NetBIOS, 24 IPv6, ...) and its raw bytes."""

    addr_type: int
    address: bytes

    @property
    def text(self) -> str:
        """The address as people write it; the raw bytes in hex for types without a text form.

        NetBIOS names are 16 bytes padded with spaces (RFC 4120 7.5.3); the padding is dropped.
        """
        if self.addr_type == ADDRTYPE_INET and len(self.address) == 4:
            return str(ipaddress.IPv4Address(self.address))
        if self.addr_type == ADDRTYPE_INET6 and len(self.address) == 16:
            return str(ipaddress.IPv6Address(self.address))
        if self.addr_type == ADDRTYPE_NETBIOS:
            return _text(self.address.rstrip(b" "))
        return self.address.hex()


@dataclass(slots=True, frozen=True)
class KerberosMessage:
    """The clear-text identities of one Kerberos message.

    ``realm`` is the client's realm where the message states it: the req-body realm of an
    AS-REQ (RFC 4120 5.4.1: it is the client's realm too), the crealm of a reply or KRB-ERROR.
    For a TGS-REQ it is the realm the request is addressed to, because the client's name and
    realm travel only inside the encrypted authenticator there (``cname`` is None).

    ``sname`` / ``service_realm`` are the service asked for: the req-body sname and realm of a
    request, the sname and realm of the ticket in a reply, the sname and realm of a KRB-ERROR.
    ``padata_types`` are the top-level PA-DATA types in wire order (KRB-ERROR has none; its
    e-data is not decoded), ``addresses`` the req-body HostAddresses of a request.
    """

    msg_type: int
    realm: str | None = None
    cname: KerberosPrincipal | None = None
    sname: KerberosPrincipal | None = None
    service_realm: str | None = None
    error_code: int | None = None
    error_text: str | None = None
    padata_types: tuple[int, ...] = ()
    addresses: tuple[KerberosAddress, ...] = ()

    @property
    def principal(self) -> str | None:
        """``user@REALM`` as Kerberos writes it (the realm keeps its case), None without cname."""
        if self.cname is None:
            return None
        if self.realm is None:
            return self.cname.text
        return f"{self.cname.text}@{self.realm}"

    @property
    def is_machine_account(self) -> bool:
        """Windows computer accounts are named ``NAME$``: their logons are not a person's."""
        return self.cname is not None and self.cname.text.endswith("$")

    @property
    def is_success_reply(self) -> bool:
        return self.msg_type in _KDC_REP

    @property
    def is_request(self) -> bool:
        return self.msg_type in _KDC_REQ

    @property
    def has_preauth(self) -> bool:
        """The request proves the client's key or certificate, so it is a real logon attempt."""
        return not _AUTHENTICATING_PADATA.isdisjoint(self.padata_types)

    @property
    def netbios_name(self) -> str | None:
        """The first NetBIOS HostAddress: the workstation name Windows clients put there."""
        for address in self.addresses:
            if address.addr_type == ADDRTYPE_NETBIOS:
                return address.text
        return None


# --- DER walking ------------------------------------------------------------------------------


def _tlv(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int, int]:
    """Read the TLV at ``pos``; return its tag and the span of its contents, within ``end``."""
    if end - pos < 2:
        raise KerberosParseError(f"{what}: truncated tag/length")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise KerberosParseError(f"{what}: high tag number form")
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0:
            raise KerberosParseError(f"{what}: indefinite length")
        if count > 4 or end - pos < count:
            raise KerberosParseError(f"{what}: bad long-form length")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    if length > end - pos:
        raise KerberosParseError(f"{what}: length {length} runs past its container")
    return tag, pos, pos + length


def _only(buf: bytes, span: _Span, tag: int, what: str) -> _Span:
    """The contents of the single TLV filling ``span``, which must have tag ``tag``."""
    got, start, stop = _tlv(buf, span[0], span[1], what)
    if got != tag:
        raise KerberosParseError(f"{what}: tag 0x{got:02x}, expected 0x{tag:02x}")
    if stop != span[1]:
        raise KerberosParseError(f"{what}: trailing bytes")
    return start, stop


def _fields(buf: bytes, span: _Span, what: str) -> dict[int, _Span]:
    """The explicitly tagged members of a SEQUENCE's contents, by context tag number."""
    fields: dict[int, _Span] = {}
    pos, end = span
    while pos < end:
        tag, start, stop = _tlv(buf, pos, end, what)
        if tag & 0xE0 != 0xA0:
            raise KerberosParseError(f"{what}: member tag 0x{tag:02x} is not [n] constructed")
        number = tag & 0x1F
        if number in fields:
            raise KerberosParseError(f"{what}: duplicate member [{number}]")
        fields[number] = (start, stop)
        pos = stop
    return fields


def _sequence(buf: bytes, span: _Span, what: str) -> dict[int, _Span]:
    return _fields(buf, _only(buf, span, _SEQUENCE, what), what)


def _items(buf: bytes, span: _Span, what: str) -> list[_Span]:
    """The element TLV spans (whole TLVs) of a SEQUENCE OF filling ``span``."""
    pos, end = _only(buf, span, _SEQUENCE, what)
    items: list[_Span] = []
    while pos < end:
        if len(items) == MAX_LIST_ITEMS:
            raise KerberosParseError(f"{what}: more than {MAX_LIST_ITEMS} items")
        _, _, stop = _tlv(buf, pos, end, what)
        items.append((pos, stop))
        pos = stop
    return items


def _required(fields: dict[int, _Span], number: int, what: str) -> _Span:
    try:
        return fields[number]
    except KeyError:
        raise KerberosParseError(f"{what}: missing [{number}]") from None


def _integer(buf: bytes, span: _Span, what: str) -> int:
    start, stop = _only(buf, span, _INTEGER, what)
    if not 0 < stop - start <= 8:
        raise KerberosParseError(f"{what}: INTEGER of {stop - start} bytes")
    return int.from_bytes(buf[start:stop], "big", signed=True)


def _string(buf: bytes, span: _Span, what: str) -> str:
    tag, start, stop = _tlv(buf, span[0], span[1], what)
    if tag not in _STRING_TAGS:
        raise KerberosParseError(f"{what}: tag 0x{tag:02x} is not a KerberosString")
    if stop != span[1]:
        raise KerberosParseError(f"{what}: trailing bytes")
    return _text(buf[start:stop])


def _principal(buf: bytes, span: _Span, what: str) -> KerberosPrincipal:
    fields = _sequence(buf, span, what)
    name_type = _integer(buf, _required(fields, 0, what), what + " name-type")
    components = []
    for item in _items(buf, _required(fields, 1, what), what + " name-string"):
        if len(components) == MAX_NAME_COMPONENTS:
            raise KerberosParseError(f"{what}: more than {MAX_NAME_COMPONENTS} components")
        components.append(_string(buf, item, what + " name-string"))
    return KerberosPrincipal(name_type, tuple(components))


def _padata_types(buf: bytes, span: _Span) -> tuple[int, ...]:
    types = []
    for item in _items(buf, span, "padata"):
        fields = _sequence(buf, item, "PA-DATA")
        types.append(_integer(buf, _required(fields, 1, "PA-DATA"), "padata-type"))
        _only(buf, _required(fields, 2, "PA-DATA"), _OCTET_STRING, "padata-value")
    return tuple(types)


def _addresses(buf: bytes, span: _Span) -> tuple[KerberosAddress, ...]:
    addresses = []
    for item in _items(buf, span, "addresses"):
        fields = _sequence(buf, item, "HostAddress")
        addr_type = _integer(buf, _required(fields, 0, "HostAddress"), "addr-type")
        start, stop = _only(buf, _required(fields, 1, "HostAddress"), _OCTET_STRING, "address")
        addresses.append(KerberosAddress(addr_type, buf[start:stop]))
    return tuple(addresses)


def _check_header(
    buf: bytes, fields: dict[int, _Span], pvno_tag: int, msg_type: int, what: str
) -> None:
    if _integer(buf, _required(fields, pvno_tag, what), what + " pvno") != 5:
        raise KerberosParseError(f"{what}: pvno is not 5")
    declared = _integer(buf, _required(fields, pvno_tag + 1, what), what + " msg-type")
    if declared != msg_type:
        raise KerberosParseError(f"{what}: msg-type {declared} under APPLICATION {msg_type}")


def _kdc_req(buf: bytes, fields: dict[int, _Span], msg_type: int) -> KerberosMessage:
    _check_header(buf, fields, 1, msg_type, "KDC-REQ")
    padata = _padata_types(buf, fields[3]) if 3 in fields else ()
    body = _sequence(buf, _required(fields, 4, "KDC-REQ"), "req-body")
    realm = _string(buf, _required(body, 2, "req-body"), "req-body realm")
    return KerberosMessage(
        msg_type=msg_type,
        realm=realm,
        cname=_principal(buf, body[1], "req-body cname") if 1 in body else None,
        sname=_principal(buf, body[3], "req-body sname") if 3 in body else None,
        service_realm=realm,
        padata_types=padata,
        addresses=_addresses(buf, body[9]) if 9 in body else (),
    )


def _kdc_rep(buf: bytes, fields: dict[int, _Span], msg_type: int) -> KerberosMessage:
    _check_header(buf, fields, 0, msg_type, "KDC-REP")
    padata = _padata_types(buf, fields[2]) if 2 in fields else ()
    crealm = _string(buf, _required(fields, 3, "KDC-REP"), "crealm")
    cname = _principal(buf, _required(fields, 4, "KDC-REP"), "cname")
    ticket = _sequence(
        buf, _only(buf, _required(fields, 5, "KDC-REP"), _APPLICATION_1, "ticket"), "Ticket"
    )
    return KerberosMessage(
        msg_type=msg_type,
        realm=crealm,
        cname=cname,
        sname=_principal(buf, _required(ticket, 2, "Ticket"), "ticket sname"),
        service_realm=_string(buf, _required(ticket, 1, "Ticket"), "ticket realm"),
        padata_types=padata,
    )


def _krb_error(buf: bytes, fields: dict[int, _Span]) -> KerberosMessage:
    _check_header(buf, fields, 0, MSG_KRB_ERROR, "KRB-ERROR")
    return KerberosMessage(
        msg_type=MSG_KRB_ERROR,
        realm=_string(buf, fields[7], "crealm") if 7 in fields else None,
        cname=_principal(buf, fields[8], "cname") if 8 in fields else None,
        sname=_principal(buf, fields[10], "sname") if 10 in fields else None,
        service_realm=_string(buf, fields[9], "realm") if 9 in fields else None,
        error_code=_integer(buf, _required(fields, 6, "KRB-ERROR"), "error-code"),
        error_text=_string(buf, fields[11], "e-text") if 11 in fields else None,
    )


def parse_kerberos(message: bytes | bytearray | memoryview) -> KerberosMessage:
    """Parse one whole Kerberos message: a UDP payload, or a TCP record without its marker.

    The message must be exactly one DER value: trailing bytes are an error, since a KDC never
    sends them and accepting them would let any port-88 junk that starts well pass as Kerberos.
    """
    buf = bytes(message)
    tag, start, stop = _tlv(buf, 0, len(buf), "message")
    if stop != len(buf):
        raise KerberosParseError("message: trailing bytes after the outer value")
    if tag & 0xE0 != 0x60:
        raise KerberosParseError(f"message: tag 0x{tag:02x} is not APPLICATION constructed")
    msg_type = tag & 0x1F
    if msg_type not in _KNOWN:
        raise KerberosParseError(f"message: APPLICATION {msg_type} is not a Kerberos message")
    fields = _sequence(buf, (start, stop), "message")
    if msg_type in _KDC_REQ:
        return _kdc_req(buf, fields, msg_type)
    if msg_type in _KDC_REP:
        return _kdc_rep(buf, fields, msg_type)
    if msg_type == MSG_KRB_ERROR:
        return _krb_error(buf, fields)
    _check_header(buf, fields, 0, msg_type, "message")
    return KerberosMessage(msg_type=msg_type)


class KerberosTcpFramer(LengthPrefixedFramer):
    """Splits a Kerberos-over-TCP byte stream (RFC 4120 7.2.2) into records.

    Every record is preceded by a 4-byte big-endian length whose high bit is reserved (RFC 5021
    extension negotiation, which a KDC answers by closing the connection). A set high bit, a
    zero length or a length above ``max_record`` means the stream is not (or no longer) framed
    Kerberos the sensor can follow: ``feed`` raises :class:`KerberosFramingError` carrying the
    records completed before the bad marker, and every later ``feed`` raises too, because there
    is no way to find the next boundary.

    At most one partial record (``max_record`` + 4 bytes) is kept between calls. The default
    fits any message over UDP and the tickets with large PACs Windows realms issue.
    """

    __slots__ = ("_max_record",)

    def __init__(self, max_record: int = 65536) -> None:
        if max_record < 1:
            raise ValueError("max_record must be positive")
        self._max_record = max_record
        super().__init__(
            4,
            self._length_problem,
            KerberosFramingError,
            "framer already failed on a bad record marker",
        )

    def _length_problem(self, length: int) -> str | None:
        if length & 0x80000000:
            return "record marker has the reserved high bit set"
        if length == 0:
            return "empty record"
        if length > self._max_record:
            return f"record of {length} bytes exceeds max_record {self._max_record}"
        return None
