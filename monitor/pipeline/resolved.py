"""Addresses that DNS answers gave for vendor names, so that a connection can be tied to a name.

Behind an internal resolver the sensor sees the resolver ask for ``pimeyes.com`` and, later, a
workstation connect to the address the answer held -- but not the workstation's own lookup,
which went to the resolver on a segment the sensor does not see. A ClientHello without SNI (or
with ECH) then names nothing. This table closes that gap: every A/AAAA record of an answer whose
question (or CNAME chain) reaches a vendor name is remembered for its TTL, with who received the
answer, and the engine asks it when a connection starts.

Rules (the README's "Attribution" section has the reasons):

* Only vendor names count: not blind-spot categories (a DoH resolver's address is matched by
  its own list) and not ``shared`` indicators (shared-cloud endpoints: their addresses serve
  other customers too, so an address match would report unrelated traffic).
* Along a CNAME chain, only the records from the vendor name on count (``photos.example.org
  CNAME app.clearview.ai``, ``app.clearview.ai A x``: x is Clearview's), the vendor name being
  what the events report.
* A TTL below ``min_ttl_s`` is raised to it (clients connect right after resolving, and
  browsers cache answers for a minute whatever the TTL says); above ``max_ttl_s`` it is capped.
* A client that received an answer for the address itself is not reported by :meth:`lookup`:
  its own ``dns-query`` event already says it looked the name up.
* Bounded: at most ``max_addresses`` addresses (the oldest learned is dropped first) and
  ``max_recipients`` recipients per address (the oldest is forgotten).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from monitor.blocklist.model import Match

NS = 1_000_000_000


@dataclass(slots=True)
class ResolvedStats:
    learned: int = 0  # address records remembered (new or refreshed)
    evicted: int = 0  # addresses dropped because the table was full
    expired: int = 0  # addresses dropped because their TTL ran out
    # Connections to a vendor address whose first message named a host, so no ip-* event:
    superseded: int = 0  # it named the vendor: the hello's / request's own event reports it
    other_name: int = 0  # it named another host (a shared address, e.g. a CDN's)


class _Entry:
    __slots__ = ("expires", "match", "recipients")

    def __init__(self, match: Match, expires: int) -> None:
        self.match = match
        self.expires = expires
        # recipient address (packed) -> when its answer expires
        self.recipients: dict[bytes, int] = {}


def pack_ip(text: str) -> bytes | None:
    """The packed form of an address as the decoder gives it (4 or 16 bytes), None if bad."""
    try:
        if ":" in text:
            return socket.inet_pton(socket.AF_INET6, text)
        return socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return None


class ResolvedAddresses:
    """Vendor addresses learned from DNS answers; see the module docstring."""

    __slots__ = (
        "entries",
        "max_addresses",
        "max_recipients",
        "max_ttl_ns",
        "min_ttl_ns",
        "next_sweep",
        "stats",
    )

    def __init__(
        self,
        max_addresses: int = 65536,
        max_recipients: int = 16,
        min_ttl_s: float = 60.0,
        max_ttl_s: float = 86400.0,
    ) -> None:
        if max_addresses < 1 or max_recipients < 1 or min_ttl_s < 0 or max_ttl_s < min_ttl_s:
            raise ValueError("bad bounds for the resolved-address table")
        self.entries: dict[bytes, _Entry] = {}
        self.max_addresses = max_addresses
        self.max_recipients = max_recipients
        self.min_ttl_ns = int(min_ttl_s * NS)
        self.max_ttl_ns = int(max_ttl_s * NS)
        self.next_sweep = 0
        self.stats = ResolvedStats()

    def __len__(self) -> int:
        return len(self.entries)

    def learn(self, ts: int, address: str, ttl: int, match: Match, recipient: bytes) -> None:
        """Remember that ``address`` belongs to ``match``'s vendor for ``ttl`` seconds from
        ``ts``, per an answer sent to ``recipient`` (packed)."""
        packed = pack_ip(address)
        if packed is None:
            return
        life = min(max(ttl * NS, self.min_ttl_ns), self.max_ttl_ns)
        expires = ts + life
        entries = self.entries
        entry = entries.get(packed)
        if entry is None or entry.expires <= ts:
            if entry is None and len(entries) >= self.max_addresses:
                del entries[next(iter(entries))]
                self.stats.evicted += 1
            entry = _Entry(match, expires)
            entries.pop(packed, None)
            entries[packed] = entry
        else:
            # The newest answer names the vendor; the address lives as long as any answer.
            entry.match = match
            entry.expires = max(entry.expires, expires)
        recipients = entry.recipients
        recipients.pop(recipient, None)
        if len(recipients) >= self.max_recipients:
            del recipients[next(iter(recipients))]
        recipients[recipient] = expires
        self.stats.learned += 1

    def lookup(self, ts: int, address: bytes, client: bytes) -> Match | None:
        """The vendor ``address`` (packed) was learned for at ``ts``, unless ``client`` received
        such an answer itself (it made its own lookup, already an event) or nothing is known."""
        entry = self.entries.get(address)
        if entry is None or entry.expires <= ts:
            return None
        own = entry.recipients.get(client)
        if own is not None and own > ts:
            return None
        return entry.match

    def sweep(self, ts: int) -> None:
        """Drop what has expired; cheap to call often, it scans once per 5 s of packet time."""
        entries = self.entries
        if not entries or ts < self.next_sweep:
            return
        self.next_sweep = ts + 5 * NS
        stale = [k for k, e in entries.items() if e.expires <= ts]
        for k in stale:
            del entries[k]
        self.stats.expired += len(stale)
