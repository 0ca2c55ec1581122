"""Readers for DHCP servers' lease files: ISC dhcpd, Kea (memfile CSV) and dnsmasq.

Where the sensor cannot see a workstation's DHCP exchange (another VLAN, a relay it is not
mirrored), the DHCP server's own lease database still says which MAC and host name held which
address, and when. The attribution feature reads these files at start and on reload, so that an
access from 10.0.0.5 at 10:02 can be tied to the workstation that held 10.0.0.5 at 10:02.

Error policy: a lease file is written by another program, may be mid-rewrite, hand-edited or
from a newer server version, and a broken one must never stop the sensor (Kea's own loader
skips corrupted rows the same way). So by default every malformed entry is *skipped* and
reported as a :class:`LeaseWarning` (file, line, reason) in the ``warnings`` list the caller
passes in; the readers then return what they could read.
With ``strict=True`` the first malformed entry raises :class:`LeaseFileError` instead (for
tests and a "check this file" command). A file that cannot be read at all (missing, a
directory, no permission, larger than :data:`MAX_LEASE_FILE_BYTES`) always raises
:class:`LeaseFileError`: that is the caller's configuration problem, and the caller decides
whether to go on without it. :class:`LeaseFileError` is the only exception the readers raise.

Normalised values, identical to what :mod:`monitor.protocols.dhcp` and
:mod:`monitor.protocols.dhcpv6` produce for the same client, so evidence from the wire and
from a lease file compares with ``==``: IP addresses as ``str(ipaddress.ip_address(...))``;
MAC addresses and client identifiers / DUIDs as lower-case colon hex; host names with
non-printable bytes and the backslash written as ``\\xNN`` (:func:`monitor.protocols.dhcp.
safe_text`). Times are Unix nanoseconds (UTC), ``end_ns`` None meaning the lease never ends.

Lease ``state`` is one of: ``active``, ``free``, ``expired``, ``released``, ``abandoned``,
``reset``, ``backup``, ``bootp`` (ISC binding states, verbatim); ``active`` (Kea's state 0,
"default"), ``declined``, ``expired-reclaimed``, ``kea-state-N`` for a state number this
reader does not know, and ``deleted`` (only with ``history=True``) for Kea; ``active`` for
every dnsmasq line (dnsmasq keeps only live leases). :attr:`Lease.is_bound` says whether the
state means the client held the address; the readers never compare times with the clock, so
an ``active`` lease whose ``end_ns`` has passed is returned as written, and
:meth:`Lease.covers` answers "did this client hold the address at time T".

Formats (public documentation; the tests cite their sources):

* ISC dhcpd.leases(5): ``lease A.B.C.D { statement; ... }`` blocks appended on every change,
  so for an address the *last* block is current (``history=True`` returns every block). Dates
  are ``W YYYY/MM/DD HH:MM:SS`` in UTC, ``epoch N`` (with ``db-time-format local``) or
  ``never``. Comments (``#``), unknown statements and nested blocks (``on commit { ... }``)
  are skipped, as are other top-level declarations (``server-duid``, ``failover peer``,
  ``host``, and the DHCPv6 ``ia-na`` / ``ia-ta`` / ``ia-pd`` blocks, which this reader does
  not interpret).
* Kea memfile CSV (``kea-leases4.csv`` / ``kea-leases6.csv``): a header line naming the
  columns, then one line per lease change; the last line for an address is current, and one
  with ``valid_lifetime`` 0 deletes the lease. ``expire`` is a Unix time; the lease started at
  ``expire - valid_lifetime``; a ``valid_lifetime`` of 0xFFFFFFFF is infinite. Values never
  contain commas: Kea writes a comma (and other special bytes) in a host name as ``&#xNN``.
  IPv6 prefix delegations (``lease_type`` 2) are not host addresses and are skipped.
* dnsmasq.leases: ``expiry mac ip hostname client-id`` per IPv4 lease (expiry 0 = infinite,
  ``*`` = none, a non-Ethernet hardware address prefixed with its ARP type and ``-``); a
  ``duid SERVER-DUID`` line; then ``expiry iaid ip hostname client-duid`` per IPv6 lease.
"""

from __future__ import annotations

import calendar
import os
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from monitor.protocols.dhcp import safe_text
from monitor.protocols.dhcpv6 import duid_mac

__all__ = [
    "BOUND_STATES",
    "MAX_LEASE_FILE_BYTES",
    "Lease",
    "LeaseFileError",
    "LeaseWarning",
    "parse_dnsmasq_leases",
    "parse_isc_dhcpd_leases",
    "parse_kea_csv",
    "read_dnsmasq_leases",
    "read_isc_dhcpd_leases",
    "read_kea_csv",
]

# Far above any real lease database (a /16 of leases with history is tens of MB), low enough
# that a wrong path (a disk image, /dev/zero) cannot exhaust the sensor's memory.
MAX_LEASE_FILE_BYTES = 256 * 1024 * 1024
BOUND_STATES = frozenset({"active", "bootp"})
NS = 1_000_000_000
KEA_INFINITE = 0xFFFFFFFF
_KEA_STATES = {0: "active", 1: "declined", 2: "expired-reclaimed"}
_ISC_STATES = frozenset(
    {"free", "active", "expired", "released", "abandoned", "reset", "backup", "bootp"}
)


@dataclass(slots=True, frozen=True)
class Lease:
    """One lease: which client held ``ip``, from ``start_ns`` to ``end_ns`` (None: unknown
    start / infinite end), as the server recorded it at ``file``:``line``.

    ``client_id`` is the DHCPv4 client identifier or the DHCPv6 client DUID, colon hex.
    """

    ip: str
    mac: str | None
    hostname: str | None
    start_ns: int | None
    end_ns: int | None
    state: str
    source: str
    file: str
    line: int
    client_id: str | None = None

    @property
    def is_bound(self) -> bool:
        """The state means the client held the address (not free, expired, released ...)."""
        return self.state in BOUND_STATES

    def covers(self, time_ns: int) -> bool:
        """The client held the address at ``time_ns`` according to this entry."""
        if not self.is_bound:
            return False
        if self.start_ns is not None and time_ns < self.start_ns:
            return False
        return self.end_ns is None or time_ns < self.end_ns


@dataclass(slots=True, frozen=True)
class LeaseWarning:
    """A malformed entry that was skipped."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class LeaseFileError(ValueError):
    """The lease file cannot be read, or (``strict=True``) has a malformed entry."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")
        self.file = file
        self.line = line
        self.message = message


class _Malformed(Exception):
    """Internal: the current entry is malformed; turned into a warning or a LeaseFileError."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _Report:
    def __init__(self, file: str, strict: bool, warnings: list[LeaseWarning] | None) -> None:
        self.file = file
        self.strict = strict
        self.warnings = warnings

    def bad(self, line: int, message: str) -> None:
        if self.strict:
            raise LeaseFileError(self.file, line, message)
        if self.warnings is not None:
            self.warnings.append(LeaseWarning(self.file, line, message))


# --------------------------------------------------------------------------- shared helpers


def _read_text(path: str | os.PathLike[str]) -> tuple[str, str]:
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read(MAX_LEASE_FILE_BYTES + 1)
    except OSError as exc:
        raise LeaseFileError(name, 0, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_LEASE_FILE_BYTES:
        raise LeaseFileError(name, 0, f"larger than {MAX_LEASE_FILE_BYTES} bytes")
    # surrogateescape keeps every byte (a host name in Latin-1 stays those bytes, see _raw).
    return name, data.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    """The bytes a piece of file text stood for (inverse of the decoding in _read_text)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates in text handed in directly
        return text.encode("utf-8", "backslashreplace")


def _hex_octets(text: str, line: int, what: str) -> str:
    """``a:b:c`` with 1-2 hex digits per octet as canonical ``0a:0b:0c``."""
    parts = text.split(":")
    if not text or any(not 1 <= len(p) <= 2 for p in parts):
        raise _Malformed(line, f"{what}: {text[:60]!r} is not colon-separated hex")
    try:
        return ":".join(f"{int(p, 16):02x}" for p in parts)
    except ValueError:
        raise _Malformed(line, f"{what}: {text[:60]!r} is not colon-separated hex") from None


def _mac(text: str, line: int, what: str = "hardware address") -> str:
    mac = _hex_octets(text, line, what)
    if len(mac) != 17:
        raise _Malformed(line, f"{what}: {text[:60]!r} is not 6 octets")
    return mac


def _ipv4(text: str, line: int) -> str:
    try:
        return str(IPv4Address(text))
    except ValueError:
        raise _Malformed(line, f"{text[:60]!r} is not an IPv4 address") from None


def _ipv6(text: str, line: int) -> str:
    try:
        return str(IPv6Address(text))
    except ValueError:
        raise _Malformed(line, f"{text[:60]!r} is not an IPv6 address") from None


def _int(text: str, line: int, what: str, maximum: int = 2**63 // NS) -> int:
    if not text.isascii() or not text.isdigit():
        raise _Malformed(line, f"{what}: {text[:60]!r} is not a number")
    value = int(text)
    if value > maximum:
        raise _Malformed(line, f"{what}: {value} is out of range")
    return value


def _hostname(raw: bytes) -> str | None:
    return safe_text(raw) if raw else None


def _latest(leases: list[Lease], history: bool) -> list[Lease]:
    if history:
        return leases
    current: dict[str, Lease] = {}
    for lease in leases:
        current.pop(lease.ip, None)
        if lease.state != "deleted":
            current[lease.ip] = lease
    return list(current.values())


# --------------------------------------------------------------------------- ISC dhcpd

# One token per match, whitespace and comments before it folded in. The token itself is
# optional so that trailing blanks or a trailing comment end in one (empty-token) match
# instead of a search retried from every later position, and the possessive ``*+`` never
# backtracks into the blanks: together they keep the scan linear on any input.
_ISC_TOKEN = re.compile(
    r"""
    (?:\s+|\#[^\n]*)*+
    (?:
        "(?P<s>(?:[^"\\\n]|\\.)*)"
      | (?P<b>"[^\n]*)
      | (?P<p>[{};])
      | (?P<w>[^\s{};"\#]+)
    )?
    """,
    re.VERBOSE,
)

# (kind, value, offset): kind is "w" (word), "s" (quoted string, without the quotes), "b" (an
# unterminated string), or the punctuation itself: "{", "}", ";".
_Tok = tuple[str, str, int]


class _IscStream:
    """The token stream with a little look-ahead, and line numbers counted only when asked.

    Tokens are produced lazily, so a large lease file is never held as millions of token
    objects; only the text and the leases found are in memory.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._tokens = self._scan(text)
        self._ahead: deque[_Tok] = deque()
        self._line_pos = 0
        self._line = 1

    @staticmethod
    def _scan(text: str) -> Iterator[_Tok]:
        for m in _ISC_TOKEN.finditer(text):
            kind = m.lastgroup
            if kind is None:
                continue
            value = m.group(kind)
            yield (value if kind == "p" else kind, value, m.start(kind))

    def peek(self, k: int = 0) -> _Tok | None:
        while len(self._ahead) <= k:
            tok = next(self._tokens, None)
            if tok is None:
                return None
            self._ahead.append(tok)
        return self._ahead[k]

    def take(self) -> _Tok | None:
        if self._ahead:
            return self._ahead.popleft()
        return next(self._tokens, None)

    def line(self, offset: int) -> int:
        """1-based line of ``offset``; cheap when offsets only grow, as the parser's do."""
        if offset < self._line_pos:
            return self.text.count("\n", 0, offset) + 1
        self._line += self.text.count("\n", self._line_pos, offset)
        self._line_pos = offset
        return self._line

    def skip_statement(self) -> None:
        """Skip one statement: up to its ``;``, or through its ``{ ... }`` block."""
        depth = 0
        while (tok := self.take()) is not None:
            kind = tok[0]
            if kind == "{":
                depth += 1
            elif kind == "}":
                depth -= 1
                if depth <= 0:
                    return
            elif kind == ";" and depth == 0:
                return

    def statement(self) -> tuple[list[_Tok], bool]:
        """The tokens of one statement inside a block; ``True`` if it was a nested block."""
        words: list[_Tok] = []
        while (tok := self.peek()) is not None:
            kind = tok[0]
            if kind == ";":
                self.take()
                return words, False
            if kind == "{":
                self.skip_statement()
                return words, True
            if kind == "}":
                return words, False  # no ';' before '}': the caller closes the block
            words.append(tok)
            self.take()
        return words, False


def _isc_unquote(body: str) -> bytes:
    """The bytes of an ISC quoted string (octal ``\\ooo``, ``\\xHH`` and C escapes)."""
    raw = _raw(body)
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    n = len(raw)
    simple = {ord("n"): 10, ord("t"): 9, ord("r"): 13, ord("b"): 8}
    hexdigits = b"0123456789abcdefABCDEF"
    while i < n:
        b = raw[i]
        if b != 0x5C or i + 1 >= n:
            out.append(b)
            i += 1
            continue
        nxt = raw[i + 1]
        octal = raw[i + 1 : i + 4]
        if len(octal) == 3 and all(0x30 <= c <= 0x37 for c in octal):
            out.append(int(octal, 8) & 0xFF)
            i += 4
        elif nxt == ord("x") and i + 2 < n and raw[i + 2] in hexdigits:
            j = i + 3 if i + 3 < n and raw[i + 3] in hexdigits else i + 2
            out.append(int(raw[i + 2 : j + 1], 16))
            i = j + 1
        else:
            out.append(simple.get(nxt, nxt))
            i += 2
    return bytes(out)


_ISC_DATE = re.compile(r"([0-9]{1,4})/([0-9]{1,2})/([0-9]{1,2})")
_ISC_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})")


def _isc_time(args: list[_Tok], line: int, what: str) -> int | None:
    """``W YYYY/MM/DD HH:MM:SS`` (UTC), ``epoch N`` or ``never``, in ns; None for never."""
    words = [t[1] for t in args]
    if words == ["never"]:
        return None
    if len(words) == 2 and words[0] == "epoch":
        return _int(words[1], line, what) * NS
    if len(words) != 3 or any(t[0] != "w" for t in args):
        raise _Malformed(line, f"{what}: expected 'W YYYY/MM/DD HH:MM:SS', got {words[:4]}")
    m_date = _ISC_DATE.fullmatch(words[1])
    m_time = _ISC_CLOCK.fullmatch(words[2])
    if words[0] not in ("0", "1", "2", "3", "4", "5", "6") or m_date is None or m_time is None:
        raise _Malformed(line, f"{what}: bad date {' '.join(words)[:60]!r}")
    year, month, day = (int(x) for x in m_date.groups())
    hour, minute, second = (int(x) for x in m_time.groups())
    if not (
        1970 <= year <= 9999
        and 1 <= month <= 12
        and 1 <= day <= calendar.monthrange(year, month)[1]
        and hour < 24
        and minute < 60
        and second < 61
    ):
        raise _Malformed(line, f"{what}: impossible date {' '.join(words)[:60]!r}")
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) * NS


def _isc_lease(s: _IscStream, ip_tok: _Tok, file: str) -> Lease:
    """Parse the ``{ ... }`` after ``lease IP`` (the stream is at the ``{``).

    Raises _Malformed after consuming the whole block, so the caller carries on after it.
    """
    start_line = s.line(ip_tok[2])
    problem: _Malformed | None = None
    try:
        ip = _ipv4(ip_tok[1], start_line)
    except _Malformed as exc:
        problem = exc
        ip = ""
    s.take()  # the '{'
    mac = hostname = client_id = None
    start_ns: int | None = None
    end_ns: int | None = None
    state: str | None = None
    closed = False
    while (tok := s.peek()) is not None:
        if tok[0] == "}":
            s.take()
            closed = True
            break
        words, nested = s.statement()
        if nested or not words or problem is not None:
            continue
        line = s.line(words[0][2])
        key = words[0][1].lower()
        args = words[1:]
        values = [t[1] for t in args]
        try:
            if any(t[0] == "b" for t in words):
                raise _Malformed(line, "unterminated string")
            if key == "starts":
                start_ns = _isc_time(args, line, "starts")
            elif key == "ends":
                end_ns = _isc_time(args, line, "ends")
            elif key == "binding" and values[:1] == ["state"]:
                if len(values) != 2 or values[1].lower() not in _ISC_STATES:
                    raise _Malformed(line, f"unknown binding state {' '.join(values)[:60]!r}")
                state = values[1].lower()
            elif key == "abandoned" and not args:
                state = "abandoned"
            elif key == "hardware":
                if len(args) != 2:
                    raise _Malformed(line, "hardware: expected 'hardware TYPE ADDRESS'")
                if values[0].lower() == "ethernet":
                    mac = _mac(values[1], line)
            elif key == "uid":
                if len(args) != 1:
                    raise _Malformed(line, "uid: expected one value")
                if args[0][0] == "s":
                    raw = _isc_unquote(args[0][1])
                    client_id = ":".join(f"{b:02x}" for b in raw) if raw else None
                else:
                    client_id = _hex_octets(values[0], line, "uid")
            elif key == "client-hostname":
                if len(args) != 1 or args[0][0] != "s":
                    raise _Malformed(line, "client-hostname: expected one quoted string")
                hostname = _hostname(_isc_unquote(args[0][1]))
        except _Malformed as exc:
            problem = exc
    if not closed:
        raise _Malformed(start_line, f"lease {ip_tok[1][:60]} {{ is never closed")
    if problem is not None:
        raise problem
    return Lease(
        ip=ip,
        mac=mac,
        hostname=hostname,
        start_ns=start_ns,
        end_ns=end_ns,
        # Files from dhcpd before 3.0 have no binding states: a listed lease was in use.
        state=state or "active",
        source="isc",
        file=file,
        line=start_line,
        client_id=client_id,
    )


def parse_isc_dhcpd_leases(
    text: str,
    file: str = "<text>",
    *,
    strict: bool = False,
    warnings: list[LeaseWarning] | None = None,
    history: bool = False,
) -> list[Lease]:
    """Leases from the text of an ISC dhcpd.leases file (see the module docstring).

    Returns the current lease per address in order of last appearance, or every ``lease``
    block in file order with ``history=True``.
    """
    report = _Report(file, strict, warnings)
    s = _IscStream(text)
    found: list[Lease] = []
    while (tok := s.peek()) is not None:
        kind, value, offset = tok
        if kind == "w" and value.lower() == "lease":
            address = s.peek(1)
            brace = s.peek(2)
            if address is not None and address[0] == "w" and brace is not None and brace[0] == "{":
                s.take()
                s.take()
                try:
                    found.append(_isc_lease(s, address, file))
                except _Malformed as exc:
                    report.bad(exc.line, exc.message)
                continue
            report.bad(s.line(offset), "'lease' not followed by 'ADDRESS {'")
        elif kind == "}":
            report.bad(s.line(offset), "'}' without a matching '{'")
            s.take()
            continue
        elif kind == "b":
            report.bad(s.line(offset), "unterminated string")
        s.skip_statement()
    return _latest(found, history)


def read_isc_dhcpd_leases(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    warnings: list[LeaseWarning] | None = None,
    history: bool = False,
) -> list[Lease]:
    """Leases from an ISC dhcpd.leases file; see :func:`parse_isc_dhcpd_leases`."""
    name, text = _read_text(path)
    return parse_isc_dhcpd_leases(text, name, strict=strict, warnings=warnings, history=history)


# --------------------------------------------------------------------------- Kea memfile


def _kea_unescape(value: str) -> bytes:
    """Undo Kea's CSV escaping: ``&#x`` followed by two hex digits is that byte."""
    raw = _raw(value)
    if b"&#x" not in raw:
        return raw
    return re.sub(rb"&#x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)


def parse_kea_csv(
    text: str,
    file: str = "<text>",
    *,
    strict: bool = False,
    warnings: list[LeaseWarning] | None = None,
    history: bool = False,
) -> list[Lease]:
    """Leases from the text of a Kea memfile lease file, v4 or v6 (told apart by the header).

    Returns the current lease per address (deleted ones left out), or every line in file order
    with ``history=True`` (a deletion then appears with state ``deleted``).
    """
    report = _Report(file, strict, warnings)
    columns: dict[str, int] | None = None
    found: list[Lease] = []
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split(",")
        if columns is None:
            names = [f.strip() for f in fields]
            if "address" not in names or "expire" not in names or "valid_lifetime" not in names:
                report.bad(number, "header does not name address, valid_lifetime and expire")
                return []
            columns = {name: i for i, name in enumerate(names)}
            continue
        if len(fields) != len(columns):
            report.bad(number, f"{len(fields)} values for {len(columns)} columns")
            continue
        try:
            found.extend(_kea_row(fields, columns, number, file))
        except _Malformed as exc:
            report.bad(exc.line, exc.message)
    return _latest(found, history)


def _kea_row(fields: list[str], columns: dict[str, int], line: int, file: str) -> list[Lease]:
    def col(name: str) -> str:
        i = columns.get(name)
        return "" if i is None else fields[i].strip()

    v6 = "duid" in columns
    if v6 and col("lease_type") not in ("", "0", "1"):
        return []  # a delegated prefix (IA_PD), not a host address
    ip = _ipv6(col("address"), line) if v6 else _ipv4(col("address"), line)
    valid = _int(col("valid_lifetime"), line, "valid_lifetime", 0xFFFFFFFF)
    expire = _int(col("expire"), line, "expire")
    state_text = col("state")
    state_num = _int(state_text, line, "state", 2**31) if state_text else 0
    state = _KEA_STATES.get(state_num, f"kea-state-{state_num}")
    if valid == 0:
        state = "deleted"
    hwaddr = col("hwaddr")
    mac: str | None = None
    if hwaddr:
        octets = _hex_octets(hwaddr, line, "hwaddr")
        mac = octets if len(octets) == 17 else None
    ident = col("duid") if v6 else col("client_id")
    client_id = _hex_octets(ident, line, "duid" if v6 else "client_id") if ident else None
    if v6 and mac is None and client_id is not None:
        mac = duid_mac(bytes.fromhex(client_id.replace(":", "")))
    hostname = _hostname(_kea_unescape(col("hostname")))
    return [
        Lease(
            ip=ip,
            mac=mac,
            hostname=hostname,
            start_ns=(expire - valid) * NS if valid != KEA_INFINITE else None,
            end_ns=expire * NS if valid != KEA_INFINITE else None,
            state=state,
            source="kea",
            file=file,
            line=line,
            client_id=client_id,
        )
    ]


def read_kea_csv(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    warnings: list[LeaseWarning] | None = None,
    history: bool = False,
) -> list[Lease]:
    """Leases from a Kea memfile CSV lease file; see :func:`parse_kea_csv`."""
    name, text = _read_text(path)
    return parse_kea_csv(text, name, strict=strict, warnings=warnings, history=history)


# --------------------------------------------------------------------------- dnsmasq


def parse_dnsmasq_leases(
    text: str,
    file: str = "<text>",
    *,
    strict: bool = False,
    warnings: list[LeaseWarning] | None = None,
) -> list[Lease]:
    """Leases from the text of a dnsmasq.leases file, IPv4 and IPv6 (see the module docstring).

    dnsmasq rewrites the whole file on every change, so every line is current; start times are
    not recorded (``start_ns`` is None).
    """
    report = _Report(file, strict, warnings)
    found: list[Lease] = []
    v6 = False
    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "duid":
            if len(fields) != 2:
                report.bad(number, "duid line: expected 'duid SERVER-DUID'")
            v6 = True
            continue
        if len(fields) not in (4, 5):
            report.bad(number, f"{len(fields)} fields, expected 5")
            continue
        try:
            found.append(_dnsmasq_line(fields, v6, number, file))
        except _Malformed as exc:
            report.bad(exc.line, exc.message)
    return found


def _dnsmasq_line(fields: list[str], v6: bool, line: int, file: str) -> Lease:
    expiry = _int(fields[0], line, "expiry")
    ident = fields[4] if len(fields) == 5 and fields[4] != "*" else None
    mac: str | None = None
    if v6:
        iaid = fields[1][1:] if fields[1].startswith("T") else fields[1]
        _int(iaid, line, "iaid", 0xFFFFFFFF)
        ip = _ipv6(fields[2], line)
        client_id = _hex_octets(ident, line, "client DUID") if ident else None
        if client_id is not None:
            mac = duid_mac(bytes.fromhex(client_id.replace(":", "")))
    else:
        hw = fields[1]
        if "-" in hw:  # "TYPE-ADDRESS" for anything but non-empty Ethernet
            hwtype, _, addr = hw.partition("-")
            try:
                int(hwtype, 16)
            except ValueError:
                raise _Malformed(line, f"hardware address {hw[:60]!r}: bad type") from None
            if addr:
                _hex_octets(addr, line, "hardware address")
        else:
            mac = _mac(hw, line)
        ip = _ipv4(fields[2], line)
        client_id = _hex_octets(ident, line, "client id") if ident else None
    name = fields[3]
    return Lease(
        ip=ip,
        mac=mac,
        hostname=None if name == "*" else _hostname(_raw(name)),
        start_ns=None,
        end_ns=None if expiry == 0 else expiry * NS,
        state="active",
        source="dnsmasq",
        file=file,
        line=line,
        client_id=client_id,
    )


def read_dnsmasq_leases(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    warnings: list[LeaseWarning] | None = None,
) -> list[Lease]:
    """Leases from a dnsmasq.leases file; see :func:`parse_dnsmasq_leases`."""
    name, text = _read_text(path)
    return parse_dnsmasq_leases(text, name, strict=strict, warnings=warnings)
