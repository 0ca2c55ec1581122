"""Behaviour of the HTTP/1.x request-head parser (monitor.protocols.http)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monitor.protocols.http import (
    HttpParseError,
    HttpRequest,
    HttpRequestStream,
    looks_like_request_start,
)


def feed_all(data: bytes, **kwargs: int) -> list[HttpRequest]:
    return HttpRequestStream(**kwargs).feed(data)


def feed_bytewise(data: bytes, **kwargs: int) -> list[HttpRequest]:
    stream = HttpRequestStream(**kwargs)
    out: list[HttpRequest] = []
    for i in range(len(data)):
        out += stream.feed(data[i : i + 1])
    return out


def only(data: bytes) -> HttpRequest:
    (request,) = feed_all(data)
    return request


def hosts(requests: list[HttpRequest]) -> list[str | None]:
    return [r.host for r in requests]


KEEP_ALIVE = (
    b"GET /a HTTP/1.1\r\nHost: one.example\r\nUser-Agent: t\r\n\r\n"
    b"POST /b HTTP/1.1\r\nHost: two.example\r\nContent-Length: 5\r\n\r\nhello"
    b"GET /c HTTP/1.1\r\nHost: three.example\r\n\r\n"
)

SMUGGLED_IN_BODY = b"GET / HTTP/1.1\r\nHost: pimeyes.com\r\n\r\n"


# --- framing ---------------------------------------------------------------------------------


def test_three_pipelined_requests_in_one_feed_are_all_reported() -> None:
    requests = feed_all(KEEP_ALIVE)
    assert hosts(requests) == ["one.example", "two.example", "three.example"]
    assert [r.method for r in requests] == ["GET", "POST", "GET"]
    assert [r.target for r in requests] == ["/a", "/b", "/c"]


def test_pipelined_requests_fed_byte_by_byte_equal_one_feed() -> None:
    assert feed_bytewise(KEEP_ALIVE) == feed_all(KEEP_ALIVE)


def test_request_text_inside_content_length_body_is_not_a_request() -> None:
    body = SMUGGLED_IN_BODY + b"Host: pimeyes.com\r\n"
    data = (
        b"POST /upload HTTP/1.1\r\nHost: intranet.local\r\n"
        b"Content-Length: %d\r\n\r\n"
        % len(body)
        + body
        + b"GET /next HTTP/1.1\r\nHost: b.local\r\n\r\n"
    )
    assert hosts(feed_all(data)) == ["intranet.local", "b.local"]
    assert hosts(feed_bytewise(data)) == ["intranet.local", "b.local"]


def test_chunked_body_with_extensions_and_trailers_is_skipped() -> None:
    data = (
        b"POST /c HTTP/1.1\r\nHost: a.local\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
        b"5;name=value\r\nHost:\r\n"
        b"1A ; x\r\n" + SMUGGLED_IN_BODY[:26] + b"\r\n"
        b"0\r\nX-Trailer: pimeyes.com\r\nHost: pimeyes.com\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: b.local\r\n\r\n"
    )
    assert hosts(feed_all(data)) == ["a.local", "b.local"]
    assert hosts(feed_bytewise(data)) == ["a.local", "b.local"]


def test_chunked_body_without_trailers_and_with_bare_lf() -> None:
    data = (
        b"POST / HTTP/1.1\nHost: a.local\nTransfer-Encoding: chunked\n\n"
        b"3\nabc\n0\n\nGET / HTTP/1.1\nHost: b.local\n\n"
    )
    assert hosts(feed_bytewise(data)) == ["a.local", "b.local"]


def test_transfer_encoding_wins_over_content_length() -> None:
    # A CL-framed reading would take "0\r\n\r\nGET..." as the body and miss the second request.
    data = (
        b"POST / HTTP/1.1\r\nHost: a.local\r\nContent-Length: 40\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: pimeyes.com\r\n\r\n"
    )
    assert hosts(feed_all(data)) == ["a.local", "pimeyes.com"]


def test_large_body_is_not_buffered() -> None:
    stream = HttpRequestStream(max_head_bytes=256)
    head = b"PUT /f HTTP/1.1\r\nHost: a.local\r\nContent-Length: 1000000\r\n\r\n"
    assert hosts(stream.feed(head)) == ["a.local"]
    for _ in range(999):
        assert stream.feed(b"x" * 1000) == []
        assert stream.buffered == 0
    assert hosts(stream.feed(b"x" * 1000 + b"GET / HTTP/1.1\r\nHost: b.local\r\n\r\n")) == [
        "b.local"
    ]


def test_leading_empty_lines_before_request_line_are_ignored() -> None:
    data = b"\r\n\n\r\nGET / HTTP/1.1\r\nHost: a.local\r\n\r\n"
    request = only(data)
    assert request.host == "a.local"
    assert request.head_length == len(data) - 5


def test_head_length_counts_request_line_headers_and_blank_line() -> None:
    head = b"GET / HTTP/1.0\r\nHost: a.local\r\n\r\n"
    assert only(head + b"junk-not-parsed-yet").head_length == len(head)


def test_identical_duplicate_content_length_is_accepted() -> None:
    data = (
        b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc"
        b"GET / HTTP/1.1\r\nHost: b.local\r\n\r\n"
    )
    assert hosts(feed_all(data)) == [None, "b.local"]


def test_obs_fold_is_joined_into_the_previous_field() -> None:
    request = only(b"GET / HTTP/1.1\r\nX-Long: a\r\n  b\r\nHost: a.local\r\n\r\n")
    assert request.host == "a.local"
    with pytest.raises(HttpParseError):
        feed_all(b"GET / HTTP/1.1\r\nHost: pimeyes\r\n .com\r\n\r\n")


# --- host attribution ------------------------------------------------------------------------


def test_vendor_name_in_path_query_and_referer_is_not_the_host() -> None:
    request = only(
        b"GET /pimeyes.com/search?u=http://api.clearview.ai/&h=facecheck.id HTTP/1.1\r\n"
        b"Referer: https://pimeyes.com/en\r\nX-Forwarded-Host: pimeyes.com\r\n"
        b"Host: news.example\r\nCookie: host=pimeyes.com\r\n\r\n"
    )
    assert (request.host, request.port, request.host_source) == (
        "news.example",
        None,
        "host-header",
    )


def test_upper_case_host_is_lower_cased() -> None:
    assert only(b"GET / HTTP/1.1\r\nhOST:   PimEyes.COM  \r\n\r\n").host == "pimeyes.com"


def test_host_with_port_is_split() -> None:
    request = only(b"GET / HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n")
    assert (request.host, request.port) == ("example.com", 8080)


def test_trailing_dot_is_removed_from_host() -> None:
    assert only(b"GET / HTTP/1.1\r\nHost: pimeyes.com.\r\n\r\n").host == "pimeyes.com"


def test_ipv6_literal_host_loses_brackets_and_port() -> None:
    request = only(b"GET / HTTP/1.1\r\nHost: [2001:DB8::1]:80\r\n\r\n")
    assert (request.host, request.port) == ("2001:db8::1", 80)


def test_absolute_form_authority_wins_over_host_header_and_drops_userinfo() -> None:
    request = only(
        b"GET http://user:pw@API.clearview.ai:80/x?q=pimeyes.com HTTP/1.1\r\n"
        b"Host: decoy.example\r\n\r\n"
    )
    assert (request.host, request.port, request.host_source) == (
        "api.clearview.ai",
        80,
        "absolute-uri",
    )
    assert request.target == "http://user:pw@API.clearview.ai:80/x?q=pimeyes.com"


def test_absolute_form_with_at_sign_after_authority_is_not_userinfo() -> None:
    request = only(b"GET http://decoy.example/?x=@pimeyes.com HTTP/1.1\r\n\r\n")
    assert request.host == "decoy.example"


def test_backslash_ends_the_absolute_form_authority_like_a_browser_would() -> None:
    assert only(b"GET http://pimeyes.com\\@decoy.example/ HTTP/1.1\r\n\r\n").host == "pimeyes.com"


def test_connect_authority_gives_host_and_port_and_starts_a_tunnel() -> None:
    stream = HttpRequestStream()
    client_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(40))
    (request,) = stream.feed(
        b"CONNECT api.clearview.ai:443 HTTP/1.1\r\nHost: api.clearview.ai:443\r\n"
        b"Proxy-Connection: keep-alive\r\n\r\n" + client_hello[:7]
    )
    assert (request.method, request.host, request.port, request.host_source) == (
        "CONNECT",
        "api.clearview.ai",
        443,
        "connect",
    )
    assert stream.tunnel
    assert stream.feed(client_hello[7:]) == []
    assert stream.take_tunnel_bytes() == client_hello
    assert stream.take_tunnel_bytes() == b""
    assert not stream.broken


def test_ssdp_m_search_is_a_request_with_multicast_host() -> None:
    request = only(
        b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
        b"MX: 1\r\nST: ssdp:all\r\n\r\n"
    )
    assert (request.method, request.target) == ("M-SEARCH", "*")
    assert (request.host, request.port) == ("239.255.255.250", 1900)


def test_request_without_host_reports_none() -> None:
    request = only(b"GET / HTTP/1.0\r\n\r\n")
    assert (request.host, request.port, request.host_source, request.version) == (
        None,
        None,
        "none",
        "HTTP/1.0",
    )
    assert only(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").host_source == "none"


# --- rejection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls-record"),
        pytest.param(b"\x00\x01\x02\xff" * 4, id="binary"),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="ssh-banner"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="h2-preface"),
        pytest.param(b"GET /\r\n\r\n", id="http-0.9"),
        pytest.param(b"GET  / HTTP/1.1\r\n\r\n", id="double-space"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts"),
        pytest.param(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", id="space-before-colon"),
        pytest.param(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", id="leading-fold"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", id="bare-cr"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", id="userinfo-in-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", id="port-range"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", id="bad-ipv6"),
        pytest.param(b"CONNECT /x HTTP/1.1\r\n\r\n", id="connect-origin-form"),
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", id="cl-non-numeric"),
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", id="cl-negative"),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            id="cl-conflict",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", id="cl-huge"
        ),
        pytest.param(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", id="te-not-chunked"),
        pytest.param(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", id="te-twice"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="chunk-size"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", id="chunk-end"
        ),
    ],
)
def test_malformed_or_non_http_input_breaks_the_stream(data: bytes) -> None:
    stream = HttpRequestStream()
    with pytest.raises(HttpParseError):
        stream.feed(data)
    assert stream.broken
    assert stream.buffered == 0
    assert stream.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == []


def test_tls_record_is_rejected_on_its_first_byte() -> None:
    stream = HttpRequestStream()
    with pytest.raises(HttpParseError):
        stream.feed(b"\x16")


def test_oversized_head_is_rejected() -> None:
    stream = HttpRequestStream(max_head_bytes=128)
    stream.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(HttpParseError):
        for _ in range(20):
            stream.feed(b"X-Pad: 0123456789\r\n")
            assert stream.buffered < 128
    assert stream.broken


def test_head_of_exactly_max_head_bytes_is_accepted() -> None:
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * 40 + b"\r\n\r\n"
    assert len(feed_bytewise(head, max_head_bytes=len(head))) == 1
    with pytest.raises(HttpParseError):
        feed_all(head, max_head_bytes=len(head) - 1)


def test_requests_before_garbage_are_carried_by_the_error() -> None:
    stream = HttpRequestStream()
    with pytest.raises(HttpParseError) as info:
        stream.feed(SMUGGLED_IN_BODY + b"\x16\x03\x01")
    assert hosts(list(info.value.requests)) == ["pimeyes.com"]


def test_more_than_max_requests_is_an_error() -> None:
    stream = HttpRequestStream(max_requests=2)
    assert len(stream.feed(SMUGGLED_IN_BODY * 2)) == 2
    with pytest.raises(HttpParseError):
        stream.feed(SMUGGLED_IN_BODY)


# --- looks_like_request_start ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET / HTTP/1.1\r\n", True),
        (b"M-SEARCH * HTTP/1.1", True),
        (memoryview(b"PROPFIND /x HTTP/1.1"), True),
        (b"CONNECT a:443 HTTP/1.1", True),
        (b"GET", False),
        (b"get / HTTP/1.1", False),
        (b"GETX / HTTP/1.1", False),
        (b"\x16\x03\x01", False),
        (b"HTTP/1.1 200 OK\r\n", False),
        (b"", False),
    ],
)
def test_request_start_is_recognised_by_known_method_and_space(
    data: bytes | memoryview, expected: bool
) -> None:
    assert looks_like_request_start(data) is expected


# --- properties ------------------------------------------------------------------------------

_name_label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_hostnames = st.lists(_name_label, min_size=1, max_size=4).map(".".join)
_tokens = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_", min_size=1, max_size=12)
_values = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c not in b"\r\n\x00").strip(b" \t")
)
_eols = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def requests_stream(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str | None, int | None]]]:
    """A valid client stream plus the (method, host, port) each head must yield."""
    data = b""
    expected: list[tuple[str, str | None, int | None]] = []
    for _ in range(draw(st.integers(1, 4))):
        eol = draw(_eols)
        data += draw(st.sampled_from([b"", b"\r\n", b"\n"]))
        method = draw(st.sampled_from(["GET", "POST", "PUT", "OPTIONS", "PROPFIND", "X-Custom"]))
        host = draw(st.none() | _hostnames)
        port = draw(st.none() | st.integers(0, 65535))
        path = b"/" + draw(st.binary(max_size=30)).hex().encode()
        path += draw(st.sampled_from([b"", b"?u=http://pimeyes.com/", b"/api.clearview.ai"]))
        fields = [(draw(_tokens).encode(), draw(_values)) for _ in range(draw(st.integers(0, 4)))]
        fields = [
            (n, v)
            for n, v in fields
            if n.lower() not in (b"host", b"content-length", b"transfer-encoding")
        ]
        if draw(st.booleans()):
            fields.append((b"Referer", b"https://pimeyes.com/search"))
        if host is not None:
            authority = host.encode() + (b":%d" % port if port is not None else b"")
            fields.insert(draw(st.integers(0, len(fields))), (b"Host", authority))
        body = draw(st.binary(max_size=60)) + draw(st.sampled_from([b"", SMUGGLED_IN_BODY]))
        framing = draw(st.sampled_from(["none", "length", "chunked"]))
        payload = b""
        if framing == "length":
            fields.append((b"Content-Length", b"%d" % len(body)))
            payload = body
        elif framing == "chunked":
            fields.append((b"Transfer-Encoding", b"chunked"))
            rest = body
            while rest:
                size = draw(st.integers(1, len(rest)))
                ext = draw(st.sampled_from([b"", b";a=b", b' ; q="x"']))
                payload += b"%x%s%s%s%s" % (size, ext, eol, rest[:size], eol)
                rest = rest[size:]
            payload += b"0" + eol
            if draw(st.booleans()):
                payload += b"X-Trailer: " + draw(_values) + eol
            payload += eol
        head = (
            method.encode()
            + b" "
            + path
            + b" HTTP/1.1"
            + eol
            + b"".join(n + b": " + v + eol for n, v in fields)
            + eol
        )
        data += head + payload
        expected.append((method, host.rstrip(".") if host else None, port if host else None))
    return data, expected


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(requests_stream(), st.lists(st.integers(min_value=0), max_size=30))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_split_of_a_valid_stream_yields_the_same_requests(
    generated: tuple[bytes, list[tuple[str, str | None, int | None]]], cuts: list[int]
) -> None:
    data, expected = generated
    whole = feed_all(data)
    assert [(r.method, r.host, r.port) for r in whole] == expected
    stream = HttpRequestStream()
    pieces: list[HttpRequest] = []
    for piece in _split(data, cuts):
        pieces += stream.feed(memoryview(piece))
    assert pieces == whole
    assert not stream.broken
    assert stream.buffered == 0


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=10))
@settings(max_examples=500)
def test_random_bytes_raise_only_http_parse_error(data: bytes, cuts: list[int]) -> None:
    stream = HttpRequestStream(max_head_bytes=128)
    for piece in _split(data, cuts):
        try:
            stream.feed(piece)
        except HttpParseError:
            assert stream.broken
        assert stream.buffered <= 128


@given(
    requests_stream(),
    st.lists(
        st.tuples(st.integers(min_value=0), st.integers(0, 255), st.integers(0, 2)), max_size=6
    ),
    st.lists(st.integers(min_value=0), max_size=10),
    st.integers(16, 300),
)
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_streams_raise_only_http_parse_error_and_stay_bounded(
    generated: tuple[bytes, list[tuple[str, str | None, int | None]]],
    mutations: list[tuple[int, int, int]],
    cuts: list[int],
    max_head: int,
) -> None:
    data = bytearray(generated[0])
    for where, byte, kind in mutations:
        i = where % (len(data) + 1)
        if kind == 0 and i < len(data):
            data[i] = byte
        elif kind == 1:
            data.insert(i, byte)
        else:
            del data[i : i + 1]
    stream = HttpRequestStream(max_head_bytes=max_head)
    for piece in _split(bytes(data), cuts):
        try:
            stream.feed(piece)
        except HttpParseError:
            assert stream.broken
        assert stream.buffered <= max_head


def _feed_pieces(pieces: list[bytes], max_head: int) -> tuple[list[HttpRequest], bool]:
    stream = HttpRequestStream(max_head_bytes=max_head)
    out: list[HttpRequest] = []
    for piece in pieces:
        try:
            out += stream.feed(piece)
        except HttpParseError as exc:
            out += exc.requests
            assert stream.broken
        assert stream.buffered <= max_head
    return out, stream.broken


@given(
    requests_stream(),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=3),
    st.lists(st.integers(min_value=0), max_size=10),
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_outcome_of_a_mutated_stream_does_not_depend_on_segmentation(
    generated: tuple[bytes, list[tuple[str, str | None, int | None]]],
    mutations: list[tuple[int, int]],
    cuts: list[int],
) -> None:
    data = bytearray(generated[0])
    for where, byte in mutations:
        data[where % len(data)] = byte
    whole = _feed_pieces([bytes(data)], 200)
    assert _feed_pieces(_split(bytes(data), cuts), 200) == whole
    assert _feed_pieces([bytes([b]) for b in data], 200) == whole


@given(
    st.lists(
        st.sampled_from(
            [
                b"GET ",
                b"/ ",
                b"HTTP/1.1",
                b"\r\n",
                b"\n",
                b"\r",
                b"Host: ",
                b"a.b",
                b":80",
                b"[::1]",
                b"Content-Length: ",
                b"3",
                b"Transfer-Encoding: ",
                b"chunked",
                b"0",
                b";x",
                b" ",
                b"@",
                b"CONNECT ",
                b"http://",
                b"abc",
                b":",
                b"\t",
            ]
        ),
        max_size=40,
    )
)
@settings(max_examples=1000)
def test_grammar_fragments_raise_only_http_parse_error(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assume(data)
    stream = HttpRequestStream(max_head_bytes=64)
    try:
        requests = stream.feed(data)
    except HttpParseError:
        return
    for request in requests:
        assert request.host is None or request.host == request.host.lower()
        assert request.host_source in {"connect", "absolute-uri", "host-header", "none"}
        assert (request.host is None) == (request.host_source == "none")
