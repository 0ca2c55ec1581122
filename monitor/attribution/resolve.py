"""Who was behind an address at a time: ranking the evidence, and the ECS fields it gives.

Precedence, field by field (the first that applies wins):

host name (``source.domain``)
    1. a Kerberos machine account (``WS01$``) logged on from the address -- the KDC checked
       the machine's key, so this is the strongest name there is;
    2. the host name the DHCP lease holder announced (client FQDN, option 81 / 39, preferred
       over option 12);
    3. the name the lease holder's MAC announced in DHCP (DISCOVER / REQUEST / SOLICIT);
    4. an NTLM workstation name (client-asserted: non-Windows clients often send a
       placeholder such as ``WORKSTATION``, hence only medium confidence);
    5. the lease file's host name;
    6. the inventory (by MAC, exact IP, longest CIDR);
    7. stale evidence (see below), Kerberos / DHCP / lease file in that order.

user (``source.user``)
    1. the most recent Kerberos (AS-REP / TGS-REP) or NTLM (AUTHENTICATE) logon from the
       address whose lifetime covers the time;
    2. the inventory's owner of the device;
    3. a stale logon.

MAC (``source.mac``)
    the live DHCP lease, then the lease file, then the MAC the caller saw the packet from
    (only when DHCP or the inventory knows that MAC), the inventory's MAC entry, stale leases.

Live evidence beats lease files beats the inventory, but only evidence that *covers* the
time counts at full strength. Evidence whose lifetime ran out (a lease not seen renewed, a
ticket older than its lifetime) is *stale*: it is used, below everything else, only within
the store's ``stale_after`` window and only when it ended softly -- a RELEASE, another client
taking the address or the workstation leaving it end a binding for good. An inventory entry
whose host name contradicts the live host name describes another device (the inventory is
out of date) and is ignored.

Confidence (``attribution.confidence``, the weakest of the fields reported):
``high`` -- live DHCP, Kerberos or NTLM-user evidence covering the time, all consistent;
``medium`` -- a lease file, the inventory, or an NTLM workstation name;
``low`` -- stale evidence, or a conflict: two users logged on from the address within each
other's lifetime (shared workstation, terminal server: the most recent logon is reported),
a Kerberos machine account contradicting the DHCP host name, the lease file contradicting
the live lease, or the packet's MAC contradicting the lease. A conflict also sets
``attribution.conflict``.

Addresses configured as resolvers (DNS servers, and likewise proxies if they are listed) are
marked ``resolver_only``: a DNS query they forward is not the resolver operator's doing, so
no user is reported for them; the resolver's own host name still is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitor.attribution.bindings import (
    SOURCE_DHCP,
    SOURCE_INVENTORY,
    SOURCE_KERBEROS,
    SOURCE_LEASE_FILE,
    SOURCE_NTLM,
    Binding,
    is_mac,
    same_host,
)
from monitor.attribution.inventory import InventoryEntry

__all__ = [
    "CONFIDENCE_HIGH",
    "CONFIDENCE_LOW",
    "CONFIDENCE_MEDIUM",
    "Attribution",
    "Evidence",
    "apply_to_event",
    "resolve",
    "to_ecs_fields",
]

CONFIDENCE_HIGH = "high"
CONFIDENCE_MEDIUM = "medium"
CONFIDENCE_LOW = "low"
_LEVEL = {CONFIDENCE_LOW: 1, CONFIDENCE_MEDIUM: 2, CONFIDENCE_HIGH: 3}
_NS = 1_000_000_000


@dataclass(slots=True, frozen=True)
class Attribution:
    """The identity behind ``ip`` at ``at_ns``, each field with the source it came from.

    ``confidence`` is None when nothing is known. ``evidence_age_seconds`` is the age, at
    ``at_ns``, of the oldest evidence behind the reported fields (None when only the
    inventory spoke). ``stale`` says some field rests on expired evidence; ``conflict`` that
    the evidence disagreed (see the module docstring); ``resolver_only`` that ``ip`` is a
    configured resolver, for which no user is ever reported.
    """

    ip: str
    at_ns: int
    hostname: str | None = None
    hostname_source: str | None = None
    mac: str | None = None
    mac_source: str | None = None
    user: str | None = None
    user_domain: str | None = None
    user_source: str | None = None
    unit: str | None = None
    confidence: str | None = None
    evidence_age_seconds: int | None = None
    conflict: bool = False
    stale: bool = False
    resolver_only: bool = False

    @property
    def known(self) -> bool:
        """Anything at all is known: a field, or at least the unit the address belongs to."""
        return any(f is not None for f in (self.hostname, self.user, self.mac, self.unit))

    @property
    def source(self) -> str | None:
        """The one source for ``attribution.source``: the user's, else the host's, else the
        MAC's -- the field a reader of the event relies on most; the inventory when it only
        named the unit."""
        primary = self.user_source or self.hostname_source or self.mac_source
        if primary is None and self.unit is not None:
            return SOURCE_INVENTORY
        return primary

    @property
    def outcome(self) -> str:
        """The metrics label (``monitor.metrics.labels.ATTRIBUTION_OUTCOMES``) for this result."""
        if not self.known:
            return "unattributed"
        if self.conflict:
            return "conflict"
        if self.stale:
            return "stale"
        return self.source or "unattributed"


@dataclass(slots=True)
class Evidence:
    """What the store found for one question, each the latest binding starting at or before
    the time asked about (covering it or not): the live lease (``ip-mac``), the lease file's
    lease, the logged-on machine (``ip-host``) and user (``ip-user``), the name DHCP has for
    ``mac_host_key`` (``mac-host``), the MAC the caller saw the packet from, and the inventory
    entry for the device."""

    lease: Binding | None = None
    lease_file: Binding | None = None
    host: Binding | None = None
    user: Binding | None = None
    mac_host: Binding | None = None
    mac_host_key: str | None = None
    packet_mac: str | None = None
    inventory: InventoryEntry | None = None


@dataclass(slots=True)
class _Pick:
    value: str
    source: str
    confidence: str
    age_ns: int | None
    stale: bool = False
    detail: str | None = None


def _live(b: Binding | None, ts: int) -> Binding | None:
    return b if b is not None and b.covers(ts) else None


def _stale(b: Binding | None, ts: int, stale_ns: int) -> Binding | None:
    """``b`` if it ended softly (its lifetime ran out) no more than ``stale_ns`` before ``ts``."""
    if b is None or b.hard_ended or b.end_ns is None or b.end_ns > ts:
        return None
    return b if ts - b.end_ns <= stale_ns else None


def _age(b: Binding, ts: int) -> int:
    # The newest evidence at or before ts; a binding refreshed only after ts is dated by its
    # start, the last evidence known to precede the event.
    return ts - b.last_ns if b.last_ns <= ts else ts - b.start_ns


def _first(*picks: _Pick | None) -> _Pick | None:
    for pick in picks:
        if pick is not None:
            return pick
    return None


def _pick(
    b: Binding | None, ts: int, field: str, confidence: str, *, stale: bool = False
) -> _Pick | None:
    """``b``'s ``field`` ("value", "detail" or "mac") as a candidate, None if it has none."""
    if b is None:
        return None
    if field == "mac":
        value = b.value if is_mac(b.value) else None
    else:
        value = b.value if field == "value" else b.detail
    if value is None:
        return None
    return _Pick(value, b.source, confidence, _age(b, ts), stale, b.detail)


def resolve(
    ip: str,
    ts: int,
    ev: Evidence,
    *,
    stale_ns: int,
    resolver: bool = False,
) -> Attribution:
    """Rank ``ev`` into an :class:`Attribution` (precedence in the module docstring)."""
    lease, lease_file = _live(ev.lease, ts), _live(ev.lease_file, ts)
    host, user, mac_host = _live(ev.host, ts), _live(ev.user, ts), _live(ev.mac_host, ts)
    old_lease, old_file = _stale(ev.lease, ts, stale_ns), _stale(ev.lease_file, ts, stale_ns)
    old_host, old_user = _stale(ev.host, ts, stale_ns), _stale(ev.user, ts, stale_ns)
    high, medium, low = CONFIDENCE_HIGH, CONFIDENCE_MEDIUM, CONFIDENCE_LOW

    kerberos_host = host if host is not None and host.source == SOURCE_KERBEROS else None
    ntlm_host = host if host is not None and host.source != SOURCE_KERBEROS else None
    dynamic_host = _first(
        _pick(kerberos_host, ts, "value", high),
        _pick(lease, ts, "detail", high),
        _pick(mac_host, ts, "value", high),
        _pick(ntlm_host, ts, "value", medium),
        _pick(lease_file, ts, "detail", medium),
    )
    inventory = ev.inventory
    if (
        inventory is not None
        and inventory.hostname is not None
        and dynamic_host is not None
        and not same_host(inventory.hostname, dynamic_host.value)
    ):
        inventory = None  # it describes another device; the wire is newer than the inventory

    inv_host = inv_user = inv_mac = None
    if inventory is not None:
        if inventory.hostname is not None:
            inv_host = _Pick(inventory.hostname, SOURCE_INVENTORY, medium, None)
        if inventory.owner is not None:
            inv_user = _Pick(
                inventory.owner, SOURCE_INVENTORY, medium, None, detail=inventory.owner_domain
            )
        if inventory.selector == "mac":
            inv_mac = _Pick(inventory.match, SOURCE_INVENTORY, medium, None)

    host_pick = _first(
        dynamic_host,
        inv_host,
        _pick(old_host, ts, "value", low, stale=True),
        _pick(old_lease, ts, "detail", low, stale=True),
        _pick(old_file, ts, "detail", low, stale=True),
    )

    mac_host_pick = None
    if mac_host is not None and ev.mac_host_key is not None:
        mac_host_pick = _Pick(ev.mac_host_key, SOURCE_DHCP, high, _age(mac_host, ts))
    mac_pick = _first(
        _pick(lease, ts, "mac", high),
        _pick(lease_file, ts, "mac", medium),
        mac_host_pick,
        inv_mac,
        _pick(old_lease, ts, "mac", low, stale=True),
        _pick(old_file, ts, "mac", low, stale=True),
    )

    conflict = False
    user_pick: _Pick | None = None
    if not resolver:
        live_user = None
        if user is not None:
            contested = user.contested_at(ts)
            conflict = contested
            live_user = _pick(user, ts, "value", low if contested else high)
        user_pick = _first(
            live_user,
            inv_user,
            _pick(old_user, ts, "value", low, stale=True),
        )

    if kerberos_host is not None:
        others = (lease.detail if lease else None, mac_host.value if mac_host else None)
        for other in others:
            if other is not None and not same_host(other, kerberos_host.value):
                conflict = True
    lease_mac = lease.value if lease is not None and is_mac(lease.value) else None
    file_mac = lease_file.value if lease_file is not None and is_mac(lease_file.value) else None
    if lease_mac is not None and file_mac is not None and lease_mac != file_mac:
        conflict = True
    if ev.packet_mac is not None and lease_mac is not None and ev.packet_mac != lease_mac:
        conflict = True

    picks = [p for p in (host_pick, mac_pick, user_pick) if p is not None]
    unit = inventory.unit if inventory is not None else None
    if unit is not None:
        picks.append(_Pick(unit, SOURCE_INVENTORY, medium, None))
    if not picks:
        return Attribution(ip=ip, at_ns=ts, resolver_only=resolver)
    confidence = min((p.confidence for p in picks), key=_LEVEL.__getitem__)
    if conflict:
        confidence = low
    ages = [p.age_ns for p in picks if p.age_ns is not None]
    return Attribution(
        ip=ip,
        at_ns=ts,
        hostname=host_pick.value if host_pick else None,
        hostname_source=host_pick.source if host_pick else None,
        mac=mac_pick.value if mac_pick else None,
        mac_source=mac_pick.source if mac_pick else None,
        user=user_pick.value if user_pick else None,
        user_domain=user_pick.detail if user_pick else None,
        user_source=user_pick.source if user_pick else None,
        unit=unit,
        confidence=confidence,
        evidence_age_seconds=max(0, max(ages)) // _NS if ages else None,
        conflict=conflict,
        stale=any(p.stale for p in picks),
        resolver_only=resolver,
    )


_ECS_SOURCES = frozenset(
    (SOURCE_DHCP, SOURCE_KERBEROS, SOURCE_NTLM, SOURCE_LEASE_FILE, SOURCE_INVENTORY)
)


def to_ecs_fields(attribution: Attribution) -> dict[str, Any]:
    """The fields the attribution stage adds to an event (see the event contract).

    ``{"source": {"domain", "mac", "user": {"name", "domain"}}, "attribution": {"source",
    "confidence", "evidence_age_seconds", "sources": {field: source}, "conflict", "stale",
    "unit", "resolver_only"}}`` with only the keys that are known (``conflict``, ``stale``
    and ``resolver_only`` only when true). Empty when nothing is known and ``ip`` is no
    resolver. ``source`` must be merged into the event's ``source`` (which holds ``ip`` and
    ``port``), not replace it: :func:`apply_to_event` does that.
    """
    a = attribution
    source: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if a.hostname is not None:
        source["domain"] = a.hostname
        sources["domain"] = a.hostname_source or ""
    if a.mac is not None:
        source["mac"] = a.mac
        sources["mac"] = a.mac_source or ""
    if a.user is not None:
        user: dict[str, str] = {"name": a.user}
        if a.user_domain:
            user["domain"] = a.user_domain
        source["user"] = user
        sources["user"] = a.user_source or ""
    attribution_fields: dict[str, Any] = {}
    if a.known:
        primary = a.source
        attribution_fields["source"] = primary if primary in _ECS_SOURCES else "other"
        attribution_fields["confidence"] = a.confidence
        if a.evidence_age_seconds is not None:
            attribution_fields["evidence_age_seconds"] = a.evidence_age_seconds
        attribution_fields["sources"] = sources
        if a.conflict:
            attribution_fields["conflict"] = True
        if a.stale:
            attribution_fields["stale"] = True
        if a.unit is not None:
            attribution_fields["unit"] = a.unit
    if a.resolver_only:
        attribution_fields["resolver_only"] = True
    out: dict[str, Any] = {}
    if source:
        out["source"] = source
    if attribution_fields:
        out["attribution"] = attribution_fields
    return out


def apply_to_event(event: dict[str, Any], attribution: Attribution) -> dict[str, Any]:
    """Merge :func:`to_ecs_fields` into ``event`` (in place; returned for chaining), keeping
    the event's ``source.ip`` / ``source.port``."""
    fields = to_ecs_fields(attribution)
    if "source" in fields:
        event.setdefault("source", {}).update(fields["source"])
    if "attribution" in fields:
        event["attribution"] = fields["attribution"]
    return event
