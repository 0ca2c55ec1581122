"""The audit report as one self-contained HTML file: inline CSS, inline SVG, no script.

Why this shape: the report is handed to people outside the SOC (an oversight board, a court)
and archived; it must open years later on an offline machine, print cleanly, and not be able
to do anything but display.  So there are no external resources and no JavaScript at all, and
a Content-Security-Policy forbids scripts outright -- defence in depth behind the escaping,
because user and host names in it come from the network and are attacker-controlled.  Every
value goes through :func:`esc` (HTML-escaped, control and bidi characters made visible).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, date, tzinfo

from monitor.alerts.report import AlertRow, AuditReport, Row, local_time, printable

__all__ = ["esc", "render_html", "timeline_svg"]

_COLORS = {"unsanctioned": "#c62828", "sanctioned": "#2e7d32", "unknown": "#8d8d8d"}

#: No scripts, no fetches, no frames: the page can only display itself.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1b1b1b; background: #fff; margin: 0 auto; padding: 24px 32px; max-width: 1400px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
p.meta { color: #555; margin: 0 0 16px; }
p.headline { font-size: 26px; font-weight: 600; margin: 8px 0 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 0 0 8px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card b { display: block; font-size: 20px; }
.card span { color: #555; font-size: 12px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 8px; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
th { background: #f3f3f3; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.time { white-space: nowrap; }
td.bad { color: #b71c1c; font-weight: 600; }
.flag { display: inline-block; font-size: 11px; border: 1px solid #b71c1c; color: #b71c1c;
  border-radius: 3px; padding: 0 4px; margin-left: 4px; }
.chart { width: 100%; overflow-x: auto; }
.chart svg { display: block; max-width: 100%; height: auto; }
.legend span { display: inline-block; margin-right: 16px; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
.notes { color: #444; font-size: 12px; }
.notes li { margin: 2px 0; }
code { font-size: 12px; }
@page { size: A4 landscape; margin: 12mm; }
@media print {
  body { padding: 0; max-width: none; font-size: 11px; }
  h2 { break-after: avoid; }
  table { font-size: 10px; }
  thead { display: table-header-group; }
  tr, .card, svg { break-inside: avoid; }
  .chart { overflow: visible; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def esc(value: object) -> str:
    """Text for HTML and SVG: escaped, quotes included, control/bidi characters visible."""
    return html.escape(printable(str(value)), quote=True)


def _month_label(day: date) -> str:
    return day.strftime("%b %Y")


def timeline_svg(report: AuditReport) -> str:
    """A row per vendor, a bar per day with sessions (stacked by outcome), days along x."""
    days = report.days
    vendors = [r for r in report.vendors if r.id in report.timeline]
    if not days or not vendors:
        return '<p class="notes">No sessions in this period.</p>'
    n = len(days)
    label_w = 190
    day_w = max(2, min(24, 960 // n))
    chart_w = n * day_w
    top = 28
    row_h = 38
    width = label_w + chart_w + 16
    height = top + row_h * len(vendors) + 8
    index = {d: i for i, d in enumerate(days)}
    peak = max(sum(c.values()) for per_day in report.timeline.values() for c in per_day.values())
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-size="11" '
        'font-family="system-ui, DejaVu Sans, sans-serif" '
        f'aria-label="Sessions per day and vendor, {esc(days[0])} to {esc(days[-1])}">'
    ]
    # Axis: a gridline and label at each month start (or each week when the period is short).
    for i, d_text in enumerate(days):
        d = date.fromisoformat(d_text)
        if n <= 45:
            mark = i % 7 == 0
            label = d.strftime("%d %b")
        else:
            mark = d.day == 1 or (i == 0 and d.day < 20)
            label = _month_label(d)
        if not mark:
            continue
        x = label_w + i * day_w
        parts.append(
            f'<line x1="{x}" y1="{top - 6}" x2="{x}" y2="{height - 6}" stroke="#ddd" '
            'stroke-width="1"/>'
        )
        parts.append(f'<text x="{x + 2}" y="{top - 10}" fill="#555">{esc(label)}</text>')
    for row_i, vendor in enumerate(vendors):
        y0 = top + row_i * row_h
        base = y0 + row_h - 6
        parts.append(
            f'<text x="{label_w - 8}" y="{y0 + row_h / 2 + 4:.1f}" text-anchor="end" '
            f'fill="#1b1b1b">{esc(_clip(vendor.name, 28))}</text>'
        )
        parts.append(
            f'<line x1="{label_w}" y1="{base}" x2="{label_w + chart_w}" y2="{base}" '
            'stroke="#999" stroke-width="1"/>'
        )
        for d_text, counts in report.timeline[vendor.id].items():
            day_i = index.get(d_text)
            total = sum(counts.values())
            if day_i is None or total == 0:
                continue
            x = label_w + day_i * day_w
            bar_w = max(1, day_w - 1)
            full = max(3.0, (row_h - 10) * total / peak)
            y = float(base)
            title = (
                f"{vendor.name}, {d_text}: {total} session{'s' * (total != 1)} "
                f"({counts['unsanctioned']} unsanctioned, {counts['sanctioned']} sanctioned, "
                f"{counts['unknown']} unknown)"
            )
            parts.append(f'<g class="day" data-vendor="{esc(vendor.id)}" data-day="{esc(d_text)}">')
            parts.append(f"<title>{esc(title)}</title>")
            for outcome in ("unsanctioned", "sanctioned", "unknown"):
                if not counts[outcome]:
                    continue
                h = full * counts[outcome] / total
                y -= h
                parts.append(
                    f'<rect x="{x}" y="{y:.2f}" width="{bar_w}" height="{h:.2f}" '
                    f'fill="{_COLORS[outcome]}"/>'
                )
            parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rows_table(table_id: str, rows: Sequence[Row], first: str, related: str, tz: tzinfo) -> str:
    head = (
        f"<th>{esc(first)}</th><th class=num>sessions</th><th class=num>unsanctioned</th>"
        "<th class=num>sanctioned</th><th class=num>unknown</th><th class=num>events</th>"
        f"<th>vendors</th><th>{esc(related)}</th><th>first seen</th><th>last seen</th>"
    )
    body = []
    for r in rows:
        others = r.related_users if related == "users" else r.related_workstations
        flag = '<span class="flag">unattributed</span>' if r.unattributed else ""
        bad = " bad" if r.unsanctioned_sessions else ""
        body.append(
            f'<tr data-type="{esc(r.type)}" data-id="{esc(r.id)}">'
            f'<td class="name">{esc(r.name)}{flag}</td>'
            f'<td class="num" data-field="sessions">{r.sessions}</td>'
            f'<td class="num{bad}" data-field="unsanctioned_sessions">'
            f"{r.unsanctioned_sessions}</td>"
            f'<td class="num" data-field="sanctioned_sessions">{r.sanctioned_sessions}</td>'
            f'<td class="num" data-field="unknown_sessions">{r.unknown_sessions}</td>'
            f'<td class="num" data-field="events">{r.events}</td>'
            f"<td>{esc(', '.join(r.vendor_names))}</td>"
            f"<td>{esc(', '.join(others))}</td>"
            f'<td class="time">{esc(local_time(r.first_seen, tz))}</td>'
            f'<td class="time">{esc(local_time(r.last_seen, tz))}</td></tr>'
        )
    if not rows:
        body.append('<tr><td colspan="10">none</td></tr>')
    return (
        f'<table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _alerts_table(alerts: Sequence[AlertRow], tz: tzinfo) -> str:
    body = []
    for a in alerts:
        evidence = ""
        if a.evidence_path:
            evidence = f"<code>{esc(a.evidence_path)}</code>"
            if a.evidence_sha256:
                evidence += f"<br><code>sha256 {esc(a.evidence_sha256)}</code>"
        flag = '<span class="flag">unattributed</span>' if a.unattributed else ""
        body.append(
            f'<tr data-id="{esc(a.id)}"><td class="time">{esc(local_time(a.first_seen, tz))}'
            f"</td><td>{esc(a.severity)}</td><td>{esc(a.status)}</td>"
            f"<td>{esc(a.subject_type)} {esc(a.subject)}{flag}</td><td>{esc(a.vendor)}</td>"
            f'<td class="num">{a.sessions}</td><td class="num">{a.events}</td>'
            f"<td>{evidence}</td></tr>"
        )
    return (
        '<table id="alerts"><thead><tr><th>opened</th><th>severity</th><th>status</th>'
        "<th>subject</th><th>vendor</th><th class=num>sessions</th><th class=num>events</th>"
        f"<th>evidence</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def render_html(report: AuditReport, tz: tzinfo = UTC) -> str:
    t = report.totals
    period = "no vendor access in the input"
    if t.first_seen:
        period = (
            f"{local_time(t.first_seen, tz)} to {local_time(t.last_seen, tz)} ({report.timezone})"
        )
    scope = []
    if report.since:
        scope.append(f"since {local_time(report.since, tz)}")
    if report.until:
        scope.append(f"until {local_time(report.until, tz)} (exclusive)")
    meta = f"Activity {period}"
    if scope:
        meta += "; report limited to " + ", ".join(scope)
    if report.generated:
        meta += f"; generated {report.generated}"
    cards = [
        ("total-users", t.users, "users"),
        ("total-sessions", t.sessions, "searches (sessions)"),
        ("total-unsanctioned", t.unsanctioned_sessions, "unsanctioned sessions"),
        ("total-sanctioned", t.sanctioned_sessions, "sanctioned sessions"),
        ("total-unknown", t.unknown_sessions, "sessions, approval unknown"),
        ("total-events", t.events, "events"),
        ("total-vendors", t.vendors, "vendors"),
        ("total-workstations", t.workstations, "workstations"),
        ("total-unattributed", t.unattributed_subjects, "unattributed sources"),
        ("total-alerts", t.alerts, "alerts"),
    ]
    cards_html = "".join(
        f'<div class="card"><b id="{cid}">{value}</b><span>{esc(label)}</span></div>'
        for cid, value, label in cards
    )
    legend = "".join(
        f'<span><i style="background:{color}"></i>{esc(name)}</span>'
        for name, color in _COLORS.items()
    )
    i = report.input
    notes = [
        "A search is a session: accesses by the same user (or workstation, or address) to the "
        f"same vendor with no idle gap over {report.session_gap_seconds:g} seconds.",
        "Only vendor-access events count; alerts summarise the same accesses and are listed, "
        "not counted.",
        "A session is unsanctioned if any of its accesses was not covered by an approval; "
        "unknown if its events were never checked against the approvals.",
        "Unattributed: no user or workstation name was known, only an IP address.",
        f"Input: {i.files} file(s), {i.lines} line(s), {i.events} counted event(s), "
        f"{i.duplicates} duplicate(s), {i.malformed} malformed line(s), {i.unusable} unusable "
        f"event(s), {i.out_of_range} outside the period, {i.other} other document(s).",
    ]
    notes.extend(f"Warning: {w}" for w in i.warnings)
    alerts_html = (
        f"<h2>Alerts ({len(report.alerts)})</h2>{_alerts_table(report.alerts, tz)}"
        if report.alerts
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="egress-monitor report">
<title>{esc(report.title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>{esc(report.title)}</h1>
<p class="meta">{esc(meta)}</p>
<p class="headline" id="headline">{esc(t.headline)}</p>
<div class="cards">{cards_html}</div>
</header>
<main>
<h2>Timeline: sessions per day and vendor</h2>
<div class="chart" id="timeline">{timeline_svg(report)}</div>
<p class="legend">{legend}</p>
<h2>Per user</h2>
{_rows_table("subjects", report.subjects, "user / source", "workstations", tz)}
<h2>Per workstation</h2>
{_rows_table("workstations", report.workstations, "workstation", "users", tz)}
<h2>Per vendor</h2>
{_rows_table("vendors", report.vendors, "vendor", "users", tz)}
{alerts_html}
<h2>How to read this report</h2>
<ul class="notes">{"".join(f"<li>{esc(n)}</li>" for n in notes)}</ul>
</main>
</body>
</html>
"""
