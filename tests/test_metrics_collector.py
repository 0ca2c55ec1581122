"""The metrics a scrape exposes: names by Prometheus conventions, every engine counter exported,
labels that can never carry an address, a user or a host name, one snapshot per scrape."""

from __future__ import annotations

import ipaddress
import itertools
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from monitor.blocklist.loader import load_blocklists, shipped_blocklist_dir
from monitor.blocklist.matcher import Matcher
from monitor.metrics import (
    BlindSpotStats,
    BlocklistStats,
    EvidenceMetrics,
    InterfaceStats,
    MetricsSnapshot,
    SinkStats,
    SnapshotCollector,
)
from monitor.metrics import labels as L
from monitor.pipeline.detection import Detection
from monitor.pipeline.engine import Engine
from monitor.pipeline.replay import replay_files

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
BIG = 7_000_000_000_000  # above every other value in full_snapshot()
ALLOWED_LABELS = {"interface", "protocol", "vendor", "severity", "reason", "sink", "list"}
ALLOWED_LABELS |= {"outcome", "version"}


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return load_blocklists([shipped_blocklist_dir()])


ENGINE_COUNTERS = {
    "frames": 99,
    "dns_messages": 10,
    "dns_parse_errors": 1,
    "tunnel_vxlan_packets": 4,
    "truncated_frames": 2,
}


def full_snapshot(counters: dict[str, int] | None = None) -> MetricsSnapshot:
    """A snapshot with every field set, as a busy sensor would report it."""
    return MetricsSnapshot(
        start_time=NOW - 3600,
        interfaces={
            "eth1": InterfaceStats(1_000_000, 800_000_000, 120_000, 12, 3, NOW - 1),
            "eth2": InterfaceStats(500, 40_000, 20, 0, 0, NOW - 900),
        },
        counters=counters if counters is not None else dict(ENGINE_COUNTERS),
        matches={
            ("clearview-ai", "tls", "critical"): 3,
            ("pimeyes", "dns", "high"): 1,
            ("amazon-rekognition", "quic", "low"): 2,
        },
        blind_spots=BlindSpotStats(40, 2, 5, 7),
        attribution={"dhcp": 3, "kerberos": 2, "unattributed": 1},
        sinks={"file": SinkStats(6, 0, 0), "siem": SinkStats(4, 2, 17)},
        blocklists=BlocklistStats({"face-recognition@2026.11.26": 120}, NOW - 600, 1),
        flows_tracked=321,
        last_packet_time=NOW - 1,
        evidence=EvidenceMetrics(
            files_written=5,
            bytes_written=81_920,
            files_deleted=1,
            not_written={"rate-limited": 2, "write-error": 1, "no-packets": 0},
            packets_refused=4,
            memory_bytes=65_536,
            held_alerts=3,
        ),
    )


def collect(snap: MetricsSnapshot, **kw: object) -> dict[str, list[tuple[dict[str, str], float]]]:
    coll = SnapshotCollector(lambda: snap, clock=lambda: NOW, **kw)  # type: ignore[arg-type]
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in coll.collect():
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def exposition(snap: MetricsSnapshot) -> str:
    reg = CollectorRegistry()
    reg.register(SnapshotCollector(lambda: snap, clock=lambda: NOW))
    return generate_latest(reg).decode()


def value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    hits = [v for lbl, v in samples[name] if all(lbl.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, samples.get(name))
    return hits[0]


# -- names and types -----------------------------------------------------------------------------


def test_every_metric_has_the_prefix_and_counters_end_in_total() -> None:
    coll = SnapshotCollector(lambda: full_snapshot(), clock=lambda: NOW)
    for fam in coll.collect():
        assert fam.name.startswith("egress_monitor_"), fam.name
        assert fam.documentation, fam.name
        for s in fam.samples:
            if fam.type == "counter":
                assert s.name.endswith("_total"), s.name
            else:
                assert not s.name.endswith("_total"), s.name
            if "timestamp" in s.name or s.name.endswith("_seconds"):
                assert s.name.endswith("_seconds"), s.name
            assert set(s.labels) <= ALLOWED_LABELS, (s.name, s.labels)


def test_exposition_passes_promtool_check_metrics() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    text = exposition(full_snapshot())
    res = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def test_openmetrics_exposition_parses_with_build_info_as_info() -> None:
    reg = CollectorRegistry()
    reg.register(SnapshotCollector(lambda: full_snapshot(), clock=lambda: NOW))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_openmetrics(reg).decode())
    }
    assert families["egress_monitor_build"].type == "info"
    assert families["egress_monitor_matches"].type == "counter"


# -- what the numbers say ------------------------------------------------------------------------


def test_matches_carry_vendor_protocol_and_severity() -> None:
    s = collect(full_snapshot())
    assert value(s, "egress_monitor_matches_total", vendor="clearview-ai", protocol="tls") == 3
    assert value(s, "egress_monitor_matches_total", vendor="pimeyes", severity="high") == 1


def test_capture_metrics_are_per_interface() -> None:
    s = collect(full_snapshot())
    assert value(s, "egress_monitor_interface_received_packets_total", interface="eth1") == 1e6
    assert value(s, "egress_monitor_interface_received_bytes_total", interface="eth1") == 8e8
    assert value(s, "egress_monitor_capture_filter_passed_packets_total", interface="eth1") == 12e4
    assert value(s, "egress_monitor_capture_kernel_dropped_packets_total", interface="eth1") == 12
    assert value(s, "egress_monitor_interface_dropped_packets_total", interface="eth1") == 3
    assert value(s, "egress_monitor_capture_last_packet_timestamp_seconds", interface="eth2") == (
        NOW - 900
    )


def test_capture_is_healthy_only_while_packets_keep_arriving() -> None:
    snap = full_snapshot()
    snap.interfaces["eth3"] = InterfaceStats()  # never saw a packet
    s = collect(snap, healthy_within_s=60.0)
    assert value(s, "egress_monitor_capture_healthy", interface="eth1") == 1
    assert value(s, "egress_monitor_capture_healthy", interface="eth2") == 0
    assert value(s, "egress_monitor_capture_healthy", interface="eth3") == 0
    s = collect(snap, healthy_within_s=1000.0)
    assert value(s, "egress_monitor_capture_healthy", interface="eth2") == 1


def test_blind_spots_attribution_sinks_blocklists_and_flows() -> None:
    s = collect(full_snapshot())
    assert value(s, "egress_monitor_ech_offered_hellos_total") == 40
    assert value(s, "egress_monitor_blind_spot_events_total", reason="ech-observed") == 2
    assert value(s, "egress_monitor_blind_spot_events_total", reason="encrypted-dns") == 5
    assert value(s, "egress_monitor_events_suppressed_total", reason="rate-limit") == 7
    assert value(s, "egress_monitor_attribution_outcomes_total", outcome="kerberos") == 2
    assert value(s, "egress_monitor_sink_errors_total", sink="siem") == 2
    assert value(s, "egress_monitor_sink_spool_events", sink="siem") == 17
    assert value(s, "egress_monitor_sink_events_written_total", sink="file") == 6
    entries = "egress_monitor_blocklist_entries"
    assert value(s, entries, list="face-recognition@2026.11.26") == 120
    assert value(s, "egress_monitor_blocklist_last_reload_success_timestamp_seconds") == NOW - 600
    assert value(s, "egress_monitor_blocklist_reload_failures_total") == 1
    assert value(s, "egress_monitor_flows_tracked") == 321
    assert value(s, "egress_monitor_last_packet_timestamp_seconds") == NOW - 1
    assert value(s, "egress_monitor_start_timestamp_seconds") == NOW - 3600
    assert [lbl for lbl, _ in s["egress_monitor_build_info"]] == [{"version": "0.1.0"}]


def test_evidence_files_and_why_an_alert_has_none() -> None:
    """An alert without its evidence file still goes out; these series are how that shows."""
    s = collect(full_snapshot())
    assert value(s, "egress_monitor_evidence_files_written_total") == 5
    assert value(s, "egress_monitor_evidence_written_bytes_total") == 81_920
    assert value(s, "egress_monitor_evidence_deleted_files_total") == 1
    failures = "egress_monitor_evidence_failures_total"
    assert value(s, failures, reason="rate-limited") == 2
    assert value(s, failures, reason="write-error") == 1
    assert value(s, failures, reason="too-large") == 0  # every reason present, 0 or not
    assert value(s, failures, reason="no-packets") == 0
    assert value(s, "egress_monitor_evidence_refused_packets_total") == 4
    assert value(s, "egress_monitor_evidence_memory_bytes") == 65_536
    assert value(s, "egress_monitor_evidence_held_alerts") == 3
    # Without a recorder there is nothing to report, and zeros would look like health.
    assert not [n for n in collect(MetricsSnapshot(start_time=NOW)) if "evidence" in n]


def test_unknown_times_are_absent_rather_than_zero() -> None:
    # A 0 timestamp would read as "last packet in 1970" and fire every age alert at once.
    s = collect(MetricsSnapshot(start_time=NOW))
    assert "egress_monitor_last_packet_timestamp_seconds" not in s
    assert "egress_monitor_blocklist_last_reload_success_timestamp_seconds" not in s


def test_parsed_messages_and_parse_errors_come_per_protocol_from_the_counters() -> None:
    counters = {
        "dns_messages": 10,
        "dns_parse_errors": 1,
        "tls_client_hellos": 5,
        "tls_parse_errors": 2,
        "quic_client_hellos": 4,
        "quic_decrypt_failures": 3,
        "http_requests": 7,
        "http_parse_errors": 0,
        # parsers that do not exist yet follow the naming convention and need no code here
        "kerberos_messages": 8,
        "kerberos_parse_errors": 6,
        "dhcp_messages": 9,
    }
    s = collect(full_snapshot(counters))
    parsed = {lbl["protocol"]: v for lbl, v in s["egress_monitor_parsed_messages_total"]}
    errors = {lbl["protocol"]: v for lbl, v in s["egress_monitor_parse_errors_total"]}
    assert parsed == {"dns": 10, "tls": 5, "quic": 4, "http": 7, "kerberos": 8, "dhcp": 9}
    assert errors == {"dns": 1, "tls": 2, "quic": 3, "http": 0, "kerberos": 6, "dhcp": 0}


def test_every_engine_counter_is_exported_once(matcher: Matcher) -> None:
    engine = Engine(matcher, lambda d: None)
    counters = engine.counters()
    counters["tunnel_vxlan_packets"] = 1
    # Give every counter a distinct value and find each value again in exactly one sample.
    numbered = {k: BIG + i for i, k in enumerate(sorted(counters))}
    s = collect(full_snapshot(numbered))
    values = [v for samples in s.values() for _, v in samples if v >= BIG]
    assert sorted(values) == sorted(numbered.values())
    assert (
        value(s, "egress_monitor_frames_skipped_total", reason="truncated")
        == (numbered["truncated_frames"])
    )
    assert (
        value(s, "egress_monitor_tunnel_packets_total", protocol="vxlan")
        == (numbered["tunnel_vxlan_packets"])
    )
    assert value(s, "egress_monitor_engine_flows_evicted_total") == numbered["flows_evicted"]


# -- privacy: labels ------------------------------------------------------------------------------

IPV4 = re.compile(r"(?<![0-9])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9])")
HEXCOLON = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,}")
USERS = ("alice", "bob", "jdoe", "administrator")
HOSTS = ("ws01", "pd.example", "laptop-17")


def detections_from_real_captures(matcher: Matcher) -> tuple[Engine, list[Detection]]:
    events: list[Detection] = []
    pcaps = sorted((ROOT / "pcaps" / "real").glob("*.pcap"))
    assert pcaps
    engine, _ = replay_files(pcaps, matcher, events.append, prefilter=None)
    assert events
    return engine, events


def leaky_snapshot(matcher: Matcher) -> tuple[MetricsSnapshot, set[str]]:
    """A snapshot from a real replay, plus the mistakes a daemon could make: dict keys that
    are client addresses, MACs, account names and workstation names."""
    engine, events = detections_from_real_captures(matcher)
    addresses = {str(ipaddress.ip_address(a)) for d in events for a in (d.src, d.dst)}
    client = sorted(addresses)[0]
    matches: dict[tuple[str, str, str], int] = {}
    for d in events:
        key = (d.match.indicator.vendor.id, d.protocol, d.match.indicator.severity)
        matches[key] = matches.get(key, 0) + 1
    # the mistakes
    matches[(client, "tls", "critical")] = 1
    matches[("clearview-ai", "alice@pd.example", "PD\\alice")] = 1
    snap = MetricsSnapshot(
        start_time=NOW,
        interfaces={"eth1": InterfaceStats(10, 1000, 5, 0, 0, NOW), client: InterfaceStats(1)},
        counters=engine.counters(),
        matches=matches,
        attribution={"dhcp": 2, "alice": 1, "PD\\bob": 1, "jdoe@pd.example": 1, client: 1},
        sinks={
            "file": SinkStats(1),
            f"tcp://{client}:514": SinkStats(errors=1),
            "ws01.pd.example": SinkStats(errors=1),
            "aa:bb:cc:dd:ee:ff": SinkStats(spool_depth=3),
            "fe80::1%eth1": SinkStats(errors=2),
            "10-0-0-5": SinkStats(errors=2),
        },
        blocklists=BlocklistStats(
            {
                **{f"{b.name}@{b.version}": len(b.indicators) for b in matcher.lists},
                "administrator@pd.example": 1,
                f"list@{client}": 1,
                "laptop-17.pd.example@1": 1,
            },
            NOW,
        ),
        flows_tracked=len(engine.flows),
        last_packet_time=NOW,
    )
    return snap, addresses


def test_no_label_ever_carries_an_address_a_user_or_a_host(matcher: Matcher) -> None:
    snap, addresses = leaky_snapshot(matcher)
    assert len(addresses) > 3
    labels_seen = 0
    for samples in collect(snap).values():
        for lbl, _ in samples:
            for key, val in lbl.items():
                labels_seen += 1
                assert not IPV4.search(val), (key, val)
                assert not HEXCOLON.search(val), (key, val)
                assert "\\" not in val, (key, val)
                assert val not in addresses, (key, val)
                low = val.lower()
                assert not any(u in low for u in USERS), (key, val)
                assert not any(h in low for h in HOSTS), (key, val)
                if key != "list":
                    assert "@" not in val, (key, val)
    assert labels_seen > 50
    # ... and nowhere else in the exposition either (names, HELP text).
    text = exposition(snap)
    for a in addresses:
        assert a not in text
    for word in (*USERS, *HOSTS):
        assert word not in text.lower()


def test_sanitised_keys_fold_into_one_series_instead_of_duplicates(matcher: Matcher) -> None:
    snap, _ = leaky_snapshot(matcher)
    s = collect(snap)
    redacted = [v for lbl, v in s["egress_monitor_sink_errors_total"] if lbl["sink"] == "redacted"]
    assert redacted == [6]  # tcp://client, ws01..., fe80::1, 10-0-0-5
    outcomes = {lbl["outcome"]: v for lbl, v in s["egress_monitor_attribution_outcomes_total"]}
    assert outcomes == {"dhcp": 2, "other": 4}
    lists = {lbl["list"] for lbl, _ in s["egress_monitor_blocklist_entries"]}
    assert lists == {f"{b.name}@{b.version}" for b in matcher.lists} | {"redacted"}
    # Prometheus rejects a scrape with duplicate series; the client library would too.
    text = exposition(snap)
    series = [line.split(" ")[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series))


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("eth1", "eth1"),
        ("ens1f0", "ens1f0"),
        ("bond0.100", "bond0.100"),
        ("192.0.2.7", L.REDACTED),
        ("2001:db8::7", L.REDACTED),
        ("aa-bb-cc-dd-ee-ff", L.REDACTED),
        ("ws01.pd.example", L.REDACTED),
        ("alice@pd", L.REDACTED),
        ("PD\\alice", L.REDACTED),
        ("eth 1", L.INVALID),
        ("x" * 65, L.INVALID),
        ("", L.INVALID),
    ],
)
def test_interface_and_sink_names_are_kept_or_replaced(raw: str, label: str) -> None:
    assert L.interface_label(raw) == label
    assert L.sink_label(raw) == label


def test_closed_label_sets_map_everything_else_to_other() -> None:
    assert L.severity_label("critical") == "critical"
    assert L.severity_label("alice") == L.OTHER
    assert L.outcome_label("lease-file") == "lease-file"
    assert L.outcome_label("alice") == L.OTHER
    assert L.token_label("clearview-ai") == "clearview-ai"
    assert L.token_label("Clearview AI") == L.INVALID
    assert L.token_label("10.1.2.3") == L.REDACTED


SAFE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}")


@given(st.text(max_size=80))
def test_any_text_becomes_a_safe_label_value(raw: str) -> None:
    for fn in (L.interface_label, L.sink_label, L.token_label, L.list_label):
        out = fn(raw)
        assert SAFE_VALUE.fullmatch(out), (fn.__name__, raw, out)
        assert not IPV4.search(out) and not HEXCOLON.search(out) and "\\" not in out
        if fn is not L.list_label:
            assert "@" not in out


@given(
    st.ip_addresses().map(str), st.sampled_from(["", "tcp://", "x-"]), st.sampled_from(["", ":514"])
)
def test_addresses_are_redacted_wherever_they_sit_in_a_name(addr: str, pre: str, post: str) -> None:
    for fn in (L.interface_label, L.sink_label, L.token_label, L.list_label):
        assert fn(pre + addr + post) in (L.REDACTED, L.INVALID)


# -- concurrency ---------------------------------------------------------------------------------


def test_each_scrape_reads_exactly_one_snapshot_even_when_scrapes_overlap() -> None:
    """The provider hands out a new generation on every call, as a busy daemon would. Each of
    several concurrent scrapes must show one generation throughout, and call the provider
    once: no lock in the exporter, no torn reads."""
    generations = itertools.count(1)

    def provider() -> MetricsSnapshot:
        n = next(generations)
        snap = full_snapshot({"frames": n, "dns_messages": n, "dns_parse_errors": n})
        snap.flows_tracked = n
        snap.blind_spots.ech_offered_hellos = n
        snap.sinks["siem"].spool_depth = n
        return snap

    reg = CollectorRegistry()
    reg.register(SnapshotCollector(provider, clock=lambda: NOW))
    pattern = re.compile(
        r"^egress_monitor_(?:engine_frames_total|flows_tracked|ech_offered_hellos_total|"
        r'parsed_messages_total\{protocol="dns"\}|parse_errors_total\{protocol="dns"\}|'
        r'sink_spool_events\{sink="siem"\}) (\S+)$',
        re.M,
    )
    seen: list[float] = []
    errors: list[BaseException] = []

    def scraper() -> None:
        try:
            for _ in range(30):
                found = pattern.findall(generate_latest(reg).decode())
                assert len(found) == 6 and len(set(found)) == 1, found
                seen.append(float(found[0]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scraper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[0]
    assert sorted(seen) == list(range(1, 121))  # one provider call per scrape
