"""Sans-IO parser for the client-to-server half of HTTP/1.x, reduced to what the sensor needs.

The sensor only has to know which host a client asked for, so this module extracts request
heads and nothing else. Bodies are *framed* (so that a vendor name inside a POST body, or a whole
fake request written into a body, is never mistaken for a request) but never buffered or kept.
The design follows h11's reader: bytes are fed in, completed events come out, and all state
lives in one small object so any TCP segmentation gives the same result.

Where RFC 9112 lets a recipient choose, the choices are:

* Framing: Transfer-Encoding wins over Content-Length when both are present and the message
  is framed as chunked (RFC 9112 6.3 rule 3, what common servers do; a sensor that framed it
  differently from the server could be steered past a smuggled request). A Transfer-Encoding
  whose final coding is not ``chunked`` cannot be framed and is an error (rule 4). HTTP/1.0
  requests carrying Transfer-Encoding are framed as chunked too, rather than guessing where
  the server stops reading. Identical duplicate Content-Length values ("5, 5") are accepted
  (RFC 9110 8.6); differing or non-numeric values are an error.
* Line endings: CRLF, and a bare LF is accepted as a line terminator (RFC 9112 2.2 allows it;
  h11, nginx and node do too). A bare CR anywhere in a head is an error.
* Empty lines before a request line are skipped (RFC 9112 2.2, e.g. a CRLF some old clients add
  after a POST body). They are not counted in ``head_length``.
* obs-fold continuation lines are joined into the previous field with one SP (RFC 9112 5.2
  allows that instead of rejecting; rejecting would blind the sensor to the rest of the
  connection). Whitespace-led lines straight after the request line are rejected (2.2).
* The request line must be ``method SP request-target SP HTTP/1.x`` with single spaces, like
  h11: loose whitespace splitting is a classic desync lever. Methods are limited to 32 bytes so
  that binary junk is rejected after a few bytes instead of after ``max_head_bytes``.
* Host: exactly one Host field line at most (more is an error, RFC 9112 3.2); an invalid Host
  value is an error even when the absolute-form target overrides it, because the server would
  answer 400. CONNECT takes its authority from the target; absolute-form targets take theirs
  from the URI (RFC 9112 3.2.2), user-info stripped and "\\" ending the authority as in
  browsers; otherwise the Host field is used. Host names are lower-cased and a trailing dot is
  removed so "PimEyes.com." and "pimeyes.com" are one name for the blocklist. IPv6 literals
  are validated and returned lower-cased without brackets, otherwise as sent.
* After a CONNECT head the connection is a tunnel and everything after it is kept verbatim for
  the caller (normally a TLS ClientHello). Bytes after an ``Upgrade`` request (WebSocket, h2c)
  are not HTTP/1 and end in HttpParseError, which is the right signal: stop looking at the flow.

Failures are reported as HttpParseError only, and its message never quotes the input: the
sensor may log errors, and the bytes could be a non-matching request. The exception carries
the request heads completed earlier in the same ``feed()`` call (``requests``) so a garbage
tail after a real request does not hide that request from the sensor.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "HttpParseError",
    "HttpRequest",
    "HttpRequestStream",
    "looks_like_request_start",
]


class HttpParseError(ValueError):
    """The client bytes are not (or are no longer) parseable HTTP/1.x requests.

    ``requests`` holds the heads completed earlier in the same ``feed()`` call, because an
    exception would otherwise swallow them.
    """

    requests: tuple[HttpRequest, ...] = ()


@dataclass(slots=True, frozen=True)
class HttpRequest:
    """One request head, reduced to what host attribution needs.

    ``target`` is kept as sent because the caller may need it as evidence, but it must only be
    recorded when the host matched a blocklist.
    """

    method: str
    target: str
    version: str
    host: str | None
    port: int | None
    host_source: str  # "connect" | "absolute-uri" | "host-header" | "none"
    head_length: int
    #: ``Authorization`` / ``Proxy-Authorization`` values with the NTLM or Negotiate scheme, in
    #: head order: they name the user (attribution). Other schemes (Basic, Bearer, ...) carry
    #: secrets the sensor has no use for and are never kept.
    authorization: tuple[bytes, ...] = ()


# tchar from RFC 9110 5.6.2; "-" last so it stays literal inside a character class.
_TCHAR = rb"!#$%&'*+.^_`|~0-9A-Za-z-"
_MAX_METHOD = 32

_HEAD_END = re.compile(rb"\n\r?\n")
# Field lines: name ":" value line-end. A value may hold any byte but NUL, CR and LF, so a CR is
# only ever accepted right before LF (a bare CR splits lines differently in different parsers).
# Other control bytes are allowed, as in h11: real clients put them in cookies.
_FIELD_LINES = rb"(?:[" + _TCHAR + rb"]++:[^\r\n\x00]*+\r?\n)*+\r?\n"
# A whole head in one C-level match, which is most of what keeps a typical head near 5 us.
_HEAD_RE = re.compile(
    rb"([" + _TCHAR + rb"]{1,32}) ([\x21-\x7e\x80-\xff]++) (HTTP/1\.[0-9])\r?\n" + _FIELD_LINES
)
_REQUEST_LINE = re.compile(rb"[" + _TCHAR + rb"]{1,32} [\x21-\x7e\x80-\xff]++ HTTP/1\.[0-9]\r?\n")
_TRAILER_RE = re.compile(_FIELD_LINES)
# Cheap early rejection while a request line is still incomplete: a method of tchars, then SP.
_METHOD_PREFIX = re.compile(rb"[" + _TCHAR + rb"]{1,32}(?: |\Z)")
# Field names are tokens that follow LF directly, so this cannot match inside a value or the
# request line.
_FRAMING_FIELDS = re.compile(
    rb"\n(host|content-length|transfer-encoding|authorization|proxy-authorization):([^\r\n]*)",
    re.I,
)
_NTLM_SCHEMES = re.compile(rb"(?:ntlm|negotiate)[ \t]", re.I)
_OBS_FOLD = re.compile(rb"[ \t]*\r?\n[ \t]+")
# The authority ends at "/", "?" or "#" (RFC 3986 3.2); "\" is invalid there, and browsers and
# WHATWG-style URL parsers treat it as "/", so it ends the authority too rather than letting
# "http://vendor.example\@decoy/" be reported as the decoy.
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://([^/?#\\]*)")
# reg-name (RFC 3986 3.2.2): unreserved / pct-encoded / sub-delims.
_REG_NAME = re.compile(rb"[A-Za-z0-9._~!$&'()*+,;=%-]+")
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n\x00]*)?\r?")
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

# Registered methods (IANA HTTP Method Registry) plus the SSDP/GENA ones seen on LANs.
# The HTTP/2 preface "PRI * HTTP/2.0" is deliberately absent: it is not an HTTP/1 request.
_KNOWN_METHODS = frozenset(
    {
        b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE",
        b"PATCH", b"QUERY", b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK",
        b"UNLOCK", b"SEARCH", b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"CHECKIN",
        b"UNCHECKOUT", b"MERGE", b"LABEL", b"UPDATE", b"VERSION-CONTROL",
        b"BASELINE-CONTROL", b"MKWORKSPACE", b"MKCALENDAR", b"ACL", b"BIND", b"UNBIND",
        b"REBIND", b"LINK", b"UNLINK", b"ORDERPATCH", b"MKREDIRECTREF",
        b"UPDATEREDIRECTREF", b"PURGE", b"M-SEARCH", b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE",
    }
)  # fmt: skip
_LONGEST_KNOWN_METHOD = max(map(len, _KNOWN_METHODS))

_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER = range(6)


def looks_like_request_start(data: bytes | memoryview) -> bool:
    """Whether ``data`` can be the first bytes of a request, to anchor a stream without a SYN.

    Only registered method names count: accepting any token would anchor on random text in
    the middle of a body.
    """
    prefix = bytes(data[: _LONGEST_KNOWN_METHOD + 1])
    space = prefix.find(b" ")
    return space > 0 and prefix[:space] in _KNOWN_METHODS


def _parse_port(raw: bytes) -> int | None:
    if not raw:
        return None  # "host:" is a valid authority with an empty port (RFC 3986 3.2.3)
    if len(raw) > 5 or not raw.isdigit():
        raise HttpParseError("invalid port")
    port = int(raw)
    if port > 65535:
        raise HttpParseError("port out of range")
    return port


def _parse_authority(authority: bytes) -> tuple[str, int | None]:
    """Split ``host[:port]`` and normalise the host for blocklist matching."""
    if authority[:1] == b"[":
        close = authority.find(b"]")
        if close < 0:
            raise HttpParseError("unterminated IPv6 literal")
        literal = authority[1:close].decode("latin-1")
        rest = authority[close + 1 :]
        if rest and rest[:1] != b":":
            raise HttpParseError("junk after IPv6 literal")
        try:
            # URIs spell a zone identifier "%25"; ipaddress wants "%".
            ipaddress.IPv6Address(literal.replace("%25", "%", 1))
        except ValueError:
            raise HttpParseError("invalid IPv6 literal") from None
        return literal.lower(), _parse_port(rest[1:])
    name, _, port = authority.partition(b":")
    if not _REG_NAME.fullmatch(name):
        raise HttpParseError("invalid host")
    # Safe: the pattern admits ASCII only.
    host = name.decode("ascii").lower().rstrip(".")
    if not host:
        raise HttpParseError("empty host")
    return host, _parse_port(port)


def _content_length(values: list[bytes]) -> int:
    lengths = set()
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            # 18 digits also keeps int() clear of the interpreter's digit limit.
            if not item or len(item) > 18 or not item.isdigit():
                raise HttpParseError("invalid Content-Length")
            lengths.add(int(item))
    if len(lengths) != 1:
        raise HttpParseError("conflicting Content-Length values")
    return lengths.pop()


def _is_chunked(values: list[bytes]) -> bool:
    """True when the request is chunked; raises when its length cannot be determined."""
    codings = [
        coding
        for value in values
        for item in value.split(b",")
        if (coding := item.split(b";", 1)[0].strip(b" \t").lower())
    ]
    if not codings or codings[-1] != b"chunked":
        raise HttpParseError("Transfer-Encoding without final chunked coding")
    if b"chunked" in codings[:-1]:
        raise HttpParseError("chunked applied more than once")
    return True


def _match_fields(pattern: re.Pattern[bytes], raw: bytes) -> re.Match[bytes]:
    """Validate a head or trailer section, joining obs-folds into one SP if there are any."""
    match = pattern.fullmatch(raw)
    if match is not None:
        return match
    if b"\n " in raw or b"\n\t" in raw:
        # A fold straight after the request line gets glued onto it and fails there, which is
        # the rejection RFC 9112 2.2 asks for.
        match = pattern.fullmatch(_OBS_FOLD.sub(b" ", raw))
        if match is not None:
            return match
    if pattern is _HEAD_RE and _REQUEST_LINE.match(raw) is None:
        raise HttpParseError("invalid request line")
    raise HttpParseError("invalid header field line")


class HttpRequestStream:
    """Incremental request-head reader for one client-to-server byte stream.

    ``buffered`` stays below ``max_head_bytes``: only an incomplete head, chunk-size line or
    trailer is ever held, while bodies are counted off as they pass. ``max_requests`` bounds
    how many heads one connection may produce; exceeding it is an HttpParseError.
    """

    __slots__ = (
        "_buf",
        "_count",
        "_max_head",
        "_max_requests",
        "_remaining",
        "_scan",
        "_state",
        "_tunnel_buf",
        "broken",
        "tunnel",
    )

    def __init__(self, max_head_bytes: int = 16384, max_requests: int = 1000) -> None:
        if max_head_bytes < 16 or max_requests < 1:
            raise ValueError("max_head_bytes must be >= 16 and max_requests >= 1")
        self._max_head = max_head_bytes
        self._max_requests = max_requests
        self._buf = bytearray()
        self._tunnel_buf = bytearray()
        self._state = _HEAD
        self._remaining = 0  # body or chunk bytes still to skip
        self._scan = 0  # where to resume the terminator search, relative to the buffer start
        self._count = 0
        self.tunnel = False
        self.broken = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_tunnel_bytes(self) -> bytes:
        """Hand over tunnel bytes collected so far; the caller drains them, so it bounds them."""
        data = bytes(self._tunnel_buf)
        self._tunnel_buf.clear()
        return data

    def feed(self, data: bytes | bytearray | memoryview) -> list[HttpRequest]:
        if self.broken:
            return []
        if self.tunnel:
            self._tunnel_buf += data
            return []
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if not size:
            return []
        # Body bytes that do not finish the body need neither copying nor looking at.
        if not self._buf and size < self._remaining and self._state in (_BODY, _CHUNK_DATA):
            self._remaining -= size
            return []
        out: list[HttpRequest] = []
        try:
            self._process(data, out)
        except HttpParseError as exc:
            self.broken = True
            self._buf.clear()
            exc.requests = tuple(out)
            raise
        return out

    def _process(self, data: bytes | bytearray | memoryview, out: list[HttpRequest]) -> None:
        # Work on the caller's bytes when nothing is pending; only a leftover is copied.
        buf: bytes | bytearray
        if self._buf:
            buf = self._buf
            buf += data
        else:
            buf = data if isinstance(data, bytes) else bytes(data)
        end = len(buf)
        pos = 0
        max_head = self._max_head
        try:
            while pos < end:
                state = self._state
                if state in (_BODY, _CHUNK_DATA):
                    take = min(self._remaining, end - pos)
                    pos += take
                    self._remaining -= take
                    if not self._remaining:
                        self._state = _HEAD if state == _BODY else _CHUNK_END
                elif state == _HEAD:
                    byte = buf[pos]
                    if byte == 0x0A or byte == 0x0D:  # empty line before a request line
                        pos = self._skip_line_end(buf, pos, end)
                        if pos < 0:
                            pos = end - 1
                            break
                        continue
                    match = _HEAD_END.search(buf, pos + self._scan, pos + max_head)
                    if match is None:
                        pending = end - pos
                        if pending >= max_head:
                            raise HttpParseError(f"request head exceeds {max_head} bytes")
                        if _METHOD_PREFIX.match(buf, pos, min(end, pos + _MAX_METHOD + 1)) is None:
                            raise HttpParseError("not an HTTP request line")
                        self._scan = max(0, pending - 2)
                        break
                    head_end = match.end()
                    if self._count >= self._max_requests:
                        raise HttpParseError(f"more than {self._max_requests} requests")
                    out.append(self._parse_head(bytes(buf[pos:head_end])))
                    self._count += 1
                    self._scan = 0
                    pos = head_end
                    if self.tunnel:
                        self._tunnel_buf += buf[pos:]
                        pos = end
                        break
                elif state == _CHUNK_SIZE:
                    newline = buf.find(b"\n", pos, pos + max_head)
                    if newline < 0:
                        if end - pos >= max_head:
                            raise HttpParseError("chunk-size line too long")
                        if buf[pos] not in _HEX_DIGITS:
                            raise HttpParseError("invalid chunk size")
                        break
                    line = _CHUNK_SIZE_LINE.fullmatch(buf, pos, newline)
                    if line is None:
                        raise HttpParseError("invalid chunk-size line")
                    self._remaining = int(line[1], 16)
                    self._state = _CHUNK_DATA if self._remaining else _TRAILER
                    pos = newline + 1
                elif state == _CHUNK_END:
                    pos = self._skip_line_end(buf, pos, end)
                    if pos < 0:
                        pos = end - 1
                        break
                    self._state = _CHUNK_SIZE
                else:  # _TRAILER: field lines, then an empty line
                    byte = buf[pos]
                    if byte == 0x0A or byte == 0x0D:
                        pos = self._skip_line_end(buf, pos, end)
                        if pos < 0:
                            pos = end - 1
                            break
                        self._state = _HEAD
                        continue
                    match = _HEAD_END.search(buf, pos + self._scan, pos + max_head)
                    if match is None:
                        if end - pos >= max_head:
                            raise HttpParseError(f"trailer section exceeds {max_head} bytes")
                        self._scan = max(0, end - pos - 2)
                        break
                    _match_fields(_TRAILER_RE, bytes(buf[pos : match.end()]))
                    self._scan = 0
                    self._state = _HEAD
                    pos = match.end()
        finally:
            if buf is self._buf:
                del self._buf[:pos]
            elif pos < end:
                self._buf += memoryview(buf)[pos:]

    @staticmethod
    def _skip_line_end(buf: bytes | bytearray, pos: int, end: int) -> int:
        """Position after a CRLF or LF at ``pos``; -1 when only a CR has arrived so far."""
        if buf[pos] == 0x0A:
            return pos + 1
        if buf[pos] != 0x0D:
            raise HttpParseError("expected end of line")
        if pos + 1 == end:
            return -1
        if buf[pos + 1] != 0x0A:
            raise HttpParseError("bare CR")
        return pos + 2

    def _parse_head(self, raw: bytes) -> HttpRequest:
        """Parse a complete head and set up framing for what follows it."""
        head = _match_fields(_HEAD_RE, raw)
        method, target, version = head.groups()

        hosts: list[bytes] = []
        lengths: list[bytes] = []
        codings: list[bytes] = []
        auth: list[bytes] = []
        for name, value in _FRAMING_FIELDS.findall(head.string):
            value = value.strip(b" \t")
            size = len(name)
            if size == 4:
                hosts.append(value)
            elif size == 14:
                lengths.append(value)
            elif size == 17:
                codings.append(value)
            elif _NTLM_SCHEMES.match(value):  # 13 or 19: (Proxy-)Authorization
                auth.append(value)

        if len(hosts) > 1:
            raise HttpParseError("more than one Host header field")
        # Validated even when the target's authority overrides it: the server would reject it.
        header_host = _parse_authority(hosts[0]) if hosts and hosts[0] else None

        if method == b"CONNECT":
            if b"@" in target:
                raise HttpParseError("user-info in CONNECT target")
            host, port = _parse_authority(target)
            source = "connect"
            self.tunnel = True
        else:
            absolute = _ABSOLUTE_FORM.match(target)
            if absolute is not None:
                authority = absolute[1]
                authority = authority[authority.rfind(b"@") + 1 :]
                if authority:
                    host, port = _parse_authority(authority)
                    source = "absolute-uri"
                else:
                    host, port, source = None, None, "none"
            elif header_host is not None:
                host, port = header_host
                source = "host-header"
            else:
                host, port, source = None, None, "none"

            if codings and _is_chunked(codings):
                self._state = _CHUNK_SIZE
            elif lengths:
                self._remaining = _content_length(lengths)
                self._state = _BODY if self._remaining else _HEAD

        return HttpRequest(
            method.decode("ascii"),
            target.decode("latin-1"),
            version.decode("ascii"),
            host,
            port,
            source,
            len(raw),
            tuple(auth),
        )
