"""What the daemon knows about itself at one instant, as plain numbers.

The exporter never reaches into live objects: the daemon builds a :class:`MetricsSnapshot` when
Prometheus scrapes (a provider callback) and the collector only reads that copy. So no lock is
shared with the capture loop and a scrape can never see a half-updated structure -- as long as
the provider hands over fresh dicts (``Engine.counters()`` already builds a new one per call)
rather than the live dicts it keeps mutating.

Every count here is cumulative since the daemon started (Prometheus handles resets); gauges are
marked as such. Times are Unix seconds (float) from the wall clock, ``None`` when unknown.
Nothing in a snapshot may name a person, a host or an address: keys of the dicts below become
label values, and the collector redacts anything that looks like one (see
:mod:`monitor.metrics.labels`), but the daemon should not put them there in the first place.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class InterfaceStats:
    """One capture interface (a mirror port).

    ``rx_packets``/``rx_bytes`` are what the interface received *before* the BPF filter (the
    NIC counters, /sys/class/net/IFACE/statistics), so ``filter_passed_packets / rx_packets`` is
    the share of the mirrored traffic the sensor had to look at. ``filter_passed_packets`` is
    what the kernel filter accepted for the socket (PACKET_STATISTICS ``tp_packets``, which
    includes the drops); ``kernel_drops`` those the socket buffer or ring had no room for
    (``tp_drops``: the sensor was too slow); ``interface_drops`` what the NIC or driver dropped
    before the kernel saw it (``rx_dropped`` + ``rx_missed_errors``: the port is oversubscribed).
    """

    rx_packets: int = 0
    rx_bytes: int = 0
    filter_passed_packets: int = 0
    kernel_drops: int = 0
    interface_drops: int = 0
    last_packet_time: float | None = None


@dataclass(slots=True)
class BlindSpotStats:
    """Traffic the sensor saw but cannot (fully) judge: the reason coverage is not 100%."""

    ech_offered_hellos: int = 0  # ClientHellos with an ECH extension: the real SNI is hidden
    ech_observed_events: int = 0  # "ech-observed" events (ECH to a known ECH front end)
    encrypted_dns_events: int = 0  # "encrypted-dns" events (DoH/DoT resolvers in use)
    rate_limited_events: int = 0  # events not written because of the per-flow rate limit


@dataclass(slots=True)
class SinkStats:
    """One event output (file, syslog, HTTP collector, ...), keyed by its configured name."""

    events_written: int = 0
    errors: int = 0
    spool_depth: int = 0  # gauge: events waiting in the spool because the sink is behind/down


@dataclass(slots=True)
class BlocklistStats:
    """The loaded blocklists and the reload history (SIGHUP or file watch)."""

    entries: dict[str, int] = field(default_factory=dict)  # "name@version" -> indicators
    last_reload_success_time: float | None = None
    reload_failures: int = 0


@dataclass(slots=True)
class EvidenceMetrics:
    """The evidence recorder, when ``evidence:`` is configured: the pcapng file per alert.

    An alert whose evidence could not be written still goes out (without ``alert.evidence``),
    so a failure here is silent in the alert stream: these counters are how it shows.
    ``not_written`` is keyed by reason (``EVIDENCE_FAILURE_REASONS`` in
    :mod:`monitor.metrics.labels`).
    """

    files_written: int = 0
    bytes_written: int = 0
    files_deleted: int = 0  # oldest files removed to keep the directory under its byte cap
    not_written: dict[str, int] = field(default_factory=dict)
    packets_refused: int = 0  # frames too big for the memory budget or pcapng
    memory_bytes: int = 0  # gauge: candidate packets held in memory
    held_alerts: int = 0  # gauge: alerts waiting for their evidence to be written


@dataclass(slots=True)
class MetricsSnapshot:
    """Everything one scrape exports. Build a new one per scrape; do not mutate it afterwards.

    ``matches`` is keyed by ``(vendor id, protocol, severity)`` as in ``match.vendor``,
    ``network.protocol`` and ``match.severity`` of the emitted events (``EngineStats`` keeps
    ``(vendor, protocol)`` only; the daemon adds the severity it emitted). ``attribution`` is
    keyed by outcome (see ``ATTRIBUTION_OUTCOMES`` in :mod:`monitor.metrics.labels`).
    ``counters`` is ``Engine.counters()``.
    """

    start_time: float
    interfaces: dict[str, InterfaceStats] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    matches: dict[tuple[str, str, str], int] = field(default_factory=dict)
    blind_spots: BlindSpotStats = field(default_factory=BlindSpotStats)
    attribution: dict[str, int] = field(default_factory=dict)
    sinks: dict[str, SinkStats] = field(default_factory=dict)
    blocklists: BlocklistStats = field(default_factory=BlocklistStats)
    flows_tracked: int = 0  # gauge: entries in the flow table now
    last_packet_time: float | None = None
    evidence: EvidenceMetrics | None = None  # None: no evidence recorder configured
