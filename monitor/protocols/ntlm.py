"""NTLMSSP messages (MS-NLMP) reduced to the identities they carry, and where to find them.

An NTLM AUTHENTICATE message names, in clear, the user, the user's domain and the client
workstation: exactly what attribution needs to tie a vendor access to a person and a machine
when the network authenticates with NTLM (an authenticating web proxy, SMB, intranet HTTP).
The NEGOTIATE message may name the workstation too, and the CHALLENGE message the server's
target name. Responses, keys and MICs are only measured, never kept.

NTLMSSP travels inside other protocols; the two places the sensor can see it are covered here:
HTTP ``Authorization`` / ``Proxy-Authorization`` (and the server's ``WWW-Authenticate`` /
``Proxy-Authenticate``) headers with the ``NTLM`` or ``Negotiate`` scheme, and SMB2
SESSION_SETUP on TCP 445. ``Negotiate`` and SMB2 wrap NTLMSSP in SPNEGO; rather than decoding
that DER, the wrapped token is found by its 8-byte signature, which is what Wireshark does too:
the NTLMSSP offsets are relative to the signature, so bytes after the message (a SPNEGO
mechListMIC, say) do no harm.

All functions are sans-IO and total. :func:`parse_ntlmssp` raises only :class:`NtlmParseError`;
the ``find_*`` helpers never raise and return None for anything they do not recognise. Every
security buffer (length, maximum length, offset) is checked against the message before it is
read, and text is decoded without ever raising: UTF-16LE when the message negotiates Unicode,
otherwise OEM bytes, whose code page the sensor cannot know, so non-ASCII bytes are escaped.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

__all__ = [
    "NEGOTIATE_ANONYMOUS",
    "NEGOTIATE_OEM",
    "NEGOTIATE_OEM_DOMAIN_SUPPLIED",
    "NEGOTIATE_OEM_WORKSTATION_SUPPLIED",
    "NEGOTIATE_UNICODE",
    "NEGOTIATE_VERSION",
    "NTLMSSP_AUTHENTICATE",
    "NTLMSSP_CHALLENGE",
    "NTLMSSP_NEGOTIATE",
    "NTLMSSP_SIGNATURE",
    "NtlmMessage",
    "NtlmParseError",
    "find_ntlmssp_in_http",
    "find_ntlmssp_in_smb2",
    "parse_ntlmssp",
]

NTLMSSP_SIGNATURE = b"NTLMSSP\x00"
NTLMSSP_NEGOTIATE = 1
NTLMSSP_CHALLENGE = 2
NTLMSSP_AUTHENTICATE = 3

# NegotiateFlags (MS-NLMP 2.2.2.5) that change how the message is read.
NEGOTIATE_UNICODE = 0x00000001
NEGOTIATE_OEM = 0x00000002
NEGOTIATE_ANONYMOUS = 0x00000800
NEGOTIATE_OEM_DOMAIN_SUPPLIED = 0x00001000
NEGOTIATE_OEM_WORKSTATION_SUPPLIED = 0x00002000
NEGOTIATE_VERSION = 0x02000000

# Fixed part of each message up to (not including) the optional Version field; a security
# buffer may not point into it. AUTHENTICATE messages shorter than 64 bytes (Windows 9x era,
# no NegotiateFlags) are not accepted: without flags their text encoding is a guess.
_NEGOTIATE_FIXED = 32
_NEGOTIATE_MIN = 16
_CHALLENGE_FIXED = 48
_CHALLENGE_MIN = 32
_AUTHENTICATE_FIXED = 64
_VERSION_LEN = 8

# Base64 tokens above this are not NTLM (an AUTHENTICATE is well under 4 KiB even with a long
# NTLMv2 target info); skipping them bounds the work on a crafted header.
MAX_HTTP_TOKEN = 65536

_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_SECBUF = struct.Struct("<HHI").unpack_from
_VERSION = struct.Struct("<BBH").unpack_from

_HTTP_AUTH_HEADERS = frozenset(
    (b"authorization", b"proxy-authorization", b"www-authenticate", b"proxy-authenticate")
)
_HTTP_SCHEMES = frozenset((b"ntlm", b"negotiate"))

_NBSS_SESSION_MESSAGE = 0x00
_SMB2_MAGIC = b"\xfeSMB"
_SMB2_HEADER_LEN = 64
_SMB2_SESSION_SETUP = 0x0001
_SMB2_FLAGS_SERVER_TO_REDIR = 0x00000001


class NtlmParseError(ValueError):
    """The bytes are not an NTLMSSP message this parser accepts (malformed or truncated)."""


@dataclass(slots=True, frozen=True)
class NtlmMessage:
    """The identities of one NTLMSSP message.

    AUTHENTICATE (type 3) sets ``user_name``, ``domain_name`` and ``workstation`` (empty
    strings when the client sent none) and the response lengths. NEGOTIATE (type 1) sets
    ``domain_name`` / ``workstation`` only when its flags say they were supplied. CHALLENGE
    (type 2) sets ``target_name``. ``os_version`` is the (major, minor, build) of the Version
    field, present when NEGOTIATE_VERSION is set and the field does not overlap the payload:
    for a client message it is the workstation's Windows version.
    """

    message_type: int
    flags: int
    user_name: str | None = None
    domain_name: str | None = None
    workstation: str | None = None
    target_name: str | None = None
    os_version: tuple[int, int, int] | None = None
    lm_response_length: int | None = None
    nt_response_length: int | None = None

    @property
    def is_unicode(self) -> bool:
        return bool(self.flags & NEGOTIATE_UNICODE)

    @property
    def is_anonymous(self) -> bool:
        """An AUTHENTICATE without a user name: an anonymous (null session) logon, nobody's."""
        return self.message_type == NTLMSSP_AUTHENTICATE and not self.user_name

    @property
    def ntlm_version(self) -> int | None:
        """1 or 2 for an AUTHENTICATE with an NT response (24 bytes is NTLMv1), else None."""
        if not self.nt_response_length:
            return None
        return 1 if self.nt_response_length == 24 else 2

    @property
    def identity(self) -> str | None:
        """``DOMAIN\\user`` (or just ``user`` without a domain) of a non-anonymous AUTHENTICATE."""
        if self.message_type != NTLMSSP_AUTHENTICATE or not self.user_name:
            return None
        if self.domain_name:
            return f"{self.domain_name}\\{self.user_name}"
        return self.user_name


def _oem_text(raw: bytes) -> str:
    """Printable ASCII as is; every other byte, and the backslash, as ``\\xNN``."""
    if raw.isascii():
        s = raw.decode("ascii")
        if s.isprintable() and "\\" not in s:
            return s
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw)


def _unicode_text(raw: bytes, what: str) -> str:
    """UTF-16LE text; unprintable characters, lone surrogates and the backslash as ``\\uNNNN``.

    Escaping the backslash keeps the mapping one-to-one, so ``DOMAIN\\user`` built from the
    fields can only be split one way.
    """
    if len(raw) & 1:
        raise NtlmParseError(f"{what}: odd length {len(raw)} for UTF-16 text")
    s = raw.decode("utf-16-le", "surrogatepass")
    if s.isprintable() and "\\" not in s:
        return s
    return "".join(c if c.isprintable() and c != "\\" else f"\\u{ord(c):04x}" for c in s)


def _buffer(msg: bytes, field: int, fixed: int, what: str) -> bytes:
    """The bytes a security buffer (Len, MaxLen, Offset at ``field``) points to.

    MaxLen is not checked: MS-NLMP says it SHOULD equal Len and receivers ignore it.
    """
    length, _max_length, offset = _SECBUF(msg, field)
    if length == 0:
        return b""
    if offset < fixed:
        raise NtlmParseError(f"{what}: offset {offset} points into the fixed header")
    if offset + length > len(msg):
        raise NtlmParseError(f"{what}: {length} bytes at {offset} run past the message")
    return msg[offset : offset + length]


def _payload_start(msg: bytes, fields: tuple[int, ...]) -> int:
    """Where the payload begins: the lowest offset of a non-empty buffer (or the end)."""
    start = len(msg)
    for field in fields:
        length, _, offset = _SECBUF(msg, field)
        if length:
            start = min(start, offset)
    return start


def _version_if_present(
    msg: bytes, flags: int, at: int, fields: tuple[int, ...]
) -> tuple[int, int, int] | None:
    if not flags & NEGOTIATE_VERSION or len(msg) < at + _VERSION_LEN:
        return None
    if _payload_start(msg, fields) < at + _VERSION_LEN:
        return None
    major, minor, build = _VERSION(msg, at)
    return major, minor, build


def _text(raw: bytes, unicode: bool, what: str) -> str:
    return _unicode_text(raw, what) if unicode else _oem_text(raw)


def _negotiate(msg: bytes) -> NtlmMessage:
    if len(msg) < _NEGOTIATE_MIN:
        raise NtlmParseError("NEGOTIATE: shorter than its fixed fields")
    (flags,) = _U32(msg, 12)
    domain = workstation = None
    if len(msg) >= _NEGOTIATE_FIXED:
        # These two are always OEM, whatever NEGOTIATE_UNICODE says (MS-NLMP 2.2.1.1).
        if flags & NEGOTIATE_OEM_DOMAIN_SUPPLIED:
            domain = _oem_text(_buffer(msg, 16, _NEGOTIATE_FIXED, "DomainName"))
        if flags & NEGOTIATE_OEM_WORKSTATION_SUPPLIED:
            workstation = _oem_text(_buffer(msg, 24, _NEGOTIATE_FIXED, "Workstation"))
        version = _version_if_present(msg, flags, _NEGOTIATE_FIXED, (16, 24))
    else:
        version = None
    return NtlmMessage(
        NTLMSSP_NEGOTIATE, flags, domain_name=domain, workstation=workstation, os_version=version
    )


def _challenge(msg: bytes) -> NtlmMessage:
    if len(msg) < _CHALLENGE_MIN:
        raise NtlmParseError("CHALLENGE: shorter than its fixed fields")
    (flags,) = _U32(msg, 20)
    fields: tuple[int, ...] = (12, 40) if len(msg) >= _CHALLENGE_FIXED else (12,)
    fixed = _CHALLENGE_FIXED if len(msg) >= _CHALLENGE_FIXED else _CHALLENGE_MIN
    unicode = bool(flags & NEGOTIATE_UNICODE)
    target = _text(_buffer(msg, 12, fixed, "TargetName"), unicode, "TargetName")
    if len(fields) == 2:
        _buffer(msg, 40, fixed, "TargetInfo")  # checked, not kept
        version = _version_if_present(msg, flags, _CHALLENGE_FIXED, fields)
    else:
        version = None
    return NtlmMessage(NTLMSSP_CHALLENGE, flags, target_name=target, os_version=version)


def _authenticate(msg: bytes) -> NtlmMessage:
    if len(msg) < _AUTHENTICATE_FIXED:
        raise NtlmParseError("AUTHENTICATE: shorter than its fixed fields")
    (flags,) = _U32(msg, 60)
    unicode = bool(flags & NEGOTIATE_UNICODE)
    fixed = _AUTHENTICATE_FIXED
    lm = _buffer(msg, 12, fixed, "LmChallengeResponse")
    nt = _buffer(msg, 20, fixed, "NtChallengeResponse")
    domain = _text(_buffer(msg, 28, fixed, "DomainName"), unicode, "DomainName")
    user = _text(_buffer(msg, 36, fixed, "UserName"), unicode, "UserName")
    workstation = _text(_buffer(msg, 44, fixed, "Workstation"), unicode, "Workstation")
    _buffer(msg, 52, fixed, "EncryptedRandomSessionKey")  # checked, not kept
    return NtlmMessage(
        NTLMSSP_AUTHENTICATE,
        flags,
        user_name=user,
        domain_name=domain,
        workstation=workstation,
        os_version=_version_if_present(msg, flags, fixed, (12, 20, 28, 36, 44, 52)),
        lm_response_length=len(lm),
        nt_response_length=len(nt),
    )


def parse_ntlmssp(blob: bytes | bytearray | memoryview) -> NtlmMessage:
    """Parse the NTLMSSP message that starts at the first ``NTLMSSP\\0`` signature in ``blob``.

    Bytes before the signature (a SPNEGO wrapper) and after the message are ignored: NTLMSSP
    carries no overall length, only offsets from its signature.
    """
    data = bytes(blob)
    start = data.find(NTLMSSP_SIGNATURE)
    if start < 0:
        raise NtlmParseError("no NTLMSSP signature")
    msg = data[start:]
    if len(msg) < 12:
        raise NtlmParseError("truncated before MessageType")
    (message_type,) = _U32(msg, 8)
    if message_type == NTLMSSP_NEGOTIATE:
        return _negotiate(msg)
    if message_type == NTLMSSP_CHALLENGE:
        return _challenge(msg)
    if message_type == NTLMSSP_AUTHENTICATE:
        return _authenticate(msg)
    raise NtlmParseError(f"unknown MessageType {message_type}")


def _unwrap(token: bytes) -> bytes | None:
    """The NTLMSSP message in a (possibly SPNEGO-wrapped) security token, from its signature."""
    start = token.find(NTLMSSP_SIGNATURE)
    return None if start < 0 else token[start:]


def find_ntlmssp_in_http(head: bytes | bytearray | memoryview) -> bytes | None:
    """The first NTLMSSP message in the NTLM / Negotiate authentication headers of an HTTP head.

    Looks at ``Authorization`` and ``Proxy-Authorization`` (client to server) and
    ``WWW-Authenticate`` and ``Proxy-Authenticate`` (server to client), in that head's order.
    A ``Negotiate`` token that wraps Kerberos instead of NTLMSSP, or a token that is not
    strict base64, is passed over. Returns None when nothing is found.
    """
    for line in bytes(head).split(b"\n"):
        name, colon, value = line.partition(b":")
        if not colon or name.strip().lower() not in _HTTP_AUTH_HEADERS:
            continue
        scheme, _, token = value.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() not in _HTTP_SCHEMES or not token or len(token) > MAX_HTTP_TOKEN:
            continue
        try:
            decoded = binascii.a2b_base64(token, strict_mode=True)
        except binascii.Error:
            continue
        found = _unwrap(decoded)
        if found is not None:
            return found
    return None


def find_ntlmssp_in_smb2(payload: bytes | bytearray | memoryview) -> bytes | None:
    """The NTLMSSP message in an SMB2 SESSION_SETUP request or response, else None.

    ``payload`` is what TCP 445 carries: a 4-byte NetBIOS session header (type 0, 24-bit
    length) and the SMB2 message; a payload that starts directly with the SMB2 header is
    accepted too. Only the first SMB2 message is examined (SESSION_SETUP is not compounded in
    practice). The security buffer must lie wholly inside the bytes given and inside the
    NetBIOS length, so a segment that cuts it short gives None: reassemble first.
    """
    data = bytes(payload)
    if data[:4] == _SMB2_MAGIC:
        base, end = 0, len(data)
    elif len(data) >= 4 and data[0] == _NBSS_SESSION_MESSAGE:
        base = 4
        end = min(len(data), 4 + int.from_bytes(data[1:4], "big"))
    else:
        return None
    body = base + _SMB2_HEADER_LEN
    if end < body + 8 or data[base : base + 4] != _SMB2_MAGIC:
        return None
    if _U16(data, base + 4)[0] != _SMB2_HEADER_LEN:
        return None
    if _U16(data, base + 12)[0] != _SMB2_SESSION_SETUP:
        return None
    if _U32(data, base + 16)[0] & _SMB2_FLAGS_SERVER_TO_REDIR:
        # SESSION_SETUP response: StructureSize 9, SecurityBufferOffset/Length at 4/6.
        if _U16(data, body)[0] != 9:
            return None
        offset, length = _U16(data, body + 4)[0], _U16(data, body + 6)[0]
    else:
        # SESSION_SETUP request: StructureSize 25, SecurityBufferOffset/Length at 12/14.
        if end < body + 16 or _U16(data, body)[0] != 25:
            return None
        offset, length = _U16(data, body + 12)[0], _U16(data, body + 14)[0]
    # The offset counts from the start of the SMB2 header.
    if length == 0 or offset < _SMB2_HEADER_LEN or base + offset + length > end:
        return None
    return _unwrap(data[base + offset : base + offset + length])
