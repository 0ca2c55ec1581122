"""Time-aware identity bindings and the timeline rules that keep them consistent (pure core).

An address is not an identity: DHCP hands 10.0.0.5 to ws01 at 09:00 and to ws02 at 11:00, and a
vendor access at 10:00 belongs to ws01 even if the question is asked at noon. So every piece of
identity evidence is kept as a *binding*, a half-open interval ``[start_ns, end_ns)`` during
which a key (an IP address, or a MAC) was bound to a value (a client MAC, a host name, a user),
and a question is always asked *at a time*.

Bindings live on *timelines*, one per ``(tier, kind, key)``:

* kinds: ``ip-mac`` (a DHCP lease: the client's MAC or other client identity, with the host
  name it announced as ``detail``), ``ip-host`` (a Kerberos machine account or an NTLM
  workstation name seen logging on from the address), ``ip-user`` (a Kerberos or NTLM user
  logon from the address, the realm or domain as ``detail``), ``mac-host`` (the name a MAC
  announced in DHCP);
* tiers: live evidence from the wire (:data:`TIER_LIVE`) and what DHCP servers' lease files
  say (:data:`TIER_LEASE_FILE`) are kept apart, because they are ranked differently when an
  event is attributed, and a lease file read after the fact must not rewrite what the wire said.

A timeline never holds two bindings that overlap (the property the store's hypothesis tests
check). :func:`splice` inserts new evidence under one rule, *later evidence wins*: a binding
lasts until its own end or until the next binding on the same timeline starts, whichever comes
first, and evidence that agrees with the binding around it extends that binding instead of
starting a new one. That rule does not depend on the order observations arrive in, which
matters because mirrored traffic, several capture points and lease-file reloads do not arrive
sorted.

Ends come in two strengths. A *soft* end (``end_reason`` None) is a lifetime running out: a
lease not renewed, a ticket lifetime passed. The client may well still be there (the sensor can
miss a unicast renewal), so soft-ended bindings remain usable as *stale* evidence for a while.
A *hard* end is evidence that the binding is over: a RELEASE or DECLINE, another client taking
the address (``superseded``), the workstation leaving the address (``address-moved``). Those
are never used once they ended.

Everything here is a pure function of its arguments (no clock, no I/O); the SQLite shell in
:mod:`monitor.attribution.store` fetches the neighbouring bindings, calls :func:`splice` or
:func:`end_binding` and writes back the :class:`Change` they return.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

__all__ = [
    "END_ADDRESS_MOVED",
    "END_DECLINE",
    "END_LEASE_FILE",
    "END_RELEASE",
    "END_SUPERSEDED",
    "KINDS",
    "KIND_IP_HOST",
    "KIND_IP_MAC",
    "KIND_IP_USER",
    "KIND_MAC_HOST",
    "MAX_TS",
    "SOURCE_DHCP",
    "SOURCE_INVENTORY",
    "SOURCE_KERBEROS",
    "SOURCE_LEASE_FILE",
    "SOURCE_NTLM",
    "TIER_LEASE_FILE",
    "TIER_LIVE",
    "Binding",
    "Change",
    "clamp_end",
    "end_binding",
    "is_mac",
    "merge_values",
    "normalize_host",
    "normalize_ip",
    "normalize_mac",
    "same_host",
    "same_value",
    "splice",
]

KIND_IP_MAC = "ip-mac"
KIND_IP_HOST = "ip-host"
KIND_IP_USER = "ip-user"
KIND_MAC_HOST = "mac-host"
KINDS = (KIND_IP_MAC, KIND_IP_HOST, KIND_IP_USER, KIND_MAC_HOST)

TIER_LIVE = 0
TIER_LEASE_FILE = 1

# The names the event contract uses in ``attribution.source``.
SOURCE_DHCP = "dhcp"
SOURCE_KERBEROS = "kerberos"
SOURCE_NTLM = "ntlm"
SOURCE_LEASE_FILE = "lease-file"
SOURCE_INVENTORY = "inventory"

END_RELEASE = "release"
END_DECLINE = "decline"
END_SUPERSEDED = "superseded"
END_ADDRESS_MOVED = "address-moved"
END_LEASE_FILE = "lease-file-ended"

#: SQLite integers are signed 64-bit; an end beyond this is stored as "never" (None).
MAX_TS = 2**63 - 1

# NetBIOS names (and so Windows machine account names) are cut at 15 characters.
_NETBIOS_LEN = 15
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


@dataclass(slots=True, frozen=True)
class Binding:
    """One interval of one timeline: ``key`` was bound to ``value`` during ``[start_ns, end_ns)``.

    ``end_ns`` None means no known end (an infinite lease). ``last_ns`` is the newest evidence
    folded into the binding, which dates it (``attribution.evidence_age_seconds``).
    ``contested_until_ns`` is set on a logon binding that cut short another identity's binding
    that had not expired yet (a shared workstation, a terminal server): until that time the
    attribution is reported as a conflict. ``origin`` says where the evidence came from in
    words a person checks (``"ACK xid 0x1234"``, ``"dhcpd.leases:12"``). ``id`` is the store's
    row id, None for a binding not stored yet.
    """

    kind: str
    key: str
    value: str
    start_ns: int
    end_ns: int | None
    last_ns: int
    source: str
    tier: int = TIER_LIVE
    detail: str | None = None
    end_reason: str | None = None
    contested_until_ns: int | None = None
    origin: str | None = None
    id: int | None = None

    def covers(self, ts_ns: int) -> bool:
        return self.start_ns <= ts_ns and (self.end_ns is None or ts_ns < self.end_ns)

    @property
    def hard_ended(self) -> bool:
        """Ended by evidence (release, another holder ...), not by a lifetime running out."""
        return self.end_reason is not None

    def contested_at(self, ts_ns: int) -> bool:
        return self.contested_until_ns is not None and ts_ns < self.contested_until_ns


@dataclass(slots=True)
class Change:
    """What to write back: bindings to update (by ``id``), ids to delete, a binding to insert."""

    updates: list[Binding] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)
    insert: Binding | None = None

    def __bool__(self) -> bool:
        return bool(self.updates or self.deletes or self.insert is not None)


# --------------------------------------------------------------------------- normalisation


def normalize_ip(ip: str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """``str(ip_address(...))`` of text or packed bytes, IPv4-mapped IPv6 as plain IPv4.

    The DHCP parsers, the lease-file readers and the decoder's packed addresses all end up in
    this one form, so a key written from one source is found from another.
    Raises ValueError for anything that is not an address.
    """
    if isinstance(ip, bytes | bytearray):
        if len(ip) not in (4, 16):
            raise ValueError(f"packed address of {len(ip)} bytes")
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(bytes(ip))
    elif isinstance(ip, str):
        addr = ipaddress.ip_address(ip.strip())
    else:
        addr = ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def normalize_mac(mac: str) -> str:
    """Lower-case colon hex, the form the DHCP parsers and lease-file readers produce.

    Accepts ``-`` or ``.`` separated and bare 12-digit forms too (inventories are typed by
    people). Raises ValueError when it is not six octets.
    """
    text = mac.strip().lower()
    if _MAC.fullmatch(text):
        return text
    digits = re.sub(r"[:\-.]", "", text)
    if len(digits) != 12 or not all(c in "0123456789abcdef" for c in digits):
        raise ValueError(f"{mac!r} is not a MAC address")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def is_mac(value: str) -> bool:
    return _MAC.fullmatch(value) is not None


def normalize_host(name: str | None) -> str | None:
    """Host names compare case-insensitively and without the root dot; empty means none."""
    if name is None:
        return None
    text = name.strip().rstrip(".").lower()
    return text[:255] or None


def _first_label(name: str) -> str:
    return name.split(".", 1)[0].casefold()


def same_host(a: str, b: str) -> bool:
    """The same machine under two spellings: ``WS01`` (NetBIOS, NTLM, ``WS01$``) and
    ``ws01.pd.example`` (DHCP FQDN). First labels are compared case-insensitively; a NetBIOS
    name cut at 15 characters matches the longer host name it was cut from."""
    x, y = _first_label(a), _first_label(b)
    if x == y:
        return True
    if len(x) > len(y):
        x, y = y, x
    return len(x) == _NETBIOS_LEN and y.startswith(x)


def same_value(kind: str, a: str, b: str) -> bool:
    """Whether two values of ``kind`` name the same thing (then the bindings merge)."""
    if kind in (KIND_IP_HOST, KIND_MAC_HOST):
        return same_host(a, b)
    if kind == KIND_IP_USER:
        return a.casefold() == b.casefold()
    return a == b


def _qualified(name: str | None) -> bool:
    return name is not None and "." in name


def merge_values(kind: str, old: Binding, new: Binding) -> tuple[str, str | None]:
    """Value and detail of ``old`` after equivalent evidence ``new`` was folded into it.

    Host names keep the more qualified spelling (``ws01.pd.example`` over ``WS01``), and
    otherwise the one already stored, so a binding does not flicker between spellings. A user's
    domain likewise prefers the DNS form (``PD.EXAMPLE`` over ``PD``). A lease's host name is
    the newest one the client announced, unless that would lose the qualified form.
    """
    value = old.value
    if kind in (KIND_IP_HOST, KIND_MAC_HOST) and _qualified(new.value) and not _qualified(value):
        value = new.value
    if new.detail is None:
        detail = old.detail
    elif old.detail is None:
        detail = new.detail
    elif kind == KIND_IP_MAC:
        keep_old = (
            _qualified(old.detail)
            and not _qualified(new.detail)
            and same_host(old.detail, new.detail)
        )
        detail = old.detail if keep_old else new.detail
    else:
        detail = new.detail if _qualified(new.detail) and not _qualified(old.detail) else old.detail
    return value, detail


# --------------------------------------------------------------------------- timeline edits


def _max_end(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return None
    return max(a, b)


def _before_or_never(end: int | None, point: int) -> bool:
    """``end <= point`` with None as +infinity."""
    return end is not None and end <= point


def splice(
    prev: Binding | None,
    nxt: Binding | None,
    new: Binding,
    *,
    new_rank: int = 1,
    rank_of: Callable[[Binding], int] | None = None,
    contest: bool = False,
) -> Change:
    """Insert evidence ``new`` into its timeline; return the edits that keep it disjoint.

    ``prev`` must be the binding of the same timeline with the greatest ``start_ns <=
    new.start_ns`` (whatever its end) and ``nxt`` the one with the least ``start_ns >
    new.start_ns``; no other binding can be affected, because the timeline is disjoint.

    * ``prev`` covers the new start and names the same thing: ``prev`` is extended (its end
      moves to the later of the two ends) -- unless ``prev`` was hard-ended, in which case the
      new evidence predates that end and adds nothing but its date.
    * ``prev`` covers the new start and names something else: ``prev`` is cut at the new start
      (``superseded``), unless the new evidence ranks below ``prev`` (``new_rank`` <
      ``rank_of(prev)``): an NTLM workstation name never displaces a Kerberos machine account,
      a TGS-REP never displaces another user's logon. With ``contest`` the new binding is
      marked contested until ``prev`` would have ended.
    * ``nxt`` starts before the new end: later evidence wins, so the new binding stops where
      ``nxt`` starts -- or, when ``nxt`` names the same thing, ``nxt`` is moved back to start at
      the new start instead (and merged with ``prev`` if that is the same thing too).
    * Empty intervals are never written: evidence with ``end_ns <= start_ns`` changes nothing,
      and a binding cut to nothing is deleted.
    """
    s, e = new.start_ns, new.end_ns
    if e is not None and e <= s:
        return Change()
    kind = new.kind
    change = Change()
    if prev is not None and prev.covers(s):
        if same_value(kind, prev.value, new.value):
            return _extend(prev, nxt, new, new_rank, rank_of)
        if rank_of is not None and new_rank < rank_of(prev):
            return change
        if contest:
            new = replace(new, contested_until_ns=MAX_TS if prev.end_ns is None else prev.end_ns)
        if prev.start_ns == s:
            if prev.id is not None:
                change.deletes.append(prev.id)
        else:
            change.updates.append(replace(prev, end_ns=s, end_reason=END_SUPERSEDED))
    if nxt is not None and not _before_or_never(e, nxt.start_ns):
        if same_value(kind, nxt.value, new.value):
            value, detail = merge_values(kind, nxt, new)
            change.updates.append(
                replace(
                    nxt,
                    start_ns=s,
                    value=value,
                    detail=detail,
                    last_ns=max(nxt.last_ns, new.last_ns),
                    contested_until_ns=_later(nxt.contested_until_ns, new.contested_until_ns),
                )
            )
            return change
        new = replace(new, end_ns=nxt.start_ns, end_reason=END_SUPERSEDED)
    change.insert = new
    return change


def _later(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _credited(
    prev: Binding, new: Binding, new_rank: int, rank_of: Callable[[Binding], int] | None
) -> tuple[str, str | None]:
    """The source (and origin) an extended binding names: the stronger evidence, else the
    newer. A Kerberos machine account confirmed later by an NTLM workstation name stays a
    Kerberos binding, as the precedence says while its ticket covers the time; and a replay
    into a store that already holds the capture then finds the same source at every point,
    not the one that later evidence left behind."""
    if rank_of is not None:
        prev_rank = rank_of(prev)
        if new_rank != prev_rank:
            winner = new if new_rank > prev_rank else prev
            return winner.source, winner.origin if winner.source != prev.source else prev.origin
    if new.last_ns >= prev.last_ns and new.source != prev.source:
        return new.source, new.origin
    return prev.source, prev.origin


def _extend(
    prev: Binding,
    nxt: Binding | None,
    new: Binding,
    new_rank: int = 1,
    rank_of: Callable[[Binding], int] | None = None,
) -> Change:
    kind = new.kind
    value, detail = merge_values(kind, prev, new)
    last = max(prev.last_ns, new.last_ns)
    source, origin = _credited(prev, new, new_rank, rank_of)
    if prev.hard_ended:
        # The evidence predates the release (or the next holder): it cannot outlive it.
        updated = replace(
            prev, value=value, detail=detail, last_ns=last, source=source, origin=origin
        )
        return Change(updates=[updated]) if updated != prev else Change()
    end = _max_end(prev.end_ns, new.end_ns)
    reason: str | None = None
    change = Change()
    if nxt is not None and not _before_or_never(end, nxt.start_ns):
        if same_value(kind, nxt.value, new.value):
            # prev, the new evidence and nxt are one binding: fold nxt into prev.
            end, reason = nxt.end_ns, nxt.end_reason
            last = max(last, nxt.last_ns)
            value, detail = merge_values(kind, replace(prev, value=value, detail=detail), nxt)
            if nxt.id is not None:
                change.deletes.append(nxt.id)
        else:
            end, reason = nxt.start_ns, END_SUPERSEDED
    updated = replace(
        prev,
        value=value,
        detail=detail,
        end_ns=end,
        end_reason=reason,
        last_ns=last,
        source=source,
        origin=origin,
    )
    if updated != prev:
        change.updates.append(updated)
    return change


def end_binding(prev: Binding | None, at_ns: int, reason: str, value: str | None = None) -> Change:
    """End ``prev`` at ``at_ns`` for ``reason`` if it covers that time (and, with ``value``,
    only if it names that value: a RELEASE from one client does not end another's lease).

    A binding that started at ``at_ns`` itself is deleted rather than left empty.
    """
    if prev is None or not prev.covers(at_ns):
        return Change()
    if value is not None and not same_value(prev.kind, prev.value, value):
        return Change()
    if prev.start_ns == at_ns:
        return Change(deletes=[] if prev.id is None else [prev.id])
    return Change(updates=[replace(prev, end_ns=at_ns, end_reason=reason)])


def clamp_end(start_ns: int, seconds: int | float | None) -> int | None:
    """``start_ns + seconds`` in ns, None for "never" (None, or beyond what SQLite stores)."""
    if seconds is None:
        return None
    end = start_ns + int(seconds * 1_000_000_000)
    return None if end >= MAX_TS else end
