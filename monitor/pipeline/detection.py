"""The record the pipeline produces for each vendor access it sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monitor.blocklist.model import Match


@dataclass(slots=True)
class Detection:
    """One vendor access, tied to the packet that completed the evidence.

    ``details`` holds the protocol's own ECS fragment (``dns``, ``tls``, ``url``/``http``), built
    by the handler that understood the protocol, so the event writer needs no protocol knowledge.
    """

    ts: int  # packet time, ns since the epoch
    evidence: str  # dns-query | dns-cname | tls-sni | http-host | http-connect
    protocol: str  # dns | tls | http
    transport: str  # udp | tcp
    version: int  # IP version
    src: bytes
    dst: bytes
    sport: int
    dport: int
    match: Match
    details: dict[str, Any] = field(default_factory=dict)
    action: str = "vendor-access"  # or a blind-spot signal: encrypted-dns, ech-observed
    vlan: int | None = None
    tunnel: str | None = None
