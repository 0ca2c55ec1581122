"""``egress-monitor report``: the audit report from the sensor's event files.

Reads JSON-lines event files (and their rotations, gzipped or not) or directories of them and
prints who used which face-search service: a table on a terminal, CSV or JSON for other
programs, or one self-contained HTML file for people.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.alerts.report import (
    DEFAULT_SESSION_GAP,
    AuditReport,
    parse_when,
    render_csv,
    render_json,
    render_table,
    report_from_paths,
)
from monitor.alerts.report_html import render_html

FORMATS = ("table", "csv", "json", "html")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="audit report: vendor use per user and workstation",
        description="Count vendor accesses in event files: per user, per workstation and per "
        "vendor, sessions (searches), first and last seen, sanctioned and unsanctioned. "
        "Only vendor-access events count; alerts are listed, not counted.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="EVENTS_OR_DIR",
        help="JSON-lines event files (.gz too) or directories (walked for *.jsonl, *.json, "
        "*.ndjson, *.log and their rotations .1, .2.gz, -YYYYMMDD)",
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="count events at or after WHEN: a date (midnight) or an ISO 8601 time; "
        "without an offset it is in --timezone",
    )
    p.add_argument(
        "--until",
        metavar="WHEN",
        help="count events before WHEN; a bare date includes that whole day",
    )
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default="-",
        help="write here instead of stdout (written to a temporary file, then renamed)",
    )
    p.add_argument(
        "--timezone",
        default="UTC",
        metavar="ZONE",
        help="IANA zone for days in the timeline and times shown to people (default UTC); "
        "CSV and JSON timestamps stay UTC",
    )
    p.add_argument(
        "--session-gap",
        type=float,
        default=DEFAULT_SESSION_GAP,
        metavar="SECONDS",
        help="idle gap that starts a new session, for events the alert engine did not "
        f"annotate (default {DEFAULT_SESSION_GAP:g}, the engine's)",
    )
    p.add_argument("--title", default=None, help="report title (HTML and table)")
    p.set_defaults(func=run)


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    return ZoneInfo(name)


def run(args: argparse.Namespace) -> int:
    try:
        tz = _zone(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"egress-monitor: unknown time zone {args.timezone!r}", file=sys.stderr)
        return 2
    try:
        since = parse_when(args.since, tz) if args.since else None
        until = parse_when(args.until, tz, end_of_day=True) if args.until else None
    except ValueError as exc:
        print(f"egress-monitor: bad --since/--until: {exc}", file=sys.stderr)
        return 2
    if since is not None and until is not None and until <= since:
        print("egress-monitor: --until must be after --since", file=sys.stderr)
        return 2
    if not 0 < args.session_gap <= 366 * 86400:
        print("egress-monitor: --session-gap must be positive", file=sys.stderr)
        return 2
    generated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        report = report_from_paths(
            args.inputs,
            since_us=since,
            until_us=until,
            session_gap_seconds=args.session_gap,
            tz=tz,
            tz_name=args.timezone if tz is not UTC else "UTC",
            generated=generated,
            title=args.title,
        )
    except FileNotFoundError as exc:
        print(f"egress-monitor: {exc}", file=sys.stderr)
        return 2
    for warning in report.input.warnings:
        print(f"egress-monitor: warning: {warning}", file=sys.stderr)
    if args.format == "table":
        _table(report, args.output, tz)
        return 0
    if args.format == "csv":
        text = render_csv(report)
    elif args.format == "json":
        text = render_json(report)
    else:
        text = render_html(report, tz)
    _write(text, args.output, newline="" if args.format == "csv" else None)
    return 0


def _table(report: AuditReport, output: str, tz: tzinfo) -> None:
    from rich.console import Console

    if output == "-":
        render_table(report, Console(), tz)
        return
    with open(output, "w", encoding="utf-8") as fh:
        render_table(report, Console(file=fh, width=160, color_system=None), tz)


def _write(text: str, output: str, newline: str | None) -> None:
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(output)
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
