"""``egress-monitor top``: a live view of a running sensor for the operator's terminal.

Two sources, one model. The daemon's status file (``<state_dir>/status.json``, mode 0600) holds
the exact Prometheus exposition of ``/metrics`` plus the last vendor hits with source address,
workstation and user; the metrics endpoint holds only the counts. Both are parsed as Prometheus
text, so the view shows what Prometheus sees -- and the people behind the hits only to someone
allowed to read the daemon's own state (root or the daemon's user), never through metrics,
which leave the host. When the status file cannot be read, ``top`` falls back to the endpoint
and says why the hits are missing.

Rates (packets/s and the like) are the difference of two readings over the time between them.
``run --console`` renders the same view from inside the daemon.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from monitor.config.sensor import DEFAULT_PATH, DEFAULT_STATE_DIR, SensorConfigError, load_config
from monitor.pipeline.sensor import STATUS_FILE, STATUS_FORMAT

PASSWORD_ENV = "EGRESS_MONITOR_METRICS_PASSWORD"
#: A status file older than this means the daemon is not updating it (stopped or hung).
STALE_AFTER_S = 10.0
MAX_HIT_ROWS = 15
_SEVERITY_STYLE = {"critical": "bold red", "high": "dark_orange", "medium": "yellow", "low": "cyan"}
_P = "egress_monitor_"

Samples = dict[str, list[tuple[dict[str, str], float]]]


class SourceError(Exception):
    """The source cannot be read now (missing, no permission, endpoint down)."""


@dataclass(slots=True)
class Reading:
    """One look at the sensor: its metrics, and (from the status file) its recent hits."""

    at: float
    source: str
    samples: Samples
    recent: list[dict[str, Any]] | None = None
    note: str | None = None
    running: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def values(self, name: str) -> list[tuple[dict[str, str], float]]:
        return self.samples.get(_P + name, [])

    def value(self, name: str, default: float | None = None, **labels: str) -> float | None:
        for lab, v in self.values(name):
            if all(lab.get(k) == want for k, want in labels.items()):
                return v
        return default

    def total(self, name: str) -> float:
        return sum(v for _, v in self.values(name))


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return samples


def reading_from_status(data: Mapping[str, Any], source: str) -> Reading:
    if data.get("format") != STATUS_FORMAT:
        raise SourceError(f"{source}: not an egress-monitor status file")
    try:
        samples = parse_metrics(str(data["metrics"]))
        written = float(data["written"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"{source}: unreadable status ({exc})") from None
    recent = data.get("recent")
    return Reading(
        at=written,
        source=source,
        samples=samples,
        recent=list(recent) if isinstance(recent, list) else None,
        running=bool(data.get("running")),
        extra={k: data.get(k) for k in ("alerts", "reload", "pid", "documents")},
    )


class Source(Protocol):
    def read(self) -> Reading: ...


class StatusFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> Reading:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise SourceError(f"{self.path} does not exist: is the sensor running?") from None
        except PermissionError:
            raise SourceError(
                f"{self.path}: permission denied (run as root or as the sensor's user)"
            ) from None
        except (OSError, ValueError) as exc:
            raise SourceError(f"{self.path}: {exc}") from None
        if not isinstance(data, dict):
            raise SourceError(f"{self.path}: not an egress-monitor status file")
        return reading_from_status(data, f"status file {self.path}")


class MetricsEndpoint:
    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        cafile: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.headers = {"Accept": "text/plain"}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.context = (
            ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
        )

    def read(self) -> Reading:
        request = urllib.request.Request(self.url, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as r:
                text = r.read(16 << 20).decode("utf-8")
        except urllib.error.HTTPError as exc:
            raise SourceError(f"{self.url}: HTTP {exc.code} {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise SourceError(f"{self.url}: {exc}") from None
        try:
            samples = parse_metrics(text)
        except ValueError as exc:
            raise SourceError(f"{self.url}: not Prometheus text ({exc})") from None
        return Reading(at=time.time(), source=f"metrics {self.url}", samples=samples)


class Fallback:
    """The status file when readable, else the metrics endpoint (without the hits)."""

    def __init__(self, status: StatusFile, metrics: MetricsEndpoint | None) -> None:
        self.status = status
        self.metrics = metrics

    def read(self) -> Reading:
        try:
            return self.status.read()
        except SourceError as exc:
            if self.metrics is None:
                raise
            reading = self.metrics.read()
            reading.note = f"recent hits are only in the status file: {exc}"
            return reading


class InProcess:
    """``run --console``: the daemon's own status, no file in between."""

    def __init__(self, status: Callable[[], Mapping[str, Any]]) -> None:
        self.status = status

    def read(self) -> Reading:
        return reading_from_status(self.status(), "this sensor")


# -- rendering ----------------------------------------------------------------------------------


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}d {h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


class _Rates:
    def __init__(self, cur: Reading, prev: Reading | None) -> None:
        self.cur = cur
        self.prev = prev
        self.dt = cur.at - prev.at if prev is not None else 0.0

    def rate(self, name: str, **labels: str) -> str:
        if self.prev is None or self.dt <= 0:
            return "…"
        now = self.cur.value(name, None, **labels)
        before = self.prev.value(name, None, **labels)
        if now is None:
            return "-"
        delta = now - (before or 0.0)
        if delta < 0:  # the daemon restarted
            return "…"
        return f"{delta / self.dt:,.1f}"

    def delta(self, name: str, **labels: str) -> float:
        if self.prev is None:
            return 0.0
        now = self.cur.value(name, 0.0, **labels) or 0.0
        before = self.prev.value(name, 0.0, **labels) or 0.0
        return max(0.0, now - before)


def _header(cur: Reading, now: float) -> Text:
    text = Text("egress-monitor", style="bold")
    start = cur.value("start_timestamp_seconds")
    if start:
        text.append(f"  up {_duration(cur.at - start)}")
    last = cur.value("last_packet_timestamp_seconds")
    text.append(f"  last packet {_ago(None if last is None else now - last)}")
    age = now - cur.at
    if cur.running is False:
        text.append("  STOPPED", style="bold red")
    elif cur.recent is not None and age > STALE_AFTER_S:
        text.append(f"  status {age:.0f} s old: is the sensor running?", style="bold red")
    text.append(f"\nsource: {cur.source}", style="dim")
    return text


def _capture_table(r: _Rates) -> Table:
    t = Table(title="Capture", box=box.SIMPLE_HEAD, title_justify="left", expand=False)
    for col in ("interface", "received/s", "passed filter/s", "kernel drops", "NIC drops"):
        t.add_column(col, justify="right" if col != "interface" else "left")
    t.add_column("healthy")
    cur = r.cur
    for labels, _ in cur.values("interface_received_packets_total"):
        iface = labels.get("interface", "?")
        kdrops = cur.value("capture_kernel_dropped_packets_total", 0.0, interface=iface)
        ndrops = cur.value("interface_dropped_packets_total", 0.0, interface=iface)
        healthy = cur.value("capture_healthy", 0.0, interface=iface)
        t.add_row(
            iface,
            r.rate("interface_received_packets_total", interface=iface),
            r.rate("capture_filter_passed_packets_total", interface=iface),
            Text(_n(kdrops), style="bold red" if kdrops else ""),
            Text(_n(ndrops), style="bold red" if ndrops else ""),
            Text("yes", style="green") if healthy else Text("no", style="bold red"),
        )
    return t


def _parsing_table(r: _Rates) -> Table:
    t = Table(title="Parsed", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("protocol", "messages/s", "total", "errors"):
        t.add_column(col, justify="right" if col != "protocol" else "left")
    for labels, total in sorted(
        r.cur.values("parsed_messages_total"), key=lambda x: x[0]["protocol"]
    ):
        proto = labels.get("protocol", "?")
        errors = r.cur.value("parse_errors_total", 0.0, protocol=proto)
        t.add_row(
            proto,
            r.rate("parsed_messages_total", protocol=proto),
            _n(total),
            Text(_n(errors), style="yellow" if errors else ""),
        )
    return t


def _vendor_table(r: _Rates) -> Table:
    t = Table(title="Vendor matches", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("vendor", "severity", "protocol", "matches", "new"):
        t.add_column(col, justify="right" if col in ("matches", "new") else "left")
    rows = sorted(r.cur.values("matches_total"), key=lambda x: (-x[1], sorted(x[0].items())))
    for labels, count in rows:
        sev = labels.get("severity", "")
        new = r.delta("matches_total", **labels)
        t.add_row(
            labels.get("vendor", "?"),
            Text(sev, style=_SEVERITY_STYLE.get(sev, "")),
            labels.get("protocol", "?"),
            _n(count),
            Text(f"+{new:,.0f}", style="bold") if new else Text(""),
        )
    if not rows:
        t.add_row(Text("none yet", style="dim"), "", "", "", "")
    return t


def _outputs_table(cur: Reading, now: float) -> Table:
    t = Table(title="Outputs and lists", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("sink / list", "written / entries", "errors", "spool"):
        t.add_column(col, justify="right" if col != "sink / list" else "left")
    for labels, written in cur.values("sink_events_written_total"):
        sink = labels.get("sink", "?")
        errors = cur.value("sink_errors_total", 0.0, sink=sink)
        spool = cur.value("sink_spool_events", 0.0, sink=sink)
        t.add_row(
            sink,
            _n(written),
            Text(_n(errors), style="bold red" if errors else ""),
            Text(_n(spool), style="yellow" if spool else ""),
        )
    for labels, entries in cur.values("blocklist_entries"):
        t.add_row(Text(labels.get("list", "?"), style="dim"), _n(entries), "", "")
    failures = cur.value("blocklist_reload_failures_total", 0.0) or 0.0
    loaded = cur.value("blocklist_last_reload_success_timestamp_seconds")
    t.add_row(
        Text("lists loaded", style="dim"),
        _ago(None if loaded is None else now - loaded),
        Text(f"{failures:,.0f} failed reloads", style="bold red" if failures else "dim"),
        "",
    )
    return t


def _local_time(stamp: object) -> str:
    if not isinstance(stamp, str):
        return "?"
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.astimezone().strftime("%H:%M:%S")


def _hits_table(cur: Reading) -> RenderableType:
    if cur.recent is None:
        return Text(cur.note or "recent hits: not available from this source", style="dim")
    t = Table(title="Recent vendor hits (newest first)", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("time", no_wrap=True)
    t.add_column("vendor", overflow="fold")
    t.add_column("via", overflow="fold")
    t.add_column("name", overflow="fold")
    t.add_column("source", no_wrap=True)
    t.add_column("workstation", overflow="fold")
    t.add_column("user", overflow="fold")
    t.add_column("outcome", overflow="ellipsis")
    hits = [h for h in cur.recent if isinstance(h, dict)][-MAX_HIT_ROWS:]
    for hit in reversed(hits):
        sev = str(hit.get("severity") or "")
        action = hit.get("action")
        vendor = str(hit.get("vendor") or "?")
        if action and action != "vendor-access":
            vendor = f"{vendor} ({action})"
        outcome = str(hit.get("outcome") or "")
        t.add_row(
            _local_time(hit.get("time")),
            Text(vendor, style=_SEVERITY_STYLE.get(sev, "")),
            str(hit.get("evidence") or hit.get("protocol") or ""),
            str(hit.get("name") or ""),
            str(hit.get("source_ip") or ""),
            str(hit.get("workstation") or "-"),
            str(hit.get("user") or "-"),
            Text(outcome, style="bold red" if outcome == "unsanctioned" else "green"),
        )
    if not hits:
        t.add_row(Text("none yet", style="dim"), *([""] * 7))
    return t


def render(cur: Reading, prev: Reading | None = None, now: float | None = None) -> RenderableType:
    """The whole screen for one reading (``prev`` gives the rates)."""
    now = time.time() if now is None else now
    rates = _Rates(cur, prev)
    parts: list[RenderableType] = [
        _header(cur, now),
        _capture_table(rates),
        _parsing_table(rates),
        _vendor_table(rates),
        _outputs_table(cur, now),
        _hits_table(cur),
    ]
    alerts = cur.extra.get("alerts")
    if isinstance(alerts, dict):
        parts.append(
            Text(
                f"alerts: {alerts.get('alerts_opened', 0)} opened, "
                f"{alerts.get('alerts_closed', 0)} closed, "
                f"{alerts.get('open_windows', 0)} open now; "
                f"{alerts.get('sanctioned', 0)} sanctioned accesses",
                style="dim",
            )
        )
    reload = cur.extra.get("reload")
    if isinstance(reload, dict) and reload.get("last_error"):
        parts.append(Text(f"last reload failed: {reload['last_error']}", style="bold red"))
    return Group(*parts)


def _error_view(message: str) -> RenderableType:
    return Panel(Text(message, style="bold red"), title="egress-monitor top", box=box.ROUNDED)


def watch(
    source: Source,
    console: Console,
    *,
    interval: float = 1.0,
    stop: Callable[[], bool] = lambda: False,
    wait: Callable[[float], bool] | None = None,
) -> None:
    """Redraw every ``interval`` seconds until ``stop()``; read errors are shown, not fatal."""
    sleep = wait or (lambda s: threading.Event().wait(s))
    prev: Reading | None = None
    with Live(console=console, auto_refresh=False, redirect_stdout=False) as live:
        while not stop():
            try:
                cur = source.read()
            except SourceError as exc:
                live.update(_error_view(str(exc)), refresh=True)
            else:
                live.update(render(cur, prev), refresh=True)
                if prev is None or cur.at > prev.at:
                    prev = cur
            if sleep(interval):
                break


# -- the command --------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "top",
        help="live view of a running sensor (rates, drops, vendor hits)",
        description="Show a running sensor's packet rates, drops, per-vendor matches and its "
        "most recent vendor hits. Reads the daemon's status file (needs root or the sensor's "
        "user; it is the only source of who and from where) or, failing that, the metrics "
        "endpoint (counts only).",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="PATH",
        help=f"the sensor's configuration: where its state and metrics are ({DEFAULT_PATH})",
    )
    p.add_argument("--status", metavar="FILE", help="read this status file")
    p.add_argument("--metrics", metavar="URL", help="read this metrics endpoint")
    p.add_argument(
        "--metrics-user", metavar="USER", help=f"basic auth user (password: ${PASSWORD_ENV})"
    )
    p.add_argument("--cafile", metavar="FILE", help="CA certificate for an https endpoint")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")
    p.add_argument(
        "--once", action="store_true", help="print one view (rates over --interval) and exit"
    )
    p.set_defaults(func=run)


def _source(args: argparse.Namespace) -> Source:
    endpoint = None
    if args.metrics:
        endpoint = MetricsEndpoint(
            args.metrics, args.metrics_user, os.environ.get(PASSWORD_ENV), args.cafile
        )
    if args.status:
        return Fallback(StatusFile(args.status), endpoint)
    if endpoint is not None:
        return endpoint
    path = args.config or DEFAULT_PATH
    state_dir = DEFAULT_STATE_DIR
    try:
        config = load_config(path, check_files=False)
    except SensorConfigError as exc:
        if args.config is not None or os.path.exists(path):
            raise SourceError(str(exc)) from None
    else:
        state_dir = config.state_dir
        m = config.metrics
        if m is not None:
            host = f"[{m.host}]" if ":" in m.host else m.host
            if m.host in ("0.0.0.0", "::"):
                host = "127.0.0.1" if m.host == "0.0.0.0" else "[::1]"
            scheme = "https" if m.tls_cert else "http"
            endpoint = MetricsEndpoint(
                f"{scheme}://{host}:{m.port}/metrics",
                args.metrics_user or (m.basic_auth.user if m.basic_auth else None),
                os.environ.get(PASSWORD_ENV),
                args.cafile,
            )
    return Fallback(StatusFile(os.path.join(state_dir, STATUS_FILE)), endpoint)


def run(args: argparse.Namespace) -> int:
    try:
        source = _source(args)
    except SourceError as exc:
        print(f"egress-monitor top: {exc}", file=sys.stderr)
        return 2
    interval = max(0.2, float(args.interval))
    if args.once:
        console = Console()
        try:
            first = source.read()
            time.sleep(interval)
            second = source.read()
        except SourceError as exc:
            print(f"egress-monitor top: {exc}", file=sys.stderr)
            return 1
        console.print(render(second, first))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        watch(source, Console(), interval=interval)
    return 0
