"""The audit report: who used which face-search service, how often, and whether it was approved.

An oversight board asks questions like "how many officers used Clearview last quarter, how many
searches, and which of them were authorised?".  This module answers them from the sensor's own
JSON-lines event files (current, rotated ``.1``/``.2`` and gzipped), so the answer can be
reproduced by anyone holding the logs.

What counts, and why:

* Only ``event.kind == "event"`` with ``event.action == "vendor-access"``.  Alert documents
  summarise the same accesses, so counting them too would double everything; they are listed
  separately instead.  Blind-spot signals (encrypted DNS, ECH) are not uses of a vendor.
* A **search** is a session: one page visit takes a DNS query and several connections within
  seconds, so counting events would inflate the numbers by browser behaviour.  The session is
  ``session.id`` as the alert engine annotated it, else computed with the engine's own rule
  and code (same subject and vendor; an idle gap longer than ``session_gap_seconds`` starts a
  new one), so the report and the alerts never disagree about what a session is.
* The **subject** is the engine's: ``source.user.name``, else ``source.domain`` (the
  workstation), else ``source.ip``, the last flagged *unattributed*.  "Users" in the totals
  are subjects of the user kind only.
* Sanctioned or not comes from ``event.outcome`` (set by the alert engine from the approvals
  file); events that never went through the engine are "unknown".  A session is unsanctioned
  if any of its events is, else sanctioned if any is, else unknown.
* The same event read twice (a log and its copy, at-least-once delivery) counts once, by
  ``event.id``.

Memory is proportional to the number of vendor-access events in the input (a few hundred
bytes each), which for this sensor's purpose -- rare events by design -- is small.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import IO, Any

from monitor.alerts.approvals import normalize_workstation
from monitor.alerts.engine import AlertConfig, Subject, parse_timestamp_us, subject_of
from monitor.alerts.sessions import SessionTracker

__all__ = [
    "AlertRow",
    "AuditReport",
    "InputStats",
    "Row",
    "Totals",
    "build_report",
    "event_files",
    "read_documents",
    "render_csv",
    "render_json",
    "render_table",
    "report_from_paths",
]

#: Names of event files inside a directory: the sink's ``events.jsonl`` and its rotations
#: (``.1``, ``.2.gz``, logrotate's ``-20260115``), and the usual JSON-lines suffixes.
EVENT_FILE = re.compile(r"\.(?:jsonl|ndjson|json|log)(?:\.\d{1,4}|-\d{8,14})?(?:\.gz)?$")
MAX_LINE = 1 << 20
MAX_WARNINGS = 20
DEFAULT_SESSION_GAP = AlertConfig().session_gap_seconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OUTCOMES = ("sanctioned", "unsanctioned", "unknown")

CSV_COLUMNS = (
    "scope",
    "type",
    "id",
    "name",
    "unattributed",
    "sessions",
    "sanctioned_sessions",
    "unsanctioned_sessions",
    "unknown_sessions",
    "events",
    "sanctioned_events",
    "unsanctioned_events",
    "unknown_events",
    "users",
    "workstations",
    "vendors",
    "first_seen",
    "last_seen",
)


# -- input ---------------------------------------------------------------------------------


@dataclass(slots=True)
class InputStats:
    """What was read and what was left out, so a reader can judge the report's coverage."""

    files: int = 0
    lines: int = 0
    #: vendor-access events counted (after duplicates and the time range).
    events: int = 0
    alerts: int = 0
    #: Other documents: blind-spot signals, other actions.
    other: int = 0
    malformed: int = 0
    duplicates: int = 0
    #: vendor-access events without a usable timestamp, vendor or subject.
    unusable: int = 0
    out_of_range: int = 0
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(text)
        elif len(self.warnings) == MAX_WARNINGS:
            self.warnings.append("(further warnings not shown)")


def event_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories walked recursively for event files, in sorted order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and EVENT_FILE.search(f.name)))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


def read_documents(paths: Iterable[Path], stats: InputStats) -> Iterator[dict[str, Any]]:
    """Every JSON object of every file, one per line; gzip recognised by its magic bytes.

    A line that is not a JSON object (a crash's half line, garbage) is counted and skipped;
    a truncated gzip file yields what it holds and a warning.
    """
    for path in paths:
        stats.files += 1
        try:
            raw = path.open("rb")
        except OSError as exc:
            stats.warn(f"{path}: {exc.strerror or exc}")
            continue
        with raw:
            magic = raw.read(2)
            raw.seek(0)
            fh: IO[bytes] = (
                gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw  # type: ignore[assignment]
            )
            lineno = 0
            try:
                while True:
                    line = fh.readline(MAX_LINE + 1)
                    if not line:
                        break
                    lineno += 1
                    stats.lines += 1
                    if len(line) > MAX_LINE and not line.endswith(b"\n"):
                        while line and not line.endswith(b"\n"):
                            line = fh.readline(MAX_LINE)
                        stats.malformed += 1
                        stats.warn(f"{path}:{lineno}: line longer than {MAX_LINE} bytes")
                        continue
                    if not line.strip():
                        continue
                    try:
                        doc = json.loads(line)
                    except ValueError:
                        doc = None
                    if not isinstance(doc, dict):
                        stats.malformed += 1
                        stats.warn(f"{path}:{lineno}: not a JSON object")
                        continue
                    yield doc
            except (OSError, EOFError, zlib.error) as exc:
                stats.warn(f"{path}: {exc} (read up to line {lineno})")


# -- model ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Access:
    """One vendor access, reduced to what the report needs."""

    ts_us: int
    subject: Subject
    vendor: str
    vendor_name: str
    ws_key: str | None
    ws_name: str | None
    ip: str | None
    outcome: str
    session: str | None


@dataclass(slots=True)
class Row:
    """One line of a per-subject, per-workstation or per-vendor table."""

    type: str
    id: str
    name: str
    unattributed: bool
    sessions: int
    sanctioned_sessions: int
    unsanctioned_sessions: int
    unknown_sessions: int
    events: int
    sanctioned_events: int
    unsanctioned_events: int
    unknown_events: int
    users: int
    workstations: int
    vendors: list[str]
    vendor_names: list[str]
    first_seen: str
    last_seen: str
    #: Users of a workstation or vendor, workstations of a user (display names, sorted).
    related_users: list[str]
    related_workstations: list[str]


@dataclass(slots=True)
class Totals:
    users: int
    subjects: int
    unattributed_subjects: int
    workstations: int
    vendors: int
    #: Searches = sessions.
    sessions: int
    sanctioned_sessions: int
    unsanctioned_sessions: int
    unknown_sessions: int
    events: int
    sanctioned_events: int
    unsanctioned_events: int
    unknown_events: int
    alerts: int
    first_seen: str | None
    last_seen: str | None

    @property
    def headline(self) -> str:
        """The audit's sentence: "N users, M searches"."""
        text = f"{self.users} user{'s' * (self.users != 1)}, "
        text += f"{self.sessions} search{'es' * (self.sessions != 1)}"
        if self.unattributed_subjects:
            text += f" ({self.unattributed_subjects} unattributed source"
            text += "s)" if self.unattributed_subjects != 1 else ")"
        return text


@dataclass(slots=True)
class AlertRow:
    """An alert's latest update (alerts are listed, never counted as uses)."""

    id: str
    status: str
    severity: str
    subject_type: str
    subject: str
    unattributed: bool
    vendor: str
    first_seen: str
    last_seen: str
    events: int
    sessions: int
    reason: str
    evidence_path: str | None
    evidence_sha256: str | None


@dataclass(slots=True)
class AuditReport:
    totals: Totals
    subjects: list[Row]
    workstations: list[Row]
    vendors: list[Row]
    #: vendor id -> day (in ``timezone``) -> sessions started that day by outcome.
    timeline: dict[str, dict[str, dict[str, int]]]
    #: Every day from the first to the last session, in ``timezone``.
    days: list[str]
    alerts: list[AlertRow]
    input: InputStats
    since: str | None = None
    until: str | None = None
    timezone: str = "UTC"
    session_gap_seconds: float = DEFAULT_SESSION_GAP
    generated: str | None = None
    title: str = "Facial-recognition service use: audit report"

    def as_dict(self) -> dict[str, Any]:
        """The JSON document (machine-readable; timestamps are UTC RFC 3339)."""
        return {
            "report": {
                "title": self.title,
                "generated": self.generated,
                "since": self.since,
                "until": self.until,
                "timezone": self.timezone,
                "session_gap_seconds": self.session_gap_seconds,
                "headline": self.totals.headline,
                "searches_are": "sessions",
            },
            "totals": asdict(self.totals),
            "subjects": [asdict(r) for r in self.subjects],
            "workstations": [asdict(r) for r in self.workstations],
            "vendors": [asdict(r) for r in self.vendors],
            "timeline": self.timeline,
            "days": self.days,
            "alerts": [asdict(a) for a in self.alerts],
            "input": asdict(self.input),
        }


class _Group:
    """Accumulates one row."""

    __slots__ = (
        "events",
        "first_us",
        "last_us",
        "name",
        "sessions",
        "users",
        "vendors",
        "workstations",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.events = dict.fromkeys(_OUTCOMES, 0)
        self.sessions: set[str] = set()
        self.users: dict[str, str] = {}
        self.workstations: dict[str, str] = {}
        self.vendors: dict[str, str] = {}
        self.first_us = 1 << 62
        self.last_us = -(1 << 62)

    def add(self, a: _Access, session: str) -> None:
        self.events[a.outcome] += 1
        self.sessions.add(session)
        if a.subject.type == "user":
            self.users.setdefault(a.subject.id, a.subject.user or a.subject.id)
        if a.ws_key is not None:
            self.workstations.setdefault(a.ws_key, a.ws_name or a.ws_key)
        self.vendors[a.vendor] = a.vendor_name
        self.first_us = min(self.first_us, a.ts_us)
        self.last_us = max(self.last_us, a.ts_us)

    def row(
        self, type_: str, id_: str, unattributed: bool, session_outcome: Mapping[str, str]
    ) -> Row:
        by = dict.fromkeys(_OUTCOMES, 0)
        for s in self.sessions:
            by[session_outcome[s]] += 1
        vendors = sorted(self.vendors)
        return Row(
            type=type_,
            id=id_,
            name=self.name,
            unattributed=unattributed,
            sessions=len(self.sessions),
            sanctioned_sessions=by["sanctioned"],
            unsanctioned_sessions=by["unsanctioned"],
            unknown_sessions=by["unknown"],
            events=sum(self.events.values()),
            sanctioned_events=self.events["sanctioned"],
            unsanctioned_events=self.events["unsanctioned"],
            unknown_events=self.events["unknown"],
            users=len(self.users),
            workstations=len(self.workstations),
            vendors=vendors,
            vendor_names=[self.vendors[v] for v in vendors],
            first_seen=iso_us(self.first_us),
            last_seen=iso_us(self.last_us),
            related_users=sorted(self.users.values(), key=str.casefold),
            related_workstations=sorted(self.workstations.values(), key=str.casefold),
        )


def iso_us(ts_us: int) -> str:
    return (_EPOCH + timedelta(microseconds=ts_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _access(doc: Mapping[str, Any]) -> _Access | None:
    ts_us = parse_timestamp_us(doc.get("@timestamp"))
    match = doc.get("match")
    vendor = _text(match.get("vendor")) if isinstance(match, Mapping) else None
    subject = subject_of(doc)
    if ts_us is None or vendor is None or subject is None:
        return None
    vendor_name = (
        _text(match.get("vendor_name")) if isinstance(match, Mapping) else None
    ) or vendor
    source = doc.get("source")
    ws_name = ip = None
    if isinstance(source, Mapping):
        ws_name = _text(source.get("domain"))
        if ws_name is not None and not ws_name.strip("."):
            ws_name = None
        ip = _text(source.get("ip"))
    ev = doc["event"]
    outcome = ev.get("outcome")
    session = doc.get("session")
    session_id = _text(session.get("id")) if isinstance(session, Mapping) else None
    return _Access(
        ts_us=ts_us,
        subject=subject,
        vendor=vendor,
        vendor_name=vendor_name,
        ws_key=normalize_workstation(ws_name) if ws_name is not None else None,
        ws_name=ws_name,
        ip=ip,
        outcome=outcome if outcome in ("sanctioned", "unsanctioned") else "unknown",
        session=session_id,
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _alert_row(doc: Mapping[str, Any]) -> tuple[int, AlertRow] | None:
    ev = doc.get("event")
    alert = doc.get("alert")
    if not isinstance(ev, Mapping) or not isinstance(alert, Mapping):
        return None
    alert_id = _text(ev.get("id"))
    if alert_id is None:
        return None
    subject = _mapping(alert.get("subject"))
    count = _mapping(alert.get("count"))
    evidence = _mapping(alert.get("evidence"))
    sequence = alert.get("sequence")

    def number(value: object) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return number(sequence), AlertRow(
        id=alert_id,
        status=str(alert.get("status") or ""),
        severity=str(alert.get("severity") or ""),
        subject_type=str(subject.get("type") or ""),
        subject=str(subject.get("id") or ""),
        unattributed=bool(subject.get("unattributed")),
        vendor=str(alert.get("vendor") or ""),
        first_seen=str(alert.get("first_seen") or doc.get("@timestamp") or ""),
        last_seen=str(alert.get("last_seen") or ""),
        events=number(count.get("events")),
        sessions=number(count.get("sessions")),
        reason=str(ev.get("reason") or ""),
        evidence_path=_text(evidence.get("path")),
        evidence_sha256=_text(evidence.get("sha256")),
    )


def build_report(
    documents: Iterable[Mapping[str, Any]],
    *,
    since_us: int | None = None,
    until_us: int | None = None,
    session_gap_seconds: float = DEFAULT_SESSION_GAP,
    tz: tzinfo = UTC,
    tz_name: str = "UTC",
    stats: InputStats | None = None,
    generated: str | None = None,
    title: str | None = None,
) -> AuditReport:
    """Count the documents; ``since_us`` is inclusive, ``until_us`` exclusive."""
    stats = stats if stats is not None else InputStats()
    by_id: dict[str, _Access] = {}
    anonymous: list[_Access] = []
    alerts: dict[str, tuple[int, AlertRow]] = {}
    for doc in documents:
        ev = _mapping(doc.get("event"))
        kind = ev.get("kind")
        if kind == "alert":
            found = _alert_row(doc)
            if found is None:
                stats.other += 1
                continue
            stats.alerts += 1
            seq, row = found
            ts_us = parse_timestamp_us(doc.get("@timestamp"))
            if ts_us is not None and not _in_range(ts_us, since_us, until_us):
                continue
            held = alerts.get(row.id)
            if held is None or seq >= held[0]:
                alerts[row.id] = (seq, row)
            continue
        if kind != "event" or ev.get("action") != "vendor-access":
            stats.other += 1
            continue
        access = _access(doc)
        if access is None:
            stats.unusable += 1
            continue
        event_id = _text(ev.get("id"))
        if event_id is None:
            anonymous.append(access)
            continue
        held_access = by_id.get(event_id)
        if held_access is not None:
            stats.duplicates += 1
            # Prefer the copy the alert engine annotated (it knows session and outcome).
            if held_access.session is None and access.session is not None:
                by_id[event_id] = access
            continue
        by_id[event_id] = access

    accesses = sorted([*by_id.values(), *anonymous], key=lambda a: a.ts_us)
    # Sessions the engine did not annotate, by the engine's own rule, in time order.
    tracker = SessionTracker(round(session_gap_seconds * 1_000_000), 1 << 24)
    sessions: list[str] = []
    for a in accesses:
        if a.session is not None:
            sessions.append(a.session)
        else:
            sid, _ = tracker.touch((a.subject.type, a.subject.id, a.vendor), a.ts_us)
            sessions.append(sid)

    counted: list[tuple[_Access, str]] = []
    for a, sid in zip(accesses, sessions, strict=True):
        if _in_range(a.ts_us, since_us, until_us):
            counted.append((a, sid))
        else:
            stats.out_of_range += 1
    stats.events = len(counted)

    outcomes: dict[str, set[str]] = {}
    session_start: dict[str, tuple[int, str]] = {}
    for a, sid in counted:
        outcomes.setdefault(sid, set()).add(a.outcome)
        if sid not in session_start or a.ts_us < session_start[sid][0]:
            session_start[sid] = (a.ts_us, a.vendor)
    session_outcome = {
        sid: next(o for o in ("unsanctioned", "sanctioned", "unknown") if o in found)
        for sid, found in outcomes.items()
    }

    subjects: dict[tuple[str, str], _Group] = {}
    workstations: dict[tuple[str, str], _Group] = {}
    vendors: dict[str, _Group] = {}
    total = _Group("all")
    for a, sid in counted:
        s = a.subject
        name = s.user if s.type == "user" and s.user else (s.workstation or s.id)
        subjects.setdefault((s.type, s.id), _Group(name)).add(a, sid)
        if a.ws_key is not None:
            ws = ("workstation", a.ws_key)
            ws_label = a.ws_name or a.ws_key
        else:
            ws = ("ip", a.ip or s.id)
            ws_label = a.ip or s.id
        workstations.setdefault(ws, _Group(ws_label)).add(a, sid)
        vendors.setdefault(a.vendor, _Group(a.vendor_name)).add(a, sid)
        total.add(a, sid)

    def order(row: Row) -> tuple[int, int, str]:
        return (-row.sessions, -row.events, row.id)

    subject_rows = sorted(
        (g.row(t, i, t == "ip", session_outcome) for (t, i), g in subjects.items()), key=order
    )
    ws_rows = sorted(
        (g.row(t, i, t == "ip", session_outcome) for (t, i), g in workstations.items()),
        key=order,
    )
    vendor_rows = sorted(
        (g.row("vendor", v, False, session_outcome) for v, g in vendors.items()), key=order
    )

    timeline: dict[str, dict[str, dict[str, int]]] = {}
    day_values: set[date] = set()
    for sid, (start_us, vendor) in session_start.items():
        day = (_EPOCH + timedelta(microseconds=start_us)).astimezone(tz).date()
        day_values.add(day)
        per_day = timeline.setdefault(vendor, {})
        counts = per_day.setdefault(day.isoformat(), dict.fromkeys(_OUTCOMES, 0))
        counts[session_outcome[sid]] += 1
    timeline = {v: dict(sorted(days.items())) for v, days in sorted(timeline.items())}
    days: list[str] = []
    if day_values:
        d, last = min(day_values), max(day_values)
        while d <= last:
            days.append(d.isoformat())
            d += timedelta(days=1)

    all_sessions = dict.fromkeys(_OUTCOMES, 0)
    for o in session_outcome.values():
        all_sessions[o] += 1
    totals = Totals(
        users=sum(1 for t, _ in subjects if t == "user"),
        subjects=len(subjects),
        unattributed_subjects=sum(1 for t, _ in subjects if t == "ip"),
        workstations=sum(1 for t, _ in workstations if t == "workstation"),
        vendors=len(vendors),
        sessions=len(session_outcome),
        sanctioned_sessions=all_sessions["sanctioned"],
        unsanctioned_sessions=all_sessions["unsanctioned"],
        unknown_sessions=all_sessions["unknown"],
        events=len(counted),
        sanctioned_events=total.events["sanctioned"],
        unsanctioned_events=total.events["unsanctioned"],
        unknown_events=total.events["unknown"],
        alerts=len(alerts),
        first_seen=iso_us(total.first_us) if counted else None,
        last_seen=iso_us(total.last_us) if counted else None,
    )
    alert_rows = sorted((row for _, row in alerts.values()), key=lambda r: (r.first_seen, r.id))
    report = AuditReport(
        totals=totals,
        subjects=subject_rows,
        workstations=ws_rows,
        vendors=vendor_rows,
        timeline=timeline,
        days=days,
        alerts=alert_rows,
        input=stats,
        since=iso_us(since_us) if since_us is not None else None,
        until=iso_us(until_us) if until_us is not None else None,
        timezone=tz_name,
        session_gap_seconds=session_gap_seconds,
        generated=generated,
    )
    if title:
        report.title = title
    return report


def _in_range(ts_us: int, since_us: int | None, until_us: int | None) -> bool:
    return (since_us is None or ts_us >= since_us) and (until_us is None or ts_us < until_us)


def report_from_paths(paths: Iterable[str | Path], **options: Any) -> AuditReport:
    """Read event files and directories and build the report (options: see build_report)."""
    stats = InputStats()
    return build_report(read_documents(event_files(paths), stats), stats=stats, **options)


# -- time arguments ------------------------------------------------------------------------


def parse_when(text: str, tz: tzinfo, *, end_of_day: bool = False) -> int:
    """``--since``/``--until`` to epoch microseconds.

    A bare date is midnight in ``tz``, or with ``end_of_day`` the next midnight, so
    ``--until 2026-03-31`` includes the whole of that day.  A time without an offset is in
    ``tz``.
    """
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        day = date.fromisoformat(value)
        if end_of_day:
            day += timedelta(days=1)
        moment = datetime(day.year, day.month, day.day, tzinfo=tz)
    else:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
    return (moment - _EPOCH) // timedelta(microseconds=1)


# -- renderers -----------------------------------------------------------------------------

#: Control characters, and the bidirectional and zero-width formatting characters that can make
#: a name read differently from what it is, shown as escapes instead.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def printable(value: str) -> str:
    """Names come from the network: never let one move the cursor or reorder a line."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def _csv_cell(value: str) -> str:
    # OWASP: spreadsheets run cells that start like a formula; names come from the network.
    value = printable(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def render_csv(report: AuditReport) -> str:
    """One header, one row per subject, workstation and vendor, and a total row.

    ``scope`` says which table a row belongs to (subject, workstation, vendor, total);
    list cells are ``;``-separated; cells that a spreadsheet would run as a formula get a
    leading apostrophe.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def emit(scope: str, r: Row) -> None:
        writer.writerow(
            [
                scope,
                r.type,
                _csv_cell(r.id),
                _csv_cell(r.name),
                "true" if r.unattributed else "false",
                r.sessions,
                r.sanctioned_sessions,
                r.unsanctioned_sessions,
                r.unknown_sessions,
                r.events,
                r.sanctioned_events,
                r.unsanctioned_events,
                r.unknown_events,
                r.users,
                r.workstations,
                _csv_cell(";".join(r.vendors)),
                r.first_seen,
                r.last_seen,
            ]
        )

    for r in report.subjects:
        emit("subject", r)
    for r in report.workstations:
        emit("workstation", r)
    for r in report.vendors:
        emit("vendor", r)
    t = report.totals
    writer.writerow(
        [
            "total",
            "",
            "all",
            t.headline,
            "false",
            t.sessions,
            t.sanctioned_sessions,
            t.unsanctioned_sessions,
            t.unknown_sessions,
            t.events,
            t.sanctioned_events,
            t.unsanctioned_events,
            t.unknown_events,
            t.users,
            t.workstations,
            _csv_cell(";".join(r.id for r in sorted(report.vendors, key=lambda r: r.id))),
            t.first_seen or "",
            t.last_seen or "",
        ]
    )
    return out.getvalue()


def render_json(report: AuditReport) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"


def local_time(iso: str | None, tz: tzinfo) -> str:
    """A UTC timestamp as a short local time for people."""
    if not iso:
        return ""
    ts_us = parse_timestamp_us(iso)
    if ts_us is None:
        return printable(iso)
    return (_EPOCH + timedelta(microseconds=ts_us)).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("s" if count != 1 else "")


def render_table(report: AuditReport, console: Any, tz: tzinfo = UTC) -> None:
    """Rich tables for a terminal.  Every value goes in as ``Text``, never as markup, so a
    user name like ``[red]x`` or one carrying escape sequences prints as itself."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    t = report.totals
    period = ""
    if t.first_seen:
        period = f" from {local_time(t.first_seen, tz)} to {local_time(t.last_seen, tz)}"
    console.print(Text(f"{report.title}", style="bold"))
    console.print(Text(f"{t.headline}{period} ({report.timezone})"))
    console.print(
        Text(
            f"searches = sessions (idle gap > {report.session_gap_seconds:g} s starts a new one); "
            f"{t.sanctioned_sessions} sanctioned, {t.unsanctioned_sessions} unsanctioned, "
            f"{t.unknown_sessions} unknown; {_n(t.events, 'event')}, {_n(t.vendors, 'vendor')}, "
            f"{_n(t.workstations, 'workstation')}, {_n(t.alerts, 'alert')}"
        )
    )

    # Narrow terminals get the counts and dates only; names are never cut (they fold).
    wide = console.width >= 120

    def when(iso: str) -> str:
        text = local_time(iso, tz)
        return text if wide else text[:10]

    def table(title: str, rows: list[Row], first: str, related: str, vendors: bool) -> None:
        tab = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        tab.add_column(first, overflow="fold", min_width=12)
        for name in ("sessions", "unsanct.", "sanct.", "events"):
            tab.add_column(name, justify="right", no_wrap=True)
        if wide and vendors:
            tab.add_column("vendors", overflow="fold")
        if wide:
            tab.add_column(related, overflow="fold")
        tab.add_column("first seen", no_wrap=True)
        tab.add_column("last seen", no_wrap=True)
        for r in rows:
            label = printable(r.name) + (" (unattributed)" if r.unattributed else "")
            others = r.related_users if related == "users" else r.related_workstations
            shown = ", ".join(printable(v) for v in others[:3])
            if len(others) > 3:
                shown += f" +{len(others) - 3} more"
            cells: list[Any] = [
                Text(label),
                str(r.sessions),
                Text(str(r.unsanctioned_sessions), style="red" if r.unsanctioned_sessions else ""),
                str(r.sanctioned_sessions),
                str(r.events),
            ]
            if wide and vendors:
                cells.append(Text(", ".join(printable(v) for v in r.vendor_names)))
            if wide:
                cells.append(Text(shown))
            cells += [when(r.first_seen), when(r.last_seen)]
            tab.add_row(*cells)
        if not rows:
            tab.add_row(Text("(none)"))
        console.print(tab)

    table("Per user", report.subjects, "user / source", "workstations", True)
    table("Per workstation", report.workstations, "workstation", "users", True)
    table("Per vendor", report.vendors, "vendor", "users", False)
    if report.input.malformed or report.input.unusable or report.input.warnings:
        i = report.input
        console.print(
            Text(
                f"input: {i.files} files, {i.lines} lines, {i.malformed} malformed, "
                f"{i.unusable} unusable, {i.duplicates} duplicates"
            )
        )
        for w in i.warnings:
            console.print(Text("warning: " + printable(w)))
