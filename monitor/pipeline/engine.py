"""From frames to detections: decode, pick the protocol, reassemble, parse, match.

This is the one code path behind both replay and live capture. It holds all per-flow state in
bounded tables and turns every parse failure into a counter. Only names that match the blocklist
leave this module; everything else is forgotten as soon as it has been looked at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from monitor import __version__
from monitor.blocklist.matcher import Matcher
from monitor.blocklist.model import BLIND_SPOT_CATEGORIES, Indicator, Match, Vendor
from monitor.blocklist.names import normalize_name
from monitor.decode.packet import PROTO_TCP, PROTO_UDP, Decoder, Packet
from monitor.events.ecs import ip_text
from monitor.flows.table import FlowTable
from monitor.flows.tcp_stream import StreamStats, TcpStream
from monitor.pipeline.detection import Detection
from monitor.pipeline.identity import (
    IDENTITY_UDP_PORTS,
    KERBEROS_PORT,
    SMB_PORT,
    IdentityTap,
    looks_like_kerberos_reply_record,
)
from monitor.pipeline.resolved import ResolvedAddresses, pack_ip
from monitor.protocols.dns import (
    DnsMessage,
    DnsParseError,
    DnsTcpFramer,
    cname_chain,
    parse_message,
)
from monitor.protocols.fingerprint import Transport, ja3, ja4
from monitor.protocols.http import (
    HttpParseError,
    HttpRequest,
    HttpRequestStream,
    looks_like_request_start,
)
from monitor.protocols.kerberos import KerberosFramingError, KerberosTcpFramer
from monitor.protocols.quic import QuicInitialTracker, QuicOutcomeKind
from monitor.protocols.tls import (
    ClientHello,
    HelloStatus,
    TlsParseError,
    looks_like_client_hello_start,
    scan_client_hello,
)

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

# The evidence kinds this engine can produce; tests compare sample intents against this set.
# ip-resolved: a connection to an address a DNS answer gave for a vendor name (to another
# host: typically an internal resolver); ip-cidr: to an address in a listed vendor network.
EVIDENCE_KINDS = frozenset(
    {
        "dns-query",
        "dns-cname",
        "tls-sni",
        "quic-sni",
        "tls-ja4",
        "quic-ja4",
        "http-host",
        "http-connect",
        "ip-resolved",
        "ip-cidr",
    }
)

# Encrypted DNS recognised by its port alone (DoT/DoQ to a resolver no list names).
_UNLISTED_RESOLVER = Vendor(
    id="unlisted-resolver",
    name="DNS over TLS/QUIC to an unlisted resolver",
    category="encrypted-dns",
    severity="low",
    references=("https://www.rfc-editor.org/rfc/rfc7858", "https://www.rfc-editor.org/rfc/rfc9250"),
    notes="Any TLS or QUIC hello on port 853.",
)
ENCRYPTED_DNS_PORT_INDICATOR = Indicator(
    kind="port",
    value="853",
    vendor=_UNLISTED_RESOLVER,
    severity="low",
    shared=False,
    note=None,
    list_name="builtin",
    list_version=__version__,
    file="monitor/pipeline/engine.py",
    line=0,
)

# The HTTP parser's per-connection request cap exists to stop runaway input; a keep-alive
# connection must not be able to blind the sensor by sending many harmless requests first.
HTTP_MAX_REQUESTS = 1 << 30

QTYPE_NAMES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    64: "SVCB",
    65: "HTTPS",
    255: "ANY",
}
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass(slots=True)
class EngineConfig:
    """Ports and bounds; defaults are what the issue and the field expect."""

    dns_ports: frozenset[int] = frozenset({53})
    tls_ports: frozenset[int] = frozenset({443, 8443, 853})
    http_ports: frozenset[int] = frozenset({80, 8080, 3128, 8000})
    quic_ports: frozenset[int] = frozenset({443, 853})
    # DNS over TLS (RFC 7858) and over QUIC (RFC 9250): any hello there is encrypted DNS.
    encrypted_dns_ports: frozenset[int] = frozenset({853})
    blind_spot_window_s: float = 600.0
    max_blind_spot_keys: int = 16384
    max_quic_connections: int = 4096
    max_flows: int = 65536
    flow_idle_timeout_s: float = 120.0
    max_hello_bytes: int = 16384
    max_http_head_bytes: int = 16384
    max_dns_transactions: int = 65536
    dns_transaction_timeout_s: float = 30.0
    # Vendor addresses learned from DNS answers (ip-resolved): how many, and the TTL bounds.
    max_resolved_addresses: int = 65536
    resolved_min_ttl_s: float = 60.0
    resolved_max_ttl_s: float = 86400.0


@dataclass(slots=True)
class EngineStats:
    dns_messages: int = 0
    dns_parse_errors: int = 0
    dns_tcp_resyncs: int = 0
    tls_client_hellos: int = 0
    quic_client_hellos: int = 0
    ech_offered_hellos: int = 0
    ech_observed_events: int = 0
    encrypted_dns_events: int = 0
    blind_spot_suppressed: int = 0
    tls_parse_errors: int = 0
    tls_not_tls: int = 0
    tls_hello_too_large: int = 0
    stream_overflow: int = 0
    http_requests: int = 0
    http_parse_errors: int = 0
    http_tunnels: int = 0
    detections: int = 0
    by_protocol: dict[str, int] = field(default_factory=dict)
    by_evidence: dict[str, int] = field(default_factory=dict)
    by_vendor_protocol: dict[tuple[str, str], int] = field(default_factory=dict)


class _Flow:
    """State of one client-to-server (or, for DNS, one-way) TCP direction."""

    __slots__ = ("buf", "done", "framer", "http", "ip_match", "kind", "krb", "last_seen", "stream")

    def __init__(self, kind: str, stream: TcpStream, last_seen: int) -> None:
        self.kind = kind  # "tls" | "http" | "dns" | "krb" (a KDC's replies)
        self.stream: TcpStream | None = stream
        self.last_seen = last_seen
        self.buf = bytearray()
        self.http: HttpRequestStream | None = None
        self.framer: DnsTcpFramer | None = None
        self.krb: KerberosTcpFramer | None = None
        # An ip-resolved / ip-cidr hit waiting for the client's first message, which may name
        # another host on a shared address (then it is dropped): (evidence, match).
        self.ip_match: tuple[str, Match] | None = None
        self.done = False


class _Seen:
    __slots__ = ("last_seen",)

    def __init__(self, ts: int) -> None:
        self.last_seen = ts


def tls_details(hello: ClientHello, transport: Transport) -> dict[str, Any]:
    """The ECS ``tls`` object of a matched hello; fingerprints are only computed for those."""
    client: dict[str, Any] = {"server_name": hello.server_name}
    if hello.alpn:
        client["alpn"] = list(hello.alpn)
    client["ech_offered"] = hello.has_ech
    client["ja3"] = ja3(hello)
    client["ja4"] = ja4(hello, transport)
    return {"client": client}


class _Opened:
    __slots__ = ("last_seen", "next_seq", "syn")

    def __init__(self, ts: int, next_seq: int) -> None:
        self.last_seen = ts
        self.next_seq = next_seq
        # With the evidence hook: the SYN's (time, link type, frame), handed over if the
        # connection turns out to be TLS (the frame alone: a table full of SYNs stays small).
        self.syn: tuple[int, int, bytes] | None = None


_K = TypeVar("_K")


def _add_counts(into: dict[_K, int], more: dict[_K, int]) -> None:
    for key, n in more.items():
        into[key] = into.get(key, 0) + n


def _has_vendor_cidrs(matcher: Matcher) -> bool:
    """Whether any listed network is a vendor's (blind-spot lists list resolvers' networks)."""
    return any(
        ind.kind == "cidr" and ind.vendor.category not in BLIND_SPOT_CATEGORIES
        for ind in matcher.indicators
    )


def _http_or_tls_start(data: bytes) -> bool:
    return looks_like_request_start(data) or looks_like_client_hello_start(data)


def _any_start(data: bytes) -> bool:
    return True


class Engine:
    """Feed it frames with :meth:`process`; detections go to the ``emit`` callback.

    With an ``identity`` tap (an :class:`~monitor.attribution.store.IdentityStore` wrapped in
    :class:`~monitor.pipeline.identity.IdentityTap`) the engine also feeds it DHCP, Kerberos
    and NTLM traffic and every detection carries the attribution at its packet time.
    """

    def __init__(
        self,
        matcher: Matcher,
        emit: Callable[[Detection], None],
        config: EngineConfig | None = None,
        *,
        identity: IdentityTap | None = None,
        on_packet: Callable[[Packet, int, bytes], None] | None = None,
    ) -> None:
        self.matcher = matcher
        self.identity = identity
        #: Called with (packet, link type, frame) for each candidate packet -- DNS, TLS,
        #: HTTP or QUIC by port, either direction -- before the engine looks at it, and for
        #: TLS on an unlisted port once its hello has shown it (with the SYN kept till then);
        #: the evidence recorder keeps those frames. None (the default) costs one check a frame.
        self.on_packet = on_packet
        self.emit_detection = emit
        self.config = config or EngineConfig()
        self.decoder = Decoder()
        self.stats = EngineStats()
        self.stream_stats = StreamStats()
        cfg = self.config
        self.flows: FlowTable[_Flow] = FlowTable(cfg.max_flows, cfg.flow_idle_timeout_s)
        self.dns_transactions: FlowTable[_Seen] = FlowTable(
            cfg.max_dns_transactions, cfg.dns_transaction_timeout_s
        )
        self.quic = QuicInitialTracker(
            max_connections=cfg.max_quic_connections, max_hello_bytes=cfg.max_hello_bytes
        )
        self.blind_spot_seen: FlowTable[_Seen] = FlowTable(
            cfg.max_blind_spot_keys, cfg.blind_spot_window_s
        )
        self.blind_spot_window_ns = int(cfg.blind_spot_window_s * 1e9)
        self.unlisted_syns: FlowTable[_Opened] = FlowTable(cfg.max_flows, cfg.flow_idle_timeout_s)
        self.resolved = ResolvedAddresses(
            cfg.max_resolved_addresses,
            min_ttl_s=cfg.resolved_min_ttl_s,
            max_ttl_s=cfg.resolved_max_ttl_s,
        )
        self._vendor_cidrs = _has_vendor_cidrs(matcher)
        self.last_packet_ts = 0
        self._next_sweep = 0
        # Counters of a helper process that parsed part of the same capture (absorb()).
        self._absorbed: dict[str, int] = {}

    # -- entry point --------------------------------------------------------------------------

    def process(self, ts: int, linktype: int, data: bytes) -> None:
        pkt = self.decoder.decode(ts, linktype, data)
        if pkt is None:
            return
        self.last_packet_ts = ts
        handed = self.on_packet is not None and self._candidate(pkt, linktype, data)
        if pkt.proto == PROTO_UDP:
            cfg = self.config
            if pkt.dport in cfg.dns_ports or pkt.sport in cfg.dns_ports:
                self._dns_message(pkt, pkt.payload, "udp")
            elif (pkt.dport in cfg.quic_ports or pkt.sport in cfg.quic_ports) and pkt.payload:
                self._quic(pkt)
            elif self.identity is not None and (
                pkt.dport in IDENTITY_UDP_PORTS or pkt.sport in IDENTITY_UDP_PORTS
            ):
                self.identity.udp(pkt)
        elif pkt.proto == PROTO_TCP:
            self._tcp(pkt)
            if self.on_packet is not None and not handed:
                self._unlisted_candidate(pkt, linktype, data)
        if ts >= self._next_sweep:
            self._sweep(ts)

    def _candidate(self, pkt: Packet, linktype: int, data: bytes) -> bool:
        """Hand ``on_packet`` the frames that could become an alert's evidence: the ports the
        engine parses, both directions (the DNS answer, the server's half of the handshake).
        True if it did."""
        cfg = self.config
        sport, dport = pkt.sport, pkt.dport
        ports: tuple[frozenset[int], ...]
        if pkt.proto == PROTO_UDP:
            ports = (cfg.dns_ports, cfg.quic_ports)
        elif pkt.proto == PROTO_TCP:
            ports = (cfg.dns_ports, cfg.tls_ports, cfg.http_ports)
        else:
            return False
        for group in ports:
            if dport in group or sport in group:
                assert self.on_packet is not None
                self.on_packet(pkt, linktype, data)
                return True
        return False

    def _unlisted_candidate(self, pkt: Packet, linktype: int, data: bytes) -> None:
        """TLS on a port nobody listed is known only once its hello arrives, after the
        engine has seen the segment: then hand over the connection's SYN (kept until now)
        and the segment, and every later segment of the flow."""
        on_packet = self.on_packet
        assert on_packet is not None
        key = (pkt.src, pkt.dst, pkt.sport, pkt.dport)
        flow = self.flows.get(key)
        opened = self.unlisted_syns.get(key)
        if flow is None or flow.kind != "tls":
            if opened is not None and pkt.flags & TCP_SYN and not pkt.flags & TCP_ACK:
                opened.syn = (pkt.ts, linktype, data)
            return
        if opened is not None and opened.syn is not None:
            ts, syn_linktype, frame = opened.syn
            opened.syn = None
            # Decoded again by a decoder of its own: the engine's counted this frame already.
            syn = Decoder().decode(ts, syn_linktype, frame)
            if syn is not None:
                on_packet(syn, syn_linktype, frame)
        on_packet(pkt, linktype, data)

    def _sweep(self, ts: int) -> None:
        """Expire idle state in every table; once per second of packet time, not per packet."""
        self._next_sweep = ts + 1_000_000_000
        self.flows.tick(ts)
        self.dns_transactions.tick(ts)
        self.unlisted_syns.tick(ts)
        self.blind_spot_seen.tick(ts)
        self.resolved.sweep(ts)
        if self.identity is not None:
            self.identity.tick(ts)

    def counters(self) -> dict[str, int]:
        """Every counter under one stable flat name: for summaries, metrics and tests."""
        dec = self.decoder.stats
        st = self.stats
        out = {
            "frames": dec.frames,
            "ip_packets": dec.ip_packets,
            "non_ip_frames": dec.non_ip,
            "truncated_frames": dec.truncated,
            "unknown_linktype_frames": dec.unknown_linktype,
            "ipv4_fragments_skipped": dec.ipv4_fragments,
            "ipv6_fragments_skipped": dec.ipv6_fragments,
            "other_transport_packets": dec.other_transport,
            "dns_messages": st.dns_messages,
            "dns_parse_errors": st.dns_parse_errors,
            "dns_tcp_resyncs": st.dns_tcp_resyncs,
            "tls_client_hellos": st.tls_client_hellos,
            "quic_client_hellos": st.quic_client_hellos,
            "ech_offered_hellos": st.ech_offered_hellos,
            "ech_observed_events": st.ech_observed_events,
            "encrypted_dns_events": st.encrypted_dns_events,
            "blind_spot_suppressed": st.blind_spot_suppressed,
            "quic_initial_packets": self.quic.stats.initial_packets,
            "quic_decrypt_failures": self.quic.stats.decrypt_failures,
            "quic_unknown_versions": self.quic.stats.unknown_versions,
            "quic_version_negotiation": self.quic.stats.version_negotiation,
            "quic_connections_evicted": self.quic.stats.evicted_lru + self.quic.stats.evicted_idle,
            "tls_parse_errors": st.tls_parse_errors,
            "tls_not_tls": st.tls_not_tls,
            "tls_hello_too_large": st.tls_hello_too_large,
            "http_requests": st.http_requests,
            "http_parse_errors": st.http_parse_errors,
            "http_tunnels": st.http_tunnels,
            "stream_overflow": st.stream_overflow,
            "tcp_retransmitted_segments": self.stream_stats.retransmitted,
            "tcp_out_of_order_segments": self.stream_stats.out_of_order,
            "flows_created": self.flows.stats.created,
            "flows_evicted": self.flows.stats.evicted,
            "flows_expired": self.flows.stats.expired,
            "detections": st.detections,
        }
        rs = self.resolved.stats
        out["resolved_addresses_learned"] = rs.learned
        out["resolved_addresses_evicted"] = rs.evicted
        out["resolved_addresses_expired"] = rs.expired
        out["ip_resolved_superseded"] = rs.superseded
        out["ip_resolved_other_name"] = rs.other_name
        if self.identity is not None:
            out.update(self.identity.counters())
        for name, n in dec.tunnels.items():
            out[f"tunnel_{name}_packets"] = n
        for name, n in self._absorbed.items():
            out[name] = out.get(name, 0) + n
        return out

    def absorb(self, counters: dict[str, int], stats: EngineStats) -> None:
        """Count in what another engine saw of the same capture (the worker of a
        two-process replay, monitor.pipeline.parallel), so summaries and tests see one total."""
        for name, n in counters.items():
            self._absorbed[name] = self._absorbed.get(name, 0) + n
        mine = self.stats
        _add_counts(mine.by_protocol, stats.by_protocol)
        _add_counts(mine.by_evidence, stats.by_evidence)
        _add_counts(mine.by_vendor_protocol, stats.by_vendor_protocol)

    def swap_matcher(self, matcher: Matcher) -> None:
        """Atomically use a new blocklist; flow state is kept, nothing in flight is lost."""
        self._vendor_cidrs = _has_vendor_cidrs(matcher)
        self.matcher = matcher

    # -- DNS ----------------------------------------------------------------------------------

    def _dns_message(self, pkt: Packet, data: bytes, transport: str) -> None:
        try:
            msg = parse_message(data)
        except DnsParseError:
            self.stats.dns_parse_errors += 1
            return
        self.stats.dns_messages += 1
        if not msg.questions:
            return
        qname = msg.questions[0].name
        match = self.matcher.match_name(qname)
        if not msg.is_response:
            if match is None:
                return
            key = (pkt.src, pkt.sport, pkt.dst, pkt.dport, msg.id, qname)
            if self._seen_transaction(key, pkt.ts):
                return
            self._emit(pkt, "dns-query", "dns", transport, match, self._dns_details(msg, None))
            return
        if match is not None:
            if msg.addresses:
                self._learn_addresses(pkt, msg, match, qname)
            # The response alone stands for the transaction when its query was not captured.
            key = (pkt.dst, pkt.dport, pkt.src, pkt.sport, msg.id, qname)
            if self._seen_transaction(key, pkt.ts):
                return
            details = self._dns_details(msg, None)
            self._emit(pkt, "dns-query", "dns", transport, match, details, reply=True)
            return
        for target in cname_chain(msg):
            cmatch = self.matcher.match_name(target)
            if cmatch is not None:
                if msg.addresses:
                    self._learn_addresses(pkt, msg, cmatch, target)
                details = self._dns_details(msg, target)
                self._emit(pkt, "dns-cname", "dns", transport, cmatch, details, reply=True)
                return

    def _learn_addresses(self, pkt: Packet, msg: DnsMessage, match: Match, start: str) -> None:
        """Remember the answer's A/AAAA records from the vendor name ``start`` on along the
        CNAME chain, for ip-resolved (see :mod:`monitor.pipeline.resolved`)."""
        ind = match.indicator
        if msg.rcode != 0 or ind.shared or ind.vendor.category in BLIND_SPOT_CATEGORIES:
            return
        chain = cname_chain(msg)
        after = chain[chain.index(start) + 1 :] if start in chain else chain
        owners = {start, *after}
        for record in msg.addresses:
            if record.owner in owners:
                self.resolved.learn(pkt.ts, record.address, record.ttl, match, pkt.dst)

    # -- connections to vendor addresses (ip-resolved, ip-cidr) -------------------------------

    def _ip_candidate(self, pkt: Packet) -> tuple[str, Match] | None:
        """A listed vendor network, else a vendor address a DNS answer gave another host."""
        if self._vendor_cidrs:
            listed = self.matcher.match_ip(ip_text(pkt.dst))
            if listed is not None and listed.indicator.vendor.category not in BLIND_SPOT_CATEGORIES:
                return ("ip-cidr", listed)
        if self.resolved.entries:
            learned = self.resolved.lookup(pkt.ts, pkt.dst, pkt.src)
            if learned is not None:
                return ("ip-resolved", learned)
        return None

    def _ip_report(
        self,
        hit: tuple[str, Match],
        pkt: Packet,
        protocol: str,
        transport: str,
        host: str | None,
    ) -> None:
        """Report a connection to a vendor address when its first message names no host.

        A hello or request that names the vendor is reported by its own event (one access,
        one event); one that names another host goes elsewhere on a shared address (a CDN
        serves the vendor and others alike) -- except in a listed vendor network (ip-cidr),
        which the vendor alone uses. An IP literal as Host names no host.
        """
        evidence, match = hit
        if host and pack_ip(host.strip("[]")) is None:
            named = self.matcher.match_name(host)
            if named is not None and named.indicator.vendor.id == match.indicator.vendor.id:
                self.resolved.stats.superseded += 1
                return
            if evidence == "ip-resolved":
                self.resolved.stats.other_name += 1
                return
        self._emit(pkt, evidence, protocol, transport, match, {})

    def _ip_flow(self, flow: _Flow, pkt: Packet, protocol: str, host: str | None) -> None:
        hit = flow.ip_match
        if hit is not None:
            flow.ip_match = None
            self._ip_report(hit, pkt, protocol, "tcp", host)

    def _seen_transaction(self, key: tuple[Any, ...], ts: int) -> bool:
        seen = self.dns_transactions.get(key)
        if seen is not None:
            seen.last_seen = ts
            return True
        self.dns_transactions.add(key, _Seen(ts))
        return False

    @staticmethod
    def _dns_details(msg: DnsMessage, cname_target: str | None) -> dict[str, Any]:
        q = msg.questions[0]
        dns: dict[str, Any] = {
            "type": "answer" if msg.is_response else "query",
            "id": msg.id,
            "question": {"name": q.name, "type": QTYPE_NAMES.get(q.qtype, f"TYPE{q.qtype}")},
        }
        if msg.is_response:
            dns["response_code"] = RCODE_NAMES.get(msg.rcode, str(msg.rcode))
        if cname_target is not None:
            # Only the CNAME links that lead to the vendor name: the rest of the answer could be
            # anything and is none of the sensor's business.
            chain = []
            want = q.name
            for owner, target, ttl in msg.cnames:
                if owner == want:
                    chain.append({"name": owner, "type": "CNAME", "data": target, "ttl": ttl})
                    want = target
                    if target == cname_target:
                        break
            dns["answers"] = chain
        return {"dns": dns}

    # -- QUIC ---------------------------------------------------------------------------------

    def _quic(self, pkt: Packet) -> None:
        if not pkt.payload[0] & 0x80:
            self.quic.stats.datagrams += 1
            self.quic.stats.not_initial += 1
            return  # short header: 1-RTT data, opaque by design
        for outcome in self.quic.feed(pkt.ts, pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.payload):
            if outcome.kind is QuicOutcomeKind.HELLO and outcome.hello is not None:
                self._quic_hello(pkt, outcome.hello)

    def _quic_hello(self, pkt: Packet, hello: ClientHello) -> None:
        self.stats.quic_client_hellos += 1
        if self._vendor_cidrs or pkt.dst in self.resolved.entries:
            hit = self._ip_candidate(pkt)
            if hit is not None:
                self._ip_report(hit, pkt, "quic", "udp", hello.server_name)
        self._client_hello(pkt, hello, "quic", "udp")

    # -- ClientHellos (TLS and QUIC) ----------------------------------------------------------

    def _client_hello(self, pkt: Packet, hello: ClientHello, protocol: str, transport: str) -> None:
        """Vendor access by SNI or JA4, else the blind spots: encrypted DNS and real ECH."""
        stats = self.stats
        if hello.has_ech:
            stats.ech_offered_hellos += 1
        fp: Transport = "quic" if protocol == "quic" else "tcp"
        sni = hello.server_name
        match = self.matcher.match_name(sni) if sni else None
        evidence = f"{protocol}-sni"
        if match is not None:
            category = match.indicator.vendor.category
            if category not in BLIND_SPOT_CATEGORIES:
                self._emit(
                    pkt, evidence, protocol, transport, match, {"tls": tls_details(hello, fp)}
                )
                return
            if category == "encrypted-dns":
                self._blind_spot(pkt, "encrypted-dns", evidence, protocol, transport, match, hello)
                return
            if hello.has_ech:
                self._blind_spot(pkt, "ech-observed", evidence, protocol, transport, match, hello)
                return
        if self.matcher.ja4:
            jmatch = self.matcher.match_ja4(ja4(hello, fp))
            if jmatch is not None and jmatch.indicator.vendor.category not in BLIND_SPOT_CATEGORIES:
                self._emit(
                    pkt,
                    f"{protocol}-ja4",
                    protocol,
                    transport,
                    jmatch,
                    {"tls": tls_details(hello, fp)},
                )
                return
        # Encrypted DNS without a listed name: a resolver's address, or the DoT/DoQ port.
        ipmatch = self.matcher.match_ip(ip_text(pkt.dst))
        if ipmatch is not None and ipmatch.indicator.vendor.category == "encrypted-dns":
            self._blind_spot(
                pkt, "encrypted-dns", f"{protocol}-ip", protocol, transport, ipmatch, hello
            )
        elif pkt.dport in self.config.encrypted_dns_ports:
            name = normalize_name(sni) if sni else None
            port_match = Match(name or ip_text(pkt.dst), ENCRYPTED_DNS_PORT_INDICATOR)
            self._blind_spot(
                pkt, "encrypted-dns", f"{protocol}-port", protocol, transport, port_match, hello
            )

    def _blind_spot(
        self,
        pkt: Packet,
        action: str,
        evidence: str,
        protocol: str,
        transport: str,
        match: Match,
        hello: ClientHello,
    ) -> None:
        """One event per (client, resolver or frontend) per window: a signal, not a log."""
        key = (action, pkt.src, match.name)
        seen = self.blind_spot_seen.get(key)
        if seen is not None and pkt.ts - seen.last_seen < self.blind_spot_window_ns:
            self.stats.blind_spot_suppressed += 1
            return
        self.blind_spot_seen.remove(key)
        self.blind_spot_seen.add(key, _Seen(pkt.ts))
        if action == "encrypted-dns":
            self.stats.encrypted_dns_events += 1
        else:
            self.stats.ech_observed_events += 1
        fp: Transport = "quic" if protocol == "quic" else "tcp"
        self._emit(
            pkt,
            evidence,
            protocol,
            transport,
            match,
            {"tls": tls_details(hello, fp)},
            action=action,
        )

    # -- TCP ----------------------------------------------------------------------------------

    def _tcp(self, pkt: Packet) -> None:
        key = (pkt.src, pkt.dst, pkt.sport, pkt.dport)
        flow = self.flows.get(key)
        flags = pkt.flags
        if flow is None:
            if flags & TCP_RST:
                return
            is_syn = flags & TCP_SYN and not flags & TCP_ACK
            # A KDC's SYN-ACK anchors its reply stream (the first segment may be tiny).
            if (
                not pkt.payload
                and not is_syn
                and not (flags & TCP_SYN and pkt.sport == KERBEROS_PORT and self.identity)
            ):
                return
            kind = self._classify(pkt, bool(is_syn))
            if kind is None:
                if is_syn:
                    if (
                        self._vendor_cidrs or pkt.dst in self.resolved.entries
                    ) and self.unlisted_syns.get(key) is None:
                        # On an unlisted port the prefilter passes the SYN and not the data.
                        hit = self._ip_candidate(pkt)
                        if hit is not None:
                            self._ip_report(hit, pkt, "tcp", "tcp", None)
                    self._remember_unlisted_syn(key, pkt)
                return
            flow = self._new_flow(kind, pkt.ts)
            if (
                (self._vendor_cidrs or pkt.dst in self.resolved.entries)
                and (kind == "tls" or kind == "http")
                and self.unlisted_syns.get(key) is None
            ):
                flow.ip_match = self._ip_candidate(pkt)
            self.flows.add(key, flow)
        flow.last_seen = pkt.ts
        if flow.done:
            if flags & (TCP_FIN | TCP_RST):
                self.flows.remove(key)
            return
        stream = flow.stream
        assert stream is not None
        if flags & TCP_SYN:
            stream.syn(pkt.seq)
        if pkt.payload:
            data = stream.push(pkt.seq, pkt.payload)
            if data is None:
                self.stats.stream_overflow += 1
                self._ip_flow(flow, pkt, flow.kind, None)
                self._finish(flow)
            elif data:
                if flow.kind == "tls":
                    self._tls_data(flow, pkt, data)
                elif flow.kind == "http":
                    self._http_data(flow, pkt, data)
                elif flow.kind == "krb":
                    self._kerberos_tcp_data(flow, pkt, data)
                else:
                    self._dns_tcp_data(flow, pkt, data)
        if flags & (TCP_FIN | TCP_RST):
            self.flows.remove(key)

    def _classify(self, pkt: Packet, is_syn: bool) -> str | None:
        cfg = self.config
        dport = pkt.dport
        if dport in cfg.dns_ports or pkt.sport in cfg.dns_ports:
            return "dns"
        if dport in cfg.http_ports:
            return "http"
        if dport in cfg.tls_ports:
            return "tls"
        identity = self.identity
        if identity is not None:
            if pkt.sport == KERBEROS_PORT:
                return "krb"  # a KDC's replies; the requests bind nothing
            if dport == SMB_PORT:
                if pkt.payload:
                    identity.smb(pkt)
                return None
        if is_syn:
            return None
        if pkt.sport in cfg.tls_ports or pkt.sport in cfg.http_ports:
            return None  # the server's side of a connection
        payload = pkt.payload
        if len(payload) >= 6 and looks_like_client_hello_start(payload):
            # TLS on a port nobody told us about (a whole record header, not one byte) -- but
            # only if this is the connection's first payload, when we saw where that starts.
            opened = self.unlisted_syns.get((pkt.src, pkt.dst, pkt.sport, pkt.dport))
            if opened is not None and opened.next_seq != pkt.seq:
                return None
            return "tls"
        return None

    def _remember_unlisted_syn(self, key: tuple[bytes, bytes, int, int], pkt: Packet) -> None:
        """Note where an unlisted-port connection's data starts, in a table of its own so
        that noise on other ports never evicts the flows that carry hellos."""
        self.unlisted_syns.add(key, _Opened(pkt.ts, (pkt.seq + 1) & 0xFFFFFFFF))

    def _new_flow(self, kind: str, ts: int) -> _Flow:
        if kind == "tls":
            flow = _Flow(kind, TcpStream(looks_like_client_hello_start, self.stream_stats), ts)
        elif kind == "http":
            flow = _Flow(kind, TcpStream(_http_or_tls_start, self.stream_stats), ts)
        elif kind == "krb":
            stream = TcpStream(looks_like_kerberos_reply_record, self.stream_stats)
            flow = _Flow(kind, stream, ts)
            flow.krb = KerberosTcpFramer()
        else:
            flow = _Flow(kind, TcpStream(_any_start, self.stream_stats), ts)
            flow.framer = DnsTcpFramer()
        return flow

    @staticmethod
    def _finish(flow: _Flow) -> None:
        """Drop a flow's buffers but remember it, so later segments are ignored cheaply."""
        flow.done = True
        flow.stream = None
        flow.buf = bytearray()
        flow.http = None
        flow.framer = None
        flow.krb = None
        flow.ip_match = None

    def _tls_data(self, flow: _Flow, pkt: Packet, data: bytes) -> None:
        buf = flow.buf
        buf += data
        try:
            scan = scan_client_hello(buf, self.config.max_hello_bytes)
        except TlsParseError:
            self.stats.tls_parse_errors += 1
            self._ip_flow(flow, pkt, "tls", None)
            self._finish(flow)
            return
        status = scan.status
        if status is HelloStatus.NEED_MORE:
            return
        if status is HelloStatus.DONE:
            assert scan.hello is not None
            if flow.ip_match is not None:  # in the same packet, before the hello's own event
                self._ip_flow(flow, pkt, "tls", scan.hello.server_name)
            self._hello(pkt, scan.hello)
        elif status is HelloStatus.NOT_TLS:
            self.stats.tls_not_tls += 1
            self._ip_flow(flow, pkt, "tcp", None)
        else:
            self.stats.tls_hello_too_large += 1
            self._ip_flow(flow, pkt, "tls", None)
        self._finish(flow)

    def _hello(self, pkt: Packet, hello: ClientHello) -> None:
        self.stats.tls_client_hellos += 1
        self._client_hello(pkt, hello, "tls", "tcp")

    def _http_data(self, flow: _Flow, pkt: Packet, data: bytes) -> None:
        parser = flow.http
        if parser is None:
            if looks_like_client_hello_start(data):
                # TLS on an HTTP port, or the client's side of a CONNECT tunnel: a ClientHello
                # whose SNI may name another host than the CONNECT authority.
                flow.kind = "tls"
                self._tls_data(flow, pkt, data)
                return
            parser = flow.http = HttpRequestStream(
                self.config.max_http_head_bytes, max_requests=HTTP_MAX_REQUESTS
            )
        try:
            requests = parser.feed(data)
        except HttpParseError as exc:
            self.stats.http_parse_errors += 1
            if flow.ip_match is not None:
                first = exc.requests[0].host if exc.requests else None
                self._ip_flow(flow, pkt, "http" if exc.requests else "tcp", first)
            for req in exc.requests:  # heads completed before the garbage still count
                self._request(pkt, req)
            self._finish(flow)
            return
        if requests and flow.ip_match is not None:
            self._ip_flow(flow, pkt, "http", requests[0].host)
        for req in requests:
            self._request(pkt, req)
        if parser.tunnel:
            # After CONNECT the next bytes decide: a ClientHello (the tunnel is up) or a new
            # request (the proxy refused, e.g. 407, and the client retries on this connection).
            self.stats.http_tunnels += 1
            flow.http = None
            rest = parser.take_tunnel_bytes()
            if rest:
                self._http_data(flow, pkt, rest)

    def _request(self, pkt: Packet, req: HttpRequest) -> None:
        self.stats.http_requests += 1
        if req.authorization and self.identity is not None:
            self.identity.http_authorization(pkt, req.authorization)
        if req.host is None:
            return
        match = self.matcher.match_name(req.host)
        if match is None:
            return
        connect = req.host_source == "connect"
        url: dict[str, Any] = {"domain": req.host}
        if req.port is not None:
            url["port"] = req.port
        details: dict[str, Any] = {
            "url": url,
            "http": {
                "request": {"method": req.method},
                "version": req.version.removeprefix("HTTP/"),
            },
        }
        self._emit(pkt, "http-connect" if connect else "http-host", "http", "tcp", match, details)

    def _kerberos_tcp_data(self, flow: _Flow, pkt: Packet, data: bytes) -> None:
        """A KDC's reply stream: each record is bound to the reply's destination (the client)."""
        framer, identity = flow.krb, self.identity
        assert framer is not None and identity is not None
        try:
            records = framer.feed(data)
        except KerberosFramingError as exc:
            identity.stats.kerberos_parse_errors += 1
            records = exc.messages
            self._finish(flow)
        for record in records:
            identity.kerberos_reply(pkt, record)

    def _dns_tcp_data(self, flow: _Flow, pkt: Packet, data: bytes) -> None:
        framer = flow.framer
        assert framer is not None
        try:
            messages = framer.feed(data)
        except DnsParseError as exc:
            # Lost the message boundary (we joined mid-stream): keep what came before the bad
            # length prefix, then start again at the next segment.
            self.stats.dns_tcp_resyncs += 1
            flow.framer = DnsTcpFramer()
            messages = getattr(exc, "messages", [])
        for msg in messages:
            self._dns_message(pkt, msg, "tcp")

    # -- output -------------------------------------------------------------------------------

    def _emit(
        self,
        pkt: Packet,
        evidence: str,
        protocol: str,
        transport: str,
        match: Match,
        details: dict[str, Any],
        action: str = "vendor-access",
        reply: bool = False,
    ) -> None:
        """``reply``: the evidence packet went to the client (a DNS response), so the
        detection's source is the packet's destination."""
        stats = self.stats
        stats.detections += 1
        vp = (match.indicator.vendor.id, protocol)
        stats.by_vendor_protocol[vp] = stats.by_vendor_protocol.get(vp, 0) + 1
        stats.by_protocol[protocol] = stats.by_protocol.get(protocol, 0) + 1
        stats.by_evidence[evidence] = stats.by_evidence.get(evidence, 0) + 1
        if reply:
            src, dst, sport, dport, smac = pkt.dst, pkt.src, pkt.dport, pkt.sport, None
        else:
            src, dst, sport, dport, smac = pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.smac
        identity = self.identity
        self.emit_detection(
            Detection(
                ts=pkt.ts,
                evidence=evidence,
                protocol=protocol,
                transport=transport,
                version=pkt.version,
                src=src,
                dst=dst,
                sport=sport,
                dport=dport,
                match=match,
                details=details,
                action=action,
                vlan=pkt.vlan,
                tunnel=pkt.tunnel,
                smac=smac,
                attribution=None if identity is None else identity.attribute(pkt.ts, src, smac),
            )
        )
