"""The daemon with ``evidence:`` configured: each alert names a pcapng file holding the packets
that caused it, written before the alert goes out; without ``evidence:`` nothing changes.

Driven like ``tests/test_sensor_daemon.py``: recorded frames stand in for the live capture.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from monitor.capture.pcapfile import Frame, read_frames
from monitor.config.sensor import EvidenceConfig
from monitor.decode.packet import PROTO_TCP, PROTO_UDP, Decoder
from monitor.pipeline.sensor import Sensor
from tests.test_sensor_daemon import RecordedCapture, config, read_jsonl, run_until_done
from tests.tls_hello import build_client_hello

CLIENT = "10.20.0.5"
BYSTANDER = "10.20.0.9"
RESOLVER = "10.20.0.53"
VENDOR_IP = "203.0.113.10"
OTHER_IP = "198.51.100.7"
VENDOR_NAME = "app.clearview.ai"
T0 = 1_780_000_000 * 1_000_000_000
TSHARK = shutil.which("tshark")


def _dns(client: str, name: str, qid: int, sport: int) -> list[Any]:
    query = dns.message.make_query(name, "A", id=qid)
    answer = dns.message.make_response(query)
    answer.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "A", VENDOR_IP))
    return [
        IP(src=client, dst=RESOLVER) / UDP(sport=sport, dport=53) / query.to_wire(),
        IP(src=RESOLVER, dst=client) / UDP(sport=53, dport=sport) / answer.to_wire(),
    ]


def _tls(client: str, server: str, sni: str, sport: int) -> list[Any]:
    hello = build_client_hello(sni)
    c, s = (client, sport), (server, 443)
    isn, ssn = 1000, 9000
    return [
        IP(src=c[0], dst=s[0]) / TCP(sport=c[1], dport=443, flags="S", seq=isn),
        IP(src=s[0], dst=c[0]) / TCP(sport=443, dport=c[1], flags="SA", seq=ssn, ack=isn + 1),
        IP(src=c[0], dst=s[0]) / TCP(sport=c[1], dport=443, flags="A", seq=isn + 1, ack=ssn + 1),
        # A Chrome-sized hello straddles two segments.
        IP(src=c[0], dst=s[0])
        / TCP(sport=c[1], dport=443, flags="A", seq=isn + 1, ack=ssn + 1)
        / hello[:1200],
        IP(src=c[0], dst=s[0])
        / TCP(sport=c[1], dport=443, flags="PA", seq=isn + 1201, ack=ssn + 1)
        / hello[1200:],
    ]


def recorded_frames() -> list[Frame]:
    """A lookup of the vendor and the TLS connection that follows, from one workstation,
    amid a bystander's ordinary traffic (and SSH, which no parser looks at)."""
    packets = [
        *_dns(BYSTANDER, "www.example.org", 7, 41000),
        *_dns(CLIENT, VENDOR_NAME, 0x1234, 40000),
        *_tls(BYSTANDER, OTHER_IP, "www.example.org", 51000),
        *_tls(CLIENT, VENDOR_IP, VENDOR_NAME, 50000),
        IP(src=CLIENT, dst=OTHER_IP) / TCP(sport=52000, dport=22, flags="PA") / b"SSH-2.0-x\r\n",
    ]
    frames: list[Frame] = []
    for i, pkt in enumerate(packets):
        data = bytes(Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:01") / pkt)
        frames.append((T0 + i * 3_000_000, 1, data, len(data)))
    return frames


def run_sensor(tmp_path: Path, evidence: bool) -> tuple[list[dict[str, Any]], Sensor]:
    frames = recorded_frames()
    capture = RecordedCapture(frames, batch=3)
    extra: dict[str, Any] = {}
    if evidence:
        extra["evidence"] = EvidenceConfig(dir=str(tmp_path / "evidence"))
    s = Sensor(
        config(tmp_path, **extra),
        open_capture=lambda cfg: capture,
        status_path=False,
        clock=lambda: frames[-1][0] / 1e9 + 5,
    )
    try:
        assert run_until_done(s, capture) == 0
    finally:
        s.close()
    return read_jsonl(tmp_path / "log" / "events.jsonl"), s


def test_alert_names_a_pcapng_with_the_lookup_and_the_client_hello_that_caused_it(
    tmp_path: Path,
) -> None:
    docs, sensor = run_sensor(tmp_path, evidence=True)
    alerts = [d for d in docs if d["event"]["kind"] == "alert"]
    assert alerts, "the lookup and the hello should raise an alert"
    assert {a["alert"]["subject"]["id"] for a in alerts} == {CLIENT}
    opened = [a for a in alerts if a["alert"]["status"] == "open"]
    closed = [a for a in alerts if a["alert"]["status"] == "closed"]
    assert len(opened) == 1 and len(closed) == 1
    evidence = opened[0]["alert"]["evidence"]
    # The closing update reuses the file written for the opening: one alert, one hash.
    assert all(a["alert"]["evidence"] == evidence for a in alerts)
    path = Path(evidence["path"])
    assert path.parent == tmp_path / "evidence"
    assert path.name == opened[0]["event"]["id"] + ".pcapng"
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == evidence["sha256"]
    assert opened[0]["related"]["hash"] == [evidence["sha256"]]
    assert evidence["bytes"] == len(data)

    with path.open("rb") as fh:
        frames = list(read_frames(fh))
    assert len(frames) == evidence["packets"]
    decoder = Decoder()
    seen = []
    for ts, linktype, frame, _ in frames:
        pkt = decoder.decode(ts, linktype, frame)
        assert pkt is not None
        seen.append(pkt)
    addresses = {bytes(p.src) for p in seen} | {bytes(p.dst) for p in seen}
    bystander = bytes(int(x) for x in BYSTANDER.split("."))
    other = bytes(int(x) for x in OTHER_IP.split("."))
    assert bystander not in addresses and other not in addresses  # nobody else's packets
    dns_packets = [p for p in seen if p.proto == PROTO_UDP and 53 in (p.sport, p.dport)]
    assert [p.dport for p in dns_packets] == [53, 40000]  # the query and its answer
    tls = [p for p in seen if p.proto == PROTO_TCP and 443 in (p.sport, p.dport)]
    assert len(tls) == 5  # SYN, SYN-ACK, ACK and the hello in two segments
    assert VENDOR_NAME.encode() in b"".join(bytes(p.payload) for p in tls)
    assert not any(p.proto == PROTO_TCP and 22 in (p.sport, p.dport) for p in seen)

    if TSHARK is not None:
        out = subprocess.run(
            [TSHARK, "-r", str(path), "-T", "fields", "-e", "dns.qry.name", "-e",
             "tls.handshake.extensions_server_name"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        fields = [line.split("\t") for line in out.splitlines()]
        assert sum(f[0] == VENDOR_NAME for f in fields) == 2
        assert sum(len(f) > 1 and f[1] == VENDOR_NAME for f in fields) == 1

    status = sensor.status()
    assert status["evidence"]["files_written"] == 1
    assert status["evidence"]["files_reused"] >= 1
    assert status["evidence"]["pending"] == 0
    # The same numbers on the metrics endpoint, for the SOC's health alerts.
    metrics = status["metrics"]
    assert "egress_monitor_evidence_files_written_total 1.0" in metrics
    assert f"egress_monitor_evidence_written_bytes_total {float(len(data))}" in metrics
    assert 'egress_monitor_evidence_failures_total{reason="write-error"} 0.0' in metrics
    assert "egress_monitor_evidence_held_alerts 0.0" in metrics


def test_without_evidence_the_documents_are_the_same_less_the_evidence_fields(
    tmp_path: Path,
) -> None:
    plain, sensor = run_sensor(tmp_path / "plain", evidence=False)
    assert sensor.evidence is None and sensor.engine is not None
    assert sensor.engine.on_packet is None
    assert not (tmp_path / "plain" / "state" / "evidence").exists()
    assert "evidence" not in sensor.status()
    assert "egress_monitor_evidence_" not in sensor.status()["metrics"]
    with_evidence, _ = run_sensor(tmp_path / "with", evidence=True)
    stripped = copy.deepcopy(with_evidence)
    for doc in stripped:
        if doc["event"]["kind"] == "alert":
            doc["alert"].pop("evidence")
            doc["related"]["hash"].pop()
            if not doc["related"]["hash"]:
                del doc["related"]["hash"]
            if not doc["related"]:
                del doc["related"]

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return (doc["event"]["kind"], doc["event"]["id"] + str(doc.get("alert", {}).get("status")))

    assert [d for d in plain if "alert" not in d] == [d for d in stripped if "alert" not in d]
    assert sorted(plain, key=key) == sorted(stripped, key=key)


def test_held_alert_goes_out_once_traffic_is_quiet_without_waiting_for_shutdown(
    tmp_path: Path,
) -> None:
    """Packet time stops when the traffic does; the held alert must not wait for more."""
    frames = recorded_frames()
    capture = RecordedCapture(frames, batch=3)
    s = Sensor(
        config(tmp_path, evidence=EvidenceConfig(dir=str(tmp_path / "evidence"))),
        open_capture=lambda cfg: capture,
        status_path=False,
        clock=lambda: frames[-1][0] / 1e9 + 5,
    )
    failed: list[BaseException] = []

    def main() -> None:
        try:
            s.start()
            s.run()
        except BaseException as exc:
            failed.append(exc)
            capture.done.set()

    thread = threading.Thread(target=main)
    thread.start()
    try:
        assert capture.done.wait(20)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not s.status()["documents"]["alerts"]:
            time.sleep(0.1)
        status = s.status()
        assert status["documents"]["alerts"] == 1  # the opening, before any stop
        assert status["evidence"]["files_written"] == 1
        assert status["evidence"]["pending"] == 0
    finally:
        s.request_stop()
        thread.join(20)
        s.close()
    assert not failed
