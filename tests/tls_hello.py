"""Builds realistic TLS ClientHello records for tests: Chrome-like (GREASE, ML-KEM key share,
ECH GREASE) so that a hello is ~1.8 kB and straddles two TCP segments."""

from __future__ import annotations

import struct


def _ext(etype: int, body: bytes) -> bytes:
    return struct.pack("!HH", etype, len(body)) + body


def _vec16(items: list[int]) -> bytes:
    return struct.pack("!H", 2 * len(items)) + b"".join(struct.pack("!H", i) for i in items)


def build_client_hello(
    sni: str | None,
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    mlkem: bool = True,
    ech: bool = True,
    sni_last: bool = True,
) -> bytes:
    """One TLS record holding one ClientHello; the SNI extension is placed last when asked."""
    exts: list[bytes] = [_ext(0x0A0A, b"")]  # GREASE
    exts.append(_ext(0x000A, _vec16([0x2A2A, 0x11EC, 0x001D, 0x0017])))
    exts.append(_ext(0x000B, b"\x01\x00"))
    exts.append(_ext(0x000D, _vec16([0x0403, 0x0804, 0x0401])))
    exts.append(_ext(0x002B, b"\x06\x3a\x3a\x03\x04\x03\x03"))
    if alpn:
        names = b"".join(bytes([len(a)]) + a.encode() for a in alpn)
        exts.append(_ext(0x0010, struct.pack("!H", len(names)) + names))
    shares = b""
    if mlkem:
        shares += struct.pack("!HH", 0x11EC, 1216) + bytes(range(256)) * 4 + b"\x11" * 192
    shares += struct.pack("!HH", 0x001D, 32) + b"\x22" * 32
    exts.append(_ext(0x0033, struct.pack("!H", len(shares)) + shares))
    if ech:
        exts.append(
            _ext(0xFE0D, b"\x00\x00\x01\x00\x01\x20" + b"\x33" * 32 + b"\x00\x90" + b"\x44" * 144)
        )
    if sni is not None:
        host = sni.encode()
        entry = b"\x00" + struct.pack("!H", len(host)) + host
        sni_ext = _ext(0x0000, struct.pack("!H", len(entry)) + entry)
        if sni_last:
            exts.append(sni_ext)
        else:
            exts.insert(1, sni_ext)
    ext_block = b"".join(exts)
    body = (
        b"\x03\x03"
        + b"\x01" * 32
        + b"\x20"
        + b"\x02" * 32
        + _vec16([0x3A3A, 0x1301, 0x1302, 0x1303, 0xC02B])
        + b"\x01\x00"
        + struct.pack("!H", len(ext_block))
        + ext_block
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake
