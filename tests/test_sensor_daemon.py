"""The sensor daemon's loop without a network: recorded frames stand in for the live capture.

What is proved here runs anywhere (no root): the daemon writes the same events as replay, plus
alerts, to the configured sinks; metrics count matches by vendor, protocol and severity and
carry no address; reloads are all-or-nothing; shutdown closes every open alert; ``top`` shows
the status file's hits and falls back to the endpoint. ``tests/test_sensor_netns.py`` does the
same against live traffic in network namespaces.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from monitor.capture.live import LiveStats
from monitor.capture.pcapfile import Frame, read_frames
from monitor.cli import top
from monitor.cli.main import main
from monitor.config.sensor import (
    JsonlSinkConfig,
    LeaseSource,
    SensorConfig,
    StdoutSinkConfig,
    SyslogSinkConfig,
    WebhookSinkConfig,
    parse_config,
)
from monitor.metrics import serve_metrics
from monitor.metrics.labels import sink_label
from monitor.pipeline.sensor import STATUS_FORMAT, ListWatcher, Sensor, sink_specs

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pcaps" / "real" / "tls_curl.pcap"
EXPECTED = SAMPLE.with_name("tls_curl.expected.json")

LIST = """\
list: sensor-test
version: "{version}"
vendors:
  - id: {vendor}
    name: Sensor Test
    category: face-search
    severity: high
    references: [https://sensor-test.example/]
    indicators:
      - domain: {domain}
"""
BROKEN_LIST = 'list: sensor-test\nversion: "3"\nvendors:\n  - id: x\n    nmae: typo\n'
APPROVALS = """\
approvals:
  - reference: CASE-1
    approver: Chief Example
    subjects: {{users: [alice]}}
    vendors: [{vendor}]
    valid_from: 2026-01-01
    valid_until: 2027-01-01
"""


def sample_frames() -> list[Frame]:
    with SAMPLE.open("rb") as f:
        return list(read_frames(f))


class RecordedCapture:
    """Hands out recorded frames in small batches, like ``LiveCapture.poll_by_interface``."""

    def __init__(self, frames: list[Frame], iface: str = "mirror0", batch: int = 7) -> None:
        self.frames = list(frames)
        self.iface = iface
        self.batch = batch
        self.stats_ = LiveStats(iface, if_rx_packets=0, if_rx_bytes=0, if_rx_dropped=0)
        self.closed = False
        self.done = threading.Event()

    def poll_by_interface(self, timeout: float | None) -> dict[str, list[Frame]]:
        if not self.frames:
            self.done.set()
            time.sleep(min(timeout or 0, 0.01))
            return {}
        out, self.frames = self.frames[: self.batch], self.frames[self.batch :]
        st = self.stats_
        st.packets += len(out)
        st.frames += len(out)
        st.if_rx_packets = (st.if_rx_packets or 0) + 2 * len(out)
        st.if_rx_bytes = (st.if_rx_bytes or 0) + sum(len(f[2]) for f in out)
        return {self.iface: out}

    def stats(self) -> dict[str, LiveStats]:
        return {self.iface: self.stats_}

    def close(self) -> None:
        self.closed = True


def frames_end(frames: list[Frame]) -> float:
    return frames[-1][0] / 1e9


def config(tmp_path: Path, **extra: Any) -> SensorConfig:
    settings: dict[str, Any] = {
        "path": str(tmp_path / "config.yaml"),
        "interfaces": ("mirror0",),
        "state_dir": str(tmp_path / "state"),
        "sinks": (JsonlSinkConfig(path=str(tmp_path / "log" / "events.jsonl")),),
        "watch": False,
    }
    settings.update(extra)
    return SensorConfig(**settings)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def sensor(tmp_path: Path) -> Iterator[tuple[Sensor, RecordedCapture]]:
    frames = sample_frames()
    capture = RecordedCapture(frames)
    s = Sensor(
        config(tmp_path),
        open_capture=lambda cfg: capture,
        clock=lambda: frames_end(frames) + 5,
    )
    yield s, capture
    s.close()


def run_until_done(
    s: Sensor, capture: RecordedCapture, prepare: Callable[[Sensor], None] | None = None
) -> int:
    """Start and run the sensor on a thread (as the CLI does on its main thread) until the
    recorded frames are used up, then stop it like SIGTERM would."""
    result: list[int] = []
    failed: list[BaseException] = []

    def main() -> None:
        try:
            s.start()
            if prepare is not None:
                prepare(s)
            result.append(s.run())
        except BaseException as exc:
            failed.append(exc)
            capture.done.set()

    thread = threading.Thread(target=main)
    thread.start()
    assert capture.done.wait(20), "the loop did not consume the frames"
    s.request_stop()
    thread.join(20)
    assert not thread.is_alive()
    if failed:
        raise failed[0]
    return result[0]


# -- events, alerts, shutdown ---------------------------------------------------------------------


def test_daemon_writes_the_events_replay_writes_plus_alerts_and_closes_them_at_stop(
    sensor: tuple[Sensor, RecordedCapture], tmp_path: Path
) -> None:
    s, capture = sensor
    assert run_until_done(s, capture) == 0
    assert capture.closed
    docs = read_jsonl(tmp_path / "log" / "events.jsonl")
    events = [d for d in docs if d["event"]["kind"] == "event"]
    alerts = [d for d in docs if d["event"]["kind"] == "alert"]
    expected = json.loads(EXPECTED.read_text())
    for e in events:  # what the alert engine adds to each event
        assert e["event"].pop("outcome") == "unsanctioned"
        assert e.pop("session")["id"]
    assert events == expected
    opened = [a for a in alerts if a["alert"]["status"] == "open"]
    closed = [a for a in alerts if a["alert"]["status"] == "closed"]
    # One alert per (subject, vendor); the sample's clients are 10.99.0.2 and fd99::2.
    keys = {(a["alert"]["subject"]["id"], a["alert"]["vendor"]) for a in opened}
    assert keys == {
        ("10.99.0.2", "clearview-ai"),
        ("fd99::2", "clearview-ai"),
        ("10.99.0.2", "pimeyes"),
        ("fd99::2", "pimeyes"),
        ("10.99.0.2", "facecheck-id"),
        ("10.99.0.2", "lenso-ai"),
    }
    assert {a["event"]["id"] for a in closed} == {a["event"]["id"] for a in opened}
    assert all(a["alert"]["closed_reason"] == "shutdown" for a in closed)
    assert sum(a["alert"]["count"]["events"] for a in closed) == len(events)


def test_matches_are_counted_by_vendor_protocol_and_severity(
    sensor: tuple[Sensor, RecordedCapture],
) -> None:
    s, capture = sensor
    run_until_done(s, capture)
    snap = s.snapshot()
    assert snap.matches == {
        ("clearview-ai", "dns", "critical"): 2,
        ("clearview-ai", "tls", "critical"): 1,
        ("pimeyes", "dns", "critical"): 2,
        ("pimeyes", "tls", "critical"): 1,
        ("facecheck-id", "tls", "critical"): 1,
        ("lenso-ai", "tls", "high"): 1,
    }
    iface = snap.interfaces["mirror0"]
    assert iface.filter_passed_packets == len(sample_frames())
    assert iface.rx_packets == 2 * iface.filter_passed_packets
    assert iface.last_packet_time == pytest.approx(frames_end(sample_frames()))
    assert snap.last_packet_time == pytest.approx(frames_end(sample_frames()))
    assert snap.counters["detections"] == 8
    assert snap.attribution == {"unattributed": 8}
    assert snap.counters["tls_client_hellos"] >= 4
    assert snap.sinks["jsonl"].events_written == 8 + 2 * 6  # events, opened + closed alerts
    assert set(snap.blocklists.entries) == {
        "face-recognition@2026.11.26",
        "encrypted-dns@2026.11.26",
        "ech-frontends@2026.11.26",
    }
    assert snap.blocklists.reload_failures == 0
    assert snap.blocklists.last_reload_success_time is not None


def test_status_file_has_the_hits_and_metrics_have_no_address(
    sensor: tuple[Sensor, RecordedCapture], tmp_path: Path
) -> None:
    s, capture = sensor
    run_until_done(s, capture)
    path = tmp_path / "state" / "status.json"
    assert path.stat().st_mode & 0o777 == 0o600
    status = json.loads(path.read_text())
    assert status["format"] == STATUS_FORMAT
    assert status["running"] is False  # written once more after the clean stop
    recent = status["recent"]
    assert [h["name"] for h in recent] == [e["match"]["name"] for e in read_expected()]
    assert {h["source_ip"] for h in recent} == {"10.99.0.2", "fd99::2"}
    assert all(h["outcome"] == "unsanctioned" for h in recent)
    text = status["metrics"]
    assert (
        'egress_monitor_matches_total{protocol="tls",severity="high",vendor="lenso-ai"} 1.0' in text
    )
    for leak in ("10.99.0.2", "fd99::2", "10.99.0.1"):
        assert leak not in text


def read_expected() -> list[dict[str, Any]]:
    return json.loads(EXPECTED.read_text())


def test_detections_are_attributed_from_lease_files_and_the_inventory(tmp_path: Path) -> None:
    frames = sample_frames()
    start = frames[0][0] // 1_000_000_000
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text(f"{start + 3600} 52:54:00:12:34:56 10.99.0.2 ws-lease *\n")
    os.utime(leases, (start - 60, start - 60))  # dnsmasq leases count from the file's mtime
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("- ip: fd99::2\n  hostname: ws02.pd.example\n  owner: PD\\bob\n")
    capture = RecordedCapture(frames)
    s = Sensor(
        config(
            tmp_path,
            inventory=str(inventory),
            leases=(LeaseSource(format="dnsmasq", path=str(leases)),),
        ),
        open_capture=lambda cfg: capture,
        clock=lambda: frames_end(frames) + 5,
    )
    run_until_done(s, capture)
    docs = read_jsonl(tmp_path / "log" / "events.jsonl")
    events = [d for d in docs if d["event"]["kind"] == "event"]
    by_ip = {e["source"]["ip"]: e for e in events}
    assert by_ip["10.99.0.2"]["source"]["domain"] == "ws-lease"
    assert by_ip["10.99.0.2"]["attribution"]["source"] == "lease-file"
    assert by_ip["fd99::2"]["source"]["user"] == {"name": "bob", "domain": "PD"}
    assert by_ip["fd99::2"]["attribution"]["source"] == "inventory"
    subjects = {(a["alert"]["subject"]["type"], a["alert"]["subject"]["id"]) for a in docs
                if a["event"]["kind"] == "alert"}  # fmt: skip
    assert subjects == {("workstation", "ws-lease"), ("user", "bob")}
    assert s.snapshot().attribution == {"lease-file": 6, "inventory": 2}
    assert (tmp_path / "state" / "identities.sqlite").exists()
    hits = json.loads((tmp_path / "state" / "status.json").read_text())["recent"]
    assert {(h["workstation"], h["user"]) for h in hits} == {
        ("ws-lease", None), ("ws02.pd.example", "PD\\bob"),
    }  # fmt: skip


def test_a_detection_that_breaks_the_alert_engine_is_still_delivered(
    sensor: tuple[Sensor, RecordedCapture], tmp_path: Path
) -> None:
    s, capture = sensor

    def broken(doc: dict[str, Any]) -> list[dict[str, Any]]:
        raise RuntimeError("bug")

    s.alerts.process = broken  # type: ignore[method-assign]
    run_until_done(s, capture)
    docs = read_jsonl(tmp_path / "log" / "events.jsonl")
    assert len([d for d in docs if d["event"]["kind"] == "event"]) == 8


def test_a_frame_that_crashes_the_engine_is_counted_and_the_loop_goes_on(
    sensor: tuple[Sensor, RecordedCapture], tmp_path: Path
) -> None:
    s, capture = sensor
    calls = {"n": 0}

    def break_third_frame(s: Sensor) -> None:
        assert s.engine is not None
        real = s.engine.process

        def flaky(ts: int, linktype: int, data: bytes) -> None:
            calls["n"] += 1
            if calls["n"] == 3:
                raise IndexError("engine bug")
            real(ts, linktype, data)

        s.engine.process = flaky  # type: ignore[method-assign]

    assert run_until_done(s, capture, break_third_frame) == 0
    assert s.snapshot().counters["processing_errors"] == 1
    assert len(read_jsonl(tmp_path / "log" / "events.jsonl")) > 8


# -- sinks ----------------------------------------------------------------------------------------


def test_config_sinks_map_onto_the_sink_builder_with_stable_label_safe_names() -> None:
    sinks = (
        JsonlSinkConfig(path="/var/log/egress-monitor/events.jsonl", max_bytes=4096, keep=2),
        SyslogSinkConfig(host="siem.example", transport="tls", port=6514, ca_file="/ca.pem"),
        SyslogSinkConfig(host="10.0.0.5", transport="udp", port=514, facility="local4"),
        WebhookSinkConfig(url="https://soar.example/hook", timeout_seconds=5.0,
                          headers=(("Authorization", "Bearer x"),)),
        StdoutSinkConfig(),
    )  # fmt: skip
    specs = sink_specs(sinks)
    assert specs == [
        {"type": "file", "path": "/var/log/egress-monitor/events.jsonl", "max_bytes": 4096,
         "keep": 2, "name": "jsonl"},
        {"type": "syslog", "host": "siem.example", "transport": "tls", "port": 6514,
         "facility": "local0", "cafile": "/ca.pem", "name": "syslog"},
        {"type": "syslog", "host": "10.0.0.5", "transport": "udp", "port": 514,
         "facility": "local4", "name": "syslog-2"},
        {"type": "webhook", "url": "https://soar.example/hook", "timeout": 5.0,
         "headers": {"Authorization": "Bearer x"}, "name": "webhook"},
        {"type": "stdout", "name": "stdout"},
    ]  # fmt: skip
    # The names become metrics labels: never a path, host or URL, so never redacted.
    assert all(sink_label(s["name"]) == s["name"] for s in specs)
    assert [s["name"] for s in sink_specs(sinks, console=True)] == [
        "jsonl", "syslog", "syslog-2", "webhook",
    ]  # fmt: skip


def test_every_sink_type_of_the_config_file_opens(tmp_path: Path) -> None:
    from monitor.alerts.outputs import open_sinks

    text = f"""\
interfaces: [eth1]
sinks:
  - {{type: jsonl, path: {tmp_path}/events.jsonl, max_bytes: 8192, keep: 1}}
  - {{type: syslog, host: 127.0.0.1, transport: udp, port: 5514, facility: local4}}
  - {{type: webhook, url: "http://127.0.0.1:9/hook", timeout_seconds: 2,
     headers: {{X-Token: abc}}}}
  - {{type: stdout}}
"""
    cfg = parse_config(text, "cfg.yaml", for_run=True)
    fan = open_sinks(sink_specs(cfg.sinks), tmp_path / "spool")
    try:
        assert [s.name for s in fan.sinks] == ["jsonl", "syslog", "webhook", "stdout"]
        assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["syslog", "webhook"]
    finally:
        fan.close(0)


# -- reloads --------------------------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_broken_list_is_reported_and_the_last_good_one_stays(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    write(lists / "test.yaml", LIST.format(version="1", vendor="old-vendor", domain="old.test"))
    w = ListWatcher([str(lists)], None)
    w.load()
    before = w.matcher
    assert before is not None and before.match_name("www.old.test") is not None
    write(lists / "test.yaml", BROKEN_LIST)
    assert not w.reload("SIGHUP")
    assert w.matcher is before and w.failures == 1
    assert w.last_error is not None and "test.yaml:5" in w.last_error
    write(lists / "test.yaml", LIST.format(version="2", vendor="new-vendor", domain="new.test"))
    assert w.reload("SIGHUP")
    assert w.matcher is not before and w.failures == 1 and w.last_error is None
    assert w.matcher.match_name("new.test") is not None
    assert w.matcher.match_name("old.test") is None
    assert w.entries() == {"sensor-test@2": 1}


def test_approvals_and_lists_change_together_or_not_at_all(tmp_path: Path) -> None:
    lst, appr = tmp_path / "list.yaml", tmp_path / "approvals.yaml"
    write(lst, LIST.format(version="1", vendor="vendor-a", domain="a.test"))
    write(appr, APPROVALS.format(vendor="vendor-a"))
    w = ListWatcher([str(lst)], str(appr))
    w.load()
    matcher, approvals = w.matcher, w.approvals
    assert len(approvals) == 1
    # A new list that drops vendor-a makes the approvals file name an unknown vendor.
    write(lst, LIST.format(version="2", vendor="vendor-b", domain="b.test"))
    assert not w.reload("SIGHUP")
    assert w.matcher is matcher and w.approvals is approvals
    assert "vendor-a" in (w.last_error or "")
    write(appr, APPROVALS.format(vendor="vendor-b"))
    assert w.reload("SIGHUP")
    assert w.matcher is not matcher and w.approvals is not approvals


def test_inventory_reloads_with_the_lists_and_a_broken_one_keeps_the_last_good(
    tmp_path: Path,
) -> None:
    lst, inv = tmp_path / "list.yaml", tmp_path / "inventory.yaml"
    write(lst, LIST.format(version="1", vendor="vendor-a", domain="a.test"))
    write(inv, "- ip: 10.1.2.3\n  hostname: ws-old\n  owner: alice\n")
    w = ListWatcher([str(lst)], None, inventory=str(inv))
    w.load()
    first = w.inventory
    assert first is not None and str(inv) in w.watched
    write(inv, "- ip: 10.1.2.3\n  hostname: ws-new\n  owner: bob\n")
    assert w.reload("SIGHUP")
    assert w.inventory is not first
    second = w.inventory
    write(inv, "- ip: not-an-address\n  hostname: ws-x\n")
    assert not w.reload("SIGHUP")
    assert w.inventory is second and "inventory.yaml:1" in (w.last_error or "")


def test_watch_reloads_once_a_change_has_settled_and_not_again(tmp_path: Path) -> None:
    lst = tmp_path / "list.yaml"
    write(lst, LIST.format(version="1", vendor="vendor-a", domain="a.test"))
    w = ListWatcher([str(tmp_path)], None)
    w.load()
    assert not w.changed()
    write(lst, LIST.format(version="2", vendor="vendor-a", domain="a.test"))
    assert not w.changed()  # just changed: maybe still being written
    assert w.changed()  # the same for a second look: reload
    assert w.reload("file changed")
    assert not w.changed() and not w.changed()
    (tmp_path / "more.yml").write_text(LIST.format(version="1", vendor="v", domain="v.test")
                                       .replace("sensor-test", "more"))  # fmt: skip
    assert not w.changed()
    assert w.changed()  # a new file in a watched directory counts too
    write(lst, BROKEN_LIST)
    w.changed()
    assert w.changed() and not w.reload("file changed")
    assert not w.changed()  # a failed version is not retried until it changes again


def test_sensor_reload_swaps_the_engine_matcher_and_counts_failures(tmp_path: Path) -> None:
    lst = tmp_path / "list.yaml"
    write(lst, LIST.format(version="1", vendor="vendor-a", domain="a.test"))
    capture = RecordedCapture([])
    s = Sensor(config(tmp_path, blocklists=(str(lst),)), open_capture=lambda cfg: capture)
    s.start()
    try:
        assert s.engine is not None
        first = s.engine.matcher
        write(lst, BROKEN_LIST)
        assert not s.reload("SIGHUP")
        assert s.engine.matcher is first
        assert s.snapshot().blocklists.reload_failures == 1
        write(lst, LIST.format(version="2", vendor="vendor-b", domain="b.test"))
        assert s.reload("SIGHUP")
        assert s.engine.matcher is s.lists.matcher is not first
        assert s.snapshot().blocklists.entries == {"sensor-test@2": 1}
    finally:
        s.close()


# -- top ----------------------------------------------------------------------------------------


def test_top_shows_rates_vendors_and_the_people_behind_recent_hits(
    sensor: tuple[Sensor, RecordedCapture],
) -> None:
    s, capture = sensor
    before = top.reading_from_status(s.status(), "test")
    run_until_done(s, capture)
    status = s.status()
    status["recent"][-1]["user"] = "PD\\alice"
    status["recent"][-1]["workstation"] = "ws01.pd.example"
    after = top.reading_from_status(status, "test")
    after.at = before.at + 2.0
    console = Console(width=200, record=True)
    console.print(top.render(after, before, now=after.at))
    text = console.export_text()
    assert "lenso-ai" in text and "clearview-ai" in text
    assert "PD\\alice" in text and "ws01.pd.example" in text and "10.99.0.2" in text
    received = len(sample_frames()) * 2 / 2.0
    assert f"{received:,.1f}" in text  # received/s over the two seconds
    assert "STOPPED" in text


def test_top_falls_back_to_the_endpoint_and_says_why_hits_are_missing(
    sensor: tuple[Sensor, RecordedCapture], tmp_path: Path
) -> None:
    s, capture = sensor
    run_until_done(s, capture)
    with serve_metrics(s.snapshot, "127.0.0.1", 0, process_metrics=False) as server:
        source = top.Fallback(
            top.StatusFile(str(tmp_path / "nope.json")), top.MetricsEndpoint(server.url)
        )
        reading = source.read()
    assert reading.recent is None and reading.note is not None and "nope.json" in reading.note
    assert reading.value("matches_total", vendor="lenso-ai", protocol="tls") == 1
    console = Console(width=200, record=True)
    console.print(top.render(reading))
    text = console.export_text()
    assert "lenso-ai" in text and "10.99.0.2" not in text


def test_top_once_prints_one_view_from_a_status_file(
    sensor: tuple[Sensor, RecordedCapture], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s, capture = sensor
    run_until_done(s, capture)
    status = tmp_path / "state" / "status.json"
    assert main(["top", "--status", str(status), "--once", "--interval", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "facecheck-id" in out and "Recent vendor hits" in out


def test_top_without_a_sensor_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["top", "--status", str(tmp_path / "none.json"), "--once"]) == 1
    assert "does not exist" in capsys.readouterr().err


# -- the command line ----------------------------------------------------------------------------


def test_run_with_a_broken_blocklist_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_LIST)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"interfaces: [lo]\nblocklists: [{bad}]\nstate_dir: {tmp_path}/state\n")
    assert main(["run", "--config", str(cfg)]) == 2
    assert f"{bad}:5" in capsys.readouterr().err


def test_run_with_a_misspelt_config_key_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("interfaces: [lo]\nsinsk: []\n")
    assert main(["run", "--config", str(cfg)]) == 2
    assert "config.yaml:2" in capsys.readouterr().err


def test_run_on_a_missing_interface_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"interfaces: [nosuch0]\nstate_dir: {tmp_path}/state\n")
    assert main(["run", "--config", str(cfg)]) == 1
    assert "nosuch0" in capsys.readouterr().err
