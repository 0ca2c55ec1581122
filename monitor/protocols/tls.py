"""TLS ClientHello parsing, sans-IO.

The ClientHello is the last cleartext place where a TLS client names the server it wants (SNI)
and the only place its fingerprint (JA3/JA4) can be taken, so the sensor parses it and nothing
else of TLS. Two entry points:

* :func:`parse_client_hello` takes one complete handshake message (4-byte header included), the
  unit found both in TLS records and in QUIC CRYPTO frames, so QUIC can reuse it.
* :func:`scan_client_hello` walks the TLS record layer of a reassembled TCP stream and says
  whether the hello is complete yet; clients (and DPI-evasion tools) may split the hello over
  several records, so fragments are joined before parsing.

Framing is strict: every length must agree with the bytes it frames, as a real server demands,
because a hello we accept but a server would reject (or the reverse) is how filters get evaded.
Minimum-count rules of the grammar (e.g. "at least one cipher suite") are not enforced: they do
not change where fields lie, and rejecting a hello a lenient server accepts would only lose its
SNI. All limits are bounded by ``max_bytes``; every failure is a :class:`TlsParseError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from struct import Struct, unpack_from

__all__ = [
    "ClientHello",
    "HelloScan",
    "HelloStatus",
    "TlsParseError",
    "looks_like_client_hello_start",
    "parse_client_hello",
    "scan_client_hello",
]

CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = _CH = 1
# RFC 8446 caps plaintext records at 2**14 and protected ones at 2**14 + 256; the looser cap is
# used so that a stack's slightly oversized hello record is not mistaken for non-TLS.
MAX_RECORD_LENGTH = 2**14 + 256

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
EXT_KEY_SHARE = 51
EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D
_PARSED_EXTENSIONS = frozenset(
    {
        EXT_SERVER_NAME,
        EXT_SUPPORTED_GROUPS,
        EXT_EC_POINT_FORMATS,
        EXT_SIGNATURE_ALGORITHMS,
        EXT_ALPN,
        EXT_SUPPORTED_VERSIONS,
        EXT_KEY_SHARE,
        EXT_ENCRYPTED_CLIENT_HELLO,
    }
)

_U16 = Struct(">H").unpack_from
_U16X2 = Struct(">HH").unpack_from


class TlsParseError(ValueError):
    """The bytes claim to be a ClientHello but break its framing."""


@dataclass(slots=True, frozen=True)
class ClientHello:
    """What the sensor and the fingerprinting code need from a ClientHello.

    Lists keep wire order and GREASE values: JA3/JA4 are computed over them and each decides
    what to drop or sort, so the parser must not decide for them.
    """

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: bytes
    extensions: tuple[int, ...]
    server_name: str | None
    alpn: tuple[str, ...]
    supported_versions: tuple[int, ...]
    supported_groups: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    ec_point_formats: tuple[int, ...]
    key_share_groups: tuple[int, ...]
    has_ech: bool
    handshake_length: int


class HelloStatus(enum.Enum):
    NEED_MORE = "need_more"
    NOT_TLS = "not_tls"
    TOO_LARGE = "too_large"
    DONE = "done"


@dataclass(slots=True)
class HelloScan:
    """Outcome of :func:`scan_client_hello`.

    ``needed`` is a stream length: for NEED_MORE and TOO_LARGE the fewest total stream bytes that
    can hold the hello (exact once the record holding the hello's last byte has been seen, a
    lower bound before that, so waiting for it never overshoots); for DONE the offset just past
    the hello's last byte; None for NOT_TLS.
    """

    status: HelloStatus
    hello: ClientHello | None = None
    needed: int | None = None


def _u16_list(buf: bytes, start: int, length: int, what: str) -> tuple[int, ...]:
    if length & 1:
        raise TlsParseError(f"{what}: odd length {length}")
    return unpack_from(f">{length >> 1}H", buf, start)  # struct caches the compiled format


def _text(raw: bytes) -> str:
    """Printable ASCII as is, every other byte (and the backslash itself) as ``\\xNN``.

    Escaping the backslash keeps the mapping reversible, so a name that spells ``\\x00`` in
    clear cannot pass for one that carries a real NUL byte.
    """
    if raw.isascii():
        s = raw.decode("ascii")
        if s.isprintable() and "\\" not in s:
            return s
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw)


def parse_client_hello(message: bytes | bytearray | memoryview) -> ClientHello:
    """Parse one complete ClientHello handshake message, 4-byte header included.

    The header length must cover the input exactly: the caller (record walker or QUIC CRYPTO
    reassembly) knows where the message ends, and slack on either side would hide framing bugs.
    """
    buf = message if type(message) is bytes else bytes(message)
    n = len(buf)
    if n < 4:
        raise TlsParseError("handshake header truncated")
    if buf[0] != HANDSHAKE_CLIENT_HELLO:
        raise TlsParseError(f"handshake type {buf[0]} is not client_hello")
    body_len = (buf[1] << 16) | (buf[2] << 8) | buf[3]
    if body_len != n - 4:
        raise TlsParseError(f"handshake length {body_len} but {n - 4} bytes given")
    if n < 4 + 2 + 32 + 1:
        raise TlsParseError("client_hello truncated before session_id")
    legacy_version = _U16(buf, 4)[0]
    random = buf[6:38]
    p = 39
    sid_len = buf[38]
    if sid_len > 32:
        raise TlsParseError(f"session_id length {sid_len} > 32")
    if p + sid_len + 2 > n:
        raise TlsParseError("client_hello truncated in session_id")
    session_id = buf[p : p + sid_len]
    p += sid_len
    cs_len = _U16(buf, p)[0]
    p += 2
    if p + cs_len + 1 > n:
        raise TlsParseError("client_hello truncated in cipher_suites")
    cipher_suites = _u16_list(buf, p, cs_len, "cipher_suites")
    p += cs_len
    cm_len = buf[p]
    p += 1
    if p + cm_len > n:
        raise TlsParseError("client_hello truncated in compression_methods")
    compression_methods = buf[p : p + cm_len]
    p += cm_len

    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    supported_versions: tuple[int, ...] = ()
    supported_groups: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    ec_point_formats: tuple[int, ...] = ()
    key_share_groups: tuple[int, ...] = ()
    has_ech = False
    types: list[int] = []

    if p != n:  # pre-TLS-1.2 hellos may end here; anything after must be an extensions block
        if n - p < 2:
            raise TlsParseError("trailing byte after compression_methods")
        ext_len = _U16(buf, p)[0]
        p += 2
        if ext_len != n - p:
            raise TlsParseError(f"extensions length {ext_len} but {n - p} bytes follow")
        append = types.append
        while p < n:
            if p + 4 > n:
                raise TlsParseError("extension header truncated")
            etype, elen = _U16X2(buf, p)
            p += 4
            end = p + elen
            if end > n:
                raise TlsParseError(f"extension {etype:#06x} overruns the hello")
            append(etype)
            if etype not in _PARSED_EXTENSIONS:
                p = end
                continue
            if etype == EXT_SERVER_NAME:
                server_name = _server_name(buf, p, elen)
            elif etype == EXT_KEY_SHARE:
                key_share_groups = _key_share_groups(buf, p, elen)
            elif etype == EXT_SUPPORTED_GROUPS:
                supported_groups = _u16_vector(buf, p, elen, "supported_groups")
            elif etype == EXT_SIGNATURE_ALGORITHMS:
                signature_algorithms = _u16_vector(buf, p, elen, "signature_algorithms")
            elif etype == EXT_SUPPORTED_VERSIONS:
                if elen < 1 or buf[p] != elen - 1:
                    raise TlsParseError("supported_versions length mismatch")
                supported_versions = _u16_list(buf, p + 1, elen - 1, "supported_versions")
            elif etype == EXT_ALPN:
                alpn = _alpn(buf, p, elen)
            elif etype == EXT_EC_POINT_FORMATS:
                if elen < 1 or buf[p] != elen - 1:
                    raise TlsParseError("ec_point_formats length mismatch")
                ec_point_formats = tuple(buf[p + 1 : end])
            elif etype == EXT_ENCRYPTED_CLIENT_HELLO:
                has_ech = True
            p = end
        if len(set(types)) != len(types):
            dup = next(t for i, t in enumerate(types) if t in types[:i])
            raise TlsParseError(f"duplicate extension {dup:#06x}")

    return ClientHello(
        legacy_version=legacy_version,
        random=random,
        session_id=session_id,
        cipher_suites=cipher_suites,
        compression_methods=compression_methods,
        extensions=tuple(types),
        server_name=server_name,
        alpn=alpn,
        supported_versions=supported_versions,
        supported_groups=supported_groups,
        signature_algorithms=signature_algorithms,
        ec_point_formats=ec_point_formats,
        key_share_groups=key_share_groups,
        has_ech=has_ech,
        handshake_length=n,
    )


def _u16_vector(buf: bytes, p: int, elen: int, what: str) -> tuple[int, ...]:
    """A uint16 list behind a 2-byte length that must fill the extension exactly."""
    if elen < 2 or _U16(buf, p)[0] != elen - 2:
        raise TlsParseError(f"{what} length mismatch")
    return _u16_list(buf, p + 2, elen - 2, what)


def _server_name(buf: bytes, p: int, elen: int) -> str | None:
    """First host_name of the ServerNameList.

    Every name type is walked as ``type(1) length(2) bytes`` (RFC 6066 defines no other shape),
    so a host_name placed after an unknown entry is still found.
    """
    if elen < 2 or _U16(buf, p)[0] != elen - 2:
        raise TlsParseError("server_name list length mismatch")
    end = p + elen
    p += 2
    name: str | None = None
    while p < end:
        if end - p < 3:
            raise TlsParseError("server_name entry truncated")
        name_type = buf[p]
        nlen = _U16(buf, p + 1)[0]
        p += 3
        if p + nlen > end:
            raise TlsParseError("server_name entry overruns the extension")
        if name_type == 0 and name is None:
            name = _text(buf[p : p + nlen])
        p += nlen
    return name


def _alpn(buf: bytes, p: int, elen: int) -> tuple[str, ...]:
    if elen < 2 or _U16(buf, p)[0] != elen - 2:
        raise TlsParseError("alpn list length mismatch")
    end = p + elen
    p += 2
    names: list[str] = []
    while p < end:
        nlen = buf[p]
        p += 1
        if p + nlen > end:
            raise TlsParseError("alpn protocol name overruns the extension")
        names.append(_text(buf[p : p + nlen]))
        p += nlen
    return tuple(names)


def _key_share_groups(buf: bytes, p: int, elen: int) -> tuple[int, ...]:
    """Groups of the offered key shares; the key bytes themselves are of no use to the sensor."""
    if elen < 2 or _U16(buf, p)[0] != elen - 2:
        raise TlsParseError("key_share list length mismatch")
    end = p + elen
    p += 2
    groups: list[int] = []
    while p < end:
        if end - p < 4:
            raise TlsParseError("key_share entry truncated")
        group, klen = _U16X2(buf, p)
        p += 4 + klen
        if p > end:
            raise TlsParseError("key_share entry overruns the extension")
        groups.append(group)
    return tuple(groups)


def _remaining_end(q: int, record_end: int, missing: int) -> int:
    """Fewest stream bytes that can hold ``missing`` more handshake bytes read from offset ``q``
    inside a record ending at ``record_end``; later bytes need at least one more record header."""
    if q + missing <= record_end:
        return q + missing
    return record_end + 5 + (missing - (record_end - q))


def scan_client_hello(stream: bytes | bytearray | memoryview, max_bytes: int = 16384) -> HelloScan:
    """Find and parse the ClientHello at the start of a client's TCP byte stream.

    Until the first handshake byte has been seen, anything unexpected means the stream is not
    TLS (NOT_TLS). After that the stream has committed to being a ClientHello, so a broken
    record header is a :class:`TlsParseError`, like a malformed hello body. ``max_bytes`` bounds
    the stream bytes (record headers included) the hello may span, which also bounds the work.
    No reference to ``stream`` is kept, so a caller may grow its bytearray afterwards.
    """
    n = len(stream)
    # Fast path: the whole hello inside the first record, as nearly every client sends it.
    if n >= 9 and stream[0] == CONTENT_HANDSHAKE and stream[1] == 3 and stream[5] == _CH:
        rlen = (stream[3] << 8) | stream[4]
        total = 4 + ((stream[6] << 16) | (stream[7] << 8) | stream[8])
        if 4 <= rlen <= MAX_RECORD_LENGTH and total <= rlen:
            end = 5 + total
            if end > max_bytes:
                return HelloScan(HelloStatus.TOO_LARGE, None, end)
            if n < end:
                return HelloScan(HelloStatus.NEED_MORE, None, end)
            return HelloScan(HelloStatus.DONE, parse_client_hello(stream[5:end]), end)
    return _scan_records(stream, n, max_bytes)


def _scan_records(stream: bytes | bytearray | memoryview, n: int, max_bytes: int) -> HelloScan:
    """General record walk: hello split over records, handshake header split, empty records."""
    spans: list[tuple[int, int]] = []  # stream slices holding handshake bytes, in order
    have = 0  # handshake bytes gathered
    total: int | None = None  # handshake message length incl. header, once its header is known
    pos = 0
    while True:
        missing = (4 if total is None else total) - have
        if n - pos < 5:
            # Judge a partial record header on the bytes present: HTTP or SSH shows at byte 0.
            if (n > pos and stream[pos] != CONTENT_HANDSHAKE) or (
                n > pos + 1 and stream[pos + 1] != 3
            ):
                if have == 0:
                    return HelloScan(HelloStatus.NOT_TLS)
                raise TlsParseError(f"bad record header at offset {pos} inside the ClientHello")
            needed = pos + 5 + missing
            if needed > max_bytes:
                return HelloScan(HelloStatus.TOO_LARGE, None, needed)
            return HelloScan(HelloStatus.NEED_MORE, None, needed)
        rlen = (stream[pos + 3] << 8) | stream[pos + 4]
        if stream[pos] != CONTENT_HANDSHAKE or stream[pos + 1] != 3 or rlen > MAX_RECORD_LENGTH:
            if have == 0:
                return HelloScan(HelloStatus.NOT_TLS)
            raise TlsParseError(f"bad record header at offset {pos} inside the ClientHello")
        q = pos + 5
        record_end = q + rlen
        needed = _remaining_end(q, record_end, missing)
        if needed > max_bytes:
            return HelloScan(HelloStatus.TOO_LARGE, None, needed)
        while q < record_end:
            take = min(missing, record_end - q)
            avail = min(take, n - q)
            if avail > 0:
                if have == 0 and stream[q] != HANDSHAKE_CLIENT_HELLO:
                    return HelloScan(HelloStatus.NOT_TLS)
                spans.append((q, q + avail))
                have += avail
                q += avail
            if avail < take:
                return HelloScan(
                    HelloStatus.NEED_MORE, None, _remaining_end(q, record_end, missing - avail)
                )
            if total is None:
                if have < 4:
                    continue  # the handshake header itself is split; q is at record_end
                header = b"".join(stream[a:b] for a, b in spans)
                total = 4 + ((header[1] << 16) | (header[2] << 8) | header[3])
            missing = total - have
            if missing == 0:
                if len(spans) == 1:
                    message = bytes(stream[spans[0][0] : spans[0][1]])
                else:
                    message = b"".join(stream[a:b] for a, b in spans)
                return HelloScan(HelloStatus.DONE, parse_client_hello(message), q)
            needed = _remaining_end(q, record_end, missing)
            if needed > max_bytes:
                return HelloScan(HelloStatus.TOO_LARGE, None, needed)
        pos = record_end


def looks_like_client_hello_start(data: bytes | bytearray | memoryview) -> bool:
    """Cheap guess that ``data`` begins a ClientHello stream, to anchor TCP reassembly without
    a SYN. Judged on the bytes present, so a client that splits its first segment into tiny
    pieces (a known DPI-evasion trick) still anchors; the record length is checked too because
    it costs nothing and rejects most accidental 0x16 starts.
    """
    n = len(data)
    if n == 0 or data[0] != CONTENT_HANDSHAKE:
        return False
    if n >= 2 and data[1] != 3:
        return False
    if n >= 3 and data[2] > 4:
        return False
    if n >= 5 and ((data[3] << 8) | data[4]) > MAX_RECORD_LENGTH:
        return False
    return not (n >= 6 and data[5] != HANDSHAKE_CLIENT_HELLO)
