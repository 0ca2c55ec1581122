"""Turn a :class:`MetricsSnapshot` into Prometheus metric families, once per scrape.

A custom collector rather than Counter/Gauge objects updated in the hot path: the capture loop
already keeps every number (``Engine.counters()``, socket statistics), so mirroring them into
client-library objects would cost per-packet work and a second source of truth. At scrape time
the collector asks the daemon's provider for a fresh snapshot and translates it; the only shared
state is that snapshot, which nobody mutates, so no lock is needed.

Naming follows https://prometheus.io/docs/practices/naming/: ``egress_monitor_`` prefix,
``_total`` on counters, base units (``_bytes``, ``_seconds``), ``_timestamp_seconds`` for
points in time, and labels only from the low-cardinality set ``interface``, ``protocol``,
``vendor``, ``severity``, ``reason``, ``sink``, ``list``, ``outcome``, each value passed through
:mod:`monitor.metrics.labels` so no address, host or person can become a label.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeAlias

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.metrics.labels import (
    EVIDENCE_FAILURE_REASONS,
    evidence_reason_label,
    interface_label,
    list_label,
    outcome_label,
    severity_label,
    sink_label,
    token_label,
)
from monitor.metrics.snapshot import MetricsSnapshot

PREFIX = "egress_monitor"

#: The capture of an interface counts as healthy while its last packet is at most this old. A
#: mirror port of a department's egress is never quiet for a minute; a dead SPAN session is.
DEFAULT_HEALTHY_WITHIN_S = 60.0

SnapshotProvider: TypeAlias = Callable[[], MetricsSnapshot]
_Family: TypeAlias = CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily

#: Engine counters that count successfully parsed messages, by protocol. New parsers that name
#: their counter ``<protocol>_messages`` are picked up without an entry here.
PARSED_COUNTERS: dict[str, str] = {
    "dns_messages": "dns",
    "tls_client_hellos": "tls",
    "quic_client_hellos": "quic",
    "http_requests": "http",
}
#: Parse-error counters that do not follow the ``<protocol>_parse_errors`` convention. For QUIC
#: an Initial that does not decrypt is the parse failure: its header protection and AEAD are
#: the only integrity checks the sensor can apply.
EXTRA_PARSE_ERROR_COUNTERS: dict[str, str] = {"quic_decrypt_failures": "quic"}
#: Frames the decoder looked at and set aside, by reason.
SKIPPED_FRAME_COUNTERS: dict[str, str] = {
    "non_ip_frames": "non-ip",
    "truncated_frames": "truncated",
    "unknown_linktype_frames": "unknown-linktype",
    "ipv4_fragments_skipped": "ipv4-fragment",
    "ipv6_fragments_skipped": "ipv6-fragment",
    "other_transport_packets": "other-transport",
}
_MESSAGES = re.compile(r"([a-z][a-z0-9]*)_messages")
_PARSE_ERRORS = re.compile(r"([a-z][a-z0-9]*)_parse_errors")
_TUNNEL = re.compile(r"tunnel_([a-z0-9]+)_packets")
_METRIC_SAFE = re.compile(r"[a-z][a-z0-9_]{0,62}")


def _name(*parts: str) -> str:
    return "_".join((PREFIX, *parts))


def _add(acc: dict[tuple[str, ...], float], key: tuple[str, ...], value: float) -> None:
    # Sanitising can fold several raw keys into one label set ("redacted"); Prometheus rejects
    # duplicate series, so fold their values instead.
    acc[key] = acc.get(key, 0) + value


def _counter(name: str, doc: str, labels: list[str], acc: dict[tuple[str, ...], float]) -> _Family:
    fam = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(acc.items()):
        fam.add_metric(list(key), value)
    return fam


def _gauge(name: str, doc: str, labels: list[str], acc: dict[tuple[str, ...], float]) -> _Family:
    fam = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(acc.items()):
        fam.add_metric(list(key), value)
    return fam


class SnapshotCollector(Collector):
    """Registered in a ``CollectorRegistry``; each ``collect()`` reads one fresh snapshot."""

    def __init__(
        self,
        provider: SnapshotProvider,
        *,
        healthy_within_s: float = DEFAULT_HEALTHY_WITHIN_S,
        clock: Callable[[], float] = time.time,
        version: str = __version__,
    ) -> None:
        self.provider = provider
        self.healthy_within_s = healthy_within_s
        self.clock = clock
        self.version = version

    def describe(self) -> Iterable[_Family]:
        # Registration must not call the provider (the daemon may not be ready yet), and the
        # family names depend on the engine's counters, so nothing is declared up front.
        return []

    def collect(self) -> Iterator[_Family]:
        snap = self.provider()
        now = self.clock()
        yield from self._build(snap)
        yield from self._capture(snap, now)
        yield from self._engine(snap.counters)
        yield from self._detections(snap)
        yield from self._outputs(snap)
        yield from self._evidence(snap)

    # -- process ------------------------------------------------------------------------------

    def _build(self, snap: MetricsSnapshot) -> Iterator[_Family]:
        info = InfoMetricFamily(
            _name("build"), "Version of the running egress-monitor.", labels=["version"]
        )
        info.add_metric([self.version], {})
        yield info
        yield GaugeMetricFamily(
            _name("start_timestamp_seconds"),
            "Unix time the sensor started.",
            value=snap.start_time,
        )
        last = GaugeMetricFamily(
            _name("last_packet_timestamp_seconds"),
            "Unix time of the last packet read on any interface (absent before the first).",
        )
        if snap.last_packet_time is not None:
            last.add_metric([], snap.last_packet_time)
        yield last

    # -- capture ------------------------------------------------------------------------------

    def _capture(self, snap: MetricsSnapshot, now: float) -> Iterator[_Family]:
        acc: dict[str, dict[tuple[str, ...], float]] = {
            k: {} for k in ("rx_p", "rx_b", "pass", "kdrop", "idrop", "last", "healthy")
        }
        for raw, st in snap.interfaces.items():
            key = (interface_label(raw),)
            _add(acc["rx_p"], key, st.rx_packets)
            _add(acc["rx_b"], key, st.rx_bytes)
            _add(acc["pass"], key, st.filter_passed_packets)
            _add(acc["kdrop"], key, st.kernel_drops)
            _add(acc["idrop"], key, st.interface_drops)
            fresh = (
                st.last_packet_time is not None
                and now - st.last_packet_time <= self.healthy_within_s
            )
            # Folded interfaces are healthy if any of them is; max, not sum.
            acc["healthy"][key] = max(acc["healthy"].get(key, 0), 1 if fresh else 0)
            if st.last_packet_time is not None:
                acc["last"][key] = max(acc["last"].get(key, 0), st.last_packet_time)
        lbl = ["interface"]
        yield _counter(
            _name("interface_received_packets"),
            "Packets the capture interface received, before the BPF filter (NIC counters).",
            lbl,
            acc["rx_p"],
        )
        yield _counter(
            _name("interface_received_bytes"),
            "Bytes the capture interface received, before the BPF filter (NIC counters).",
            lbl,
            acc["rx_b"],
        )
        yield _counter(
            _name("interface_dropped_packets"),
            "Packets the NIC or driver dropped before the kernel saw them (port oversubscribed).",
            lbl,
            acc["idrop"],
        )
        yield _counter(
            _name("capture_filter_passed_packets"),
            "Packets the kernel BPF prefilter accepted for the sensor's socket (incl. drops).",
            lbl,
            acc["pass"],
        )
        yield _counter(
            _name("capture_kernel_dropped_packets"),
            "Packets the filter accepted but the socket buffer had no room for (sensor too slow).",
            lbl,
            acc["kdrop"],
        )
        yield _gauge(
            _name("capture_last_packet_timestamp_seconds"),
            "Unix time of the last packet read on the interface.",
            lbl,
            acc["last"],
        )
        yield _gauge(
            _name("capture_healthy"),
            f"1 if the interface delivered a packet in the last {self.healthy_within_s:g} s.",
            lbl,
            acc["healthy"],
        )

    # -- engine -------------------------------------------------------------------------------

    def _engine(self, counters: dict[str, int]) -> Iterator[_Family]:
        parsed: dict[tuple[str, ...], float] = {}
        errors: dict[tuple[str, ...], float] = {}
        skipped: dict[tuple[str, ...], float] = {}
        tunnels: dict[tuple[str, ...], float] = {}
        rest: dict[str, float] = {}
        for key, value in counters.items():
            if key in PARSED_COUNTERS:
                _add(parsed, (PARSED_COUNTERS[key],), value)
            elif m := _MESSAGES.fullmatch(key):
                _add(parsed, (token_label(m[1]),), value)
            elif key in EXTRA_PARSE_ERROR_COUNTERS:
                _add(errors, (EXTRA_PARSE_ERROR_COUNTERS[key],), value)
            elif m := _PARSE_ERRORS.fullmatch(key):
                _add(errors, (token_label(m[1]),), value)
            elif key in SKIPPED_FRAME_COUNTERS:
                _add(skipped, (SKIPPED_FRAME_COUNTERS[key],), value)
            elif m := _TUNNEL.fullmatch(key):
                _add(tunnels, (token_label(m[1]),), value)
            elif _METRIC_SAFE.fullmatch(key):
                short = key.removesuffix("_total")
                rest[short] = rest.get(short, 0) + value
        # Every protocol the engine parses gets an error series, 0 included, so that ratios and
        # alerts on it exist before the first error.
        for (proto,) in parsed:
            errors.setdefault((proto,), 0)
        yield _counter(
            _name("parsed_messages"),
            "Protocol messages parsed (DNS messages, TLS/QUIC ClientHellos, HTTP request heads).",
            ["protocol"],
            parsed,
        )
        yield _counter(
            _name("parse_errors"),
            "Messages that failed to parse (malformed or truncated), by protocol.",
            ["protocol"],
            errors,
        )
        yield _counter(
            _name("frames_skipped"),
            "Frames the decoder set aside without parsing, by reason.",
            ["reason"],
            skipped,
        )
        yield _counter(
            _name("tunnel_packets"),
            "Packets unwrapped from a remote-mirroring tunnel (VXLAN, Geneve, GRE, ERSPAN).",
            ["protocol"],
            tunnels,
        )
        for key in sorted(rest):
            yield CounterMetricFamily(
                _name("engine", key),
                f"Engine counter {key!r} (see Engine.counters()).",
                value=rest[key],
            )

    # -- detections ---------------------------------------------------------------------------

    def _detections(self, snap: MetricsSnapshot) -> Iterator[_Family]:
        matches: dict[tuple[str, ...], float] = {}
        for (vendor, protocol, severity), n in snap.matches.items():
            _add(matches, (token_label(vendor), token_label(protocol), severity_label(severity)), n)
        yield _counter(
            _name("matches"),
            "Vendor-access detections emitted, by vendor, protocol and severity.",
            ["vendor", "protocol", "severity"],
            matches,
        )
        bs = snap.blind_spots
        yield CounterMetricFamily(
            _name("ech_offered_hellos"),
            "ClientHellos offering Encrypted Client Hello: their real server name is hidden.",
            value=bs.ech_offered_hellos,
        )
        yield _counter(
            _name("blind_spot_events"),
            "Events that mark traffic the sensor cannot judge (ECH front ends, encrypted DNS).",
            ["reason"],
            {
                ("ech-observed",): bs.ech_observed_events,
                ("encrypted-dns",): bs.encrypted_dns_events,
            },
        )
        yield _counter(
            _name("events_suppressed"),
            "Events not written, by reason (per-flow rate limit).",
            ["reason"],
            {("rate-limit",): bs.rate_limited_events},
        )
        outcomes: dict[tuple[str, ...], float] = {}
        for outcome, n in snap.attribution.items():
            _add(outcomes, (outcome_label(outcome),), n)
        yield _counter(
            _name("attribution_outcomes"),
            "Detections by attribution outcome (evidence source, or why there was none).",
            ["outcome"],
            outcomes,
        )
        yield GaugeMetricFamily(
            _name("flows_tracked"),
            "TCP flows held in the flow table now.",
            value=snap.flows_tracked,
        )

    # -- outputs and configuration ------------------------------------------------------------

    def _outputs(self, snap: MetricsSnapshot) -> Iterator[_Family]:
        written: dict[tuple[str, ...], float] = {}
        errors: dict[tuple[str, ...], float] = {}
        spool: dict[tuple[str, ...], float] = {}
        for raw, st in snap.sinks.items():
            key = (sink_label(raw),)
            _add(written, key, st.events_written)
            _add(errors, key, st.errors)
            _add(spool, key, st.spool_depth)
        yield _counter(
            _name("sink_events_written"), "Events delivered to the sink.", ["sink"], written
        )
        yield _counter(
            _name("sink_errors"), "Failed writes or deliveries to the sink.", ["sink"], errors
        )
        yield _gauge(
            _name("sink_spool_events"),
            "Events waiting in the sink's spool (grows while the sink is down or slow).",
            ["sink"],
            spool,
        )
        bl = snap.blocklists
        entries: dict[tuple[str, ...], float] = {}
        for raw, n in bl.entries.items():
            _add(entries, (list_label(raw),), n)
        yield _gauge(
            _name("blocklist_entries"),
            "Indicators in each loaded blocklist, by list name@version.",
            ["list"],
            entries,
        )
        last = GaugeMetricFamily(
            _name("blocklist_last_reload_success_timestamp_seconds"),
            "Unix time the blocklists were last loaded successfully (start or reload).",
        )
        if bl.last_reload_success_time is not None:
            last.add_metric([], bl.last_reload_success_time)
        yield last
        yield CounterMetricFamily(
            _name("blocklist_reload_failures"),
            "Blocklist reloads that failed (the previous lists stay in use).",
            value=bl.reload_failures,
        )

    # -- evidence -----------------------------------------------------------------------------

    def _evidence(self, snap: MetricsSnapshot) -> Iterator[_Family]:
        """Absent unless an evidence recorder is configured (no zeros that look like health)."""
        ev = snap.evidence
        if ev is None:
            return
        counters = (
            (
                "evidence_files_written",
                "Evidence pcapng files written, one per alert.",
                ev.files_written,
            ),
            ("evidence_written_bytes", "Bytes of evidence pcapng files written.", ev.bytes_written),
            (
                "evidence_deleted_files",
                "Oldest evidence files deleted to keep the directory under its byte cap.",
                ev.files_deleted,
            ),
            (
                "evidence_refused_packets",
                "Candidate packets not held for evidence (bigger than the memory budget, or a "
                "link type pcapng cannot carry).",
                ev.packets_refused,
            ),
        )
        for name, doc, count in counters:
            yield CounterMetricFamily(_name(name), doc, value=count)
        failures: dict[tuple[str, ...], float] = {
            (reason,): 0 for reason in sorted(EVIDENCE_FAILURE_REASONS)
        }
        for raw, n in ev.not_written.items():
            _add(failures, (evidence_reason_label(raw),), n)
        yield _counter(
            _name("evidence_failures"),
            "Alerts that went out without an evidence file, by reason.",
            ["reason"],
            failures,
        )
        gauges = (
            (
                "evidence_memory_bytes",
                "Bytes of candidate packets held in memory for evidence.",
                ev.memory_bytes,
            ),
            (
                "evidence_held_alerts",
                "Alerts held until the packets that follow them are in their evidence file.",
                ev.held_alerts,
            ),
        )
        for name, doc, level in gauges:
            yield GaugeMetricFamily(_name(name), doc, value=level)
