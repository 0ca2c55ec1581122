"""QUIC client Initial packets: remove their protection and recover the ClientHello, sans-IO.

A QUIC client names its server in a TLS ClientHello carried in CRYPTO frames of its Initial
packets. Those are encrypted, but with keys anyone can derive from the packet's own Destination
Connection ID (RFC 9001 section 5.2; RFC 9369 for QUIC v2), so an on-path sensor can read the
hello as the server does. This module does that and nothing else: no Handshake or 1-RTT keys
exist for a passive observer, and none are wanted.

Layers, lowest first (each usable alone; all raise only :class:`QuicParseError` subclasses):

* :func:`initial_client_keys` ``(dcid, version) -> InitialKeys``: the client's Initial key, IV
  and header-protection key. Derivation costs a few HMACs, so a caller that sees many packets
  of one connection keeps the keys (the tracker does).
* :func:`iter_long_header_packets` ``(datagram) -> Iterator[LongHeader]``: split one UDP datagram
  into its coalesced long-header packets (a client may send Initial + 0-RTT in one datagram),
  reading only the cleartext header fields. It stops at a short-header packet (or trailing zero
  bytes), after a Version Negotiation, Retry or unknown-version packet (their length is not
  encoded), and at garbage after a good packet. A malformed *first* packet raises, so a caller can
  tell "broken QUIC" from "not a long header at all" (which yields nothing).
* :func:`decrypt_client_initial` ``(packet, keys) -> InitialPacket``: remove header protection,
  decode the packet number, AEAD-open the payload. An authentication failure raises
  :class:`QuicDecryptError` (wrong keys: a server Initial, a client Initial sent to a CID the
  observer cannot map back, or a forgery); any framing fault raises :class:`QuicParseError`.
* :func:`parse_frames` ``(payload) -> list[(offset, data)]``: the CRYPTO frames of an Initial
  payload; PADDING, PING, ACK and CONNECTION_CLOSE are checked and skipped, any other frame type
  is an error because RFC 9000 section 12.4 forbids it in Initial packets (a server would close
  the connection, so the sensor must not read a hello a server would refuse).
* :class:`CryptoReassembler`: joins CRYPTO data into the first handshake message. Chromium splits
  its hello into many small, shuffled, overlapping CRYPTO frames over several Initials, so order,
  overlap and repetition are all normal; the first bytes received for an offset win, as in a
  server's receive buffer. Bounded by ``max_bytes``.
* :class:`QuicInitialTracker`: the connection-level glue an engine feeds every UDP datagram of
  interest; it returns :class:`QuicOutcome` records (hello found, version negotiation, unknown
  version, decrypt failure, malformed, too large, not an Initial) and reports each connection's
  hello once. No clocks: timestamps come from the caller.

Packet numbers: the AEAD nonce needs the full packet number, and a receiver rebuilds it from the
truncated one and the largest number it has seen (RFC 9000 appendix A.3). Client Initial packet
numbers start at 0 and stay tiny during the hello, so the truncated value is the full one in
practice; the tracker still passes the largest number it decrypted for the connection, so a long
run of retransmissions also decodes correctly.

Not enforced, on purpose: the 1200-byte minimum datagram size and the 8-byte minimum DCID of a
client's first Initial. Servers drop such packets, so honouring them would only lose names from
packets that no server acts on anyway, never add a false hit.
"""

from __future__ import annotations

import enum
import hmac
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from struct import Struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from monitor.protocols.tls import ClientHello, TlsParseError, parse_client_hello

__all__ = [
    "QUIC_V1",
    "QUIC_V2",
    "SUPPORTED_VERSIONS",
    "VERSION_NEGOTIATION",
    "CryptoReassembler",
    "InitialKeys",
    "InitialPacket",
    "LongHeader",
    "PacketType",
    "QuicDecryptError",
    "QuicInitialTracker",
    "QuicOutcome",
    "QuicOutcomeKind",
    "QuicParseError",
    "QuicTrackerStats",
    "ReassemblyStatus",
    "decrypt_client_initial",
    "initial_client_keys",
    "iter_long_header_packets",
    "parse_frames",
    "read_varint",
]

VERSION_NEGOTIATION = 0x00000000
QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF

MAX_CID_LENGTH = 20  # RFC 9000 17.2 for v1 (and v2); the version-independent invariant allows 255
MAX_VARINT = (1 << 62) - 1
_SAMPLE_LENGTH = 16
_TAG_LENGTH = 16

_U32 = Struct(">I").unpack_from
_U64 = Struct(">Q").unpack_from
_ZEROS = bytes(2048)  # compared against a payload's trailing PADDING


class QuicParseError(ValueError):
    """Bytes that claim to be a QUIC long-header packet (or its payload) break its framing."""


class QuicDecryptError(QuicParseError):
    """The packet's AEAD tag does not verify under the keys tried.

    A separate class because for a sensor this is no framing fault: it means the packet is not a
    client Initial for the DCID it carries (usually a server Initial, or a later client Initial
    addressed to a server-chosen CID), which the tracker counts apart from broken packets.
    """


class PacketType(enum.Enum):
    INITIAL = "initial"
    ZERO_RTT = "0-rtt"
    HANDSHAKE = "handshake"
    RETRY = "retry"
    VERSION_NEGOTIATION = "version_negotiation"
    UNKNOWN_VERSION = "unknown_version"  # type bits mean nothing to us in a version we lack


@dataclass(slots=True, frozen=True)
class _Version:
    salt: bytes
    key_label: bytes
    iv_label: bytes
    hp_label: bytes
    types: tuple[PacketType, PacketType, PacketType, PacketType]  # by long-header type bits


# RFC 9001 5.2 and 17.2; RFC 9369 3.3 (salt, labels) and 3.2 (v2 rotates the type bits).
_VERSIONS: dict[int, _Version] = {
    QUIC_V1: _Version(
        bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
        b"quic key",
        b"quic iv",
        b"quic hp",
        (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE, PacketType.RETRY),
    ),
    QUIC_V2: _Version(
        bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
        b"quicv2 key",
        b"quicv2 iv",
        b"quicv2 hp",
        (PacketType.RETRY, PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE),
    ),
}
SUPPORTED_VERSIONS = frozenset(_VERSIONS)


def read_varint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode the RFC 9000 section 16 variable-length integer at ``pos``: (value, next offset)."""
    n = len(buf)
    if pos >= n:
        raise QuicParseError("varint truncated")
    first = buf[pos]
    size = 1 << (first >> 6)
    if pos + size > n:
        raise QuicParseError("varint truncated")
    if size == 1:
        return first, pos + 1
    if size == 2:
        return ((first & 0x3F) << 8) | buf[pos + 1], pos + 2
    if size == 4:
        return _U32(buf, pos)[0] & 0x3FFFFFFF, pos + 4
    return _U64(buf, pos)[0] & 0x3FFFFFFFFFFFFFFF, pos + 8


# --- keys -----------------------------------------------------------------------------------------


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """TLS 1.3 HKDF-Expand-Label with an empty context; outputs here never exceed one SHA-256
    block, so HKDF-Expand is a single HMAC (T(1) of RFC 5869)."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return hmac.digest(secret, info + b"\x01", "sha256")[:length]


@dataclass(slots=True, frozen=True, eq=False)
class InitialKeys:
    """The client's Initial packet protection keys for one (DCID, version).

    The AES-ECB context for header protection is built once here (building it costs several
    times one use). The AES-GCM one is not kept: it holds about 2.7 kB of native memory, which
    over thousands of tracked connections would be most of the sensor's memory, and building
    it costs under a microsecond, about as much as one AEAD open.
    """

    version: int
    key: bytes
    iv: bytes
    hp: bytes
    _hp_ecb: Any = field(init=False, repr=False)
    _iv_int: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ecb = Cipher(algorithms.AES(self.hp), modes.ECB()).encryptor()
        object.__setattr__(self, "_hp_ecb", ecb)  # ECB keeps no state between blocks: reusable
        object.__setattr__(self, "_iv_int", int.from_bytes(self.iv, "big"))


def initial_client_keys(dcid: bytes | bytearray | memoryview, version: int) -> InitialKeys:
    """Derive the keys protecting client Initial packets sent with Destination CID ``dcid``.

    ``dcid`` is the one the packet carries: the client's random original DCID, or after a Retry
    the server's new CID (RFC 9001 5.2). Raises :class:`QuicParseError` for a version without
    published Initial salt.
    """
    params = _VERSIONS.get(version)
    if params is None:
        raise QuicParseError(f"no Initial keys for version {version:#010x}")
    initial_secret = hmac.digest(params.salt, bytes(dcid), "sha256")  # HKDF-Extract
    client_secret = _expand_label(initial_secret, b"client in", 32)
    return InitialKeys(
        version=version,
        key=_expand_label(client_secret, params.key_label, 16),
        iv=_expand_label(client_secret, params.iv_label, 12),
        hp=_expand_label(client_secret, params.hp_label, 16),
    )


# --- long headers ---------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class LongHeader:
    """Cleartext fields of one long-header packet, and the packet's bytes.

    ``packet`` is exactly the packet for Initial, 0-RTT and Handshake (the Length field bounds
    it); for Retry, Version Negotiation and unknown versions, which encode no length, it is the
    rest of the datagram. ``pn_offset`` locates the (still protected) packet number in
    ``packet`` and is 0 where there is none; ``versions`` is filled for Version Negotiation.
    """

    version: int
    packet_type: PacketType
    dcid: bytes
    scid: bytes
    packet: bytes
    pn_offset: int = 0
    token_length: int = 0
    versions: tuple[int, ...] = ()


def _parse_long_header(data: bytes, start: int) -> LongHeader:
    n = len(data)
    if n - start < 7:
        raise QuicParseError("long header truncated")
    first = data[start]
    if not first & 0x80:
        raise QuicParseError("not a long header")
    version = _U32(data, start + 1)[0]
    params = _VERSIONS.get(version)
    cid_cap = MAX_CID_LENGTH if params is not None else 255
    p = start + 5
    dcid_len = data[p]
    if dcid_len > cid_cap:
        raise QuicParseError(f"DCID length {dcid_len} > {cid_cap}")
    p += 1
    if p + dcid_len + 1 > n:
        raise QuicParseError("long header truncated in DCID")
    dcid = data[p : p + dcid_len]
    p += dcid_len
    scid_len = data[p]
    if scid_len > cid_cap:
        raise QuicParseError(f"SCID length {scid_len} > {cid_cap}")
    p += 1
    if p + scid_len > n:
        raise QuicParseError("long header truncated in SCID")
    scid = data[p : p + scid_len]
    p += scid_len
    if version == VERSION_NEGOTIATION:
        rest = n - p
        if rest == 0 or rest & 3:
            raise QuicParseError(f"version negotiation list of {rest} bytes")
        versions = Struct(f">{rest >> 2}I").unpack_from(data, p)
        return LongHeader(
            version, PacketType.VERSION_NEGOTIATION, dcid, scid, data[start:], versions=versions
        )
    if params is None:
        return LongHeader(version, PacketType.UNKNOWN_VERSION, dcid, scid, data[start:])
    ptype = params.types[(first >> 4) & 3]
    if ptype is PacketType.RETRY:
        return LongHeader(version, ptype, dcid, scid, data[start:])
    token_length = 0
    if ptype is PacketType.INITIAL:
        token_length, p = read_varint(data, p)
        if p + token_length > n:
            raise QuicParseError("token overruns the datagram")
        p += token_length
    length, p = read_varint(data, p)
    end = p + length
    if end > n:
        raise QuicParseError(f"packet length {length} overruns the datagram")
    packet = data[start:end] if (start or end != n) else data
    return LongHeader(version, ptype, dcid, scid, packet, p - start, token_length)


def iter_long_header_packets(datagram: bytes | bytearray | memoryview) -> Iterator[LongHeader]:
    """The long-header packets coalesced in one UDP datagram, in order (see module docstring)."""
    data = datagram if type(datagram) is bytes else bytes(datagram)
    n = len(data)
    pos = 0
    while pos < n and data[pos] & 0x80:
        try:
            header = _parse_long_header(data, pos)
        except QuicParseError:
            if pos == 0:
                raise
            return  # garbage after a good packet cannot change the packets before it
        yield header
        if header.packet_type not in _LENGTH_CODED:
            return
        pos += len(header.packet)


_LENGTH_CODED = frozenset({PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE})


# --- packet protection ----------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class InitialPacket:
    """A decrypted client Initial. ``payload`` is the frames, PADDING included."""

    version: int
    dcid: bytes
    scid: bytes
    token_length: int
    packet_number: int
    payload: bytes


def _decode_packet_number(truncated: int, pn_len: int, largest: int) -> int:
    """RFC 9000 appendix A.3: the packet number closest to ``largest + 1``."""
    expected = largest + 1
    win = 1 << (8 * pn_len)
    hwin = win >> 1
    candidate = (expected & ~(win - 1)) | truncated
    if candidate <= expected - hwin and candidate < (1 << 62) - win:
        return candidate + win
    if candidate > expected + hwin and candidate >= win:
        return candidate - win
    return candidate


def _open(header: LongHeader, keys: InitialKeys, largest_pn: int) -> InitialPacket:
    """Header-unprotect and AEAD-open an Initial located by :func:`_parse_long_header`."""
    pkt = header.packet
    pn_off = header.pn_offset
    sample_off = pn_off + 4  # RFC 9001 5.4.2: as if the packet number were 4 bytes long
    if sample_off + _SAMPLE_LENGTH > len(pkt):
        raise QuicParseError("packet too short for the header protection sample")
    mask = keys._hp_ecb.update(pkt[sample_off : sample_off + _SAMPLE_LENGTH])
    first = pkt[0] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    pn_end = pn_off + pn_len
    truncated = int.from_bytes(pkt[pn_off:pn_end], "big") ^ int.from_bytes(mask[1 : 1 + pn_len])
    pn = _decode_packet_number(truncated, pn_len, largest_pn)
    aad = bytes([first]) + pkt[1:pn_off] + truncated.to_bytes(pn_len, "big")
    nonce = (keys._iv_int ^ pn).to_bytes(12, "big")
    try:
        payload = AESGCM(keys.key).decrypt(nonce, pkt[pn_end:], aad)
    except InvalidTag:
        raise QuicDecryptError("Initial packet does not authenticate under these keys") from None
    if first & 0x0C:  # RFC 9000 17.2: checked only once the packet is authentic
        raise QuicParseError("reserved header bits set")
    return InitialPacket(header.version, header.dcid, header.scid, header.token_length, pn, payload)


def decrypt_client_initial(
    packet: bytes | bytearray | memoryview, keys: InitialKeys, largest_pn: int = -1
) -> InitialPacket:
    """Decrypt the client Initial packet at the start of ``packet``.

    ``packet`` is one Initial as yielded by :func:`iter_long_header_packets` (``.packet``); bytes
    after its Length field are ignored, so a whole datagram also works. ``largest_pn`` is the
    largest packet number already decrypted in this connection (-1: none), for RFC 9000 A.3
    packet number recovery. Raises :class:`QuicDecryptError` if the tag does not verify and
    :class:`QuicParseError` for anything else wrong.
    """
    data = packet if type(packet) is bytes else bytes(packet)
    if not data or not data[0] & 0x80:
        raise QuicParseError("not a long header")
    header = _parse_long_header(data, 0)
    if header.packet_type is not PacketType.INITIAL:
        raise QuicParseError(f"{header.packet_type.value} packet, not an Initial")
    if header.version != keys.version:
        raise QuicParseError(f"version {header.version:#010x} but keys for {keys.version:#010x}")
    return _open(header, keys, largest_pn)


# --- frames ---------------------------------------------------------------------------------------

_PADDING, _PING, _ACK, _ACK_ECN, _CRYPTO, _CONNECTION_CLOSE = 0x00, 0x01, 0x02, 0x03, 0x06, 0x1C


def parse_frames(payload: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
    """The CRYPTO frames of a decrypted Initial payload as (stream offset, data), in wire order.

    Frame types are single bytes here: every type allowed in an Initial is below 0x40, and a
    longer encoding of one is a protocol violation (RFC 9000 12.4) like any other type.
    """
    buf = payload if type(payload) is bytes else bytes(payload)
    n = len(buf)
    if n == 0:
        raise QuicParseError("Initial payload holds no frames")  # RFC 9000 12.4
    crypto: list[tuple[int, bytes]] = []
    p = 0
    while p < n:
        ftype = buf[p]
        if ftype == _PADDING:
            # Short runs sit between frames (Chromium); the long one usually ends the payload,
            # which one C-level comparison confirms instead of a Python loop over ~1000 bytes.
            run_end = min(n, p + 8)
            while p < run_end and buf[p] == 0:
                p += 1
            if p == run_end and p < n and buf[p] == 0:
                if n - p <= len(_ZEROS) and buf[p:] == _ZEROS[: n - p]:
                    break
                while p < n and buf[p] == 0:
                    p += 1
            continue
        p += 1
        if ftype == _CRYPTO:
            offset, p = read_varint(buf, p)
            length, p = read_varint(buf, p)
            if p + length > n:
                raise QuicParseError("CRYPTO frame overruns the payload")
            if offset + length > MAX_VARINT:
                raise QuicParseError("CRYPTO frame beyond the largest stream offset")
            crypto.append((offset, buf[p : p + length]))
            p += length
        elif ftype == _PING:
            continue
        elif ftype in (_ACK, _ACK_ECN):
            p = _skip_ack(buf, p, ftype == _ACK_ECN)
        elif ftype == _CONNECTION_CLOSE:
            _code, p = read_varint(buf, p)
            _frame_type, p = read_varint(buf, p)
            reason_len, p = read_varint(buf, p)
            p += reason_len
            if p > n:
                raise QuicParseError("CONNECTION_CLOSE reason overruns the payload")
        else:
            raise QuicParseError(f"frame type {ftype:#04x} is not allowed in an Initial packet")
    return crypto


def _skip_ack(buf: bytes, p: int, ecn: bool) -> int:
    """Validate an ACK frame body (RFC 9000 19.3) and return the offset after it.

    Each range consumes at least two bytes or raises, so a huge range count cannot spin.
    """
    largest, p = read_varint(buf, p)
    _delay, p = read_varint(buf, p)
    count, p = read_varint(buf, p)
    first_range, p = read_varint(buf, p)
    smallest = largest - first_range
    if smallest < 0:
        raise QuicParseError("ACK range below packet number 0")
    for _ in range(count):
        gap, p = read_varint(buf, p)
        length, p = read_varint(buf, p)
        smallest = smallest - gap - 2 - length
        if smallest < 0:
            raise QuicParseError("ACK range below packet number 0")
    if ecn:
        for _ in range(3):
            _count, p = read_varint(buf, p)
    return p


# --- CRYPTO reassembly ----------------------------------------------------------------------------


class ReassemblyStatus(enum.Enum):
    NEED_MORE = "need_more"
    DONE = "done"
    TOO_LARGE = "too_large"


class CryptoReassembler:
    """Rebuilds the first handshake message (the ClientHello) of an Initial CRYPTO stream.

    Memory never exceeds ``max_bytes`` of stream data: data reaching past it, or a hello whose
    header announces more, switches to TOO_LARGE and frees the buffer. Bytes already held are
    never overwritten by a later overlapping frame (first received wins, like a server's receive
    buffer), so a retransmission cannot rewrite a name already read. Held ranges are kept as
    sorted, merged intervals, so shuffled tiny pieces cost O(log n) to place.
    """

    __slots__ = ("_buf", "_ends", "_starts", "_status", "_total", "max_bytes")

    def __init__(self, max_bytes: int = 16384) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._total: int | None = None  # hello length incl. header, once its header is held
        self._status = ReassemblyStatus.NEED_MORE

    @property
    def status(self) -> ReassemblyStatus:
        return self._status

    @property
    def buffered(self) -> int:
        """Bytes of buffer held (the highest stream offset seen, capped by ``max_bytes``)."""
        return len(self._buf)

    @property
    def contiguous(self) -> int:
        """Length of the gap-free stream prefix received so far."""
        return self._ends[0] if self._starts and self._starts[0] == 0 else 0

    def add(self, offset: int, data: bytes | bytearray | memoryview) -> ReassemblyStatus:
        """Take one CRYPTO frame's data. Raises :class:`QuicParseError` once the stream's first
        byte shows its first message is not a ClientHello."""
        if self._status is not ReassemblyStatus.NEED_MORE or not data:
            return self._status
        end = offset + len(data)
        if self._total is not None and end > self._total:
            if offset >= self._total:
                return self._status  # after the hello (a second hello follows a HelloRetry)
            data = data[: self._total - offset]
            end = self._total
        if offset < 0:
            raise QuicParseError(f"negative stream offset {offset}")
        if end > self.max_bytes:
            return self._too_large()
        buf, starts, ends = self._buf, self._starts, self._ends
        if end > len(buf):
            buf.extend(bytes(end - len(buf)))
        i = bisect_left(ends, offset)  # first interval ending at or after our start
        j = bisect_right(starts, end)  # intervals i..j-1 overlap or touch [offset, end)
        cur = offset
        for k in range(i, j):
            if starts[k] > cur:
                buf[cur : starts[k]] = data[cur - offset : starts[k] - offset]
            cur = max(cur, ends[k])
        if cur < end:
            buf[cur:end] = data[cur - offset :]
        if i < j:
            starts[i:j] = [min(offset, starts[i])]
            ends[i:j] = [max(end, ends[j - 1])]
        else:
            starts.insert(i, offset)
            ends.insert(i, end)
        if starts[0] == 0:
            held = ends[0]
            if self._total is None and held >= 4:
                if buf[0] != 1:
                    raise QuicParseError(f"first handshake message has type {buf[0]}, not 1")
                self._total = 4 + ((buf[1] << 16) | (buf[2] << 8) | buf[3])
                if self._total > self.max_bytes:
                    return self._too_large()
            if self._total is not None and held >= self._total:
                del buf[self._total :]
                self._status = ReassemblyStatus.DONE
        return self._status

    def _too_large(self) -> ReassemblyStatus:
        self._status = ReassemblyStatus.TOO_LARGE
        self._buf = bytearray()
        self._starts.clear()
        self._ends.clear()
        return self._status

    def hello(self) -> bytes | None:
        """The complete first handshake message (4-byte header included), or None until then."""
        if self._status is ReassemblyStatus.DONE:
            return bytes(self._buf)
        return None


# --- connection tracking --------------------------------------------------------------------------


class QuicOutcomeKind(enum.Enum):
    HELLO = "hello"  # a connection's ClientHello is complete and parsed (once per connection)
    VERSION_NEGOTIATION = "version_negotiation"  # a Version Negotiation packet
    UNKNOWN_VERSION = "unknown_version"  # a long header of a version without known Initial keys
    DECRYPT_FAILED = "decrypt_failed"  # a client Initial no known keys authenticate
    MALFORMED = "malformed"  # broken header, frames or ClientHello (the connection is dropped)
    TOO_LARGE = "too_large"  # the hello outgrew max_hello_bytes (the connection is dropped)
    NOT_INITIAL = "not_initial"  # a client datagram holding no Initial (short header, 0-RTT...)


@dataclass(slots=True, frozen=True)
class QuicOutcome:
    """What one datagram revealed.

    For connection outcomes (HELLO, MALFORMED and TOO_LARGE of a decrypted connection) ``dcid``
    is the client's original DCID, ``scid`` its SCID, ``first_ts`` the timestamp of its first
    decrypted Initial and ``initial_packets`` how many of its Initials were decrypted up to and
    including this one (how many Initials the hello spanned, retransmissions included). For
    packet outcomes they describe the packet. ``detail`` is a human-readable reason.
    """

    kind: QuicOutcomeKind
    version: int = 0
    dcid: bytes = b""
    scid: bytes = b""
    hello: ClientHello | None = None
    initial_packets: int = 0
    first_ts: int = 0
    versions: tuple[int, ...] = ()
    detail: str = ""


_NOT_INITIAL = QuicOutcome(QuicOutcomeKind.NOT_INITIAL)


@dataclass(slots=True)
class QuicTrackerStats:
    """Counters for the metrics endpoint; ``connections`` is the current table size."""

    datagrams: int = 0
    server_datagrams: int = 0  # datagrams recognised as replies of a tracked connection
    long_header_packets: int = 0
    initial_packets: int = 0  # client Initials seen
    decrypted: int = 0
    decrypt_failures: int = 0
    late_initials: int = 0  # Initials of connections already reported or dropped, not decrypted
    repeated_hellos: int = 0  # a hello resent under new keys after a Retry, not reported again
    unknown_versions: int = 0
    version_negotiation: int = 0
    not_initial: int = 0
    malformed: int = 0
    too_large: int = 0
    hellos: int = 0
    connections: int = 0
    evicted_lru: int = 0
    evicted_idle: int = 0


def _resent_after_retry(conn: _Conn, prev: _Conn, hello: ClientHello) -> bool:
    """Whether ``conn`` is ``prev`` continuing after a Retry the tracker did not see.

    After a Retry the client sends its hello again, protected with keys from the Retry's CID, so
    without the server's side it looks like a new connection of the same 4-tuple. It is the same
    one if the hello is identical (same random), or if the client kept its SCID (RFC 9000
    17.2.5.2 requires it), echoes a token and names the same server: aioquic, for one, builds a
    fresh hello. A later real connection of the same 4-tuple and server is thus not reported
    again, which loses no name.
    """
    if prev.reported is None:
        return False
    random, server_name = prev.reported
    if hello.random == random:
        return True
    return conn.token and conn.scid == prev.scid and hello.server_name == server_name


class _Conn:
    """One client connection attempt, keyed by its 4-tuple and original DCID."""

    __slots__ = (
        "aliases",
        "finished",
        "first_ts",
        "flow",
        "initials",
        "key",
        "keys",
        "largest_pn",
        "last_ts",
        "odcid",
        "previous",
        "reasm",
        "reported",
        "scid",
        "token",
        "version",
    )

    def __init__(
        self, key: tuple, flow: tuple, pkt: InitialPacket, keys: InitialKeys, ts: int, cap: int
    ) -> None:
        self.key = key
        self.flow = flow
        self.odcid = pkt.dcid
        self.scid = pkt.scid
        self.version = pkt.version
        self.keys = keys
        self.reasm: CryptoReassembler | None = CryptoReassembler(cap)
        self.first_ts = ts
        self.last_ts = ts
        self.initials = 0
        self.largest_pn = -1
        self.finished = False
        self.aliases: list[tuple] = []
        self.token = pkt.token_length > 0
        self.previous: _Conn | None = None  # the 4-tuple's connection before this one
        self.reported: tuple[bytes, str | None] | None = None  # hello (random, server_name)


_MAX_ALIASES = 4  # server CIDs per connection worth remembering (Initial reply, Retry, ...)


class QuicInitialTracker:
    """Finds each QUIC connection's ClientHello in a stream of UDP datagrams, sans-IO.

    Feed every UDP datagram that may be QUIC (both directions if available) with
    :meth:`feed`; it returns the outcomes for that datagram, HELLO once per connection.

    Connections are keyed by the client's 4-tuple and original DCID, which Chromium keeps on all
    its hello-carrying Initials until the server answers. Once the server has answered, the
    client addresses the server's chosen CID but keeps the original keys (or, after a Retry,
    derives new ones from the Retry's CID): when the server's reply is fed too, its SCID is
    recorded as an alias of the connection; when it is not, a client Initial whose own DCID gives
    no valid keys is tried with the keys of the latest connection of the same 4-tuple. Thus late
    Initials (ACKs, retransmissions) neither count as decrypt failures nor report a hello twice.
    A hello resent after a Retry the tracker did not see is recognised too (same 4-tuple, and
    same random, or same SCID + a token + same server name) and counted, not reported. A
    datagram is taken as a server reply when its reversed 4-tuple has a tracked connection;
    server replies whose client was never seen look like client Initials that fail to decrypt.

    State is created only for packets that authenticate, so garbage costs CPU (one key
    derivation and one failed AEAD open) but no memory. The table holds at most
    ``max_connections`` (least recently used evicted) and forgets connections idle for
    ``idle_timeout_ns``; each holds at most ``max_hello_bytes`` of CRYPTO data. Addresses may be
    any hashable values (bytes as decoded, strings...), used only as dictionary keys.
    """

    def __init__(
        self,
        max_connections: int = 4096,
        idle_timeout_ns: int = 60 * 10**9,
        max_hello_bytes: int = 16384,
    ) -> None:
        self.max_connections = max(1, max_connections)
        self.idle_timeout_ns = idle_timeout_ns
        self.max_hello_bytes = max_hello_bytes
        self.stats = QuicTrackerStats()
        self._conns: OrderedDict[tuple, _Conn] = OrderedDict()
        self._alias: dict[tuple, tuple[_Conn, InitialKeys | None]] = {}
        self._by_flow: dict[tuple, _Conn] = {}

    def __len__(self) -> int:
        return len(self._conns)

    def feed(
        self,
        ts: int,
        src: Hashable,
        sport: int,
        dst: Hashable,
        dport: int,
        datagram: bytes | bytearray | memoryview,
    ) -> list[QuicOutcome]:
        """Process one UDP payload seen at ``ts`` (ns) from (src, sport) to (dst, dport).

        Returns the outcomes of this datagram, possibly none (an Initial that only advanced a
        hello, or a late Initial of a connection already reported). A datagram without any
        client Initial, Version Negotiation or unknown-version packet gives ``[NOT_INITIAL]``
        (one shared instance: outcomes are immutable). Never raises on any datagram content.
        """
        stats = self.stats
        stats.datagrams += 1
        if self._conns:
            self._expire(ts)
        if not datagram or not datagram[0] & 0x80:
            stats.not_initial += 1
            return [_NOT_INITIAL]
        data = datagram if type(datagram) is bytes else bytes(datagram)
        flow = (src, sport, dst, dport)
        by_flow = self._by_flow
        if by_flow and flow not in by_flow:
            client = by_flow.get((dst, dport, src, sport))
            if client is not None:
                return self._server_datagram(client, data)
        outcomes: list[QuicOutcome] = []
        saw_initial = False
        try:
            for header in iter_long_header_packets(data):
                stats.long_header_packets += 1
                ptype = header.packet_type
                if ptype is PacketType.INITIAL:
                    saw_initial = True
                    outcome = self._client_initial(ts, flow, header)
                    if outcome is not None:
                        outcomes.append(outcome)
                elif ptype is PacketType.VERSION_NEGOTIATION:
                    outcomes.append(self._version_negotiation(header))
                elif ptype is PacketType.UNKNOWN_VERSION:
                    stats.unknown_versions += 1
                    outcomes.append(
                        QuicOutcome(
                            QuicOutcomeKind.UNKNOWN_VERSION,
                            version=header.version,
                            dcid=header.dcid,
                            scid=header.scid,
                        )
                    )
        except QuicParseError as exc:
            stats.malformed += 1
            outcomes.append(QuicOutcome(QuicOutcomeKind.MALFORMED, detail=str(exc)))
        if not outcomes and not saw_initial:
            stats.not_initial += 1
            outcomes.append(_NOT_INITIAL)
        return outcomes

    # -- server direction

    def _server_datagram(self, client: _Conn, data: bytes) -> list[QuicOutcome]:
        """Learn the server's chosen CID (Initial) or Retry CID; report Version Negotiation."""
        self.stats.server_datagrams += 1
        outcomes: list[QuicOutcome] = []
        try:
            for header in iter_long_header_packets(data):
                self.stats.long_header_packets += 1
                ptype = header.packet_type
                if ptype is PacketType.VERSION_NEGOTIATION:
                    outcomes.append(self._version_negotiation(header))
                elif header.version != client.version or len(client.aliases) >= _MAX_ALIASES:
                    continue
                elif ptype is PacketType.INITIAL or ptype is PacketType.HANDSHAKE:
                    self._add_alias(client, header.scid, None)
                elif ptype is PacketType.RETRY:
                    retry_keys = initial_client_keys(header.scid, header.version)
                    if self._add_alias(client, header.scid, retry_keys) and not client.finished:
                        # The client sends its hello again from offset 0, possibly a new one
                        # (aioquic builds a fresh hello): old pieces must not mix with it.
                        client.reasm = CryptoReassembler(self.max_hello_bytes)
        except QuicParseError:
            pass  # a broken reply tells nothing about the client's hello
        if not outcomes:
            self.stats.not_initial += 1
            outcomes.append(_NOT_INITIAL)
        return outcomes

    def _add_alias(self, conn: _Conn, cid: bytes, keys: InitialKeys | None) -> bool:
        key = (*conn.flow, cid)
        if cid == conn.odcid or key in self._alias or key in self._conns:
            return False
        self._alias[key] = (conn, keys)
        conn.aliases.append(key)
        return True

    def _version_negotiation(self, header: LongHeader) -> QuicOutcome:
        self.stats.version_negotiation += 1
        return QuicOutcome(
            QuicOutcomeKind.VERSION_NEGOTIATION,
            dcid=header.dcid,
            scid=header.scid,
            versions=header.versions,
        )

    # -- client direction

    def _client_initial(self, ts: int, flow: tuple, header: LongHeader) -> QuicOutcome | None:
        stats = self.stats
        stats.initial_packets += 1
        key = (*flow, header.dcid)
        conn = self._conns.get(key)
        keys: InitialKeys | None = None
        if conn is None:
            alias = self._alias.get(key)
            if alias is not None:
                conn, keys = alias
        if conn is not None:
            return self._known(ts, conn, header, keys or conn.keys)
        # A new DCID on a known 4-tuple is nearly always the same connection after the server
        # chose its CID (Initial keys stay those of the original DCID, RFC 9001 5.2): try the
        # known keys first, which costs one AEAD open instead of a key derivation and two.
        prev = self._by_flow.get(flow)
        if prev is not None and prev.version == header.version:
            try:
                pkt = _open(header, prev.keys, prev.largest_pn)
            except QuicParseError:
                pass
            else:
                if len(prev.aliases) < _MAX_ALIASES:
                    self._add_alias(prev, header.dcid, None)
                if prev.finished:
                    self._touch(prev, ts)
                    stats.late_initials += 1
                    return None
                return self._accept(ts, prev, pkt)
        try:
            keys = initial_client_keys(header.dcid, header.version)
            pkt = _open(header, keys, -1)
        except QuicDecryptError:
            stats.decrypt_failures += 1
            return QuicOutcome(
                QuicOutcomeKind.DECRYPT_FAILED,
                version=header.version,
                dcid=header.dcid,
                scid=header.scid,
            )
        except QuicParseError as exc:
            stats.malformed += 1
            return QuicOutcome(
                QuicOutcomeKind.MALFORMED, header.version, header.dcid, header.scid, detail=str(exc)
            )
        conn = _Conn(key, flow, pkt, keys, ts, self.max_hello_bytes)
        prev = self._by_flow.get(flow)
        if prev is not None:
            prev.previous = None  # keep one step of history, not a chain
            conn.previous = prev
        self._conns[key] = conn
        self._by_flow[flow] = conn
        if len(self._conns) > self.max_connections:
            self._evict(next(iter(self._conns.values())))
            stats.evicted_lru += 1
        stats.connections = len(self._conns)
        return self._accept(ts, conn, pkt)

    def _known(
        self, ts: int, conn: _Conn, header: LongHeader, keys: InitialKeys
    ) -> QuicOutcome | None:
        if conn.finished:
            self._touch(conn, ts)
            self.stats.late_initials += 1
            return None
        try:
            pkt = _open(header, keys, conn.largest_pn)
        except QuicDecryptError:
            self.stats.decrypt_failures += 1
            return QuicOutcome(
                QuicOutcomeKind.DECRYPT_FAILED, header.version, header.dcid, header.scid
            )
        except QuicParseError as exc:
            return self._drop(conn, QuicOutcomeKind.MALFORMED, str(exc))
        return self._accept(ts, conn, pkt)

    def _accept(self, ts: int, conn: _Conn, pkt: InitialPacket) -> QuicOutcome | None:
        """Feed a decrypted Initial's CRYPTO data to its connection; report the hello once."""
        self.stats.decrypted += 1
        self._touch(conn, ts)
        if conn.finished or conn.reasm is None:
            self.stats.late_initials += 1
            return None
        conn.initials += 1
        conn.largest_pn = max(conn.largest_pn, pkt.packet_number)
        reasm = conn.reasm
        try:
            for offset, data in parse_frames(pkt.payload):
                if reasm.add(offset, data) is not ReassemblyStatus.NEED_MORE:
                    break
            if reasm.status is ReassemblyStatus.TOO_LARGE:
                self.stats.too_large += 1
                return self._drop(conn, QuicOutcomeKind.TOO_LARGE, "ClientHello too large", False)
            message = reasm.hello()
            if message is None:
                return None
            hello = parse_client_hello(message)
        except (QuicParseError, TlsParseError) as exc:
            return self._drop(conn, QuicOutcomeKind.MALFORMED, str(exc))
        conn.finished = True
        conn.reasm = None
        prev, conn.previous = conn.previous, None
        if (
            prev is not None
            and prev.reported is not None
            and _resent_after_retry(conn, prev, hello)
        ):
            self.stats.repeated_hellos += 1
            return None
        conn.reported = (hello.random, hello.server_name)
        self.stats.hellos += 1
        return self._conn_outcome(conn, QuicOutcomeKind.HELLO, hello=hello)

    def _drop(
        self, conn: _Conn, kind: QuicOutcomeKind, detail: str, count_malformed: bool = True
    ) -> QuicOutcome:
        """Stop reading a connection (kept, so its later Initials are recognised and skipped)."""
        if count_malformed:
            self.stats.malformed += 1
        conn.finished = True
        conn.reasm = None
        return self._conn_outcome(conn, kind, detail=detail)

    @staticmethod
    def _conn_outcome(
        conn: _Conn, kind: QuicOutcomeKind, hello: ClientHello | None = None, detail: str = ""
    ) -> QuicOutcome:
        return QuicOutcome(
            kind,
            version=conn.version,
            dcid=conn.odcid,
            scid=conn.scid,
            hello=hello,
            initial_packets=conn.initials,
            first_ts=conn.first_ts,
            detail=detail,
        )

    # -- table upkeep

    def _touch(self, conn: _Conn, ts: int) -> None:
        if ts > conn.last_ts:
            conn.last_ts = ts
        self._conns.move_to_end(conn.key)

    def _expire(self, ts: int) -> None:
        horizon = ts - self.idle_timeout_ns
        conns = self._conns
        while conns:
            oldest = next(iter(conns.values()))
            if oldest.last_ts >= horizon:
                break
            self._evict(oldest)
            self.stats.evicted_idle += 1
        self.stats.connections = len(conns)

    def _evict(self, conn: _Conn) -> None:
        del self._conns[conn.key]
        for alias in conn.aliases:
            self._alias.pop(alias, None)
        if self._by_flow.get(conn.flow) is conn:
            del self._by_flow[conn.flow]
