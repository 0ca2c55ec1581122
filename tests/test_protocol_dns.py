"""Behaviour of the DNS wire-format parser and DNS-over-TCP framer (monitor.protocols.dns).

dnspython is the oracle: messages are built with it, and whatever it accepts we must read the
same way (questions, answer CNAMEs, answer addresses).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import struct
from unittest import mock

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import monitor.protocols.dns as parser_module
from monitor.protocols.dns import (
    MAX_CNAME_HOPS,
    MAX_POINTER_HOPS,
    DnsAddress,
    DnsFramingError,
    DnsMessage,
    DnsParseError,
    DnsQuestion,
    DnsTcpFramer,
    cname_chain,
    parse_message,
)

# --- helpers ---------------------------------------------------------------------------------


def response_to(qname: str, rdtype: str = "A", **kwargs: object) -> dns.message.Message:
    return dns.message.make_response(dns.message.make_query(qname, rdtype, **kwargs))


def add(msg: dns.message.Message, owner: str, rdtype: str, *rdatas: str, ttl: int = 300) -> None:
    msg.answer.append(dns.rrset.from_text(owner, ttl, "IN", rdtype, *rdatas))


def header(
    ident: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!6H", ident, flags, qd, an, ns, ar)


def wire_name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 60, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


QUESTION_WWW = wire_name(b"www", b"example", b"com") + b"\x00\x01\x00\x01"  # at offset 12


def framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def oracle_text(name: dns.name.Name) -> str:
    """dnspython's text of a name in our canonical form."""
    if name == dns.name.root:
        return ""
    return name.to_text(omit_final_dot=True).lower()


def oracle_view(
    wire: bytes,
) -> tuple[list[DnsQuestion], list[tuple[str, str, int]], list[DnsAddress], int, int]:
    msg = dns.message.from_wire(wire, one_rr_per_rrset=True)
    questions = [
        DnsQuestion(oracle_text(rrset.name), rrset.rdtype, rrset.rdclass)
        for rrset in msg.sections[0]
    ]
    cnames = []
    addresses = []
    for rrset in msg.sections[1]:
        for rdata in rrset:
            if rrset.rdtype == dns.rdatatype.CNAME:
                cnames.append((oracle_text(rrset.name), oracle_text(rdata.target), rrset.ttl))
            elif rrset.rdclass == dns.rdataclass.IN and rrset.rdtype in (
                dns.rdatatype.A,
                dns.rdatatype.AAAA,
            ):
                address = str(ipaddress.ip_address(rdata.address))
                addresses.append(DnsAddress(oracle_text(rrset.name), address, rrset.ttl))
    return questions, cnames, addresses, msg.id, struct.unpack_from("!H", wire, 2)[0]


def parse_both_ways(wire: bytes) -> DnsMessage:
    """Parse with the per-message name cache forced off, then on: both must agree."""
    outcomes: list[DnsMessage | None] = []
    for limit in (1 << 20, -1):
        with mock.patch.object(parser_module, "_UNCACHED_MAX_NAMES", limit):
            try:
                outcomes.append(parse_message(wire))
            except DnsParseError:
                outcomes.append(None)
    uncached, cached = outcomes
    assert uncached == cached
    if cached is None:
        raise DnsParseError("refused with and without the name cache")
    return cached


@pytest.fixture(params=["cached", "uncached"])
def name_cache(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run an example with the per-message name cache always used, then never used."""
    limit = -1 if request.param == "cached" else 1 << 20
    monkeypatch.setattr(parser_module, "_UNCACHED_MAX_NAMES", limit)


def assert_matches_oracle(wire: bytes) -> None:
    questions, cnames, addresses, ident, flags = oracle_view(wire)
    parsed = parse_both_ways(wire)
    assert list(parsed.questions) == questions
    assert list(parsed.cnames) == cnames
    assert list(parsed.addresses) == addresses
    assert parsed.id == ident
    assert parsed.flags == flags
    assert parsed.answer_count == struct.unpack_from("!H", wire, 6)[0]


# --- header and questions --------------------------------------------------------------------


def test_a_query_yields_its_question_and_header_fields() -> None:
    query = dns.message.make_query("app.clearview.ai", "A", id=4242)
    msg = parse_message(query.to_wire())
    assert msg.id == 4242
    assert not msg.is_response
    assert msg.opcode == 0
    assert msg.rcode == 0
    assert msg.questions == (DnsQuestion("app.clearview.ai", 1, 1),)
    assert msg.cnames == ()
    assert msg.addresses == ()
    assert msg.answer_count == 0


@pytest.mark.parametrize(("rdtype", "code"), [("A", 1), ("AAAA", 28), ("HTTPS", 65)])
def test_query_types_are_reported_as_numbers(rdtype: str, code: int) -> None:
    msg = parse_message(dns.message.make_query("pimeyes.com", rdtype).to_wire())
    assert msg.questions == (DnsQuestion("pimeyes.com", code, 1),)


def test_mixed_case_names_of_0x20_resolvers_are_lower_cased() -> None:
    response = response_to("WwW.PiMeYeS.CoM")
    add(response, "WwW.PiMeYeS.CoM.", "CNAME", "CDN.PimEyes.COM.")
    add(response, "cdn.PIMEYES.com.", "A", "192.0.2.7")
    msg = parse_message(response.to_wire())
    assert msg.questions[0].name == "www.pimeyes.com"
    assert msg.cnames == (("www.pimeyes.com", "cdn.pimeyes.com", 300),)
    assert msg.addresses == (DnsAddress("cdn.pimeyes.com", "192.0.2.7", 300),)
    assert cname_chain(msg) == ("cdn.pimeyes.com",)


def test_nxdomain_response_keeps_its_question() -> None:
    response = response_to("facecheck.id", "AAAA")
    response.set_rcode(dns.rcode.NXDOMAIN)
    response.authority.append(
        dns.rrset.from_text(
            "id.", 900, "IN", "SOA", "ns.id. hostmaster.id. 1 7200 900 1209600 86400"
        )
    )
    msg = parse_message(response.to_wire())
    assert msg.is_response
    assert msg.rcode == 3
    assert msg.questions == (DnsQuestion("facecheck.id", 28, 1),)
    assert msg.answer_count == 0
    assert cname_chain(msg) == ()


def test_root_name_is_the_empty_string() -> None:
    msg = parse_message(header() + b"\x00\x00\x02\x00\x01")
    assert msg.questions == (DnsQuestion("", 2, 1),)


def test_several_questions_are_all_read() -> None:
    data = header(qd=2) + QUESTION_WWW + b"\x03api" + pointer(16) + b"\x00\x1c\x00\x01"
    msg = parse_message(data)
    assert [q.name for q in msg.questions] == ["www.example.com", "api.example.com"]


def test_memoryview_and_bytearray_input_parse_like_bytes() -> None:
    wire = dns.message.make_query("lenso.ai", "A").to_wire()
    expected = parse_message(wire)
    assert parse_message(memoryview(wire)) == expected
    assert parse_message(bytearray(wire)) == expected
    assert parse_message(memoryview(b"xx" + wire)[2:]) == expected


# --- name text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "text"),
    [
        (b"clearview.ai", "clearview\\.ai"),  # a dot inside a label is not a label boundary
        (b"back\\slash", "back\\\\slash"),
        (b"sp ace", "sp\\032ace"),
        (b"caf\xc3\xa9", "caf\\195\\169"),
        (b"NUL\x00", "nul\\000"),
        (b"MiXeD@Case", "mixed\\@case"),
        (b"_dmarc", "_dmarc"),
        (b"*", "*"),
        (b"x-y", "x-y"),
        (b"pct%", "pct%"),
    ],
)
def test_label_bytes_outside_hostname_alphabet_are_escaped(label: bytes, text: str) -> None:
    data = header() + wire_name(label, b"example") + b"\x00\x01\x00\x01"
    assert parse_message(data).questions[0].name == text + ".example"
    name = dns.name.Name([label, b"example", b""])
    assert oracle_text(name) == text + ".example"


def test_a_label_with_a_dot_never_reads_as_the_vendor_name() -> None:
    data = header() + wire_name(b"clearview.ai") + b"\x00\x01\x00\x01"
    assert parse_message(data).questions[0].name != "clearview.ai"


def test_name_of_exactly_255_wire_bytes_is_accepted() -> None:
    labels = [b"a" * 63] * 3 + [b"b" * 61]  # 3 * 64 + 62 + root = 255
    data = header() + wire_name(*labels) + b"\x00\x01\x00\x01"
    assert parse_message(data).questions[0].name == ".".join(x.decode() for x in labels)


def test_name_longer_than_255_wire_bytes_raises() -> None:
    labels = [b"a" * 63] * 3 + [b"b" * 62]  # 256 bytes
    with pytest.raises(DnsParseError, match="255"):
        parse_message(header() + wire_name(*labels) + b"\x00\x01\x00\x01")


@pytest.mark.usefixtures("name_cache")
def test_name_made_too_long_by_a_pointer_raises() -> None:
    first = wire_name(b"a" * 63, b"b" * 63, b"c" * 63)  # 193 bytes at offset 12
    second = b"\x3f" + b"d" * 63 + pointer(12)  # 64 + 193 = 257 bytes
    data = header(qd=2) + first + b"\x00\x01\x00\x01" + second + b"\x00\x01\x00\x01"
    with pytest.raises(DnsParseError, match="255"):
        parse_message(data)


@pytest.mark.parametrize("first_byte", [0x40, 0x7F, 0x80, 0xBF])
def test_extended_and_reserved_label_types_raise(first_byte: int) -> None:
    data = header() + bytes([first_byte]) + b"abc\x00\x00\x01\x00\x01"
    with pytest.raises(DnsParseError, match="label type"):
        parse_message(data)


# --- compression ------------------------------------------------------------------------------


@pytest.mark.usefixtures("name_cache")
def test_pointer_to_itself_raises() -> None:
    with pytest.raises(DnsParseError, match="backwards"):
        parse_message(header() + pointer(12) + b"\x00\x01\x00\x01")


@pytest.mark.usefixtures("name_cache")
def test_forward_pointer_raises() -> None:
    data = header() + pointer(14) + wire_name(b"x") + b"\x00\x01\x00\x01"
    with pytest.raises(DnsParseError, match="backwards"):
        parse_message(data)


@pytest.mark.usefixtures("name_cache")
def test_compression_loop_between_two_names_raises() -> None:
    # Question 1 is "a" + a pointer to question 2, question 2 is "b" + a pointer to question 1.
    # A loop between names always needs one pointer to go forward, which is refused.
    q1 = b"\x01a" + pointer(21) + b"\x00\x01\x00\x01"  # offset 12..20
    q2 = b"\x01b" + pointer(12) + b"\x00\x01\x00\x01"  # offset 21..
    with pytest.raises(DnsParseError, match="backwards"):
        parse_message(header(qd=2) + q1 + q2)


@pytest.mark.usefixtures("name_cache")
def test_pointer_chain_through_previous_pointer_targets_is_followed() -> None:
    # name at 12: "com"; at 21: "example" -> 12; at 35: "www" -> 21; question 4 -> 35.
    names = [
        wire_name(b"com"),
        b"\x07example" + pointer(12),
        b"\x03www" + pointer(21),
        pointer(35),
    ]
    data = header(qd=4) + b"".join(n + b"\x00\x01\x00\x01" for n in names)
    msg = parse_message(data)
    assert [q.name for q in msg.questions] == [
        "com",
        "example.com",
        "www.example.com",
        "www.example.com",
    ]


@pytest.mark.usefixtures("name_cache")
def test_pointer_into_the_middle_of_an_earlier_name_reads_its_suffix() -> None:
    answer = rr(b"\x03cdn" + pointer(16), 5, pointer(16))
    data = header(flags=0x8180, an=1) + QUESTION_WWW + answer
    msg = parse_message(data)
    assert msg.cnames == (("cdn.example.com", "example.com", 60),)


@pytest.mark.usefixtures("name_cache")
def test_cname_target_may_point_anywhere_before_it_in_the_message() -> None:
    answer = rr(pointer(12), 5, b"\x03cdn" + pointer(16))
    msg = parse_message(header(flags=0x8180, an=1) + QUESTION_WWW + answer)
    assert msg.cnames == (("www.example.com", "cdn.example.com", 60),)


def pointer_chain_response(hops: int, extra: bytes = b"") -> bytes:
    """A CNAME whose target is a chain of ``hops`` pointers, each to the one before it.

    The chain sits in the RDATA of a record of a private type, which the parser skips;
    ``extra`` answers follow the CNAME, whose RDATA starts at 12 + 7 + 12 + 2 * (hops - 1) + 12.
    """
    question = wire_name(b"x") + b"\x00\x01\x00\x01"  # name at offset 12
    base = 12 + len(question) + 2 + 10  # RDATA of the first answer
    chain = b"".join(pointer(12 if i == 0 else base + 2 * (i - 1)) for i in range(hops - 1))
    first = rr(pointer(12), 0xFF00, chain)  # a private type: opaque RDATA to everyone
    second = rr(pointer(12), 5, pointer(base + 2 * (hops - 2)))
    answers = 2 + (len(extra) > 0)
    return header(flags=0x8180, an=answers) + question + first + second + extra


@pytest.mark.usefixtures("name_cache")
def test_pointer_chains_within_the_hop_limit_are_followed() -> None:
    wire = pointer_chain_response(MAX_POINTER_HOPS)
    assert parse_message(wire).cnames == (("x", "x", 60),)
    assert_matches_oracle(wire)


@pytest.mark.usefixtures("name_cache")
def test_long_pointer_chains_are_cut_by_the_hop_limit() -> None:
    # Strictly backwards every time, so no loop: but no honest message does this.
    wire = pointer_chain_response(MAX_POINTER_HOPS + 1)
    with pytest.raises(DnsParseError, match="too many"):
        parse_message(wire)
    with pytest.raises(dns.name.PointerChainTooLong):
        oracle_view(wire)


@pytest.mark.usefixtures("name_cache")
def test_suffix_reused_from_an_earlier_name_counts_its_hops() -> None:
    # RR1 hides a chain of 15 pointers ending at the question; RR2's CNAME is "w" + a pointer to
    # the chain's end (16 hops, fine); RR3's CNAME points at RR2's "w" label: 17 hops.
    question = wire_name(b"x") + b"\x00\x01\x00\x01"  # offset 12
    base = 12 + len(question) + 12
    chain = b"".join(pointer(12 if i == 0 else base + 2 * (i - 1)) for i in range(15))
    rr1 = rr(pointer(12), 0xFF00, chain)
    rr2_rdata = base + len(chain) + 12
    rr2 = rr(pointer(12), 5, b"\x01w" + pointer(base + 2 * 14))
    rr3 = rr(pointer(12), 5, pointer(rr2_rdata))
    ok = header(flags=0x8180, an=2) + question + rr1 + rr2
    assert parse_message(ok).cnames == (("x", "w.x", 60),)
    with pytest.raises(DnsParseError, match="too many"):
        parse_message(header(flags=0x8180, an=3) + question + rr1 + rr2 + rr3)


@pytest.mark.usefixtures("name_cache")
def test_reused_suffix_must_not_overlap_the_run_that_points_to_it() -> None:
    # Question 1 is one 3-byte label, c0 0c 7a, whose first two bytes read as a pointer to 12.
    # Question 2 points at offset 13, inside that label: from there the pointer to 12 is
    # strictly backwards, but the run at 12 (cached from question 1) ends at 17, past 13.
    q1 = b"\x03\xc0\x0cz\x00" + b"\x00\x01\x00\x01"
    data = header(qd=2) + q1 + pointer(13) + b"\x00\x01\x00\x01"
    with pytest.raises(DnsParseError, match="truncated"):
        parse_message(data)
    with pytest.raises(dns.exception.DNSException):
        oracle_view(data)


@pytest.mark.usefixtures("name_cache")
def test_reused_suffix_must_keep_its_pointers_backwards() -> None:
    # The header's NSCOUNT is 0x0300: byte 8 reads as a 3-byte label, byte 9 as the root name.
    # Question 1 is "a" + pointer to 9. Question 2 points to 8, whose label leads into question
    # 1's "a" (cached) and then to its pointer to 9: not before 8, where this run began.
    data = header(qd=2, ns=0x0300)
    data += b"\x01a" + pointer(9) + b"\x00\x01\x00\x01" + pointer(8) + b"\x00\x01\x00\x01"
    with pytest.raises(DnsParseError, match="backwards"):
        parse_message(data)
    with pytest.raises(dns.name.BadPointer):
        oracle_view(data)


def test_truncated_question_raises() -> None:
    with pytest.raises(DnsParseError, match="truncated question"):
        parse_message(header() + wire_name(b"www", b"example", b"com") + b"\x00\x01\x00")


def test_truncated_pointer_in_a_question_name_raises() -> None:
    with pytest.raises(DnsParseError, match="truncated compression pointer"):
        parse_message(header() + b"\x01a\x01b\xc0")


def test_truncated_pointer_in_an_owner_name_raises() -> None:
    with pytest.raises(DnsParseError, match="truncated"):
        parse_message(header(flags=0x8180, an=1) + QUESTION_WWW + b"\x01a\xc0")


@pytest.mark.usefixtures("name_cache")
@pytest.mark.parametrize(("hops", "ok"), [(MAX_POINTER_HOPS - 1, True), (MAX_POINTER_HOPS, False)])
def test_owner_pointing_at_a_name_reached_by_hops_counts_them(hops: int, ok: bool) -> None:
    cname_rdata = 12 + 7 + 12 + 2 * (hops - 1) + 12
    extra = rr(pointer(cname_rdata), 1, b"\xc0\x00\x02\x01")
    wire = pointer_chain_response(hops, extra)
    if ok:
        assert parse_message(wire).addresses == (DnsAddress("x", "192.0.2.1", 60),)
        assert_matches_oracle(wire)
    else:
        with pytest.raises(DnsParseError, match="too many"):
            parse_message(wire)


@pytest.mark.usefixtures("name_cache")
def test_pointer_to_a_run_that_overlaps_the_pointer_raises() -> None:
    # Question 1 is the root name with QCLASS 3, so byte 16 is 0x03. Question 2 (offset 17) is
    # a pointer to 16: strictly backwards, but the run at 16 is a 3-byte label that swallows the
    # pointer itself and the root byte after it, ending past the pointer's own position.
    data = header(qd=2) + b"\x00\x00\x01\x00\x03" + pointer(16) + b"\x00\x00\x00\x01"
    with pytest.raises(DnsParseError, match="truncated"):
        parse_message(data)
    with pytest.raises(dns.exception.DNSException):
        oracle_view(data)


# --- answers ------------------------------------------------------------------------------------


def test_cname_chain_of_three_reaches_the_vendor_name() -> None:
    response = response_to("photos.example.org")
    add(response, "photos.example.org.", "CNAME", "edge.example.net.")
    add(response, "edge.example.net.", "CNAME", "lb.example.com.")
    add(response, "lb.example.com.", "CNAME", "api.clearview.ai.")
    add(response, "api.clearview.ai.", "A", "203.0.113.10", "203.0.113.11", ttl=20)
    msg = parse_message(response.to_wire())
    assert cname_chain(msg) == ("edge.example.net", "lb.example.com", "api.clearview.ai")
    assert [a.owner for a in msg.addresses] == ["api.clearview.ai"] * 2
    assert {a.address for a in msg.addresses} == {"203.0.113.10", "203.0.113.11"}
    assert msg.answer_count == 5


def test_cname_chain_follows_records_out_of_order() -> None:
    response = response_to("a.example")
    add(response, "b.example.", "CNAME", "c.example.")
    add(response, "a.example.", "CNAME", "b.example.")
    assert cname_chain(parse_message(response.to_wire())) == ("b.example", "c.example")


def test_cname_chain_stops_at_a_loop() -> None:
    response = response_to("a.example")
    add(response, "a.example.", "CNAME", "b.example.")
    add(response, "b.example.", "CNAME", "c.example.")
    add(response, "c.example.", "CNAME", "a.example.")
    assert cname_chain(parse_message(response.to_wire())) == ("b.example", "c.example")


def test_cname_chain_ignores_records_not_linked_to_the_question() -> None:
    response = response_to("a.example")
    add(response, "x.example.", "CNAME", "clearview.ai.")
    add(response, "a.example.", "CNAME", "b.example.")
    assert cname_chain(parse_message(response.to_wire())) == ("b.example",)


def test_cname_chain_is_bounded_to_16_hops() -> None:
    response = response_to("n0.example")
    for i in range(40):
        add(response, f"n{i}.example.", "CNAME", f"n{i + 1}.example.")
    chain = cname_chain(parse_message(response.to_wire()))
    assert len(chain) == MAX_CNAME_HOPS
    assert chain[0] == "n1.example"


def test_cname_chain_of_a_message_without_questions_is_empty() -> None:
    data = header(flags=0x8180, qd=0, an=1) + rr(wire_name(b"a"), 5, wire_name(b"b"))
    msg = parse_message(data)
    assert msg.cnames == (("a", "b", 60),)
    assert cname_chain(msg) == ()


def test_aaaa_addresses_are_ipaddress_text() -> None:
    response = response_to("pimeyes.com", "AAAA")
    add(response, "pimeyes.com.", "AAAA", "2001:db8::1", "::ffff:192.0.2.1", "2001:db8:0:1:0:0:0:1")
    msg = parse_message(response.to_wire())
    for found in msg.addresses:
        assert found.address == str(ipaddress.ip_address(found.address))
    assert {ipaddress.ip_address(a.address) for a in msg.addresses} == {
        ipaddress.ip_address(x) for x in ("2001:db8::1", "::ffff:192.0.2.1", "2001:db8:0:1::1")
    }


def test_https_svcb_mx_and_txt_answers_are_skipped() -> None:
    response = response_to("www.pimeyes.com", "HTTPS")
    add(response, "www.pimeyes.com.", "HTTPS", '1 . alpn="h3,h2" ipv4hint=192.0.2.1')
    add(response, "www.pimeyes.com.", "SVCB", "1 svc.example.")
    add(response, "www.pimeyes.com.", "TXT", '"v=spf1 -all"')
    add(response, "www.pimeyes.com.", "MX", "10 mail.example.")
    add(response, "www.pimeyes.com.", "A", "192.0.2.9")
    msg = parse_message(response.to_wire())
    assert msg.answer_count == 5
    assert msg.cnames == ()
    assert msg.addresses == (DnsAddress("www.pimeyes.com", "192.0.2.9", 300),)


def test_a_records_of_other_classes_are_not_addresses() -> None:
    answer = rr(pointer(12), 1, b"\x01\x02\x03\x04", rclass=3)  # CHAOS
    msg = parse_message(header(flags=0x8180, an=1) + QUESTION_WWW + answer)
    assert msg.addresses == ()


def test_edns_opt_in_additional_section_is_ignored() -> None:
    response = response_to("lenso.ai", use_edns=0, payload=1232)
    response.use_edns(0, 0, 1232, options=[dns.edns.GenericOption(10, b"\x01" * 8)])
    add(response, "lenso.ai.", "A", "198.51.100.4")
    msg = parse_message(response.to_wire())
    assert msg.addresses == (DnsAddress("lenso.ai", "198.51.100.4", 300),)


def test_garbage_after_the_answer_section_is_ignored() -> None:
    data = header(flags=0x8180, an=1, ns=3, ar=9) + QUESTION_WWW
    data += rr(pointer(12), 1, b"\xc0\x00\x02\x01") + b"\xff\xc0\x41garbage"
    msg = parse_message(data)
    assert msg.addresses == (DnsAddress("www.example.com", "192.0.2.1", 60),)


def test_a_record_with_wrong_rdata_length_raises() -> None:
    data = header(flags=0x8180, an=1) + QUESTION_WWW + rr(pointer(12), 1, b"\x01\x02\x03")
    with pytest.raises(DnsParseError, match="4 bytes"):
        parse_message(data)


def test_aaaa_record_with_wrong_rdata_length_raises() -> None:
    data = header(flags=0x8180, an=1) + QUESTION_WWW + rr(pointer(12), 28, b"\x00" * 4)
    with pytest.raises(DnsParseError, match="16 bytes"):
        parse_message(data)


def test_cname_rdata_with_bytes_after_the_name_raises() -> None:
    data = header(flags=0x8180, an=1) + QUESTION_WWW + rr(pointer(12), 5, pointer(12) + b"\x00")
    with pytest.raises(DnsParseError, match="CNAME"):
        parse_message(data)


def test_cname_target_cannot_run_past_its_rdata() -> None:
    # RDLENGTH says 3 bytes, but the name inside needs 5: reading on would take the next record.
    answer = pointer(12) + struct.pack("!HHIH", 5, 1, 60, 3) + b"\x03abc\x00"
    with pytest.raises(DnsParseError, match="truncated"):
        parse_message(header(flags=0x8180, an=1) + QUESTION_WWW + answer)


# --- truncation and counts ------------------------------------------------------------------


def test_truncated_header_raises() -> None:
    for size in range(12):
        with pytest.raises(DnsParseError, match="header"):
            parse_message(bytes(size))


def test_every_truncation_before_the_end_of_the_answer_section_raises() -> None:
    response = response_to("www.example.com")
    add(response, "www.example.com.", "CNAME", "edge.example.net.")
    add(response, "edge.example.net.", "A", "192.0.2.1")
    add(response, "edge.example.net.", "AAAA", "2001:db8::1")
    response.additional.append(dns.rrset.from_text("ns.example.", 60, "IN", "A", "192.0.2.53"))
    wire = response.to_wire()
    answer_end = len(wire) - 26  # the additional A record: pointerless name 12 + 10 + 4
    assert parse_message(wire[:answer_end]).answer_count == 3
    for size in range(answer_end):
        with pytest.raises(DnsParseError):
            parse_message(wire[:size])


@pytest.mark.parametrize(("qd", "an"), [(0xFFFF, 0), (0, 0xFFFF), (5, 0), (1, 2)])
def test_counts_larger_than_the_message_raise_at_once(qd: int, an: int) -> None:
    with pytest.raises(DnsParseError, match="counts"):
        parse_message(header(qd=qd, an=an) + QUESTION_WWW)


def test_thousands_of_pointers_into_one_long_name_all_read_their_suffix() -> None:
    # A 127-label name, then thousands of answers each pointing into a different suffix of it.
    labels = [b"a"] * 127
    qname = wire_name(*labels)  # 255 bytes at offset 12
    answers = b"".join(rr(pointer(12 + 2 * (i % 127)), 1, b"\x7f\x00\x00\x01") for i in range(4000))
    data = header(flags=0x8180, an=4000) + qname + b"\x00\x01\x00\x01" + answers
    msg = parse_message(data)
    assert len(msg.addresses) == 4000
    assert msg.addresses[5].owner == ".".join(["a"] * 122)


# --- dnspython as oracle ------------------------------------------------------------------------

LABEL_TEXT = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,14}", fullmatch=True).map(str.encode)
LABEL_BYTES = st.binary(min_size=1, max_size=63)
LABEL = st.one_of(LABEL_TEXT, LABEL_TEXT, LABEL_TEXT, LABEL_BYTES)


@st.composite
def names(draw: st.DrawFn, suffixes: list[dns.name.Name]) -> dns.name.Name:
    """Names that often share suffixes, so that dnspython compresses them."""
    labels = draw(st.lists(LABEL, max_size=4))
    base = draw(st.sampled_from(suffixes))
    total = sum(len(x) + 1 for x in labels) + len(base.to_wire())
    if total > 255:
        return base
    return dns.name.Name([*labels, *base.labels])


def random_case(name: dns.name.Name, flips: int) -> dns.name.Name:
    """The name with some ASCII letters' case flipped, as 0x20-randomising resolvers send it."""

    def flip(label: bytes) -> bytes:
        return bytes(
            b ^ 0x20 if 0x61 <= (b | 0x20) <= 0x7A and (flips >> (i % 31)) & 1 else b
            for i, b in enumerate(label)
        )

    return dns.name.Name([flip(label) for label in name.labels])


@st.composite
def rdatas(draw: st.DrawFn, suffixes: list[dns.name.Name]) -> tuple[int, dns.rdata.Rdata]:
    kind = draw(st.sampled_from(["A", "AAAA", "CNAME", "CNAME", "MX", "TXT", "HTTPS", "NS"]))
    rdclass = dns.rdataclass.IN
    if kind == "A":
        text = str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1))))
    elif kind == "AAAA":
        text = str(ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1))))
    elif kind in ("CNAME", "NS"):
        text = draw(names(suffixes)).to_text()
        if kind == "CNAME" and draw(st.booleans()):
            rdclass = dns.rdataclass.CH
    elif kind == "MX":
        text = f"{draw(st.integers(0, 65535))} {draw(names(suffixes)).to_text()}"
    elif kind == "TXT":
        text = '"' + draw(st.text(alphabet="abc xyz", max_size=20)) + '"'
    else:
        text = f'1 {draw(names(suffixes)).to_text()} alpn="h2"'
    return rdclass, dns.rdata.from_text(rdclass, kind, text)


@st.composite
def dns_messages(draw: st.DrawFn) -> bytes:
    """Wire bytes of random valid messages, built and compressed by dnspython."""
    bases = draw(st.lists(st.lists(LABEL_TEXT, min_size=0, max_size=3), min_size=1, max_size=4))
    suffixes = [dns.name.Name([*b, b""]) for b in bases]
    msg = dns.message.Message(id=draw(st.integers(0, 0xFFFF)))
    msg.flags = draw(st.integers(0, 0xFFFF)) & ~0x7800  # opcode QUERY: no UPDATE section rules
    for _ in range(draw(st.integers(0, 2))):
        qname = random_case(draw(names(suffixes)), draw(st.integers(0, 2**31)))
        qtype = draw(st.sampled_from([1, 28, 65, 5, 15, 255]))
        msg.question.append(dns.rrset.RRset(qname, dns.rdataclass.IN, qtype))
    chosen = draw(st.lists(st.tuples(names(suffixes), rdatas(suffixes)), max_size=8))
    for owner, (rdclass, rdata) in chosen:
        ttl = draw(st.integers(0, 2**32 - 1))
        rrset = dns.rrset.RRset(
            random_case(owner, draw(st.integers(0, 2**31))), rdclass, rdata.rdtype
        )
        rrset.add(rdata, ttl)
        msg.answer.append(rrset)
    if msg.question and draw(st.booleans()):
        # A CNAME chain from the question, possibly looping back, interleaved with the rest.
        links = [msg.question[0].name, *draw(st.lists(names(suffixes), min_size=1, max_size=5))]
        if draw(st.booleans()):
            links.append(links[draw(st.integers(0, len(links) - 2))])  # a loop
        for i, (owner, target) in enumerate(itertools.pairwise(links)):
            rrset = dns.rrset.RRset(random_case(owner, i * 7919), dns.rdataclass.IN, 5)
            rrset.add(dns.rdata.from_text("IN", "CNAME", target.to_text()), 30)
            msg.answer.insert(draw(st.integers(0, len(msg.answer))), rrset)
    if draw(st.booleans()):
        msg.use_edns(0, 0, 1232)
    for owner, (rdclass, rdata) in draw(
        st.lists(st.tuples(names(suffixes), rdatas(suffixes)), max_size=2)
    ):
        rrset = dns.rrset.RRset(owner, rdclass, rdata.rdtype)
        rrset.add(rdata, 60)
        draw(st.sampled_from([msg.authority, msg.additional])).append(rrset)
    return msg.to_wire()


@given(dns_messages())
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_valid_messages_parse_like_dnspython(wire: bytes) -> None:
    assert_matches_oracle(wire)


@given(dns_messages())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_cname_chain_is_bounded_unique_and_excludes_the_question(wire: bytes) -> None:
    msg = parse_message(wire)
    chain = cname_chain(msg)
    assert len(chain) <= MAX_CNAME_HOPS
    assert len(set(chain)) == len(chain)
    if msg.questions:
        assert msg.questions[0].name not in chain
    links = {(owner, target) for owner, target, _ttl in msg.cnames}
    previous = msg.questions[0].name if msg.questions else None
    for target in chain:
        assert (previous, target) in links
        previous = target


# Label contents, some holding bytes that read as pointers or labels when a pointer lands
# inside them.
PIECES = [b"a", b"Bc", b"d.e", b"\\", b"x" * 63, b"y" * 40, b"\xc0\x0c", b"\x01\xc0\x0e", b"\x02"]


@st.composite
def compression_graphs(draw: st.DrawFn) -> bytes:
    """Hand-made messages whose names point anywhere: backwards, forwards, into themselves,
    into the middle of labels, into the header; some pointers end in runs that overlap them."""
    qdcount = draw(st.integers(1, 3))
    ancount = draw(st.integers(0, 6))
    data = bytearray(header(flags=0x8180, qd=qdcount, an=ancount))

    def name(extra: int = 0) -> bytes:
        out = b"".join(
            bytes([len(x)]) + x for x in draw(st.lists(st.sampled_from(PIECES), max_size=3))
        )
        if draw(st.booleans()):
            here = len(data) + extra + len(out)
            return out + pointer(draw(st.integers(0, here + 2)))
        return out + b"\x00"

    for _ in range(qdcount):
        data += name() + b"\x00\x01\x00\x01"
    for _ in range(ancount):
        owner = name()
        data += owner
        rdata = name(extra=10)
        data += struct.pack("!HHIH", 5, 1, 60, len(rdata)) + rdata
    return bytes(data)


@given(compression_graphs())
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_names_are_accepted_exactly_when_dnspython_accepts_them(wire: bytes) -> None:
    try:
        oracle_view(wire)
    except dns.exception.DNSException:
        with pytest.raises(DnsParseError):
            parse_both_ways(wire)
        return
    assert_matches_oracle(wire)


# --- fuzzing ----------------------------------------------------------------------------------


@given(st.binary(max_size=600))
@settings(max_examples=1500, deadline=None)
def test_random_bytes_only_ever_raise_dns_parse_error(data: bytes) -> None:
    with contextlib.suppress(DnsParseError):
        parse_both_ways(data)


@given(st.binary(max_size=400))
@settings(max_examples=1000, deadline=None)
def test_random_bytes_after_a_plausible_header_only_raise_dns_parse_error(body: bytes) -> None:
    for an in (1, 4):
        with contextlib.suppress(DnsParseError):
            parse_both_ways(header(flags=0x8180, qd=1, an=an) + body)


MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.integers(min_value=0),
    st.integers(0, 255),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in mutations:
        if not buf:
            break
        at = where % len(buf)
        if kind == "flip":
            buf[at] ^= 1 << (value % 8)
        elif kind == "set":
            buf[at] = value
        elif kind == "insert":
            buf[at:at] = bytes([value])
        elif kind == "delete":
            del buf[at]
        else:
            del buf[at:]
    return bytes(buf)


@given(dns_messages(), st.lists(MUTATION, min_size=1, max_size=4))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_messages_raise_dns_parse_error_or_parse_like_dnspython(
    wire: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    data = mutate(wire, mutations)
    try:
        parsed = parse_both_ways(data)
    except DnsParseError:
        parsed = None
    try:
        oracle_view(data)
    except Exception:  # dnspython refused it: only our exception type matters then
        return
    assert parsed is not None, "dnspython accepts a message we reject"
    assert_matches_oracle(data)


# --- DNS over TCP -------------------------------------------------------------------------------

MESSAGES = [
    dns.message.make_query("a.example", "A").to_wire(),
    dns.message.make_query("b.example", "AAAA").to_wire(),
    response_to("c.example").to_wire(),
]


def test_framer_returns_three_messages_from_one_segment() -> None:
    framer = DnsTcpFramer()
    assert framer.feed(b"".join(framed(m) for m in MESSAGES)) == MESSAGES
    assert framer.buffered == 0


def test_framer_reassembles_a_message_fed_byte_by_byte() -> None:
    framer = DnsTcpFramer()
    stream = framed(MESSAGES[2])
    out: list[bytes] = []
    for i in range(len(stream)):
        got = framer.feed(stream[i : i + 1])
        if i < len(stream) - 1:
            assert got == []
            assert framer.buffered == i + 1
        out += got
    assert out == [MESSAGES[2]]
    assert framer.buffered == 0


def test_framer_reassembles_a_message_split_over_three_segments() -> None:
    framer = DnsTcpFramer()
    stream = framed(MESSAGES[0])
    assert framer.feed(stream[:5]) == []
    assert framer.feed(memoryview(stream)[5:20]) == []
    assert framer.feed(bytearray(stream[20:])) == [MESSAGES[0]]


def test_framer_handles_a_length_prefix_split_between_segments() -> None:
    framer = DnsTcpFramer()
    stream = framed(MESSAGES[0]) + framed(MESSAGES[1])
    cut = len(framed(MESSAGES[0])) + 1  # one byte of the second prefix
    assert framer.feed(stream[:cut]) == [MESSAGES[0]]
    assert framer.buffered == 1
    assert framer.feed(stream[cut:]) == [MESSAGES[1]]
    assert parse_message(MESSAGES[1]).questions[0].name == "b.example"


@pytest.mark.parametrize("length", [0, 1, 11])
def test_framer_rejects_a_length_prefix_too_small_for_a_header(length: int) -> None:
    framer = DnsTcpFramer()
    stream = framed(MESSAGES[0]) + struct.pack("!H", length) + framed(MESSAGES[1])
    with pytest.raises(DnsFramingError, match="too small") as caught:
        framer.feed(stream)
    assert caught.value.messages == [MESSAGES[0]]
    assert isinstance(caught.value, DnsParseError)
    assert framer.buffered == 0
    with pytest.raises(DnsParseError, match="already failed"):
        framer.feed(framed(MESSAGES[1]))


def test_framer_rejects_a_message_larger_than_its_buffer() -> None:
    framer = DnsTcpFramer(max_buffer=100)
    with pytest.raises(DnsParseError, match="larger"):
        framer.feed(struct.pack("!H", 99))  # 99 + 2 > 100
    assert framer.buffered == 0


def test_framer_default_buffer_takes_the_largest_legal_message() -> None:
    framer = DnsTcpFramer()
    big = header(qd=0) + bytes(65535 - 12)
    stream = framed(big)
    assert framer.feed(stream[:-1]) == []
    assert framer.buffered == 65536
    assert framer.feed(stream[-1:]) == [big]


def test_framer_refuses_a_buffer_too_small_for_any_message() -> None:
    with pytest.raises(ValueError):
        DnsTcpFramer(max_buffer=13)


@given(
    st.lists(st.binary(min_size=12, max_size=300), max_size=6),
    st.lists(st.integers(min_value=1, max_value=400), max_size=20),
)
@settings(max_examples=300, deadline=None)
def test_framer_output_does_not_depend_on_segmentation(
    messages: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(framed(m) for m in messages)
    framer = DnsTcpFramer()
    out: list[bytes] = []
    pos = 0
    for size in cuts:
        out += framer.feed(stream[pos : pos + size])
        pos += size
    out += framer.feed(stream[pos:])
    assert out == messages
    assert framer.buffered == 0


@given(
    st.integers(min_value=14, max_value=3000),
    st.lists(st.binary(max_size=700), max_size=12),
)
@settings(max_examples=500, deadline=None)
def test_framer_never_holds_more_than_max_buffer(max_buffer: int, chunks: list[bytes]) -> None:
    framer = DnsTcpFramer(max_buffer=max_buffer)
    for chunk in chunks:
        try:
            messages = framer.feed(chunk)
        except DnsParseError:
            assert framer.buffered == 0
            return
        assert all(12 <= len(m) <= max_buffer - 2 for m in messages)
        assert framer.buffered <= max_buffer


def test_parse_message_result_is_a_frozen_record() -> None:
    msg = parse_message(MESSAGES[0])
    assert isinstance(msg, DnsMessage)
    with pytest.raises(AttributeError):
        msg.id = 1  # type: ignore[misc]


def test_parsed_message_equals_the_one_its_constructor_builds() -> None:
    response = response_to("WWW.example.com")
    add(response, "www.example.com.", "CNAME", "cdn.example.net.")
    add(response, "cdn.example.net.", "AAAA", "2001:db8::5")
    msg = parse_message(response.to_wire())
    built = DnsMessage(
        id=response.id,
        flags=0x8100,
        is_response=True,
        opcode=0,
        rcode=0,
        questions=(DnsQuestion("www.example.com", 1, 1),),
        cnames=(("www.example.com", "cdn.example.net", 300),),
        addresses=(DnsAddress("cdn.example.net", "2001:db8::5", 300),),
        answer_count=2,
    )
    assert msg == built
    assert hash(msg) == hash(built)
    assert repr(msg) == repr(built)
