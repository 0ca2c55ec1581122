"""``egress-monitor identities``: who was behind an address at a time, from the identity database.

An investigator holding an event asks the question the sensor answered when it wrote the
event -- and sees the evidence behind the answer: every DHCP lease, lease-file entry, logon
and DHCP host name stored for the address around that time. The database is opened read-only,
so this is safe while the sensor writes it (SQLite WAL).

Exit status: 0 when something is known about the address at that time, 1 when nothing is,
2 for a usage error (no such database, a bad time or address).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from monitor.attribution.bindings import TIER_LIVE, Binding
from monitor.attribution.inventory import InventoryError, load_inventory
from monitor.attribution.resolve import Attribution, to_ecs_fields
from monitor.attribution.store import IdentityStore, StoreError

NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMBER = re.compile(r"\d{1,12}(?:\.\d{1,9})?")


def parse_time(text: str) -> int:
    """``--at`` to Unix nanoseconds: Unix seconds (``1767261600.006111``) or ISO 8601 /
    RFC 3339 (``2026-01-15T10:00:00.006111Z``, an event's ``@timestamp``); a time without an
    offset is UTC, the zone of every ``@timestamp``."""
    value = text.strip()
    if _NUMBER.fullmatch(value):
        try:
            return int(Decimal(value) * NS)
        except InvalidOperation:
            pass
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (ISO 8601 such as 2026-01-15T10:00:00Z, or Unix seconds)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "identities",
        help="who was behind an IP address at a time (identity database)",
        description="Answer, from the identity database a replay (--state-db) or the sensor "
        "kept, who was behind IP at TIME -- the workstation, its MAC and the user, ranked as "
        "the sensor ranks them for events -- and list the evidence stored for the address. "
        "Exit status 0: something is known, 1: nothing is, 2: usage error.",
    )
    p.add_argument("ip", type=_address, metavar="IP")
    p.add_argument("--db", required=True, metavar="PATH", help="identity database file")
    p.add_argument(
        "--at",
        required=True,
        type=parse_time,
        metavar="TIME",
        help="ISO 8601 time (UTC unless an offset is given; an event's @timestamp works) "
        "or Unix seconds",
    )
    p.add_argument("--inventory", metavar="PATH", help="asset inventory (.yaml, .yml or .csv)")
    p.add_argument(
        "--resolver",
        action="append",
        type=_address,
        default=[],
        metavar="IP",
        help="internal resolver address, as the sensor was told (repeatable)",
    )
    p.add_argument(
        "--window",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also list evidence within SECONDS before and after TIME (default 0: only what "
        "covers TIME)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def _when(ns: int | None) -> str | None:
    if ns is None:
        return None
    secs, rest = divmod(ns, NS)
    base = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{rest // 1000:06d}Z"


def _binding_dict(b: Binding, at: int) -> dict[str, Any]:
    return {
        "kind": b.kind,
        "key": b.key,
        "value": b.value,
        "detail": b.detail,
        "source": b.source,
        "tier": "live" if b.tier == TIER_LIVE else "lease-file",
        "start": _when(b.start_ns),
        "end": _when(b.end_ns),
        "end_reason": b.end_reason,
        "last_seen": _when(b.last_ns),
        "covers": b.covers(at),
        "contested": b.contested_at(at),
        "origin": b.origin,
    }


def _answer_dict(a: Attribution) -> dict[str, Any]:
    return {
        "hostname": a.hostname,
        "hostname_source": a.hostname_source,
        "mac": a.mac,
        "mac_source": a.mac_source,
        "user": a.user,
        "user_domain": a.user_domain,
        "user_source": a.user_source,
        "unit": a.unit,
        "source": a.source,
        "confidence": a.confidence,
        "evidence_age_seconds": a.evidence_age_seconds,
        "conflict": a.conflict,
        "stale": a.stale,
        "resolver_only": a.resolver_only,
    }


def _cell(value: object) -> Text:
    """Values come from the network (host and user names): shown literally, never as markup,
    with control and reordering characters escaped (as the audit report shows them)."""
    from monitor.alerts.report import printable  # only when printing tables: a heavy import

    return Text("" if value is None else printable(str(value)))


def _print_tables(ip: str, at: int, answer: Attribution, evidence: list[Binding]) -> None:
    console = Console()
    if not console.is_terminal:
        # Into a file or a pipe: wide enough that the evidence table is not cut to ellipses.
        console = Console(width=max(console.width, 200))
    t = Table(title=f"{ip} at {_when(at)}", title_justify="left", show_header=False)
    t.add_column("field")
    t.add_column("value")
    t.add_column("from")
    user = answer.user
    if user is not None and answer.user_domain:
        user = f"{user} ({answer.user_domain})"
    rows: list[tuple[str, object, object]] = [
        ("workstation", answer.hostname, answer.hostname_source),
        ("MAC", answer.mac, answer.mac_source),
        ("user", user, answer.user_source),
        ("unit", answer.unit, "inventory" if answer.unit else None),
        ("confidence", answer.confidence or "nothing known", None),
        ("evidence age (s)", answer.evidence_age_seconds, None),
    ]
    flags = [
        name
        for name, on in (
            ("conflict", answer.conflict),
            ("stale", answer.stale),
            ("resolver-only", answer.resolver_only),
        )
        if on
    ]
    if flags:
        rows.append(("flags", ", ".join(flags), None))
    for name, value, source in rows:
        t.add_row(name, _cell(value), _cell(source))
    console.print(t)

    e = Table(title="Evidence", title_justify="left")
    for column in ("kind", "key", "value", "detail", "source"):
        e.add_column(column)
    e.add_column("start", no_wrap=True)
    e.add_column("end", no_wrap=True)
    e.add_column("why ended")
    e.add_column("covers", justify="center")
    e.add_column("origin")
    for b in evidence:
        tier = "" if b.tier == TIER_LIVE else " (lease file)"
        e.add_row(
            _cell(b.kind),
            _cell(b.key),
            _cell(b.value),
            _cell(b.detail),
            _cell(b.source + tier),
            _cell(_when(b.start_ns)),
            _cell(_when(b.end_ns) or "open"),
            _cell(b.end_reason),
            "yes" if b.covers(at) else "",
            _cell(b.origin),
        )
    if not evidence:
        e.add_row("(none)")
    console.print(e)


def run(args: argparse.Namespace) -> int:
    try:
        store = IdentityStore(args.db, read_only=True)
    except StoreError as exc:
        print(f"egress-monitor: {exc}", file=sys.stderr)
        return 2
    try:
        if args.inventory:
            try:
                store.set_inventory(load_inventory(args.inventory))
            except InventoryError as exc:
                print(f"egress-monitor: {exc}", file=sys.stderr)
                return 2
        store.set_resolvers(args.resolver)
        if not 0 <= args.at < 2**63 - 1:
            print("egress-monitor: --at is out of range", file=sys.stderr)
            return 2
        answer = store.attribute(args.at, args.ip)
        window = max(0, int(args.window * NS))
        evidence = store.who_had(args.ip, args.at, window_ns=window)
    finally:
        store.close()
    if args.json:
        doc = {
            "ip": args.ip,
            "at": _when(args.at),
            "attribution": _answer_dict(answer),
            "ecs": to_ecs_fields(answer),
            "evidence": [_binding_dict(b, args.at) for b in evidence],
        }
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        _print_tables(args.ip, args.at, answer, evidence)
    return 0 if answer.known else 1
