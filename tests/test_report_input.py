"""Audit report: what is read, what counts, and how hostile or broken input is handled."""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from monitor.alerts.report import (
    InputStats,
    build_report,
    event_files,
    parse_when,
    read_documents,
    render_csv,
    render_json,
    render_table,
    report_from_paths,
)
from monitor.alerts.report_html import render_html
from monitor.cli import report_cmd

T0 = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(
    at: datetime,
    event_id: str,
    *,
    user: str | None = "alice",
    workstation: str | None = "ws01.pd.example",
    ip: str = "192.0.2.10",
    vendor: str = "clearview-ai",
    outcome: str | None = None,
    session: str | None = None,
    action: str = "vendor-access",
    kind: str = "event",
) -> dict[str, Any]:
    source: dict[str, Any] = {"ip": ip, "port": 40000}
    if workstation:
        source["domain"] = workstation
    if user:
        source["user"] = {"name": user, "domain": "PD"}
    doc: dict[str, Any] = {
        "@timestamp": iso(at),
        "event": {"kind": kind, "action": action, "id": event_id, "severity": 99},
        "source": source,
        "match": {"vendor": vendor, "vendor_name": vendor.title(), "severity": "critical"},
    }
    if outcome:
        doc["event"]["outcome"] = outcome
    if session:
        doc["session"] = {"id": session}
    return doc


def lines(docs: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(d) + "\n" for d in docs)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="egress-monitor")
    report_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- files ---------------------------------------------------------------------------------


def test_directories_are_walked_for_current_rotated_and_gzipped_event_files(
    tmp_path: Path,
) -> None:
    names = [
        "events.jsonl",
        "events.jsonl.1",
        "events.jsonl.2.gz",
        "old/alerts.ndjson-20260101.gz",
        "sensor.log",
        "x.json",
    ]
    ignored = ["README.md", "evidence/abc.pcapng", "events.jsonl.tmp", "notes.txt"]
    for name in names + ignored:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in event_files([tmp_path])]
    assert sorted(found) == sorted(names)


def test_gzip_is_recognised_by_content_and_a_truncated_one_keeps_what_it_holds(
    tmp_path: Path,
) -> None:
    docs = [event(T0 + timedelta(hours=i), f"e{i}") for i in range(50)]
    blob = gzip.compress(lines(docs).encode())
    (tmp_path / "rotated-without-suffix").write_bytes(blob)
    (tmp_path / "cut.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    stats = InputStats()
    whole = list(read_documents([tmp_path / "rotated-without-suffix"], stats))
    assert len(whole) == 50
    stats = InputStats()
    partial = list(read_documents([tmp_path / "cut.jsonl.gz"], stats))
    assert 0 < len(partial) < 50
    assert any("cut.jsonl.gz" in w for w in stats.warnings)


def test_malformed_and_half_written_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    good = [event(T0, "e1"), event(T0 + timedelta(hours=1), "e2")]
    text = lines(good[:1]) + "not json\n[1, 2]\n\n" + lines(good[1:]) + '{"event": {"ki'
    path = tmp_path / "events.jsonl"
    path.write_text(text, "utf-8")
    rep = report_from_paths([path])
    assert rep.totals.events == 2
    assert rep.input.malformed == 3
    assert any("events.jsonl:2" in w for w in rep.input.warnings)


def test_an_overlong_line_is_skipped_and_the_next_one_read(tmp_path: Path) -> None:
    from monitor.alerts import report

    path = tmp_path / "events.jsonl"
    path.write_text('{"x": "' + "a" * (report.MAX_LINE + 10) + '"}\n' + lines([event(T0, "e")]))
    rep = report_from_paths([path])
    assert rep.input.malformed == 1
    assert rep.totals.events == 1


def test_a_missing_input_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["report", str(tmp_path / "nope.jsonl")], capsys)
    assert code == 2
    assert "nope.jsonl" in err


# -- what counts ---------------------------------------------------------------------------


def test_only_vendor_access_events_count_and_alerts_are_listed() -> None:
    docs = [
        event(T0, "e1", outcome="unsanctioned"),
        event(T0, "b1", action="encrypted-dns"),
        event(T0, "b2", action="ech-observed"),
        {
            "@timestamp": iso(T0),
            "event": {"kind": "alert", "id": "a1", "reason": "x"},
            "alert": {"status": "open", "sequence": 0, "count": {"events": 1, "sessions": 1}},
        },
        {
            "@timestamp": iso(T0),
            "event": {"kind": "alert", "id": "a1", "reason": "x"},
            "alert": {
                "status": "closed",
                "sequence": 1,
                "severity": "critical",
                "subject": {"type": "user", "id": "alice", "unattributed": False},
                "vendor": "clearview-ai",
                "count": {"events": 5, "sessions": 2},
                "evidence": {"path": "/var/lib/ev/a1.pcapng", "sha256": "ab" * 32},
            },
        },
    ]
    rep = build_report(docs)
    assert rep.totals.events == 1
    assert rep.totals.sessions == 1
    assert rep.totals.alerts == 1
    assert rep.input.other == 2
    (alert,) = rep.alerts
    assert (alert.status, alert.events, alert.sessions) == ("closed", 5, 2)
    assert alert.evidence_path == "/var/lib/ev/a1.pcapng"
    html = render_html(rep)
    assert "/var/lib/ev/a1.pcapng" in html


def test_the_same_event_read_twice_counts_once_and_the_annotated_copy_wins() -> None:
    raw = event(T0, "e1")
    annotated = event(T0, "e1", outcome="sanctioned", session="s-1")
    rep = build_report([raw, annotated, annotated])
    assert rep.input.duplicates == 2
    assert rep.totals.events == 1
    assert rep.totals.sanctioned_sessions == 1


def test_an_idle_gap_over_120_seconds_starts_a_new_session() -> None:
    docs = [
        event(T0, "e1"),
        event(T0 + timedelta(seconds=120), "e2"),  # exactly the gap: same session
        event(T0 + timedelta(seconds=240, microseconds=1), "e3"),  # longer: a new one
        event(T0 + timedelta(seconds=250), "e4", vendor="pimeyes"),  # other vendor: new
    ]
    rep = build_report(docs)
    assert rep.totals.sessions == 3
    assert rep.totals.events == 4
    assert build_report(docs, session_gap_seconds=300).totals.sessions == 2


def test_a_session_with_any_unsanctioned_access_is_unsanctioned() -> None:
    docs = [
        event(T0, "e1", outcome="sanctioned", session="s1"),
        event(T0 + timedelta(seconds=5), "e2", outcome="unsanctioned", session="s1"),
        event(T0 + timedelta(hours=1), "e3", outcome="sanctioned", session="s2"),
        event(T0 + timedelta(hours=2), "e4", session="s3"),
    ]
    t = build_report(docs).totals
    assert (t.unsanctioned_sessions, t.sanctioned_sessions, t.unknown_sessions) == (1, 1, 1)
    assert (t.unsanctioned_events, t.sanctioned_events, t.unknown_events) == (1, 2, 1)


def test_subjects_fall_back_to_workstation_then_ip_which_is_flagged() -> None:
    docs = [
        event(T0, "e1", user="Alice"),
        event(T0, "e2", user="ALICE", workstation="WS02.pd.example."),
        event(T0, "e3", user=None, workstation="kiosk.pd.example"),
        event(T0, "e4", user=None, workstation=None, ip="192.0.2.77"),
    ]
    rep = build_report(docs)
    subjects = {(r.type, r.id): r for r in rep.subjects}
    assert set(subjects) == {
        ("user", "alice"),
        ("workstation", "kiosk.pd.example"),
        ("ip", "192.0.2.77"),
    }
    assert subjects["user", "alice"].workstations == 2
    assert subjects["ip", "192.0.2.77"].unattributed
    assert rep.totals.users == 1
    assert rep.totals.unattributed_subjects == 1
    assert rep.totals.headline == "1 user, 3 searches (1 unattributed source)"
    ws = {(r.type, r.id) for r in rep.workstations}
    assert ws == {
        ("workstation", "ws01.pd.example"),
        ("workstation", "ws02.pd.example"),
        ("workstation", "kiosk.pd.example"),
        ("ip", "192.0.2.77"),
    }


def test_events_without_timestamp_vendor_or_subject_are_unusable() -> None:
    bad_time = event(T0, "e1")
    bad_time["@timestamp"] = "yesterday"
    no_vendor = event(T0, "e2")
    del no_vendor["match"]
    nobody = event(T0, "e3", user=None, workstation=None, ip="")
    rep = build_report([bad_time, no_vendor, nobody, event(T0, "ok")])
    assert rep.input.unusable == 3
    assert rep.totals.events == 1


def test_until_as_a_date_includes_that_whole_day_in_the_report_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    late = datetime(2026, 1, 31, 23, 30, tzinfo=berlin)  # 22:30 UTC
    after = datetime(2026, 2, 1, 0, 30, tzinfo=berlin)  # 23:30 UTC on Jan 31
    docs = [event(late, "e1"), event(after, "e2")]
    until = parse_when("2026-01-31", berlin, end_of_day=True)
    rep = build_report(docs, until_us=until, tz=berlin, tz_name="Europe/Berlin")
    assert rep.totals.events == 1
    assert rep.input.out_of_range == 1
    assert rep.days == ["2026-01-31"]
    utc = build_report(docs)
    assert utc.days == ["2026-01-31"]  # both on Jan 31 in UTC
    assert build_report(docs, tz=berlin).days == ["2026-01-31", "2026-02-01"]


def test_an_empty_input_gives_an_empty_report_in_every_format(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("")
    rep = report_from_paths([path])
    assert rep.totals.headline == "0 users, 0 searches"
    assert json.loads(render_json(rep))["totals"]["sessions"] == 0
    assert "total" in render_csv(rep)
    assert "No sessions in this period." in render_html(rep)
    buf = io.StringIO()
    render_table(rep, Console(file=buf, width=100))
    assert "(none)" in buf.getvalue()


# -- hostile names outside HTML ------------------------------------------------------------


def test_terminal_table_shows_markup_and_escape_sequences_as_text() -> None:
    docs = [
        event(T0, "e1", user="[red]mallory[/red]"),
        event(T0, "e2", user="eve\x1b[2J\x1b]0;pwned\x07"),
    ]
    buf = io.StringIO()
    render_table(build_report(docs), Console(file=buf, width=160, force_terminal=True))
    out = buf.getvalue()
    assert "[red]mallory[/red]" in out
    assert "\x1b[2J" not in out and "\x1b]0" not in out
    assert "eve\\u001b[2J" in out


def test_csv_cells_that_a_spreadsheet_would_run_are_defused() -> None:
    docs = [event(T0, "e1", user='=HYPERLINK("http://x")'), event(T0, "e2", user="+1-2")]
    rows = list(csv.DictReader(io.StringIO(render_csv(build_report(docs)))))
    names = {r["name"] for r in rows if r["scope"] == "subject"}
    assert names == {'\'=HYPERLINK("http://x")', "'+1-2"}


# -- CLI -----------------------------------------------------------------------------------


def test_cli_options_since_until_timezone_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(lines([event(T0 + timedelta(days=d), f"e{d}") for d in range(10)]))
    code, out, _ = run_cli(
        [
            "report",
            str(path),
            "--since",
            "2026-01-17",
            "--until",
            "2026-01-18",
            "--format",
            "json",
            "--timezone",
            "Europe/Berlin",
        ],
        capsys,
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["totals"]["sessions"] == 2
    assert doc["report"]["timezone"] == "Europe/Berlin"
    assert run_cli(["report", str(path), "--timezone", "Mars/Olympus"], capsys)[0] == 2
    assert run_cli(["report", str(path), "--since", "tomorrow"], capsys)[0] == 2
    assert (
        run_cli(["report", str(path), "--since", "2026-02-01", "--until", "2026-01-01"], capsys)[0]
        == 2
    )
    target = tmp_path / "out.csv"
    assert run_cli(["report", str(path), "--format", "csv", "-o", str(target)], capsys)[0] == 0
    assert target.read_text().startswith("scope,type,id,")
    assert not list(tmp_path.glob(".out.csv.*"))  # no temporary left behind


# -- robustness ----------------------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@st.composite
def mangled_events(draw: st.DrawFn) -> dict[str, Any]:
    doc = event(
        T0 + timedelta(seconds=draw(st.integers(0, 10_000))),
        draw(st.text(max_size=4)),
        user=draw(st.one_of(st.none(), st.text(max_size=10))),
        workstation=draw(st.one_of(st.none(), st.text(max_size=10))),
        outcome=draw(st.sampled_from([None, "sanctioned", "unsanctioned", "weird"])),
    )
    # Replace some fields with arbitrary JSON.
    for path in draw(st.lists(st.sampled_from(["@timestamp", "event", "source", "match"]))):
        doc[path] = draw(_json)
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mangled_events(), max_size=20))
def test_arbitrary_documents_never_break_any_format(docs: list[dict[str, Any]]) -> None:
    rep = build_report(docs)
    assert rep.totals.events <= len(docs)
    assert sum(r.sessions for r in rep.subjects) == rep.totals.sessions
    json.loads(render_json(rep))
    render_csv(rep)
    assert "<script" not in render_html(rep).lower()
    render_table(rep, Console(file=io.StringIO(), width=120))
