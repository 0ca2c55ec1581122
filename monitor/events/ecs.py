"""Detections as ECS-shaped documents (nested objects), the shape SIEMs ingest without mapping.

Fields outside ECS live under ``match`` (the project's namespace) or extend an ECS object where
the value plainly belongs there (``tls.client.alpn``, ``tls.client.ech_offered``); the README
lists them. Every value is derived from the packet and the blocklist, never from the wall clock,
so replaying a capture twice gives the same documents.
"""

from __future__ import annotations

import hashlib
import json
import socket
from datetime import UTC, datetime
from typing import Any

from monitor.attribution.resolve import to_ecs_fields
from monitor.blocklist.model import SEVERITY_NUMBERS
from monitor.events.community_id import community_id
from monitor.pipeline.detection import Detection

ECS_VERSION = "8.11.0"
_TRANSPORT_NUMBERS = {"tcp": 6, "udp": 17}


def rfc3339_us(ts_ns: int) -> str:
    """RFC 3339 UTC with microseconds, the precision ECS ``@timestamp`` keeps."""
    secs, ns = divmod(ts_ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ns // 1000:06d}Z"


def ip_text(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def to_ecs(d: Detection) -> dict[str, Any]:
    ind = d.match.indicator
    vendor = ind.vendor
    cid = community_id(d.src, d.dst, _TRANSPORT_NUMBERS[d.transport], d.sport, d.dport)
    event_id = hashlib.sha256(f"{d.ts}|{cid}|{d.evidence}|{d.match.name}".encode()).hexdigest()[:32]
    doc: dict[str, Any] = {
        "@timestamp": rfc3339_us(d.ts),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection", "protocol"],
            "action": d.action,
            "dataset": "egress_monitor.detection",
            "module": "egress_monitor",
            "id": event_id,
            "severity": SEVERITY_NUMBERS[ind.severity],
        },
        "network": {
            "protocol": d.protocol,
            "transport": d.transport,
            "type": "ipv4" if d.version == 4 else "ipv6",
            "community_id": cid,
        },
        "source": {"ip": ip_text(d.src), "port": d.sport},
        "destination": {"ip": ip_text(d.dst), "port": d.dport},
    }
    if d.vlan is not None:
        doc["network"]["vlan"] = {"id": str(d.vlan)}
    if d.tunnel is not None:
        doc["network"]["tunnel"] = d.tunnel
    doc.update(d.details)
    doc["match"] = {
        "name": d.match.name,
        "indicator": ind.value,
        "indicator_type": ind.kind,
        "vendor": vendor.id,
        "vendor_name": vendor.name,
        "category": vendor.category,
        "severity": ind.severity,
        "shared": ind.shared,
        "list": f"{ind.list_name}@{ind.list_version}",
        "evidence": d.evidence,
    }
    if d.attribution is not None:
        # Merged into ``source`` (which keeps ip and port): who was behind the client address
        # at the packet's time. Nothing is added when nothing is known.
        fields = to_ecs_fields(d.attribution)
        if "source" in fields:
            doc["source"].update(fields["source"])
        if "attribution" in fields:
            doc["attribution"] = fields["attribution"]
    return doc


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
