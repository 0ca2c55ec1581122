"""Builds protected QUIC client Initials for tests, as Chromium sends them: the hello cut into
small CRYPTO frames, shuffled, with PING/PADDING between, over several Initial packets."""

from __future__ import annotations

import os
import random

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from monitor.protocols.quic import QUIC_V1, InitialKeys, initial_client_keys
from tests.tls_hello import build_client_hello


def varint(v: int) -> bytes:
    for size, prefix in ((1, 0), (2, 0x4000), (4, 0x80000000), (8, 0xC000000000000000)):
        if v < 1 << (8 * size - 2):
            return (prefix | v).to_bytes(size, "big")
    raise ValueError(v)


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def protect(
    keys: InitialKeys,
    dcid: bytes,
    payload: bytes,
    pn: int = 0,
    scid: bytes = b"",
    token: bytes = b"",
    pn_len: int | None = None,
    size: int | None = 1200,
) -> bytes:
    """Seal a client Initial with the test's own AEAD and header-protection code (the keys come
    from initial_client_keys, which the RFC vectors pin down). Pads to ``size`` bytes."""
    pn_len = pn_len or (1 if pn < 0x80 else 2 if pn < 0x8000 else 4)
    type_bits = 0 if keys.version == QUIC_V1 else 1
    head = (
        bytes([0xC0 | type_bits << 4 | (pn_len - 1)])
        + keys.version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + varint(len(token))
        + token
    )
    if size is not None:
        payload += bytes(max(0, size - len(head) - 2 - pn_len - len(payload) - 16))
    payload += bytes(max(0, 4 - pn_len - len(payload)))  # room for the 16-byte sample
    header = (
        head
        + (0x4000 | (pn_len + len(payload) + 16)).to_bytes(2, "big")
        + (pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")
    )
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(keys.key).encrypt(nonce, payload, header)
    sample = sealed[4 - pn_len : 20 - pn_len]
    mask = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor().update(sample)
    pn_off = len(header) - pn_len
    masked_pn = bytes(b ^ m for b, m in zip(header[pn_off:], mask[1:], strict=False))
    return bytes([header[0] ^ (mask[0] & 0x0F)]) + header[1:pn_off] + masked_pn + sealed


def hello_message(sni: str = "app.clearview.ai", **options: object) -> bytes:
    """A Chrome-shaped ClientHello handshake message (~1.8 kB with its ML-KEM share)."""
    return build_client_hello(sni, alpn=("h3",), **options)[5:]  # type: ignore[arg-type]


def split_initials(
    hello: bytes, keys: InitialKeys, dcid: bytes, rng: random.Random, per_packet: int = 3
) -> list[bytes]:
    """Chromium-style: small CRYPTO pieces, shuffled, PING/PADDING between, several Initials."""
    pieces, pos = [], 0
    while pos < len(hello):
        n = rng.randint(40, 400)
        pieces.append(crypto_frame(pos, hello[pos : pos + n]))
        pos += n
    rng.shuffle(pieces)
    packets = []
    for pn, start in enumerate(range(0, len(pieces), per_packet)):
        frames = b"".join(
            (b"\x01" if rng.random() < 0.5 else bytes(rng.randint(1, 9))) + piece
            for piece in pieces[start : start + per_packet]
        )
        packets.append(protect(keys, dcid, frames, pn=pn, size=max(1250, len(frames) + 60)))
    return packets


def chrome_like_initials(sni: str, seed: int = 1, version: int = QUIC_V1) -> list[bytes]:
    """The UDP payloads of one client's Initials carrying a ~1.8 kB hello for ``sni``."""
    rng = random.Random(seed)
    dcid = rng.randbytes(8) if seed else os.urandom(8)
    keys = initial_client_keys(dcid, version)
    return split_initials(hello_message(sni), keys, dcid, rng)
