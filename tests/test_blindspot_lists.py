"""The shipped blind-spot lists: encrypted-DNS resolvers and ECH client-facing servers.

These lists only ever tell an analyst "the sensor cannot see this client's DNS / destination",
so the tests pin two things: the well-known resolvers and front ends are found, and ordinary
browsing of the same operators (google.com, cloudflare.com) is not mistaken for either.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from monitor.blocklist.loader import (
    check_paths,
    load_blocklist,
    load_blocklists,
    shipped_blocklist_dir,
)
from monitor.blocklist.matcher import Matcher
from monitor.blocklist.model import Blocklist

ENCRYPTED_DNS = "encrypted-dns.yaml"
ECH_FRONTENDS = "ech-frontends.yaml"
FACE_RECOGNITION = "face-recognition.yaml"
REVIEW_VERSION = "2026.11.26"


def shipped(file: str) -> Path:
    return shipped_blocklist_dir() / file


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return load_blocklists([shipped_blocklist_dir()])


@pytest.fixture(scope="module")
def encrypted_dns() -> Blocklist:
    return load_blocklist(shipped(ENCRYPTED_DNS))


@pytest.fixture(scope="module")
def ech_frontends() -> Blocklist:
    return load_blocklist(shipped(ECH_FRONTENDS))


def test_both_lists_load_with_the_review_version(
    encrypted_dns: Blocklist, ech_frontends: Blocklist
) -> None:
    assert (encrypted_dns.name, encrypted_dns.version) == ("encrypted-dns", REVIEW_VERSION)
    assert (ech_frontends.name, ech_frontends.version) == ("ech-frontends", REVIEW_VERSION)
    assert encrypted_dns.indicators and ech_frontends.indicators


def test_shipped_directory_checks_clean_without_warnings_about_these_lists() -> None:
    out = io.StringIO()
    assert check_paths([str(shipped_blocklist_dir())], out) == 0, out.getvalue()
    text = out.getvalue()
    for line in text.splitlines():
        if "warning" in line:
            assert ENCRYPTED_DNS not in line and ECH_FRONTENDS not in line, line


def test_shipped_matcher_has_no_warnings_from_these_lists(matcher: Matcher) -> None:
    ours = [w for w in matcher.warnings if ENCRYPTED_DNS in w or ECH_FRONTENDS in w]
    assert ours == []


def test_encrypted_dns_vendors_are_blind_spot_signals_not_misconduct(
    encrypted_dns: Blocklist,
) -> None:
    for vendor in encrypted_dns.vendors:
        assert vendor.category == "encrypted-dns", vendor.id
        assert vendor.severity in ("low", "medium"), vendor.id
        assert vendor.references, vendor.id
    for ind in encrypted_dns.indicators:
        assert ind.severity in ("low", "medium"), (ind.kind, ind.value)


def test_ech_frontend_vendors_are_low_severity(ech_frontends: Blocklist) -> None:
    for vendor in ech_frontends.vendors:
        assert (vendor.category, vendor.severity) == ("ech-frontend", "low"), vendor.id
        assert vendor.references, vendor.id
    assert {ind.severity for ind in ech_frontends.indicators} == {"low"}


@pytest.mark.parametrize(
    "name",
    [
        "dns.google",
        "dns.google.com",
        "cloudflare-dns.com",
        "mozilla.cloudflare-dns.com",
        "chrome.cloudflare-dns.com",
        "one.one.one.one",
        "dns.quad9.net",
        "doh.opendns.com",
        "dns.adguard-dns.com",
        "doh.cleanbrowsing.org",
        "abc123.dns.nextdns.io",
        "p2.freedns.controld.com",
        "DNS.Google.",
    ],
)
def test_resolver_host_names_match_encrypted_dns(matcher: Matcher, name: str) -> None:
    match = matcher.match_name(name)
    assert match is not None, name
    assert match.indicator.vendor.category == "encrypted-dns"
    assert match.indicator.list_name == "encrypted-dns"


@pytest.mark.parametrize(
    ("address", "vendor"),
    [
        ("8.8.8.8", "google-public-dns"),
        ("8.8.4.4", "google-public-dns"),
        ("2001:4860:4860::8888", "google-public-dns"),
        ("1.1.1.1", "cloudflare-dns"),
        ("2606:4700:4700::1111", "cloudflare-dns"),
        ("9.9.9.9", "quad9"),
        ("208.67.222.222", "opendns"),
        ("94.140.14.14", "adguard-dns"),
        ("76.76.2.22", "control-d"),
        ("::ffff:9.9.9.9", "quad9"),
    ],
)
def test_resolver_addresses_match_by_ip(matcher: Matcher, address: str, vendor: str) -> None:
    match = matcher.match_ip(address)
    assert match is not None, address
    assert match.indicator.vendor.id == vendor
    assert match.indicator.vendor.category == "encrypted-dns"


@pytest.mark.parametrize("address", ["8.8.8.9", "1.1.1.4", "9.9.9.8", "2001:4860:4860::8889"])
def test_neighbouring_addresses_of_resolvers_do_not_match(matcher: Matcher, address: str) -> None:
    assert matcher.match_ip(address) is None


def test_resolver_address_indicators_are_single_hosts_except_documented_ranges(
    encrypted_dns: Blocklist,
) -> None:
    # Control D publishes whole anycast prefixes as DNS-only; everyone else gets /32 or /128
    # so a neighbouring unrelated service is never flagged.
    for ind in encrypted_dns.indicators:
        if ind.kind != "cidr" or ind.vendor.id == "control-d":
            continue
        prefix = int(ind.value.rsplit("/", 1)[1])
        assert prefix in (32, 128), ind.value


def test_cloudflare_ech_public_name_matches_ech_frontend(matcher: Matcher) -> None:
    match = matcher.match_name("cloudflare-ech.com")
    assert match is not None
    assert match.indicator.vendor.category == "ech-frontend"
    assert match.indicator.list_name == "ech-frontends"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cover.defo.ie", True),
        ("public.test.defo.ie", True),
        ("ng-pub.test.defo.ie", True),
        ("public.tls-ech.dev", True),
        ("x.ng-pub.test.defo.ie", False),
        ("test.defo.ie", False),
        ("defo.ie", False),
        ("tls-ech.dev", False),
        ("www.cloudflare-ech.com", False),
    ],
)
def test_ech_test_frontends_match_only_their_public_names(
    matcher: Matcher, name: str, expected: bool
) -> None:
    match = matcher.match_name(name)
    if expected:
        assert match is not None and match.indicator.vendor.category == "ech-frontend", name
    else:
        assert match is None, name


@pytest.mark.parametrize(
    "name",
    [
        "google.com",
        "www.google.com",
        "cloudflare.com",
        "www.cloudflare.com",
        "example.org",
        "quad9.net",
        "www.quad9.net",
        "opendns.com",
        "nextdns.io",
        "my.nextdns.io",
        "controld.com",
        "mullvad.net",
        "notdns.google",
        "dns.google.evil.example",
        "www.dns.google",
    ],
)
def test_ordinary_browsing_of_the_same_operators_matches_nothing(
    matcher: Matcher, name: str
) -> None:
    assert matcher.match_name(name) is None


def test_no_indicator_collides_with_the_face_recognition_list(
    encrypted_dns: Blocklist, ech_frontends: Blocklist
) -> None:
    face = load_blocklist(shipped(FACE_RECOGNITION))
    face_keys = {(i.kind, i.value) for i in face.indicators}
    ours = [*encrypted_dns.indicators, *ech_frontends.indicators]
    assert not face_keys & {(i.kind, i.value) for i in ours}
    assert {v.id for v in face.vendors}.isdisjoint(
        {v.id for v in (*encrypted_dns.vendors, *ech_frontends.vendors)}
    )

    # Beyond identical entries: no name of one side may be covered by the other side's rules,
    # or a blind-spot entry could shadow (or be shadowed by) a vendor detection.
    face_only = Matcher([face])
    blind_only = Matcher([encrypted_dns, ech_frontends])
    for ind in ours:
        if ind.kind in ("host", "domain"):
            assert face_only.match_name(ind.value) is None, ind.value
    for ind in face.indicators:
        if ind.kind in ("host", "domain"):
            assert blind_only.match_name(ind.value) is None, ind.value
            assert blind_only.match_name("www." + ind.value) is None, ind.value
