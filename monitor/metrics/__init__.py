"""Prometheus metrics for the live sensor: a snapshot, a collector, an HTTP(S) endpoint.

The daemon passes a provider (a callable returning a fresh :class:`MetricsSnapshot`) to
:func:`serve_metrics`; every scrape builds the metrics from one snapshot. Metric names and their
meaning are listed in ``deploy/README.md``; the default port (10463) and why it was chosen are
in :mod:`monitor.metrics.server`.
"""

from monitor.metrics.auth import PasswordHash, PasswordHashError, hash_password
from monitor.metrics.collector import DEFAULT_HEALTHY_WITHIN_S, SnapshotCollector
from monitor.metrics.server import DEFAULT_PORT, MetricsServer, serve_metrics
from monitor.metrics.snapshot import (
    BlindSpotStats,
    BlocklistStats,
    EvidenceMetrics,
    InterfaceStats,
    MetricsSnapshot,
    SinkStats,
)

__all__ = [
    "DEFAULT_HEALTHY_WITHIN_S",
    "DEFAULT_PORT",
    "BlindSpotStats",
    "BlocklistStats",
    "EvidenceMetrics",
    "InterfaceStats",
    "MetricsServer",
    "MetricsSnapshot",
    "PasswordHash",
    "PasswordHashError",
    "SinkStats",
    "SnapshotCollector",
    "hash_password",
    "serve_metrics",
]
