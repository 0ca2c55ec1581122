"""``egress-monitor replay``: run the detection pipeline over capture files.

Incident reviews and the tests use this path; it is the live sensor's pipeline fed from files.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from monitor.attribution.inventory import InventoryError, load_inventory
from monitor.attribution.leasefiles import LeaseFileError, LeaseWarning
from monitor.attribution.store import IdentityStore, StoreError
from monitor.blocklist.loader import BlocklistError, load_blocklists, shipped_blocklist_dir
from monitor.capture.files import expand_capture_paths
from monitor.capture.prefilter import PortConfig
from monitor.cli.summary import print_summary
from monitor.decode.packet import Packet
from monitor.events.community_id import community_id
from monitor.events.ecs import dumps, to_ecs
from monitor.pipeline.detection import Detection
from monitor.pipeline.engine import EngineConfig
from monitor.pipeline.identity import IdentityTap, read_lease_file
from monitor.pipeline.replay import prefilter_for, replay_files

if TYPE_CHECKING:
    from monitor.alerts.evidence import EvidenceRecorder

LEASE_FORMATS = ("isc", "kea", "dnsmasq")
#: Packet time an event is held so that its evidence has the DNS answer and the rest of the
#: handshake too (the daemon holds its alerts as long).
EVIDENCE_SETTLE_S = 2.0


def port_list(text: str) -> frozenset[int]:
    try:
        ports = frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of ports: {text!r}") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"ports must be 1-65535: {text!r}")
    return ports


def add_engine_options(p: argparse.ArgumentParser) -> None:
    d = EngineConfig()
    p.add_argument(
        "--blocklist",
        action="append",
        metavar="PATH",
        default=None,
        help="blocklist file or directory (repeatable; default: the shipped lists)",
    )
    p.add_argument("--dns-ports", type=port_list, default=d.dns_ports, metavar="LIST")
    p.add_argument(
        "--tls-ports",
        type=port_list,
        default=d.tls_ports,
        metavar="LIST",
        help="TLS ports (default 443,8443); a ClientHello on any port is seen too",
    )
    p.add_argument(
        "--http-ports",
        type=port_list,
        default=d.http_ports,
        metavar="LIST",
        help="HTTP and proxy ports (default 80,8080,3128,8000)",
    )
    p.add_argument(
        "--quic-ports",
        type=port_list,
        default=d.quic_ports,
        metavar="LIST",
        help="UDP ports whose QUIC Initials are decrypted (default 443)",
    )
    p.add_argument("--max-flows", type=int, default=d.max_flows, metavar="N")
    p.add_argument("--flow-timeout", type=float, default=d.flow_idle_timeout_s, metavar="SECONDS")


def lease_source(text: str) -> tuple[str, str]:
    fmt, colon, path = text.partition(":")
    if not colon or fmt not in LEASE_FORMATS or not path:
        raise argparse.ArgumentTypeError(
            f"expected FORMAT:PATH with FORMAT one of {', '.join(LEASE_FORMATS)}: {text!r}"
        )
    return fmt, path


def ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def add_attribution_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "attribution",
        "Who was behind the client address at the time of each detection: DHCP, Kerberos and "
        "NTLM seen in the captures, lease files and the inventory.",
    )
    g.add_argument(
        "--state-db",
        metavar="PATH",
        help="identity database (SQLite) to read and keep the evidence in "
        "(default: in memory, gone after the replay); 'egress-monitor identities' reads it",
    )
    g.add_argument("--inventory", metavar="PATH", help="asset inventory (.yaml, .yml or .csv)")
    g.add_argument(
        "--leases",
        action="append",
        type=lease_source,
        default=[],
        metavar="FORMAT:PATH",
        help="DHCP server lease file, FORMAT isc, kea or dnsmasq (repeatable); dnsmasq "
        "records no lease start: its leases count from the file's modification time",
    )
    g.add_argument(
        "--resolver",
        action="append",
        type=ip_address,
        default=[],
        metavar="IP",
        help="internal DNS resolver (or proxy) address: its queries are resolver-only, "
        "never pinned on a person (repeatable)",
    )
    g.add_argument(
        "--no-attribution",
        action="store_true",
        help="do not attribute detections (no identity store at all)",
    )


def open_identity(args: argparse.Namespace) -> IdentityTap | None:
    """The identity tap the replay options ask for (None with --no-attribution).

    Raises StoreError, InventoryError or LeaseFileError with a message for the user.
    """
    if args.no_attribution:
        return None
    store = IdentityStore(args.state_db or ":memory:")
    try:
        if args.inventory:
            store.set_inventory(load_inventory(args.inventory))
        tap = IdentityTap(store, args.resolver)
        for fmt, path in args.leases:
            warnings: list[LeaseWarning] = []
            leases = read_lease_file(fmt, path, warnings)
            for warning in warnings:
                print(f"egress-monitor: warning: {warning}", file=sys.stderr)
            # The file's own time, not the clock: replaying twice gives the same events.
            tap.load_leases(leases, os.stat(path).st_mtime_ns)
    except BaseException:
        store.close()
        raise
    return tap


def engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        dns_ports=args.dns_ports,
        tls_ports=args.tls_ports,
        http_ports=args.http_ports,
        quic_ports=args.quic_ports,
        max_flows=args.max_flows,
        flow_idle_timeout_s=args.flow_timeout,
    )


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="detect vendor access in pcap/pcapng files",
        description="Replay capture files (or directories of them) through the detection "
        "pipeline and write one JSON event per vendor access.",
    )
    p.add_argument("captures", nargs="+", metavar="PCAP_OR_DIR")
    p.add_argument(
        "--events",
        default="-",
        metavar="FILE|-",
        help="where to write JSON-lines events (default: - for stdout)",
    )
    p.add_argument(
        "--no-prefilter",
        action="store_true",
        help="read every packet in Python instead of filtering with tcpdump/libpcap",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no summary table on stderr")
    p.add_argument(
        "--evidence-dir",
        metavar="DIR",
        help="write the packets behind each event (its flow's DNS exchange, TCP handshake and "
        "ClientHello, QUIC Initials) to DIR/<event-id>.pcapng and name the file and its "
        "SHA-256 in the event's 'evidence' field (default: no evidence)",
    )
    p.add_argument(
        "--workers",
        type=int,
        choices=(1, 2),
        default=None,
        help="1: one process; 2: DNS answers and QUIC parsed in a second process with its "
        "own tcpdump (same events; about 1.3x faster on two cores). Default: 2 for captures "
        "over 32 MiB when there are two cores and the prefilter is in use, else 1",
    )
    add_engine_options(p)
    add_attribution_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        matcher = load_blocklists(args.blocklist or [shipped_blocklist_dir()])
    except BlocklistError as exc:
        print(f"egress-monitor: {exc}", file=sys.stderr)
        return 2
    for warning in matcher.warnings:
        print(f"egress-monitor: warning: {warning}", file=sys.stderr)
    try:
        paths = expand_capture_paths(args.captures)
    except FileNotFoundError as exc:
        print(f"egress-monitor: {exc}", file=sys.stderr)
        return 2
    try:
        identity = open_identity(args)
    except (StoreError, InventoryError, LeaseFileError, OSError) as exc:
        print(f"egress-monitor: {exc}", file=sys.stderr)
        return 2
    config = engine_config(args)
    prefilter: PortConfig | None = None
    if not args.no_prefilter:
        prefilter = prefilter_for(config)
        if prefilter is None:
            print(
                "egress-monitor: warning: tcpdump not found, reading every packet in Python "
                "(install tcpdump for the BPF prefilter)",
                file=sys.stderr,
            )
    recorder: EvidenceRecorder | None = None
    if args.evidence_dir:
        # Imported only when asked for: it (and the alert modules it uses) would add a tenth
        # of a second to every replay's start-up.
        from monitor.alerts.evidence import EvidenceRecorder

        try:
            # Not rate-limited like the daemon: the operator asked for this review's files.
            recorder = EvidenceRecorder(args.evidence_dir, max_files_per_minute=1 << 30)
        except OSError as exc:
            if identity is not None:
                identity.store.close()
            print(f"egress-monitor: evidence directory {args.evidence_dir}: {exc}", file=sys.stderr)
            return 2
    out: IO[str]
    out = sys.stdout if args.events == "-" else open(args.events, "w", encoding="utf-8")  # noqa: SIM115
    write = out.write

    def emit(d: Detection) -> None:
        if recorder is None:
            write(dumps(to_ecs(d)) + "\n")
            return
        for doc in recorder.defer(to_ecs(d), settle_seconds=EVIDENCE_SETTLE_S):
            write(dumps(doc) + "\n")

    def remember(pkt: Packet, linktype: int, frame: bytes) -> None:
        assert recorder is not None
        key = community_id(pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport)
        recorder.remember(pkt.ts, linktype, frame, key)

    def release() -> None:
        assert recorder is not None
        if recorder.pending:
            for doc in recorder.due():
                write(dumps(doc) + "\n")

    started = time.perf_counter()
    try:
        engine, rstats = replay_files(
            paths,
            matcher,
            emit,
            config,
            prefilter,
            identity=identity,
            on_packet=None if recorder is None else remember,
            after_frame=None if recorder is None else release,
            workers=args.workers,
        )
        if recorder is not None:
            for doc in recorder.drain():
                write(dumps(doc) + "\n")
    finally:
        if identity is not None:
            identity.store.close()
        if out is not sys.stdout:
            out.close()
        else:
            out.flush()
    elapsed = time.perf_counter() - started
    if not args.quiet:
        print_summary(engine, rstats, matcher, elapsed, prefilter is not None)
        if recorder is not None:
            st = recorder.stats
            print(
                f"evidence: {st.files_written} file(s), {st.bytes_written} bytes in "
                f"{args.evidence_dir}; {st.no_packets} event(s) without packets, "
                f"{st.too_large + st.write_errors} not written",
                file=sys.stderr,
            )
    return 0
