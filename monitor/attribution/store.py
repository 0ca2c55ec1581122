"""The identity store: live DHCP / Kerberos / NTLM evidence, lease files and the inventory,
kept as time-aware bindings in SQLite so that a restarted sensor still knows who held an address.

The pipeline feeds it what the protocol parsers return, with the packet's time (Unix ns; the
store never reads a clock), and asks it, per detection, who was behind the source address at
the packet's time (:meth:`IdentityStore.attribute`); the ``identities`` command asks the same
question of the database file afterwards (:meth:`IdentityStore.who_had`).

What each source contributes (the timeline rules are in :mod:`monitor.attribution.bindings`,
the precedence between sources in :mod:`monitor.attribution.resolve`):

* DHCPv4: an ACK binds its address to the client (MAC from ``chaddr``, else the client
  identifier) until the lease time runs out, extended by every renewal; a RELEASE or DECLINE
  from that client, or an ACK giving the address to another client, ends it. The host name
  is the best the exchange offers: a fully qualified client FQDN (option 81) over the host
  name (option 12), from the ACK or from the client's own DISCOVER / REQUEST, which are also
  recorded as the MAC's name (``mac-host``). REQUESTs bind no address: they are only a claim
  until the server ACKs.
* DHCPv6: a REPLY binds each IA_NA / IA_TA address with a valid lifetime to the client (MAC
  from a DUID-LL / DUID-LLT or the relay's RFC 6939 option, else the DUID), with the client
  FQDN (option 39); RELEASE, DECLINE and a zero lifetime end it.
* Kerberos: a successful reply (AS-REP, TGS-REP) binds the client principal to the reply's
  destination address for ``kerberos_ttl`` (the TGT lifetime), renewed by every later reply.
  A KRB-ERROR is not a logon (PREAUTH_REQUIRED precedes every good logon, PREAUTH_FAILED is a
  wrong password). A principal ending in ``$`` (and ``host/NAME``) is a machine account: it
  names the workstation, not a user. A TGS-REP only renews: it never displaces another user's
  logon, because a service asking on a user's behalf (S4U) gets replies naming that user.
* NTLM: an AUTHENTICATE binds its user (with domain) and its workstation name to the client
  address for ``ntlm_ttl``; a ``NAME$`` user names a machine.
* When an address leaves a workstation (RELEASE, or an ACK to another client while the old
  lease was live), the users and machine names logged on from it end there too, so the next
  holder's accesses are not pinned on the previous holder's user.
* Lease files (ISC, Kea, dnsmasq via :mod:`monitor.attribution.leasefiles`): each bound lease
  is a binding in a tier of its own, below live evidence; a lease with no recorded start
  (dnsmasq, infinite Kea leases) counts from when the file was read.
* The inventory (:mod:`monitor.attribution.inventory`) is configuration, not evidence: it is
  held in memory, replaced on reload, and applies at any time.

SQLite: one connection, owned by the store and used only from the thread that created it
(``check_same_thread``); other processes (the ``identities`` command) open the file with
``read_only=True`` and read while the sensor writes, which WAL mode allows. Writes are
batched: a transaction is committed once it holds ``commit_rows`` changes or spans
``commit_interval_ms`` of packet time (:meth:`tick` lets the pipeline close a batch while no
identity traffic arrives), and on :meth:`flush` / :meth:`close`. A crash therefore loses at
most the open batch; every committed batch survives it (WAL, ``synchronous=NORMAL``: a power
loss can also lose the last commits, never corrupt the file). The file stays bounded: when a
commit leaves more than ``max_rows`` bindings the least recently confirmed are deleted, and
bindings that ended more than ``retention_days`` of packet time ago are deleted, checked at
most once per ``maintenance_interval_s`` of packet time and whenever the row limit is passed.
The schema is versioned with ``PRAGMA user_version`` and the file marked with an
``application_id``, so a newer or foreign database is refused instead of damaged.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.attribution.bindings import (
    END_ADDRESS_MOVED,
    END_DECLINE,
    END_LEASE_FILE,
    END_RELEASE,
    KIND_IP_HOST,
    KIND_IP_MAC,
    KIND_IP_USER,
    KIND_MAC_HOST,
    MAX_TS,
    SOURCE_DHCP,
    SOURCE_KERBEROS,
    SOURCE_LEASE_FILE,
    SOURCE_NTLM,
    TIER_LEASE_FILE,
    TIER_LIVE,
    Binding,
    Change,
    clamp_end,
    end_binding,
    is_mac,
    normalize_host,
    normalize_ip,
    normalize_mac,
    splice,
)
from monitor.attribution.inventory import Inventory
from monitor.attribution.leasefiles import Lease
from monitor.attribution.resolve import Attribution, Evidence, resolve
from monitor.protocols import dhcpv6
from monitor.protocols.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    DHCPACK,
    DHCPDECLINE,
    DHCPDISCOVER,
    DHCPINFORM,
    DHCPRELEASE,
    DHCPREQUEST,
    LEASE_INFINITE,
    DhcpMessage,
)
from monitor.protocols.dhcpv6 import Dhcpv6Message
from monitor.protocols.kerberos import MSG_AS_REP, KerberosMessage, KerberosPrincipal
from monitor.protocols.ntlm import NTLMSSP_AUTHENTICATE, NtlmMessage

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "IdentityStore",
    "StoreError",
    "StoreStats",
]

#: ``PRAGMA application_id`` of an identity database ("EMid").
APPLICATION_ID = 0x454D6964
SCHEMA_VERSION = 1
NS = 1_000_000_000
#: Packet time moving further ahead than this at once is believed only when a second
#: observation confirms it (see IdentityStore._advance).
MAX_CLOCK_JUMP_NS = 86400 * NS

_SCHEMA = """
CREATE TABLE bindings (
    id INTEGER PRIMARY KEY,
    tier INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    detail TEXT,
    source TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    last_ns INTEGER NOT NULL,
    end_reason TEXT,
    contested_until_ns INTEGER,
    origin TEXT
);
CREATE INDEX bindings_by_key ON bindings (key, kind, tier, start_ns);
CREATE INDEX bindings_by_age ON bindings (last_ns);
"""
_COLUMNS = (
    "id, tier, kind, key, value, detail, source, start_ns, end_ns, last_ns, end_reason, "
    "contested_until_ns, origin"
)
_PREV = (
    f"SELECT {_COLUMNS} FROM bindings WHERE key = ? AND kind = ? AND tier = ? AND start_ns <= ? "
    "ORDER BY start_ns DESC LIMIT 1"
)
_NEXT = (
    f"SELECT {_COLUMNS} FROM bindings WHERE key = ? AND kind = ? AND tier = ? AND start_ns > ? "
    "ORDER BY start_ns ASC LIMIT 1"
)
_INSERT = (
    "INSERT INTO bindings (tier, kind, key, value, detail, source, start_ns, end_ns, last_ns, "
    "end_reason, contested_until_ns, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = (
    "UPDATE bindings SET value = ?, detail = ?, source = ?, start_ns = ?, end_ns = ?, "
    "last_ns = ?, end_reason = ?, contested_until_ns = ?, origin = ? WHERE id = ?"
)

# Ranks for splice(): which evidence may displace which (see bindings.splice).
_RANK_NTLM_HOST = 1
_RANK_KERBEROS_HOST = 2
_RANK_LOGON = 1
_RANK_RENEWAL = 0

_V6_REQUESTS = frozenset(
    (
        dhcpv6.SOLICIT,
        dhcpv6.REQUEST,
        dhcpv6.CONFIRM,
        dhcpv6.RENEW,
        dhcpv6.REBIND,
        dhcpv6.INFORMATION_REQUEST,
    )
)


class StoreError(Exception):
    """The database cannot be used: not an identity database, a newer schema, read-only."""


@dataclass(slots=True)
class StoreStats:
    """Counters for the metrics stage: what the store was fed and what it did with it."""

    observations: int = 0
    bindings_changed: int = 0
    ignored: int = 0
    commits: int = 0
    expired_rows: int = 0
    evicted_rows: int = 0


def _row(row: tuple[Any, ...]) -> Binding:
    (id_, tier, kind, key, value, detail, source, start, end, last, reason, contested, origin) = row
    return Binding(
        kind=kind,
        key=key,
        value=value,
        start_ns=start,
        end_ns=end,
        last_ns=last,
        source=source,
        tier=tier,
        detail=detail,
        end_reason=reason,
        contested_until_ns=contested,
        origin=origin,
        id=id_,
    )


def _best_name(*names: str | None) -> str | None:
    """The first fully qualified name among ``names``, else the first name at all."""
    clean = [n for n in (normalize_host(name) for name in names) if n]
    for name in clean:
        if "." in name:
            return name
    return clean[0] if clean else None


def _dhcp_client(msg: DhcpMessage) -> str | None:
    """Who a DHCPv4 message is about: the MAC, else the client identifier, else ``chaddr``."""
    mac = msg.mac or msg.client_id_mac
    if mac:
        return mac
    if msg.client_id:
        return f"id:{msg.client_id}"
    if msg.chaddr.strip("0:"):
        return f"chaddr:{msg.chaddr}"
    return None


def _v6_mac(msg: Dhcpv6Message) -> str | None:
    if msg.mac:
        return msg.mac
    for hop in reversed(msg.relays):
        addr = hop.client_link_layer_address
        if hop.client_link_layer_type == 1 and addr is not None and is_mac(addr):
            return addr
    return None


def _machine_name(principal: KerberosPrincipal) -> str | None:
    """The host a machine principal names: ``WS01$`` (Windows computer account) or
    ``host/ws01.pd.example`` (a host keytab, as Linux and macOS clients use)."""
    parts = principal.components
    if len(parts) == 1 and len(parts[0]) > 1 and parts[0].endswith("$"):
        return normalize_host(parts[0][:-1])
    if len(parts) == 2 and parts[0].lower() == "host" and parts[1]:
        return normalize_host(parts[1])
    return None


def _host_rank(binding: Binding) -> int:
    return _RANK_KERBEROS_HOST if binding.source == SOURCE_KERBEROS else _RANK_NTLM_HOST


def _logon_rank(_binding: Binding) -> int:
    return _RANK_LOGON


class IdentityStore:
    """Time-aware identity bindings in SQLite; see the module docstring.

    ``path`` is a file (created if missing, unless ``read_only``) or ``":memory:"``. Lifetimes
    are in seconds: ``kerberos_ttl_s`` (default 10 h, the usual TGT lifetime) and
    ``ntlm_ttl_s`` (8 h, a working day) for logons that are never seen ending,
    ``default_lease_s`` for a DHCP ACK without a lease time (the ACK to an INFORM, BOOTP),
    ``mac_name_ttl_s`` for a MAC's DHCP host name, and ``stale_after_s`` for how long evidence
    that ran out is still reported (at low confidence).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_rows: int = 1_000_000,
        retention_days: float = 90.0,
        kerberos_ttl_s: float = 10 * 3600,
        ntlm_ttl_s: float = 8 * 3600,
        default_lease_s: float = 3600,
        mac_name_ttl_s: float = 7 * 86400,
        stale_after_s: float = 12 * 3600,
        commit_interval_ms: float = 1000,
        commit_rows: int = 500,
        maintenance_interval_s: float = 300,
        read_only: bool = False,
    ) -> None:
        if max_rows < 1 or commit_rows < 1:
            raise ValueError("max_rows and commit_rows must be positive")
        if min(retention_days, kerberos_ttl_s, ntlm_ttl_s, default_lease_s, mac_name_ttl_s) <= 0:
            raise ValueError("lifetimes and retention must be positive")
        if stale_after_s < 0 or commit_interval_ms < 0 or maintenance_interval_s < 0:
            raise ValueError("stale_after_s, commit_interval_ms and the interval must be >= 0")
        self.max_rows = max_rows
        self.retention_ns = int(retention_days * 86400 * NS)
        self.kerberos_ttl_s = kerberos_ttl_s
        self.ntlm_ttl_s = ntlm_ttl_s
        self.default_lease_s = default_lease_s
        self.mac_name_ttl_s = mac_name_ttl_s
        self.stale_ns = int(stale_after_s * NS)
        self.commit_interval_ns = int(commit_interval_ms * 1_000_000)
        self.commit_rows = commit_rows
        self.maintenance_interval_ns = int(maintenance_interval_s * NS)
        self.read_only = read_only
        self.stats = StoreStats()
        self.inventory = Inventory()
        self._resolvers: frozenset[str] = frozenset()
        self._pending = 0
        self._batch_start: int | None = None
        self._closed = False
        self.path = os.fspath(path)
        self._db = self._connect(self.path, read_only)
        self._rows = self._db.execute("SELECT count(*) FROM bindings").fetchone()[0]
        # Packet time as far as the store knows it: the clock for retention. It starts
        # unknown rather than at the newest row, which one bad timestamp could have set.
        self._now = 0
        self._jump: int | None = None
        self._last_maintenance = 0

    # ------------------------------------------------------------------ database

    @staticmethod
    def _connect(path: str, read_only: bool) -> sqlite3.Connection:
        try:
            if read_only:
                if path == ":memory:":
                    raise StoreError("a read-only store needs a database file")
                if not os.path.exists(path):
                    raise StoreError(f"{path}: no such identity database")
                uri = Path(path).absolute().as_uri() + "?mode=ro"
                db = sqlite3.connect(uri, uri=True, isolation_level=None)
            else:
                db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open: {exc}") from None
        try:
            IdentityStore._prepare(db, path, read_only)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _prepare(db: sqlite3.Connection, path: str, read_only: bool) -> None:
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not an SQLite database: {exc}") from None
        if tables and app_id != APPLICATION_ID:
            raise StoreError(f"{path}: not an identity database (application_id {app_id:#x})")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: schema version {version} is newer than this sensor's {SCHEMA_VERSION}"
            )
        if read_only:
            if version != SCHEMA_VERSION:
                raise StoreError(f"{path}: no identity schema (version {version})")
            return
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        # Let a checkpointed WAL shrink back instead of staying at its high-water mark.
        db.execute("PRAGMA journal_size_limit = 67108864")
        if version == 0:
            db.execute("BEGIN IMMEDIATE")
            try:
                # Statement by statement: executescript() would commit on its own.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _write(self, sql: str, params: tuple[object, ...]) -> sqlite3.Cursor:
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only")
        if self._closed:
            raise StoreError("the identity store is closed")
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        return self._db.execute(sql, params)

    def _apply(self, change: Change) -> bool:
        for binding in change.updates:
            self._write(
                _UPDATE,
                (
                    binding.value,
                    binding.detail,
                    binding.source,
                    binding.start_ns,
                    binding.end_ns,
                    binding.last_ns,
                    binding.end_reason,
                    binding.contested_until_ns,
                    binding.origin,
                    binding.id,
                ),
            )
        for row_id in change.deletes:
            self._rows -= self._write("DELETE FROM bindings WHERE id = ?", (row_id,)).rowcount
        new = change.insert
        if new is not None:
            self._write(
                _INSERT,
                (
                    new.tier,
                    new.kind,
                    new.key,
                    new.value,
                    new.detail,
                    new.source,
                    new.start_ns,
                    new.end_ns,
                    new.last_ns,
                    new.end_reason,
                    new.contested_until_ns,
                    new.origin,
                ),
            )
            self._rows += 1
        if change:
            self.stats.bindings_changed += 1
            self._pending += 1
            return True
        return False

    def _neighbours(
        self, tier: int, kind: str, key: str, ts: int
    ) -> tuple[Binding | None, Binding | None]:
        prev = self._db.execute(_PREV, (key, kind, tier, ts)).fetchone()
        nxt = self._db.execute(_NEXT, (key, kind, tier, ts)).fetchone()
        return (None if prev is None else _row(prev)), (None if nxt is None else _row(nxt))

    def _latest(self, tier: int, kind: str, key: str, ts: int) -> Binding | None:
        row = self._db.execute(_PREV, (key, kind, tier, ts)).fetchone()
        return None if row is None else _row(row)

    def _put(
        self,
        new: Binding,
        *,
        rank: int = 1,
        rank_of: Callable[[Binding], int] | None = None,
        contest: bool = False,
    ) -> bool:
        prev, nxt = self._neighbours(new.tier, new.kind, new.key, new.start_ns)
        return self._apply(splice(prev, nxt, new, new_rank=rank, rank_of=rank_of, contest=contest))

    def _end(
        self, tier: int, kind: str, key: str, at: int, reason: str, value: str | None = None
    ) -> bool:
        return self._apply(end_binding(self._latest(tier, kind, key, at), at, reason, value))

    # ------------------------------------------------------------------ batching

    def _ts(self, ts_ns: int) -> int:
        if not 0 <= ts_ns < MAX_TS:
            raise ValueError(f"timestamp {ts_ns} ns is out of range")
        return int(ts_ns)

    def _advance(self, ts: int) -> None:
        """Move the retention clock to packet time ``ts``.

        Retention deletes what is older than this clock, so one packet with a garbage
        timestamp (a pcap from a device whose clock said 2099) must not move it: a jump of
        more than :data:`MAX_CLOCK_JUMP_NS` (and the first time after opening) is taken only
        when a second observation lands near it, as it does when time really moved on.
        """
        if ts <= self._now:
            return
        if self._now and ts - self._now <= MAX_CLOCK_JUMP_NS:
            self._now = ts
            self._jump = None
        elif self._jump is not None and abs(ts - self._jump) <= MAX_CLOCK_JUMP_NS:
            self._now = max(ts, self._jump)
            self._jump = None
        else:
            self._jump = ts

    def _observed(self, ts: int, changed: bool) -> bool:
        self.stats.observations += 1
        if not changed:
            self.stats.ignored += 1
        self._advance(ts)
        if self._pending:
            if self._batch_start is None:
                self._batch_start = ts
            self.tick(ts)
        return changed

    def tick(self, ts_ns: int) -> None:
        """Commit the open batch if it holds ``commit_rows`` changes or has been open for
        ``commit_interval_ms`` of packet time at ``ts_ns``. Cheap; call it with any packet."""
        if not self._pending or self._batch_start is None:
            return
        if self._pending >= self.commit_rows or abs(ts_ns - self._batch_start) >= (
            self.commit_interval_ns
        ):
            self.flush()

    def flush(self) -> None:
        """Commit the open batch now (after expiring and evicting rows if it is time to)."""
        if self._closed or self.read_only:
            return
        if self._pending or self._rows > self.max_rows:
            self._maintain()
        if self._db.in_transaction:
            self._db.execute("COMMIT")
            self.stats.commits += 1
        self._pending = 0
        self._batch_start = None

    def _maintain(self) -> None:
        due = self._now > 0 and self._now - self._last_maintenance >= self.maintenance_interval_ns
        if due:
            self._last_maintenance = self._now
            cutoff = self._now - self.retention_ns
            if cutoff > 0:
                gone = self._write(
                    "DELETE FROM bindings WHERE last_ns < ? AND coalesce(end_ns, last_ns) < ?",
                    (cutoff, cutoff),
                ).rowcount
                self._rows -= gone
                self.stats.expired_rows += gone
        if self._rows > self.max_rows:
            excess = self._rows - self.max_rows
            gone = self._write(
                "DELETE FROM bindings WHERE id IN "
                "(SELECT id FROM bindings ORDER BY last_ns ASC, id ASC LIMIT ?)",
                (excess,),
            ).rowcount
            self._rows -= gone
            self.stats.evicted_rows += gone

    def close(self) -> None:
        """Commit what is pending and close the database. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._db.close()

    def __enter__(self) -> IdentityStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def row_count(self) -> int:
        return self._rows

    # ------------------------------------------------------------------ configuration

    def set_inventory(self, inventory: Inventory | None) -> None:
        """Use ``inventory`` from now on (None: none). Load it with
        :func:`monitor.attribution.inventory.load_inventory`; when a reload raises, do not
        call this, and the inventory in use stays."""
        self.inventory = inventory if inventory is not None else Inventory()

    def set_resolvers(self, ips: Iterable[str | bytes]) -> None:
        """Addresses whose queries are forwarded for others (DNS resolvers, proxies): their
        attributions are ``resolver_only`` and never name a user."""
        self._resolvers = frozenset(normalize_ip(ip) for ip in ips)

    # ------------------------------------------------------------------ live evidence

    def observe_dhcp(self, ts_ns: int, msg: DhcpMessage) -> bool:
        """Feed one DHCPv4 message (either direction); True if a binding changed."""
        ts = self._ts(ts_ns)
        return self._observed(ts, self._dhcp(ts, msg))

    def _dhcp(self, ts: int, msg: DhcpMessage) -> bool:
        mtype = msg.message_type
        client = _dhcp_client(msg)
        if client is None:
            return False
        mac = msg.mac or msg.client_id_mac
        if msg.op == BOOTREQUEST:
            if mtype in (DHCPRELEASE, DHCPDECLINE):
                ip = msg.bound_ip
                if ip is None:
                    return False
                if mtype == DHCPDECLINE:
                    return self._end(TIER_LIVE, KIND_IP_MAC, ip, ts, END_DECLINE, client)
                return self._release(ip, ts, client)
            name = _best_name(msg.client_fqdn, msg.hostname)
            if mac is None or name is None or mtype not in (DHCPDISCOVER, DHCPREQUEST, DHCPINFORM):
                return False
            return self._mac_name(mac, name, ts, f"DHCP {msg.message_type_name}")
        if msg.op != BOOTREPLY or not (mtype == DHCPACK or mtype is None):
            return False
        ip = msg.bound_ip
        if ip is None:
            return False
        lease = msg.lease_time
        seconds = (
            None
            if lease == LEASE_INFINITE
            else (lease if lease is not None else self.default_lease_s)
        )
        known = self._known_name(mac, ts)
        name = _best_name(msg.client_fqdn, known, msg.hostname)
        origin = f"{msg.message_type_name} xid {msg.xid:#010x}"
        changed = self._lease(ip, client, name, ts, seconds, origin)
        if mac is not None and name is not None:
            changed |= self._mac_name(mac, name, ts, origin)
        return changed

    def observe_dhcpv6(self, ts_ns: int, msg: Dhcpv6Message) -> bool:
        """Feed one DHCPv6 message (either direction, relayed or not); True if a binding
        changed."""
        ts = self._ts(ts_ns)
        return self._observed(ts, self._dhcpv6(ts, msg))

    def _dhcpv6(self, ts: int, msg: Dhcpv6Message) -> bool:
        mac = _v6_mac(msg)
        client = mac or (f"duid:{msg.duid}" if msg.duid else None)
        if client is None:
            return False
        changed = False
        name = normalize_host(msg.client_fqdn)
        if msg.msg_type in _V6_REQUESTS:
            if mac is not None and name is not None:
                changed |= self._mac_name(mac, name, ts, f"DHCPv6 {msg.message_type_name}")
            return changed
        origin = f"{msg.message_type_name} xid {msg.transaction_id:#08x}"
        if msg.msg_type == dhcpv6.REPLY:
            known = self._known_name(mac, ts)
            host = _best_name(msg.client_fqdn, known)
            for addr in msg.bound_addresses:
                lifetime = addr.valid_lifetime
                seconds = None if lifetime == dhcpv6.LIFETIME_INFINITE else lifetime
                changed |= self._lease(addr.address, client, host, ts, seconds, origin)
        for addr in msg.ended_addresses:
            if msg.msg_type == dhcpv6.DECLINE:
                changed |= self._end(TIER_LIVE, KIND_IP_MAC, addr.address, ts, END_DECLINE, client)
            else:
                changed |= self._release(addr.address, ts, client)
        return changed

    def _known_name(self, mac: str | None, ts: int) -> str | None:
        if mac is None:
            return None
        found = self._latest(TIER_LIVE, KIND_MAC_HOST, mac, ts)
        return found.value if found is not None and found.covers(ts) else None

    def _mac_name(self, mac: str, name: str, ts: int, origin: str) -> bool:
        end = clamp_end(ts, self.mac_name_ttl_s)
        return self._put(Binding(KIND_MAC_HOST, mac, name, ts, end, ts, SOURCE_DHCP, origin=origin))

    def _lease(
        self,
        ip: str,
        client: str,
        name: str | None,
        ts: int,
        seconds: float | None,
        origin: str,
    ) -> bool:
        ip = normalize_ip(ip)
        if seconds is not None and seconds <= 0:
            return False
        prev = self._latest(TIER_LIVE, KIND_IP_MAC, ip, ts)
        end = clamp_end(ts, seconds)
        new = Binding(KIND_IP_MAC, ip, client, ts, end, ts, SOURCE_DHCP, detail=name, origin=origin)
        changed = self._put(new)
        if prev is not None and prev.value != client:
            # Another client now holds the address: logons from it during the old lease
            # were the old holder's and end here.
            changed |= self._address_left(ip, ts, prev.end_ns)
        return changed

    def _release(self, ip: str, ts: int, client: str) -> bool:
        ip = normalize_ip(ip)
        prev = self._latest(TIER_LIVE, KIND_IP_MAC, ip, ts)
        if prev is not None and prev.covers(ts) and prev.value != client:
            return False  # not the holder's to give back (stale or forged)
        changed = self._end(TIER_LIVE, KIND_IP_MAC, ip, ts, END_RELEASE, client)
        return self._address_left(ip, ts, None) or changed

    def _address_left(self, ip: str, ts: int, before: int | None) -> bool:
        """End the logons from ``ip`` that cover ``ts`` and began before ``before`` (None:
        whenever): their workstation no longer holds the address."""
        changed = False
        for kind in (KIND_IP_USER, KIND_IP_HOST):
            prev = self._latest(TIER_LIVE, kind, ip, ts)
            if (
                prev is None
                or prev.start_ns >= ts
                or (before is not None and prev.start_ns >= before)
            ):
                continue
            changed |= self._apply(end_binding(prev, ts, END_ADDRESS_MOVED))
        return changed

    def observe_kerberos(self, ts_ns: int, client_ip: str | bytes, msg: KerberosMessage) -> bool:
        """Feed one Kerberos message; ``client_ip`` is the reply's *destination* address.

        Only AS-REP and TGS-REP bind; everything else (requests, KRB-ERROR) is ignored.
        """
        ts = self._ts(ts_ns)
        return self._observed(ts, self._kerberos(ts, client_ip, msg))

    def _kerberos(self, ts: int, client_ip: str | bytes, msg: KerberosMessage) -> bool:
        if not msg.is_success_reply or msg.cname is None or not msg.cname.components:
            return False
        ip = normalize_ip(client_ip)
        end = clamp_end(ts, self.kerberos_ttl_s)
        what = "AS-REP" if msg.msg_type == MSG_AS_REP else "TGS-REP"
        origin = f"{what} {msg.principal}"
        machine = _machine_name(msg.cname)
        if machine is not None:
            new = Binding(KIND_IP_HOST, ip, machine, ts, end, ts, SOURCE_KERBEROS, origin=origin)
            return self._put(new, rank=_RANK_KERBEROS_HOST, rank_of=_host_rank, contest=True)
        user = msg.cname.text
        new = Binding(
            KIND_IP_USER, ip, user, ts, end, ts, SOURCE_KERBEROS, detail=msg.realm, origin=origin
        )
        rank = _RANK_LOGON if msg.msg_type == MSG_AS_REP else _RANK_RENEWAL
        return self._put(new, rank=rank, rank_of=_logon_rank, contest=True)

    def observe_ntlm(self, ts_ns: int, client_ip: str | bytes, msg: NtlmMessage) -> bool:
        """Feed one NTLMSSP message; ``client_ip`` is the address of the client that sent it.

        Only AUTHENTICATE binds: its user (unless anonymous) and its workstation name.
        """
        ts = self._ts(ts_ns)
        return self._observed(ts, self._ntlm(ts, client_ip, msg))

    def _ntlm(self, ts: int, client_ip: str | bytes, msg: NtlmMessage) -> bool:
        if msg.message_type != NTLMSSP_AUTHENTICATE:
            return False
        ip = normalize_ip(client_ip)
        end = clamp_end(ts, self.ntlm_ttl_s)
        origin = f"AUTHENTICATE {msg.identity or '(anonymous)'}"
        changed = False
        user = msg.user_name or ""
        workstation = normalize_host(msg.workstation)
        if user.endswith("$") and len(user) > 1:
            workstation = normalize_host(user[:-1]) or workstation
        elif user:
            new = Binding(
                KIND_IP_USER,
                ip,
                user,
                ts,
                end,
                ts,
                SOURCE_NTLM,
                detail=msg.domain_name or None,
                origin=origin,
            )
            changed |= self._put(new, rank=_RANK_LOGON, rank_of=_logon_rank, contest=True)
        if workstation is not None:
            new = Binding(KIND_IP_HOST, ip, workstation, ts, end, ts, SOURCE_NTLM, origin=origin)
            changed |= self._put(new, rank=_RANK_NTLM_HOST, rank_of=_host_rank, contest=True)
        return changed

    # ------------------------------------------------------------------ lease files

    def load_leases(self, leases: Iterable[Lease], read_at_ns: int) -> int:
        """Fold a lease file's leases into the lease-file tier; returns bindings changed.

        ``read_at_ns`` is when the file was read: the start of leases whose start the server
        did not record (dnsmasq; Kea's infinite leases). Reloading the same file changes
        nothing; a lease in a state that is not bound (released, expired, ...) ends the
        same client's binding at the lease's end. Commits before returning.
        """
        read_at = self._ts(read_at_ns)
        changed = 0
        for lease in leases:
            try:
                ip = normalize_ip(lease.ip)
            except ValueError:
                continue
            client = lease.mac or (f"id:{lease.client_id}" if lease.client_id else None)
            client = client or (f"host:{lease.hostname}" if lease.hostname else None)
            if client is None:
                continue
            origin = f"{lease.source} {lease.file}:{lease.line}"
            if not lease.is_bound:
                if lease.end_ns is not None and 0 <= lease.end_ns < MAX_TS:
                    ended = self._end(
                        TIER_LEASE_FILE, KIND_IP_MAC, ip, lease.end_ns, END_LEASE_FILE, client
                    )
                    changed += ended
                continue
            start = lease.start_ns if lease.start_ns is not None else read_at
            end = lease.end_ns if lease.end_ns is None or lease.end_ns < MAX_TS else None
            if not 0 <= start < MAX_TS:
                continue
            new = Binding(
                KIND_IP_MAC,
                ip,
                client,
                start,
                end,
                start,
                SOURCE_LEASE_FILE,
                tier=TIER_LEASE_FILE,
                detail=normalize_host(lease.hostname),
                origin=origin,
            )
            changed += self._put(new)
        self._advance(read_at)
        self.flush()
        return changed

    # ------------------------------------------------------------------ questions

    def attribute(self, ts_ns: int, ip: str | bytes, mac: str | None = None) -> Attribution:
        """Who was behind ``ip`` at ``ts_ns``. ``mac`` is the Ethernet source of the packet,
        when the sensor sees the client's own segment (never pass a router's MAC): it finds
        the device when no lease does, and a lease naming another MAC lowers confidence.

        Raises ValueError only for an ``ip`` or ``mac`` that is not an address.
        """
        ts = self._ts(ts_ns)
        key = normalize_ip(ip)
        packet_mac = normalize_mac(mac) if mac is not None else None
        lease = self._latest(TIER_LIVE, KIND_IP_MAC, key, ts)
        lease_file = self._latest(TIER_LEASE_FILE, KIND_IP_MAC, key, ts)
        mac_key = None
        for candidate in (lease, lease_file):
            if candidate is not None and candidate.covers(ts) and is_mac(candidate.value):
                mac_key = candidate.value
                break
        if mac_key is None:
            mac_key = packet_mac
        mac_host = self._latest(TIER_LIVE, KIND_MAC_HOST, mac_key, ts) if mac_key else None
        inventory_mac = mac_key
        if inventory_mac is None and lease is not None and is_mac(lease.value):
            inventory_mac = lease.value
        evidence = Evidence(
            lease=lease,
            lease_file=lease_file,
            host=self._latest(TIER_LIVE, KIND_IP_HOST, key, ts),
            user=self._latest(TIER_LIVE, KIND_IP_USER, key, ts),
            mac_host=mac_host,
            mac_host_key=mac_key,
            packet_mac=packet_mac,
            inventory=self.inventory.lookup(key, inventory_mac),
        )
        return resolve(key, ts, evidence, stale_ns=self.stale_ns, resolver=key in self._resolvers)

    def who_had(self, ip: str | bytes, at_ns: int, *, window_ns: int = 0) -> list[Binding]:
        """Every stored binding for ``ip`` that overlaps ``[at_ns - window_ns, at_ns +
        window_ns]`` (with ``window_ns`` 0: that covers ``at_ns``), both tiers, all kinds,
        plus the DHCP names of the MACs those leases name, ordered by start. For the
        ``identities`` command; :meth:`attribute` gives the ranked answer."""
        key = normalize_ip(ip)
        at = self._ts(at_ns)
        low, high = max(0, at - window_ns), min(MAX_TS, at + window_ns)
        query = (
            f"SELECT {_COLUMNS} FROM bindings WHERE key = ? AND start_ns <= ? "
            "AND (end_ns IS NULL OR end_ns > ?) ORDER BY start_ns, kind, tier"
        )
        found = [_row(r) for r in self._db.execute(query, (key, high, low))]
        macs = sorted({b.value for b in found if b.kind == KIND_IP_MAC and is_mac(b.value)})
        for mac in macs:
            found.extend(_row(r) for r in self._db.execute(query, (mac, high, low)))
        found.sort(key=lambda b: (b.start_ns, b.kind, b.tier))
        return found

    def bindings(self) -> list[Binding]:
        """Every stored binding (tests, debugging, export), ordered by timeline and start."""
        query = f"SELECT {_COLUMNS} FROM bindings ORDER BY tier, kind, key, start_ns"
        return [_row(r) for r in self._db.execute(query)]
