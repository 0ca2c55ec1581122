"""DNS wire-format parser (RFC 1035) for the sensor's hot path, plus a DNS-over-TCP framer.

The sensor sees tens of thousands of DNS messages per second and needs very little of each:
the question, and the CNAME / A / AAAA records of the answer section (to follow a benign-looking
alias to a vendor name and, later, to map vendor addresses). A general DNS library builds an
object per record and per label, which costs an order of magnitude more than that, so this module
walks the bytes itself with ``struct`` and indexing and builds only the few records it returns.

Everything here is sans-IO: pure functions over ``bytes``. Every malformed input raises
:class:`DnsParseError` (never ``IndexError``, ``struct.error`` ...) and every loop is bounded by
the bytes it is given, so a hostile message can neither crash nor stall the sensor.

Names are returned in one canonical text form so that the blocklist can compare them with ``==``:
ASCII letters lower-cased (DNS compares names case-insensitively, and resolvers randomise the
case of queries, the "0x20" trick), no trailing dot, the root name as ``""``. Label bytes outside
the hostname alphabet are written with master-file escapes exactly as dnspython writes them:
``\\.`` for a dot inside a label, ``\\\\`` for a backslash, ``\\"``, ``\\(``, ``\\)``, ``\\;``,
``\\@`` and ``\\$`` for the other master-file specials, ``\\DDD`` (decimal) for space, control
and non-ASCII bytes. So a ``.`` in the text is always a label boundary: a label such as
``clearview.ai`` (one label with a dot inside) prints as ``clearview\\.ai`` and can never be
taken for the vendor name, and two names that differ in more than ASCII case never print the
same.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from monitor.flows.framing import LengthPrefixedFramer

__all__ = [
    "DnsAddress",
    "DnsFramingError",
    "DnsMessage",
    "DnsParseError",
    "DnsQuestion",
    "DnsTcpFramer",
    "cname_chain",
    "parse_message",
]

TYPE_A = 1
TYPE_CNAME = 5
TYPE_AAAA = 28
CLASS_IN = 1

HEADER_LEN = 12
MAX_NAME_WIRE_LEN = 255  # RFC 1035 3.1, counting every length byte and the root byte
# Compression rules, the same as dnspython's (2.9): a pointer must point strictly before the
# start of the run of bytes it ends (the name's start, or the previous pointer's target), and the
# run it points to must end before that start too (no overlap). Either rule alone rules out
# loops; together they make every byte of a name be read at most once. The hop limit is
# dnspython's as well: honest compressors need one or two hops per name, and agreeing with the
# reference parser on what is valid keeps the two comparable in the tests.
MAX_POINTER_HOPS = 16
MAX_CNAME_HOPS = 16

_HEADER = struct.Struct("!6H")
_QUESTION_TAIL = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")
_MIN_QUESTION_LEN = 5  # root name + QTYPE + QCLASS
_MIN_RR_LEN = 11  # root name + TYPE + CLASS + TTL + RDLENGTH

# Bytes that appear verbatim in a name's text (after lower-casing). The dot is not among them:
# a dot inside a label must be escaped.
_PLAIN = b"abcdefghijklmnopqrstuvwxyz0123456789-_*"
_MASTER_FILE_SPECIALS = b'"().;\\@$'


def _escape_for(byte: int) -> str:
    if byte in _MASTER_FILE_SPECIALS:
        return "\\" + chr(byte)
    if 0x20 < byte < 0x7F:
        return chr(byte)
    return f"\\{byte:03d}"


_ESCAPED = tuple(_escape_for(b) for b in range(256))


class DnsParseError(ValueError):
    """The bytes are not a DNS message this parser accepts (malformed, truncated or hostile)."""


class DnsFramingError(DnsParseError):
    """The TCP byte stream has no valid DNS framing (a length prefix that cannot be right).

    ``messages`` holds the complete messages that preceded the bad prefix in the same ``feed``
    call, so a caller that resynchronises does not lose them.
    """

    def __init__(self, reason: str, messages: list[bytes]) -> None:
        super().__init__(reason)
        self.messages = messages


@dataclass(slots=True, frozen=True)
class DnsQuestion:
    name: str
    qtype: int
    qclass: int


@dataclass(slots=True, frozen=True)
class DnsAddress:
    """An A or AAAA record of the answer section; ``address`` is ``str(ipaddress.ip_address)``."""

    owner: str
    address: str
    ttl: int


@dataclass(slots=True, frozen=True)
class DnsMessage:
    """What the sensor needs from one DNS message.

    ``flags`` is the raw second header word; ``is_response``, ``opcode`` and ``rcode`` are cut
    from it (``rcode`` is the 4-bit header RCODE, without the EDNS extension). ``cnames`` and
    ``addresses`` come from the answer section only, in wire order; A/AAAA records count only in
    class IN. ``answer_count`` is the header ANCOUNT (every answer record, whatever its type).
    TTLs are read as RFC 2181 section 8 says: a value with the top bit set counts as 0.
    """

    id: int
    flags: int
    is_response: bool
    opcode: int
    rcode: int
    questions: tuple[DnsQuestion, ...]
    cnames: tuple[tuple[str, str, int], ...]
    addresses: tuple[DnsAddress, ...]
    answer_count: int


# The generated __init__ of a frozen dataclass sets each field through object.__setattr__, which
# made building DnsMessage a third of the cost of parsing a query. Setting the slots through
# their descriptors builds the very same object (equal, hashable, still frozen to callers) in
# half the time. Naming every field here makes a renamed or added field fail at import.
_MESSAGE_FIELDS = (
    "id",
    "flags",
    "is_response",
    "opcode",
    "rcode",
    "questions",
    "cnames",
    "addresses",
    "answer_count",
)
assert DnsMessage.__slots__ == _MESSAGE_FIELDS
(
    _set_id,
    _set_flags,
    _set_is_response,
    _set_opcode,
    _set_rcode,
    _set_questions,
    _set_cnames,
    _set_addresses,
    _set_answer_count,
) = (getattr(DnsMessage, name).__set__ for name in _MESSAGE_FIELDS)
_new_object = object.__new__


def _new_message(
    ident: int,
    flags: int,
    questions: tuple[DnsQuestion, ...],
    cnames: tuple[tuple[str, str, int], ...],
    addresses: tuple[DnsAddress, ...],
    answer_count: int,
) -> DnsMessage:
    msg = _new_object(DnsMessage)
    _set_id(msg, ident)
    _set_flags(msg, flags)
    _set_is_response(msg, flags >= 0x8000)
    _set_opcode(msg, (flags >> 11) & 0xF)
    _set_rcode(msg, flags & 0xF)
    _set_questions(msg, questions)
    _set_cnames(msg, cnames)
    _set_addresses(msg, addresses)
    _set_answer_count(msg, answer_count)
    return msg


# Per-message cache of decoded names, keyed by the wire offset of every label read.
#
# Without it a crafted message could make each of thousands of answer records point into the
# middle of one long name and pay for its labels again each time (quadratic work in the message
# size). With it every label offset is walked at most once per message.
#
# Every label of a decoded name maps to the same record, so storing costs one dict assignment
# per label: (text, starts, segments, char_offsets, wire_len, hops). ``starts`` holds the offsets
# of the name's labels; ``segments`` the runs of bytes read between jumps, as (index of the first
# label, start offset, wire length of the labels before it, offset just past it, offset just
# past the run that its pointer leads to, or 0); ``char_offsets`` where each label starts in
# ``text`` (None when no label needed escapes: then it is the wire length before the label);
# ``wire_len`` counts every length byte, label byte and the root byte, ``hops`` every pointer.
# From these the suffix at any label is known, and a later name reuses it only when walking the
# same bytes afresh would succeed too: a fresh walk reads the same bytes, and fails exactly when
# the suffix breaks the read bound, the pointer rules, the 255-byte limit or the hop limit.
#
# Small messages skip the cache: filling it costs more than it saves there, and without it a
# name costs at most one walk of 255 bytes, so a message of a few names stays cheap whatever
# its pointers do. Past this many names (questions + 2 per answer) the cache is used.
_UNCACHED_MAX_NAMES = 8
_Segment = tuple[int, int, int, int, int]
_NameRecord = tuple[str, list[int], list[_Segment], list[int] | None, int, int]


def _read_name(
    data: bytes, pos: int, end: int, cache: dict[int, _NameRecord], store: bool
) -> tuple[str, int, int]:
    """Decode the name at ``pos``; return its text, the offset just past it and its pointer hops.

    ``end`` bounds the first run of bytes (the end of the RDATA for a name inside one, so a name
    cannot run out of its record); each later run is bounded by the start of the run before it.
    ``store=False`` leaves the cache as it is (see _UNCACHED_MAX_NAMES).
    """
    after = -1
    starts: list[int] = []
    # (index of the first label, start offset, wire length before it, offset just past it)
    runs: list[tuple[int, int, int, int]] = []
    run_start = pos  # also the limit for pointer targets
    run_first = 0
    wire = 0  # wire length of the labels of the finished runs
    stop = pos + MAX_NAME_WIRE_LEN - 1  # no label may end past this: the root byte must follow
    bound = end if end < stop else stop
    hops = 0
    tail_text = ""
    tail_wire = 1  # the root byte
    tail_next = 0
    while True:
        if pos in cache:
            text, hit_starts, hit_segments, hit_offsets, hit_wire, hit_hops = cache[pos]
            i = 0 if hit_starts[0] == pos else hit_starts.index(pos)
            si = len(hit_segments) - 1
            while hit_segments[si][0] > i:
                si -= 1
            _, hit_start, hit_wire_before, hit_end, tail_next = hit_segments[si]
            wire_before = hit_wire_before + pos - hit_start
            tail_wire = hit_wire - wire_before
            tail_hops = hit_hops - si
            if hit_end > end:
                raise DnsParseError("truncated name")
            if tail_next > run_start:
                raise DnsParseError("compression pointer does not point backwards")
            if hops + tail_hops > MAX_POINTER_HOPS:
                raise DnsParseError("too many compression pointers in a name")
            if after < 0:
                after = hit_end
            runs.append((run_first, run_start, wire, hit_end))
            wire += pos - run_start
            if wire + tail_wire > MAX_NAME_WIRE_LEN:
                raise DnsParseError("name longer than 255 bytes")
            char = wire_before if hit_offsets is None else hit_offsets[i]
            tail_text = text[char:] if char else text
            if not starts:
                return tail_text, after, hops + tail_hops
            hops += tail_hops
            break
        if pos >= end:
            raise DnsParseError("truncated name")
        length = data[pos]
        if length == 0:
            if after < 0:
                after = pos + 1
            if not starts:
                return "", after, hops
            runs.append((run_first, run_start, wire, pos + 1))
            wire += pos - run_start
            break
        if length < 0x40:
            starts.append(pos)
            pos += length + 1
            if pos > bound:
                if pos > stop:
                    raise DnsParseError("name longer than 255 bytes")
                raise DnsParseError("truncated label")
        elif length >= 0xC0:
            if pos + 2 > end:
                raise DnsParseError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= run_start:
                raise DnsParseError("compression pointer does not point backwards")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise DnsParseError("too many compression pointers in a name")
            if after < 0:
                after = pos + 2
            runs.append((run_first, run_start, wire, pos + 2))
            wire += pos - run_start
            end = run_start  # the run pointed to must not overlap this one
            pos = run_start = target
            run_first = len(starts)
            stop = pos + MAX_NAME_WIRE_LEN - 1 - wire
            bound = end if end < stop else stop
        else:
            raise DnsParseError(f"unsupported label type 0x{length & 0xC0:02x}")

    labels = [data[p + 1 : p + 1 + data[p]] for p in starts]
    raw = b".".join(labels).lower()
    # Deleting the plain alphabet leaves the separators plus every byte that needs an escape;
    # when only the separators are left, the bytes are the text (the common case, one C call).
    offsets: list[int] | None = None
    if len(raw.translate(None, _PLAIN)) == len(labels) - 1:
        head = raw.decode("ascii")
    else:
        parts = ["".join([_ESCAPED[b] for b in label.lower()]) for label in labels]
        head = ".".join(parts)
        if store:
            offsets = []
            char = 0
            for part in parts:
                offsets.append(char)
                char += len(part) + 1
    text = head + "." + tail_text if tail_text else head
    if store:
        last = len(runs) - 1
        segments = [
            (first, start, wire_before, run_end, runs[k + 1][3] if k < last else tail_next)
            for k, (first, start, wire_before, run_end) in enumerate(runs)
        ]
        record = (text, starts, segments, offsets, wire + tail_wire, hops)
        for p in starts:
            cache[p] = record
    return text, after, hops


def _skip_name(data: bytes, pos: int, end: int) -> int:
    """Offset just past the name at ``pos``, without decoding it (for records we ignore)."""
    while True:
        if pos >= end:
            raise DnsParseError("truncated name")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length < 0x40:
            pos += length + 1
        elif length >= 0xC0:
            if pos + 2 > end:
                raise DnsParseError("truncated compression pointer")
            return pos + 2
        else:
            raise DnsParseError(f"unsupported label type 0x{length & 0xC0:02x}")


def _ipv6_text(packed: bytes) -> str:
    text = socket.inet_ntop(socket.AF_INET6, packed)
    if "." in text:
        # inet_ntop writes IPv4-mapped/-compatible addresses with a dotted tail; ipaddress does
        # not (before 3.13). Use ipaddress's form so the same address always has the same text.
        return str(IPv6Address(packed))
    return text


def parse_message(data: bytes | bytearray | memoryview) -> DnsMessage:
    """Parse the header, the questions and the answer section of one DNS message.

    The authority and additional sections are not read at all (EDNS OPT lives there), so
    garbage in them is not an error. Trailing bytes are ignored for the same reason. Answer
    records other than CNAME, and A/AAAA of class IN, are stepped over by RDLENGTH; their owner
    names are only skipped, not decoded.
    """
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size < HEADER_LEN:
        raise DnsParseError("truncated header")
    ident, flags, qdcount, ancount, _nscount, _arcount = _HEADER.unpack_from(data)
    if qdcount * _MIN_QUESTION_LEN + ancount * _MIN_RR_LEN > size - HEADER_LEN:
        raise DnsParseError("record counts larger than the message")

    cache: dict[int, _NameRecord] = {}
    # Text and pointer hops of every name decoded so far, by its start offset: answer owners
    # are nearly always a bare pointer to one of them, and a bare pointer to the start of a
    # name that decoded cleanly decodes to the same text (one more hop) without a walk.
    names: dict[int, tuple[str, int]] = {}
    store = qdcount + 2 * ancount > _UNCACHED_MAX_NAMES
    more_names = qdcount > 1 or ancount > 0
    pos = HEADER_LEN
    questions: list[DnsQuestion] = []
    for _ in range(qdcount):
        start = pos
        name, pos, hops = _read_name(data, pos, size, cache, store)
        if more_names:
            names[start] = (name, hops)
        if pos + 4 > size:
            raise DnsParseError("truncated question")
        qtype, qclass = _QUESTION_TAIL.unpack_from(data, pos)
        pos += 4
        questions.append(DnsQuestion(name, qtype, qclass))

    cnames: list[tuple[str, str, int]] = []
    addresses: list[DnsAddress] = []
    for _ in range(ancount):
        start = pos
        if pos < size and data[pos] >= 0xC0:
            pos += 2  # a bare pointer; the fixed-part bound check below covers its 2nd byte
        else:
            pos = _skip_name(data, pos, size)
        if pos + 10 > size:
            raise DnsParseError("truncated resource record")
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
        pos += 10
        rdend = pos + rdlength
        if rdend > size:
            raise DnsParseError("truncated RDATA")
        if rtype != TYPE_CNAME and (rclass != CLASS_IN or (rtype != TYPE_A and rtype != TYPE_AAAA)):
            pos = rdend
            continue
        if ttl > 0x7FFFFFFF:
            ttl = 0  # RFC 2181 8: a TTL with the top bit set means zero
        owner = None
        if data[start] >= 0xC0:
            target = ((data[start] & 0x3F) << 8) | data[start + 1]
            known = names.get(target)
            # The name there was read whole before this record began, so it ends before it.
            if known is not None and target < start and known[1] < MAX_POINTER_HOPS:
                owner = known[0]
        if owner is None:
            owner = _read_name(data, start, size, cache, store)[0]
        if rtype == TYPE_CNAME:
            cname, after, hops = _read_name(data, pos, rdend, cache, store)
            if after != rdend:
                raise DnsParseError("CNAME RDATA longer than its name")
            names[pos] = (cname, hops)
            cnames.append((owner, cname, ttl))
        elif rtype == TYPE_A:
            if rdlength != 4:
                raise DnsParseError("A RDATA is not 4 bytes")
            address = f"{data[pos]}.{data[pos + 1]}.{data[pos + 2]}.{data[pos + 3]}"
            addresses.append(DnsAddress(owner, address, ttl))
        else:
            if rdlength != 16:
                raise DnsParseError("AAAA RDATA is not 16 bytes")
            addresses.append(DnsAddress(owner, _ipv6_text(data[pos:rdend]), ttl))
        pos = rdend

    return _new_message(ident, flags, tuple(questions), tuple(cnames), tuple(addresses), ancount)


def cname_chain(msg: DnsMessage) -> tuple[str, ...]:
    """Names reached from the first question by following the answer's CNAMEs.

    A resolver's answer to ``alias.example`` may hold ``alias.example CNAME x`` and
    ``x CNAME vendor.ai``; the vendor name appears only as a target, so the blocklist has to see
    every target. Records may come in any order; for an owner with several CNAMEs (invalid, but
    possible on the wire) the first one wins. Loops end the chain, and so do 16 hops.
    """
    if not msg.questions or not msg.cnames:
        return ()
    links: dict[str, str] = {}
    for owner, target, _ttl in msg.cnames:
        links.setdefault(owner, target)
    current = msg.questions[0].name
    seen = {current}
    chain: list[str] = []
    while len(chain) < MAX_CNAME_HOPS:
        target = links.get(current)
        if target is None or target in seen:
            break
        chain.append(target)
        seen.add(target)
        current = target
    return tuple(chain)


class DnsTcpFramer(LengthPrefixedFramer):
    """Splits a DNS-over-TCP byte stream (RFC 1035 4.2.2, RFC 7766) into messages.

    Each message is preceded by a 2-byte big-endian length. Segments may carry several messages
    (pipelined queries) or a fraction of one. A length below 12 cannot hold a DNS header, so it
    means the stream is not DNS or the framer joined mid-stream: ``feed`` raises
    :class:`DnsFramingError` (a :class:`DnsParseError`) carrying the messages completed before
    the bad prefix, and the framer stays failed (every later ``feed`` raises too) because there
    is no way to find the next boundary. The caller should drop it or start a new one.

    The framer never holds more than ``max_buffer`` bytes: a length prefix announcing a message
    that would not fit raises as well. The default fits any legal message (65535 + 2).
    """

    __slots__ = ("_max_buffer",)

    def __init__(self, max_buffer: int = 65537 + 2) -> None:
        if max_buffer < 2 + HEADER_LEN:
            raise ValueError("max_buffer must hold at least a length prefix and a DNS header")
        self._max_buffer = max_buffer
        super().__init__(
            2, self._length_problem, DnsFramingError, "framer already failed on a bad length prefix"
        )

    def _length_problem(self, length: int) -> str | None:
        if length < HEADER_LEN:
            return "length prefix too small for a DNS message"
        if length + 2 > self._max_buffer:
            return "length prefix larger than the framer's buffer"
        return None
