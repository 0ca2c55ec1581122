"""Immutable records for loaded blocklists.

Every indicator carries its list name, list version, file and line so that an alert can be
traced back to the exact list revision and line that produced it -- analysts must be able to
answer "why did this fire?" without re-running anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "BLIND_SPOT_CATEGORIES",
    "CATEGORIES",
    "ECS_SEVERITY",
    "INDICATOR_KINDS",
    "SEVERITY_LEVELS",
    "SEVERITY_NUMBERS",
    "Blocklist",
    "Indicator",
    "Match",
    "Vendor",
]

#: Ordered from least to most severe; the order is used when comparing severities.
SEVERITY_LEVELS: tuple[str, ...] = ("low", "medium", "high", "critical")

#: ECS ``event.severity`` is numeric; these values spread the four levels over 0-100 so that
#: SIEM range queries ("severity >= 47") work without knowing our labels.
SEVERITY_NUMBERS: MappingProxyType[str, int] = MappingProxyType(
    {"low": 21, "medium": 47, "high": 73, "critical": 99}
)
#: Alias kept so both spellings used in the design notes resolve to the same table.
ECS_SEVERITY = SEVERITY_NUMBERS

#: Vendor categories. Two are not vendors of face recognition but blind spots the sensor makes
#: visible: ``encrypted-dns`` (public DoH/DoT/DoQ resolvers, whose use hides DNS lookups) and
#: ``ech-frontend`` (client-facing servers of Encrypted Client Hello, whose use hides the real
#: SNI). Their matches become ``encrypted-dns`` / ``ech-observed`` events, never vendor access.
CATEGORIES: tuple[str, ...] = (
    "face-search",
    "face-recognition-api",
    "biometric-platform",
    "encrypted-dns",
    "ech-frontend",
    "other",
)
#: The categories whose matches are blind-spot signals rather than vendor access.
BLIND_SPOT_CATEGORIES: frozenset[str] = frozenset({"encrypted-dns", "ech-frontend"})

#: ``ja4`` names a TLS client (a vendor's mobile app) by its JA4 fingerprint instead of by name.
INDICATOR_KINDS: tuple[str, ...] = ("domain", "host", "wildcard", "cidr", "ja4")


@dataclass(frozen=True, slots=True)
class Vendor:
    id: str
    name: str
    category: str
    severity: str
    references: tuple[str, ...]
    notes: str | None


@dataclass(frozen=True, slots=True)
class Indicator:
    """One matchable entry; ``value`` is normalised (lower-case, A-labels, canonical CIDR)."""

    kind: str
    value: str
    vendor: Vendor
    #: Effective severity: the per-indicator override if given, else the vendor's.
    severity: str
    shared: bool
    note: str | None
    list_name: str
    list_version: str
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class Blocklist:
    name: str
    version: str
    description: str | None
    vendors: tuple[Vendor, ...]
    indicators: tuple[Indicator, ...]
    path: str


@dataclass(frozen=True, slots=True)
class Match:
    """A hit: ``name`` is the normalised observed name (or the IP address as text)."""

    name: str
    indicator: Indicator
