"""JA3/JA4 fingerprints: the published worked examples (FoxIO's JA4 specification, Salesforce's
JA3 README, FoxIO's own test captures, a browserleaks report of Chrome 143), real hellos from
openssl/gnutls/curl/python checked against Wireshark, and properties: no input makes them raise,
GREASE never moves them, and extension order moves JA3 but never JA4.

Why JA4 is the primary fingerprint: Chromium shuffles its extension order on every connection,
so one browser produces a new JA3 per connection while its JA4 stays put
(``test_ja3_changes_when_chromium_permutes_extensions_but_ja4_does_not``, and the same on a real
curl hello whose extensions are shuffled, ``test_ja4_stable_when_chromium_style_permutation...``).

The installed tshark (4.0) computes JA3 but not JA4 (later Wireshark releases do), so JA3
is compared with tshark itself and JA4 with a derivation from tshark's *dissection* of the same
bytes, written here independently of the module (string handling of tshark's field values, the
GREASE table spelled out), plus one real hello derived by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.protocols.fingerprint import is_grease, ja3, ja3_string, ja4, ja4_o, ja4_r, ja4_ro
from monitor.protocols.tls import ClientHello, parse_client_hello, scan_client_hello

HERE = Path(__file__).parent
TLS_FIXTURES = HERE / "fixtures" / "tls"  # another helper's real hellos, with tshark's dissection
FP_FIXTURES = HERE / "fixtures" / "fingerprint"  # ours: see capture.py there

GREASE = tuple(b << 8 | b for b in range(0x0A, 0x100, 0x10))

# --- building hellos from parts -------------------------------------------------------------------


def u16(*values: int) -> bytes:
    return struct.pack(f">{len(values)}H", *values)


def vec8(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def vec16(data: bytes) -> bytes:
    return u16(len(data)) + data


def ext(etype: int, body: bytes = b"") -> bytes:
    return u16(etype) + vec16(body)


def handshake(
    ciphers: list[int],
    extensions: list[bytes] | None,
    version: int = 0x0303,
) -> bytes:
    """A ClientHello handshake message; ``extensions=None`` omits the extensions block."""
    body = u16(version) + b"\x01" * 32 + vec8(b"\x02" * 32) + vec16(u16(*ciphers)) + b"\x01\x00"
    if extensions is not None:
        body += vec16(b"".join(extensions))
    return b"\x01" + len(body).to_bytes(3, "big") + body


def record(message: bytes) -> bytes:
    return b"\x16\x03\x01" + u16(len(message)) + message


def ext_body(
    etype: int,
    *,
    alpn: list[bytes],
    versions: list[int],
    groups: list[int],
    sigalgs: list[int],
) -> bytes:
    """A plausible body for each extension type the fingerprints read; others stay empty."""
    if etype == 0x0000:
        return vec16(b"\x00" + vec16(b"x.test"))
    if etype == 0x0010:
        return vec16(b"".join(vec8(p) for p in alpn))
    if etype == 0x002B:
        return vec8(u16(*versions))
    if etype == 0x000A:
        return vec16(u16(*groups))
    if etype == 0x000B:
        return vec8(b"\x00")
    if etype == 0x000D:
        return vec16(u16(*sigalgs))
    if etype == 0x0033:
        return vec16(u16(0x001D) + vec16(b"\x22" * 32))
    return b""


def hello_from_lists(
    ciphers: list[int],
    ext_types: list[int],
    sigalgs: list[int],
    *,
    alpn: tuple[bytes, ...] = (b"h2", b"http/1.1"),
    versions: tuple[int, ...] = (0x0304, 0x0303),
    groups: tuple[int, ...] = (0x001D, 0x0017, 0x0018),
) -> ClientHello:
    """Parse a hello built from the lists a fingerprint is made of, so that the example runs
    through the real parser, not just through the fingerprint code."""
    exts = [
        ext(
            t,
            ext_body(
                t, alpn=list(alpn), versions=list(versions), groups=list(groups), sigalgs=sigalgs
            ),
        )
        for t in ext_types
    ]
    return parse_client_hello(handshake(ciphers, exts))


def hexlist(text: str) -> list[int]:
    return [int(v, 16) for v in text.split(",")] if text else []


# Chrome 143 as reported by browserleaks (ja3_text and ja4_ro of one connection), with GREASE put
# back where Chrome puts it. Quoted in github.com/service0427/v2_cp_app, tls.md.
CHROME_CIPHERS = [4865, 4866, 4867, 49195, 49199, 49196, 49200, 52393, 52392, 49171, 49172]
CHROME_CIPHERS += [156, 157, 47, 53]
CHROME_EXTS = [45, 51, 16, 65037, 23, 17613, 0, 11, 10, 43, 65281, 35, 18, 5, 13, 27]
CHROME_GROUPS = [4588, 29, 23, 24]
CHROME_SIGALGS = hexlist("0403,0804,0401,0503,0805,0501,0806,0601")


# Chrome's GREASE ECH: outer type, HPKE suite, config id, 32-byte enc, random payload.
GREASE_ECH = b"\x00" + u16(0x0001, 0x0001) + b"\x7b" + vec16(b"\x11" * 32) + vec16(b"\x5a" * 144)


def chrome_like_hello(permutation: int = 0) -> bytes:
    """Chrome-shaped TLS record: GREASE first in ciphers, groups, versions and key shares, a
    GREASE extension first and last. ``permutation=0`` is the reported extension order; any other
    value shuffles the non-GREASE extensions (seeded) and picks other GREASE values, as Chromium
    does per connection."""
    rng = random.Random(permutation)
    g = [GREASE[(2 + i + 5 * permutation) % 16] for i in range(5)]
    order = list(CHROME_EXTS)
    if permutation:
        rng.shuffle(order)
    bodies = {
        0x0000: vec16(b"\x00" + vec16(b"x.test")),
        0x0005: b"\x01\x00\x00\x00\x00",
        0x000A: vec16(u16(g[1], *CHROME_GROUPS)),
        0x000B: vec8(b"\x00"),
        0x000D: vec16(u16(*CHROME_SIGALGS)),
        0x0010: vec16(vec8(b"h2") + vec8(b"http/1.1")),
        0x001B: vec8(u16(0x0002)),
        0x002B: vec8(u16(g[2], 0x0304, 0x0303)),
        0x002D: vec8(b"\x01"),
        0x0033: vec16(u16(g[3]) + vec16(b"\x00") + u16(0x001D) + vec16(b"\x22" * 32)),
        0x44CD: vec16(vec8(b"h2")),
        0xFE0D: GREASE_ECH,
        0xFF01: b"\x00",
    }
    exts = [ext(g[0])]
    exts += [ext(t, bodies.get(t, b"")) for t in order]
    exts.append(ext(g[4], b"\x00"))
    return record(handshake([g[0], *CHROME_CIPHERS], exts))


def hello_of_bytes(data: bytes) -> ClientHello:
    scan = scan_client_hello(data)
    assert scan.hello is not None
    return scan.hello


def hello_of(path: Path) -> ClientHello:
    return hello_of_bytes(bytes.fromhex(path.read_text().strip()))


# --- worked examples ------------------------------------------------------------------------------

SPEC_CIPHERS = "1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035"
SPEC_EXTS = "001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015"
SPEC_SIGALGS = "0403,0804,0401,0503,0805,0501,0806,0601"


def spec_hello(sigalgs: str = SPEC_SIGALGS) -> ClientHello:
    return hello_from_lists(hexlist(SPEC_CIPHERS), hexlist(SPEC_EXTS), hexlist(sigalgs))


def test_ja4_reproduces_the_specification_example() -> None:
    """FoxIO JA4.md, sections "Example" and "Raw Output"."""
    hello = spec_hello()
    assert ja4(hello) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert ja4_r(hello) == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_"
        "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
        "0403,0804,0401,0503,0805,0501,0806,0601"
    )
    assert ja4_o(hello) == "t13d1516h2_acb858a92679_18f69afefd3d"
    assert ja4_ro(hello) == f"t13d1516h2_{SPEC_CIPHERS}_{SPEC_EXTS}_{SPEC_SIGALGS}"


def test_ja4_c_has_no_underscore_when_there_are_no_signature_algorithms() -> None:
    """JA4.md: "If there are no signature algorithms in the hello packet, then the string ends
    without an underscore and is hashed" (its example hash: 6d807ffa2a79)."""
    hello = spec_hello(sigalgs="")
    assert hello.signature_algorithms == ()
    assert ja4(hello) == "t13d1516h2_8daaf6152771_6d807ffa2a79"
    assert ja4_r(hello).count("_") == 2
    assert ja4_r(hello).endswith(
        "_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
    )


@pytest.mark.parametrize(
    ("ciphers", "exts", "sigalgs", "want_ja4", "want_ja4_o"),
    [
        pytest.param(  # Chrome with GREASE among its signature algorithms
            "1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035",
            "fe0d,0010,0017,0033,44cd,ff01,000a,000d,0023,002b,000b,ca34,002d,0000,0005,001b,0012",
            "5a5a,0904,0905,0906,0403,0804,0401,0503,0805,0501,0806,0601",
            "t13d1517h2_8daaf6152771_cb7bf5808d99",
            "t13d1517h2_acb858a92679_88bf22a3e888",
            id="sigalg-grease.pcapng",
        ),
        pytest.param(
            "1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035,000a",
            "0000,0017,ff01,000a,000b,0023,0010,0005,000d,0012,0033,002d,002b,001b,0015",
            "0403,0804,0401,0503,0805,0501,0806,0601,0201",
            "t13d1615h2_46e7e9700bed_45f260be83e2",
            "t13d1615h2_45f31bb0a5cc_b0e5d31d5128",
            id="badcurveball.pcap",
        ),
    ],
)
def test_ja4_matches_foxio_test_captures(
    ciphers: str, exts: str, sigalgs: str, want_ja4: str, want_ja4_o: str
) -> None:
    """Expected values from FoxIO's repository, python/test/testdata/<capture>.json (JA4.1 and
    JA4_o.1); the lists are read back from that file's JA4_ro.1."""
    hello = hello_from_lists(hexlist(ciphers), hexlist(exts), hexlist(sigalgs))
    assert ja4(hello) == want_ja4
    assert ja4_o(hello) == want_ja4_o


@pytest.mark.parametrize(
    ("text", "md5"),
    [
        (
            "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0",
            "ada70206e40642a3e4461f35503241d5",
        ),
        ("769,4-5-10-9-100-98-3-6-19-18-99,,,", "de350869b8c85de67a350c8d186f11e6"),
    ],
)
def test_ja3_reproduces_the_salesforce_readme_examples(text: str, md5: str) -> None:
    version, ciphers, exts, groups, formats = text.split(",")
    ints = [int(v) for v in ciphers.split("-")]
    if exts:
        ext_types = [int(v) for v in exts.split("-")]
        hello = hello_from_lists(ints, ext_types, [], groups=tuple(map(int, groups.split("-"))))
        assert hello.ec_point_formats == tuple(map(int, formats.split("-")))
    else:
        hello = parse_client_hello(handshake(ints, None, version=int(version)))
    hello = dataclasses.replace(hello, legacy_version=int(version))
    assert ja3_string(hello) == text
    assert ja3(hello) == md5


def test_chrome_hello_reproduces_browserleaks_ja3_and_ja4() -> None:
    """One Chrome 143 connection as browserleaks reported it: ja3_hash, ja4 and ja4_o."""
    hello = hello_of_bytes(chrome_like_hello(0))
    assert ja3(hello) == "98487aa16281980e7d1120d399efb6a4"
    assert ja4(hello) == "t13d1516h2_8daaf6152771_d8a2da3f94cd"
    assert ja4_o(hello) == "t13d1516h2_acb858a92679_f96a17c57971"


def test_ja3_changes_when_chromium_permutes_extensions_but_ja4_does_not() -> None:
    first, second = hello_of_bytes(chrome_like_hello(0)), hello_of_bytes(chrome_like_hello(1))
    assert first.extensions != second.extensions
    assert ja3(first) != ja3(second)
    assert ja4(first) == ja4(second)
    assert ja4_r(first) == ja4_r(second)
    assert ja4_o(first) != ja4_o(second)  # the original-order form is meant to see the order


# --- real hellos against Wireshark --------------------------------------------------------------


def real_hellos() -> list[tuple[str, Path, dict[str, list[str]]]]:
    """(name, hex file, tshark dissection) for every captured hello of both fixture folders."""
    cases = [
        (p.stem, p, json.loads(p.with_suffix(".json").read_text()))
        for p in TLS_FIXTURES.glob("*.hex")
    ]
    stored = FP_FIXTURES / "tshark.json"  # absent only while capture.py bootstraps it
    ours = json.loads(stored.read_text()) if stored.exists() else {}
    cases += [(name, FP_FIXTURES / f"{name}.hex", d) for name, d in ours.items()]
    return sorted(cases, key=lambda c: c[0])


REAL = real_hellos()


@pytest.mark.parametrize(("name", "path", "tshark"), REAL, ids=[c[0] for c in REAL])
def test_ja3_matches_tshark_on_real_hellos(name: str, path: Path, tshark: dict) -> None:
    hello = hello_of(path)
    assert ja3_string(hello) == tshark["ja3_full"][0]
    if "ja3" in tshark:
        assert ja3(hello) == tshark["ja3"][0]


TSHARK_GREASE = {f"0x{b:02x}{b:02x}" for b in range(0x0A, 0x100, 0x10)}
TSHARK_VERSIONS = {"0x0304": "13", "0x0303": "12", "0x0302": "11", "0x0301": "10", "0x0300": "s3"}


def ja4_r_from_tshark(t: dict[str, list[str]]) -> str:
    """JA4_r computed from tshark's field values, the way FoxIO's python/ja4.py reads them
    (tshark strings such as "0x1301", extension types in decimal), sharing no code with the
    module under test."""
    assert "50" not in t["extensions"], (
        "tshark's sig_hash_alg would mix in signature_algorithms_cert"
    )
    ciphers = [c[2:] for c in t["cipher_suites"] if c not in TSHARK_GREASE]
    exts = [f"{int(e):04x}" for e in t["extensions"] if f"0x{int(e):04x}" not in TSHARK_GREASE]
    versions = [v for v in t["supported_versions"] if v not in TSHARK_GREASE]
    version = sorted(versions)[-1] if versions else t["legacy_version"][0]
    alpn = t["alpn"][0] if t["alpn"] else ""
    if not alpn:
        alpn_code = "00"
    elif alpn[0].isascii() and alpn[0].isalnum() and alpn[-1].isascii() and alpn[-1].isalnum():
        alpn_code = alpn[0] + alpn[-1]
    else:
        alpn_hex = alpn.encode().hex()
        alpn_code = alpn_hex[0] + alpn_hex[-1]
    a = "t" + TSHARK_VERSIONS.get(version, "00") + ("d" if "0000" in exts else "i")
    a += f"{len(ciphers):02d}{len(exts):02d}{alpn_code}"
    c = ",".join(sorted(e for e in exts if e not in ("0000", "0010")))
    sigs = [s[2:] for s in t["signature_algorithms"] if s not in TSHARK_GREASE]
    if sigs:
        c += "_" + ",".join(sigs)
    return f"{a}_{','.join(sorted(ciphers))}_{c}"


@pytest.mark.parametrize(("name", "path", "tshark"), REAL, ids=[c[0] for c in REAL])
def test_ja4_matches_derivation_from_tshark_dissection(name: str, path: Path, tshark: dict) -> None:
    hello = hello_of(path)
    raw = ja4_r_from_tshark(tshark)
    assert ja4_r(hello) == raw
    a, b, c = raw.split("_", 2)
    want_b = hashlib.sha256(b.encode()).hexdigest()[:12] if b else "000000000000"
    want_c = hashlib.sha256(c.encode()).hexdigest()[:12] if c else "000000000000"
    assert ja4(hello) == f"{a}_{want_b}_{want_c}"


def test_ja4_of_openssl_tls13_hello_derived_by_hand() -> None:
    """openssl s_client 3.0 with -servername x.test -alpn h2,http/1.1 (tests/fixtures/tls).

    a: t (TCP), 13 (supported_versions 0304,0303,0302,0301: highest is 0304), d (SNI x.test),
       31 ciphers (SCSV 00ff counts), 11 extensions (0,11,10,35,16,22,23,13,43,45,51), h2 (first
       ALPN value "h2": first and last character).
    b: sha256 of the 31 ciphers sorted as 4-digit hex, first 12 hex digits.
    c: sha256 of the 9 extensions left after dropping 0000 (SNI) and 0010 (ALPN), sorted,
       then "_" and the 20 signature algorithms in wire order, first 12 hex digits.
    """
    ciphers = (
        "002f,0033,0035,0039,003c,003d,0067,006b,009c,009d,009e,009f,00ff,1301,1302,1303,"
        "c009,c00a,c013,c014,c023,c024,c027,c028,c02b,c02c,c02f,c030,cca8,cca9,ccaa"
    )
    exts = (
        "000a,000b,000d,0016,0017,0023,002b,002d,0033_0403,0503,0603,0807,0808,0809,080a,080b,"
        "0804,0805,0806,0401,0501,0601,0303,0301,0302,0402,0502,0602"
    )
    assert hashlib.sha256(ciphers.encode()).hexdigest()[:12] == "e8f1e7e78f70"
    assert hashlib.sha256(exts.encode()).hexdigest()[:12] == "1f22a2ca17c4"
    hello = hello_of(TLS_FIXTURES / "openssl_tls13.hex")
    assert ja4_r(hello) == f"t13d3111h2_{ciphers}_{exts}"
    assert ja4(hello) == "t13d3111h2_e8f1e7e78f70_1f22a2ca17c4"


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("openssl_tls10", r"t10d\d{4}00"),  # no supported_versions: legacy_version 0x0301
        ("openssl_alpn_one_char", r"t13i\d{4}xx"),  # "x" is both first and last character
        ("openssl_alpn_not_alnum", r"t13i\d{4}6d"),  # "h3-" ends in "-": hex 68332d -> 6, d
        ("curl_http11", r"t13d\d{4}h1"),
        ("gnutls_alpn", r"t13d\d{4}h2"),
        ("python_no_sni_no_alpn", r"t13i\d{4}00"),
    ],
)
def test_ja4_a_of_real_hellos_shows_version_sni_and_alpn(name: str, pattern: str) -> None:
    assert re.fullmatch(pattern, ja4(hello_of(FP_FIXTURES / f"{name}.hex")).split("_")[0])


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_ja3_matches_tshark_run_now_on_the_capture() -> None:
    """Ask the installed tshark again rather than trusting the stored JSON alone."""
    out = subprocess.run(
        [
            *("tshark", "-r", str(FP_FIXTURES / "hellos.pcap"), "-Y", "tls.handshake.type == 1"),
            *("-T", "fields", "-e", "tcp.stream", "-e", "tls.handshake.ja3"),
            *("-e", "tls.handshake.ja3_full"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    by_stream = {int(s): (h, f) for s, h, f in (line.split("\t") for line in out.splitlines())}
    stored = json.loads((FP_FIXTURES / "tshark.json").read_text())
    assert len(by_stream) == len(stored)
    for name, t in stored.items():
        hello = hello_of(FP_FIXTURES / f"{name}.hex")
        assert (ja3(hello), ja3_string(hello)) == by_stream[t["tcp.stream"]], name


def permute_extensions(message: bytes, seed: int) -> bytes:
    """The same handshake message with its extension blocks shuffled, lengths untouched."""
    p = 4 + 2 + 32
    p += 1 + message[p]
    p += 2 + int.from_bytes(message[p : p + 2], "big")
    p += 1 + message[p]
    p += 2
    blocks = []
    q = p
    while q < len(message):
        n = 4 + int.from_bytes(message[q + 2 : q + 4], "big")
        blocks.append(message[q : q + n])
        q += n
    random.Random(seed).shuffle(blocks)
    return message[:p] + b"".join(blocks)


@pytest.mark.parametrize("seed", range(5))
def test_ja4_stable_when_chromium_style_permutation_is_applied_to_a_real_hello(seed: int) -> None:
    data = bytes.fromhex((TLS_FIXTURES / "curl.hex").read_text().strip())
    message = data[5 : 5 + 4 + int.from_bytes(data[6:9], "big")]
    original = parse_client_hello(message)
    shuffled = parse_client_hello(permute_extensions(message, seed))
    assert sorted(shuffled.extensions) == sorted(original.extensions)
    assert ja4(shuffled) == ja4(original)
    assert (ja3(shuffled) == ja3(original)) == (shuffled.extensions == original.extensions)


# --- rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpn", "code"),
    [
        ((b"h2", b"http/1.1"), "h2"),
        ((b"http/1.1",), "h1"),
        ((b"a",), "aa"),  # a single character is both first and last
        ((b"\xab",), "ab"),  # JA4.md's examples of the hex rule, verbatim
        ((b"\xab\xcd",), "ad"),
        ((b"0\xab",), "3b"),
        ((b"01\xab\xcd",), "3d"),
        ((b"0\xab\xcd1",), "01"),
        ((b"\\x41",), "51"),  # a literal backslash is a byte like any other, not an escape
        ((b"H2O",), "HO"),
        ((b"", b"h2"), "00"),  # the first value is empty
        ((), "00"),  # no ALPN extension at all
    ],
)
def test_ja4_alpn_characters_follow_the_specification(alpn: tuple[bytes, ...], code: str) -> None:
    types = [0x0000, 0x0010, 0x002B] if alpn else [0x0000, 0x002B]
    hello = hello_from_lists([0x1301], types, [], alpn=alpn)
    assert ja4(hello)[8:10] == code


@pytest.mark.parametrize(
    ("versions", "legacy", "code"),
    [
        ((0x0304, 0x0303), 0x0303, "13"),
        ((0x0303, 0x0304), 0x0303, "13"),  # highest, not first
        ((0x3A3A, 0x0304), 0x0303, "13"),
        ((), 0x0303, "12"),
        ((), 0x0302, "11"),
        ((), 0x0301, "10"),
        ((), 0x0300, "s3"),
        ((), 0x0002, "s2"),
        ((), 0x0100, "s1"),
        ((0x0A0A,), 0x0303, "12"),  # only GREASE: fall back to legacy_version
        ((0xFEFC,), 0xFEFD, "d3"),
        ((), 0xFEFD, "d2"),
        ((), 0xFEFF, "d1"),
        ((0x7F1C,), 0x0303, "00"),  # TLS 1.3 draft 28 has no JA4 code
        ((), 0x1234, "00"),
    ],
)
def test_ja4_version_is_highest_supported_version_else_legacy(
    versions: tuple[int, ...], legacy: int, code: str
) -> None:
    hello = dataclasses.replace(spec_hello(), supported_versions=versions, legacy_version=legacy)
    assert ja4(hello)[1:3] == code


def test_ja4_sni_flag_is_about_the_extension_not_the_name() -> None:
    hello = spec_hello()
    assert ja4(hello)[3] == "d"
    assert ja4(dataclasses.replace(hello, server_name=None))[3] == "d"
    no_sni = tuple(e for e in hello.extensions if e != 0)
    assert ja4(dataclasses.replace(hello, extensions=no_sni))[3] == "i"


def test_ja4_counts_are_capped_at_99() -> None:
    hello = parse_client_hello(handshake(list(range(1, 121)), [ext(t) for t in range(100, 215)]))
    assert ja4(hello)[4:8] == "9999"
    assert ja4_r(hello).count(",") > 200  # the lists themselves are not capped


def test_hello_without_ciphers_or_extensions_gets_zero_hashes() -> None:
    hello = parse_client_hello(handshake([], None, version=0x0301))
    assert ja4(hello) == "t10i000000_000000000000_000000000000"
    assert ja4_r(hello) == "t10i000000__"
    assert ja3_string(hello) == "769,,,,"


def test_ja4_marks_quic_and_dtls_transports() -> None:
    hello = spec_hello()
    assert ja4(hello, "quic").startswith("q13d")
    assert ja4(hello, "dtls").startswith("d13d")
    assert ja4(hello, "tcp") == ja4(hello)
    with pytest.raises(ValueError, match="transport"):
        ja4(hello, "udp")  # type: ignore[arg-type]


def test_is_grease_accepts_exactly_the_rfc8701_values() -> None:
    assert [v for v in range(0x10000) if is_grease(v)] == list(GREASE)


# --- properties -----------------------------------------------------------------------------------

U16 = st.integers(0, 0xFFFF)
u16_lists = st.lists(U16, max_size=120).map(tuple)
alpn_texts = st.one_of(
    st.text(max_size=12), st.from_regex(r"(\\x[0-9a-f]{2}|[a-z\\])*", fullmatch=True)
)

hellos = st.builds(
    ClientHello,
    legacy_version=U16,
    random=st.binary(max_size=32),
    session_id=st.binary(max_size=32),
    cipher_suites=u16_lists,
    compression_methods=st.binary(max_size=4),
    extensions=u16_lists,
    server_name=st.none() | st.text(max_size=20),
    alpn=st.lists(alpn_texts, max_size=3).map(tuple),
    supported_versions=st.lists(U16, max_size=6).map(tuple),
    supported_groups=u16_lists,
    signature_algorithms=u16_lists,
    ec_point_formats=st.lists(st.integers(0, 255), max_size=4).map(tuple),
    key_share_groups=st.lists(U16, max_size=4).map(tuple),
    has_ech=st.booleans(),
    handshake_length=st.integers(0, 2**24),
)

JA4_FORMAT = re.compile(r"[tqd][0-9ds]{2}[di]\d{4}[0-9A-Za-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}")
TRANSPORTS = st.sampled_from(["tcp", "quic", "dtls"])


@given(hellos, TRANSPORTS)
@settings(max_examples=400)
def test_fingerprints_never_raise_and_keep_their_shape(hello: ClientHello, transport: str) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", ja3(hello))
    assert ja3_string(hello).count(",") == 4
    assert JA4_FORMAT.fullmatch(ja4(hello, transport))  # type: ignore[arg-type]
    assert JA4_FORMAT.fullmatch(ja4_o(hello, transport))  # type: ignore[arg-type]
    assert ja4_r(hello, transport).startswith(ja4(hello, transport)[:10])  # type: ignore[arg-type]
    ja4_ro(hello, transport)  # type: ignore[arg-type]


def with_grease(values: tuple[int, ...], data: st.DataObject) -> tuple[int, ...]:
    out = list(values)
    for _ in range(data.draw(st.integers(0, 3))):
        out.insert(data.draw(st.integers(0, len(out))), data.draw(st.sampled_from(GREASE)))
    return tuple(out)


@given(hellos, st.data())
def test_grease_anywhere_never_changes_a_fingerprint(
    hello: ClientHello, data: st.DataObject
) -> None:
    greased = dataclasses.replace(
        hello,
        cipher_suites=with_grease(hello.cipher_suites, data),
        extensions=with_grease(hello.extensions, data),
        supported_versions=with_grease(hello.supported_versions, data),
        supported_groups=with_grease(hello.supported_groups, data),
        signature_algorithms=with_grease(hello.signature_algorithms, data),
        key_share_groups=with_grease(hello.key_share_groups, data),
    )
    for fp in (ja3_string, ja3, ja4, ja4_r, ja4_o, ja4_ro):
        assert fp(greased) == fp(hello)


@given(hellos, st.data())
def test_extension_order_moves_ja3_but_never_ja4(hello: ClientHello, data: st.DataObject) -> None:
    permuted = dataclasses.replace(
        hello, extensions=tuple(data.draw(st.permutations(hello.extensions)))
    )
    assert ja4(permuted) == ja4(hello)
    assert ja4_r(permuted) == ja4_r(hello)
    order_changed = [e for e in permuted.extensions if not is_grease(e)] != [
        e for e in hello.extensions if not is_grease(e)
    ]
    assert (ja3(permuted) != ja3(hello)) == order_changed


@given(st.binary(min_size=1, max_size=40))
def test_alpn_rule_sees_wire_bytes_through_the_parsers_escaping(value: bytes) -> None:
    """The parser turns unprintable ALPN bytes into ``\\xNN`` text; JA4 must judge the bytes."""
    hello = hello_from_lists([0x1301], [0x0010], [], alpn=(value,))
    first, last = value[0], value[-1]
    alnum = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    if first in alnum and last in alnum:
        want = chr(first) + chr(last)
    else:
        want = f"{first:02x}"[0] + f"{last:02x}"[1]
    assert ja4(hello)[8:10] == want
