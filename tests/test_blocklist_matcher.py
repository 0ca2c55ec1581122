"""Matching semantics: label boundaries, wildcards, precedence, CIDR longest prefix."""

from __future__ import annotations

import fnmatch
import ipaddress
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.blocklist.loader import (
    check_cidr,
    check_host_name,
    check_wildcard,
    load_blocklist,
    load_blocklists,
)
from monitor.blocklist.matcher import Matcher
from monitor.blocklist.model import SEVERITY_NUMBERS, Blocklist, Indicator, Vendor

_CHECKS = {
    "domain": check_host_name,
    "host": check_host_name,
    "wildcard": check_wildcard,
    "cidr": check_cidr,
}


def _vendor(vendor_id: str, severity: str = "high") -> Vendor:
    return Vendor(vendor_id, vendor_id.title(), "face-search", severity, ("https://x.test/",), None)


def build(*entries: tuple[str, str, str], name: str = "test") -> Matcher:
    """Matcher from (kind, raw value, vendor id) triples, validated like the loader does."""
    vendors: dict[str, Vendor] = {}
    indicators = []
    for line, (kind, raw, vendor_id) in enumerate(entries, start=1):
        value, problem = _CHECKS[kind](raw)
        assert problem is None, problem
        assert value is not None
        vendor = vendors.setdefault(vendor_id, _vendor(vendor_id))
        indicators.append(
            Indicator(kind, value, vendor, vendor.severity, False, None, name, "1", "t.yaml", line)
        )
    return Matcher(
        [Blocklist(name, "1", None, tuple(vendors.values()), tuple(indicators), "t.yaml")]
    )


def hit(matcher: Matcher, name: str | bytes) -> str | None:
    """ "kind value" of the winning indicator, so assertions read like the list."""
    match = matcher.match_name(name)
    return None if match is None else f"{match.indicator.kind} {match.indicator.value}"


# -- label boundaries, case, trailing dot -------------------------------------------------

CLEARVIEW = build(("domain", "clearview.ai", "clearview"))


@pytest.mark.parametrize(
    "name",
    ["clearview.ai", "api.clearview.ai", "a.b.c.clearview.ai", "API.ClearView.AI", "clearview.ai."],
)
def test_domain_matches_itself_and_every_subdomain(name: str):
    assert hit(CLEARVIEW, name) == "domain clearview.ai"


@pytest.mark.parametrize(
    "name",
    [
        "notclearview.ai",
        "clearview.ai.example.net",
        "clearview.aix",
        "clearview",
        "ai",
        "clearview-ai.com",
        "clearview.ai..",
        "",
        ".clearview.ai",
    ],
)
def test_domain_does_not_match_across_label_boundaries(name: str):
    assert CLEARVIEW.match_name(name) is None


def test_match_reports_the_normalised_observed_name():
    match = CLEARVIEW.match_name(b"API.Clearview.AI.")
    assert match is not None
    assert match.name == "api.clearview.ai"


def test_indicator_written_in_mixed_case_matches_lower_case_traffic(tmp_path: Path):
    path = _write_list(tmp_path, "- domain: ClearView.AI.\n")
    matcher = load_blocklists([path])
    assert hit(matcher, "www.clearview.ai") == "domain clearview.ai"


# -- IDNA -----------------------------------------------------------------------------------


def test_unicode_indicator_matches_punycode_on_the_wire():
    matcher = build(("domain", "bücher.example", "books"))
    assert hit(matcher, "xn--bcher-kva.example") == "domain xn--bcher-kva.example"
    assert hit(matcher, b"WWW.XN--BCHER-KVA.EXAMPLE.") == "domain xn--bcher-kva.example"
    assert hit(matcher, "shop.Bücher.example") == "domain xn--bcher-kva.example"
    assert matcher.match_name("bucher.example") is None


def test_punycode_indicator_matches_unicode_observed_name():
    matcher = build(("host", "xn--bcher-kva.example", "books"))
    assert hit(matcher, "BÜCHER.example") == "host xn--bcher-kva.example"


# -- wildcards and hosts --------------------------------------------------------------------

STAR = build(("wildcard", "*.cdn.example.com", "cdn"))


@pytest.mark.parametrize(
    "name", ["a.cdn.example.com", "a.b.cdn.example.com", "x.y.z.cdn.example.com"]
)
def test_whole_label_star_matches_one_or_more_labels(name: str):
    assert hit(STAR, name) == "wildcard *.cdn.example.com"


@pytest.mark.parametrize("name", ["cdn.example.com", "xcdn.example.com", "a.cdn.example.org"])
def test_whole_label_star_needs_a_label_in_front_of_its_suffix(name: str):
    assert STAR.match_name(name) is None


GLOB = build(("wildcard", "face-*.example.com", "glob"))


@pytest.mark.parametrize("name", ["face-1.example.com", "FACE-eu-west.example.com."])
def test_label_glob_matches_within_one_label(name: str):
    assert hit(GLOB, name) == "wildcard face-*.example.com"


@pytest.mark.parametrize(
    "name",
    [
        "x.face-1.example.com",  # the glob covers exactly one label, not its subdomains
        "face.example.com",
        "surface-1.example.com",
        "example.com",
        "face-1.other.example.com",
    ],
)
def test_label_glob_does_not_reach_other_labels(name: str):
    assert GLOB.match_name(name) is None


HOST = build(("host", "api.example.com", "api"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("api.example.com", "host api.example.com"),
        ("API.example.com.", "host api.example.com"),
        ("v2.api.example.com", None),
        ("example.com", None),
        ("xapi.example.com", None),
    ],
)
def test_host_matches_exactly_that_name(name: str, expected: str | None):
    assert hit(HOST, name) == expected


# -- precedence -------------------------------------------------------------------------------


def test_host_beats_domain_of_the_same_name_but_covers_no_subdomains():
    matcher = build(("domain", "example.com", "broad"), ("host", "example.com", "exact"))
    assert hit(matcher, "example.com") == "host example.com"
    assert hit(matcher, "www.example.com") == "domain example.com"


def test_longer_domain_beats_shorter_domain():
    matcher = build(("domain", "example.com", "broad"), ("domain", "api.example.com", "narrow"))
    assert hit(matcher, "v1.api.example.com") == "domain api.example.com"
    assert hit(matcher, "www.example.com") == "domain example.com"


def test_host_inside_a_domain_wins_for_its_exact_name_only():
    matcher = build(("domain", "example.com", "broad"), ("host", "api.example.com", "exact"))
    assert hit(matcher, "api.example.com") == "host api.example.com"
    assert hit(matcher, "v2.api.example.com") == "domain example.com"


def test_wildcard_beats_domain_at_the_same_suffix():
    matcher = build(("domain", "example.com", "broad"), ("wildcard", "*.example.com", "star"))
    assert hit(matcher, "www.example.com") == "wildcard *.example.com"
    assert hit(matcher, "example.com") == "domain example.com"


def test_longer_domain_beats_wildcard_anchored_higher_up():
    matcher = build(("wildcard", "*.example.com", "star"), ("domain", "api.example.com", "api"))
    assert hit(matcher, "v1.api.example.com") == "domain api.example.com"
    assert hit(matcher, "www.example.com") == "wildcard *.example.com"


def test_label_glob_beats_whole_label_star_and_more_literal_glob_wins():
    matcher = build(
        ("wildcard", "*.example.com", "star"),
        ("wildcard", "face-*.example.com", "face"),
        ("wildcard", "face-eu-*.example.com", "face-eu"),
    )
    assert hit(matcher, "face-eu-1.example.com") == "wildcard face-eu-*.example.com"
    assert hit(matcher, "face-us-1.example.com") == "wildcard face-*.example.com"
    assert hit(matcher, "other.example.com") == "wildcard *.example.com"
    assert hit(matcher, "x.face-1.example.com") == "wildcard *.example.com"


def test_host_beats_wildcard_covering_it():
    matcher = build(("wildcard", "*.example.com", "star"), ("host", "api.example.com", "exact"))
    assert hit(matcher, "api.example.com") == "host api.example.com"


# -- CIDR ---------------------------------------------------------------------------------------

NETS = build(
    ("cidr", "10.0.0.0/8", "wide"),
    ("cidr", "10.1.0.0/16", "mid"),
    ("cidr", "10.1.2.3", "one"),
    ("cidr", "2001:db8::/32", "v6wide"),
    ("cidr", "2001:db8:1::/48", "v6narrow"),
)


def _net(ip: object) -> str | None:
    match = NETS.match_ip(ip)  # type: ignore[arg-type]
    return None if match is None else match.indicator.value


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("10.1.2.3", "10.1.2.3/32"),
        ("10.1.9.9", "10.1.0.0/16"),
        ("10.9.9.9", "10.0.0.0/8"),
        ("11.0.0.1", None),
        (ipaddress.IPv4Address("10.1.2.3"), "10.1.2.3/32"),
        ("2001:db8:1::5", "2001:db8:1::/48"),
        ("2001:db8:2::5", "2001:db8::/32"),
        (ipaddress.IPv6Address("2001:db8:1:ffff::1"), "2001:db8:1::/48"),
        ("2001:db9::1", None),
        ("::ffff:10.1.2.3", "10.1.2.3/32"),  # IPv4 peer on a dual-stack socket
        ("2001:DB8:1:0:0:0:0:5", "2001:db8:1::/48"),
        ("2001:db8:1::5%eth0", "2001:db8:1::/48"),
    ],
)
def test_cidr_lookup_picks_the_longest_prefix(ip: object, expected: str | None):
    assert _net(ip) == expected


@pytest.mark.parametrize(
    "ip",
    [
        "",
        "10.1.2",
        "010.1.2.3",
        "10.1.2.3 ",
        "not an ip",
        "\ud800",
        "1::2::3",
        "%",
        "10.1.2.3%x",
        None,
    ],
)
def test_match_ip_returns_none_for_non_addresses(ip: object):
    assert _net(ip) is None


def test_match_ip_reports_the_canonical_address_text():
    match = NETS.match_ip("2001:DB8:1:0:0:0:0:5")
    assert match is not None
    assert match.name == "2001:db8:1::5"


def test_cidr_indicators_never_match_names():
    assert NETS.match_name("10.1.2.3") is None


# -- severity, shared, multiple lists ------------------------------------------------------------


def _write_list(tmp_path: Path, indicators: str, name: str = "test", file: str = "t.yaml") -> Path:
    text = textwrap.dedent(
        f"""\
        list: {name}
        version: "2026.01.01"
        vendors:
          - id: acme
            name: Acme
            category: face-search
            severity: high
            references: ["https://acme.example/"]
            indicators:
        """
    ) + textwrap.indent(indicators, "      ")
    path = tmp_path / file
    path.write_text(text, encoding="utf-8")
    return path


def test_shared_indicator_carries_its_own_lower_severity(tmp_path: Path):
    path = _write_list(
        tmp_path,
        "- domain: acme.example\n"
        "- host: api.cloud.example\n"
        "  shared: true\n"
        "  severity: low\n"
        "  note: generic cloud endpoint\n",
    )
    blocklist = load_blocklist(path)
    own, shared = blocklist.indicators
    assert (own.severity, own.shared, own.note) == ("high", False, None)
    assert (shared.severity, shared.shared, shared.note) == ("low", True, "generic cloud endpoint")
    assert shared.vendor.severity == "high"
    assert SEVERITY_NUMBERS[shared.severity] == 21
    assert SEVERITY_NUMBERS[own.severity] == 73
    matcher = Matcher([blocklist])
    match = matcher.match_name("api.cloud.example")
    assert match is not None
    assert match.indicator.severity == "low"


def test_severity_numbers_rise_with_the_level():
    assert list(SEVERITY_NUMBERS) == ["low", "medium", "high", "critical"]
    assert dict(SEVERITY_NUMBERS) == {"low": 21, "medium": 47, "high": 73, "critical": 99}


def test_indicator_in_two_lists_is_taken_from_the_first_and_warned_about(tmp_path: Path):
    first = _write_list(tmp_path, "- domain: acme.example\n", name="one", file="one.yaml")
    second = _write_list(
        tmp_path, "- domain: acme.example\n- domain: other.example\n", name="two", file="two.yaml"
    )
    matcher = load_blocklists([first, second])
    match = matcher.match_name("www.acme.example")
    assert match is not None
    assert match.indicator.list_name == "one"
    assert matcher.indicator_count == 2
    assert len(matcher.warnings) == 1
    assert matcher.warnings[0].startswith(f"{second}:10: warning: domain acme.example")
    assert "one" in matcher.warnings[0]


def test_matcher_exposes_lists_vendors_and_counts(tmp_path: Path):
    path = _write_list(tmp_path, "- domain: acme.example\n- cidr: 192.0.2.0/24\n")
    matcher = load_blocklists([path])
    assert [b.name for b in matcher.lists] == ["test"]
    assert set(matcher.vendors) == {"acme"}
    assert matcher.indicator_count == 2
    assert matcher.warnings == []


def test_duplicate_list_names_are_rejected_when_building_a_matcher():
    blocklist = Blocklist("same", "1", None, (), (), "a.yaml")
    with pytest.raises(ValueError, match="already used"):
        Matcher([blocklist, Blocklist("same", "2", None, (), (), "b.yaml")])


# -- properties ----------------------------------------------------------------------------------

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_ALL_KINDS = build(
    ("domain", "clearview.ai", "clearview"),
    ("host", "api.example.com", "api"),
    ("wildcard", "*.cdn.example.com", "cdn"),
    ("wildcard", "face-*.example.com", "face"),
    ("domain", "bücher.example", "books"),
    ("cidr", "10.0.0.0/8", "net"),
)


@given(st.text(max_size=300))
def test_random_text_never_raises_in_match_name(name: str):
    _ALL_KINDS.match_name(name)


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_in_match_name(name: bytes):
    _ALL_KINDS.match_name(name)


@given(st.text(max_size=60))
def test_random_text_never_raises_in_match_ip(ip: str):
    _ALL_KINDS.match_ip(ip)


@given(
    labels=st.lists(_LABEL, min_size=0, max_size=6),
    upper=st.booleans(),
    trailing_dot=st.booleans(),
)
def test_any_name_under_a_domain_indicator_matches_it(
    labels: list[str], upper: bool, trailing_dot: bool
):
    name = ".".join([*labels, "clearview.ai"])
    if upper:
        name = name.upper()
    if trailing_dot:
        name += "."
    match = CLEARVIEW.match_name(name)
    assert match is not None
    assert match.indicator.value == "clearview.ai"


# Characters UTS #46 treats as dots legitimately start a new label; leave them out.
_NOT_A_DOT = st.text(min_size=1, max_size=40).filter(lambda s: s[-1] not in ".\u3002\uff0e\uff61")


@given(prefix=_NOT_A_DOT)
def test_name_merely_ending_with_the_domain_string_never_matches(prefix: str):
    assert CLEARVIEW.match_name(prefix + "clearview.ai") is None


@given(labels=st.lists(_LABEL, min_size=1, max_size=6))
def test_any_name_under_a_star_wildcard_matches_it(labels: list[str]):
    assert hit(STAR, ".".join([*labels, "cdn.example.com"])) == "wildcard *.cdn.example.com"


# Differential test: a deliberately naive scan encoding the documented precedence rules.

_POOL_LABELS = ["a", "b", "ab", "face-1", "face-x", "x"]
_POOL = (
    [("domain", f"{label}.example.com") for label in _POOL_LABELS]
    + [("domain", f"{label}.a.example.com") for label in _POOL_LABELS]
    + [("domain", "example.com")]
    + [("host", f"{label}.example.com") for label in _POOL_LABELS]
    + [("host", f"{label}.a.example.com") for label in _POOL_LABELS]
    + [
        ("wildcard", f"*.{suffix}")
        for suffix in ("example.com", "a.example.com", "b.a.example.com")
    ]
    + [
        ("wildcard", f"{glob}.{suffix}")
        for glob in ("face-*", "*b", "a*", "face-x*")
        for suffix in ("example.com", "a.example.com")
    ]
)


def _reference(indicators: list[tuple[str, str]], name: str) -> tuple[str, str] | None:
    best: tuple[tuple[int, int, int], int] | None = None
    for order, (kind, value) in enumerate(indicators):
        key: tuple[int, int, int] | None = None
        if kind == "host" and name == value:
            key = (value.count(".") + 1, 3, 0)
        elif kind == "domain" and (name == value or name.endswith("." + value)):
            key = (value.count(".") + 1, 1, 0)
        elif kind == "wildcard":
            glob, _, suffix = value.partition(".")
            if name.endswith("." + suffix):
                label = name[: -len(suffix) - 1]
                if glob == "*":
                    key = (suffix.count(".") + 1, 2, 0)
                elif "." not in label and fnmatch.fnmatchcase(label, glob):
                    key = (suffix.count(".") + 1, 2, 1 + len(glob) - glob.count("*"))
        if key is not None and (best is None or key > best[0]):
            best = (key, order)
    return None if best is None else indicators[best[1]]


@settings(max_examples=500)
@given(
    indicators=st.lists(st.sampled_from(_POOL), min_size=1, max_size=20, unique=True),
    labels=st.lists(st.sampled_from([*_POOL_LABELS, "example"]), min_size=0, max_size=3),
)
def test_matcher_agrees_with_a_naive_scan_of_the_precedence_rules(
    indicators: list[tuple[str, str]], labels: list[str]
):
    matcher = build(*[(kind, value, "v") for kind, value in indicators])
    name = ".".join([*labels, "example.com"])
    expected = _reference(indicators, name)
    assert hit(matcher, name) == (None if expected is None else f"{expected[0]} {expected[1]}")
