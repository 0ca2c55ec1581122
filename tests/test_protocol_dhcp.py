"""Behaviour of the DHCPv4 parser (monitor.protocols.dhcp).

Real traffic first: tests/fixtures/dhcp/*.json hold the UDP payloads of ISC dhclient talking
to dnsmasq in network namespaces (regenerate with tests/fixtures/dhcp/capture.py), with
Wireshark's dissection of each packet as an independent oracle. Crafted messages then cover
what those two programs never send: option overload, RFC 3396 split options, hostile host
names, INFORM, BOOTP, and every way a message can be malformed. Hypothesis checks that random
bytes and mutations of the real messages raise nothing but DhcpParseError.
"""

from __future__ import annotations

import json
import struct
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.protocols.dhcp import (
    DHCPACK,
    DHCPDECLINE,
    DHCPDISCOVER,
    DHCPINFORM,
    DHCPNAK,
    DHCPOFFER,
    DHCPRELEASE,
    DHCPREQUEST,
    FQDN_E,
    MAGIC_COOKIE,
    DhcpMessage,
    DhcpParseError,
    decode_wire_name,
    parse_dhcp,
    safe_text,
)

FIXTURES = Path(__file__).parent / "fixtures" / "dhcp"
V4_SCENARIOS = sorted(p.stem for p in FIXTURES.glob("v4_*.json"))
WS01_MAC = "02:00:00:77:00:01"
WS02_MAC = "02:00:00:77:00:02"
POOL_ADDRESS = "10.77.0.50"


def scenario(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def real_messages(name: str) -> list[DhcpMessage]:
    return [parse_dhcp(bytes.fromhex(p["payload"])) for p in scenario(name)["packets"]]


def all_real_payloads() -> list[bytes]:
    return [bytes.fromhex(p["payload"]) for name in V4_SCENARIOS for p in scenario(name)["packets"]]


def option(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def build(
    *options: bytes,
    op: int = 1,
    htype: int = 1,
    hlen: int = 6,
    xid: int = 0x11223344,
    ciaddr: str = "0.0.0.0",
    yiaddr: str = "0.0.0.0",
    siaddr: str = "0.0.0.0",
    giaddr: str = "0.0.0.0",
    chaddr: bytes = bytes.fromhex("020000770001"),
    sname: bytes = b"",
    file: bytes = b"",
    cookie: bytes = MAGIC_COOKIE,
    end: bool = True,
) -> bytes:
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        op,
        htype,
        hlen,
        0,
        xid,
        0,
        0x8000,
        IPv4Address(ciaddr).packed,
        IPv4Address(yiaddr).packed,
        IPv4Address(siaddr).packed,
        IPv4Address(giaddr).packed,
        chaddr.ljust(16, b"\x00"),
        sname.ljust(64, b"\x00"),
        file.ljust(128, b"\x00"),
    )
    return header + cookie + b"".join(options) + (b"\xff" if end else b"")


def mtype(value: int) -> bytes:
    return option(53, bytes([value]))


# --- real traffic: dhclient and dnsmasq -------------------------------------------------------


@pytest.mark.parametrize("name", V4_SCENARIOS)
def test_real_messages_agree_with_wireshark(name: str) -> None:
    packets = scenario(name)["packets"]
    assert packets, f"{name} captured nothing"
    for pkt in packets:
        msg = parse_dhcp(bytes.fromhex(pkt["payload"]))
        ws = pkt["wireshark"]
        assert msg.message_type == int(ws["v4_msg_type"][0])
        assert msg.op == int(ws["op"][0])
        assert msg.xid == int(ws["xid"][0], 16)
        assert msg.ciaddr == ws["ciaddr"][0]
        assert msg.yiaddr == ws["yiaddr"][0]
        assert msg.mac == ws["chaddr"][0]
        assert msg.hostname == ws.get("hostname", [None])[0]
        assert msg.requested_ip == ws.get("requested_ip", [None])[0]
        assert msg.server_id == ws.get("server_id", [None])[0]
        lease = ws.get("lease_time")
        assert msg.lease_time == (int(lease[0]) if lease else None)
        assert msg.vendor_class == ws.get("vendor_class", [None])[0]
        flags = ws.get("fqdn_flags")
        assert msg.client_fqdn_flags == (int(flags[0], 16) if flags else None)
        assert msg.client_fqdn == ws.get("fqdn_name", [None])[0]
        assert pkt["from_client"] == (msg.op == 1)


def test_ack_binds_the_pool_address_to_ws01() -> None:
    discover, offer, request, ack = real_messages("v4_ws01_bind")
    assert [m.message_type for m in (discover, offer, request, ack)] == [
        DHCPDISCOVER,
        DHCPOFFER,
        DHCPREQUEST,
        DHCPACK,
    ]
    assert ack.bound_ip == POOL_ADDRESS
    assert ack.mac == WS01_MAC
    assert ack.lease_time == 120
    assert ack.server_id == "10.77.0.1"
    assert discover.bound_ip is None
    assert offer.bound_ip is None  # an offer binds nothing
    assert request.bound_ip == POOL_ADDRESS  # SELECTING: option 50
    assert request.server_id == "10.77.0.1"


def test_client_identity_options_from_dhclient() -> None:
    request = real_messages("v4_ws01_bind")[2]
    assert request.hostname == "ws01"
    assert request.client_id == "01:" + WS01_MAC
    assert request.client_id_mac == WS01_MAC
    assert request.vendor_class == "egress-test-ws"
    assert request.client_fqdn == "ws01.egress.test"
    assert request.client_fqdn_flags is not None
    assert request.client_fqdn_flags & FQDN_E
    assert request.client_fqdn_complete is True
    assert request.parameter_request_list == (1, 3, 6, 12, 15)


def test_ascii_client_fqdn_from_dhclient() -> None:
    request = real_messages("v4_ws02_same_ip")[2]
    assert request.client_fqdn_flags == 0
    assert request.client_fqdn == "ws02.egress.test"
    assert request.client_fqdn_complete is False
    assert request.client_id is None
    assert request.client_id_mac is None


def test_the_same_address_changes_hands_from_ws01_to_ws02() -> None:
    ws01_ack = real_messages("v4_ws01_bind")[3]
    (release,) = real_messages("v4_ws01_release")
    ws02_ack = real_messages("v4_ws02_same_ip")[3]
    assert ws01_ack.bound_ip == release.bound_ip == ws02_ack.bound_ip == POOL_ADDRESS
    assert (ws01_ack.mac, release.mac, ws02_ack.mac) == (WS01_MAC, WS01_MAC, WS02_MAC)
    assert release.message_type == DHCPRELEASE
    assert release.ciaddr == POOL_ADDRESS


def test_init_reboot_request_names_the_address_in_option_50() -> None:
    request, ack = real_messages("v4_ws01_reboot")
    assert request.message_type == DHCPREQUEST
    assert request.ciaddr == "0.0.0.0"
    assert request.server_id is None  # INIT-REBOOT carries no server identifier
    assert request.bound_ip == POOL_ADDRESS
    assert ack.bound_ip == POOL_ADDRESS


def test_decline_refuses_the_address_in_option_50() -> None:
    msgs = real_messages("v4_ws02_decline")
    decline = msgs[-1]
    assert decline.message_type == DHCPDECLINE
    assert decline.ciaddr == "0.0.0.0"
    assert decline.requested_ip == POOL_ADDRESS
    assert decline.bound_ip == POOL_ADDRESS
    assert decline.mac == WS02_MAC


# --- crafted: options -------------------------------------------------------------------------


def test_options_in_file_and_sname_when_overloaded() -> None:
    file_opts = option(12, b"from-file") + b"\xff"
    sname_opts = option(81, b"\x04\x00\x00" + b"\x02ws\x03lab\x00") + b"\xff"
    msg = parse_dhcp(
        build(mtype(DHCPREQUEST), option(52, b"\x03"), file=file_opts, sname=sname_opts)
    )
    assert msg.overload == 3
    assert msg.hostname == "from-file"
    assert msg.client_fqdn == "ws.lab"
    assert msg.sname == "" and msg.file == ""  # they carried options, not strings


def test_sname_and_file_are_strings_without_overload() -> None:
    msg = parse_dhcp(build(mtype(DHCPOFFER), op=2, sname=b"srv1", file=b"pxelinux.0"))
    assert (msg.sname, msg.file) == ("srv1", "pxelinux.0")


def test_overloaded_field_is_ignored_unless_option_52_names_it() -> None:
    msg = parse_dhcp(build(mtype(DHCPREQUEST), option(52, b"\x01"), sname=option(12, b"x")))
    assert msg.hostname is None
    assert msg.sname.startswith("\\x0c")  # read as a (binary) server name, escaped


def test_split_options_are_concatenated_in_field_order() -> None:
    # RFC 3396: options field, then 'file', then 'sname'.
    msg = parse_dhcp(
        build(
            option(12, b"work"),
            mtype(DHCPREQUEST),
            option(52, b"\x03"),
            option(12, b"sta"),
            file=option(12, b"tion") + b"\xff",
            sname=option(12, b"-7") + b"\xff",
        )
    )
    assert msg.hostname == "workstation-7"
    assert msg.option(12) == b"workstation-7"
    assert [code for code, _ in msg.options] == [12, 53, 52]


def test_pad_options_are_skipped_and_options_after_end_are_ignored() -> None:
    payload = build(b"\x00\x00", mtype(DHCPDISCOVER), b"\x00", option(12, b"ws"), end=True)
    msg = parse_dhcp(payload + option(12, b"ignored") + b"\x00" * 20)
    assert msg.hostname == "ws"


def test_missing_end_is_tolerated_when_the_last_option_is_whole() -> None:
    assert parse_dhcp(build(mtype(DHCPDISCOVER), end=False)).message_type == DHCPDISCOVER


def test_hostile_host_name_is_escaped() -> None:
    msg = parse_dhcp(build(mtype(DHCPREQUEST), option(12, b"ws\x1b[31m\\\n\xff\x00")))
    assert msg.hostname == "ws\\x1b[31m\\x5c\\x0a\\xff"
    assert "\x1b" not in msg.hostname


def test_safe_text_never_maps_two_byte_strings_to_one_text() -> None:
    assert safe_text(b"\\x41") != safe_text(b"A")
    assert safe_text(b"\\x41") == "\\x5cx41"


def test_fqdn_wire_labels_with_dots_or_binary_are_escaped() -> None:
    name, complete = decode_wire_name(b"\x05a.b\x00c\x04corp\x00")
    assert (name, complete) == ("a\\.b\\000c.corp", True)


def test_partial_wire_fqdn_is_marked_incomplete() -> None:
    msg = parse_dhcp(build(mtype(DHCPREQUEST), option(81, b"\x05\x00\x00\x04ws01")))
    assert (msg.client_fqdn, msg.client_fqdn_complete) == ("ws01", False)


def test_ascii_fqdn_with_trailing_dot_is_complete() -> None:
    msg = parse_dhcp(build(mtype(DHCPREQUEST), option(81, b"\x00\xff\xffws01.corp.\x00")))
    assert (msg.client_fqdn, msg.client_fqdn_complete) == ("ws01.corp", True)


def test_non_ethernet_hardware_address_has_no_mac() -> None:
    msg = parse_dhcp(build(mtype(DHCPDISCOVER), htype=32, hlen=0, chaddr=b""))
    assert msg.mac is None and msg.chaddr == ""
    ib = parse_dhcp(build(mtype(DHCPDISCOVER), htype=6, hlen=8, chaddr=bytes(range(8))))
    assert ib.mac is None and ib.chaddr == "00:01:02:03:04:05:06:07"


def test_memoryview_input_is_accepted() -> None:
    payload = build(mtype(DHCPDISCOVER))
    assert parse_dhcp(memoryview(payload)) == parse_dhcp(payload)


# --- crafted: bound_ip per message type -------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fields", "opts", "expected"),
    [
        (DHCPACK, {"op": 2, "yiaddr": "10.0.0.5"}, [], "10.0.0.5"),
        (DHCPACK, {"op": 2, "ciaddr": "10.0.0.6"}, [], "10.0.0.6"),  # ACK to an INFORM
        (DHCPREQUEST, {"ciaddr": "10.0.0.7"}, [], "10.0.0.7"),  # RENEWING
        (DHCPREQUEST, {}, [option(50, bytes([10, 0, 0, 8]))], "10.0.0.8"),
        (DHCPRELEASE, {"ciaddr": "10.0.0.9"}, [], "10.0.0.9"),
        (DHCPDECLINE, {}, [option(50, bytes([10, 0, 0, 10]))], "10.0.0.10"),
        (DHCPINFORM, {"ciaddr": "10.0.0.11"}, [], "10.0.0.11"),
        (DHCPOFFER, {"op": 2, "yiaddr": "10.0.0.12"}, [], None),
        (DHCPNAK, {"op": 2}, [], None),
        (DHCPDISCOVER, {}, [option(50, bytes([10, 0, 0, 13]))], None),
        (DHCPACK, {"op": 2}, [], None),  # nothing but zeros
    ],
)
def test_bound_ip_follows_the_message_type(
    kind: int, fields: dict, opts: list[bytes], expected: str | None
) -> None:
    assert parse_dhcp(build(mtype(kind), *opts, **fields)).bound_ip == expected


def test_bootp_reply_without_message_type_binds_yiaddr() -> None:
    msg = parse_dhcp(build(op=2, yiaddr="10.0.0.14"))
    assert msg.message_type is None
    assert msg.message_type_name == "BOOTREPLY"
    assert msg.bound_ip == "10.0.0.14"


# --- crafted: malformed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "shorter"),
        (build(mtype(DHCPDISCOVER))[:239], "shorter"),
        (build(mtype(DHCPDISCOVER), cookie=b"\x00\x00\x00\x00"), "cookie"),
        (build(mtype(DHCPDISCOVER), op=3), "op 3"),
        (build(mtype(DHCPDISCOVER), hlen=17), "hlen"),
        (build(mtype(DHCPDISCOVER), end=False) + b"\x0c", "no length"),
        (build(mtype(DHCPDISCOVER), end=False) + b"\x0c\x05ab", "runs past"),
        (build(option(53, b"\x01\x01")), "message type"),
        (build(mtype(DHCPREQUEST), option(50, b"\x0a\x00\x00")), "requested IP"),
        (build(mtype(DHCPACK), option(54, b"")), "server identifier"),
        (build(mtype(DHCPACK), option(51, b"\x00\x00\x0e")), "lease time"),
        (build(mtype(DHCPREQUEST), option(52, b"\x04")), "overload"),
        (build(mtype(DHCPREQUEST), option(81, b"\x04\x00")), "client FQDN"),
        (build(mtype(DHCPREQUEST), option(81, b"\x04\x00\x00\xc0\x0c")), "label length"),
        (build(mtype(DHCPREQUEST), option(81, b"\x04\x00\x00\x05ab")), "runs past"),
        (build(mtype(DHCPREQUEST), option(81, b"\x04\x00\x00\x00\x01")), "after the root"),
        (
            build(mtype(DHCPREQUEST), option(52, b"\x01"), file=b"\x00" * 126 + b"\x0c\x05"),
            "in file",
        ),
    ],
)
def test_malformed_messages_raise_parse_error(payload: bytes, reason: str) -> None:
    with pytest.raises(DhcpParseError, match=reason):
        parse_dhcp(payload)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(DhcpParseError, ValueError)


# --- hypothesis -------------------------------------------------------------------------------


def _parse_or_reject(data: bytes) -> None:
    try:
        msg = parse_dhcp(data)
    except DhcpParseError:
        return
    # Whatever parses must be usable: every derived property computes.
    assert msg.message_type_name
    _ = (msg.bound_ip, msg.mac, msg.client_id_mac)


@given(st.binary(max_size=700))
@settings(max_examples=1500, deadline=None)
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    _parse_or_reject(data)


@given(st.binary(max_size=400))
@settings(max_examples=1500, deadline=None)
def test_random_options_after_a_valid_header_only_raise_parse_error(tail: bytes) -> None:
    _parse_or_reject(build(end=False) + tail)


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in mutations:
        if not buf:
            break
        pos = where % len(buf)
        if kind == "flip":
            buf[pos] ^= value
        elif kind == "cut":
            del buf[pos:]
        elif kind == "insert":
            buf.insert(pos, value)
        else:
            del buf[pos]
    return bytes(buf)


@given(st.sampled_from(all_real_payloads()), st.lists(MUTATION, min_size=1, max_size=6))
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_real_messages_only_raise_parse_error(
    payload: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    _parse_or_reject(mutate(payload, mutations))


OPTION = st.tuples(
    st.integers(1, 254).filter(lambda c: c not in (50, 51, 52, 53, 54, 81)),
    st.binary(max_size=40),
)


@given(st.lists(OPTION, max_size=12), st.binary(max_size=80))
@settings(max_examples=500, deadline=None)
def test_well_formed_options_parse_and_repeats_concatenate(
    opts: list[tuple[int, bytes]], hostname: bytes
) -> None:
    encoded = [option(code, value) for code, value in opts]
    msg = parse_dhcp(build(mtype(DHCPREQUEST), *encoded))
    expected: dict[int, bytes] = {}
    for code, value in opts:
        expected[code] = expected.get(code, b"") + value
    for code, value in expected.items():
        assert msg.option(code) == value
    if 12 in expected:
        assert msg.hostname == safe_text(expected[12].rstrip(b"\x00"))
    # A host name split over options in the options field and 'file' reads as one.
    half = len(hostname) // 2
    split = parse_dhcp(
        build(
            option(52, b"\x01"),
            option(12, hostname[:half]),
            file=option(12, hostname[half:]) + b"\xff",
        )
    )
    assert split.option(12) == hostname
