"""Audit report over a generated three-month event log: every format agrees with hand counts.

The generator knows the truth (which user searched which vendor when, and whether an approval
covered it); the expected numbers below are computed from that truth alone, never from the
report code, and the events go through the real alert engine with a real approvals file.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from monitor.alerts.approvals import parse_approvals
from monitor.alerts.engine import AlertEngine
from monitor.alerts.report import (
    AuditReport,
    render_csv,
    render_json,
    render_table,
    report_from_paths,
)
from monitor.alerts.report_html import render_html
from monitor.cli import report_cmd

HOSTILE = "<script>alert(1)</script>"
USERS = [f"officer{i:02d}" for i in range(1, 25)] + [HOSTILE]
VENDORS = {"clearview-ai": "Clearview AI", "pimeyes": "PimEyes", "facecheck-id": "FaceCheck.ID"}
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 90  # January to March 2026
N_SESSIONS = 475
SHARED_WS = "forensic01.pd.example"
APPROVALS = """\
approvals:
  - reference: CASE-2026-0001
    approver: Chief Example
    subjects:
      users: [officer01, officer02, officer03, officer04, officer05]
    vendors: [clearview-ai]
    valid_from: 2026-01-01
    valid_until: 2026-04-01
  - reference: CASE-2026-0002
    approver: Chief Example
    subjects:
      users: [officer06]
    vendors: [pimeyes]
    valid_from: 2026-02-01
    valid_until: 2026-03-01
"""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class TruthSession:
    user: str
    workstation: str
    vendor: str
    times: list[datetime]
    sanctioned: bool


def sanctioned_by_policy(user: str, vendor: str, at: datetime) -> bool:
    """The approvals above, restated by hand."""
    if vendor == "clearview-ai" and user in USERS[:5]:
        return True
    feb = datetime(2026, 2, 1, tzinfo=UTC) <= at < datetime(2026, 3, 1, tzinfo=UTC)
    return user == "officer06" and vendor == "pimeyes" and feb


def generate_truth(seed: int = 20260101) -> list[TruthSession]:
    rng = random.Random(seed)
    owners = USERS + [rng.choice(USERS) for _ in range(N_SESSIONS - len(USERS))]
    rng.shuffle(owners)
    sessions = []
    for k, user in enumerate(owners):
        # Sessions at least ten minutes apart overall, so none can merge with another.
        day = k * DAYS // N_SESSIONS
        hour = 7 + (k * 7) % 13
        start = START + timedelta(
            days=day, hours=hour, minutes=rng.randrange(50), seconds=rng.randrange(60)
        )
        vendor = rng.choices(list(VENDORS), weights=[6, 3, 1])[0]
        home = f"ws{USERS.index(user) + 1:02d}.pd.example"
        ws = SHARED_WS if rng.random() < 0.1 else home
        times = [start]
        for _ in range(rng.randint(0, 5)):
            times.append(times[-1] + timedelta(seconds=rng.uniform(0.05, 30)))
        sessions.append(
            TruthSession(user, ws, vendor, times, sanctioned_by_policy(user, vendor, start))
        )
    return sessions


def vendor_event(s: TruthSession, at: datetime, event_id: str) -> dict[str, Any]:
    known = s.user in USERS and s.workstation != SHARED_WS
    ip = f"10.1.0.{USERS.index(s.user) + 10}" if known else "10.1.9.9"
    return {
        "@timestamp": iso(at),
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection", "protocol"],
            "action": "vendor-access",
            "dataset": "egress_monitor.detection",
            "module": "egress_monitor",
            "id": event_id,
            "severity": 99,
        },
        "network": {"protocol": "tls", "transport": "tcp", "type": "ipv4"},
        "source": {
            "ip": ip,
            "port": 40000 + len(event_id),
            "domain": s.workstation,
            "user": {"name": s.user, "domain": "PD"},
        },
        "destination": {"ip": "198.51.100.3", "port": 443},
        "match": {
            "name": f"www.{s.vendor}.example",
            "indicator": s.vendor,
            "indicator_type": "domain",
            "vendor": s.vendor,
            "vendor_name": VENDORS[s.vendor],
            "category": "face-search",
            "severity": "critical",
            "evidence": "tls-sni",
        },
    }


def raw_events(truth: list[TruthSession]) -> list[dict[str, Any]]:
    events = [
        vendor_event(s, at, f"ev{k:04d}-{j}")
        for k, s in enumerate(truth)
        for j, at in enumerate(s.times)
    ]
    events.sort(key=lambda e: e["@timestamp"])
    return events


def through_engine(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the sensor writes: annotated events, then alerts (opened and closed)."""
    engine = AlertEngine(approvals=parse_approvals(APPROVALS, "approvals.yaml"))
    out: list[dict[str, Any]] = []
    for event in events:
        out.extend(engine.flush(datetime.fromisoformat(event["@timestamp"])))
        out.extend(engine.process(event))
    out.extend(engine.close())
    return out


def write_rotated(docs: list[dict[str, Any]], directory: Path) -> None:
    """Like the file sink after two rotations, the oldest gzipped by logrotate."""
    lines = [json.dumps(d) + "\n" for d in docs]
    third = len(lines) // 3
    directory.mkdir(parents=True, exist_ok=True)
    with gzip.open(directory / "events.jsonl.2.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(lines[:third])
    (directory / "events.jsonl.1").write_text("".join(lines[third : 2 * third]), "utf-8")
    (directory / "events.jsonl").write_text("".join(lines[2 * third :]), "utf-8")
    (directory / "README.txt").write_text("not an event file\n", "utf-8")
    (directory / "evidence").mkdir()
    (directory / "evidence" / "0123.pcapng").write_bytes(b"\x0a\x0d\x0d\x0a")


# -- expected values, from the truth only --------------------------------------------------


@dataclass
class Expected:
    users: int
    sessions: int
    sanctioned_sessions: int
    unsanctioned_sessions: int
    events: int
    sanctioned_events: int
    unsanctioned_events: int
    per_user: dict[str, dict[str, Any]]
    per_workstation: dict[str, dict[str, Any]]
    per_vendor: dict[str, dict[str, Any]]
    timeline: dict[str, dict[str, Counter[str]]]


def expected_from(truth: list[TruthSession]) -> Expected:
    def blank() -> dict[str, Any]:
        return {
            "sessions": 0,
            "sanctioned_sessions": 0,
            "unsanctioned_sessions": 0,
            "events": 0,
            "sanctioned_events": 0,
            "unsanctioned_events": 0,
            "vendors": set(),
            "users": set(),
            "workstations": set(),
            "first": None,
            "last": None,
        }

    per_user: dict[str, dict[str, Any]] = defaultdict(blank)
    per_ws: dict[str, dict[str, Any]] = defaultdict(blank)
    per_vendor: dict[str, dict[str, Any]] = defaultdict(blank)
    timeline: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for s in truth:
        outcome = "sanctioned" if s.sanctioned else "unsanctioned"
        for row in (per_user[s.user.casefold()], per_ws[s.workstation], per_vendor[s.vendor]):
            row["sessions"] += 1
            row[f"{outcome}_sessions"] += 1
            row["events"] += len(s.times)
            row[f"{outcome}_events"] += len(s.times)
            row["vendors"].add(s.vendor)
            row["users"].add(s.user)
            row["workstations"].add(s.workstation)
            first, last = iso(min(s.times)), iso(max(s.times))
            row["first"] = first if row["first"] is None else min(row["first"], first)
            row["last"] = last if row["last"] is None else max(row["last"], last)
        timeline[s.vendor][s.times[0].date().isoformat()][outcome] += 1
    sanctioned = [s for s in truth if s.sanctioned]
    return Expected(
        users=len({s.user for s in truth}),
        sessions=len(truth),
        sanctioned_sessions=len(sanctioned),
        unsanctioned_sessions=len(truth) - len(sanctioned),
        events=sum(len(s.times) for s in truth),
        sanctioned_events=sum(len(s.times) for s in sanctioned),
        unsanctioned_events=sum(len(s.times) for s in truth if not s.sanctioned),
        per_user=dict(per_user),
        per_workstation=dict(per_ws),
        per_vendor=dict(per_vendor),
        timeline={v: dict(d) for v, d in timeline.items()},
    )


TRUTH = generate_truth()
EXPECTED = expected_from(TRUTH)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("audit") / "logs"
    write_rotated(through_engine(raw_events(TRUTH)), directory)
    return directory


@pytest.fixture(scope="module")
def report(log_dir: Path) -> AuditReport:
    return report_from_paths([log_dir])


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="egress-monitor")
    report_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the generator itself ------------------------------------------------------------------


def test_generated_log_has_the_audit_shape() -> None:
    assert EXPECTED.users == 25
    assert EXPECTED.sessions == 475
    assert 0 < EXPECTED.sanctioned_sessions < EXPECTED.sessions
    assert {s.times[0].month for s in TRUTH} == {1, 2, 3}
    assert generate_truth() == TRUTH  # deterministic


# -- every format --------------------------------------------------------------------------


def check_row(got: dict[str, Any], want: dict[str, Any], *, users: bool, wss: bool) -> None:
    for name in (
        "sessions",
        "sanctioned_sessions",
        "unsanctioned_sessions",
        "events",
        "sanctioned_events",
        "unsanctioned_events",
    ):
        assert int(got[name]) == want[name], name
    assert int(got["unknown_sessions"]) == 0
    assert int(got["unknown_events"]) == 0
    assert set(got["vendors"]) == want["vendors"]
    assert got["first_seen"] == want["first"]
    assert got["last_seen"] == want["last"]
    if users:
        assert int(got["users"]) == len(want["users"])
    if wss:
        assert int(got["workstations"]) == len(want["workstations"])


def test_json_report_matches_hand_counts(report: AuditReport) -> None:
    doc = json.loads(render_json(report))
    totals = doc["totals"]
    assert totals["users"] == 25
    assert totals["sessions"] == 475
    assert totals["sanctioned_sessions"] == EXPECTED.sanctioned_sessions
    assert totals["unsanctioned_sessions"] == EXPECTED.unsanctioned_sessions
    assert totals["unknown_sessions"] == 0
    assert totals["events"] == EXPECTED.events
    assert totals["sanctioned_events"] == EXPECTED.sanctioned_events
    assert totals["unsanctioned_events"] == EXPECTED.unsanctioned_events
    assert totals["unattributed_subjects"] == 0
    assert totals["workstations"] == len(EXPECTED.per_workstation)
    assert totals["vendors"] == 3
    assert totals["alerts"] > 0
    assert doc["report"]["headline"] == "25 users, 475 searches"
    assert doc["input"]["files"] == 3  # the README and the pcapng are not event files
    assert doc["input"]["malformed"] == 0

    subjects = {r["id"]: r for r in doc["subjects"]}
    assert set(subjects) == set(EXPECTED.per_user)
    for user, want in EXPECTED.per_user.items():
        check_row(subjects[user], want, users=False, wss=True)
        assert subjects[user]["type"] == "user"
        assert set(subjects[user]["related_workstations"]) == want["workstations"]
    workstations = {r["id"]: r for r in doc["workstations"]}
    assert set(workstations) == set(EXPECTED.per_workstation)
    for ws, want in EXPECTED.per_workstation.items():
        check_row(workstations[ws], want, users=True, wss=False)
        assert set(workstations[ws]["related_users"]) == want["users"]
    vendors = {r["id"]: r for r in doc["vendors"]}
    for vendor, want in EXPECTED.per_vendor.items():
        check_row(vendors[vendor], want, users=True, wss=True)

    for vendor, days in EXPECTED.timeline.items():
        got = doc["timeline"][vendor]
        assert set(got) == set(days)
        for day, counts in days.items():
            assert got[day] == {
                "sanctioned": counts["sanctioned"],
                "unsanctioned": counts["unsanctioned"],
                "unknown": 0,
            }
    assert doc["days"][0] == "2026-01-01"
    assert doc["days"][-1] == "2026-03-31"
    assert len(doc["days"]) == 90


def test_csv_report_matches_hand_counts(report: AuditReport) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    for row in rows:
        row["vendors"] = row["vendors"].split(";") if row["vendors"] else []
    by = {(r["scope"], r["id"]): r for r in rows}
    assert len(rows) == (
        len(EXPECTED.per_user) + len(EXPECTED.per_workstation) + len(EXPECTED.per_vendor) + 1
    )
    for user, want in EXPECTED.per_user.items():
        check_row(by["subject", user], want, users=False, wss=True)
    for ws, want in EXPECTED.per_workstation.items():
        check_row(by["workstation", ws], want, users=True, wss=False)
    for vendor, want in EXPECTED.per_vendor.items():
        check_row(by["vendor", vendor], want, users=True, wss=True)
    total = by["total", "all"]
    assert total["name"] == "25 users, 475 searches"
    assert int(total["users"]) == 25
    assert int(total["sessions"]) == 475
    assert int(total["sanctioned_sessions"]) == EXPECTED.sanctioned_sessions
    assert int(total["unsanctioned_sessions"]) == EXPECTED.unsanctioned_sessions
    assert int(total["events"]) == EXPECTED.events


def test_table_report_matches_hand_counts(report: AuditReport) -> None:
    buf = io.StringIO()
    render_table(report, Console(file=buf, width=200, color_system=None))
    text = buf.getvalue()
    assert "25 users, 475 searches" in text
    assert f"{EXPECTED.sanctioned_sessions} sanctioned" in text
    assert f"{EXPECTED.unsanctioned_sessions} unsanctioned" in text
    per_user = text.split("Per user", 1)[1].split("Per workstation", 1)[0]
    for user, want in EXPECTED.per_user.items():
        name = next(s.user for s in TRUTH if s.user.casefold() == user)
        m = re.search(
            rf"^\s*{re.escape(name)}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", per_user, re.MULTILINE
        )
        assert m is not None, name
        assert [int(g) for g in m.groups()] == [
            want["sessions"],
            want["unsanctioned_sessions"],
            want["sanctioned_sessions"],
            want["events"],
        ]


class RowCollector(HTMLParser):
    """Cells with ``data-field`` by table id and row ``data-id``, and elements by id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.table: str | None = None
        self.row: str | None = None
        self.field: str | None = None
        self.by_id: str | None = None
        self.cells: dict[tuple[str, str, str], str] = {}
        self.ids: dict[str, str] = {}
        self.names: dict[tuple[str, str], str] = {}
        self.in_name = False
        self.tags: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags[tag] += 1
        if tag == "table":
            self.table = a.get("id")
        elif tag == "tr":
            self.row = a.get("data-id")
        elif tag == "td":
            self.field = a.get("data-field")
            self.in_name = a.get("class") == "name"
        if a.get("id"):
            self.by_id = a["id"]
            self.ids.setdefault(a["id"], "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.field = None
            self.in_name = False
        if tag in ("b", "p"):
            self.by_id = None

    def handle_data(self, data: str) -> None:
        if self.table and self.row and self.field:
            key = (self.table, self.row, self.field)
            self.cells[key] = self.cells.get(key, "") + data
        if self.table and self.row and self.in_name:
            self.names[self.table, self.row] = self.names.get((self.table, self.row), "") + data
        if self.by_id:
            self.ids[self.by_id] += data


def parse_html(text: str) -> RowCollector:
    collector = RowCollector()
    collector.feed(text)
    return collector


def check_html_counts(page: RowCollector) -> None:
    assert page.ids["total-users"] == "25"
    assert page.ids["total-sessions"] == "475"
    assert page.ids["total-sanctioned"] == str(EXPECTED.sanctioned_sessions)
    assert page.ids["total-unsanctioned"] == str(EXPECTED.unsanctioned_sessions)
    assert page.ids["total-events"] == str(EXPECTED.events)
    assert page.ids["headline"] == "25 users, 475 searches"
    for table, expected in (
        ("subjects", EXPECTED.per_user),
        ("workstations", EXPECTED.per_workstation),
        ("vendors", EXPECTED.per_vendor),
    ):
        rows = {row for (t, row, _) in page.cells if t == table}
        assert rows == set(expected), table
        for key, want in expected.items():
            for field in ("sessions", "sanctioned_sessions", "unsanctioned_sessions", "events"):
                assert int(page.cells[table, key, field]) == want[field], (table, key, field)
    assert page.names["subjects", HOSTILE] == HOSTILE  # shown as text, not run


def test_html_report_matches_hand_counts(report: AuditReport) -> None:
    text = render_html(report)
    page = parse_html(text)
    check_html_counts(page)
    assert page.tags["script"] == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>" not in text
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r"""(?:src|href)\s*=|url\(|@import""", text)
    # One timeline group per (vendor, day with sessions).
    groups = re.findall(r'<g class="day" data-vendor="([^"]+)" data-day="([^"]+)">', text)
    assert sorted(groups) == sorted(
        (vendor, day) for vendor, days in EXPECTED.timeline.items() for day in days
    )


def test_cli_writes_every_format_with_the_same_totals(
    log_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["report", str(log_dir), "--format", "json"], capsys)
    assert code == 0
    assert json.loads(out)["totals"]["sessions"] == 475
    code, out, _ = run_cli(["report", str(log_dir), "--format", "csv"], capsys)
    total = next(r for r in csv.DictReader(io.StringIO(out)) if r["scope"] == "total")
    assert (total["users"], total["sessions"]) == ("25", "475")
    target = tmp_path / "audit.html"
    code, out, _ = run_cli(["report", str(log_dir), "--format", "html", "-o", str(target)], capsys)
    assert code == 0 and out == ""
    check_html_counts(parse_html(target.read_text("utf-8")))
    code, out, _ = run_cli(["report", str(log_dir)], capsys)
    assert code == 0
    assert "25 users, 475 searches" in out


def test_unannotated_events_give_the_same_sessions_with_unknown_approval(
    tmp_path: Path,
) -> None:
    """Raw pipeline output (no alert engine): sessions computed by the engine's rule."""
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in raw_events(TRUTH)), "utf-8")
    rep = report_from_paths([path])
    assert rep.totals.users == 25
    assert rep.totals.sessions == 475
    assert rep.totals.unknown_sessions == 475
    assert rep.totals.events == EXPECTED.events
    by_user = {r.id: r for r in rep.subjects}
    for user, want in EXPECTED.per_user.items():
        assert by_user[user].sessions == want["sessions"]


def test_engine_session_ids_and_recomputed_ones_agree(log_dir: Path, tmp_path: Path) -> None:
    """Stripping session.id from annotated events changes nothing: one rule, one answer."""
    docs = []
    for path in sorted(log_dir.glob("events.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            docs.extend(json.loads(line) for line in fh)
    stripped = tmp_path / "stripped.jsonl"
    with stripped.open("w", encoding="utf-8") as fh:
        for d in docs:
            d.pop("session", None)
            fh.write(json.dumps(d) + "\n")
    with_ids = report_from_paths([log_dir])
    without = report_from_paths([stripped])
    assert with_ids.as_dict()["subjects"] == without.as_dict()["subjects"]
    assert with_ids.totals == without.totals


def test_since_and_until_restrict_to_february(log_dir: Path) -> None:
    from monitor.alerts.report import parse_when

    since = parse_when("2026-02-01", UTC)
    until = parse_when("2026-02-28", UTC, end_of_day=True)
    rep = report_from_paths([log_dir], since_us=since, until_us=until)
    feb = [s for s in TRUTH if s.times[0].month == 2]
    assert rep.totals.sessions == len(feb)
    assert rep.totals.events == sum(len(s.times) for s in feb)
    assert rep.totals.sanctioned_sessions == sum(s.sanctioned for s in feb)
    assert rep.days[0] == "2026-02-01"
    assert rep.days[-1] == "2026-02-28"
