"""ClientHello parser: synthetic hellos shaped like today's browsers, real hellos captured from
openssl/gnutls/curl/python on loopback (checked against Wireshark's dissection of the same bytes),
the record walker's streaming contract, and fuzzing."""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monitor.protocols.tls import (
    ClientHello,
    HelloScan,
    HelloStatus,
    TlsParseError,
    looks_like_client_hello_start,
    parse_client_hello,
    scan_client_hello,
)

FIXTURES = Path(__file__).parent / "fixtures" / "tls"

# --- building hellos from parts -------------------------------------------------------------------


def u16(*values: int) -> bytes:
    return struct.pack(f">{len(values)}H", *values)


def vec8(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def vec16(data: bytes) -> bytes:
    return u16(len(data)) + data


def ext(etype: int, data: bytes = b"") -> bytes:
    return u16(etype) + vec16(data)


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    return ext(0, vec16(b"".join(bytes([name_type]) + vec16(n) for n in names)))


def alpn_ext(*protocols: bytes) -> bytes:
    return ext(16, vec16(b"".join(vec8(p) for p in protocols)))


def versions_ext(*versions: int) -> bytes:
    return ext(43, vec8(u16(*versions)))


def groups_ext(*groups: int) -> bytes:
    return ext(10, vec16(u16(*groups)))


def sigalgs_ext(*algs: int) -> bytes:
    return ext(13, vec16(u16(*algs)))


def point_formats_ext(*formats: int) -> bytes:
    return ext(11, vec8(bytes(formats)))


def key_share_ext(*shares: tuple[int, int]) -> bytes:
    """shares: (group, key length); key bytes are filler, the parser only reports groups."""
    return ext(51, vec16(b"".join(u16(g) + vec16(bytes([0x42]) * n) for g, n in shares)))


def grease_ech_ext(payload_len: int = 208) -> bytes:
    """Chrome's GREASE ECH: outer type, HPKE suite, config id, 32-byte enc, random payload."""
    body = b"\x00" + u16(0x0001, 0x0001) + b"\x7b" + vec16(b"\x11" * 32)
    return ext(0xFE0D, body + vec16(b"\x5a" * payload_len))


def client_hello(
    extensions: list[bytes] | None,
    cipher_suites: tuple[int, ...] = (0x1301, 0x1302, 0x1303),
    legacy_version: int = 0x0303,
    session_id: bytes = bytes(range(32)),
    compression: bytes = b"\x00",
    random: bytes = bytes(range(100, 132)),
) -> bytes:
    """One handshake message, header included (what QUIC CRYPTO frames carry)."""
    body = u16(legacy_version) + random + vec8(session_id) + vec16(u16(*cipher_suites))
    body += vec8(compression)
    if extensions is not None:
        body += vec16(b"".join(extensions))
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(message: bytes, sizes: list[int] | None = None, version: int = 0x0301) -> bytes:
    """Wrap a handshake message in handshake records, cut at the given fragment sizes."""
    out, pos = bytearray(), 0
    for size in sizes or []:
        out += b"\x16" + u16(version, size) + message[pos : pos + size]
        pos += size
    rest = message[pos:]
    if rest or not sizes:
        out += b"\x16" + u16(version, len(rest)) + rest
    return bytes(out)


CHROME_GREASE_CIPHER = 0x3A3A
CHROME_CIPHERS = (
    CHROME_GREASE_CIPHER,
    0x1301,
    0x1302,
    0x1303,
    0xC02B,
    0xC02F,
    0xC02C,
    0xC030,
    0xCCA9,
    0xCCA8,
    0xC013,
    0xC014,
    0x009C,
    0x009D,
    0x002F,
    0x0035,
)
CHROME_SIGALGS = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)


def chrome_extensions() -> list[bytes]:
    """Chrome 131-like set, in one of the orders its per-connection permutation produces."""
    return [
        ext(0x0A0A),  # GREASE first
        ext(0x0012),  # signed_certificate_timestamp
        key_share_ext((0x6A6A, 1), (0x11EC, 1216), (0x001D, 32)),
        ext(0x002D, vec8(b"\x01")),  # psk_key_exchange_modes
        ext(0x0017),  # extended_master_secret
        sigalgs_ext(*CHROME_SIGALGS),
        grease_ech_ext(),
        groups_ext(0x6A6A, 0x11EC, 0x001D, 0x0017, 0x0018),
        alpn_ext(b"h2", b"http/1.1"),
        sni_ext(b"pimeyes.com"),
        ext(0x001B, vec8(u16(0x0002))),  # compress_certificate: brotli
        versions_ext(0x8A8A, 0x0304, 0x0303),
        ext(0x0023),  # session_ticket
        ext(0x44CD, vec16(vec8(b"h2"))),  # application_settings
        point_formats_ext(0),
        ext(0xFF01, b"\x00"),  # renegotiation_info
        ext(0x0005, b"\x01\x00\x00\x00\x00"),  # status_request
        ext(0xDADA, b"\x00"),  # GREASE last
    ]


def chrome_hello(extensions: list[bytes] | None = None) -> bytes:
    return client_hello(
        chrome_extensions() if extensions is None else extensions, cipher_suites=CHROME_CIPHERS
    )


def firefox_stream() -> bytes:
    """Firefox-like first flight: padding (ext 21) grows the record to 512 bytes, 517 on wire."""
    exts = [
        sni_ext(b"facecheck.id"),
        ext(0x0017),
        ext(0xFF01, b"\x00"),
        groups_ext(0x001D, 0x0017, 0x0018, 0x0019, 0x0100, 0x0101),
        point_formats_ext(0),
        ext(0x0023),
        alpn_ext(b"h2", b"http/1.1"),
        ext(0x0005, b"\x01\x00\x00\x00\x00"),
        ext(0x0022, vec16(u16(0x0403, 0x0503, 0x0603, 0x0203))),  # delegated_credentials
        key_share_ext((0x001D, 32), (0x0017, 65)),
        versions_ext(0x0304, 0x0303),
        sigalgs_ext(0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601),
        ext(0x002D, vec8(b"\x01")),
        ext(0x001C, u16(0x4001)),  # record_size_limit
    ]
    ciphers = (
        0x1301,
        0x1303,
        0x1302,
        0xC02B,
        0xC02F,
        0xCCA9,
        0xCCA8,
        0xC02C,
        0xC030,
        0xC00A,
        0xC009,
        0xC013,
        0xC014,
        0x009C,
        0x009D,
        0x002F,
        0x0035,
    )
    unpadded = client_hello(exts, cipher_suites=ciphers)
    pad = 512 - len(unpadded) - 4
    return records(client_hello([*exts, ext(0x0015, bytes(pad))], cipher_suites=ciphers))


OPENSSL_TLS12_CIPHERS = (
    0xC02C,
    0xC030,
    0x009F,
    0xCCA9,
    0xCCA8,
    0xCCAA,
    0xC02B,
    0xC02F,
    0x009E,
    0xC024,
    0xC028,
    0x006B,
    0xC023,
    0xC027,
    0x0067,
    0xC00A,
    0xC014,
    0x0039,
    0xC009,
    0xC013,
    0x0033,
    0x009D,
    0x009C,
    0x003D,
    0x003C,
    0x0035,
    0x002F,
    0x00FF,
)


def openssl_tls12_hello() -> bytes:
    exts = [
        sni_ext(b"clearview.ai"),
        point_formats_ext(0, 1, 2),
        groups_ext(0x001D, 0x0017, 0x001E, 0x0019, 0x0018),
        ext(0x0023),
        ext(0x0016),  # encrypt_then_mac
        ext(0x0017),
        sigalgs_ext(0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0809, 0x080A, 0x080B, 0x0804),
    ]
    return client_hello(exts, cipher_suites=OPENSSL_TLS12_CIPHERS, session_id=b"")


def scan_done(stream: bytes, max_bytes: int = 16384) -> ClientHello:
    result = scan_client_hello(stream, max_bytes)
    assert result.status is HelloStatus.DONE, result
    assert result.hello is not None
    return result.hello


# --- synthetic browser-shaped hellos --------------------------------------------------------------


def test_chrome_like_hello_reports_every_field_in_wire_order_with_grease() -> None:
    message = chrome_hello()
    assert 1700 <= len(message) <= 1900  # the post-quantum key share makes it ~1.8 kB
    stream = records(message)
    hello = scan_done(stream)
    assert hello == parse_client_hello(message)
    assert hello.legacy_version == 0x0303
    assert hello.random == bytes(range(100, 132))
    assert hello.session_id == bytes(range(32))
    assert hello.cipher_suites == CHROME_CIPHERS
    assert hello.compression_methods == b"\x00"
    assert hello.extensions == (
        0x0A0A,
        0x0012,
        0x0033,
        0x002D,
        0x0017,
        0x000D,
        0xFE0D,
        0x000A,
        0x0010,
        0x0000,
        0x001B,
        0x002B,
        0x0023,
        0x44CD,
        0x000B,
        0xFF01,
        0x0005,
        0xDADA,
    )
    assert hello.server_name == "pimeyes.com"
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.supported_versions == (0x8A8A, 0x0304, 0x0303)
    assert hello.supported_groups == (0x6A6A, 0x11EC, 0x001D, 0x0017, 0x0018)
    assert hello.signature_algorithms == CHROME_SIGALGS
    assert hello.ec_point_formats == (0,)
    assert hello.key_share_groups == (0x6A6A, 0x11EC, 0x001D)
    assert hello.has_ech is True
    assert hello.handshake_length == len(message)


def test_sni_found_when_it_sits_after_the_key_share() -> None:
    exts = chrome_extensions()
    sni = exts.pop(9)
    exts.insert(len(exts) - 1, sni)  # after the 1.2 kB key share, just before the last GREASE
    hello = scan_done(records(chrome_hello(exts)))
    assert hello.extensions.index(0x0000) > hello.extensions.index(0x0033)
    assert hello.server_name == "pimeyes.com"


@settings(max_examples=60, deadline=None)
@given(st.permutations(chrome_extensions()))
def test_sni_found_when_extensions_are_permuted(exts: list[bytes]) -> None:
    hello = parse_client_hello(chrome_hello(exts))
    assert hello.server_name == "pimeyes.com"
    assert hello.extensions == tuple(struct.unpack_from(">H", e)[0] for e in exts)
    assert hello.key_share_groups == (0x6A6A, 0x11EC, 0x001D)


def test_firefox_like_padded_hello_is_517_bytes_on_the_wire() -> None:
    stream = firefox_stream()
    assert len(stream) == 517
    result = scan_client_hello(stream)
    assert result.status is HelloStatus.DONE
    assert result.needed == 517
    assert result.hello is not None
    assert result.hello.server_name == "facecheck.id"
    assert result.hello.extensions[-1] == 0x0015
    assert result.hello.key_share_groups == (0x001D, 0x0017)
    assert result.hello.has_ech is False


def test_openssl_tls12_hello_has_no_supported_versions_or_key_share() -> None:
    hello = scan_done(records(openssl_tls12_hello()))
    assert hello.server_name == "clearview.ai"
    assert hello.cipher_suites == OPENSSL_TLS12_CIPHERS
    assert hello.session_id == b""
    assert hello.ec_point_formats == (0, 1, 2)
    assert hello.supported_versions == ()
    assert hello.key_share_groups == ()
    assert hello.alpn == ()


def test_hello_without_extensions_block_is_accepted_as_pre_tls12_clients_send_it() -> None:
    hello = parse_client_hello(client_hello(None, legacy_version=0x0301))
    assert hello.extensions == ()
    assert hello.server_name is None
    assert hello.legacy_version == 0x0301


def test_empty_extensions_block_is_accepted() -> None:
    assert parse_client_hello(client_hello([])).extensions == ()


def test_unknown_extensions_are_listed_and_skipped() -> None:
    hello = parse_client_hello(client_hello([ext(0x1234, b"junk"), sni_ext(b"a.test")]))
    assert hello.extensions == (0x1234, 0x0000)
    assert hello.server_name == "a.test"


def test_server_name_is_none_without_the_extension() -> None:
    assert parse_client_hello(client_hello([alpn_ext(b"h2")])).server_name is None


def test_first_host_name_wins_and_other_name_types_are_skipped() -> None:
    entries = b"\x07" + vec16(b"not-a-host") + b"\x00" + vec16(b"first.test")
    entries += b"\x00" + vec16(b"second.test")
    hello = parse_client_hello(client_hello([ext(0, vec16(entries))]))
    assert hello.server_name == "first.test"


def test_non_printable_and_non_ascii_sni_bytes_are_escaped_reversibly() -> None:
    hello = parse_client_hello(client_hello([sni_ext(b"a\x00b\xffc\\x00.test")]))
    assert hello.server_name == "a\\x00b\\xffc\\x5cx00.test"


def test_alpn_names_are_escaped_like_the_server_name() -> None:
    hello = parse_client_hello(client_hello([alpn_ext(b"h2", b"\x0a\x0a")]))
    assert hello.alpn == ("h2", "\\x0a\\x0a")


def test_ech_is_reported_offered_even_when_it_is_grease() -> None:
    assert parse_client_hello(client_hello([grease_ech_ext(144)])).has_ech is True


def test_parse_accepts_memoryview_and_bytearray() -> None:
    message = chrome_hello()
    expected = parse_client_hello(message)
    assert parse_client_hello(memoryview(message)) == expected
    assert parse_client_hello(bytearray(message)) == expected
    assert scan_client_hello(memoryview(records(message))).hello == expected


def test_scan_keeps_no_reference_so_the_callers_bytearray_can_grow() -> None:
    buf = bytearray(records(chrome_hello()))
    scan_client_hello(buf)
    buf += b"more"
    broken = bytearray(records(client_hello([ext(1), ext(1)])))
    with pytest.raises(TlsParseError):
        scan_client_hello(broken)
    broken += b"more"


# --- real clients on loopback ---------------------------------------------------------------------

REAL = sorted(p.stem for p in FIXTURES.glob("*.hex"))


def load_real(name: str) -> tuple[bytes, dict[str, list[str]]]:
    flight = bytes.fromhex((FIXTURES / f"{name}.hex").read_text())
    wireshark = json.loads((FIXTURES / f"{name}.json").read_text())
    return flight, wireshark


def ints(values: list[str]) -> tuple[int, ...]:
    return tuple(int(v, 0) for v in values)


def test_real_fixtures_are_present() -> None:
    assert {
        "openssl_tls13",
        "openssl_tls12",
        "openssl_no_sni",
        "openssl_split_records",
        "gnutls",
        "curl",
        "python_ssl",
    } <= set(REAL)


@pytest.mark.parametrize("name", REAL)
def test_real_client_hello_matches_wiresharks_dissection(name: str) -> None:
    flight, ws = load_real(name)
    result = scan_client_hello(flight)
    assert result.status is HelloStatus.DONE
    assert result.needed == len(flight)  # these first flights are exactly the hello
    hello = result.hello
    assert hello is not None
    assert hello.server_name == (ws["server_name"][0] if ws["server_name"] else None)
    assert hello.cipher_suites == ints(ws["cipher_suites"])
    assert hello.extensions == ints(ws["extensions"])
    assert hello.alpn == tuple(ws["alpn"])
    assert hello.supported_versions == ints(ws["supported_versions"])
    assert hello.supported_groups == ints(ws["supported_groups"])
    assert hello.signature_algorithms == ints(ws["signature_algorithms"])
    assert hello.ec_point_formats == ints(ws["ec_point_formats"])
    assert hello.key_share_groups == ints(ws["key_share_groups"])
    assert hello.legacy_version == int(ws["legacy_version"][0], 0)
    assert hello.handshake_length == int(ws["handshake_length"][0]) + 4  # Wireshark: body only


def test_real_gnutls_hello_puts_sni_after_key_share() -> None:
    hello = scan_done(load_real("gnutls")[0])
    assert hello.extensions.index(0) > hello.extensions.index(51)
    assert hello.server_name == "x.test"


def test_real_openssl_hello_split_over_three_records() -> None:
    flight = load_real("openssl_split_records")[0]
    assert struct.unpack_from(">H", flight, 3)[0] == 512  # -max_send_frag 512 really split it
    hello = scan_done(flight)
    assert hello.server_name == "x.test"
    assert len(hello.alpn) == 16


def test_real_hello_without_sni() -> None:
    assert scan_done(load_real("openssl_no_sni")[0]).server_name is None


# --- record layer ---------------------------------------------------------------------------------


def test_hello_split_across_two_records() -> None:
    message = chrome_hello()
    split = records(message, [700])
    assert scan_done(split) == parse_client_hello(message)
    assert scan_client_hello(split).needed == len(split)


def test_hello_split_inside_its_handshake_header() -> None:
    message = chrome_hello()
    assert scan_done(records(message, [2, 1, 3])) == parse_client_hello(message)


def test_hello_in_one_byte_records_as_dpi_evasion_tools_send_it() -> None:
    message = firefox_stream()[5:]
    stream = records(message, [1] * len(message))
    assert len(stream) == 6 * len(message)
    assert scan_done(stream).server_name == "facecheck.id"


def test_empty_records_before_the_hello_are_skipped() -> None:
    stream = b"\x16\x03\x01\x00\x00" * 3 + records(openssl_tls12_hello())
    assert scan_done(stream).server_name == "clearview.ai"


def test_bytes_after_the_hello_are_ignored() -> None:
    stream = records(openssl_tls12_hello())
    result = scan_client_hello(stream + b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x10")
    assert result.status is HelloStatus.DONE
    assert result.needed == len(stream)


@pytest.mark.parametrize(
    "stream",
    [
        records(chrome_hello()),
        records(chrome_hello(), [700]),
        records(chrome_hello(), [1, 2, 1]),
        b"\x16\x03\x01\x00\x00" + records(openssl_tls12_hello(), [3]),
        firefox_stream(),
    ],
    ids=["one-record", "two-records", "split-header", "empty-record-first", "firefox"],
)
def test_every_proper_prefix_needs_more_and_needed_never_overshoots(stream: bytes) -> None:
    for cut in range(len(stream)):
        result = scan_client_hello(stream[:cut])
        assert result.status is HelloStatus.NEED_MORE, cut
        assert result.needed is not None
        assert cut < result.needed <= len(stream), cut
    assert scan_client_hello(stream).status is HelloStatus.DONE


@pytest.mark.parametrize("name", REAL)
def test_every_proper_prefix_of_a_real_hello_needs_more(name: str) -> None:
    flight = load_real(name)[0]
    for cut in range(len(flight)):
        assert scan_client_hello(flight[:cut]).status is HelloStatus.NEED_MORE, cut


def test_needed_is_exact_once_the_record_header_is_known() -> None:
    stream = records(chrome_hello())
    assert scan_client_hello(stream[:9]).needed == len(stream)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: pimeyes.com\r\n\r\n",
        b"CONNECT pimeyes.com:443 HTTP/1.1\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        # SSLv2-compatible ClientHello (2-byte header with the high bit set, msg type 1)
        bytes.fromhex("802e0103010015000000100100800700c0030080060040020080040080") + bytes(16),
        b"\x17\x03\x03\x00\x20" + bytes(32),  # application data, i.e. mid-stream
        b"\x16\x02\x00\x00\x04\x01\x00\x00\x00",  # record major version 2
        b"\x16\x03\x01\x41\x01\x01",  # record longer than 2**14 + 256
        records(b"\x02\x00\x00\x04" + bytes(4)),  # first handshake message is a ServerHello
    ],
    ids=[
        "http-get",
        "http-connect",
        "ssh",
        "sslv2-hello",
        "app-data",
        "major-2",
        "huge-record",
        "server-hello",
    ],
)
def test_not_tls(data: bytes) -> None:
    assert scan_client_hello(data).status is HelloStatus.NOT_TLS


def test_not_tls_is_decided_from_the_first_six_bytes() -> None:
    assert scan_client_hello(b"\x16\x03\x01\x02\x00\x02").status is HelloStatus.NOT_TLS
    assert scan_client_hello(b"GET").status is HelloStatus.NOT_TLS


def test_too_large_is_known_from_the_headers_alone() -> None:
    stream = records(chrome_hello())
    result = scan_client_hello(stream[:9], max_bytes=1000)
    assert result.status is HelloStatus.TOO_LARGE
    assert result.needed == len(stream)


def test_max_bytes_bounds_the_stream_bytes_the_hello_spans() -> None:
    stream = records(chrome_hello(), [600, 600])
    assert scan_client_hello(stream, max_bytes=len(stream)).status is HelloStatus.DONE
    assert scan_client_hello(stream, max_bytes=len(stream) - 1).status is HelloStatus.TOO_LARGE
    assert scan_client_hello(stream[:700], len(stream) - 1).status is HelloStatus.TOO_LARGE


def test_hello_claiming_16_mib_is_too_large() -> None:
    stream = b"\x16\x03\x01\x40\x00\x01\xff\xff\xff" + bytes(100)
    assert scan_client_hello(stream).status is HelloStatus.TOO_LARGE


def test_endless_empty_records_end_as_too_large() -> None:
    stream = b"\x16\x03\x01\x00\x00" * 10_000
    assert scan_client_hello(stream).status is HelloStatus.TOO_LARGE


def test_broken_record_after_the_hello_started_is_a_parse_error() -> None:
    message = chrome_hello()
    stream = records(message[:100]) + b"\x15\x03\x03\x00\x02\x02\x28"  # alert interleaved
    with pytest.raises(TlsParseError):
        scan_client_hello(stream)


# --- malformed complete hellos --------------------------------------------------------------------


def corrupt(message: bytes, at: int, new: bytes, drop: int = 0) -> bytes:
    """Replace bytes of a hello body and fix up the handshake length, so only the body is wrong."""
    body = message[4:at] + new + message[at + drop :]
    return b"\x01" + len(body).to_bytes(3, "big") + body


def ext_block_offset(message: bytes) -> int:
    sid = message[38]
    p = 39 + sid
    p += 2 + int.from_bytes(message[p : p + 2], "big")
    return p + 1 + message[p]


def test_duplicate_extension_is_rejected() -> None:
    with pytest.raises(TlsParseError, match="duplicate"):
        parse_client_hello(client_hello([sni_ext(b"a.test"), ext(23), sni_ext(b"b.test")]))


def test_duplicate_grease_extension_is_rejected() -> None:
    with pytest.raises(TlsParseError, match="duplicate"):
        parse_client_hello(client_hello([ext(0x0A0A), ext(0x0A0A, b"\x00")]))


@pytest.mark.parametrize("delta", [-1, 1, -4, 100])
def test_extensions_block_length_must_match_exactly(delta: int) -> None:
    message = chrome_hello()
    at = ext_block_offset(message)
    length = struct.unpack_from(">H", message, at)[0]
    with pytest.raises(TlsParseError):
        parse_client_hello(corrupt(message, at, u16(length + delta), drop=2))


def test_trailing_bytes_after_the_extensions_are_rejected() -> None:
    message = openssl_tls12_hello()
    with pytest.raises(TlsParseError):
        parse_client_hello(corrupt(message, len(message), b"\x00"))
    with pytest.raises(TlsParseError):  # and inside a stream, once the hello is complete
        scan_client_hello(records(corrupt(message, len(message), b"\x00\x00")))


def test_single_stray_byte_after_compression_methods_is_rejected() -> None:
    message = client_hello(None)
    parse_client_hello(message)
    with pytest.raises(TlsParseError):
        parse_client_hello(corrupt(message, len(message), b"\x07"))


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: client_hello([], session_id=bytes(33)), "session_id"),
        (lambda: client_hello([ext(0, b"\x00\x05\x00\x00\x01a")]), "server_name"),
        (lambda: client_hello([ext(0, b"\x00\x04\x00\x00\x05a")]), "server_name"),
        (lambda: client_hello([ext(0, b"\x00")]), "server_name"),
        (lambda: client_hello([ext(16, b"\x00\x03\x05h2")]), "alpn"),
        (lambda: client_hello([ext(43, b"\x03\x03\x04\x03")]), "supported_versions"),
        (lambda: client_hello([ext(43, b"\x04\x03\x04")]), "supported_versions"),
        (lambda: client_hello([ext(10, b"\x00\x03\x00\x1d\x00")]), "supported_groups"),
        (lambda: client_hello([ext(13, b"\x00\x04\x04\x03")]), "signature_algorithms"),
        (lambda: client_hello([ext(11, b"\x02\x00")]), "ec_point_formats"),
        (lambda: client_hello([ext(51, b"\x00\x06\x00\x1d\x00\x20\x00\x00")]), "key_share"),
        (lambda: client_hello([ext(51, b"\x00\x02\x00\x1d")]), "key_share"),
        (lambda: client_hello([ext(51, b"")]), "key_share"),
        (lambda: client_hello([u16(0, 10) + b"\x00\x01"]), "overruns"),
        (lambda: client_hello([b"\x00\x00\x00"]), "truncated"),
    ],
    ids=[
        "session-id-33",
        "sni-list-long",
        "sni-entry-overrun",
        "sni-1-byte",
        "alpn-overrun",
        "versions-odd",
        "versions-length",
        "groups-odd",
        "sigalgs-length",
        "point-formats",
        "key-share-overrun",
        "key-share-entry-short",
        "key-share-empty",
        "ext-overrun",
        "ext-header",
    ],
)
def test_malformed_extension_is_rejected(build: Callable[[], bytes], reason: str) -> None:
    with pytest.raises(TlsParseError, match=reason):
        scan_client_hello(records(build()))


def test_odd_cipher_suites_length_is_rejected() -> None:
    message = client_hello([])
    at = 4 + 2 + 32 + 1 + 32
    with pytest.raises(TlsParseError, match="cipher_suites"):
        parse_client_hello(corrupt(message, at, u16(5), drop=2))


def test_parse_demands_a_complete_client_hello_message() -> None:
    message = chrome_hello()
    with pytest.raises(TlsParseError):
        parse_client_hello(message[:-1])
    with pytest.raises(TlsParseError):
        parse_client_hello(message + b"\x00")
    with pytest.raises(TlsParseError):
        parse_client_hello(b"\x02" + message[1:])
    with pytest.raises(TlsParseError):
        parse_client_hello(b"\x01\x00")
    for cut in range(4, 45):  # truncated inside the fixed fields, header length adjusted
        with pytest.raises(TlsParseError):
            parse_client_hello(b"\x01" + (cut - 4).to_bytes(3, "big") + message[4:cut])


# --- cheap start check ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL)
def test_real_hello_starts_look_like_client_hellos(name: str) -> None:
    flight = load_real(name)[0]
    for cut in range(1, 12):
        assert looks_like_client_hello_start(flight[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GET / HTTP/1.1\r\n",
        b"\x17\x03\x03\x00\x20",
        b"\x16\x03\x05",
        b"\x16\x02",
        b"\x16\x03\x01\x02\x00\x02\x00",
        b"\x16\x03\x01\x41\x01",
        bytes.fromhex("802e0103"),
    ],
    ids=["empty", "http", "app-data", "minor-5", "major-2", "server-hello", "huge-record", "sslv2"],
)
def test_non_hello_starts_do_not_look_like_client_hellos(data: bytes) -> None:
    assert not looks_like_client_hello_start(data)


# --- fuzzing --------------------------------------------------------------------------------------

VALID_STREAMS = [
    records(chrome_hello()),
    records(chrome_hello(), [300, 2]),
    firefox_stream(),
    records(openssl_tls12_hello()),
    *(load_real(name)[0] for name in REAL),
]


def scan_or_parse_error(data: bytes, max_bytes: int = 16384) -> HelloScan | None:
    try:
        result = scan_client_hello(data, max_bytes)
    except TlsParseError:
        return None
    assert isinstance(result, HelloScan)
    if result.status is HelloStatus.DONE:
        assert isinstance(result.hello, ClientHello)
        assert result.needed is not None and result.needed <= len(data)
    return result


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_give_a_scan_result_or_parse_error(data: bytes) -> None:
    scan_or_parse_error(data)
    scan_or_parse_error(b"\x16\x03\x01" + data)
    scan_or_parse_error(b"\x16\x03\x01" + len(data).to_bytes(2, "big") + data)
    with contextlib.suppress(TlsParseError):
        parse_client_hello(data)
    looks_like_client_hello_start(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_behind_valid_headers_only_raise_parse_error(body: bytes) -> None:
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    with contextlib.suppress(TlsParseError):
        parse_client_hello(message)
    scan_or_parse_error(records(message))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID_STREAMS),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "set", "insert", "delete"]),
            st.integers(0, 1 << 16),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(64, 20000),
)
def test_mutated_valid_hellos_give_a_scan_result_or_parse_error(
    stream: bytes, edits: list[tuple[str, int, int]], max_bytes: int
) -> None:
    data = bytearray(stream)
    for op, where, value in edits:
        i = where % (len(data) + 1)
        if op == "insert":
            data[i:i] = bytes([value])
        elif i < len(data):
            if op == "flip":
                data[i] ^= 1 << (value & 7)
            elif op == "set":
                data[i] = value
            else:
                del data[i]
    scan_or_parse_error(bytes(data), max_bytes)
    scan_or_parse_error(bytes(data[:-1]), max_bytes)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=12),
    st.binary(max_size=40),
)
def test_arbitrary_extension_payloads_only_raise_parse_error(
    exts: list[tuple[int, bytes]], host: bytes
) -> None:
    types = [t for t, _ in exts]
    assume(0 not in types)
    message = client_hello([sni_ext(host), *(ext(t, d) for t, d in exts)])
    try:
        hello = parse_client_hello(message)
    except TlsParseError:
        return
    assert len(set(types)) == len(types)
    assert hello.extensions == (0, *types)
    assert hello.server_name is not None
    assert all(0x20 <= ord(c) < 0x7F for c in hello.server_name)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 400), max_size=8),
    st.sampled_from([chrome_hello(), openssl_tls12_hello(), firefox_stream()[5:]]),
)
def test_any_record_split_gives_the_same_hello(sizes: list[int], message: bytes) -> None:
    expected = parse_client_hello(message)
    total = 0
    cut: list[int] = []
    for size in sizes:
        if total + size >= len(message):
            break
        cut.append(size)
        total += size
    assert scan_done(records(message, cut)) == expected
