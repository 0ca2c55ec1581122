"""Alert engine: one alert per (subject, vendor, window), sessions, severity, bounded state."""

from __future__ import annotations

import copy
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.alerts.approvals import parse_approvals
from monitor.alerts.engine import (
    AlertConfig,
    AlertConfigError,
    AlertEngine,
    parse_timestamp_us,
)
from monitor.alerts.schedule import Schedule

T0 = datetime(2026, 1, 15, 10, 0, 0, tzinfo=UTC)  # a Thursday


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def vendor_event(
    at: datetime,
    *,
    user: str | None = "alice",
    workstation: str | None = "ws01.pd.example",
    ip: str = "192.0.2.10",
    vendor: str = "clearview-ai",
    severity: str = "critical",
    protocol: str = "tls",
    evidence: str = "tls-sni",
    action: str = "vendor-access",
    event_id: str = "e0",
) -> dict[str, Any]:
    """A detection as the pipeline emits it (see the event contract)."""
    source: dict[str, Any] = {"ip": ip, "port": 40101}
    if workstation is not None:
        source["domain"] = workstation
    if user is not None:
        source["user"] = {"name": user, "domain": "PD"}
    numbers = {"low": 21, "medium": 47, "high": 73, "critical": 99}
    return {
        "@timestamp": iso(at),
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection", "protocol"],
            "action": action,
            "dataset": "egress_monitor.detection",
            "module": "egress_monitor",
            "id": event_id,
            "severity": numbers[severity],
        },
        "network": {
            "protocol": protocol,
            "transport": "udp" if protocol in ("dns", "quic") else "tcp",
            "type": "ipv4",
        },
        "source": source,
        "destination": {"ip": "198.51.100.3", "port": 53 if protocol == "dns" else 443},
        "url": {"domain": f"app.{vendor}.example"},
        "match": {
            "name": f"app.{vendor}.example",
            "indicator": f"{vendor}.example",
            "indicator_type": "domain",
            "vendor": vendor,
            "vendor_name": vendor.replace("-", " ").title(),
            "category": "face-search",
            "severity": severity,
            "shared": False,
            "list": "face-recognition@2026.11.26",
            "evidence": evidence,
        },
    }


def alerts(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("event", {}).get("kind") == "alert"]


def opened(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d for d in alerts(docs) if d["alert"]["status"] == "open" and d["alert"]["sequence"] == 0
    ]


def closed(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in alerts(docs) if d["alert"]["status"] == "closed"]


def run(engine: AlertEngine, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for event in events:
        out.extend(engine.process(event))
    return out


# -- raising and folding --------------------------------------------------------------------


def test_first_access_alerts_at_once() -> None:
    engine = AlertEngine()
    out = engine.process(vendor_event(T0, event_id="trigger"))
    assert [d["event"]["kind"] for d in out] == ["event", "alert"]
    alert = out[1]
    assert alert["event"]["action"] == "vendor-access-alert"
    assert alert["alert"]["status"] == "open"
    assert alert["alert"]["subject"] == {"type": "user", "id": "alice", "unattributed": False}
    assert alert["alert"]["trigger_event_id"] == "trigger"
    assert alert["@timestamp"] == iso(T0)
    assert alert["event"]["severity"] == 99 and alert["alert"]["severity"] == "critical"
    assert alert["source"]["user"]["name"] == "alice"
    assert alert["match"]["vendor"] == "clearview-ai"
    assert out[0]["event"]["outcome"] == "unsanctioned"


def test_fifty_accesses_in_a_window_give_one_alert_and_one_closing_update_with_count_50() -> None:
    engine = AlertEngine(AlertConfig(window_seconds=3600))
    events = [vendor_event(T0 + timedelta(seconds=i)) for i in range(50)]
    out = run(engine, events)
    out += engine.flush((T0 + timedelta(hours=1)).timestamp())
    assert len(alerts(out)) == 2
    first, last = alerts(out)
    assert first["alert"]["status"] == "open"
    assert last["alert"]["status"] == "closed"
    assert last["event"]["id"] == first["event"]["id"]
    assert last["alert"]["count"] == {"events": 50, "sessions": 1}
    assert last["alert"]["first_seen"] == iso(T0)
    assert last["alert"]["last_seen"] == iso(T0 + timedelta(seconds=49))
    assert last["alert"]["closed_reason"] == "window-ended"
    assert last["alert"]["updated"] == iso(T0 + timedelta(hours=1))
    assert engine.open_windows == 0
    assert engine.close() == []


def test_flush_before_the_window_ends_emits_nothing() -> None:
    engine = AlertEngine(AlertConfig(window_seconds=600))
    engine.process(vendor_event(T0))
    assert engine.flush((T0 + timedelta(seconds=599.999999)).timestamp()) == []
    assert len(engine.flush(T0 + timedelta(seconds=600))) == 1


def test_access_after_the_window_closes_it_and_opens_a_new_alert() -> None:
    engine = AlertEngine(AlertConfig(window_seconds=600))
    first = engine.process(vendor_event(T0))
    out = engine.process(vendor_event(T0 + timedelta(seconds=600)))
    assert [d["alert"]["status"] for d in alerts(out)] == ["closed", "open"]
    assert alerts(out)[0]["event"]["id"] == alerts(first)[0]["event"]["id"]
    assert alerts(out)[1]["event"]["id"] != alerts(first)[0]["event"]["id"]
    assert alerts(out)[1]["alert"]["window"]["start"] == iso(T0 + timedelta(seconds=600))


def test_different_vendors_and_subjects_get_their_own_alerts() -> None:
    engine = AlertEngine()
    out = run(
        engine,
        [
            vendor_event(T0),
            vendor_event(T0, vendor="pimeyes"),
            vendor_event(T0, user="bob"),
            vendor_event(T0 + timedelta(seconds=1)),
        ],
    )
    assert len(opened(out)) == 3


def test_user_names_group_case_insensitively() -> None:
    engine = AlertEngine()
    out = run(engine, [vendor_event(T0, user="Alice"), vendor_event(T0, user="alice")])
    assert len(opened(out)) == 1


def test_closing_updates_do_not_depend_on_flush_cadence() -> None:
    events = [vendor_event(T0 + timedelta(minutes=7 * i), user=f"u{i % 3}") for i in range(40)]

    def with_flushes(every: int) -> list[dict[str, Any]]:
        engine = AlertEngine(AlertConfig(window_seconds=1800))
        out: list[dict[str, Any]] = []
        for i, event in enumerate(events):
            out += engine.process(event)
            if i % every == 0:
                out += engine.flush(parse_timestamp_us(event["@timestamp"]) / 1e6)
        out += engine.flush((T0 + timedelta(days=1)).timestamp())
        return sorted(json.dumps(d, sort_keys=True) for d in alerts(out))

    assert with_flushes(1) == with_flushes(7) == with_flushes(1000)


def test_close_flushes_everything_at_shutdown() -> None:
    engine = AlertEngine()
    run(engine, [vendor_event(T0), vendor_event(T0, user="bob", vendor="pimeyes")])
    out = engine.close()
    assert len(out) == 2
    assert {d["alert"]["closed_reason"] for d in out} == {"shutdown"}
    assert engine.open_windows == 0 and engine.live_sessions == 0
    assert engine.stats.alerts_opened == engine.stats.alerts_closed == 2


# -- sessions ---------------------------------------------------------------------------------


def test_page_visit_dns_then_two_tls_then_quic_within_seconds_is_one_session() -> None:
    engine = AlertEngine()
    visit = [
        vendor_event(T0, protocol="dns", evidence="dns-query"),
        vendor_event(T0 + timedelta(milliseconds=40), protocol="tls"),
        vendor_event(T0 + timedelta(milliseconds=45), protocol="tls"),
        vendor_event(T0 + timedelta(seconds=2), protocol="quic", evidence="quic-sni"),
    ]
    out = run(engine, visit)
    sessions = {d["session"]["id"] for d in out if d["event"]["kind"] == "event"}
    assert len(sessions) == 1
    assert len(opened(out)) == 1
    final = engine.close()[0]
    assert final["alert"]["count"] == {"events": 4, "sessions": 1}


def test_an_idle_gap_longer_than_the_session_gap_starts_a_new_session() -> None:
    engine = AlertEngine(AlertConfig(session_gap_seconds=120))
    out = run(
        engine,
        [
            vendor_event(T0),
            vendor_event(T0 + timedelta(seconds=120)),  # exactly the gap: same session
            vendor_event(T0 + timedelta(seconds=240, microseconds=1)),  # longer: new session
        ],
    )
    ids = [d["session"]["id"] for d in out if d["event"]["kind"] == "event"]
    assert ids[0] == ids[1] != ids[2]
    assert engine.close()[0]["alert"]["count"] == {"events": 3, "sessions": 2}


def test_session_ids_are_stable_and_differ_from_alert_ids() -> None:
    a = run(AlertEngine(), [vendor_event(T0)])
    b = run(AlertEngine(), [vendor_event(T0)])
    assert a[0]["session"]["id"] == b[0]["session"]["id"]
    assert a[0]["session"]["id"] != a[1]["event"]["id"]


def test_sanctioned_accesses_get_session_ids_too() -> None:
    approvals = parse_approvals(
        "approvals:\n- reference: C-1\n  approver: Chief\n  subjects: {users: [alice]}\n"
        "  vendors: '*'\n  valid_from: 2026-01-01\n  valid_until: 2027-01-01\n"
    )
    out = AlertEngine(approvals=approvals).process(vendor_event(T0))
    assert len(out) == 1 and len(out[0]["session"]["id"]) == 32


def test_session_state_is_bounded_and_expires() -> None:
    engine = AlertEngine(AlertConfig(max_sessions=10))
    run(engine, [vendor_event(T0, user=f"user{i}") for i in range(25)])
    assert engine.live_sessions <= 10
    assert engine.sessions_evicted == 15
    engine.flush((T0 + timedelta(seconds=121)).timestamp())
    assert engine.live_sessions == 0


# -- severity -------------------------------------------------------------------------------


def test_repeat_sessions_raise_severity_one_level() -> None:
    engine = AlertEngine(AlertConfig(repeat_sessions=3, session_gap_seconds=120))
    out = run(
        engine,
        [vendor_event(T0 + timedelta(minutes=5 * i), severity="medium") for i in range(4)],
    )
    docs = alerts(out)
    assert [(d["alert"]["status"], d["alert"]["severity"]) for d in docs] == [
        ("open", "medium"),
        ("open", "high"),  # the escalation update, on the third session
    ]
    assert docs[1]["alert"]["severity_raised_by"] == ["repeat-sessions"]
    assert docs[1]["event"]["severity"] == 73
    assert docs[1]["alert"]["sequence"] == 1
    final = engine.close()[0]
    assert final["alert"]["severity"] == "high"
    assert final["alert"]["base_severity"] == "medium"
    assert final["alert"]["count"] == {"events": 4, "sessions": 4}


def test_repeat_accesses_within_one_session_do_not_raise_severity() -> None:
    engine = AlertEngine(AlertConfig(repeat_sessions=2))
    run(engine, [vendor_event(T0 + timedelta(seconds=i), severity="low") for i in range(30)])
    assert engine.close()[0]["alert"]["severity"] == "low"


def test_escalation_updates_can_be_turned_off() -> None:
    engine = AlertEngine(AlertConfig(repeat_sessions=2, escalation_updates=False))
    out = run(engine, [vendor_event(T0 + timedelta(hours=i / 4), severity="low") for i in range(3)])
    assert len(alerts(out)) == 1
    assert engine.close()[0]["alert"]["severity"] == "medium"


def test_severity_is_capped_at_critical() -> None:
    schedule = Schedule.build("UTC", {})  # always out of hours
    engine = AlertEngine(AlertConfig(repeat_sessions=2, schedule=schedule))
    out = run(
        engine, [vendor_event(T0 + timedelta(minutes=10 * i), severity="high") for i in range(3)]
    )
    assert [d["alert"]["severity"] for d in alerts(out)] == ["critical"]
    final = engine.close()[0]
    assert final["alert"]["severity"] == "critical" and final["event"]["severity"] == 99
    assert final["alert"]["severity_raised_by"] == ["repeat-sessions", "out-of-hours"]


BERLIN_OFFICE = Schedule.build(
    "Europe/Berlin",
    {day: ["07:00-19:00"] for day in ("monday", "tuesday", "wednesday", "thursday", "friday")},
    holidays=["2026-04-03"],
)


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        # Spring forward on Sunday 2026-03-29: the same UTC time of day is 06:30 CET on the
        # Friday before (out of hours) but 07:30 CEST on the Monday after (in hours).
        ("2026-03-27T05:30:00Z", "critical"),
        ("2026-03-30T05:30:00Z", "high"),
        # Fall back on Sunday 2026-10-25: 17:30 UTC is 19:30 CEST before, 18:30 CET after.
        ("2026-10-23T17:30:00Z", "critical"),
        ("2026-10-27T17:30:00Z", "high"),
        ("2026-03-28T10:00:00Z", "critical"),  # Saturday
        ("2026-04-03T10:00:00Z", "critical"),  # Good Friday, a listed holiday
    ],
)
def test_out_of_hours_raises_severity_in_the_office_time_zone_across_dst(
    utc: str, expected: str
) -> None:
    engine = AlertEngine(AlertConfig(schedule=BERLIN_OFFICE))
    at = datetime.fromisoformat(utc)
    alert = alerts(engine.process(vendor_event(at, severity="high")))[0]
    assert alert["alert"]["severity"] == expected
    assert ("out-of-hours" in alert["alert"]["severity_raised_by"]) == (expected == "critical")


def test_out_of_hours_access_later_in_the_window_escalates() -> None:
    engine = AlertEngine(AlertConfig(schedule=BERLIN_OFFICE, window_seconds=4 * 3600))
    in_hours = datetime(2026, 1, 15, 17, 0, tzinfo=UTC)  # 18:00 CET
    out = run(
        engine,
        [
            vendor_event(in_hours, severity="low"),
            vendor_event(in_hours + timedelta(hours=2), severity="low"),
        ],
    )
    assert [d["alert"]["severity"] for d in alerts(out)] == ["low", "medium"]


def test_severity_falls_back_to_the_numeric_event_severity() -> None:
    event = vendor_event(T0, severity="high")
    del event["match"]["severity"]
    assert alerts(AlertEngine().process(event))[0]["alert"]["severity"] == "high"


# -- subjects -------------------------------------------------------------------------------


def test_unattributed_events_use_the_ip_subject() -> None:
    engine = AlertEngine()
    out = run(
        engine,
        [
            vendor_event(T0, user=None, workstation=None, ip="2001:db8::0:1"),
            vendor_event(T0, user=None, workstation=None, ip="2001:db8::1"),
        ],
    )
    assert len(opened(out)) == 1
    alert = opened(out)[0]
    assert alert["alert"]["subject"] == {"type": "ip", "id": "2001:db8::1", "unattributed": True}
    assert "unattributed" in alert["event"]["reason"]


def test_the_workstation_is_the_subject_when_no_user_is_known() -> None:
    alert = alerts(
        AlertEngine().process(vendor_event(T0, user=None, workstation="WS01.pd.example."))
    )
    assert alert[0]["alert"]["subject"] == {
        "type": "workstation",
        "id": "ws01.pd.example",
        "unattributed": False,
    }


# -- pass-through, robustness, bounds ---------------------------------------------------------


@pytest.mark.parametrize("action", ["encrypted-dns", "ech-observed"])
def test_blind_spot_events_pass_through_untouched(action: str) -> None:
    event = vendor_event(T0, action=action)
    snapshot = copy.deepcopy(event)
    out = AlertEngine().process(event)
    assert len(out) == 1 and out[0] is event and event == snapshot


def test_the_input_event_is_not_modified() -> None:
    event = vendor_event(T0)
    snapshot = copy.deepcopy(event)
    out = AlertEngine().process(event)
    assert event == snapshot
    assert out[0] is not event


def test_a_vendor_access_without_timestamp_vendor_or_source_passes_through_counted() -> None:
    engine = AlertEngine()
    broken = [vendor_event(T0), vendor_event(T0), vendor_event(T0)]
    broken[0]["@timestamp"] = "yesterday"
    del broken[1]["match"]["vendor"]
    del broken[2]["source"]
    for event in broken:
        assert engine.process(event) == [event]
    assert engine.stats.malformed == 3 and engine.open_windows == 0


def test_open_windows_are_bounded_and_the_oldest_is_closed_early_and_counted() -> None:
    engine = AlertEngine(AlertConfig(max_windows=3))
    out = run(engine, [vendor_event(T0 + timedelta(seconds=i), user=f"u{i}") for i in range(5)])
    assert engine.open_windows == 3
    assert engine.stats.windows_evicted == 2
    evicted = [d for d in closed(out) if d["alert"]["closed_reason"] == "evicted"]
    assert [d["alert"]["subject"]["id"] for d in evicted] == ["u0", "u1"]


def test_same_input_gives_the_same_output() -> None:
    events = [
        vendor_event(T0 + timedelta(seconds=37 * i), user=f"u{i % 4}", vendor=f"v{i % 3}")
        for i in range(60)
    ]

    def once() -> str:
        engine = AlertEngine(AlertConfig(window_seconds=900, schedule=BERLIN_OFFICE))
        out = run(engine, events) + engine.close()
        return json.dumps(out, sort_keys=True)

    assert once() == once()


def test_config_is_read_from_a_mapping_and_rejects_typos() -> None:
    config = AlertConfig.from_mapping(
        {
            "window_seconds": 900,
            "repeat_sessions": 4,
            "schedule": {"timezone": "UTC", "business_hours": {"monday": ["08:00-17:00"]}},
        }
    )
    assert config.window_seconds == 900 and config.repeat_sessions == 4
    assert config.schedule is not None
    with pytest.raises(AlertConfigError, match=r"alerts\.window_second: unknown setting"):
        AlertConfig.from_mapping({"window_second": 900})
    with pytest.raises(AlertConfigError, match=r"alerts\.repeat_sessions"):
        AlertConfig.from_mapping({"repeat_sessions": 1})
    with pytest.raises(AlertConfigError, match=r"alerts\.schedule\.timezone"):
        AlertConfig.from_mapping({"schedule": {"timezone": "Mars/Olympus", "business_hours": {}}})
    with pytest.raises(AlertConfigError, match=r"alerts\.window_seconds: must be a number"):
        AlertConfig.from_mapping({"window_seconds": "1h"})


# -- properties -------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_PATHS = [
    ("@timestamp",),
    ("event",),
    ("event", "action"),
    ("event", "severity"),
    ("event", "id"),
    ("source",),
    ("source", "ip"),
    ("source", "domain"),
    ("source", "user"),
    ("source", "user", "name"),
    ("source", "user", "domain"),
    ("match",),
    ("match", "vendor"),
    ("match", "severity"),
    ("match", "vendor_name"),
    ("url",),
]


@st.composite
def _mutated_event(draw: st.DrawFn) -> Any:
    event = vendor_event(
        T0 + timedelta(seconds=draw(st.integers(0, 20_000))),
        user=draw(st.sampled_from([None, "alice", "bob"])),
        workstation=draw(st.sampled_from([None, "ws01"])),
    )
    for path in draw(st.lists(st.sampled_from(_PATHS), max_size=3)):
        target: Any = event
        for part in path[:-1]:
            target = target.get(part) if isinstance(target, dict) else None
        if isinstance(target, dict):
            if draw(st.booleans()):
                target[path[-1]] = draw(_json)
            else:
                target.pop(path[-1], None)
    return event


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(_mutated_event(), st.dictionaries(st.text(max_size=10), _json, max_size=5)),
        max_size=30,
    ),
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=2e9), max_size=5
    ),
)
def test_random_event_streams_never_raise(events: list[Any], flushes: list[float]) -> None:
    engine = AlertEngine(AlertConfig(window_seconds=600, max_windows=4, schedule=BERLIN_OFFICE))
    for i, event in enumerate(events):
        out = engine.process(event)
        assert out[0] is event or out[0]["event"]["outcome"] in ("sanctioned", "unsanctioned")
        json.dumps(out)
        if i < len(flushes):
            engine.flush(flushes[i])
    engine.close()
    assert engine.open_windows == 0


_APPROVALS = parse_approvals(
    """
groups:
  unit: {users: [carol], workstations: [ws02]}
approvals:
  - reference: A-1
    approver: Chief
    subjects: {users: [alice]}
    vendors: [v0]
    valid_from: "2026-01-15T10:30:00Z"
    valid_until: "2026-01-15T12:00:00Z"
  - reference: A-2
    approver: Chief
    subjects: {groups: [unit]}
    vendors: "*"
    valid_from: "2026-01-15T11:00:00Z"
    valid_until: "2026-01-15T13:00:00Z"
"""
)
_SUBJECTS = [
    {"user": "alice", "workstation": "ws01"},
    {"user": "bob", "workstation": "ws02"},
    {"user": "carol", "workstation": None},
    {"user": None, "workstation": "ws02"},
    {"user": None, "workstation": None, "ip": "192.0.2.7"},
    {"user": None, "workstation": None, "ip": "192.0.2.8"},
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 900),  # seconds since the previous event
            st.integers(0, len(_SUBJECTS) - 1),
            st.sampled_from(["v0", "v1", "v2"]),
            st.booleans(),  # flush after this event
        ),
        max_size=80,
    ),
    st.integers(300, 7200),
)
def test_alerts_never_exceed_subject_vendor_window_combinations(
    steps: list[tuple[int, int, str, bool]], window: int
) -> None:
    engine = AlertEngine(AlertConfig(window_seconds=window), _APPROVALS)
    out: list[dict[str, Any]] = []
    at = T0
    unsanctioned: list[tuple[tuple[str, str], datetime]] = []
    for gap, who, vendor, flush in steps:
        at += timedelta(seconds=gap)
        event = vendor_event(at, vendor=vendor, **_SUBJECTS[who])
        docs = engine.process(event)
        out += docs
        annotated = docs[0]
        if annotated["event"]["outcome"] == "unsanctioned":
            subject = (
                annotated["source"].get("user", {}).get("name")
                or annotated["source"].get("domain")
                or annotated["source"]["ip"]
            )
            unsanctioned.append(((subject, vendor), at))
        else:
            assert len(docs) == 1 and annotated["approval"]["reference"] in ("A-1", "A-2")
        if flush:
            out += engine.flush(at)
    out += engine.close()

    # Reference model: per (subject, vendor), a window opens on the first access not inside
    # the previous window.
    window_start: dict[tuple[str, str], datetime] = {}
    expected = 0
    for key, moment in unsanctioned:
        start = window_start.get(key)
        if start is None or moment >= start + timedelta(seconds=window):
            window_start[key] = moment
            expected += 1
    assert len(opened(out)) == expected <= len(unsanctioned)
    closes = Counter(d["event"]["id"] for d in closed(out))
    assert set(closes) == {d["event"]["id"] for d in opened(out)}
    assert set(closes.values()) <= {1}
    assert sum(d["alert"]["count"]["events"] for d in closed(out)) == len(unsanctioned)
