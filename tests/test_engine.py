"""The detection engine's contract: one event per DNS transaction, per ClientHello, per HTTP
request; CNAME chains; CONNECT tunnels; bounded flow state; nothing for non-vendor traffic."""

from __future__ import annotations

import dns.message
import dns.rrset
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from monitor.blocklist.loader import load_blocklists, shipped_blocklist_dir
from monitor.blocklist.matcher import Matcher
from monitor.pipeline.detection import Detection
from monitor.pipeline.engine import Engine, EngineConfig

CLIENT, SERVER, RESOLVER = "192.0.2.10", "198.51.100.20", "198.51.100.53"


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return load_blocklists([shipped_blocklist_dir()])


class Run:
    def __init__(self, matcher: Matcher, config: EngineConfig | None = None) -> None:
        self.events: list[Detection] = []
        self.engine = Engine(matcher, self.events.append, config)
        self.ts = 1_700_000_000_000_000_000

    def frame(self, pkt) -> None:  # type: ignore[no-untyped-def]
        self.ts += 1_000_000
        self.engine.process(self.ts, 1, bytes(Ether() / pkt))

    @property
    def seen(self) -> list[tuple[str, str]]:
        return [(e.evidence, e.match.name) for e in self.events]


def query(name: str, qid: int = 1, rdtype: str = "A") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    return q


def udp_dns(msg: dns.message.Message, response: bool = False, sport: int = 40000):  # type: ignore[no-untyped-def]
    if response:
        return IP(src=RESOLVER, dst=CLIENT) / UDP(sport=53, dport=sport) / msg.to_wire()
    return IP(src=CLIENT, dst=RESOLVER) / UDP(sport=sport, dport=53) / msg.to_wire()


def test_query_and_its_response_are_one_event(matcher: Matcher) -> None:
    run = Run(matcher)
    q = query("app.clearview.ai", 7)
    r = dns.message.make_response(q)
    run.frame(udp_dns(q))
    run.frame(udp_dns(r, response=True))
    assert run.seen == [("dns-query", "app.clearview.ai")]
    assert run.events[0].details["dns"]["type"] == "query"


def test_response_alone_is_an_event_when_the_query_was_not_captured(matcher: Matcher) -> None:
    run = Run(matcher)
    r = dns.message.make_response(query("pimeyes.com", 9, "AAAA"))
    r.set_rcode(3)  # NXDOMAIN
    run.frame(udp_dns(r, response=True))
    assert run.seen == [("dns-query", "pimeyes.com")]
    assert run.events[0].details["dns"]["response_code"] == "NXDOMAIN"
    assert run.events[0].details["dns"]["question"]["type"] == "AAAA"


def test_cname_chain_to_vendor_is_a_cname_event(matcher: Matcher) -> None:
    run = Run(matcher)
    q = query("photos.example.org", 3)
    r = dns.message.make_response(q)
    r.answer.append(
        dns.rrset.from_text("photos.example.org.", 60, "IN", "CNAME", "edge.example.net.")
    )
    r.answer.append(
        dns.rrset.from_text("edge.example.net.", 60, "IN", "CNAME", "app.clearview.ai.")
    )
    r.answer.append(dns.rrset.from_text("app.clearview.ai.", 60, "IN", "A", "203.0.113.5"))
    run.frame(udp_dns(q))
    run.frame(udp_dns(r, response=True))
    assert run.seen == [("dns-cname", "app.clearview.ai")]
    answers = run.events[0].details["dns"]["answers"]
    assert [a["data"] for a in answers] == ["edge.example.net", "app.clearview.ai"]


def test_benign_and_decoy_names_produce_nothing(matcher: Matcher) -> None:
    run = Run(matcher)
    for i, name in enumerate(
        ["example.org", "notclearview.ai", "clearview.ai.example.net", "myfacecheck.id"]
    ):
        q = query(name, i)
        run.frame(udp_dns(q))
        run.frame(udp_dns(dns.message.make_response(q), response=True))
    assert run.seen == []


def test_malformed_dns_is_counted_and_later_queries_still_match(matcher: Matcher) -> None:
    run = Run(matcher)
    loop = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"
    run.frame(IP(src=CLIENT, dst=RESOLVER) / UDP(sport=1, dport=53) / loop)
    run.frame(udp_dns(query("facecheck.id")))
    assert run.engine.stats.dns_parse_errors == 1
    assert run.seen == [("dns-query", "facecheck.id")]


def hello(sni: str | None, ech: bool = True, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> bytes:
    from tests.tls_hello import build_client_hello

    return build_client_hello(sni, ech=ech, alpn=alpn)


APP_ALPN = ("okhttp/3",)  # the "vendor app" of the JA4 tests: its own fingerprint


def tcp(payload: bytes, seq: int, sport: int = 50000, dport: int = 443, flags: str = "PA"):  # type: ignore[no-untyped-def]
    return (
        IP(src=CLIENT, dst=SERVER) / TCP(sport=sport, dport=dport, seq=seq, flags=flags) / payload
    )


def test_split_client_hello_out_of_order_is_one_event(matcher: Matcher) -> None:
    run = Run(matcher)
    record = hello("app.clearview.ai")
    assert len(record) > 1448
    run.frame(tcp(record[1000:], 5000 + 1000))
    run.frame(tcp(record[:1000], 5000))
    run.frame(tcp(record[:1000], 5000))  # retransmission
    assert run.seen == [("tls-sni", "app.clearview.ai")]
    assert run.events[0].details["tls"]["client"]["ech_offered"] is True


def test_client_hello_on_an_unlisted_port(matcher: Matcher) -> None:
    run = Run(matcher)
    run.frame(tcp(hello("lenso.ai"), 1, dport=4443))
    assert run.seen == [("tls-sni", "lenso.ai")]


def test_http_keep_alive_and_connect_tunnel(matcher: Matcher) -> None:
    run = Run(matcher)
    reqs = (
        b"GET /?q=pimeyes.com HTTP/1.1\r\nHost: example.org\r\nReferer: http://pimeyes.com/\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: WWW.PimEyes.com:80\r\n\r\n"
    )
    run.frame(tcp(reqs, 100, dport=80))
    connect = b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"
    run.frame(tcp(connect, 1, sport=50001, dport=3128))
    run.frame(tcp(hello("search4faces.com"), 1 + len(connect), sport=50001, dport=3128))
    assert run.seen == [("http-host", "www.pimeyes.com"), ("tls-sni", "search4faces.com")]


def test_flow_table_is_bounded_and_evictions_counted(matcher: Matcher) -> None:
    run = Run(matcher, EngineConfig(max_flows=10))
    record = hello("app.clearview.ai")
    for port in range(20000, 20050):  # first halves only: each flow stays open
        run.frame(tcp(record[:100], 1, sport=port))
    assert len(run.engine.flows) == 10
    assert run.engine.flows.stats.evicted == 40


def test_oversized_hello_is_dropped_and_counted(matcher: Matcher) -> None:
    run = Run(matcher, EngineConfig(max_hello_bytes=1000))
    record = hello("app.clearview.ai")
    run.frame(tcp(record[:900], 1))
    run.frame(tcp(record[900:], 901))
    assert run.seen == []
    assert run.engine.stats.tls_hello_too_large == 1


def test_connect_refused_then_retried_on_the_same_connection(matcher: Matcher) -> None:
    run = Run(matcher)
    first = b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"
    retry = (
        b"CONNECT pimeyes.com:443 HTTP/1.1\r\nHost: pimeyes.com:443\r\n"
        b"Proxy-Authorization: Basic eDp5\r\n\r\n"
    )
    run.frame(tcp(first, 1, sport=50002, dport=3128))
    run.frame(tcp(retry, 1 + len(first), sport=50002, dport=3128))
    run.frame(tcp(hello("facecheck.id"), 1 + len(first) + len(retry), sport=50002, dport=3128))
    assert run.seen == [("http-connect", "pimeyes.com"), ("tls-sni", "facecheck.id")]


def test_quic_initials_of_the_benchmark_generator_give_one_event(matcher: Matcher) -> None:
    from scapy.layers.inet import UDP as ScapyUDP

    from tests.quic_initials import chrome_like_initials

    run = Run(matcher)
    for datagram in chrome_like_initials("www.pimeyes.com"):
        run.frame(IP(src=CLIENT, dst=SERVER) / ScapyUDP(sport=51000, dport=443) / datagram)
    assert run.seen == [("quic-sni", "www.pimeyes.com")]
    assert run.events[0].protocol == "quic"
    assert run.events[0].details["tls"]["client"]["ja4"].startswith("q13d")


BLIND_SPOT_LISTS = """
list: test-blind-spots
version: "1"
vendors:
  - id: test-resolver
    name: Test Resolver
    category: encrypted-dns
    severity: low
    references: [https://resolver.example/]
    indicators:
      - host: dns.google
      - cidr: 8.8.8.8/32
  - id: test-ech
    name: Test ECH frontend
    category: ech-frontend
    severity: low
    references: [https://ech.example/]
    indicators:
      - host: cloudflare-ech.com
  - id: test-app
    name: Test vendor app
    category: face-search
    severity: high
    references: [https://app.example/]
    indicators:
      - ja4: {ja4}
"""


@pytest.fixture()
def blind_matcher(tmp_path) -> Matcher:  # type: ignore[no-untyped-def]
    from monitor.blocklist.loader import load_blocklist
    from monitor.protocols.fingerprint import ja4
    from monitor.protocols.tls import parse_client_hello

    app_hello = parse_client_hello(hello("api.unknown-app.example", alpn=APP_ALPN)[5:])
    path = tmp_path / "blind.yaml"
    path.write_text(BLIND_SPOT_LISTS.replace("{ja4}", ja4(app_hello, "tcp")))
    load_blocklist(path)  # validates
    return load_blocklists([path])


def test_doh_hello_is_an_encrypted_dns_signal_rate_limited_per_client(
    blind_matcher: Matcher,
) -> None:
    run = Run(blind_matcher)
    run.frame(tcp(hello("dns.google", ech=False), 1, sport=50100))
    run.frame(tcp(hello("dns.google", ech=False), 1, sport=50101))  # same client, 1 ms later
    run.frame(
        IP(src="192.0.2.11", dst=SERVER)
        / TCP(sport=50102, dport=443, seq=1, flags="PA")
        / hello("dns.google", ech=False)
    )
    assert [(e.action, e.match.name) for e in run.events] == [
        ("encrypted-dns", "dns.google"),
        ("encrypted-dns", "dns.google"),
    ]
    assert run.engine.stats.blind_spot_suppressed == 1
    assert run.engine.stats.detections == 2


def test_hello_without_sni_to_a_resolver_address_and_dot_port(blind_matcher: Matcher) -> None:
    run = Run(blind_matcher)
    run.frame(
        IP(src=CLIENT, dst="8.8.8.8")
        / TCP(sport=50200, dport=443, seq=1, flags="PA")
        / hello(None, ech=False)
    )
    run.frame(tcp(hello("dot.unlisted.example", ech=False), 1, sport=50201, dport=853))
    assert [(e.action, e.evidence, e.match.name) for e in run.events] == [
        ("encrypted-dns", "tls-ip", "8.8.8.8"),
        ("encrypted-dns", "tls-port", "dot.unlisted.example"),
    ]


def test_ech_to_a_frontend_is_observed_but_grease_ech_elsewhere_is_only_counted(
    blind_matcher: Matcher,
) -> None:
    run = Run(blind_matcher)
    run.frame(tcp(hello("cloudflare-ech.com", ech=True), 1, sport=50300))
    run.frame(tcp(hello("www.example.com", ech=True), 1, sport=50301))
    assert [(e.action, e.match.name) for e in run.events] == [
        ("ech-observed", "cloudflare-ech.com")
    ]
    assert run.engine.stats.ech_offered_hellos == 2


def test_ja4_indicator_names_a_client_without_a_vendor_sni(blind_matcher: Matcher) -> None:
    run = Run(blind_matcher)
    run.frame(tcp(hello("api.unknown-app.example", alpn=APP_ALPN), 1, sport=50400))
    assert [(e.action, e.evidence, e.match.indicator.kind) for e in run.events] == [
        ("vendor-access", "tls-ja4", "ja4")
    ]
