"""Evidence from real captures: the detection pipeline and the alert engine drive the recorder
the way the sensor does, and Wireshark's tshark confirms the files hold what caused each alert
(the DNS exchange, the TCP handshake and ClientHello, the QUIC Initials)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from monitor.alerts.engine import AlertEngine
from monitor.alerts.evidence import EvidenceRecorder
from monitor.blocklist.loader import load_blocklists, shipped_blocklist_dir
from monitor.capture.pcapfile import ReaderStats, read_frames
from monitor.decode.packet import Decoder
from monitor.events.community_id import community_id
from monitor.events.ecs import to_ecs
from monitor.pipeline.detection import Detection
from monitor.pipeline.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "pcaps" / "real"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")


def sensor_with_evidence(
    capture: Path, recorder: EvidenceRecorder, *, settle: float | None
) -> list[dict[str, Any]]:
    """Frames -> recorder and detection engine -> alert engine -> evidence for each alert."""
    matcher = load_blocklists([shipped_blocklist_dir()])
    detections: list[Detection] = []
    engine = Engine(matcher, detections.append)
    alerts = AlertEngine()
    decoder = Decoder()
    out: list[dict[str, Any]] = []

    def handle(doc: dict[str, Any], flow: str) -> None:
        if doc["event"]["kind"] != "alert":
            recorder.note(doc)
            out.append(doc)
        elif settle is None:
            evidence = recorder.write_for(doc, [flow])
            out.append(doc if evidence is None else attach(doc, evidence))
        else:
            out.extend(recorder.defer(doc, [flow], settle_seconds=settle))

    from monitor.alerts.evidence import attach_evidence as attach

    with capture.open("rb") as fh:
        for ts, linktype, data, wirelen in read_frames(fh, ReaderStats()):
            pkt = decoder.decode(ts, linktype, data)
            if pkt is not None and pkt.proto in (6, 17):
                key = community_id(pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport)
                recorder.remember(ts, linktype, data, key, wirelen)
            engine.process(ts, linktype, data)
            for detection in detections:
                event = to_ecs(detection)
                for doc in alerts.process(event):
                    handle(doc, event["network"]["community_id"])
            detections.clear()
            out.extend(recorder.due())
    for doc in alerts.close():
        handle(doc, doc["network"]["community_id"])
    out.extend(recorder.drain())
    return out


def tshark_fields(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    assert TSHARK is not None
    cmd = [TSHARK, "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in result.stdout.splitlines()]


def evidence_of(docs: list[dict[str, Any]], kind: str) -> tuple[dict[str, Any], Path]:
    """The first alert opened by a ``kind`` detection, and its evidence file checked."""
    alerts = [d for d in docs if d["event"]["kind"] == "alert"]
    opened = [a for a in alerts if a["match"]["evidence"] == kind]
    assert opened, f"the capture should raise an alert on {kind}"
    first = opened[0]
    evidence = first["alert"]["evidence"]
    path = Path(evidence["path"])
    assert path.name == first["event"]["id"] + ".pcapng"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == evidence["sha256"]
    assert first["related"]["hash"] == [evidence["sha256"]]
    # Every update of the alert (escalation, closing) names the very same file.
    for doc in alerts:
        if doc["event"]["id"] == first["event"]["id"]:
            assert doc["alert"]["evidence"] == evidence
    json.dumps(first)  # still a plain JSON document
    return first, path


@needs_tshark
def test_tls_alert_evidence_holds_the_handshake_and_client_hello(tmp_path: Path) -> None:
    recorder = EvidenceRecorder(tmp_path / "evidence", max_bytes=10 << 20)
    docs = sensor_with_evidence(REAL / "tls_curl.pcap", recorder, settle=2.0)
    alert, path = evidence_of(docs, "tls-sni")
    syn = tshark_fields(path, "tcp.flags.syn == 1 && tcp.flags.ack == 0", "frame.comment")
    synack = tshark_fields(path, "tcp.flags.syn == 1 && tcp.flags.ack == 1", "frame.number")
    hello = tshark_fields(path, "tls.handshake.type == 1", "tls.handshake.extensions_server_name")
    assert len(syn) >= 1 and len(synack) >= 1
    assert [row[0] for row in hello] == [alert["match"]["name"]]
    assert f"alert {alert['event']['id']}" in syn[0][0]
    assert alert["network"]["community_id"] in syn[0][0]
    # The project's own reader agrees with tshark on the packet count.
    with path.open("rb") as fh:
        stats = ReaderStats()
        frames = list(read_frames(fh, stats))
    assert len(frames) == alert["alert"]["evidence"]["packets"]
    assert not stats.truncated_tail and stats.skipped_blocks == 0
    assert len(tshark_fields(path, "frame", "frame.number")) == len(frames)


@needs_tshark
def test_dns_alert_evidence_holds_query_and_answer_when_held_to_settle(tmp_path: Path) -> None:
    recorder = EvidenceRecorder(tmp_path / "evidence", max_bytes=10 << 20)
    docs = sensor_with_evidence(REAL / "dns_dig_udp.pcap", recorder, settle=2.0)
    alert, path = evidence_of(docs, "dns-query")
    rows = tshark_fields(path, "dns", "dns.flags.response", "dns.qry.name")
    name = alert["match"]["name"]
    assert ["0", name] in rows  # the query
    assert ["1", name] in rows  # and its answer, which came after the alert was raised
    assert recorder.pending == 0


@needs_tshark
def test_dns_alert_evidence_written_at_once_has_the_query(tmp_path: Path) -> None:
    recorder = EvidenceRecorder(tmp_path / "evidence", max_bytes=10 << 20)
    docs = sensor_with_evidence(REAL / "dns_dig_udp.pcap", recorder, settle=None)
    alert, path = evidence_of(docs, "dns-query")
    rows = tshark_fields(path, "dns", "dns.flags.response", "dns.qry.name")
    assert ["0", alert["match"]["name"]] in rows


@needs_tshark
def test_quic_alert_evidence_holds_the_initials_with_the_sni(tmp_path: Path) -> None:
    recorder = EvidenceRecorder(tmp_path / "evidence", max_bytes=10 << 20)
    docs = sensor_with_evidence(REAL / "quic_chromium.pcap", recorder, settle=2.0)
    alert, path = evidence_of(docs, "quic-sni")
    initials = tshark_fields(path, "quic.long.packet_type == 0", "frame.number")
    assert len(initials) >= 1
    sni = tshark_fields(path, "tls.handshake.type == 1", "tls.handshake.extensions_server_name")
    assert [alert["match"]["name"]] in sni


def test_packets_of_flows_no_alert_names_never_reach_the_disk(tmp_path: Path) -> None:
    directory = tmp_path / "evidence"
    recorder = EvidenceRecorder(directory, max_bytes=10 << 20)
    docs = sensor_with_evidence(REAL / "tls_curl.pcap", recorder, settle=None)
    _, path = evidence_of(docs, "tls-sni")
    keys = {d["network"]["community_id"] for d in docs}
    with path.open("rb") as fh:
        frames = list(read_frames(fh))
    decoder = Decoder()
    for ts, linktype, data, _ in frames:
        pkt = decoder.decode(ts, linktype, data)
        assert pkt is not None
        assert community_id(pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport) in keys
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        {d["event"]["id"] + ".pcapng" for d in docs if d["event"]["kind"] == "alert"}
    )


@needs_tshark
def test_alert_opened_by_the_lookup_also_holds_the_connections_that_followed(
    tmp_path: Path,
) -> None:
    """ipv6_mixed: fd99::2 looks up app.clearview.ai, again 60 ms later, then connects.
    One alert, and its evidence is the whole visit: both DNS exchanges, the handshake and the
    ClientHello -- and nothing of 10.99.0.2, another subject."""
    recorder = EvidenceRecorder(tmp_path / "evidence", max_bytes=10 << 20)
    docs = sensor_with_evidence(REAL / "ipv6_mixed.pcap", recorder, settle=2.0)
    alert, path = evidence_of(docs, "dns-query")
    assert (alert["alert"]["subject"]["id"], alert["alert"]["vendor"]) == (
        "fd99::2",
        "clearview-ai",
    )
    queries = tshark_fields(path, "dns.flags.response == 0", "udp.srcport", "dns.qry.name")
    answers = tshark_fields(path, "dns.flags.response == 1", "dns.qry.name")
    assert len({port for port, _ in queries}) == 2
    assert all(name == "app.clearview.ai" for _, name in queries)
    assert len(answers) == len(queries)
    syns = tshark_fields(path, "tcp.flags.syn == 1 && tcp.flags.ack == 0", "ipv6.src")
    assert syns == [["fd99::2"]]
    hellos = tshark_fields(path, "tls.handshake.type == 1", "tls.handshake.extensions_server_name")
    assert hellos == [["app.clearview.ai"]]
    assert tshark_fields(path, "ip.addr == 10.99.0.2", "frame.number") == []
    # The handshake comes after the lookups: the file is in packet-time order.
    times = [float(t[0]) for t in tshark_fields(path, "frame", "frame.time_epoch")]
    assert times == sorted(times)


def test_nanosecond_timestamps_survive_into_the_evidence(tmp_path: Path) -> None:
    recorder = EvidenceRecorder(tmp_path / "evidence", max_bytes=10 << 20)
    docs = sensor_with_evidence(REAL / "pcap_nanosec.pcap", recorder, settle=2.0)
    _, path = evidence_of(docs, "tls-sni")
    with (REAL / "pcap_nanosec.pcap").open("rb") as fh:
        original = {ts for ts, _, _, _ in read_frames(fh)}
    with path.open("rb") as fh:
        written = [ts for ts, _, _, _ in read_frames(fh)]
    assert written and set(written) <= original
    assert any(ts % 1000 for ts in written)
