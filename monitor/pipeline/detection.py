"""The record the pipeline produces for each vendor access it sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monitor.blocklist.model import Match

if TYPE_CHECKING:
    from monitor.attribution.resolve import Attribution


@dataclass(slots=True)
class Detection:
    """One vendor access, tied to the packet that completed the evidence.

    ``details`` holds the protocol's own ECS fragment (``dns``, ``tls``, ``url``/``http``), built
    by the handler that understood the protocol, so the event writer needs no protocol knowledge.
    ``src`` is always the client: for a detection made from a DNS response it is the
    response's destination. ``attribution`` is who was behind ``src`` at ``ts`` (None when the
    engine has no attributor, or the identity store failed); ``smac`` the client frame's
    source MAC when the evidence packet came from the client on Ethernet.
    """

    ts: int  # packet time, ns since the epoch
    evidence: str  # dns-query | dns-cname | tls-sni | quic-sni | http-host | ... | ip-resolved
    protocol: str  # dns | tls | quic | http | tcp
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
    smac: bytes | None = None
    attribution: Attribution | None = None
