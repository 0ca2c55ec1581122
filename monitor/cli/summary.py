"""The replay summary on stderr: what was read, what was found, what could not be parsed.

Counts by vendor and protocol only: a summary that listed names or addresses would leak
browsing into a terminal scroll-back.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from monitor.blocklist.matcher import Matcher
from monitor.blocklist.model import BLIND_SPOT_CATEGORIES
from monitor.capture.files import ReplayStats
from monitor.pipeline.engine import ENCRYPTED_DNS_PORT_INDICATOR, Engine

BUILTIN_VENDORS = {ENCRYPTED_DNS_PORT_INDICATOR.vendor.id: ENCRYPTED_DNS_PORT_INDICATOR.vendor}


def print_summary(
    engine: Engine, rstats: ReplayStats, matcher: Matcher, elapsed: float, prefiltered: bool
) -> None:
    console = Console(stderr=True)
    stats = engine.stats

    # Vendor access and blind-spot signals (public resolvers, ECH frontends) in separate tables:
    # a resolver operator is not a face-recognition vendor.
    vendor_rows: dict[str, dict[str, int]] = {}
    blind_rows: dict[str, dict[str, int]] = {}
    for (vendor_id, proto), n in stats.by_vendor_protocol.items():
        vendor = matcher.vendors.get(vendor_id) or BUILTIN_VENDORS.get(vendor_id)
        blind = vendor is None or vendor.category in BLIND_SPOT_CATEGORIES
        name = vendor.name if vendor is not None else vendor_id
        (blind_rows if blind else vendor_rows).setdefault(name, {})[proto] = n
    console.print(_counts_table("Vendor access detected", vendor_rows))
    if blind_rows:
        console.print(_counts_table("Blind spots (encrypted DNS, ECH)", blind_rows))

    t = Table(title="Replay", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("count", justify="right")
    rate = rstats.frames / elapsed if elapsed > 0 else 0.0
    rows: list[tuple[str, object]] = [
        ("files", rstats.files),
        ("packets read" + (" (after BPF prefilter)" if prefiltered else ""), rstats.frames),
        ("bytes read", rstats.bytes),
        ("seconds", f"{elapsed:.2f}"),
        ("packets/s", f"{rate:,.0f}"),
    ]
    # Every engine counter, under its stable name (the same names the metrics use); the zero
    # ones too for the few that prove something by being zero.
    always = {
        "dns_parse_errors",
        "tls_parse_errors",
        "http_parse_errors",
        "flows_evicted",
        "stream_overflow",
        "truncated_frames",
        "detections",
    }
    for name, value in engine.counters().items():
        if value or name in always:
            rows.append((name.replace("_", " "), value))
    for what, value in rows:
        t.add_row(what, str(value))
    console.print(t)
    for warning in rstats.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


def _counts_table(title: str, rows: dict[str, dict[str, int]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("vendor")
    protocols = sorted({p for row in rows.values() for p in row})
    for proto in protocols:
        table.add_column(proto, justify="right")
    table.add_column("total", justify="right", style="bold")
    for name in sorted(rows):
        row = rows[name]
        table.add_row(name, *(str(row.get(p, 0)) for p in protocols), str(sum(row.values())))
    if not rows:
        table.add_row("(none)")
    return table
