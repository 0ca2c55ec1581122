"""Attribution in the pipeline: identity traffic reaches the store, every detection names who
was behind the client address at its packet time, resolvers are never a person, and a
connection to an address a vendor's DNS answer gave is tied to the vendor (ip-resolved)."""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from monitor.attribution.store import IdentityStore
from monitor.blocklist.loader import load_blocklists, shipped_blocklist_dir
from monitor.blocklist.matcher import Matcher
from monitor.cli.main import main
from monitor.decode.packet import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, Decoder
from monitor.events.ecs import to_ecs
from monitor.pipeline.detection import Detection
from monitor.pipeline.engine import Engine, EngineConfig
from monitor.pipeline.identity import IdentityTap
from monitor.protocols.http import HttpRequestStream
from tests.quic_initials import QUIC_V1, initial_client_keys, split_initials
from tests.tls_hello import build_client_hello

FIXTURES = Path(__file__).resolve().parent / "fixtures"
WS = "10.20.0.50"
WS_MAC = "02:00:00:20:00:01"
OTHER_MAC = "02:00:00:20:00:02"
ROUTER_MAC = "02:00:00:20:00:fe"
KDC = "10.20.0.1"
RESOLVER = "10.20.0.53"
UPSTREAM = "203.0.113.53"
VENDOR_IP = "203.0.113.11"
T0 = 1_767_261_600_000_000_000  # 2026-01-01T10:00:00Z
SEC = 1_000_000_000


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return load_blocklists([shipped_blocklist_dir()])


class Lab:
    """An engine with an in-memory identity store; frames are Ethernet, time moves 1 ms each."""

    def __init__(
        self,
        matcher: Matcher,
        resolvers: tuple[str, ...] = (),
        attribution: bool = True,
        config: EngineConfig | None = None,
    ) -> None:
        self.detections: list[Detection] = []
        self.store = IdentityStore(":memory:")
        self.tap = IdentityTap(self.store, resolvers) if attribution else None
        self.engine = Engine(matcher, self.detections.append, config, identity=self.tap)
        self.ts = T0

    def frame(self, pkt: Any, mac: str = WS_MAC, at: int | None = None) -> None:
        self.ts = at if at is not None else self.ts + 1_000_000
        self.engine.process(self.ts, LINKTYPE_ETHERNET, bytes(Ether(src=mac) / pkt))

    @property
    def docs(self) -> list[dict[str, Any]]:
        return [to_ecs(d) for d in self.detections]

    @property
    def seen(self) -> list[tuple[str, str, str]]:
        return [(d.evidence, d.match.name, d.protocol) for d in self.detections]

    def counters(self) -> dict[str, int]:
        return self.engine.counters()


def dhcp_ack(ip: str, mac: str, hostname: str, lease: int = 600) -> Any:
    return (
        IP(src=KDC, dst=ip)
        / UDP(sport=67, dport=68)
        / BOOTP(op=2, yiaddr=ip, chaddr=bytes.fromhex(mac.replace(":", "")), xid=7)
        / DHCP(
            options=[
                ("message-type", "ack"),
                ("server_id", KDC),
                ("lease_time", lease),
                ("hostname", hostname.encode()),
                "end",
            ]
        )
    )


def dhcp_release(ip: str, mac: str) -> Any:
    return (
        IP(src=ip, dst=KDC)
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, ciaddr=ip, chaddr=bytes.fromhex(mac.replace(":", "")), xid=8)
        / DHCP(options=[("message-type", "release"), ("server_id", KDC), "end"])
    )


def kerberos_reply(scenario: str) -> bytes:
    """The KDC's successful reply of a real kinit exchange (AS-REP or TGS-REP), unframed."""
    packets = json.loads((FIXTURES / "kerberos" / f"{scenario}.json").read_text())["packets"]
    payload = bytes.fromhex(packets[-1]["payload"])
    return payload[4:] if packets[-1]["transport"] == "tcp" else payload


def kerberos_udp(scenario: str, client: str = WS) -> Any:
    return IP(src=KDC, dst=client) / UDP(sport=88, dport=50000) / kerberos_reply(scenario)


def dns_query(name: str, src: str = WS, dst: str = RESOLVER, qid: int = 1) -> Any:
    q = dns.message.make_query(name, "A")
    q.id = qid
    return IP(src=src, dst=dst) / UDP(sport=40000 + qid, dport=53) / q.to_wire()


def dns_answer(
    name: str,
    records: list[tuple[str, str, str]],
    to: str = RESOLVER,
    server: str = UPSTREAM,
    qid: int = 1,
    ttl: int = 300,
) -> Any:
    """A response to ``to`` for ``name`` with ``(owner, type, data)`` answer records."""
    q = dns.message.make_query(name, "A")
    q.id = qid
    r = dns.message.make_response(q)
    for owner, rdtype, data in records:
        r.answer.append(dns.rrset.from_text(owner + ".", ttl, "IN", rdtype, data))
    return IP(src=server, dst=to) / UDP(sport=53, dport=40000 + qid) / r.to_wire()


def tcp_data(payload: bytes, dst: str = VENDOR_IP, dport: int = 443, sport: int = 51000) -> Any:
    return IP(src=WS, dst=dst) / TCP(sport=sport, dport=dport, flags="PA", seq=1000) / payload


def who(doc: dict[str, Any]) -> tuple[Any, ...]:
    source = doc["source"]
    return (
        source["ip"],
        source.get("mac"),
        source.get("domain"),
        (source.get("user") or {}).get("name"),
        doc.get("attribution", {}).get("confidence"),
    )


# --- identity traffic into the store ---------------------------------------------------------


def test_dhcp_ack_names_the_workstation_and_its_mac_on_a_later_detection(
    matcher: Matcher,
) -> None:
    lab = Lab(matcher)
    lab.frame(dhcp_ack(WS, WS_MAC, "ws01"), mac=ROUTER_MAC)
    lab.frame(dns_query("app.clearview.ai"))
    [doc] = lab.docs
    assert who(doc) == (WS, WS_MAC, "ws01", None, "high")
    assert doc["attribution"]["source"] == "dhcp"
    assert doc["source"]["port"] == 40001  # merged into source, not replacing it
    assert lab.counters()["dhcp_messages"] == 1


def test_detection_before_any_identity_traffic_carries_no_attribution_fields(
    matcher: Matcher,
) -> None:
    lab = Lab(matcher)
    lab.frame(dns_query("app.clearview.ai"))
    lab.frame(dhcp_ack(WS, WS_MAC, "ws01"), mac=ROUTER_MAC)  # later evidence never counts
    [doc] = lab.docs
    assert set(doc["source"]) == {"ip", "port"} and "attribution" not in doc
    assert lab.detections[0].attribution is not None
    assert lab.detections[0].attribution.outcome == "unattributed"


def test_kerberos_as_rep_over_udp_binds_the_user_to_the_replys_destination(
    matcher: Matcher,
) -> None:
    lab = Lab(matcher)
    lab.frame(dhcp_ack(WS, WS_MAC, "ws01"), mac=ROUTER_MAC)
    lab.frame(kerberos_udp("as_udp_machine_account"), mac=ROUTER_MAC)
    lab.frame(dns_query("app.clearview.ai", qid=1))
    lab.frame(kerberos_udp("as_udp_alice"), mac=ROUTER_MAC)
    lab.frame(dns_query("pimeyes.com", qid=2))
    before, after = lab.docs
    assert who(before) == (WS, WS_MAC, "ws01", None, "high")  # WS01$ is a machine, not a user
    assert who(after) == (WS, WS_MAC, "ws01", "alice", "high")
    assert after["source"]["user"]["domain"] == "EGRESS.TEST"
    assert after["attribution"]["source"] == "kerberos"
    assert lab.counters()["kerberos_messages"] == 2


@pytest.mark.parametrize("syn_ack", [True, False], ids=["syn-ack", "mid-stream"])
def test_kerberos_over_tcp_is_reassembled_from_segments_in_any_order(
    matcher: Matcher, syn_ack: bool
) -> None:
    lab = Lab(matcher)
    record = kerberos_reply("as_tcp_alice")
    stream = struct.pack(">I", len(record)) + record
    # Without the SYN-ACK the stream is found by its first segment: a marker and a reply tag.
    cuts = [0, 3 if syn_ack else 9, 200, 500, len(stream)]
    pieces = [(cuts[i], stream[cuts[i] : cuts[i + 1]]) for i in range(len(cuts) - 1)]
    if syn_ack:
        seg = TCP(sport=88, dport=50123, flags="SA", seq=4999, ack=1)
        lab.frame(IP(src=KDC, dst=WS) / seg, mac=ROUTER_MAC)
    for offset, piece in [pieces[0], pieces[2], pieces[1], pieces[3]]:
        seg = TCP(sport=88, dport=50123, flags="PA", seq=5000 + offset)
        lab.frame(IP(src=KDC, dst=WS) / seg / piece, mac=ROUTER_MAC)
    lab.frame(dns_query("app.clearview.ai"))
    [doc] = lab.docs
    assert who(doc)[3] == "alice"
    assert lab.counters()["kerberos_messages"] == 1


def test_ntlm_authenticate_in_an_http_authorization_header_names_the_user(
    matcher: Matcher,
) -> None:
    lab = Lab(matcher)
    packets = json.loads((FIXTURES / "ntlm" / "http_curl_negotiate.json").read_text())["packets"]
    seq = 1000
    for pkt in packets:
        if pkt["from_client"]:
            head = bytes.fromhex(pkt["payload"])
            lab.frame(IP(src=WS, dst=KDC) / TCP(sport=50200, dport=80, flags="PA", seq=seq) / head)
            seq += len(head)
    lab.frame(dns_query("app.clearview.ai"))
    [doc] = lab.docs
    assert doc["source"]["user"] == {"name": "alice", "domain": "EGRESS"}
    assert doc["attribution"]["source"] == "ntlm"
    assert lab.counters()["ntlm_messages"] == 2  # NEGOTIATE and AUTHENTICATE


def test_basic_credentials_are_never_kept_by_the_http_parser() -> None:
    head = (
        b"GET / HTTP/1.1\r\nHost: a.example\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\n"
        b"Proxy-Authorization: NTLM TlRMTVNTUAABAAAA\r\n\r\n"
    )
    [req] = HttpRequestStream().feed(head)
    assert req.authorization == (b"NTLM TlRMTVNTUAABAAAA",)


def test_ntlm_authenticate_in_an_smb2_session_setup_names_the_user(matcher: Matcher) -> None:
    lab = Lab(matcher)
    packets = json.loads((FIXTURES / "ntlm" / "smb2_smbclient.json").read_text())["packets"]
    for n, pkt in enumerate(p for p in packets if p["from_client"]):
        payload = bytes.fromhex(pkt["payload"])
        seg = TCP(sport=50300, dport=445, flags="PA", seq=1000 + 600 * n)
        lab.frame(IP(src=WS, dst=KDC) / seg / payload)
    lab.frame(dns_query("app.clearview.ai"))
    [doc] = lab.docs
    assert doc["attribution"]["sources"]["user"] == "ntlm"
    assert lab.counters()["ntlm_messages"] >= 1


def test_the_next_holder_of_a_released_address_inherits_no_user(matcher: Matcher) -> None:
    lab = Lab(matcher)
    lab.frame(dhcp_ack(WS, WS_MAC, "ws01"), mac=ROUTER_MAC)
    lab.frame(kerberos_udp("as_udp_alice"), mac=ROUTER_MAC)
    lab.frame(dns_query("app.clearview.ai", qid=1))
    lab.frame(dhcp_release(WS, WS_MAC))
    lab.frame(dhcp_ack(WS, OTHER_MAC, "ws02"), mac=ROUTER_MAC)
    lab.frame(dns_query("pimeyes.com", qid=2), mac=OTHER_MAC)
    first, second = lab.docs
    assert who(first) == (WS, WS_MAC, "ws01", "alice", "high")
    assert who(second) == (WS, OTHER_MAC, "ws02", None, "high")


def test_a_routers_mac_is_not_held_against_the_lease(matcher: Matcher) -> None:
    lab = Lab(matcher)
    lab.frame(dhcp_ack(WS, WS_MAC, "ws01"), mac=ROUTER_MAC)
    lab.frame(dns_query("app.clearview.ai"), mac=ROUTER_MAC)  # seen behind a router
    [doc] = lab.docs
    assert who(doc) == (WS, WS_MAC, "ws01", None, "high")
    assert "conflict" not in doc["attribution"]


def test_another_dhcp_clients_mac_on_a_leased_address_is_a_conflict(matcher: Matcher) -> None:
    lab = Lab(matcher)
    lab.frame(dhcp_ack(WS, WS_MAC, "ws01"), mac=ROUTER_MAC)
    lab.frame(dhcp_ack("10.20.0.51", OTHER_MAC, "ws02"), mac=ROUTER_MAC)
    lab.frame(dns_query("app.clearview.ai"), mac=OTHER_MAC)  # ws02 using ws01's address
    [doc] = lab.docs
    assert doc["attribution"]["conflict"] is True
    assert doc["attribution"]["confidence"] == "low"


def test_resolver_queries_are_resolver_only_and_never_name_a_user(matcher: Matcher) -> None:
    lab = Lab(matcher, resolvers=(RESOLVER,))
    lab.frame(kerberos_udp("as_udp_alice", client=RESOLVER), mac=ROUTER_MAC)  # someone logs on
    lab.frame(dns_query("app.clearview.ai", src=RESOLVER, dst=UPSTREAM))
    [doc] = lab.docs
    assert doc["attribution"]["resolver_only"] is True
    assert "user" not in doc["source"]


def test_a_detection_made_from_a_response_names_the_client_as_its_source(
    matcher: Matcher,
) -> None:
    lab = Lab(matcher)
    lab.frame(dhcp_ack(WS, WS_MAC, "ws01"), mac=ROUTER_MAC)
    answer = dns_answer("app.clearview.ai", [("app.clearview.ai", "A", VENDOR_IP)], to=WS)
    lab.frame(answer, mac=ROUTER_MAC)  # the query was not captured
    [doc] = lab.docs
    assert doc["source"]["ip"] == WS and doc["source"]["port"] == 40001
    assert doc["destination"] == {"ip": UPSTREAM, "port": 53}
    assert doc["source"]["domain"] == "ws01"


def test_without_an_attributor_events_carry_no_attribution(matcher: Matcher) -> None:
    lab = Lab(matcher, attribution=False)
    lab.frame(dhcp_ack(WS, WS_MAC, "ws01"), mac=ROUTER_MAC)
    lab.frame(dns_query("app.clearview.ai"))
    [doc] = lab.docs
    assert lab.detections[0].attribution is None
    assert set(doc["source"]) == {"ip", "port"} and "attribution" not in doc
    assert "dhcp_messages" not in lab.counters()


def test_a_failing_store_costs_a_counter_not_the_sensor(matcher: Matcher) -> None:
    lab = Lab(matcher)
    lab.frame(dhcp_ack(WS, WS_MAC, "ws01"), mac=ROUTER_MAC)
    lab.store._db.close()  # the disk under the state database went away
    lab.frame(kerberos_udp("as_udp_alice"), mac=ROUTER_MAC)
    lab.frame(dns_query("app.clearview.ai"))
    assert len(lab.detections) == 1 and lab.detections[0].attribution is None
    assert lab.counters()["attribution_errors"] >= 2


def test_broken_identity_messages_are_counted_as_parse_errors(matcher: Matcher) -> None:
    lab = Lab(matcher)
    lab.frame(IP(src=WS, dst=KDC) / UDP(sport=68, dport=67) / b"\x01\x01\x06\x00junk")
    lab.frame(IP(src=WS, dst=KDC) / UDP(sport=546, dport=547) / b"")
    lab.frame(IP(src=KDC, dst=WS) / UDP(sport=88, dport=50000) / b"\x6b\x05junk")
    kdc = TCP(sport=88, dport=50001, flags="PA", seq=1)
    lab.frame(IP(src=KDC, dst=WS) / kdc / (b"\x00\x00\x00\x05\x6b\x03\x02\x01\x05"))
    smb = bytes.fromhex("00000048fe534d4240") + bytes(59) + b"\x01\x00" + bytes(8)
    lab.frame(IP(src=WS, dst=KDC) / TCP(sport=50002, dport=445, flags="PA", seq=1) / smb)
    counters = lab.counters()
    assert counters["dhcp_parse_errors"] == 1
    assert counters["dhcpv6_parse_errors"] == 1
    assert counters["kerberos_parse_errors"] == 2
    assert lab.detections == []


_IDENTITY_SEGMENTS = st.sampled_from(
    [
        ("udp", 68, 67),
        ("udp", 67, 68),
        ("udp", 546, 547),
        ("udp", 88, 50000),
        ("tcp", 88, 50000),
        ("tcp", 50000, 445),
        ("tcp", 50000, 80),
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_IDENTITY_SEGMENTS, st.binary(max_size=300)), max_size=8))
def test_random_bytes_on_identity_ports_never_raise(
    segments: list[tuple[tuple[str, int, int], bytes]],
) -> None:
    lab = Lab(load_blocklists([shipped_blocklist_dir()]))
    for n, ((proto, sport, dport), payload) in enumerate(segments):
        l4 = (
            UDP(sport=sport, dport=dport)
            if proto == "udp"
            else TCP(sport=sport, dport=dport, flags="PA", seq=1000 + 400 * n)
        )
        lab.frame(IP(src=WS, dst=KDC) / l4 / payload)
    assert lab.detections == []


# --- ip-resolved and ip-cidr -----------------------------------------------------------------


def resolver_learns(lab: Lab, name: str = "pimeyes.com", ttl: int = 300) -> None:
    lab.frame(dns_query(name, src=RESOLVER, dst=UPSTREAM))
    lab.frame(dns_answer(name, [(name, "A", VENDOR_IP)], ttl=ttl), mac=ROUTER_MAC)


def test_connection_without_sni_to_an_address_a_resolver_was_given_is_ip_resolved(
    matcher: Matcher,
) -> None:
    lab = Lab(matcher, resolvers=(RESOLVER,))
    lab.frame(dhcp_ack(WS, WS_MAC, "ws02"), mac=ROUTER_MAC)
    resolver_learns(lab)
    hello = build_client_hello(None)
    lab.frame(tcp_data(hello))
    lab.frame(tcp_data(hello))  # a retransmission is the same connection
    assert lab.seen == [("dns-query", "pimeyes.com", "dns"), ("ip-resolved", "pimeyes.com", "tls")]
    doc = lab.docs[1]
    assert who(doc) == (WS, WS_MAC, "ws02", None, "high")
    assert doc["destination"] == {"ip": VENDOR_IP, "port": 443}
    assert doc["match"]["vendor"] == "pimeyes"


def test_hello_naming_the_vendor_is_reported_once_by_its_own_event(matcher: Matcher) -> None:
    lab = Lab(matcher, resolvers=(RESOLVER,))
    resolver_learns(lab)
    lab.frame(tcp_data(build_client_hello("pimeyes.com")))
    assert [e for e, _, _ in lab.seen] == ["dns-query", "tls-sni"]
    assert lab.counters()["ip_resolved_superseded"] == 1


def test_hello_naming_another_host_on_a_learned_address_is_not_reported(
    matcher: Matcher,
) -> None:
    lab = Lab(matcher, resolvers=(RESOLVER,))
    resolver_learns(lab)
    lab.frame(tcp_data(build_client_hello("www.example.org")))  # the CDN's other customer
    assert [e for e, _, _ in lab.seen] == ["dns-query"]
    assert lab.counters()["ip_resolved_other_name"] == 1


def test_a_client_that_resolved_the_name_itself_gets_no_ip_resolved(matcher: Matcher) -> None:
    lab = Lab(matcher)
    lab.frame(dns_query("pimeyes.com"))
    answer = dns_answer("pimeyes.com", [("pimeyes.com", "A", VENDOR_IP)], to=WS, server=RESOLVER)
    lab.frame(answer, mac=ROUTER_MAC)
    lab.frame(tcp_data(build_client_hello(None)))
    assert [e for e, _, _ in lab.seen] == ["dns-query"]


def test_a_learned_address_is_forgotten_when_its_ttl_runs_out(matcher: Matcher) -> None:
    lab = Lab(matcher)
    resolver_learns(lab, ttl=5)  # raised to the 60 s floor
    lab.frame(tcp_data(build_client_hello(None), sport=51001), at=lab.ts + 59 * SEC)
    lab.frame(tcp_data(build_client_hello(None), sport=51002), at=lab.ts + 2 * SEC)
    assert [e for e, _, _ in lab.seen] == ["dns-query", "ip-resolved"]
    assert lab.detections[1].sport == 51001


def test_only_addresses_from_the_vendor_name_on_along_a_cname_chain_are_learned(
    matcher: Matcher,
) -> None:
    lab = Lab(matcher)
    records = [
        ("photos.example.org", "CNAME", "app.clearview.ai."),
        ("app.clearview.ai", "CNAME", "edge.cdn.example."),
        ("edge.cdn.example", "A", VENDOR_IP),
        ("photos.example.org", "A", "203.0.113.99"),  # not reached through the vendor name
    ]
    lab.frame(dns_answer("photos.example.org", records), mac=ROUTER_MAC)
    lab.frame(tcp_data(build_client_hello(None), sport=51001))
    lab.frame(tcp_data(build_client_hello(None), dst="203.0.113.99", sport=51002))
    assert lab.seen == [
        ("dns-cname", "app.clearview.ai", "dns"),
        ("ip-resolved", "app.clearview.ai", "tls"),
    ]


def test_shared_cloud_and_blind_spot_names_teach_no_addresses(matcher: Matcher) -> None:
    lab = Lab(matcher)
    shared = next(i for i in matcher.indicators if i.shared and i.kind in ("domain", "host"))
    name = shared.value if shared.kind == "host" else f"api.{shared.value}"
    lab.frame(dns_answer(name, [(name, "A", VENDOR_IP)]), mac=ROUTER_MAC)
    lab.frame(dns_answer("dns.google", [("dns.google", "A", "203.0.113.98")], qid=2))
    lab.frame(tcp_data(build_client_hello(None), sport=51001))
    lab.frame(tcp_data(build_client_hello(None), dst="203.0.113.98", sport=51002))
    assert "ip-resolved" not in [e for e, _, _ in lab.seen]
    assert lab.counters()["resolved_addresses_learned"] == 0


def test_http_request_whose_host_is_an_address_is_ip_resolved_http(matcher: Matcher) -> None:
    lab = Lab(matcher)
    resolver_learns(lab)
    request = f"GET / HTTP/1.1\r\nHost: {VENDOR_IP}\r\n\r\n".encode()
    lab.frame(tcp_data(request, dport=80))
    assert lab.seen[-1] == ("ip-resolved", "pimeyes.com", "http")


def test_connection_on_an_unlisted_port_is_ip_resolved_at_its_syn_once(matcher: Matcher) -> None:
    lab = Lab(matcher)
    resolver_learns(lab)
    syn = IP(src=WS, dst=VENDOR_IP) / TCP(sport=51003, dport=2222, flags="S", seq=7)
    lab.frame(syn)
    lab.frame(syn)  # retransmitted SYN
    assert lab.seen[1:] == [("ip-resolved", "pimeyes.com", "tcp")]


def test_quic_initial_without_sni_to_a_learned_address_is_ip_resolved_quic(
    matcher: Matcher,
) -> None:
    lab = Lab(matcher)
    resolver_learns(lab)
    rng = random.Random(3)
    dcid = rng.randbytes(8)
    hello = build_client_hello(None, alpn=("h3",))[5:]
    for datagram in split_initials(hello, initial_client_keys(dcid, QUIC_V1), dcid, rng):
        lab.frame(IP(src=WS, dst=VENDOR_IP) / UDP(sport=52000, dport=443) / datagram)
    assert lab.seen[1:] == [("ip-resolved", "pimeyes.com", "quic")]
    assert lab.docs[1]["network"]["transport"] == "udp"


def test_a_listed_vendor_network_is_ip_cidr_whatever_the_hello_names(tmp_path: Path) -> None:
    listfile = tmp_path / "nets.yaml"
    listfile.write_text(
        'list: nets\nversion: "1"\nvendors:\n  - id: acme-face\n    name: Acme Face\n'
        "    category: face-search\n    severity: high\n    references: [https://acme.example/]\n"
        "    indicators: [{cidr: 203.0.113.0/28}, {domain: acme.example}]\n"
    )
    lab = Lab(load_blocklists([listfile]))
    lab.frame(tcp_data(build_client_hello("cdn.other.example"), sport=51001))
    lab.frame(tcp_data(build_client_hello("api.acme.example"), sport=51002))
    lab.frame(tcp_data(build_client_hello(None), dst="203.0.113.200", sport=51003))
    assert lab.seen == [("ip-cidr", VENDOR_IP, "tls"), ("tls-sni", "api.acme.example", "tls")]


def test_the_learned_address_table_is_bounded(matcher: Matcher) -> None:
    lab = Lab(matcher, config=EngineConfig(max_resolved_addresses=4))
    records = [("pimeyes.com", "A", f"203.0.113.{n}") for n in range(1, 11)]
    lab.frame(dns_answer("pimeyes.com", records), mac=ROUTER_MAC)
    assert len(lab.engine.resolved) == 4
    assert lab.counters()["resolved_addresses_evicted"] == 6


# --- the decoder's source MAC ----------------------------------------------------------------


def test_source_mac_comes_from_the_frame_that_carried_the_ip_packet() -> None:
    decoder = Decoder()
    inner = IP(src=WS, dst=VENDOR_IP) / UDP(sport=1, dport=2) / b"x"
    plain = bytes(Ether(src=WS_MAC) / inner)
    tagged = bytes(Ether(src=WS_MAC) / Dot1Q(vlan=7) / inner)
    tunnel = bytes(
        Ether(src=ROUTER_MAC)
        / IP(src="192.0.2.1", dst="192.0.2.2")
        / UDP(sport=4789, dport=4789)
        / VXLAN(vni=1)
        / Ether(src=WS_MAC)
        / inner
    )
    sll = struct.pack("!HHH8sH", 0, 1, 6, bytes.fromhex("020000200001") + bytes(2), 0x0800)
    for linktype, frame in [(1, plain), (1, tagged), (1, tunnel), (LINKTYPE_LINUX_SLL, sll)]:
        data = frame + (bytes(inner) if linktype == LINKTYPE_LINUX_SLL else b"")
        pkt = decoder.decode(T0, linktype, data)
        assert pkt is not None and pkt.smac == bytes.fromhex("020000200001"), linktype
    raw = decoder.decode(T0, 101, bytes(inner))
    assert raw is not None and raw.smac is None


# --- the attribution samples end to end and the identities command ---------------------------

SAMPLE = Path(__file__).resolve().parent.parent / "pcaps" / "attribution"


def test_identities_answers_from_a_replayed_state_db(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "identities.db"
    events = tmp_path / "events.jsonl"
    capture = SAMPLE / "attribution_two_workstations.pcap"
    assert main(["replay", "-q", "--state-db", str(db), "--events", str(events), str(capture)]) == 0
    docs = [json.loads(line) for line in events.read_text().splitlines()]
    alice = next(d for d in docs if d["match"]["name"] == "app.clearview.ai")
    before_bob = next(d for d in docs if d["match"]["name"] == "facecheck.id")
    capsys.readouterr()

    assert main(["identities", "--db", str(db), "--at", alice["@timestamp"], "10.98.0.50"]) == 0
    out = capsys.readouterr().out
    assert "ws01" in out and "alice" in out and "02:00:00:98:00:01" in out
    assert "ACK xid" in out and "AS-REP" in out  # the evidence rows

    at = before_bob["@timestamp"]
    assert main(["identities", "--db", str(db), "--at", at, "--json", "10.98.0.50"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["attribution"]["hostname"] == "ws02"
    assert doc["attribution"]["mac"] == "02:00:00:98:00:02"
    assert doc["attribution"]["user"] is None  # alice left with ws01
    assert doc["ecs"]["source"]["domain"] == "ws02"
    covering = {(e["kind"], e["value"]) for e in doc["evidence"] if e["covers"]}
    assert ("ip-mac", "02:00:00:98:00:02") in covering
    assert ("ip-user", "alice") not in covering

    assert main(["identities", "--db", str(db), "--at", at, "10.98.0.99"]) == 1
    assert main(["identities", "--db", str(tmp_path / "no.db"), "--at", at, "10.98.0.50"]) == 2
    with pytest.raises(SystemExit) as bad_time:
        main(["identities", "--db", str(db), "--at", "yesterday-ish", "10.98.0.50"])
    assert bad_time.value.code == 2


def test_replay_is_deterministic_and_a_kept_state_db_names_the_same_people(
    tmp_path: Path,
) -> None:
    capture = SAMPLE / "attribution_two_workstations.pcap"

    def events(*extra: str) -> list[dict[str, Any]]:
        out = tmp_path / "events.jsonl"
        assert main(["replay", "-q", "--events", str(out), *extra, str(capture)]) == 0
        return [json.loads(line) for line in out.read_text().splitlines()]

    fresh = events()
    assert events() == fresh  # no wall clock anywhere
    db = str(tmp_path / "kept.db")
    assert events("--state-db", db) == fresh
    # Replayed again into the database that already holds the capture's evidence: the same
    # events, attribution sources included (a binding keeps its stronger evidence's source, so
    # the first run's later evidence does not show through).
    again = events("--state-db", db)
    assert [who(d) for d in again] == [who(d) for d in fresh]
    assert again == fresh


def test_replay_uses_lease_files_and_the_inventory(tmp_path: Path) -> None:
    capture = Path(__file__).resolve().parent.parent / "pcaps" / "real" / "dns_dig_udp.pcap"
    probe = tmp_path / "probe.jsonl"
    assert main(["replay", "-q", "--no-attribution", "--events", str(probe), str(capture)]) == 0
    first = json.loads(probe.read_text().splitlines()[0])
    client = first["source"]["ip"]
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text(f"4102444800 {WS_MAC} {client} laptop-7 *\n")
    os.utime(leases, ns=(0, 0))  # written before the capture: the lease covers it
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(f"- mac: {WS_MAC}\n  owner: PD\\carol\n  unit: Homicide\n")
    events = tmp_path / "events.jsonl"
    argv = ["replay", "-q", "--events", str(events), "--leases", f"dnsmasq:{leases}"]
    argv += ["--inventory", str(inventory), str(capture)]
    assert main(argv) == 0
    doc = json.loads(events.read_text().splitlines()[0])
    assert doc["source"]["domain"] == "laptop-7"
    assert doc["source"]["mac"] == WS_MAC
    assert doc["source"]["user"] == {"name": "carol", "domain": "PD"}
    assert doc["attribution"]["unit"] == "Homicide"
    assert doc["attribution"]["confidence"] == "medium"
    assert doc["attribution"]["source"] == "inventory"


def test_replay_refuses_a_bad_lease_or_inventory_argument(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    capture = SAMPLE / "attribution_two_workstations.pcap"
    with pytest.raises(SystemExit) as bad:
        main(["replay", "--leases", "bogus:/x", str(capture)])
    assert bad.value.code == 2
    missing = str(tmp_path / "missing.yaml")
    assert main(["replay", "-q", "--inventory", missing, str(capture)]) == 2
    assert "missing.yaml" in capsys.readouterr().err
