"""Behaviour of the time-aware identity store (monitor.attribution.store / bindings / resolve).

Inputs come from the real parsers: the DHCP fixtures are dhclient/dnsmasq exchanges captured
in network namespaces (tests/fixtures/dhcp/capture.py: ws01 and ws02 share the pool's only
address 10.77.0.50), the Kerberos ones a real MIT KDC (tests/fixtures/kerberos/capture.py),
the NTLM ones curl and smbclient (tests/fixtures/ntlm/capture.py). The fixtures carry no
capture times that matter here, so each test places the packets on its own timeline.
Hypothesis builds further DHCP messages as bytes and runs them through ``parse_dhcp``.
"""

from __future__ import annotations

import calendar
import ipaddress
import itertools
import json
import sqlite3
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.attribution.bindings import (
    KIND_IP_HOST,
    KIND_IP_MAC,
    KIND_IP_USER,
    KIND_MAC_HOST,
    TIER_LEASE_FILE,
    Binding,
    same_host,
    splice,
)
from monitor.attribution.inventory import parse_inventory_yaml
from monitor.attribution.leasefiles import (
    Lease,
    parse_dnsmasq_leases,
    parse_isc_dhcpd_leases,
    read_isc_dhcpd_leases,
)
from monitor.attribution.resolve import Attribution, apply_to_event, to_ecs_fields
from monitor.attribution.store import APPLICATION_ID, IdentityStore, StoreError
from monitor.protocols.dhcp import DhcpMessage, parse_dhcp
from monitor.protocols.dhcpv6 import Dhcpv6Message, parse_dhcpv6
from monitor.protocols.kerberos import (
    MSG_AS_REP,
    MSG_KRB_ERROR,
    MSG_TGS_REP,
    KerberosMessage,
    KerberosPrincipal,
    parse_kerberos,
)
from monitor.protocols.ntlm import (
    NtlmMessage,
    find_ntlmssp_in_http,
    find_ntlmssp_in_smb2,
    parse_ntlmssp,
)

FIXTURES = Path(__file__).parent / "fixtures"
NS = 1_000_000_000
HOUR = 3600 * NS
T0 = calendar.timegm((2026, 11, 25, 9, 0, 0, 0, 0, 0)) * NS
POOL_IP = "10.77.0.50"
WS01_MAC = "02:00:00:77:00:01"
WS02_MAC = "02:00:00:77:00:02"
CLIENT_IP = "10.77.0.50"
LEASE_FOREVER = 0xFFFFFFFF


# --------------------------------------------------------------------------- fixture helpers


def dhcp_exchange(name: str) -> list[DhcpMessage]:
    data = json.loads((FIXTURES / "dhcp" / f"{name}.json").read_text())
    return [parse_dhcp(bytes.fromhex(p["payload"])) for p in data["packets"]]


def feed_dhcp(store: IdentityStore, name: str, start: int) -> int:
    """Feed an exchange 100 ms apart from ``start``; returns the time of its last packet."""
    ts = start
    for i, msg in enumerate(dhcp_exchange(name)):
        ts = start + i * NS // 10
        store.observe_dhcp(ts, msg)
    return ts


def kerberos_replies(name: str) -> list[KerberosMessage]:
    """The KDC's messages (to the client) of a fixture, parsed."""
    data = json.loads((FIXTURES / "kerberos" / f"{name}.json").read_text())
    return [
        parse_kerberos(bytes.fromhex(p["payload"])) for p in data["packets"] if not p["from_client"]
    ]


def ntlm_messages(name: str) -> list[NtlmMessage]:
    data = json.loads((FIXTURES / "ntlm" / f"{name}.json").read_text())
    out = []
    for packet in data["packets"]:
        payload = bytes.fromhex(packet["payload"])
        raw = find_ntlmssp_in_http(payload) or find_ntlmssp_in_smb2(payload)
        if raw is not None:
            out.append(parse_ntlmssp(raw))
    return out


def kerberos_reply(
    user: str, msg_type: int = MSG_AS_REP, realm: str = "EGRESS.TEST"
) -> KerberosMessage:
    """A reply as parse_kerberos returns it, for users the fixtures do not have."""
    return KerberosMessage(
        msg_type=msg_type,
        realm=realm,
        cname=KerberosPrincipal(1, tuple(user.split("/"))),
        sname=KerberosPrincipal(2, ("krbtgt", realm)),
        service_realm=realm,
    )


def _ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def dhcp_bytes(
    *,
    op: int,
    mtype: int,
    mac: str,
    xid: int = 0x1234,
    ciaddr: str = "0.0.0.0",
    yiaddr: str = "0.0.0.0",
    requested: str | None = None,
    lease: int | None = None,
    hostname: str | None = None,
) -> bytes:
    """A DHCPv4 message on the wire (RFC 2131 layout), for parse_dhcp."""
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    zero = _ip("0.0.0.0")
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s", op, 1, 6, 0, xid, 0, 0, _ip(ciaddr), _ip(yiaddr), zero, zero, chaddr
    )
    options = bytes([53, 1, mtype])
    if requested is not None:
        options += bytes([50, 4]) + _ip(requested)
    if lease is not None:
        options += bytes([51, 4]) + lease.to_bytes(4, "big")
    if hostname is not None:
        raw = hostname.encode()
        options += bytes([12, len(raw)]) + raw
    return header + bytes(192) + b"\x63\x82\x53\x63" + options + b"\xff"


def ack(ip: str, mac: str, lease: int = 3600, hostname: str | None = None) -> DhcpMessage:
    return parse_dhcp(dhcp_bytes(op=2, mtype=5, mac=mac, yiaddr=ip, lease=lease, hostname=hostname))


def release(ip: str, mac: str) -> DhcpMessage:
    return parse_dhcp(dhcp_bytes(op=1, mtype=7, mac=mac, ciaddr=ip))


@pytest.fixture
def store() -> Iterator[IdentityStore]:
    s = IdentityStore(":memory:")
    yield s
    s.close()


def assert_disjoint(bindings: list[Binding]) -> None:
    timelines: dict[tuple[int, str, str], list[Binding]] = {}
    for b in bindings:
        assert b.end_ns is None or b.start_ns < b.end_ns, b
        timelines.setdefault((b.tier, b.kind, b.key), []).append(b)
    for line in timelines.values():
        line.sort(key=lambda b: b.start_ns)
        for a, b in itertools.pairwise(line):
            assert a.end_ns is not None and a.end_ns <= b.start_ns, (a, b)


# --------------------------------------------------------------------------- DHCPv4


def test_two_workstations_holding_one_ip_in_turn_are_each_attributed_at_their_time(store):
    # ws01 gets 10.77.0.50, gives it back, then ws02 is given the same address.
    feed_dhcp(store, "v4_ws01_bind", T0)
    feed_dhcp(store, "v4_ws01_release", T0 + 60 * NS)
    feed_dhcp(store, "v4_ws02_same_ip", T0 + 90 * NS)

    during_ws01 = store.attribute(T0 + 30 * NS, POOL_IP)
    assert (during_ws01.hostname, during_ws01.mac) == ("ws01.egress.test", WS01_MAC)
    assert during_ws01.confidence == "high"
    assert during_ws01.hostname_source == "dhcp"

    between = store.attribute(T0 + 75 * NS, POOL_IP)
    assert not between.known  # released: nobody held it

    during_ws02 = store.attribute(T0 + 100 * NS, POOL_IP)
    assert (during_ws02.hostname, during_ws02.mac) == ("ws02.egress.test", WS02_MAC)
    # Asking about the past after the address moved on still names ws01.
    assert store.attribute(T0 + 10 * NS, POOL_IP).mac == WS01_MAC


def test_ack_to_another_mac_ends_the_earlier_binding_without_a_release(store):
    feed_dhcp(store, "v4_ws01_bind", T0)
    feed_dhcp(store, "v4_ws02_same_ip", T0 + 50 * NS)
    leases = [b for b in store.bindings() if b.kind == KIND_IP_MAC]
    assert [(b.value, b.end_reason) for b in leases] == [
        (WS01_MAC, "superseded"),
        (WS02_MAC, None),
    ]
    assert leases[0].end_ns == leases[1].start_ns
    assert store.attribute(T0 + 40 * NS, POOL_IP).mac == WS01_MAC
    assert store.attribute(T0 + 60 * NS, POOL_IP).mac == WS02_MAC


def test_host_name_is_the_clients_fqdn_from_its_request_when_the_ack_has_a_partial_one(store):
    # ws01's ACK echoes only "ws01" (option 81 without the root label); its REQUEST said
    # ws01.egress.test, and that is what the lease is recorded with.
    messages = dhcp_exchange("v4_ws01_bind")
    assert messages[-1].client_fqdn == "ws01" and messages[-1].client_fqdn_complete is False
    feed_dhcp(store, "v4_ws01_bind", T0)
    lease = next(b for b in store.bindings() if b.kind == KIND_IP_MAC)
    assert lease.detail == "ws01.egress.test"
    names = [b for b in store.bindings() if b.kind == KIND_MAC_HOST]
    assert [(b.key, b.value) for b in names] == [(WS01_MAC, "ws01.egress.test")]


def test_reboot_ack_to_the_same_mac_extends_the_binding_instead_of_adding_one(store):
    feed_dhcp(store, "v4_ws01_bind", T0)
    feed_dhcp(store, "v4_ws01_reboot", T0 + 100 * NS)  # lease time 120 s, renewed in time
    leases = [b for b in store.bindings() if b.kind == KIND_IP_MAC]
    assert len(leases) == 1
    assert leases[0].end_ns == T0 + 100 * NS + NS // 10 + 120 * NS
    assert store.attribute(T0 + 200 * NS, POOL_IP).confidence == "high"


def test_decline_ends_the_decliners_binding_at_once(store):
    end = feed_dhcp(store, "v4_ws02_decline", T0)
    lease = next(b for b in store.bindings() if b.kind == KIND_IP_MAC)
    assert (lease.value, lease.end_reason, lease.end_ns) == (WS02_MAC, "decline", end)
    assert not store.attribute(end + NS, POOL_IP).known


def test_release_from_a_client_that_does_not_hold_the_address_is_ignored(store):
    store.observe_dhcp(T0, ack(POOL_IP, WS01_MAC))
    assert not store.observe_dhcp(T0 + NS, release(POOL_IP, WS02_MAC))
    assert store.attribute(T0 + 2 * NS, POOL_IP).mac == WS01_MAC


def test_lease_expiry_ends_a_binding_and_leaves_it_only_as_stale_evidence():
    with IdentityStore(":memory:", stale_after_s=600) as store:
        store.observe_dhcp(T0, ack(POOL_IP, WS01_MAC, lease=120, hostname="ws01"))
        assert store.attribute(T0 + 119 * NS, POOL_IP).confidence == "high"
        expired = store.attribute(T0 + 121 * NS, POOL_IP)
        assert (expired.hostname, expired.confidence, expired.stale) == ("ws01", "low", True)
        assert expired.outcome == "stale"
        assert not store.attribute(T0 + 121 * NS + 600 * NS + 1, POOL_IP).known


def test_an_ack_seen_late_does_not_take_the_address_back_from_its_later_holder(store):
    store.observe_dhcp(T0 + 100 * NS, ack(POOL_IP, WS02_MAC, lease=600))
    store.observe_dhcp(T0, ack(POOL_IP, WS01_MAC, lease=600))  # arrives after, happened before
    assert store.attribute(T0 + 50 * NS, POOL_IP).mac == WS01_MAC
    assert store.attribute(T0 + 150 * NS, POOL_IP).mac == WS02_MAC
    assert_disjoint(store.bindings())


# --------------------------------------------------------------------------- DHCPv6


def test_dhcpv6_reply_binds_the_ia_na_address_with_its_fqdn_and_release_ends_it(store):
    for i, payload in enumerate(_v6("v6_ws01_bind")):
        store.observe_dhcpv6(T0 + i * NS // 10, payload)
    got = store.attribute(T0 + 10 * NS, "fd77::33")
    assert (got.hostname, got.mac, got.confidence) == ("ws01.egress.test", WS01_MAC, "high")
    for i, payload in enumerate(_v6("v6_ws01_release")):
        store.observe_dhcpv6(T0 + 30 * NS + i * NS // 10, payload)
    assert not store.attribute(T0 + 40 * NS, "fd77::33").known
    assert store.attribute(T0 + 20 * NS, "fd77::33").mac == WS01_MAC


def test_dhcpv6_duid_ll_client_is_named_by_its_mac(store):
    for i, payload in enumerate(_v6("v6_ws02_bind")):
        store.observe_dhcpv6(T0 + i * NS // 10, payload)
    got = store.attribute(T0 + NS, "fd77::81")
    assert (got.hostname, got.mac) == ("ws02.egress.test", WS02_MAC)


def _v6(name: str) -> list[Dhcpv6Message]:
    data = json.loads((FIXTURES / "dhcp" / f"{name}.json").read_text())
    return [parse_dhcpv6(bytes.fromhex(p["payload"])) for p in data["packets"]]


# --------------------------------------------------------------------------- Kerberos


def test_kerberos_as_rep_binds_alice_to_the_replys_destination(store):
    error, as_rep = kerberos_replies("as_udp_alice")
    assert error.error_code == 25 and as_rep.msg_type == MSG_AS_REP
    assert not store.observe_kerberos(T0, CLIENT_IP, error)
    assert store.observe_kerberos(T0 + NS, CLIENT_IP, as_rep)
    got = store.attribute(T0 + HOUR, CLIENT_IP)
    assert (got.user, got.user_domain, got.user_source) == ("alice", "EGRESS.TEST", "kerberos")
    assert got.confidence == "high"
    assert got.evidence_age_seconds == 3599


def test_krb_error_preauth_required_and_preauth_failed_bind_nobody(store):
    errors = kerberos_replies("as_udp_wrong_password")
    assert [m.error_code for m in errors] == [25, 24]
    for i, msg in enumerate(errors):
        assert msg.msg_type == MSG_KRB_ERROR
        assert not store.observe_kerberos(T0 + i * NS, CLIENT_IP, msg)
    (unknown,) = kerberos_replies("as_udp_unknown_principal")
    assert not store.observe_kerberos(T0 + 5 * NS, CLIENT_IP, unknown)
    assert store.bindings() == []
    assert store.attribute(T0 + 10 * NS, CLIENT_IP).user is None


def test_machine_account_names_the_workstation_not_a_user(store):
    _error, as_rep = kerberos_replies("as_udp_machine_account")
    assert as_rep.is_machine_account
    store.observe_kerberos(T0, CLIENT_IP, as_rep)
    got = store.attribute(T0 + NS, CLIENT_IP)
    assert got.user is None
    assert (got.hostname, got.hostname_source, got.confidence) == ("ws01", "kerberos", "high")


def test_machine_account_agreeing_with_dhcp_keeps_the_dhcp_fqdn_and_high_confidence(store):
    feed_dhcp(store, "v4_ws01_bind", T0)
    store.observe_kerberos(T0 + 5 * NS, POOL_IP, kerberos_replies("as_udp_machine_account")[1])
    got = store.attribute(T0 + 10 * NS, POOL_IP)
    assert got.hostname_source == "kerberos" and same_host(got.hostname, "ws01.egress.test")
    assert (got.confidence, got.conflict) == ("high", False)


def test_machine_account_contradicting_the_dhcp_host_name_is_a_conflict(store):
    store.observe_dhcp(T0, ack(POOL_IP, WS01_MAC, hostname="ws01"))
    store.observe_kerberos(T0 + NS, POOL_IP, kerberos_reply("WS77$"))
    got = store.attribute(T0 + 2 * NS, POOL_IP)
    assert (got.hostname, got.conflict, got.confidence) == ("ws77", True, "low")


def test_tgs_rep_renews_the_logon_so_it_outlives_the_first_ticket_lifetime():
    with IdentityStore(":memory:", kerberos_ttl_s=3600, stale_after_s=0) as store:
        _error, as_rep = kerberos_replies("as_udp_alice")
        (tgs_rep,) = kerberos_replies("tgs_udp_kvno")
        assert tgs_rep.msg_type == MSG_TGS_REP and tgs_rep.cname.text == "alice"
        store.observe_kerberos(T0, CLIENT_IP, as_rep)
        store.observe_kerberos(T0 + 50 * 60 * NS, CLIENT_IP, tgs_rep)
        assert store.attribute(T0 + 90 * 60 * NS, CLIENT_IP).user == "alice"
        assert store.attribute(T0 + 111 * 60 * NS, CLIENT_IP).user is None
        assert len(store.bindings()) == 1


def test_kerberos_user_binding_expires_after_the_ticket_lifetime_unless_renewed():
    with IdentityStore(":memory:", kerberos_ttl_s=10 * 3600, stale_after_s=3600) as store:
        store.observe_kerberos(T0, CLIENT_IP, kerberos_replies("as_udp_alice")[1])
        assert store.attribute(T0 + 10 * HOUR - 1, CLIENT_IP).confidence == "high"
        late = store.attribute(T0 + 10 * HOUR + 1, CLIENT_IP)
        assert (late.user, late.confidence, late.stale) == ("alice", "low", True)
        assert store.attribute(T0 + 12 * HOUR, CLIENT_IP).user is None


def test_second_user_on_one_address_is_reported_as_the_latest_logon_with_a_conflict(store):
    # A terminal server: alice logs on, then bob while alice's ticket is still valid.
    store.observe_kerberos(T0, CLIENT_IP, kerberos_reply("alice"))
    store.observe_kerberos(T0 + HOUR, CLIENT_IP, kerberos_reply("bob"))
    before = store.attribute(T0 + HOUR - NS, CLIENT_IP)
    assert (before.user, before.conflict, before.confidence) == ("alice", False, "high")
    after = store.attribute(T0 + 2 * HOUR, CLIENT_IP)
    assert (after.user, after.conflict, after.confidence) == ("bob", True, "low")
    assert after.outcome == "conflict"
    # Once alice's ticket would have run out, bob alone remains.
    assert store.attribute(T0 + 10 * HOUR + NS, CLIENT_IP).conflict is False


def test_tgs_rep_never_displaces_another_users_logon(store):
    # A service asking for tickets on a user's behalf (S4U) gets TGS-REPs naming that user.
    store.observe_kerberos(T0, CLIENT_IP, kerberos_reply("alice"))
    assert not store.observe_kerberos(T0 + NS, CLIENT_IP, kerberos_reply("bob", MSG_TGS_REP))
    assert store.attribute(T0 + 2 * NS, CLIENT_IP).user == "alice"


def test_logons_end_when_the_address_moves_to_another_workstation(store):
    feed_dhcp(store, "v4_ws01_bind", T0)
    store.observe_kerberos(T0 + NS, POOL_IP, kerberos_replies("as_udp_alice")[1])
    feed_dhcp(store, "v4_ws02_same_ip", T0 + 60 * NS)
    assert store.attribute(T0 + 30 * NS, POOL_IP).user == "alice"
    got = store.attribute(T0 + 90 * NS, POOL_IP)
    assert (got.hostname, got.user) == ("ws02.egress.test", None)
    user = next(b for b in store.bindings() if b.kind == KIND_IP_USER)
    assert user.end_reason == "address-moved"


def test_release_ends_the_logons_from_the_address(store):
    feed_dhcp(store, "v4_ws01_bind", T0)
    store.observe_kerberos(T0 + NS, POOL_IP, kerberos_replies("as_udp_alice")[1])
    feed_dhcp(store, "v4_ws01_release", T0 + 30 * NS)
    assert store.attribute(T0 + 31 * NS, POOL_IP).user is None


# --------------------------------------------------------------------------- NTLM


def test_ntlm_authenticate_binds_user_domain_and_workstation(store):
    messages = ntlm_messages("smb2_smbclient")
    assert [m.message_type for m in messages] == [1, 2, 3]
    for i, msg in enumerate(messages):
        assert store.observe_ntlm(T0 + i * NS, CLIENT_IP, msg) is (i == 2)
    got = store.attribute(T0 + 10 * NS, CLIENT_IP)
    assert (got.user, got.user_domain, got.user_source) == ("alice", "EGRESS", "ntlm")
    assert (got.hostname, got.hostname_source) == ("ws01", "ntlm")
    # The workstation name is the client's claim: medium confidence.
    assert got.confidence == "medium"


def test_ntlm_placeholder_workstation_never_displaces_a_kerberos_machine_name(store):
    store.observe_kerberos(T0, CLIENT_IP, kerberos_replies("as_udp_machine_account")[1])
    proxy = ntlm_messages("http_curl_proxy")[-1]
    assert proxy.workstation == "WORKSTATION"
    store.observe_ntlm(T0 + NS, CLIENT_IP, proxy)
    got = store.attribute(T0 + 2 * NS, CLIENT_IP)
    assert (got.hostname, got.user, got.confidence) == ("ws01", "alice", "high")


def test_same_user_from_kerberos_and_ntlm_is_one_logon_not_a_conflict(store):
    store.observe_kerberos(T0, CLIENT_IP, kerberos_replies("as_udp_alice")[1])
    store.observe_ntlm(T0 + NS, CLIENT_IP, ntlm_messages("http_curl_unicode")[-1])
    got = store.attribute(T0 + 2 * NS, CLIENT_IP)
    assert (got.user, got.user_domain, got.conflict) == ("alice", "EGRESS.TEST", False)
    assert len([b for b in store.bindings() if b.kind == KIND_IP_USER]) == 1


# --------------------------------------------------------------------------- lease files


def test_lease_file_answers_when_the_sensor_saw_no_dhcp(store):
    leases = read_isc_dhcpd_leases(FIXTURES / "dhcp" / "isc_dhcpd.leases")
    store.load_leases(leases, read_at_ns=calendar.timegm((2026, 11, 25, 12, 0, 0)) * NS)
    at = calendar.timegm((2026, 11, 25, 10, 50, 0)) * NS
    got = store.attribute(at, "10.20.0.5")
    assert (got.hostname, got.mac) == ("ws03", "52:54:00:aa:00:03")
    assert (got.hostname_source, got.confidence) == ("lease-file", "medium")
    # The file's current block for 10.20.0.5 starts at 10:40: before that it says nothing.
    assert not store.attribute(at - 20 * 60 * NS, "10.20.0.5").known


def test_live_dhcp_beats_the_lease_file_and_their_disagreement_lowers_confidence(store):
    text = (
        "lease 10.77.0.50 {\n  starts 3 2026/11/25 08:00:00;\n  ends 3 2026/11/25 12:00:00;\n"
        "  binding state active;\n  hardware ethernet 02:00:00:77:00:02;\n"
        '  client-hostname "ws02";\n}\n'
    )
    store.load_leases(parse_isc_dhcpd_leases(text, "dhcpd.leases", strict=True), T0)
    assert store.attribute(T0 + NS, POOL_IP).hostname == "ws02"
    feed_dhcp(store, "v4_ws01_bind", T0 + 10 * NS)
    got = store.attribute(T0 + 20 * NS, POOL_IP)
    assert (got.hostname, got.hostname_source, got.mac) == ("ws01.egress.test", "dhcp", WS01_MAC)
    assert (got.conflict, got.confidence) == (True, "low")


def test_lease_file_agreeing_with_live_dhcp_keeps_high_confidence(store):
    text = (FIXTURES / "dhcp" / "dnsmasq_ws01.leases").read_text()
    store.load_leases(parse_dnsmasq_leases(text, "dnsmasq.leases", strict=True), T0)
    feed_dhcp(store, "v4_ws01_bind", T0 + NS)
    got = store.attribute(T0 + 2 * NS, POOL_IP)
    assert (got.mac, got.confidence, got.conflict) == (WS01_MAC, "high", False)


def test_dnsmasq_lease_without_a_start_counts_from_when_the_file_was_read(store):
    leases = parse_dnsmasq_leases((FIXTURES / "dhcp" / "dnsmasq_ws02.leases").read_text())
    read_at = 1795686759 * NS - 3600 * NS
    store.load_leases(leases, read_at)
    assert not store.attribute(read_at - NS, POOL_IP).known
    got = store.attribute(read_at + NS, POOL_IP)
    assert (got.hostname, got.mac) == ("ws02", WS02_MAC)
    assert store.attribute(read_at + NS, "fd77::81").mac == WS02_MAC


def test_reloading_the_same_lease_file_changes_nothing(store):
    leases = read_isc_dhcpd_leases(FIXTURES / "dhcp" / "isc_dhcpd.leases")
    first = store.load_leases(leases, T0)
    before = store.bindings()
    assert first > 0
    assert store.load_leases(leases, T0 + HOUR) == 0
    assert store.bindings() == before


def test_released_lease_in_the_file_history_ends_the_clients_binding(store):
    history = read_isc_dhcpd_leases(FIXTURES / "dhcp" / "isc_dhcpd.leases", history=True)
    store.load_leases(history, T0)
    at = calendar.timegm((2026, 11, 25, 10, 35, 0)) * NS  # after ws01's release at 10:30
    assert not store.attribute(at, "10.20.0.5").known
    assert store.attribute(at - 10 * 60 * NS, "10.20.0.5").hostname == "ws01"
    assert_disjoint(store.bindings())
    assert {b.tier for b in store.bindings()} == {TIER_LEASE_FILE}


# --------------------------------------------------------------------------- inventory


INVENTORY = """\
- cidr: 10.20.0.0/16
  unit: Patrol
- cidr: 10.20.8.0/24
  unit: Homicide
- ip: 10.20.8.4
  hostname: forensic-4.pd.example
  owner: PD\\carol
  unit: Homicide
- ip: 10.77.0.50
  hostname: printer-9
  owner: dave
"""


def test_inventory_cidr_fallback_names_the_unit_when_nothing_else_is_known(store):
    store.set_inventory(parse_inventory_yaml(INVENTORY))
    got = store.attribute(T0, "10.20.8.77")
    assert (got.unit, got.hostname, got.user) == ("Homicide", None, None)
    assert (got.source, got.confidence) == ("inventory", "medium")
    assert to_ecs_fields(got) == {
        "attribution": {
            "source": "inventory",
            "confidence": "medium",
            "sources": {},
            "unit": "Homicide",
        }
    }
    assert store.attribute(T0, "10.20.1.1").unit == "Patrol"
    assert not store.attribute(T0, "10.21.0.1").known


def test_inventory_static_ip_answers_without_dynamic_evidence(store):
    store.set_inventory(parse_inventory_yaml(INVENTORY))
    got = store.attribute(T0, "10.20.8.4")
    assert (got.hostname, got.user, got.user_domain) == ("forensic-4.pd.example", "carol", "PD")
    assert (got.hostname_source, got.user_source, got.confidence) == (
        "inventory",
        "inventory",
        "medium",
    )
    assert got.evidence_age_seconds is None


def test_inventory_entry_contradicting_live_dhcp_is_ignored(store):
    store.set_inventory(parse_inventory_yaml(INVENTORY))
    feed_dhcp(store, "v4_ws01_bind", T0)
    got = store.attribute(T0 + NS, POOL_IP)
    # The inventory says printer-9 (owner dave); DHCP says ws01 holds it now.
    assert (got.hostname, got.user, got.confidence) == ("ws01.egress.test", None, "high")


def test_inventory_owner_of_the_leased_mac_is_the_user_at_medium_confidence(store):
    store.set_inventory(parse_inventory_yaml(f"- mac: {WS01_MAC}\n  owner: erin@PD.EXAMPLE\n"))
    feed_dhcp(store, "v4_ws01_bind", T0)
    got = store.attribute(T0 + NS, POOL_IP)
    assert (got.hostname_source, got.user, got.user_source) == ("dhcp", "erin", "inventory")
    assert got.confidence == "medium"
    # A Kerberos logon covering the time beats the inventory's owner.
    store.observe_kerberos(T0 + 2 * NS, POOL_IP, kerberos_replies("as_udp_alice")[1])
    assert store.attribute(T0 + 3 * NS, POOL_IP).user == "alice"


# --------------------------------------------------------------------------- resolvers, ECS


def test_resolver_address_is_marked_resolver_only_and_never_names_a_user(store):
    store.observe_kerberos(T0, "10.0.0.53", kerberos_reply("svc-dns"))
    store.set_resolvers(["10.0.0.53"])
    got = store.attribute(T0 + NS, "10.0.0.53")
    assert got.resolver_only and got.user is None
    assert to_ecs_fields(got) == {"attribution": {"resolver_only": True}}
    assert store.attribute(T0 + NS, "10.0.0.54").resolver_only is False


def test_ecs_fields_carry_identity_sources_confidence_and_age(store):
    feed_dhcp(store, "v4_ws01_bind", T0)
    store.observe_kerberos(T0 + NS, POOL_IP, kerberos_replies("as_udp_alice")[1])
    fields = to_ecs_fields(store.attribute(T0 + 61 * NS, POOL_IP))
    assert fields == {
        "source": {
            "domain": "ws01.egress.test",
            "mac": WS01_MAC,
            "user": {"name": "alice", "domain": "EGRESS.TEST"},
        },
        "attribution": {
            "source": "kerberos",
            "confidence": "high",
            "evidence_age_seconds": 60,
            "sources": {"domain": "dhcp", "mac": "dhcp", "user": "kerberos"},
        },
    }
    event = {"source": {"ip": POOL_IP, "port": 40101}}
    apply_to_event(event, store.attribute(T0 + 61 * NS, POOL_IP))
    assert event["source"]["ip"] == POOL_IP and event["source"]["user"]["name"] == "alice"
    assert to_ecs_fields(Attribution(ip="192.0.2.1", at_ns=T0)) == {}


def test_attribute_accepts_packed_addresses_and_ipv4_mapped_ipv6(store):
    store.observe_dhcp(T0, ack(POOL_IP, WS01_MAC))
    assert store.attribute(T0 + NS, _ip(POOL_IP)).mac == WS01_MAC
    assert store.attribute(T0 + NS, "::ffff:10.77.0.50").mac == WS01_MAC
    with pytest.raises(ValueError):
        store.attribute(T0, "not-an-ip")


def test_packet_mac_contradicting_the_lease_lowers_confidence(store):
    store.observe_dhcp(T0, ack(POOL_IP, WS01_MAC, hostname="ws01"))
    assert store.attribute(T0 + NS, POOL_IP, mac=WS01_MAC.upper()).confidence == "high"
    got = store.attribute(T0 + NS, POOL_IP, mac=WS02_MAC)
    assert (got.mac, got.conflict, got.confidence) == (WS01_MAC, True, "low")


# --------------------------------------------------------------------------- who_had


def test_who_had_lists_every_binding_covering_the_time(store):
    feed_dhcp(store, "v4_ws01_bind", T0)
    store.observe_kerberos(T0 + NS, POOL_IP, kerberos_replies("as_udp_alice")[1])
    feed_dhcp(store, "v4_ws02_same_ip", T0 + 60 * NS)
    rows = store.who_had(POOL_IP, T0 + 30 * NS)
    assert {(b.kind, b.value) for b in rows} == {
        (KIND_IP_MAC, WS01_MAC),
        (KIND_IP_USER, "alice"),
        (KIND_MAC_HOST, "ws01.egress.test"),
    }
    later = store.who_had(POOL_IP, T0 + 90 * NS)
    assert {(b.kind, b.value) for b in later} == {
        (KIND_IP_MAC, WS02_MAC),
        (KIND_MAC_HOST, "ws02.egress.test"),
    }
    around = store.who_had(POOL_IP, T0 + 59 * NS, window_ns=2 * NS)
    assert {b.value for b in around if b.kind == KIND_IP_MAC} == {WS01_MAC, WS02_MAC}
    assert store.who_had("192.0.2.99", T0) == []


# --------------------------------------------------------------------------- persistence


def test_restart_recovers_every_committed_binding_with_the_same_answers(tmp_path):
    db = tmp_path / "identities.sqlite"
    with IdentityStore(db) as store:
        feed_dhcp(store, "v4_ws01_bind", T0)
        store.observe_kerberos(T0 + NS, POOL_IP, kerberos_replies("as_udp_alice")[1])
        feed_dhcp(store, "v4_ws02_same_ip", T0 + 60 * NS)
        answers = [store.attribute(T0 + s * NS, POOL_IP) for s in (30, 90)]
        rows = store.bindings()
    with IdentityStore(db) as reopened:
        assert reopened.bindings() == rows
        assert [reopened.attribute(T0 + s * NS, POOL_IP) for s in (30, 90)] == answers
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_read_only_store_reads_while_the_writer_is_open_and_refuses_writes(tmp_path):
    db = tmp_path / "identities.sqlite"
    writer = IdentityStore(db)
    writer.observe_dhcp(T0, ack(POOL_IP, WS01_MAC))
    writer.flush()
    reader = IdentityStore(db, read_only=True)
    try:
        assert reader.attribute(T0 + NS, POOL_IP).mac == WS01_MAC
        with pytest.raises(StoreError):
            reader.observe_dhcp(T0, ack(POOL_IP, WS02_MAC))
    finally:
        reader.close()
        writer.close()
    with pytest.raises(StoreError):
        IdentityStore(tmp_path / "missing.sqlite", read_only=True)


def test_foreign_or_newer_databases_are_refused(tmp_path):
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not an identity database"):
        IdentityStore(foreign)
    newer = tmp_path / "newer.sqlite"
    IdentityStore(newer).close()
    with sqlite3.connect(newer) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer"):
        IdentityStore(newer)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError):
        IdentityStore(garbage)


_CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from monitor.attribution.store import IdentityStore
    from monitor.protocols.kerberos import MSG_AS_REP, KerberosMessage, KerberosPrincipal

    def reply(user):
        return KerberosMessage(msg_type=MSG_AS_REP, realm="EGRESS.TEST",
                               cname=KerberosPrincipal(1, (user,)))

    t0 = int(sys.argv[2])
    store = IdentityStore(sys.argv[1], commit_rows=10, commit_interval_ms=10**9)
    for i in range(95):
        store.observe_kerberos(t0 + i, f"10.1.{i // 200}.{i % 200 + 1}", reply(f"user{i}"))
    store.flush()
    for i in range(7):
        store.observe_kerberos(t0 + 1000 + i, f"10.2.0.{i + 1}", reply(f"late{i}"))
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def test_kill_9_mid_batch_keeps_everything_committed_before(tmp_path):
    db = tmp_path / "identities.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_SCRIPT, str(db), str(T0)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()  # SIGKILL: no flush, no close
        proc.wait(timeout=30)
    assert proc.returncode == -9
    with IdentityStore(db) as store:
        users = {b.value for b in store.bindings()}
        assert users == {f"user{i}" for i in range(95)}
        assert store.attribute(T0 + 100, "10.1.0.1").user == "user0"
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_batches_commit_after_commit_rows_or_packet_time_interval(tmp_path):
    db = tmp_path / "identities.sqlite"
    store = IdentityStore(db, commit_rows=3, commit_interval_ms=500)
    other = sqlite3.connect(db)
    try:

        def committed() -> int:
            return other.execute("SELECT count(*) FROM bindings").fetchone()[0]

        store.observe_kerberos(T0, "10.9.0.1", kerberos_reply("a"))
        store.observe_kerberos(T0 + 1, "10.9.0.2", kerberos_reply("b"))
        assert committed() == 0
        store.observe_kerberos(T0 + 2, "10.9.0.3", kerberos_reply("c"))
        assert committed() == 3  # three changes
        store.observe_kerberos(T0 + 3, "10.9.0.4", kerberos_reply("d"))
        store.tick(T0 + 3 + 400_000_000)
        assert committed() == 3
        store.tick(T0 + 3 + 500_000_000)  # half a second of packet time later
        assert committed() == 4
        store.observe_kerberos(T0 + 4, "10.9.0.5", kerberos_reply("e"))
    finally:
        store.close()
        assert committed() == 5
        other.close()


def test_rows_beyond_max_rows_are_evicted_oldest_first(tmp_path):
    with IdentityStore(tmp_path / "db.sqlite", max_rows=20, commit_rows=1) as store:
        for i in range(50):
            store.observe_kerberos(T0 + i * NS, f"10.3.0.{i + 1}", kerberos_reply(f"u{i}"))
        assert store.row_count == 20
        assert {b.value for b in store.bindings()} == {f"u{i}" for i in range(30, 50)}
        assert store.stats.evicted_rows == 30


def test_bindings_older_than_the_retention_are_expired(tmp_path):
    db = tmp_path / "db.sqlite"
    with IdentityStore(db, retention_days=1, maintenance_interval_s=0) as store:
        store.observe_kerberos(T0, "10.4.0.1", kerberos_reply("old"))
        store.observe_dhcp(T0, ack("10.4.0.9", WS01_MAC, lease=LEASE_FOREVER))
        store.flush()
        store.observe_kerberos(T0 + 3 * 24 * HOUR, "10.4.0.2", kerberos_reply("new"))
        store.observe_kerberos(T0 + 3 * 24 * HOUR + NS, "10.4.0.3", kerberos_reply("newer"))
        store.flush()
        values = {b.value for b in store.bindings()}
        assert "old" not in values and "new" in values
        # An infinite lease last confirmed three days ago is gone too: nothing is kept forever.
        assert WS01_MAC not in values
        assert store.stats.expired_rows >= 2
    with IdentityStore(db) as reopened:
        assert {b.value for b in reopened.bindings()} == {"new", "newer"}


def test_one_packet_with_a_far_future_timestamp_does_not_expire_everything(tmp_path):
    with IdentityStore(tmp_path / "db.sqlite", retention_days=1, maintenance_interval_s=0) as s:
        s.observe_kerberos(T0, "10.4.0.1", kerberos_reply("alice"))
        s.observe_kerberos(T0 + NS, "10.4.0.2", kerberos_reply("bob"))
        s.observe_kerberos(T0 + 365 * 24 * HOUR, "10.4.0.3", kerberos_reply("garbage-clock"))
        s.observe_kerberos(T0 + 2 * NS, "10.4.0.4", kerberos_reply("carol"))
        s.flush()
        assert {b.value for b in s.bindings()} >= {"alice", "bob", "carol"}
        assert s.stats.expired_rows == 0


# --------------------------------------------------------------------------- the pure core


def test_splice_extends_a_binding_on_agreeing_evidence_and_cuts_it_on_disagreeing():
    a = Binding(KIND_IP_MAC, POOL_IP, WS01_MAC, 0, 100, 0, "dhcp", id=1)
    same = Binding(KIND_IP_MAC, POOL_IP, WS01_MAC, 50, 200, 50, "dhcp")
    change = splice(a, None, same)
    assert change.insert is None and [b.end_ns for b in change.updates] == [200]
    other = Binding(KIND_IP_MAC, POOL_IP, WS02_MAC, 50, 200, 50, "dhcp")
    change = splice(a, None, other)
    assert [(b.end_ns, b.end_reason) for b in change.updates] == [(50, "superseded")]
    assert change.insert == other
    assert not splice(None, None, Binding(KIND_IP_MAC, POOL_IP, WS01_MAC, 5, 5, 5, "dhcp"))


def test_agreeing_evidence_keeps_the_stronger_source_and_its_origin():
    """A Kerberos machine account confirmed later by an NTLM workstation name stays a
    Kerberos binding (the precedence's first choice while the ticket covers the time); the
    other way round Kerberos takes over; between equals the newer evidence names the source."""
    rank = {"kerberos": 2, "ntlm": 1}

    def rank_of(b: Binding) -> int:
        return rank[b.source]

    kerberos = Binding(KIND_IP_HOST, POOL_IP, "ws02", 0, 100, 0, "kerberos", origin="AS-REP", id=1)
    ntlm = Binding(KIND_IP_HOST, POOL_IP, "ws02", 50, 80, 50, "ntlm", origin="AUTHENTICATE")
    (kept,) = splice(kerberos, None, ntlm, new_rank=1, rank_of=rank_of).updates
    assert (kept.source, kept.origin, kept.last_ns, kept.end_ns) == ("kerberos", "AS-REP", 50, 100)
    first = Binding(KIND_IP_HOST, POOL_IP, "ws02", 0, 100, 0, "ntlm", origin="AUTHENTICATE", id=1)
    later = Binding(KIND_IP_HOST, POOL_IP, "ws02", 50, 200, 50, "kerberos", origin="AS-REP")
    (taken,) = splice(first, None, later, new_rank=2, rank_of=rank_of).updates
    assert (taken.source, taken.origin, taken.end_ns) == ("kerberos", "AS-REP", 200)
    # The same Kerberos evidence seen again (a second replay into the store) changes nothing.
    assert not splice(taken, None, later, new_rank=2, rank_of=rank_of).updates
    user = Binding(KIND_IP_USER, POOL_IP, "alice", 0, 100, 0, "kerberos", origin="AS-REP", id=2)
    logon = Binding(KIND_IP_USER, POOL_IP, "alice", 50, 100, 50, "ntlm", origin="AUTHENTICATE")
    (newer,) = splice(user, None, logon, new_rank=1, rank_of=lambda b: 1).updates
    assert (newer.source, newer.origin) == ("ntlm", "AUTHENTICATE")


# --------------------------------------------------------------------------- properties

_IPS = ["10.5.0.1", "10.5.0.2", "fd00::1"]
_MACS = ["02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"]
_USERS = ["alice", "bob", "WS01$", "host/ws02.pd.example", "Alice"]

_times = st.integers(min_value=0, max_value=48 * 3600).map(lambda s: T0 + s * NS)


@st.composite
def _observation(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["ack", "release", "decline", "request", "krb", "ntlm", "lease"]))
    ts = draw(_times)
    ip = draw(st.sampled_from(_IPS[:2]))
    mac = draw(st.sampled_from(_MACS))
    if kind == "ack":
        lease = draw(st.sampled_from([0, 1, 60, 3600, LEASE_FOREVER]))
        name = draw(st.sampled_from([None, "ws01", "ws02.pd.example", "WS01"]))
        raw = dhcp_bytes(op=2, mtype=5, mac=mac, yiaddr=ip, lease=lease, hostname=name)
        return ("dhcp", ts, parse_dhcp(raw))
    if kind in ("release", "decline"):
        mtype = 7 if kind == "release" else 4
        raw = dhcp_bytes(op=1, mtype=mtype, mac=mac, ciaddr=ip, requested=ip)
        return ("dhcp", ts, parse_dhcp(raw))
    if kind == "request":
        name = draw(st.sampled_from(["ws01.pd.example", "ws03"]))
        return (
            "dhcp",
            ts,
            parse_dhcp(dhcp_bytes(op=1, mtype=3, mac=mac, requested=ip, hostname=name)),
        )
    if kind == "krb":
        user = draw(st.sampled_from(_USERS))
        mtype = draw(st.sampled_from([MSG_AS_REP, MSG_TGS_REP, MSG_KRB_ERROR]))
        return ("krb", ts, draw(st.sampled_from(_IPS)), kerberos_reply(user, mtype))
    if kind == "ntlm":
        msg = draw(st.sampled_from(_NTLM_AUTHS))
        return ("ntlm", ts, draw(st.sampled_from(_IPS)), msg)
    start = draw(st.one_of(st.none(), _times))
    length = draw(st.sampled_from([None, 0, 60 * NS, 2 * HOUR]))
    state = draw(st.sampled_from(["active", "released", "free"]))
    end = None if length is None or start is None else start + length
    return ("lease", ts, Lease(ip, mac, "ws09", start, end, state, "isc", "f", 1))


_NTLM_AUTHS = [
    m
    for name in ("smb2_smbclient", "http_curl_proxy", "http_curl_oem")
    for m in ntlm_messages(name)
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_observation(), max_size=40), st.lists(_times, min_size=1, max_size=5))
def test_random_interleavings_never_raise_nor_overlap_bindings_of_one_kind(observations, asks):
    with IdentityStore(":memory:", commit_rows=7) as store:
        for obs in observations:
            if obs[0] == "dhcp":
                store.observe_dhcp(obs[1], obs[2])
            elif obs[0] == "krb":
                store.observe_kerberos(obs[1], obs[2], obs[3])
            elif obs[0] == "ntlm":
                store.observe_ntlm(obs[1], obs[2], obs[3])
            else:
                store.load_leases([obs[2]], obs[1])
        assert_disjoint(store.bindings())
        for ts in asks:
            for ip in _IPS:
                got = store.attribute(ts, ip)
                assert got.confidence in (None, "high", "medium", "low")
                assert got.known == (got.confidence is not None)
                to_ecs_fields(got)
                store.who_had(ip, ts)
