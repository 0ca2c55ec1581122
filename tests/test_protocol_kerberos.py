"""Behaviour of the Kerberos KDC message parser and TCP framer (monitor.protocols.kerberos).

Two independent oracles: Wireshark's dissection stored with every real MIT Kerberos exchange in
tests/fixtures/kerberos (see capture.py there), and impacket's pyasn1 definitions of RFC 4120,
which decode the same bytes and also build the messages MIT does not send (NetBIOS addresses,
odd names). impacket is a test-only dependency.
"""

from __future__ import annotations

import datetime
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from impacket.krb5 import constants
from impacket.krb5.asn1 import (
    AP_REQ,
    AS_REP,
    AS_REQ,
    KRB_ERROR,
    TGS_REP,
    TGS_REQ,
    seq_set,
    seq_set_iter,
)
from impacket.krb5.types import KerberosTime, Principal
from pyasn1.codec.der import decoder, encoder
from pyasn1.type.univ import noValue

from monitor.protocols.kerberos import (
    ADDRTYPE_NETBIOS,
    KDC_ERR_C_PRINCIPAL_UNKNOWN,
    KDC_ERR_PREAUTH_FAILED,
    KDC_ERR_PREAUTH_REQUIRED,
    MSG_AP_REQ,
    MSG_AS_REP,
    MSG_AS_REQ,
    MSG_KRB_ERROR,
    MSG_TGS_REP,
    MSG_TGS_REQ,
    PA_ENC_TIMESTAMP,
    KerberosFramingError,
    KerberosMessage,
    KerberosParseError,
    KerberosTcpFramer,
    parse_kerberos,
)

FIXTURES = Path(__file__).parent / "fixtures" / "kerberos"
SCENARIOS = sorted(p.stem for p in FIXTURES.glob("*.json"))

# --- fixtures ---------------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def messages(name: str) -> list[tuple[bytes, dict[str, list[str]]]]:
    """Every Kerberos message of a scenario, TCP records already unframed, with Wireshark's view.

    TCP payloads go through one framer per (connection, direction), which is itself under test
    here: it must give back exactly the messages Wireshark dissected.
    """
    out = []
    framers: dict[tuple[int, bool], KerberosTcpFramer] = {}
    for pkt in load(name)["packets"]:
        payload = bytes.fromhex(pkt["payload"])
        if pkt["transport"] == "udp":
            records = [payload]
        else:
            key = (pkt["stream"], pkt["from_client"])
            records = framers.setdefault(key, KerberosTcpFramer()).feed(payload)
        assert len(records) == 1, "each fixture packet holds exactly one message"
        out.append((records[0], pkt["wireshark"]))
    assert all(f.buffered == 0 for f in framers.values())
    return out


def scenario(name: str) -> list[KerberosMessage]:
    return [parse_kerberos(raw) for raw, _ in messages(name)]


ALL_MESSAGES = [raw for name in SCENARIOS for raw, _ in messages(name)]

# --- impacket as the oracle -------------------------------------------------------------------

SPECS = {
    MSG_AS_REQ: AS_REQ,
    MSG_AS_REP: AS_REP,
    MSG_TGS_REQ: TGS_REQ,
    MSG_TGS_REP: TGS_REP,
    MSG_KRB_ERROR: KRB_ERROR,
}


def names(principal: Any) -> tuple[int, tuple[str, ...]] | None:
    if not principal.hasValue():
        return None
    return int(principal["name-type"]), tuple(str(s) for s in principal["name-string"])


def opt_str(value: Any) -> str | None:
    return str(value) if value.hasValue() else None


def impacket_view(raw: bytes) -> dict[str, Any]:
    """What impacket decodes from the bytes, in the shape of our record's fields."""
    msg_type = raw[0] & 0x1F
    decoded = decoder.decode(raw, asn1Spec=SPECS[msg_type]())[0]
    view: dict[str, Any] = {"msg_type": int(decoded["msg-type"])}
    if msg_type in (MSG_AS_REQ, MSG_TGS_REQ):
        body = decoded["req-body"]
        view.update(
            realm=str(body["realm"]),
            cname=names(body["cname"]),
            sname=names(body["sname"]),
            service_realm=str(body["realm"]),
            padata_types=tuple(int(p["padata-type"]) for p in decoded["padata"]),
            addresses=tuple((int(a["addr-type"]), bytes(a["address"])) for a in body["addresses"]),
        )
    elif msg_type in (MSG_AS_REP, MSG_TGS_REP):
        view.update(
            realm=str(decoded["crealm"]),
            cname=names(decoded["cname"]),
            sname=names(decoded["ticket"]["sname"]),
            service_realm=str(decoded["ticket"]["realm"]),
            padata_types=tuple(int(p["padata-type"]) for p in decoded["padata"]),
        )
    else:
        view.update(
            realm=opt_str(decoded["crealm"]),
            cname=names(decoded["cname"]),
            sname=names(decoded["sname"]),
            service_realm=opt_str(decoded["realm"]),
            error_code=int(decoded["error-code"]),
            error_text=opt_str(decoded["e-text"]),
        )
    return view


def our_view(msg: KerberosMessage) -> dict[str, Any]:
    def names_of(p: Any) -> tuple[int, tuple[str, ...]] | None:
        return None if p is None else (p.name_type, p.components)

    view: dict[str, Any] = {
        "msg_type": msg.msg_type,
        "realm": msg.realm,
        "cname": names_of(msg.cname),
        "sname": names_of(msg.sname),
        "service_realm": msg.service_realm,
    }
    if msg.msg_type == MSG_KRB_ERROR:
        view.update(error_code=msg.error_code, error_text=msg.error_text)
    else:
        view["padata_types"] = msg.padata_types
        if msg.msg_type in (MSG_AS_REQ, MSG_TGS_REQ):
            view["addresses"] = tuple((a.addr_type, a.address) for a in msg.addresses)
    return view


# --- builders for what MIT does not send ------------------------------------------------------


def as_req(
    user: str = "bob",
    realm: str = "CORP.EXAMPLE",
    padata: tuple[int, ...] = (PA_ENC_TIMESTAMP,),
    addresses: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    req = AS_REQ()
    req["pvno"] = 5
    req["msg-type"] = MSG_AS_REQ
    if padata:
        req["padata"] = noValue
        for i, pa_type in enumerate(padata):
            req["padata"][i] = noValue
            req["padata"][i]["padata-type"] = pa_type
            req["padata"][i]["padata-value"] = b"\x30\x00"
    body = seq_set(req, "req-body")
    body["kdc-options"] = constants.encodeFlags([constants.KDCOptions.forwardable.value])
    client = Principal(user, type=constants.PrincipalNameType.NT_PRINCIPAL.value)
    server = Principal(f"krbtgt/{realm}", type=constants.PrincipalNameType.NT_SRV_INST.value)
    seq_set(body, "cname", client.components_to_asn1)
    seq_set(body, "sname", server.components_to_asn1)
    body["realm"] = realm
    body["till"] = KerberosTime.to_asn1(datetime.datetime(2037, 1, 1, tzinfo=datetime.UTC))
    body["nonce"] = 12345
    seq_set_iter(body, "etype", (18, 17, 23))
    if addresses:
        body["addresses"] = noValue
        for i, (addr_type, value) in enumerate(addresses):
            body["addresses"][i] = noValue
            body["addresses"][i]["addr-type"] = addr_type
            body["addresses"][i]["address"] = value
    return encoder.encode(req)


def krb_error(code: int, user: str | None = None) -> bytes:
    err = KRB_ERROR()
    err["pvno"] = 5
    err["msg-type"] = MSG_KRB_ERROR
    err["stime"] = KerberosTime.to_asn1(datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC))
    err["susec"] = 0
    err["error-code"] = code
    if user is not None:
        err["crealm"] = "CORP.EXAMPLE"
        seq_set(err, "cname", Principal(user, type=1).components_to_asn1)
    err["realm"] = "CORP.EXAMPLE"
    seq_set(err, "sname", Principal("krbtgt/CORP.EXAMPLE", type=2).components_to_asn1)
    return encoder.encode(err)


def with_cname(raw: bytes, name: str) -> bytes:
    """An as_req() with its one-component cname replaced (impacket's Principal splits at /)."""
    req = decoder.decode(raw, asn1Spec=AS_REQ())[0]
    req["req-body"]["cname"]["name-string"][0] = name
    return encoder.encode(req)


def hand_as_req(components: list[bytes]) -> bytes:
    """The smallest AS-REQ the parser accepts: pvno, msg-type, req-body with cname and realm."""
    strings = b"".join(tlv(0x1B, c) for c in components)
    name = tlv(0x30, tlv(0xA0, tlv(0x02, b"\x01")) + tlv(0xA1, tlv(0x30, strings)))
    body = tlv(0x30, tlv(0xA1, name) + tlv(0xA2, tlv(0x1B, b"R")))
    header = tlv(0xA1, tlv(0x02, b"\x05")) + tlv(0xA2, tlv(0x02, b"\x0a"))
    return tlv(0x6A, tlv(0x30, header + tlv(0xA4, body)))


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


# --- real traffic -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_fixture_messages_read_as_wireshark_reads_them(name: str) -> None:
    for raw, ws in messages(name):
        msg = parse_kerberos(raw)
        # Wireshark flattens nested fields (the AP-REQ inside a TGS-REQ, the METHOD-DATA in a
        # KRB-ERROR's e-data) into the same lists, so only their unambiguous parts compare.
        assert msg.msg_type == int(ws["msg_type"][0])
        assert [str(msg.error_code)] == ws["error_code"] or msg.error_code is None
        assert list(msg.cname.components if msg.cname else ()) == ws["cname"]
        if msg.msg_type != MSG_TGS_REQ:
            assert [msg.realm] == (ws["crealm"] or ws["realm"][:1])
        assert msg.sname is not None
        assert ws["sname"][-len(msg.sname.components) :] == list(msg.sname.components)
        if msg.msg_type in (MSG_AS_REQ, MSG_AS_REP):
            assert [str(t) for t in msg.padata_types] == ws["padata_type"]
        assert [a.text for a in msg.addresses] == ws["addr_ip"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_fixture_messages_agree_with_impacket_field_by_field(name: str) -> None:
    for raw, _ in messages(name):
        assert our_view(parse_kerberos(raw)) == impacket_view(raw)


def test_kinit_with_the_right_password_is_refused_once_then_pre_authenticated() -> None:
    first, error, second, reply = scenario("as_udp_alice")
    assert [m.msg_type for m in (first, error, second, reply)] == [10, 30, 10, 11]
    assert not first.has_preauth
    assert error.error_code == KDC_ERR_PREAUTH_REQUIRED
    assert second.has_preauth and PA_ENC_TIMESTAMP in second.padata_types
    assert reply.is_success_reply
    assert {m.principal for m in (first, error, second, reply)} == {"alice@EGRESS.TEST"}
    assert str(reply.sname) == "krbtgt/EGRESS.TEST"
    assert not any(m.is_machine_account for m in (first, error, second, reply))


def test_wrong_password_ends_in_preauth_failed_for_that_principal() -> None:
    *_, attempt, failure = scenario("as_udp_wrong_password")
    assert attempt.has_preauth
    assert failure.error_code == KDC_ERR_PREAUTH_FAILED
    assert failure.principal == "alice@EGRESS.TEST"
    assert not failure.is_success_reply


def test_unknown_user_is_named_in_the_principal_unknown_error() -> None:
    request, error = scenario("as_udp_unknown_principal")
    assert request.principal == "mallory@EGRESS.TEST"
    assert error.error_code == KDC_ERR_C_PRINCIPAL_UNKNOWN
    assert error.principal == "mallory@EGRESS.TEST"


def test_machine_account_logon_is_flagged_as_such() -> None:
    found = scenario("as_udp_machine_account")
    assert all(m.is_machine_account for m in found)
    assert found[-1].principal == "WS01$@EGRESS.TEST"


def test_client_addresses_of_kinit_a_are_read() -> None:
    request = scenario("as_udp_addresses")[0]
    assert [(a.addr_type, a.text) for a in request.addresses] == [(2, "10.88.0.2")]
    assert request.netbios_name is None


def test_tgs_request_names_the_service_and_its_reply_names_the_user() -> None:
    request, reply = scenario("tgs_udp_kvno")
    assert request.msg_type == MSG_TGS_REQ and request.cname is None
    assert request.principal is None  # the client is only inside the encrypted authenticator
    assert str(request.sname) == "host/ws01.egress.test"
    assert reply.msg_type == MSG_TGS_REP and reply.is_success_reply
    assert reply.principal == "alice@EGRESS.TEST"
    assert str(reply.sname) == "host/ws01.egress.test"


@pytest.mark.parametrize(("tcp", "udp"), [("as_tcp_alice", "as_udp_alice")])
def test_tcp_exchange_unframes_to_the_same_messages_as_udp(tcp: str, udp: str) -> None:
    over_tcp, over_udp = scenario(tcp), scenario(udp)
    assert [m.msg_type for m in over_tcp] == [m.msg_type for m in over_udp]
    assert [m.principal for m in over_tcp] == [m.principal for m in over_udp]
    assert [m.error_code for m in over_tcp] == [m.error_code for m in over_udp]


def test_parser_accepts_memoryview_and_bytearray() -> None:
    raw = ALL_MESSAGES[0]
    assert parse_kerberos(memoryview(raw)) == parse_kerberos(bytearray(raw)) == parse_kerberos(raw)


# --- crafted messages -------------------------------------------------------------------------


def test_netbios_address_gives_the_workstation_name_without_padding() -> None:
    raw = as_req(addresses=((2, bytes([10, 0, 0, 7])), (ADDRTYPE_NETBIOS, b"WS-0042".ljust(16))))
    msg = parse_kerberos(raw)
    assert msg.netbios_name == "WS-0042"
    assert [a.text for a in msg.addresses] == ["10.0.0.7", "WS-0042"]
    assert our_view(msg) == impacket_view(raw)


def test_ipv6_and_unknown_address_types_have_a_text_form() -> None:
    raw = as_req(addresses=((24, bytes(15) + b"\x01"), (99, b"\xab\xcd")))
    assert [a.text for a in parse_kerberos(raw).addresses] == ["::1", "abcd"]


@pytest.mark.parametrize(
    ("padata", "preauth"),
    [((), False), ((128,), False), ((2,), True), ((16,), True), ((138,), True), ((136,), False)],
)
def test_only_key_proving_padata_counts_as_pre_authentication(
    padata: tuple[int, ...], preauth: bool
) -> None:
    msg = parse_kerberos(as_req(padata=padata))
    assert msg.padata_types == padata
    assert msg.has_preauth is preauth


def test_krb_error_without_cname_has_no_principal() -> None:
    msg = parse_kerberos(krb_error(KDC_ERR_PREAUTH_REQUIRED))
    assert msg.error_code == 25 and msg.cname is None and msg.principal is None
    assert msg.service_realm == "CORP.EXAMPLE" and str(msg.sname) == "krbtgt/CORP.EXAMPLE"
    assert not msg.is_machine_account


def test_realm_keeps_its_case_and_user_is_as_sent() -> None:
    assert parse_kerberos(as_req("Alice.Smith", "Corp.Example")).principal == (
        "Alice.Smith@Corp.Example"
    )


def test_utf8_names_are_decoded() -> None:
    assert parse_kerberos(as_req("jürgen")).principal == "jürgen@CORP.EXAMPLE"


def test_slash_and_at_inside_a_component_are_escaped_so_the_principal_splits_one_way() -> None:
    msg = parse_kerberos(with_cname(as_req(), "a/b@c"))
    assert msg.cname is not None and msg.cname.components == ("a/b@c",)
    assert msg.principal == "a\\/b\\@c@CORP.EXAMPLE"


def test_invalid_utf8_control_characters_and_backslashes_are_escaped_reversibly() -> None:
    raw = with_cname(as_req(), "xxxx").replace(b"\x1b\x04xxxx", b"\x1b\x04\xffa\\\n")
    msg = parse_kerberos(raw)
    assert msg.cname is not None and msg.cname.components == ("\\xffa\\x5c\\x0a",)


def test_other_kerberos_messages_give_only_their_type() -> None:
    ap_req = AP_REQ()
    ap_req["pvno"] = 5
    ap_req["msg-type"] = MSG_AP_REQ
    ap_req["ap-options"] = constants.encodeFlags([])
    ticket = seq_set(ap_req, "ticket")
    ticket["tkt-vno"] = 5
    ticket["realm"] = "CORP.EXAMPLE"
    seq_set(ticket, "sname", Principal("HTTP/proxy.corp.example", type=2).components_to_asn1)
    ticket["enc-part"]["etype"] = 18
    ticket["enc-part"]["cipher"] = b"\x00" * 16
    ap_req["authenticator"]["etype"] = 18
    ap_req["authenticator"]["cipher"] = b"\x00" * 16
    assert parse_kerberos(encoder.encode(ap_req)) == KerberosMessage(msg_type=MSG_AP_REQ)


def test_long_form_lengths_are_accepted_even_when_not_minimal() -> None:
    raw = as_req()
    # Re-encode the outer length in a 4-byte long form: BER allows it, DER would not.
    tag, first = raw[0], raw[1]
    assert first & 0x80
    count = first & 0x7F
    length = int.from_bytes(raw[2 : 2 + count], "big")
    padded = bytes([tag, 0x84]) + length.to_bytes(4, "big") + raw[2 + count :]
    assert parse_kerberos(padded) == parse_kerberos(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "truncated"),
        (b"\x6a", "truncated"),
        (b"\x6a\x80\x00\x00", "indefinite"),
        (b"\x7f\x1e\x00", "high tag"),
        (b"\x6a\x85\x00\x00\x00\x00\x01\x00", "long-form"),
        (b"\x6a\x05\x30\x03", "runs past"),
        (tlv(0x63, tlv(0x30, b"")), "not a Kerberos message"),  # APPLICATION 3
        (tlv(0x30, b""), "not APPLICATION"),
        (tlv(0x6A, tlv(0x30, b"")), r"missing \[1\]"),
    ],
)
def test_malformed_outer_structure_raises(raw: bytes, reason: str) -> None:
    with pytest.raises(KerberosParseError, match=reason):
        parse_kerberos(raw)


def test_trailing_bytes_after_the_message_raise() -> None:
    with pytest.raises(KerberosParseError, match="trailing"):
        parse_kerberos(as_req() + b"\x00")


def test_msg_type_must_match_the_application_tag() -> None:
    raw = bytearray(as_req())
    # pvno [1] INTEGER 5 then msg-type [2] INTEGER 10: a1 03 02 01 05 a2 03 02 01 0a
    at = raw.index(b"\xa2\x03\x02\x01\x0a")
    raw[at + 4] = MSG_TGS_REQ
    with pytest.raises(KerberosParseError, match="msg-type 12 under APPLICATION 10"):
        parse_kerberos(bytes(raw))


def test_pvno_other_than_5_raises() -> None:
    raw = bytearray(as_req())
    at = raw.index(b"\xa1\x03\x02\x01\x05")
    raw[at + 4] = 4
    with pytest.raises(KerberosParseError, match="pvno"):
        parse_kerberos(bytes(raw))


def test_name_components_are_capped() -> None:
    assert parse_kerberos(hand_as_req([b"x"] * 16)).cname is not None
    with pytest.raises(KerberosParseError, match="components"):
        parse_kerberos(hand_as_req([b"x"] * 17))


def test_padata_entries_are_capped() -> None:
    assert len(parse_kerberos(as_req(padata=(128,) * 64)).padata_types) == 64
    with pytest.raises(KerberosParseError, match="more than 64"):
        parse_kerberos(as_req(padata=(128,) * 65))


def test_minimal_request_without_optional_fields_parses() -> None:
    msg = parse_kerberos(hand_as_req([b"bob"]))
    assert msg.principal == "bob@R" and msg.sname is None and msg.padata_types == ()


def test_duplicate_sequence_members_raise() -> None:
    raw = tlv(0x7E, tlv(0x30, tlv(0xA0, tlv(0x02, b"\x05")) * 2))
    with pytest.raises(KerberosParseError, match="duplicate"):
        parse_kerberos(raw)


def test_unknown_context_members_are_skipped() -> None:
    raw = krb_error(6, "eve")
    # Append an unknown [15] member inside the SEQUENCE (an extension marker allows it).
    seq_start = 2 if raw[1] < 0x80 else 2 + (raw[1] & 0x7F)
    seq = raw[seq_start:]
    content_at = 2 if seq[1] < 0x80 else 2 + (seq[1] & 0x7F)
    extended = tlv(0x7E, tlv(0x30, seq[content_at:] + tlv(0xAF, tlv(0x05, b""))))
    assert parse_kerberos(extended) == parse_kerberos(raw)


# --- TCP framing ------------------------------------------------------------------------------


def framed(*records: bytes) -> bytes:
    return b"".join(struct.pack("!I", len(r)) + r for r in records)


def test_framer_returns_records_in_order_from_one_feed() -> None:
    records = ALL_MESSAGES[:3]
    framer = KerberosTcpFramer()
    assert framer.feed(framed(*records)) == records
    assert framer.buffered == 0


def test_framer_gives_the_same_records_for_every_split_point() -> None:
    records = ALL_MESSAGES[:2]
    stream = framed(*records)
    for cut in range(len(stream) + 1):
        framer = KerberosTcpFramer()
        assert framer.feed(stream[:cut]) + framer.feed(stream[cut:]) == records


def test_framer_fed_byte_by_byte_holds_at_most_one_partial_record() -> None:
    record = ALL_MESSAGES[0]
    framer = KerberosTcpFramer()
    out: list[bytes] = []
    for b in framed(record, record):
        out += framer.feed(bytes([b]))
        assert framer.buffered <= len(record) + 4
    assert out == [record, record]


@pytest.mark.parametrize(
    ("marker", "reason"),
    [(0x80000010, "high bit"), (0, "empty record"), (65537, "exceeds max_record")],
)
def test_bad_record_marker_fails_the_framer_but_keeps_earlier_records(
    marker: int, reason: str
) -> None:
    good = ALL_MESSAGES[0]
    framer = KerberosTcpFramer()
    with pytest.raises(KerberosFramingError, match=reason) as info:
        framer.feed(framed(good) + struct.pack("!I", marker) + b"junk")
    assert info.value.messages == [good]
    assert framer.buffered == 0
    with pytest.raises(KerberosFramingError, match="already failed"):
        framer.feed(framed(good))


def test_framer_max_record_is_configurable_and_must_be_positive() -> None:
    framer = KerberosTcpFramer(max_record=10)
    assert framer.feed(framed(b"x" * 10)) == [b"x" * 10]
    with pytest.raises(KerberosFramingError):
        framer.feed(framed(b"x" * 11))
    with pytest.raises(ValueError, match="positive"):
        KerberosTcpFramer(max_record=0)


# --- fuzzing ----------------------------------------------------------------------------------


def _parse_or_parse_error(data: bytes) -> None:
    try:
        msg = parse_kerberos(data)
    except KerberosParseError:
        return
    # Whatever parses must give a usable, printable record.
    _ = (msg.principal, msg.is_machine_account, msg.netbios_name, msg.has_preauth)
    _ = [a.text for a in msg.addresses]
    if msg.principal is not None:
        msg.principal.encode("utf-8")


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_only_ever_raise_parse_error(data: bytes) -> None:
    _parse_or_parse_error(data)


@settings(max_examples=300)
@given(st.binary(max_size=256))
def test_random_bytes_behind_an_application_tag_only_ever_raise_parse_error(body: bytes) -> None:
    for tag in (0x6A, 0x6B, 0x6C, 0x6D, 0x7E, 0x6E):
        _parse_or_parse_error(tlv(tag, body))
        _parse_or_parse_error(tlv(tag, tlv(0x30, body)))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([*ALL_MESSAGES, as_req(), krb_error(24, "x")])))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(("flip", "set", "cut", "insert", "delete")))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from((0x00, 0x7F, 0x80, 0x81, 0x84, 0xFF, 0x30, 0x1B)))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos]
    return bytes(data)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_real_messages_only_ever_raise_parse_error(data: bytes) -> None:
    _parse_or_parse_error(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.binary(max_size=64), max_size=20),
    st.integers(min_value=1, max_value=300),
)
def test_framer_on_random_streams_stays_bounded_and_raises_only_framing_errors(
    chunks: list[bytes], max_record: int
) -> None:
    framer = KerberosTcpFramer(max_record=max_record)
    for chunk in chunks:
        try:
            records = framer.feed(chunk)
        except KerberosFramingError:
            return
        assert all(0 < len(r) <= max_record for r in records)
        assert framer.buffered < max_record + 4


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=600), max_size=8))
def test_framer_reassembles_real_records_at_any_chunking(cuts: list[int]) -> None:
    records = ALL_MESSAGES[:3]
    stream = framed(*records)
    points = sorted({min(c, len(stream)) for c in cuts})
    framer = KerberosTcpFramer()
    out: list[bytes] = []
    prev = 0
    for p in [*points, len(stream)]:
        out += framer.feed(stream[prev:p])
        prev = p
    assert out == records
