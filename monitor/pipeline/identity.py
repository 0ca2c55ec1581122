"""The engine's side of attribution: identity traffic into the store, the store's answer out.

The engine hands this tap the packets that carry identities (DHCPv4/v6, Kerberos replies,
NTLM AUTHENTICATE in SMB2 and HTTP), already picked by port, and asks it, once per detection,
who was behind the client address at the packet's time. Parsing and the store's SQLite work
happen only here, so an engine without an attributor pays nothing for them, and a store error
(a full disk under the state database, say) costs a counter, never the sensor.

The packet's source MAC is passed to :meth:`monitor.attribution.store.IdentityStore.attribute`
only when it is known as a DHCP client's (seen in a DHCP message or a lease file): at an
uplink the Ethernet source of every routed packet is the router, and a router's MAC compared
with the client's lease would mark every detection a conflict. A MAC that DHCP knows is a
device on the sensor's segment, where the frame's source really is the client.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

from monitor.attribution.bindings import normalize_ip
from monitor.attribution.leasefiles import (
    Lease,
    LeaseWarning,
    read_dnsmasq_leases,
    read_isc_dhcpd_leases,
    read_kea_csv,
)
from monitor.attribution.resolve import Attribution
from monitor.attribution.store import IdentityStore, StoreError
from monitor.decode.packet import Packet
from monitor.protocols.dhcp import DhcpParseError, parse_dhcp
from monitor.protocols.dhcpv6 import Dhcpv6ParseError, parse_dhcpv6
from monitor.protocols.kerberos import KerberosParseError, parse_kerberos
from monitor.protocols.ntlm import (
    NTLMSSP_AUTHENTICATE,
    NtlmParseError,
    find_ntlmssp_in_http,
    find_ntlmssp_in_smb2,
    parse_ntlmssp,
)

DHCP_PORTS = frozenset({67, 68})
DHCPV6_PORTS = frozenset({546, 547})
KERBEROS_PORT = 88
SMB_PORT = 445
#: UDP ports whose datagrams the engine hands to :meth:`IdentityTap.udp`.
IDENTITY_UDP_PORTS = DHCP_PORTS | DHCPV6_PORTS | {KERBEROS_PORT}

_STORE_ERRORS = (sqlite3.Error, StoreError, ValueError)


def read_lease_file(fmt: str, path: str, warnings: list[LeaseWarning]) -> list[Lease]:
    """A lease file in ``fmt`` (isc, kea, dnsmasq); bad entries go to ``warnings``.
    Raises LeaseFileError when the file cannot be read, ValueError for an unknown format."""
    if fmt == "isc":
        return read_isc_dhcpd_leases(path, warnings=warnings)
    if fmt == "kea":
        return read_kea_csv(path, warnings=warnings)
    if fmt == "dnsmasq":
        return read_dnsmasq_leases(path, warnings=warnings)
    raise ValueError(f"unknown lease file format {fmt!r} (isc, kea, dnsmasq)")


def looks_like_kerberos_reply_record(data: bytes) -> bool:
    """A Kerberos-over-TCP record marker (RFC 4120 7.2.2) followed by an AS-REP, TGS-REP or
    KRB-ERROR tag: where a KDC's reply stream starts, when the capture missed the handshake."""
    return len(data) >= 5 and data[0] == 0 and data[4] in (0x6B, 0x6D, 0x7E)


@dataclass(slots=True)
class IdentityStats:
    """Counters under the engine's ``<protocol>_messages`` / ``<protocol>_parse_errors``
    convention, so the metrics pick them up without a table entry."""

    dhcp_messages: int = 0
    dhcp_parse_errors: int = 0
    dhcpv6_messages: int = 0
    dhcpv6_parse_errors: int = 0
    kerberos_messages: int = 0
    kerberos_parse_errors: int = 0
    ntlm_messages: int = 0
    ntlm_parse_errors: int = 0
    identity_bindings_changed: int = 0
    detections_attributed: int = 0  # detections for which anything at all was known
    attribution_errors: int = 0


class IdentityTap:
    """Feeds an :class:`IdentityStore` from packets and attributes detections from it."""

    __slots__ = ("_client_macs", "_max_client_macs", "_resolvers", "stats", "store")

    def __init__(
        self,
        store: IdentityStore,
        resolvers: Iterable[str | bytes] = (),
        *,
        max_client_macs: int = 65536,
    ) -> None:
        self.store = store
        self.stats = IdentityStats()
        self._client_macs: dict[bytes, None] = {}
        self._max_client_macs = max_client_macs
        self._resolvers: frozenset[str] = frozenset()
        self.set_resolvers(resolvers)

    # -- configuration ------------------------------------------------------------------------

    def set_resolvers(self, ips: Iterable[str | bytes]) -> None:
        """Addresses of internal resolvers (and proxies): their detections are resolver-only.
        Raises ValueError for something that is not an address."""
        resolvers = frozenset(normalize_ip(ip) for ip in ips)
        self.store.set_resolvers(resolvers)
        self._resolvers = resolvers

    def load_leases(self, leases: Iterable[Lease], read_at_ns: int) -> int:
        """Fold a lease file into the store (see ``IdentityStore.load_leases``); its MACs
        become known DHCP clients. Returns the bindings changed."""
        leases = list(leases)
        for lease in leases:
            if lease.mac:
                self._client_mac(lease.mac)
        return self.store.load_leases(leases, read_at_ns)

    def _client_mac(self, mac: str) -> None:
        try:
            packed = bytes.fromhex(mac.replace(":", ""))
        except ValueError:
            return
        if len(packed) != 6:
            return
        macs = self._client_macs
        if packed in macs:
            return
        if len(macs) >= self._max_client_macs:
            del macs[next(iter(macs))]
        macs[packed] = None

    # -- identity traffic ---------------------------------------------------------------------

    def udp(self, pkt: Packet) -> None:
        """A datagram on a DHCP, DHCPv6 or Kerberos port (either direction)."""
        sport, dport = pkt.sport, pkt.dport
        stats = self.stats
        if sport in DHCP_PORTS and dport in DHCP_PORTS:
            try:
                msg = parse_dhcp(pkt.payload)
            except DhcpParseError:
                stats.dhcp_parse_errors += 1
                return
            stats.dhcp_messages += 1
            mac = msg.mac or msg.client_id_mac
            if mac:
                self._client_mac(mac)
            self._changed(self._call(self.store.observe_dhcp, pkt.ts, msg))
        elif sport in DHCPV6_PORTS and dport in DHCPV6_PORTS:
            try:
                msg6 = parse_dhcpv6(pkt.payload)
            except Dhcpv6ParseError:
                stats.dhcpv6_parse_errors += 1
                return
            stats.dhcpv6_messages += 1
            if msg6.mac:
                self._client_mac(msg6.mac)
            self._changed(self._call(self.store.observe_dhcpv6, pkt.ts, msg6))
        elif sport == KERBEROS_PORT:
            # Only the KDC's replies bind anything; requests are not parsed at all.
            self.kerberos_reply(pkt, pkt.payload)

    def kerberos_reply(self, pkt: Packet, message: bytes) -> None:
        """One Kerberos message from a KDC (a UDP payload, or a TCP record without marker):
        a successful reply binds its client to the reply's destination address."""
        try:
            msg = parse_kerberos(message)
        except KerberosParseError:
            self.stats.kerberos_parse_errors += 1
            return
        self.stats.kerberos_messages += 1
        if msg.is_success_reply:
            self._changed(self._call(self.store.observe_kerberos, pkt.ts, pkt.dst, msg))

    def smb(self, pkt: Packet) -> None:
        """A client segment to TCP 445 that the prefilter let through: an SMB2 SESSION_SETUP
        request whose security buffer may hold an NTLM AUTHENTICATE. Looked at segment by
        segment (the prefilter passes only a setup's first segment, so reassembly would make
        replay and live disagree); a setup split over segments is missed, as tshark would
        need reassembly for it too."""
        blob = find_ntlmssp_in_smb2(pkt.payload)
        if blob is not None:
            self._ntlm(pkt, blob)

    def http_authorization(self, pkt: Packet, values: Iterable[bytes]) -> None:
        """NTLM / Negotiate ``(Proxy-)Authorization`` values of a request from ``pkt.src``."""
        for value in values:
            blob = find_ntlmssp_in_http(b"Authorization: " + value)
            if blob is not None:
                self._ntlm(pkt, blob)

    def _ntlm(self, pkt: Packet, blob: bytes) -> None:
        try:
            msg = parse_ntlmssp(blob)
        except NtlmParseError:
            self.stats.ntlm_parse_errors += 1
            return
        self.stats.ntlm_messages += 1
        if msg.message_type == NTLMSSP_AUTHENTICATE:
            self._changed(self._call(self.store.observe_ntlm, pkt.ts, pkt.src, msg))

    def _call(self, method: Callable[..., bool], *args: object) -> bool:
        try:
            return bool(method(*args))
        except _STORE_ERRORS:
            self.stats.attribution_errors += 1
            return False

    def _changed(self, changed: bool) -> None:
        if changed:
            self.stats.identity_bindings_changed += 1

    def tick(self, ts: int) -> None:
        """Let the store close a write batch while no identity traffic arrives."""
        try:
            self.store.tick(ts)
        except _STORE_ERRORS:
            self.stats.attribution_errors += 1

    # -- detections ---------------------------------------------------------------------------

    def attribute(self, ts: int, ip: bytes, mac: bytes | None) -> Attribution | None:
        """Who was behind ``ip`` at ``ts`` (None only when the store failed: counted).

        With an empty store, no inventory and no resolvers the answer is known to be empty,
        so the SQLite round trips are skipped: the common case of a sensor that sees no
        identity traffic costs one object per detection.
        """
        store = self.store
        try:
            if not (store.row_count or self._resolvers or len(store.inventory)):
                return Attribution(ip=normalize_ip(ip), at_ns=ts)
            mac_text = mac.hex(":") if mac is not None and mac in self._client_macs else None
            found = store.attribute(ts, ip, mac_text)
        except _STORE_ERRORS:
            self.stats.attribution_errors += 1
            return None
        if found.known:
            self.stats.detections_attributed += 1
        return found

    def counters(self) -> dict[str, int]:
        return {f.name: getattr(self.stats, f.name) for f in fields(self.stats)}
