"""The replay summary on stderr: what was read, what was found, what could not be parsed.

Counts by vendor and protocol only: a summary that listed names or addresses would leak
browsing into a terminal scroll-back.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from monitor.blocklist.matcher import Matcher
from monitor.capture.files import ReplayStats
from monitor.pipeline.engine import Engine


def print_summary(
    engine: Engine, rstats: ReplayStats, matcher: Matcher, elapsed: float, prefiltered: bool
) -> None:
    console = Console(stderr=True)
    stats = engine.stats

    hits = Table(title="Vendor access detected", title_justify="left")
    hits.add_column("vendor")
    protocols = sorted(stats.by_protocol)
    for proto in protocols:
        hits.add_column(proto, justify="right")
    hits.add_column("total", justify="right", style="bold")
    per: dict[str, dict[str, int]] = {}
    for (vendor, proto), n in stats.by_vendor_protocol.items():
        per.setdefault(vendor, {})[proto] = n
    for vendor in sorted(per):
        row = per[vendor]
        name = matcher.vendors[vendor].name if vendor in matcher.vendors else vendor
        hits.add_row(name, *(str(row.get(p, 0)) for p in protocols), str(sum(row.values())))
    if not per:
        hits.add_row("(none)")
    console.print(hits)

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
