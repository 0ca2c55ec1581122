"""JA3 and JA4 fingerprints of a parsed TLS ClientHello.

A fingerprint names the TLS *stack* (browser, curl, a Python script, a vendor SDK) behind a
connection without reading anything encrypted, so an alert can say which client reached a
face-recognition service. Both functions are pure transforms of :class:`ClientHello`; they never
raise on a hello the parser produced, nor on any hello built from arbitrary field values.

JA3 (Salesforce) is kept because existing threat-intel lists are keyed on it, but it is the
secondary fingerprint: it hashes extensions in wire order, and Chromium (since 110) shuffles its
extension order on every connection, so one browser yields a new JA3 per connection. JA4 (FoxIO,
BSD-3-Clause) sorts ciphers and extensions before hashing, so it survives that shuffle, and its
readable first part (``t13d1516h2``) tells an analyst the essentials without a lookup. JA4 is the
primary fingerprint.

Rules follow the FoxIO JA4 specification (``technical_details/JA4.md``); where the specification
is silent or loose, the choice made matches Wireshark's built-in JA4 (newer than 4.0) and FoxIO's
own tools, so fingerprints agree with the databases built from them:

* GREASE values (RFC 8701: 0x0a0a, 0x1a1a, ... 0xfafa) are dropped from every list before
  counting, sorting or hashing, so a client's random GREASE choice never moves a fingerprint.
* The version is the numerically highest non-GREASE ``supported_versions`` entry, else the
  ClientHello's ``legacy_version`` (also when that extension holds nothing but GREASE); the
  record-layer version is never used.
* JA4_c is ``000000000000`` only when the string it would hash is empty (no extension left after
  dropping SNI and ALPN, and no signature algorithm); signature algorithms sit behind an ``_``
  only when there are any.
* The original-order forms (``ja4_o``/``ja4_ro``) keep SNI and ALPN in the extension list, as the
  specification's worked example does (FoxIO's Rust tool drops them there; Wireshark has no
  original-order form).
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from monitor.protocols.tls import EXT_ALPN, EXT_SERVER_NAME, ClientHello

__all__ = [
    "Transport",
    "is_grease",
    "ja3",
    "ja3_string",
    "ja4",
    "ja4_o",
    "ja4_r",
    "ja4_ro",
]

Transport = Literal["tcp", "quic", "dtls"]

_TRANSPORT_MARK: dict[str, str] = {"tcp": "t", "quic": "q", "dtls": "d"}

# JA4 version codes. The specification lists 0x0002 for SSL 2.0 (the SSLv2 hello's version
# field) and Wireshark agrees; FoxIO's tools use 0x0200. Both map to "s2"; they cannot collide.
_JA4_VERSIONS: dict[int, str] = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0200: "s2",
    0x0002: "s2",
    0x0100: "s1",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}

_EMPTY_HASH = "000000000000"
_EXCLUDED_FROM_JA4_C = frozenset({EXT_SERVER_NAME, EXT_ALPN})
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def is_grease(value: int) -> bool:
    """RFC 8701 reserves the 16 values 0x?a?a with both bytes equal in every u16 registry."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def _no_grease(values: tuple[int, ...]) -> list[int]:
    return [v for v in values if not is_grease(v)]


# --- JA3 ------------------------------------------------------------------------------------------


def ja3_string(hello: ClientHello) -> str:
    """``SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`` in decimal.

    Lists keep wire order (that order is what JA3 fingerprints) and are ``-`` joined; an absent
    list leaves its field empty, so a hello without extensions ends in ``,,,``. Point formats
    are single bytes and so cannot be GREASE.
    """
    return ",".join(
        (
            str(hello.legacy_version),
            "-".join(map(str, _no_grease(hello.cipher_suites))),
            "-".join(map(str, _no_grease(hello.extensions))),
            "-".join(map(str, _no_grease(hello.supported_groups))),
            "-".join(map(str, hello.ec_point_formats)),
        )
    )


def ja3(hello: ClientHello) -> str:
    """MD5 (lower-case hex) of :func:`ja3_string`, the form threat-intel lists carry."""
    return hashlib.md5(ja3_string(hello).encode("ascii"), usedforsecurity=False).hexdigest()


# --- JA4 ------------------------------------------------------------------------------------------


def ja4(hello: ClientHello, transport: Transport = "tcp") -> str:
    """JA4 fingerprint, e.g. ``t13d1516h2_8daaf6152771_e5627efa2ab1``.

    ``transport`` is what carried the hello (TCP, a QUIC CRYPTO frame, DTLS): the parsed hello
    cannot tell, and QUIC and TCP hellos of one browser must not share a fingerprint.
    """
    a, ciphers, exts = _ja4_parts(hello, transport, original_order=False)
    return f"{a}_{_hash12(ciphers)}_{_hash12(exts)}"


def ja4_r(hello: ClientHello, transport: Transport = "tcp") -> str:
    """JA4 before hashing (sorted lists in clear), to see why two fingerprints differ."""
    a, ciphers, exts = _ja4_parts(hello, transport, original_order=False)
    return f"{a}_{ciphers}_{exts}"


def ja4_o(hello: ClientHello, transport: Transport = "tcp") -> str:
    """JA4 over the lists in wire order (SNI and ALPN kept): tells apart clients that offer the
    same sets in different orders, which plain JA4 deliberately does not."""
    a, ciphers, exts = _ja4_parts(hello, transport, original_order=True)
    return f"{a}_{_hash12(ciphers)}_{_hash12(exts)}"


def ja4_ro(hello: ClientHello, transport: Transport = "tcp") -> str:
    """:func:`ja4_o` before hashing."""
    a, ciphers, exts = _ja4_parts(hello, transport, original_order=True)
    return f"{a}_{ciphers}_{exts}"


def _ja4_parts(
    hello: ClientHello, transport: Transport, *, original_order: bool
) -> tuple[str, str, str]:
    """JA4_a, then the raw (unhashed) cipher and extension strings of JA4_b and JA4_c."""
    try:
        mark = _TRANSPORT_MARK[transport]
    except KeyError:
        raise ValueError(f"transport must be tcp, quic or dtls, not {transport!r}") from None
    ciphers = _no_grease(hello.cipher_suites)
    extensions = _no_grease(hello.extensions)
    versions = _no_grease(hello.supported_versions)
    version = max(versions) if versions else hello.legacy_version
    first_alpn = hello.alpn[0] if hello.alpn else ""
    a = (
        f"{mark}{_JA4_VERSIONS.get(version, '00')}"
        f"{'d' if EXT_SERVER_NAME in extensions else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}"
        f"{_alpn_code(_unescape(first_alpn))}"
    )
    if original_order:
        listed = extensions
    else:
        ciphers = sorted(ciphers)
        listed = sorted(e for e in extensions if e not in _EXCLUDED_FROM_JA4_C)
    exts = ",".join(f"{e:04x}" for e in listed)
    sigs = ",".join(f"{s:04x}" for s in _no_grease(hello.signature_algorithms))
    if sigs:
        exts = f"{exts}_{sigs}"
    return a, ",".join(f"{c:04x}" for c in ciphers), exts


def _hash12(text: str) -> str:
    """First 12 hex digits of SHA-256; an empty list gets zeros so that "nothing offered" reads
    as such instead of as the hash of the empty string."""
    if not text:
        return _EMPTY_HASH
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def _alpn_code(value: bytes) -> str:
    """First and last byte of the first ALPN protocol as two characters.

    Both must be ASCII letters or digits to be used as they are; otherwise (one is a dot, a
    control byte, non-ASCII, ...) the first and last hex digits of the whole value are used, so
    the fingerprint stays two printable, unambiguous characters.
    """
    if not value:
        return "00"
    first, last = value[0], value[-1]
    if _alnum(first) and _alnum(last):
        return chr(first) + chr(last)
    digits = value.hex()
    return digits[0] + digits[-1]


def _alnum(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _unescape(text: str) -> bytes:
    """Undo the parser's reversible text form of an ALPN value (``\\xNN`` for every byte that is
    not printable ASCII, the backslash included) to get the wire bytes the ALPN rule is about.

    Anything that is not such an escape is taken as UTF-8 (``surrogatepass`` so that even a
    lone surrogate in a hand-built record cannot raise).
    """
    if "\\" not in text and text.isascii():
        return text.encode("ascii")
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        m = _ESCAPE.match(text, i)
        if m is not None:
            out.append(int(m[1], 16))
            i = m.end()
        else:
            out += text[i].encode("utf-8", "surrogatepass")
            i += 1
    return bytes(out)
