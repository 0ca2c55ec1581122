"""The alert engine: turns vendor-access events into alerts a SOC can act on.

A SOC needs to hear about the first use at once, and then be told how much use followed --
not receive fifty pages for fifty connections.  So the first unsanctioned access by a subject
(a user, else a workstation, else a bare IP) to a vendor opens an alert immediately, further
accesses in the same window are folded into it and counted, and when the window is over one
closing update with the totals goes out under the same alert id (a SIEM that indexes by
``event.id`` simply overwrites the open alert with the closed one).

Sans-IO and deterministic: time is the events' ``@timestamp`` (packet time) or what the caller
passes to ``flush``; nothing reads the wall clock, so replaying a capture reproduces the same
alerts, ids and all.  Every document a window produces (including its closing update) depends
only on the events, never on when ``flush`` happened to be called.
"""

from __future__ import annotations

import copy
import heapq
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.alerts.approvals import (
    Approval,
    Approvals,
    normalize_user,
    normalize_workstation,
)
from monitor.alerts.schedule import Schedule, ScheduleError
from monitor.alerts.sessions import SessionKey, SessionTracker, stable_id
from monitor.blocklist.model import SEVERITY_LEVELS, SEVERITY_NUMBERS
from monitor.events.ecs import ECS_VERSION

__all__ = [
    "AlertConfig",
    "AlertConfigError",
    "AlertEngine",
    "AlertStats",
    "Subject",
    "subject_of",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
#: Timestamps outside 1900..9000 are garbage, and refusing them keeps every later date
#: calculation (window ends, local time in the schedule) clear of datetime's year limits.
_MIN_US = (datetime(1900, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_US
_MAX_US = (datetime(9000, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_US
_MAX_WINDOW_SECONDS = 366 * 86400

#: Fields of the triggering event an alert carries, so the SOC sees who, where and how.
_TRIGGER_FIELDS = ("source", "destination", "network", "url", "match")
_CRITICAL = len(SEVERITY_LEVELS) - 1


class AlertConfigError(ValueError):
    """An alerting configuration problem; ``where`` is the dotted path of the bad setting."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class AlertConfig:
    #: Accesses within this long after an alert opens are folded into it.
    window_seconds: float = 3600.0
    #: An idle gap longer than this (packet time) starts a new session.
    session_gap_seconds: float = 120.0
    #: This many sessions within one window raise the severity one level.
    repeat_sessions: int = 3
    #: Business hours; None means no use is ever out of hours.
    schedule: Schedule | None = None
    #: Bound on open alert windows; the oldest is closed early (and counted) when full.
    max_windows: int = 10_000
    #: Bound on tracked sessions; the least recently active is forgotten when full.
    max_sessions: int = 100_000
    rule_name: str = "Access to a facial-recognition service"
    #: Emit an "open" update when a window's severity rises (at most three per window), so a
    #: repeat or out-of-hours escalation is visible before the window closes.
    escalation_updates: bool = True

    def __post_init__(self) -> None:
        checks = (
            ("window_seconds", _positive(self.window_seconds, _MAX_WINDOW_SECONDS)),
            ("session_gap_seconds", _positive(self.session_gap_seconds, _MAX_WINDOW_SECONDS)),
            (
                "repeat_sessions",
                isinstance(self.repeat_sessions, int) and self.repeat_sessions >= 2,
            ),
            ("max_windows", isinstance(self.max_windows, int) and self.max_windows >= 1),
            ("max_sessions", isinstance(self.max_sessions, int) and self.max_sessions >= 1),
            ("rule_name", isinstance(self.rule_name, str) and bool(self.rule_name.strip())),
        )
        for name, ok in checks:
            if not ok:
                raise AlertConfigError(f"alerts.{name}", f"invalid value {getattr(self, name)!r}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, where: str = "alerts") -> AlertConfig:
        """Build from the ``alerts:`` configuration section; unknown keys are errors.

        Keys: window_seconds, session_gap_seconds, repeat_sessions, max_windows, max_sessions,
        rule_name, escalation_updates, schedule (see ``Schedule.from_mapping``).
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise AlertConfigError(where, "must be a mapping")
        allowed = set(cls.__dataclass_fields__)
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in allowed:
                raise AlertConfigError(
                    f"{where}.{key}", f"unknown setting (allowed: {', '.join(sorted(allowed))})"
                )
            if key == "schedule":
                if value is not None:
                    try:
                        kwargs["schedule"] = Schedule.from_mapping(value, f"{where}.schedule")
                    except ScheduleError as exc:
                        raise AlertConfigError(exc.where, exc.problem) from None
                continue
            if key == "escalation_updates" and not isinstance(value, bool):
                raise AlertConfigError(f"{where}.{key}", "must be true or false")
            if (
                key != "rule_name"
                and key != "escalation_updates"
                and (isinstance(value, bool) or not isinstance(value, int | float))
            ):
                raise AlertConfigError(f"{where}.{key}", f"must be a number, got {value!r}")
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except AlertConfigError as exc:
            raise AlertConfigError(exc.where.replace("alerts", where, 1), exc.problem) from None


def _positive(value: object, limit: float) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= limit
    )


@dataclass(frozen=True, slots=True)
class Subject:
    """Who an access is attributed to; ``id`` is normalised for grouping and approvals."""

    type: str  # "user" | "workstation" | "ip"
    id: str
    user: str | None
    user_domain: str | None
    workstation: str | None

    @property
    def unattributed(self) -> bool:
        return self.type == "ip"


def subject_of(event: Mapping[str, Any]) -> Subject | None:
    """``source.user.name``, else ``source.domain``, else ``source.ip``; None if none is usable.

    Users are keyed by name alone (case-folded): NTLM says "PD" where Kerberos says
    "PD.EXAMPLE", and one person must not become two subjects because of that.
    """
    source = event.get("source")
    if not isinstance(source, Mapping):
        return None
    user_obj = source.get("user")
    user = domain = None
    if isinstance(user_obj, Mapping):
        name = user_obj.get("name")
        if isinstance(name, str) and name.strip():
            user = name.strip()
            dom = user_obj.get("domain")
            domain = dom.strip() if isinstance(dom, str) and dom.strip() else None
    ws_raw = source.get("domain")
    workstation = ws_raw.strip() if isinstance(ws_raw, str) and ws_raw.strip(" .") else None
    if user is not None:
        bare = user.rpartition("\\")[2] or user
        return Subject("user", normalize_user(bare), user, domain, workstation)
    if workstation is not None:
        return Subject("workstation", normalize_workstation(workstation), None, None, workstation)
    ip = source.get("ip")
    if isinstance(ip, str) and ip.strip():
        try:
            ip_id = str(ipaddress.ip_address(ip.strip()))
        except ValueError:
            ip_id = ip.strip()
        return Subject("ip", ip_id, None, None, None)
    return None


@dataclass(slots=True)
class AlertStats:
    """Counters for the metrics endpoint; all only ever increase."""

    events: int = 0
    vendor_access: int = 0
    sanctioned: int = 0
    unsanctioned: int = 0
    #: vendor-access events without a usable timestamp, vendor or subject; passed through.
    malformed: int = 0
    alerts_opened: int = 0
    alerts_escalated: int = 0
    alerts_closed: int = 0
    windows_evicted: int = 0


@dataclass(slots=True)
class _Window:
    alert_id: str
    key: SessionKey
    subject: Subject
    start_us: int
    end_us: int
    first_us: int
    last_us: int
    trigger: dict[str, Any]
    trigger_id: str | None
    base_level: int
    out_of_hours: bool
    last_session: str
    events: int = 1
    sessions: int = 1
    emitted_level: int = -1
    sequence: int = 0
    closed: bool = False
    related: dict[str, Approval] = field(default_factory=dict)


class AlertEngine:
    """Feed every event to ``process``; call ``flush`` with the current packet time now and
    then (e.g. once a second) to close finished windows, and ``close`` at shutdown.

    ``approvals`` may be replaced at any time (after a successful reload); windows already
    open stay open -- an approval granted later does not unsend an alert.
    """

    def __init__(self, config: AlertConfig | None = None, approvals: Approvals | None = None):
        self.config = config or AlertConfig()
        self.approvals = approvals if approvals is not None else Approvals.empty()
        self.stats = AlertStats()
        self._window_us = round(self.config.window_seconds * 1_000_000)
        self._sessions = SessionTracker(
            round(self.config.session_gap_seconds * 1_000_000), self.config.max_sessions
        )
        self._windows: OrderedDict[SessionKey, _Window] = OrderedDict()
        self._deadlines: list[tuple[int, int, _Window]] = []
        self._seq = 0

    # -- introspection ---------------------------------------------------------------------

    @property
    def open_windows(self) -> int:
        return len(self._windows)

    @property
    def live_sessions(self) -> int:
        return len(self._sessions)

    @property
    def sessions_evicted(self) -> int:
        return self._sessions.evicted

    # -- input -----------------------------------------------------------------------------

    def process(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The event (annotated if it is a vendor access), then any alert documents it caused.

        Only ``event.action == "vendor-access"`` is considered; everything else, and vendor
        accesses too broken to attribute, come back as the very same object.  The input is
        never modified: the annotated event is a copy.
        """
        self.stats.events += 1
        ev = event.get("event") if isinstance(event, Mapping) else None
        if not isinstance(ev, Mapping) or ev.get("action") != "vendor-access":
            return [event]
        self.stats.vendor_access += 1
        ts_us = parse_timestamp_us(event.get("@timestamp"))
        match = event.get("match")
        vendor = match.get("vendor") if isinstance(match, Mapping) else None
        subject = subject_of(event)
        if ts_us is None or not isinstance(vendor, str) or not vendor or subject is None:
            self.stats.malformed += 1
            return [event]

        key: SessionKey = (subject.type, subject.id, vendor)
        session, _ = self._sessions.touch(key, ts_us)
        found = self.approvals.lookup(
            vendor=vendor,
            ts_us=ts_us,
            user=subject.user,
            user_domain=subject.user_domain,
            workstation=subject.workstation,
        )
        annotated = dict(event)
        annotated["event"] = {**ev}
        annotated["session"] = {"id": session}
        if found.approval is not None:
            self.stats.sanctioned += 1
            annotated["event"]["outcome"] = "sanctioned"
            annotated["approval"] = {
                "reference": found.approval.reference,
                "approver": found.approval.approver,
            }
            return [annotated]
        self.stats.unsanctioned += 1
        annotated["event"]["outcome"] = "unsanctioned"
        out: list[dict[str, Any]] = [annotated]
        out.extend(self._fold(key, subject, ts_us, session, event, found.related))
        return out

    def flush(self, now: float | datetime) -> list[dict[str, Any]]:
        """Close every window whose end is at or before ``now`` (epoch seconds or aware
        datetime, packet time); returns their closing updates, earliest end first."""
        now_us = _to_us(now)
        self._sessions.expire(now_us)
        out: list[dict[str, Any]] = []
        while self._deadlines and self._deadlines[0][0] <= now_us:
            _, _, window = heapq.heappop(self._deadlines)
            if not window.closed:
                out.append(self._close(window, "window-ended", window.end_us))
        return out

    def close(self, now: float | datetime | None = None) -> list[dict[str, Any]]:
        """Close everything (shutdown).  Windows already over close as usual; the rest close
        early with ``closed_reason`` "shutdown" at ``now`` (or at their last access)."""
        out: list[dict[str, Any]] = []
        now_us = None if now is None else _to_us(now)
        if now_us is not None:
            out.extend(self.flush(now))
        for window in sorted(self._windows.values(), key=lambda w: (w.end_us, w.alert_id)):
            at = window.last_us if now_us is None else max(window.last_us, now_us)
            out.append(self._close(window, "shutdown", min(at, window.end_us)))
        self._deadlines.clear()
        self._sessions.clear()
        return out

    # -- windows ---------------------------------------------------------------------------

    def _fold(
        self,
        key: SessionKey,
        subject: Subject,
        ts_us: int,
        session: str,
        event: Mapping[str, Any],
        related: tuple[Approval, ...],
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        level = _severity_level(event)
        out_of_hours = self.config.schedule is not None and self.config.schedule.is_out_of_hours(
            ts_us
        )
        window = self._windows.get(key)
        if window is not None and ts_us >= window.end_us:
            out.append(self._close(window, "window-ended", window.end_us))
            window = None
        if window is None:
            while len(self._windows) >= self.config.max_windows:
                oldest = next(iter(self._windows.values()))
                self.stats.windows_evicted += 1
                out.append(self._close(oldest, "evicted", min(ts_us, oldest.end_us)))
            ev = event.get("event")
            trigger_id = ev.get("id") if isinstance(ev, Mapping) else None
            window = _Window(
                alert_id=stable_id("alert", key, ts_us),
                key=key,
                subject=subject,
                start_us=ts_us,
                end_us=ts_us + self._window_us,
                first_us=ts_us,
                last_us=ts_us,
                trigger={
                    name: copy.deepcopy(event[name]) for name in _TRIGGER_FIELDS if name in event
                },
                trigger_id=trigger_id if isinstance(trigger_id, str) else None,
                base_level=level,
                out_of_hours=out_of_hours,
                last_session=session,
            )
            for approval in related:
                window.related.setdefault(approval.reference, approval)
            self._windows[key] = window
            self._seq += 1
            heapq.heappush(self._deadlines, (window.end_us, self._seq, window))
            self._compact_deadlines()
            self.stats.alerts_opened += 1
            out.append(self._document(window, "open", ts_us))
            return out

        window.events += 1
        if session != window.last_session:
            window.sessions += 1
            window.last_session = session
        window.first_us = min(window.first_us, ts_us)
        window.last_us = max(window.last_us, ts_us)
        window.base_level = max(window.base_level, level)
        window.out_of_hours = window.out_of_hours or out_of_hours
        for approval in related:
            window.related.setdefault(approval.reference, approval)
        if self.config.escalation_updates and self._level(window) > window.emitted_level:
            self.stats.alerts_escalated += 1
            out.append(self._document(window, "open", ts_us))
        return out

    def _close(self, window: _Window, reason: str, at_us: int) -> dict[str, Any]:
        window.closed = True
        del self._windows[window.key]
        self.stats.alerts_closed += 1
        return self._document(window, "closed", at_us, reason)

    def _compact_deadlines(self) -> None:
        # Windows closed by a later access (rather than by flush) leave stale heap entries;
        # rebuild when they dominate so a caller that rarely flushes stays bounded.
        if len(self._deadlines) > 2 * len(self._windows) + 64:
            self._deadlines = [entry for entry in self._deadlines if not entry[2].closed]
            heapq.heapify(self._deadlines)

    def _level(self, window: _Window) -> int:
        return min(_CRITICAL, window.base_level + len(self._raised_by(window)))

    def _raised_by(self, window: _Window) -> list[str]:
        reasons = []
        if window.sessions >= self.config.repeat_sessions:
            reasons.append("repeat-sessions")
        if window.out_of_hours:
            reasons.append("out-of-hours")
        return reasons

    # -- documents -------------------------------------------------------------------------

    def _document(
        self, window: _Window, status: str, updated_us: int, closed_reason: str | None = None
    ) -> dict[str, Any]:
        level = self._level(window)
        window.emitted_level = max(window.emitted_level, level)
        label = SEVERITY_LEVELS[level]
        subject = window.subject
        trigger = copy.deepcopy(window.trigger)
        match = trigger.get("match")
        vendor_name = window.key[2]
        if isinstance(match, Mapping) and isinstance(match.get("vendor_name"), str):
            vendor_name = match["vendor_name"]
        who = f"{subject.type} {subject.id}" + (" (unattributed)" if subject.unattributed else "")
        reason = f"{vendor_name} accessed by {who}"
        if status == "closed":
            reason += f": {window.events} accesses in {window.sessions} sessions"
        alert: dict[str, Any] = {
            "status": status,
            "severity": label,
            "base_severity": SEVERITY_LEVELS[window.base_level],
            "severity_raised_by": self._raised_by(window),
            "subject": {
                "type": subject.type,
                "id": subject.id,
                "unattributed": subject.unattributed,
            },
            "vendor": window.key[2],
            "window": {"start": _iso(window.start_us), "end": _iso(window.end_us)},
            "first_seen": _iso(window.first_us),
            "last_seen": _iso(window.last_us),
            "updated": _iso(updated_us),
            "count": {"events": window.events, "sessions": window.sessions},
            "sequence": window.sequence,
        }
        window.sequence += 1
        if window.trigger_id is not None:
            alert["trigger_event_id"] = window.trigger_id
        if closed_reason is not None:
            alert["closed_reason"] = closed_reason
        if window.related:
            alert["related_approvals"] = [
                {
                    "reference": a.reference,
                    "approver": a.approver,
                    "valid_from": _iso(a.valid_from_us),
                    "valid_until": _iso(a.valid_until_us),
                }
                for a in window.related.values()
            ]
        doc: dict[str, Any] = {
            "@timestamp": _iso(window.start_us),
            "ecs": {"version": ECS_VERSION},
            "event": {
                "kind": "alert",
                "category": ["network"],
                "type": ["info"],
                "action": "vendor-access-alert",
                "dataset": "egress_monitor.alert",
                "module": "egress_monitor",
                "id": window.alert_id,
                "severity": SEVERITY_NUMBERS[label],
                "outcome": "unsanctioned",
                "start": _iso(window.first_us),
                "end": _iso(window.last_us),
                "reason": reason,
            },
            "rule": {
                "id": "egress-monitor.vendor-access",
                "name": self.config.rule_name,
                "ruleset": "egress-monitor",
            },
        }
        doc.update(trigger)
        related = _related(trigger, subject)
        if related:
            doc["related"] = related
        doc["alert"] = alert
        return doc


def _related(trigger: Mapping[str, Any], subject: Subject) -> dict[str, list[str]]:
    """ECS ``related.*`` so analysts can pivot from the alert to everything about the subject."""
    related: dict[str, list[str]] = {}
    ips: list[str] = []
    for side in ("source", "destination"):
        obj = trigger.get(side)
        if isinstance(obj, Mapping) and isinstance(obj.get("ip"), str) and obj["ip"] not in ips:
            ips.append(obj["ip"])
    if ips:
        related["ip"] = ips
    if subject.user is not None:
        related["user"] = [subject.user]
    hosts = []
    if subject.workstation is not None:
        hosts.append(subject.workstation)
    url = trigger.get("url")
    if isinstance(url, Mapping) and isinstance(url.get("domain"), str):
        hosts.append(url["domain"])
    if hosts:
        related["hosts"] = hosts
    return related


def _severity_level(event: Mapping[str, Any]) -> int:
    """The indicator's effective severity (the vendor's unless the blocklist overrides it)."""
    match = event.get("match")
    label = match.get("severity") if isinstance(match, Mapping) else None
    if isinstance(label, str) and label in SEVERITY_LEVELS:
        return SEVERITY_LEVELS.index(label)
    ev = event.get("event")
    number = ev.get("severity") if isinstance(ev, Mapping) else None
    if isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number):
        # The highest level the number reaches; below "low" still counts as low.
        level = 0
        for i, name in enumerate(SEVERITY_LEVELS):
            if number >= SEVERITY_NUMBERS[name]:
                level = i
        return level
    return SEVERITY_LEVELS.index("medium")


def parse_timestamp_us(value: object) -> int | None:
    """RFC 3339 ``@timestamp`` to microseconds since the epoch; None if unusable.

    A timestamp without an offset is taken as UTC, which is what the pipeline writes.
    """
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        ts_us = (moment - _EPOCH) // _ONE_US
    except OverflowError:
        return None
    return ts_us if _MIN_US <= ts_us <= _MAX_US else None


def _to_us(now: float | datetime) -> int:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("flush time must be timezone-aware")
        return (now - _EPOCH) // _ONE_US
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError(f"flush time must be epoch seconds, got {now!r}")
    if isinstance(now, int):
        return now * 1_000_000
    return round(now * 1_000_000)


def _iso(ts_us: int) -> str:
    moment = _EPOCH + timedelta(microseconds=ts_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
