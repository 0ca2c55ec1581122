"""Behaviour of the DHCP lease-file readers (monitor.attribution.leasefiles).

Fixtures and the documents their formats come from:

* ``dnsmasq_ws01.leases`` / ``dnsmasq_ws02.leases``: written by a real dnsmasq 2.90 while
  serving ISC dhclient in network namespaces (tests/fixtures/dhcp/capture.py), before and after
  the pool's only IPv4 address went from ws01 to ws02. The line layout is the one Simon
  Kelley's list describes ("dnsmasq leases file format specification", dnsmasq-discuss,
  http://lists.thekelleys.org.uk/pipermail/dnsmasq-discuss/2016q2/010595.html, and
  https://www.mail-archive.com/dnsmasq-discuss@lists.thekelleys.org.uk/msg08594.html).
* ``isc_dhcpd.leases``: hand-written from dhcpd.leases(5) (ISC DHCP 4.x,
  https://manpages.ubuntu.com/manpages/xenial/man5/dhcpd.leases.5.html, and
  https://man.openbsd.org/dhcpd.leases for the date format: "weekday year/month/day
  hour:minute:second", UTC, weekday 0 = Sunday and ignored on input; the last declaration for
  an address is the current one).
* ``kea-leases4.csv`` / ``kea-leases6.csv``: hand-written from Kea's memfile lease file code
  and docs: columns from src/lib/dhcpsrv/csv_lease_file4.h / csv_lease_file6.h
  (https://github.com/isc-projects/kea), the ``&#xNN`` escaping of commas and non-printable
  bytes from src/lib/util/csv_file.cc (CSVRow::escapeCharacters), the three lease states
  (0 default, 1 declined, 2 expired-reclaimed) from ISC's Marcin Siodelski on kea-users
  (https://www.isc.org/kea-users-mailing-list/2022-December/003749.html), and the
  append-only file with the newest entry winning, an entry with valid lifetime 0 removing the
  lease and corrupted rows being skipped from src/lib/dhcpsrv/lease_file_loader.h
  (LeaseFileLoader::load) and the Kea developer guide's Lease File Cleanup page
  (https://reports.kea.isc.org/dev_guide/d1/d47/lfc.html).
"""

from __future__ import annotations

import calendar
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.attribution import leasefiles
from monitor.attribution.leasefiles import (
    Lease,
    LeaseFileError,
    LeaseWarning,
    parse_dnsmasq_leases,
    parse_isc_dhcpd_leases,
    parse_kea_csv,
    read_dnsmasq_leases,
    read_isc_dhcpd_leases,
    read_kea_csv,
)
from monitor.protocols.dhcp import parse_dhcp
from monitor.protocols.dhcpv6 import parse_dhcpv6

FIXTURES = Path(__file__).parent / "fixtures" / "dhcp"
NS = 1_000_000_000
WS01_MAC = "02:00:00:77:00:01"
WS02_MAC = "02:00:00:77:00:02"


def utc_ns(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0)) * NS


def wire(name: str, index: int) -> bytes:
    packets = json.loads((FIXTURES / f"{name}.json").read_text())["packets"]
    return bytes.fromhex(packets[index]["payload"])


def by_ip(leases: list[Lease]) -> dict[str, Lease]:
    assert len({lease.ip for lease in leases}) == len(leases)
    return {lease.ip: lease for lease in leases}


# --- dnsmasq: real files ----------------------------------------------------------------------


def test_real_dnsmasq_file_matches_what_the_wire_said() -> None:
    """The lease file and the DHCP exchange describe the same client in the same terms."""
    warnings: list[LeaseWarning] = []
    leases = read_dnsmasq_leases(FIXTURES / "dnsmasq_ws01.leases", warnings=warnings)
    assert warnings == []
    v4, v6 = leases
    ack = parse_dhcp(wire("v4_ws01_bind", 3))
    request = parse_dhcp(wire("v4_ws01_bind", 2))
    assert (v4.ip, v4.mac, v4.hostname) == (ack.bound_ip, ack.mac, request.hostname)
    assert v4.client_id == request.client_id
    reply = parse_dhcpv6(wire("v6_ws01_bind", 3))
    assert v6.ip == reply.bound_addresses[0].address
    assert v6.client_id == reply.duid
    assert v6.mac == reply.mac == WS01_MAC
    for lease in leases:
        assert lease.source == "dnsmasq" and lease.state == "active"
        assert lease.start_ns is None and lease.end_ns is not None
        assert lease.file.endswith("dnsmasq_ws01.leases")
    assert [lease.line for lease in leases] == [1, 3]  # line 2 is the server's duid


def test_real_dnsmasq_file_after_the_address_changed_hands() -> None:
    before = by_ip(read_dnsmasq_leases(FIXTURES / "dnsmasq_ws01.leases"))
    after = by_ip(read_dnsmasq_leases(str(FIXTURES / "dnsmasq_ws02.leases")))
    pool = parse_dhcp(wire("v4_ws02_same_ip", 3)).bound_ip
    assert pool is not None
    assert before[pool].mac == WS01_MAC and before[pool].hostname == "ws01"
    assert after[pool].mac == WS02_MAC and after[pool].hostname == "ws02"
    assert after[pool].client_id is None  # ws02 sends no client identifier
    v6 = next(lease for lease in after.values() if ":" in lease.ip)
    assert v6.mac == WS02_MAC  # from its DUID-LL


# --- dnsmasq: crafted ---------------------------------------------------------------------------


def test_dnsmasq_expiry_zero_is_an_infinite_lease() -> None:
    (lease,) = parse_dnsmasq_leases("0 52:54:00:00:00:01 10.0.0.5 ws05 *\n")
    assert lease.end_ns is None
    assert lease.covers(utc_ns(2099, 1, 1, 0))


def test_dnsmasq_non_ethernet_hardware_address_has_no_mac() -> None:
    text = (
        "1795600800 06-00:01:02:03:04:05:06:07 10.0.0.6 * ff:00:01\n1795600800 01- 10.0.0.7 * *\n"
    )
    first, second = parse_dnsmasq_leases(text)
    assert first.mac is None and first.hostname is None and first.client_id == "ff:00:01"
    assert second.mac is None


def test_dnsmasq_temporary_address_iaid_is_accepted() -> None:
    text = "duid 00:01:00:01:aa:bb:cc:dd:02:00:00:00:00:fe\n1795600800 T17 fd00::5 ws * \n"
    (lease,) = parse_dnsmasq_leases(text)
    assert lease.ip == "fd00::5" and lease.client_id is None and lease.mac is None


def test_dnsmasq_malformed_lines_are_skipped_and_reported() -> None:
    text = (
        "1795600800 52:54:00:00:00:01 10.0.0.5 ws05 *\n"
        "soon 52:54:00:00:00:02 10.0.0.6 ws06 *\n"
        "1795600800 52:54:00:00:00 10.0.0.7 ws07 *\n"
        "1795600800 52:54:00:00:00:04 10.0.0.999 ws08 *\n"
        "1795600800 52:54:00:00:00:05\n"
        "\n"
        "1795600800 52:54:00:00:00:06 10.0.0.9 ws09 *\n"
    )
    warnings: list[LeaseWarning] = []
    leases = parse_dnsmasq_leases(text, "dnsmasq.leases", warnings=warnings)
    assert [lease.ip for lease in leases] == ["10.0.0.5", "10.0.0.9"]
    assert [w.line for w in warnings] == [2, 3, 4, 5]
    assert str(warnings[0]).startswith("dnsmasq.leases:2: expiry")


def test_strict_mode_raises_lease_file_error_naming_file_and_line() -> None:
    text = "1795600800 52:54:00:00:00:01 10.0.0.5 ws05 *\nbroken\n"
    with pytest.raises(LeaseFileError) as info:
        parse_dnsmasq_leases(text, "/var/lib/misc/dnsmasq.leases", strict=True)
    assert (info.value.file, info.value.line) == ("/var/lib/misc/dnsmasq.leases", 2)
    assert "dnsmasq.leases:2:" in str(info.value)


# --- ISC dhcpd ----------------------------------------------------------------------------------


def test_isc_last_block_for_an_address_wins() -> None:
    warnings: list[LeaseWarning] = []
    leases = by_ip(read_isc_dhcpd_leases(FIXTURES / "isc_dhcpd.leases", warnings=warnings))
    current = leases["10.20.0.5"]
    assert (current.mac, current.hostname, current.state) == ("52:54:00:aa:00:03", "ws03", "active")
    assert current.start_ns == utc_ns(2026, 11, 25, 10, 40)
    assert current.end_ns == utc_ns(2026, 11, 25, 11, 40)
    assert current.source == "isc" and current.line == 55


def test_isc_history_keeps_every_block_in_file_order() -> None:
    leases = read_isc_dhcpd_leases(FIXTURES / "isc_dhcpd.leases", history=True)
    five = [lease for lease in leases if lease.ip == "10.20.0.5"]
    assert [(lease.hostname, lease.state) for lease in five] == [
        ("ws01", "active"),
        ("ws01", "released"),
        ("ws03", "active"),
    ]
    released = five[1]
    # ws01 held the address from 10:00 until it released it at 10:30, ws03 from 10:40.
    assert not released.covers(utc_ns(2026, 11, 25, 10, 15))  # a released entry binds nothing
    assert five[0].covers(utc_ns(2026, 11, 25, 10, 15))
    assert five[2].covers(utc_ns(2026, 11, 25, 10, 45))
    assert not five[2].covers(utc_ns(2026, 11, 25, 10, 35))


def test_isc_client_identifiers_in_both_spellings() -> None:
    leases = read_isc_dhcpd_leases(FIXTURES / "isc_dhcpd.leases", history=True)
    ws01 = leases[0]
    assert ws01.client_id == "01:52:54:00:aa:00:01"  # uid "\001RT\000\252\000\001"
    ws02 = leases[1]
    assert ws02.client_id == "01:52:54:00:aa:00:02"  # uid 01:52:54:00:aa:00:02
    assert ws02.mac == "52:54:00:aa:00:02"  # upper-case in the file


def test_isc_hostile_hostname_is_escaped() -> None:
    leases = by_ip(read_isc_dhcpd_leases(FIXTURES / "isc_dhcpd.leases"))
    assert leases["10.20.0.6"].hostname == "ws02\\x1b[31m"


def test_isc_epoch_start_and_never_ending_lease() -> None:
    lease = by_ip(read_isc_dhcpd_leases(FIXTURES / "isc_dhcpd.leases"))["10.20.0.7"]
    assert lease.start_ns == utc_ns(2026, 11, 25, 10)
    assert lease.end_ns is None
    assert lease.covers(utc_ns(2030, 1, 1, 0))


def test_isc_other_declarations_and_blocks_are_skipped() -> None:
    warnings: list[LeaseWarning] = []
    leases = by_ip(read_isc_dhcpd_leases(FIXTURES / "isc_dhcpd.leases", warnings=warnings))
    # server-duid, failover peer, host and ia-na declarations yield no lease
    assert set(leases) == {"10.20.0.5", "10.20.0.6", "10.20.0.7", "10.20.0.8", "10.20.0.10"}
    assert leases["10.20.0.8"].state == "abandoned" and not leases["10.20.0.8"].is_bound
    assert leases["10.20.0.10"].mac is None  # token-ring hardware: no MAC
    # The only warning is the lease with month 13.
    assert [(w.line, "impossible date" in w.message) for w in warnings] == [(77, True)]


def test_isc_strict_mode_raises_on_the_bad_date() -> None:
    with pytest.raises(LeaseFileError, match=r"isc_dhcpd\.leases:77: starts"):
        read_isc_dhcpd_leases(FIXTURES / "isc_dhcpd.leases", strict=True)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("lease 10.0.0.1 {\n  starts 3 2026/11/25 10:00:00;\n", 1, "never closed"),
        ('lease 10.0.0.1 {\n client-hostname "ws;\n}\n', 2, "unterminated"),
        ("lease 10.0.0.300 {\n binding state active;\n}\n", 1, "not an IPv4"),
        ("lease 10.0.0.1 {\n hardware ethernet 52:54:00;\n}\n", 2, "6 octets"),
        ("lease 10.0.0.1 {\n binding state sleepy;\n}\n", 2, "binding state"),
        ("lease 10.0.0.1 {\n ends 3 2026/11/25;\n}\n", 2, "ends"),
        ("lease 10.0.0.1 {\n starts epoch soon;\n}\n", 2, "not a number"),
        ("}\n", 1, "without a matching"),
        ("lease 10.0.0.1;\n", 1, "not followed"),
    ],
)
def test_isc_malformed_entries_are_reported(text: str, line: int, reason: str) -> None:
    warnings: list[LeaseWarning] = []
    assert parse_isc_dhcpd_leases(text, "x", warnings=warnings) == []
    assert [w.line for w in warnings] == [line]
    assert reason in warnings[0].message
    with pytest.raises(LeaseFileError, match=reason):
        parse_isc_dhcpd_leases(text, "x", strict=True)


def test_isc_lease_after_a_broken_one_is_still_read() -> None:
    text = (
        "lease 10.0.0.1 {\n hardware ethernet zz:54:00:00:00:01;\n}\n"
        "lease 10.0.0.2 {\n binding state active;\n hardware ethernet 52:54:00:00:00:02;\n}\n"
    )
    warnings: list[LeaseWarning] = []
    (lease,) = parse_isc_dhcpd_leases(text, warnings=warnings)
    assert (lease.ip, lease.mac, lease.line) == ("10.0.0.2", "52:54:00:00:00:02", 4)
    assert len(warnings) == 1


# --- Kea ----------------------------------------------------------------------------------------


def test_kea_v4_current_leases() -> None:
    warnings: list[LeaseWarning] = []
    leases = by_ip(read_kea_csv(FIXTURES / "kea-leases4.csv", warnings=warnings))
    five = leases["10.30.0.5"]
    # ws01's lease was deleted (valid_lifetime 0) and ws03 then got the address.
    assert (five.mac, five.hostname, five.state) == ("52:54:00:bb:00:03", "ws03", "active")
    assert five.start_ns == utc_ns(2026, 11, 25, 10, 40)  # expire - valid_lifetime
    assert five.end_ns == utc_ns(2026, 11, 25, 11, 40)
    assert leases["10.30.0.6"].hostname == "ws02, evil"  # &#x2c is Kea's escaped comma
    assert leases["10.30.0.7"].state == "declined" and not leases["10.30.0.7"].is_bound
    assert leases["10.30.0.8"].state == "expired-reclaimed"
    kiosk = leases["10.30.0.9"]
    assert kiosk.start_ns is None and kiosk.end_ns is None  # infinite valid lifetime
    assert "10.30.0.10" not in leases  # deleted
    assert [w.line for w in warnings] == [9]  # 11 values for 12 columns
    assert all(lease.source == "kea" for lease in leases.values())


def test_kea_v4_history_shows_the_deletion() -> None:
    five = [
        (lease.hostname, lease.state, lease.line)
        for lease in read_kea_csv(FIXTURES / "kea-leases4.csv", history=True)
        if lease.ip == "10.30.0.5"
    ]
    assert five == [
        ("ws01.egress.test", "active", 2),
        ("ws01.egress.test", "deleted", 6),
        ("ws03", "active", 7),
    ]


def test_kea_v4_client_id_is_colon_hex() -> None:
    (ws01,) = [
        lease
        for lease in read_kea_csv(FIXTURES / "kea-leases4.csv", history=True)
        if lease.line == 2
    ]
    assert ws01.client_id == "01:52:54:00:bb:00:01"


def test_kea_v6_leases_with_mac_from_hwaddr_or_duid() -> None:
    warnings: list[LeaseWarning] = []
    leases = by_ip(read_kea_csv(FIXTURES / "kea-leases6.csv", warnings=warnings))
    assert leases["2001:db8:30::5"].mac == "52:54:00:bb:00:01"  # hwaddr column
    assert leases["2001:db8:30::6"].mac == "52:54:00:bb:00:02"  # from the DUID-LL
    assert leases["2001:db8:30::6"].client_id == "00:03:00:01:52:54:00:bb:00:02"
    assert leases["2001:db8:30::7"].mac is None  # DUID-EN holds no MAC
    assert "2001:db8:3100::" not in leases  # a delegated prefix, not an address
    assert [w.line for w in warnings] == [6]


def test_kea_file_without_a_usable_header_yields_nothing() -> None:
    warnings: list[LeaseWarning] = []
    assert parse_kea_csv("10.0.0.1,aa,,3600,1,1,0,0,,0\n", "k.csv", warnings=warnings) == []
    assert warnings[0].line == 1 and "header" in warnings[0].message
    with pytest.raises(LeaseFileError, match=r"k\.csv:1: header"):
        parse_kea_csv("10.0.0.1,aa,,3600,1,1,0,0,,0\n", "k.csv", strict=True)


def test_kea_minimal_header_and_crlf_lines() -> None:
    text = "address,hwaddr,valid_lifetime,expire\r\n10.0.0.1,52:54:00:00:00:01,60,1795600860\r\n"
    (lease,) = parse_kea_csv(text)
    assert (lease.ip, lease.mac, lease.state, lease.hostname) == (
        "10.0.0.1",
        "52:54:00:00:00:01",
        "active",
        None,
    )
    assert lease.start_ns == utc_ns(2026, 11, 25, 10)


# --- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", [read_isc_dhcpd_leases, read_kea_csv, read_dnsmasq_leases])
def test_missing_file_raises_lease_file_error(reader, tmp_path: Path) -> None:
    missing = tmp_path / "nope.leases"
    with pytest.raises(LeaseFileError, match=r"nope\.leases: cannot read"):
        reader(missing)
    with pytest.raises(LeaseFileError, match="cannot read"):
        reader(tmp_path)  # a directory


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.leases"
    path.write_text("0 52:54:00:00:00:01 10.0.0.5 ws05 *\n" * 10)
    monkeypatch.setattr(leasefiles, "MAX_LEASE_FILE_BYTES", 100)
    with pytest.raises(LeaseFileError, match="larger than 100 bytes"):
        read_dnsmasq_leases(path)


def test_non_utf8_hostname_bytes_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / "latin1.leases"
    path.write_bytes(b"0 52:54:00:00:00:01 10.0.0.5 caf\xe9 *\n")
    (lease,) = read_dnsmasq_leases(path)
    assert lease.hostname == "caf\\xe9"


def test_lease_covers_only_bound_intervals() -> None:
    lease = Lease("10.0.0.5", None, None, 100, 200, "active", "kea", "f", 1)
    assert [lease.covers(t) for t in (99, 100, 199, 200)] == [False, True, True, False]
    expired = Lease("10.0.0.5", None, None, 100, 200, "expired", "isc", "f", 1)
    assert not expired.covers(150)


# --- hypothesis ----------------------------------------------------------------------------------

PARSERS = [parse_isc_dhcpd_leases, parse_kea_csv, parse_dnsmasq_leases]
FIXTURE_TEXTS = [
    (FIXTURES / name).read_text(encoding="utf-8", errors="surrogateescape")
    for name in (
        "isc_dhcpd.leases",
        "kea-leases4.csv",
        "kea-leases6.csv",
        "dnsmasq_ws01.leases",
        "dnsmasq_ws02.leases",
    )
]
LEASE_ALPHABET = st.sampled_from(
    [*'0123456789abcdef:.;{}"#\\ \n\t,-*/=&x', "lease ", "duid ", "ends never", "&#x2c"]
)


def _read_leniently_then_strictly(parser, text: str) -> None:
    warnings: list[LeaseWarning] = []
    leases = parser(text, "fuzz", warnings=warnings)
    for lease in leases:
        assert isinstance(lease, Lease)
        lease.covers(0)
    for warning in warnings:
        assert warning.file == "fuzz" and warning.line >= 1
    try:
        parser(text, "fuzz", strict=True)
    except LeaseFileError as exc:
        assert exc.file == "fuzz"


@given(st.sampled_from(PARSERS), st.text(max_size=400))
@settings(max_examples=600, deadline=None)
def test_random_text_never_raises_and_strict_raises_only_lease_file_error(parser, text) -> None:
    _read_leniently_then_strictly(parser, text)


@given(st.sampled_from(PARSERS), st.lists(LEASE_ALPHABET, max_size=200).map("".join))
@settings(max_examples=1000, deadline=None)
def test_lease_shaped_noise_never_raises(parser, text: str) -> None:
    _read_leniently_then_strictly(parser, text)


@given(
    st.sampled_from(PARSERS),
    st.sampled_from(FIXTURE_TEXTS),
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 8), st.text(max_size=6)),
        min_size=1,
        max_size=6,
    ),
)
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_fixture_files_never_raise(parser, text: str, edits) -> None:
    for where, cut, insert in edits:
        pos = where % (len(text) + 1)
        text = text[:pos] + insert + text[pos + cut :]
    _read_leniently_then_strictly(parser, text)
