"""The sensor daemon without its command line: capture, detect, alert, deliver, report.

Why it is built this way:

* **One thread owns the pipeline.** Capture, the engine, the alert engine and the sinks' ``send``
  run on the thread that calls :meth:`Sensor.run`; the engine and the alert engine are not
  thread-safe and need not be. The metrics endpoint (and ``run --console``) read the daemon's
  state from their own threads through :meth:`Sensor.snapshot`, which copies everything under
  the same lock the capture thread holds while it processes one batch of frames -- one lock
  round per batch, not per packet, and a scrape never sees a half-updated counter.
* **Signals only set flags.** SIGHUP asks for a reload, SIGTERM/SIGINT for a stop; the loop
  polls the capture with a short timeout and acts on the flags between batches, so a handler
  never runs inside the engine.
* **A reload is all or nothing.** Blocklists and approvals are loaded into new objects first
  (``load_blocklists`` and ``load_approvals`` build immutable indexes) and swapped in only when
  both loaded; a broken file is logged with its FILE:LINE, counted
  (``egress_monitor_blocklist_reload_failures_total``), and the last good version stays in
  force. ``watch: true`` polls the files' mtimes once a second and reloads after a change has
  settled for one more poll, so an editor's half-written file is not even tried.
* **Privileges.** The capture sockets (and the metrics socket, whose TLS key may be readable by
  root only) are opened first, then the process becomes ``user`` for good; sinks, the
  identity database and the status file are opened afterwards so that what they create
  belongs to that user. Everything
  the daemon will ever import is imported at module load, before the switch: afterwards the
  interpreter may not be allowed to read its own library (``/root/.pyenv``).
* **Attribution.** Every detection is attributed by the engine's identity tap from an
  :class:`~monitor.attribution.store.IdentityStore` in ``<state_dir>/identities.sqlite``
  (DHCP, Kerberos and NTLM seen on the mirror survive a restart there), the configured
  ``inventory`` (reloaded with the lists, all or nothing) and ``leases`` (re-read whenever a
  file's mtime changes, since DHCP servers rewrite them constantly), with ``resolvers`` never
  pinned on a person. The outcome of each vendor access is counted for
  ``egress_monitor_attribution_outcomes_total``.
* **Shutdown loses nothing that was seen.** SIGTERM drains the frames already queued in the
  kernel, closes every open alert window (its closing update goes out with ``closed_reason``
  "shutdown"), then flushes and closes the sinks (network sinks keep what they could not
  deliver in their spools for the next start) and exits 0.

The status file (``<state_dir>/status.json``, mode 0600, rewritten once a second) is what
``egress-monitor top`` reads: the same Prometheus exposition the endpoint serves, plus the last
vendor hits *with* source address, workstation and user. Those never go into metrics (which
leave the host and are kept for long); the status file holds nothing the event log does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import encodings.idna  # noqa: F401  (host names in sinks; unreadable after the privilege drop)
import json
import logging
import os
import pwd
import signal
import sqlite3
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import itemgetter
from types import FrameType
from typing import Any, Protocol

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from monitor.alerts.approvals import Approvals, load_approvals
from monitor.alerts.engine import AlertEngine
from monitor.alerts.evidence import EvidenceRecorder
from monitor.alerts.outputs import SinkConfigError, open_sinks
from monitor.alerts.sinks import FanOutSink
from monitor.attribution.inventory import Inventory, load_inventory
from monitor.attribution.leasefiles import LeaseFileError, LeaseWarning
from monitor.attribution.store import IdentityStore, StoreError
from monitor.blocklist.loader import load_blocklists
from monitor.blocklist.matcher import Matcher
from monitor.capture.bpf_compile import FilterCompileError
from monitor.capture.live import CaptureOpenError, LiveCapture, LiveStats
from monitor.capture.pcapfile import Frame
from monitor.capture.prefilter import PortConfig, build_filter
from monitor.capture.privileges import PrivilegeDropError, drop_privileges
from monitor.config.sensor import (
    JsonlSinkConfig,
    SensorConfig,
    SinkConfig,
    SyslogSinkConfig,
    WebhookSinkConfig,
)
from monitor.config.yamlsource import ConfigError
from monitor.decode.packet import Packet
from monitor.events.community_id import community_id
from monitor.events.ecs import to_ecs
from monitor.metrics.collector import SnapshotCollector
from monitor.metrics.server import MetricsServer, serve_metrics
from monitor.metrics.snapshot import (
    BlindSpotStats,
    BlocklistStats,
    EvidenceMetrics,
    InterfaceStats,
    MetricsSnapshot,
    SinkStats,
)
from monitor.pipeline.detection import Detection
from monitor.pipeline.engine import Engine
from monitor.pipeline.identity import IdentityTap, read_lease_file

__all__ = [
    "IDENTITY_DB",
    "RECENT_HITS",
    "STATUS_FILE",
    "STATUS_FORMAT",
    "CaptureSource",
    "ListWatcher",
    "Sensor",
    "SensorStartError",
    "open_live_capture",
    "sink_specs",
]

log = logging.getLogger("monitor.sensor")

#: Name of the status file in ``state_dir``; ``egress-monitor top`` reads it.
STATUS_FILE = "status.json"
#: The identity database in ``state_dir`` (``egress-monitor identities --db`` reads it).
IDENTITY_DB = "identities.sqlite"
STATUS_FORMAT = "egress-monitor-status/1"
#: Vendor hits kept for the console: enough for a screen, bounded.
RECENT_HITS = 50
#: Longest the loop waits for a frame before it looks at its flags (signals, the clock).
POLL_TIMEOUT_S = 0.2
#: How long shutdown waits for each stage of sink delivery.
SHUTDOWN_FLUSH_S = 5.0
#: Packet time an alert is held before its evidence is written, so the DNS answer, the
#: connection that follows the lookup and the rest of the handshake are in the file too.
EVIDENCE_SETTLE_S = 2.0


class SensorStartError(RuntimeError):
    """The daemon cannot start; ``exit_code`` 2 for configuration, 1 for the system."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CaptureSource(Protocol):
    """What the loop needs from a capture: :class:`LiveCapture`, or a test's stand-in."""

    def poll_by_interface(self, timeout: float | None) -> dict[str, list[Frame]]: ...

    def stats(self) -> dict[str, LiveStats]: ...

    def close(self) -> None: ...


def open_live_capture(config: SensorConfig) -> LiveCapture:
    """AF_PACKET sockets on the configured interfaces with the kernel prefilter attached."""
    p = config.ports
    bpf = build_filter(PortConfig(p.dns, p.tls, p.http, p.quic))
    return LiveCapture(
        config.interfaces,
        bpf,
        promiscuous=config.promiscuous,
        snaplen=config.snaplen,
        rcvbuf=config.buffer_bytes,
    )


# -- sinks ------------------------------------------------------------------------------------


def _sink_type(sink: SinkConfig) -> str:
    if isinstance(sink, JsonlSinkConfig):
        return "jsonl"
    if isinstance(sink, SyslogSinkConfig):
        return "syslog"
    if isinstance(sink, WebhookSinkConfig):
        return "webhook"
    return "stdout"


def sink_specs(sinks: Iterable[SinkConfig], *, console: bool = False) -> list[dict[str, Any]]:
    """The configuration file's sinks as :func:`monitor.alerts.outputs.open_sink` mappings.

    The file's schema (``jsonl``, ``ca_file``, ``timeout_seconds``) is the operator's; the
    sink builder's keys are the library's. Each sink is named after its type ("jsonl",
    "syslog", a second one "syslog-2"): the name is its metrics label and its spool directory,
    so it must be stable across restarts and must never be a path, host or URL. With
    ``console`` the stdout sink is left out: the live view owns the terminal.
    """
    specs: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for sink in sinks:
        kind = _sink_type(sink)
        if console and kind == "stdout":
            continue
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"
        spec: dict[str, Any]
        if isinstance(sink, JsonlSinkConfig):
            spec = {"type": "file", "path": sink.path, "max_bytes": sink.max_bytes}
            spec["keep"] = sink.keep
        elif isinstance(sink, SyslogSinkConfig):
            spec = {"type": "syslog", "host": sink.host, "transport": sink.transport}
            spec.update(port=sink.port, facility=sink.facility)
            if sink.ca_file is not None:
                spec["cafile"] = sink.ca_file
        elif isinstance(sink, WebhookSinkConfig):
            spec = {"type": "webhook", "url": sink.url, "timeout": sink.timeout_seconds}
            if sink.headers:
                spec["headers"] = dict(sink.headers)
        else:
            spec = {"type": "stdout"}
        spec["name"] = name
        specs.append(spec)
    return specs


# -- blocklists and approvals -----------------------------------------------------------------

_Signature = tuple[tuple[object, ...], ...]


def _file_signature(path: str) -> tuple[object, ...]:
    try:
        st = os.stat(path)
    except OSError as exc:
        return (path, "missing", exc.errno)
    return (path, st.st_mtime_ns, st.st_size, st.st_ino, stat.S_IFMT(st.st_mode))


def _signature(paths: Iterable[str]) -> _Signature:
    """What the watcher compares: every list file (a directory's *.yaml too) and its mtime."""
    out: list[tuple[object, ...]] = []
    for path in paths:
        entry = _file_signature(path)
        out.append(entry)
        if len(entry) == 5 and entry[4] == stat.S_IFDIR:
            try:
                names = sorted(os.listdir(path))
            except OSError:
                continue
            for name in names:
                if name.endswith((".yaml", ".yml")) and not name.startswith("."):
                    out.append(_file_signature(os.path.join(path, name)))
    return tuple(out)


class ListWatcher:
    """The blocklists, approvals and inventory in force, and how they get replaced.

    ``matcher``, ``approvals`` and ``inventory`` only ever change together, and only to a set
    that loaded without error; ``failures``, ``last_error`` and ``last_success`` are for metrics
    and logs.
    """

    def __init__(
        self,
        blocklists: Iterable[str],
        approvals: str | None,
        *,
        inventory: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.blocklists = list(blocklists)
        self.approvals_path = approvals
        self.inventory_path = inventory
        self.inventory: Inventory | None = None
        self.clock = clock
        self.matcher: Matcher | None = None
        self.approvals = Approvals.empty()
        self.failures = 0
        self.reloads = 0
        self.last_success: float | None = None
        self.last_error: str | None = None
        self._attempted: _Signature | None = None
        self._seen: _Signature | None = None

    @property
    def watched(self) -> list[str]:
        extra = [p for p in (self.approvals_path, self.inventory_path) if p is not None]
        return self.blocklists + extra

    def signature(self) -> _Signature:
        return _signature(self.watched)

    def _load(self) -> tuple[Matcher, Approvals, Inventory | None]:
        matcher = load_blocklists(self.blocklists)
        approvals = Approvals.empty()
        if self.approvals_path is not None:
            approvals = load_approvals(self.approvals_path, set(matcher.vendors))
        inventory = None
        if self.inventory_path is not None:
            inventory = load_inventory(self.inventory_path)
        return matcher, approvals, inventory

    def load(self) -> None:
        """The first load: errors propagate (the daemon must not start without lists)."""
        self._attempted = self._seen = self.signature()
        self.matcher, self.approvals, self.inventory = self._load()
        self.last_success = self.clock()
        for warning in self.matcher.warnings:
            log.warning("%s", warning)
        log.info("loaded %s", self.describe())

    def reload(self, why: str) -> bool:
        """Load everything anew and swap it in; on any error keep the current version."""
        self._attempted = self._seen = self.signature()
        try:
            matcher, approvals, inventory = self._load()
        except (ConfigError, OSError, UnicodeError) as exc:
            self._failed(why, str(exc))
            return False
        except Exception as exc:  # a loader bug must not take the sensor down either
            log.exception("reload (%s) crashed", why)
            self._failed(why, f"{type(exc).__name__}: {exc}")
            return False
        self.matcher, self.approvals, self.inventory = matcher, approvals, inventory
        self.reloads += 1
        self.last_success = self.clock()
        self.last_error = None
        for warning in matcher.warnings:
            log.warning("%s", warning)
        log.info("reloaded (%s): %s", why, self.describe())
        return True

    def _failed(self, why: str, error: str) -> None:
        self.failures += 1
        self.last_error = error
        kept = self.describe() if self.matcher is not None else "nothing"
        log.error("reload (%s) failed, still using %s: %s", why, kept, error)

    def changed(self) -> bool:
        """Call about once a second: True when the files changed since the last (attempted)
        load and then stayed the same for one more call."""
        current = self.signature()
        if current == self._attempted:
            self._seen = current
            return False
        if current != self._seen:
            self._seen = current  # still being written, or just changed: wait one more call
            return False
        return True

    def entries(self) -> dict[str, int]:
        if self.matcher is None:
            return {}
        return {f"{bl.name}@{bl.version}": len(bl.indicators) for bl in self.matcher.lists}

    def describe(self) -> str:
        assert self.matcher is not None
        lists = ", ".join(self.entries()) or "no lists"
        text = (
            f"blocklists {lists} ({len(self.matcher.vendors)} vendors, "
            f"{self.matcher.indicator_count} indicators)"
        )
        if self.approvals_path is not None:
            text += f", {len(self.approvals)} approvals from {self.approvals_path}"
        return text


# -- the daemon -------------------------------------------------------------------------------


def _hit(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the console's "recent hits": who, what, how. Never reaches metrics."""
    event = doc.get("event") or {}
    match = doc.get("match") or {}
    source = doc.get("source") or {}
    network = doc.get("network") or {}
    user = source.get("user") or {}
    user_name = user.get("name") if isinstance(user, Mapping) else None
    if user_name and isinstance(user, Mapping) and user.get("domain"):
        user_name = f"{user['domain']}\\{user_name}"
    return {
        "time": doc.get("@timestamp"),
        "action": event.get("action"),
        "outcome": event.get("outcome"),
        "vendor": match.get("vendor"),
        "vendor_name": match.get("vendor_name"),
        "severity": match.get("severity"),
        "protocol": network.get("protocol"),
        "evidence": match.get("evidence"),
        "name": match.get("name"),
        "source_ip": source.get("ip"),
        "workstation": source.get("domain"),
        "user": user_name,
    }


def _community_id(doc: Mapping[str, Any] | None) -> str | None:
    network = None if doc is None else doc.get("network")
    cid = network.get("community_id") if isinstance(network, Mapping) else None
    return cid if isinstance(cid, str) and cid else None


class _Families:
    """A registry stand-in for ``generate_latest``: one collector, no process metrics."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Any]:
        return iter(self.collector.collect())


class Sensor:
    """The live sensor: ``start()`` (as root), then ``run()`` until a stop signal.

    ``open_capture`` replaces the live capture (tests feed recorded frames through it);
    ``console`` leaves the stdout sink out for ``run --console``. ``status_path`` defaults to
    ``<state_dir>/status.json``; ``False`` writes no status file.
    """

    def __init__(
        self,
        config: SensorConfig,
        *,
        console: bool = False,
        open_capture: Callable[[SensorConfig], CaptureSource] = open_live_capture,
        status_path: str | bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.console = console
        self.clock = clock
        self._open_capture = open_capture
        if status_path is None or status_path is True:
            self.status_path: str | None = os.path.join(config.state_dir, STATUS_FILE)
        elif status_path is False:
            self.status_path = None
        else:
            self.status_path = status_path
        self.lists = ListWatcher(
            config.blocklist_paths(), config.approvals, inventory=config.inventory, clock=clock
        )
        self.alerts = AlertEngine(config.alerts)
        self.engine: Engine | None = None
        self.identity: IdentityTap | None = None
        self.capture: CaptureSource | None = None
        self.sinks: FanOutSink | None = None
        self.metrics_server: MetricsServer | None = None
        #: With ``evidence:`` configured: candidate frames in memory, pcapng files per alert.
        self.evidence: EvidenceRecorder | None = None
        #: (packet time, monotonic time) when the recorder's packet time last moved: held
        #: alerts are released by wall clock once the traffic has gone quiet.
        self._evidence_mark = (0, 0.0)
        self.started_at = clock()
        self._lock = threading.Lock()
        self._matches: dict[tuple[str, str, str], int] = {}
        self._attribution: dict[str, int] = {}
        self._lease_signatures: dict[str, tuple[object, ...]] = {}
        self._iface_last: dict[str, float] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_HITS)
        self._processing_errors = 0
        self._last_error_log = -1e18
        self._events_out = 0
        self._alerts_out = 0
        self._stop = threading.Event()
        self._reload_requested = False
        self._status_warned = False
        self._closed = False
        self._running = False
        self._ran = False

    # -- control (safe from signal handlers and other threads) --------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested = True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGHUP reloads, SIGTERM and SIGINT stop; call from the main thread. Returns a
        function that puts the previous handlers back."""

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        def on_reload(signum: int, frame: FrameType | None) -> None:
            self.request_reload()

        handlers = {signal.SIGTERM: on_stop, signal.SIGINT: on_stop, signal.SIGHUP: on_reload}
        previous = {signum: signal.signal(signum, h) for signum, h in handlers.items()}

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Load, open, drop privileges, open the outputs; raises :class:`SensorStartError`.

        Call ``start`` and ``run`` on the same thread: the identity database's SQLite
        connection belongs to the thread that opened it.
        """
        cfg = self.config
        for warning in cfg.warnings:
            log.warning("%s", warning)
        try:
            self.lists.load()
        except (ConfigError, OSError, UnicodeError) as exc:
            raise SensorStartError(str(exc), 2) from None
        assert self.lists.matcher is not None
        self.alerts.approvals = self.lists.approvals
        specs = sink_specs(cfg.sinks, console=self.console)
        try:
            self.capture = self._open_capture(cfg)
        except (CaptureOpenError, FilterCompileError, OSError, ValueError) as exc:
            raise SensorStartError(
                f"cannot capture on {', '.join(cfg.interfaces)}: {exc}"
            ) from None
        if cfg.metrics is not None:
            m = cfg.metrics
            auth = None if m.basic_auth is None else (m.basic_auth.user, m.basic_auth.password_hash)
            try:
                self.metrics_server = serve_metrics(
                    self.snapshot, m.host, m.port, m.tls_cert, m.tls_key, basic_auth=auth
                )
            except (OSError, ValueError) as exc:
                raise SensorStartError(f"metrics endpoint {m.host}:{m.port}: {exc}") from None
            log.info("metrics on %s", self.metrics_server.url)
        if cfg.user is not None:
            self._prepare_directories(cfg.user, specs)
            try:
                ident = drop_privileges(cfg.user)
            except PrivilegeDropError as exc:
                raise SensorStartError(str(exc)) from None
            log.info("running as %s (uid %d, gid %d)", cfg.user, ident.uid, ident.gid)
        # Opened as the daemon's user, so that what they create belongs to it.
        self.identity = self._open_identity(self.lists.inventory)
        if cfg.evidence is not None:
            try:
                self.evidence = EvidenceRecorder(cfg.evidence.dir, cfg.evidence.max_bytes)
            except (OSError, ValueError) as exc:
                raise SensorStartError(f"evidence directory {cfg.evidence.dir}: {exc}") from None
            log.info("evidence: pcapng files for each alert in %s", cfg.evidence.dir)
        self.engine = Engine(
            self.lists.matcher,
            self._on_detection,
            cfg.engine_config(),
            identity=self.identity,
            on_packet=None if self.evidence is None else self._remember,
        )
        try:
            self.sinks = open_sinks(specs, os.path.join(cfg.state_dir, "spool"))
        except (SinkConfigError, OSError, ValueError) as exc:
            raise SensorStartError(f"cannot open the event outputs: {exc}") from None
        if not specs:
            log.warning("no event output: events are shown on the console only")
        log.info(
            "capturing on %s; outputs: %s",
            ", ".join(cfg.interfaces),
            ", ".join(s.name for s in self.sinks.sinks) or "none",
        )

    def _open_identity(self, inventory: Inventory | None) -> IdentityTap:
        """The identity store that attributes detections: DHCP, Kerberos and NTLM seen on the
        mirror, the lease files and the inventory. Kept in ``state_dir`` so that a restart
        does not forget who holds which address."""
        cfg = self.config
        path = os.path.join(cfg.state_dir, IDENTITY_DB)
        try:
            os.makedirs(cfg.state_dir, mode=0o750, exist_ok=True)
            store = IdentityStore(path)
        except (StoreError, OSError) as exc:
            raise SensorStartError(f"identity database {path}: {exc}") from None
        try:
            if inventory is not None:
                store.set_inventory(inventory)
            tap = IdentityTap(store, cfg.resolvers)
        except BaseException:
            store.close()
            raise
        return tap

    def _refresh_leases(self) -> None:
        """Fold lease files into the identity store when they change (DHCP servers rewrite
        them all the time); a file that cannot be read keeps what it said before."""
        identity = self.identity
        if identity is None:
            return
        for source in self.config.leases:
            sig = _file_signature(source.path)
            if self._lease_signatures.get(source.path) == sig:
                continue
            self._lease_signatures[source.path] = sig
            if len(sig) != 5:
                log.warning("lease file %s does not exist (yet)", source.path)
                continue
            warnings: list[LeaseWarning] = []
            try:
                leases = read_lease_file(source.format, source.path, warnings)
                read_at = os.stat(source.path).st_mtime_ns
            except (LeaseFileError, OSError, ValueError, UnicodeError) as exc:
                log.error(
                    "lease file %s not read, keeping what it said before: %s", source.path, exc
                )
                continue
            for warning in warnings[:5]:
                log.warning("lease file %s: %s", source.path, warning)
            with self._lock:
                changed = identity.load_leases(leases, read_at)
            log.info(
                "lease file %s: %d leases, %d bindings changed", source.path, len(leases), changed
            )

    def _prepare_directories(self, user: str, specs: list[dict[str, Any]]) -> None:
        """Directories the daemon writes after the switch must belong to ``user``; only those
        created here are handed over (an existing directory keeps its owner)."""
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise SensorStartError(f"unknown user {user!r}") from None
        wanted = [self.config.state_dir]
        if self.config.evidence is not None:
            wanted.append(self.config.evidence.dir)
        wanted += [os.path.dirname(os.path.abspath(s["path"])) for s in specs if "path" in s]
        for directory in wanted:
            missing: list[str] = []
            d = os.path.abspath(directory)
            while not os.path.exists(d):
                missing.append(d)
                d = os.path.dirname(d)
            for d in reversed(missing):
                try:
                    os.mkdir(d, 0o750)
                    os.chown(d, pw.pw_uid, pw.pw_gid)
                except OSError as exc:
                    raise SensorStartError(f"cannot create {d}: {exc}") from None

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Capture until a stop is requested, then shut down cleanly; returns the exit code."""
        capture = self.capture
        if capture is None:
            raise RuntimeError("start() first")
        self._running = self._ran = True
        self._refresh_leases()
        self._write_status()
        next_tick = time.monotonic() + 1.0
        try:
            while not self._stop.is_set():
                grouped = capture.poll_by_interface(POLL_TIMEOUT_S)
                if grouped:
                    self._process(grouped)
                if self._reload_requested:
                    self._reload_requested = False
                    self.reload("SIGHUP")
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + 1.0
                    self._tick()
        finally:
            self.close()
        return 0

    def _process(self, grouped: dict[str, list[Frame]]) -> None:
        engine = self.engine
        assert engine is not None
        if len(grouped) == 1:
            frames = next(iter(grouped.values()))
        else:
            # Both directions of a TAP arrive on two interfaces: reassembly wants one timeline.
            frames = sorted((f for fs in grouped.values() for f in fs), key=itemgetter(0))
        process = engine.process
        with self._lock:
            for ts, linktype, data, _wirelen in frames:
                try:
                    process(ts, linktype, data)
                except Exception:
                    self._processing_error()
            for name, fs in grouped.items():
                self._iface_last[name] = max(f[0] for f in fs) / 1e9
            recorder = self.evidence
            if recorder is not None and recorder.pending:
                for doc in recorder.due():
                    self._deliver(doc)

    def _processing_error(self) -> None:
        self._processing_errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= 10.0:  # a packet of death must not flood the log
            self._last_error_log = now
            log.exception("frame processing failed (%d so far)", self._processing_errors)

    def _on_detection(self, d: Detection) -> None:
        """Engine callback (capture thread, lock held): event -> alert engine -> sinks."""
        doc = to_ecs(d)
        if d.action == "vendor-access":
            ind = d.match.indicator
            key = (ind.vendor.id, d.protocol, ind.severity)
            self._matches[key] = self._matches.get(key, 0) + 1
            if self.identity is None:
                outcome = "disabled"
            elif d.attribution is None:
                outcome = "error"  # the store failed; counted by the tap too
            else:
                outcome = d.attribution.outcome
            self._attribution[outcome] = self._attribution.get(outcome, 0) + 1
        try:
            docs = self.alerts.process(doc)
        except Exception:
            log.exception("alert engine failed on event %s", doc["event"]["id"])
            docs = [doc]
        for out in docs:
            self._route(out, doc)

    def _remember(self, pkt: Packet, linktype: int, frame: bytes) -> None:
        """Engine hook for candidate packets (evidence enabled only): keep the frame under
        its flow's Community ID, the key events carry in ``network.community_id``."""
        recorder = self.evidence
        assert recorder is not None
        key = community_id(pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport)
        recorder.remember(pkt.ts, linktype, frame, key)

    def _route(self, doc: dict[str, Any], event: Mapping[str, Any] | None = None) -> None:
        """Deliver a document; with evidence enabled an alert is held until its evidence file
        is on disk (``due``/``drain`` deliver it), so no alert names a missing file."""
        recorder = self.evidence
        if recorder is None:
            self._deliver(doc)
            return
        ev = doc.get("event")
        if not isinstance(ev, Mapping) or ev.get("kind") != "alert" or not ev.get("id"):
            recorder.note(doc)
            self._deliver(doc)
            return
        flows = [_community_id(doc), _community_id(event)]
        try:
            ready = recorder.defer(
                doc, [f for f in flows if f is not None], settle_seconds=EVIDENCE_SETTLE_S
            )
        except Exception:
            log.exception("evidence for alert %s failed", ev.get("id"))
            ready = [doc]
        for out in ready:
            self._deliver(out)

    def _release_evidence(self, everything: bool = False) -> None:
        """Deliver held alerts whose settle time has passed (all of them at shutdown, or when
        no candidate packet has moved packet time for a settle period of wall time)."""
        recorder = self.evidence
        if recorder is None or not recorder.pending:
            return
        now = time.monotonic()
        if recorder.now_ns != self._evidence_mark[0]:
            self._evidence_mark = (recorder.now_ns, now)
        elif now - self._evidence_mark[1] >= EVIDENCE_SETTLE_S:
            everything = True
        try:
            docs = recorder.drain() if everything else recorder.due()
        except Exception:
            log.exception("writing evidence failed")
            return
        for doc in docs:
            self._deliver(doc)

    def _deliver(self, doc: dict[str, Any]) -> None:
        sinks = self.sinks
        if sinks is not None:
            sinks.send(doc)
        if doc.get("event", {}).get("kind") == "alert":
            self._alerts_out += 1
        else:
            self._events_out += 1
            self._recent.append(_hit(doc))

    def _tick(self) -> None:
        """Once a second: watch the lists, close finished alert windows, write the status."""
        if self.config.watch and self.lists.changed():
            self.reload("file changed")
        self._refresh_leases()
        with self._lock:
            try:
                docs = self.alerts.flush(self.clock())
            except Exception:
                log.exception("alert flush failed")
                docs = []
            for doc in docs:
                self._route(doc)
            self._release_evidence()
        self._write_status()

    def reload(self, why: str) -> bool:
        """Reload blocklists, approvals and inventory (from the capture thread); True if
        swapped in."""
        if not self.lists.reload(why):
            return False
        assert self.lists.matcher is not None
        with self._lock:
            if self.engine is not None:
                self.engine.swap_matcher(self.lists.matcher)
            if self.identity is not None:
                self.identity.store.set_inventory(self.lists.inventory)
            # Windows already open stay open: a later approval does not unsend an alert.
            self.alerts.approvals = self.lists.approvals
        return True

    # -- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Drain, close open alerts, flush and close outputs, release the capture. Idempotent."""
        if self._closed:
            return
        self._closed = True
        capture = self.capture
        if capture is not None and self.engine is not None and self._running:
            try:
                grouped = capture.poll_by_interface(0)
            except (OSError, ValueError):
                grouped = {}
            if grouped:
                self._process(grouped)
        if self._running:
            with self._lock:
                try:
                    docs = self.alerts.close(self.clock())
                except Exception:
                    log.exception("closing the open alerts failed")
                    docs = []
                for doc in docs:
                    self._route(doc)
                self._release_evidence(everything=True)
            if docs:
                log.info("closed %d open alert(s) at shutdown", len(docs))
        if self.sinks is not None:
            if not self.sinks.flush(SHUTDOWN_FLUSH_S):
                log.warning("not every event was delivered; the rest stays in the spools")
            self.sinks.close(SHUTDOWN_FLUSH_S)
        if capture is not None:
            with contextlib.suppress(OSError):
                capture.close()
        if self.identity is not None:
            try:
                self.identity.store.close()
            except (StoreError, sqlite3.Error) as exc:
                log.error("identity database: %s", exc)
        self._running = False
        if self._ran:
            self._write_status()  # "running": false tells top the daemon stopped cleanly
        if self.metrics_server is not None:
            self.metrics_server.close()

    # -- what the daemon knows about itself ----------------------------------------------------

    def snapshot(self) -> MetricsSnapshot:
        """A fresh copy of every number (metrics thread, console thread, status file)."""
        with self._lock:
            captured = self.capture.stats() if self.capture is not None else {}
            counters = self.engine.counters() if self.engine is not None else {}
            flows = len(self.engine.flows) if self.engine is not None else 0
            last_ts = self.engine.last_packet_ts if self.engine is not None else 0
            matches = dict(self._matches)
            attribution = dict(self._attribution)
            iface_last = dict(self._iface_last)
            errors = self._processing_errors
            evidence = self._evidence_metrics()
        if errors:
            counters["processing_errors"] = errors
        interfaces = {
            name: InterfaceStats(
                rx_packets=st.if_rx_packets or 0,
                rx_bytes=st.if_rx_bytes or 0,
                filter_passed_packets=st.packets,
                kernel_drops=st.drops,
                interface_drops=st.if_rx_dropped or 0,
                last_packet_time=iface_last.get(name),
            )
            for name, st in captured.items()
        }
        sinks: dict[str, SinkStats] = {}
        if self.sinks is not None:
            for name, st in self.sinks.stats_by_sink().items():
                sinks[name] = SinkStats(
                    events_written=st.delivered,
                    errors=st.errors,
                    spool_depth=st.spool_depth,
                )
        lists = self.lists
        return MetricsSnapshot(
            start_time=self.started_at,
            interfaces=interfaces,
            counters=counters,
            matches=matches,
            blind_spots=BlindSpotStats(
                ech_offered_hellos=counters.get("ech_offered_hellos", 0),
                ech_observed_events=counters.get("ech_observed_events", 0),
                encrypted_dns_events=counters.get("encrypted_dns_events", 0),
                rate_limited_events=counters.get("blind_spot_suppressed", 0),
            ),
            attribution=attribution,
            sinks=sinks,
            blocklists=BlocklistStats(
                entries=lists.entries(),
                last_reload_success_time=lists.last_success,
                reload_failures=lists.failures,
            ),
            flows_tracked=flows,
            last_packet_time=last_ts / 1e9 if last_ts else None,
            evidence=evidence,
        )

    def _evidence_metrics(self) -> EvidenceMetrics | None:
        """The recorder's counters as the exporter names them (caller holds the lock)."""
        recorder = self.evidence
        if recorder is None:
            return None
        st = recorder.stats
        return EvidenceMetrics(
            files_written=st.files_written,
            bytes_written=st.bytes_written,
            files_deleted=st.files_deleted,
            not_written={
                "rate-limited": st.files_rate_limited,
                "too-large": st.too_large,
                "write-error": st.write_errors,
                "no-packets": st.no_packets,
            },
            packets_refused=st.packets_refused,
            memory_bytes=st.memory_bytes,
            held_alerts=recorder.pending,
        )

    def status(self) -> dict[str, Any]:
        """What ``top`` and ``run --console`` show: metrics text plus the recent vendor hits."""
        snap = self.snapshot()
        text = generate_latest(_Families(SnapshotCollector(lambda: snap, clock=self.clock)))
        with self._lock:
            recent = list(self._recent)
            alert_stats = dataclasses.asdict(self.alerts.stats)
            alert_stats["open_windows"] = self.alerts.open_windows
            outputs = {"events": self._events_out, "alerts": self._alerts_out}
            evidence = None
            if self.evidence is not None:
                evidence = dataclasses.asdict(self.evidence.stats)
                evidence["pending"] = self.evidence.pending
        return {
            "format": STATUS_FORMAT,
            "pid": os.getpid(),
            "written": self.clock(),
            "running": self._running,
            "interfaces": list(self.config.interfaces),
            "metrics": text.decode("utf-8"),
            "recent": recent,
            "alerts": alert_stats,
            "documents": outputs,
            **({} if evidence is None else {"evidence": evidence}),
            "reload": {
                "reloads": self.lists.reloads,
                "failures": self.lists.failures,
                "last_error": self.lists.last_error,
            },
        }

    def _write_status(self) -> None:
        path = self.status_path
        if path is None:
            return
        try:
            data = json.dumps(self.status(), ensure_ascii=False).encode("utf-8")
            os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
            tmp = f"{path}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            if not self._status_warned:
                self._status_warned = True
                log.warning("cannot write the status file for 'top' (%s): %s", path, exc)
