"""Community ID v1 flow hashes (https://github.com/corelight/community-id-spec).

SIEMs join records from different sensors (Zeek, Suricata, this one) on this value, so the
computation follows the specification to the byte: the endpoints are ordered so both directions
of a flow hash the same.
"""

from __future__ import annotations

import base64
import hashlib
import struct


def community_id(src: bytes, dst: bytes, proto: int, sport: int, dport: int, seed: int = 0) -> str:
    """Return ``1:<base64 sha1>`` for a TCP or UDP flow given packed addresses."""
    if (src, sport) > (dst, dport):
        src, dst, sport, dport = dst, src, dport, sport
    data = struct.pack("!H", seed) + src + dst + struct.pack("!BBHH", proto, 0, sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
