"""Approvals: sanctioned use is recorded with its reference; anything outside it alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.alerts.approvals import (
    Approvals,
    ApprovalsError,
    load_approvals,
    parse_approvals,
)
from monitor.alerts.engine import AlertEngine

APPROVALS = """\
groups:
  homicide:
    users: [carol, 'PD\\dave']
    workstations: [forensic01.pd.example]
approvals:
  - reference: CASE-2026-0042
    approver: Chief Inspector Example
    subjects:
      users: [alice]
    vendors: [pimeyes, facecheck-id]
    valid_from: "2026-03-01T09:00:00Z"
    valid_until: "2026-03-31T17:00:00+00:00"
  - reference: CASE-2026-0077
    approver: Superintendent Example
    subjects:
      groups: [homicide]
    vendors: "*"
    valid_from: 2026-02-01
    valid_until: 2026-03-01
  - reference: TERMINAL-1
    approver: Data Protection Officer
    subjects:
      workstations: [ws-osint.pd.example]
    vendors: ["*"]
    valid_from: 2026-01-01T00:00:00Z
    valid_until: 2027-01-01T00:00:00Z
    note: the OSINT terminal in room 101
"""


def vendor_event(
    at: datetime,
    *,
    user: str | None = "alice",
    user_domain: str = "PD",
    workstation: str | None = "ws01.pd.example",
    vendor: str = "pimeyes",
) -> dict[str, Any]:
    source: dict[str, Any] = {"ip": "192.0.2.10", "port": 40101}
    if workstation is not None:
        source["domain"] = workstation
    if user is not None:
        source["user"] = {"name": user, "domain": user_domain}
    return {
        "@timestamp": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event": {"kind": "event", "action": "vendor-access", "id": "x", "severity": 73},
        "source": source,
        "destination": {"ip": "198.51.100.3", "port": 443},
        "match": {"vendor": vendor, "vendor_name": vendor, "severity": "high"},
    }


def outcome(event: dict[str, Any], approvals: str = APPROVALS) -> tuple[str, str | None, int]:
    """(event.outcome, approval reference, number of alert documents)."""
    out = AlertEngine(approvals=parse_approvals(approvals, "approvals.yaml")).process(event)
    annotated = out[0]
    reference = annotated.get("approval", {}).get("reference")
    return annotated["event"]["outcome"], reference, len(out) - 1


VALID_FROM = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
VALID_UNTIL = datetime(2026, 3, 31, 17, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("at", "sanctioned"),
    [
        (VALID_FROM - US, False),
        (VALID_FROM, True),  # valid_from is inclusive
        (VALID_UNTIL - US, True),
        (VALID_UNTIL, False),  # valid_until is exclusive
    ],
    ids=["before-valid-from", "at-valid-from", "just-before-valid-until", "at-valid-until"],
)
def test_approvals_at_their_exact_boundaries(at: datetime, sanctioned: bool) -> None:
    result = outcome(vendor_event(at))
    if sanctioned:
        assert result == ("sanctioned", "CASE-2026-0042", 0)
    else:
        assert result == ("unsanctioned", None, 1)


def test_a_sanctioned_access_carries_reference_and_approver_and_raises_no_alert() -> None:
    out = AlertEngine(approvals=parse_approvals(APPROVALS)).process(
        vendor_event(VALID_FROM + timedelta(days=1))
    )
    assert len(out) == 1
    assert out[0]["event"]["outcome"] == "sanctioned"
    assert out[0]["approval"] == {
        "reference": "CASE-2026-0042",
        "approver": "Chief Inspector Example",
    }


def test_an_expired_approval_raises_an_alert_that_names_it() -> None:
    engine = AlertEngine(approvals=parse_approvals(APPROVALS))
    out = engine.process(vendor_event(VALID_UNTIL + timedelta(days=2)))
    assert out[0]["event"]["outcome"] == "unsanctioned"
    assert "approval" not in out[0]
    alert = out[1]
    assert alert["event"]["kind"] == "alert"
    assert alert["alert"]["related_approvals"] == [
        {
            "reference": "CASE-2026-0042",
            "approver": "Chief Inspector Example",
            "valid_from": "2026-03-01T09:00:00.000000Z",
            "valid_until": "2026-03-31T17:00:00.000000Z",
        }
    ]


def test_another_vendor_than_approved_raises_an_alert() -> None:
    assert outcome(vendor_event(VALID_FROM, vendor="clearview-ai")) == ("unsanctioned", None, 1)


def test_another_subject_than_approved_raises_an_alert() -> None:
    assert outcome(vendor_event(VALID_FROM, user="mallory")) == ("unsanctioned", None, 1)


def test_user_names_match_case_insensitively() -> None:
    assert outcome(vendor_event(VALID_FROM, user="ALICE"))[0] == "sanctioned"


def test_group_membership_sanctions_users_and_workstations_of_the_group() -> None:
    feb = datetime(2026, 2, 10, 12, tzinfo=UTC)
    assert outcome(vendor_event(feb, user="carol", vendor="clearview-ai"))[:2] == (
        "sanctioned",
        "CASE-2026-0077",
    )
    assert outcome(vendor_event(feb, user=None, workstation="forensic01.pd.example"))[:2] == (
        "sanctioned",
        "CASE-2026-0077",
    )
    assert outcome(vendor_event(feb, user="erin"))[0] == "unsanctioned"


def test_a_domain_qualified_approval_user_matches_only_that_domain() -> None:
    feb = datetime(2026, 2, 10, 12, tzinfo=UTC)
    assert outcome(vendor_event(feb, user="dave", user_domain="pd"))[0] == "sanctioned"
    assert outcome(vendor_event(feb, user="dave", user_domain="OTHER"))[0] == "unsanctioned"


def test_wildcard_vendors_cover_every_vendor() -> None:
    june = datetime(2026, 6, 1, 3, tzinfo=UTC)
    for vendor in ("clearview-ai", "pimeyes", "anything-new"):
        event = vendor_event(june, user="bob", workstation="ws-osint.pd.example", vendor=vendor)
        assert outcome(event)[:2] == ("sanctioned", "TERMINAL-1")


def test_a_workstation_approval_covers_whoever_uses_it() -> None:
    june = datetime(2026, 6, 1, 3, tzinfo=UTC)
    event = vendor_event(june, user="someone", workstation="WS-OSINT.pd.example.")
    assert outcome(event)[0] == "sanctioned"


def test_unattributed_access_is_never_sanctioned() -> None:
    june = datetime(2026, 6, 1, 3, tzinfo=UTC)
    assert outcome(vendor_event(june, user=None, workstation=None)) == ("unsanctioned", None, 1)


def test_a_date_means_midnight_in_the_files_time_zone() -> None:
    text = APPROVALS.replace("groups:\n", "timezone: Europe/Berlin\ngroups:\n", 1)
    approvals = parse_approvals(text)
    case = next(a for a in approvals.entries if a.reference == "CASE-2026-0077")
    berlin_midnight = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    assert case.valid_from_us == int(berlin_midnight.timestamp()) * 1_000_000
    utc_case = next(a for a in parse_approvals(APPROVALS).entries if a.reference == case.reference)
    assert utc_case.valid_from_us - case.valid_from_us == 3600 * 1_000_000


def test_an_empty_approvals_list_is_allowed() -> None:
    assert len(parse_approvals("approvals: []\n")) == 0


# -- loader errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "the file is empty"),
        ("approvals:\n  - reference: [\n", 2, "YAML syntax error"),
        (
            "approval: []\n",
            1,
            "unknown key 'approval' in the approvals file; did you mean 'approvals'?",
        ),
        (
            "approvals:\n- reference: A\n  approver: B\n  subjects: {users: [x]}\n"
            "  vendors: *\n  valid_from: 2026-01-01\n  valid_until: 2026-02-01\n",
            5,
            'e.g. vendors: "*"',
        ),
        (
            "approvals:\n- reference: A\n  approver: B\n  subjects: {groups: [homicde]}\n"
            "  vendors: '*'\n  valid_from: 2026-01-01\n  valid_until: 2026-02-01\n",
            4,
            "group 'homicde' is not defined",
        ),
        (
            "approvals:\n- reference: A\n  approver: B\n  subjects: {users: [x]}\n"
            "  vendors: '*'\n  valid_from: 2026-01-01T10:00:00\n  valid_until: 2026-02-01\n",
            6,
            "needs a UTC offset",
        ),
        (
            "approvals:\n- reference: A\n  approver: B\n  subjects: {users: [x]}\n"
            "  vendors: '*'\n  valid_from: 2026-02-01\n  valid_until: 2026-02-01\n",
            7,
            "valid_until must be after valid_from",
        ),
        (
            "approvals:\n- reference: A\n  approver: B\n  subjects: {users: [x]}\n"
            "  vendors: '*'\n  valid_from: 2026-01-01\n  valid_until: 2026-02-01\n"
            "- reference: A\n  approver: B\n  subjects: {users: [x]}\n"
            "  vendors: '*'\n  valid_from: 2026-01-01\n  valid_until: 2026-02-01\n",
            8,
            "duplicate reference 'A' (first on line 2)",
        ),
        (
            "approvals:\n- reference: A\n  approver: B\n  subjects: {}\n"
            "  vendors: '*'\n  valid_from: 2026-01-01\n  valid_until: 2026-02-01\n",
            4,
            "subjects needs at least one",
        ),
        (
            "approvals:\n- reference: A\n  approver: B\n  subjects: {users: [x]}\n"
            "  vendors: [Clearview AI]\n  valid_from: 2026-01-01\n  valid_until: 2026-02-01\n",
            5,
            "must match",
        ),
        (
            "approvals:\n- reference: A\n  approver: B\n  subjects: {users: [x]}\n"
            "  vendors: '*'\n  valid_from: next monday\n  valid_until: 2026-02-01\n",
            6,
            "is not a date",
        ),
        (
            "approvals:\n- reference: A\n  subjects: {users: [x]}\n"
            "  vendors: '*'\n  valid_from: 2026-01-01\n  valid_until: 2026-02-01\n",
            2,
            "missing required key 'approver'",
        ),
    ],
)
def test_loader_errors_name_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ApprovalsError) as info:
        parse_approvals(text, "approvals.yaml")
    assert info.value.file == "approvals.yaml"
    assert info.value.line == line, str(info.value)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"approvals.yaml:{line}: ")


def test_unknown_vendor_ids_are_errors_when_the_blocklist_vendors_are_given() -> None:
    text = (
        "approvals:\n- reference: A\n  approver: B\n  subjects: {users: [x]}\n"
        "  vendors: [pimeye]\n  valid_from: 2026-01-01\n  valid_until: 2026-02-01\n"
    )
    assert len(parse_approvals(text)) == 1
    with pytest.raises(ApprovalsError, match=r":5: vendor 'pimeye'.*did you mean 'pimeyes'"):
        parse_approvals(text, known_vendors={"pimeyes", "clearview-ai"})


def test_reload_keeps_the_last_good_version(tmp_path: Path) -> None:
    path = tmp_path / "approvals.yaml"
    path.write_text(APPROVALS)
    good = load_approvals(path)
    engine = AlertEngine(approvals=good)
    path.write_text(APPROVALS.replace("valid_until: 2026-03-01", "valid_until: never"))
    with pytest.raises(ApprovalsError, match=r"approvals\.yaml:\d+: valid_until"):
        engine.approvals = load_approvals(path)
    assert engine.approvals is good
    assert engine.process(vendor_event(VALID_FROM))[0]["event"]["outcome"] == "sanctioned"
    assert good.digest and good.path == str(path)


def test_a_missing_file_is_an_approvals_error(tmp_path: Path) -> None:
    with pytest.raises(ApprovalsError, match="cannot read"):
        load_approvals(tmp_path / "nope.yaml")


def test_an_approval_granted_later_does_not_unsend_an_open_alert() -> None:
    engine = AlertEngine(approvals=Approvals.empty())
    assert len(engine.process(vendor_event(VALID_FROM))) == 2
    engine.approvals = parse_approvals(APPROVALS)
    out = engine.process(vendor_event(VALID_FROM + timedelta(seconds=1)))
    assert out[0]["event"]["outcome"] == "sanctioned" and len(out) == 1
    assert engine.open_windows == 1


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.builds(
            lambda cut, junk: APPROVALS[:cut] + junk + APPROVALS[cut:],
            st.integers(0, len(APPROVALS)),
            st.text(max_size=8),
        ),
        st.builds(
            lambda cut, end: APPROVALS[:cut] + APPROVALS[end:],
            st.integers(0, len(APPROVALS)),
            st.integers(0, len(APPROVALS)),
        ),
    )
)
def test_random_and_mutated_files_raise_only_approvals_errors(text: str) -> None:
    try:
        parse_approvals(text, "fuzz.yaml")
    except ApprovalsError as exc:
        assert str(exc).startswith("fuzz.yaml")
