"""The daemon's outputs end to end: ``egress-monitor run --config CFG`` as a process.

What the sink and metrics unit tests prove class by class is proved here through the daemon
itself, configured only by its file: alerts reach a webhook and syslog receivers (TCP with
octet counting, TLS against a self-signed CA) in the order the JSON-lines sink has them, also
when the receivers are down at first and come back; the metrics endpoint with TLS and basic auth
refuses an unauthenticated scrape and serves the right credentials over HTTPS; and capture on
two interfaces at once yields events from both and per-interface packet counters.

Where no real interface is needed the daemon is started by a small launcher that hands the
``run`` command recorded frames instead of the live capture (everything else -- config
loading, signal handlers, sinks, metrics, SIGTERM shutdown -- is the real code path), so those
tests need no root. The two-interface test needs root (network namespaces, AF_PACKET) and is
skipped without it. Every wait is bounded; every process, receiver and namespace is removed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.test_sinks_support import (
    SyslogStreamReceiver,
    WebhookReceiver,
    free_port,
    parse_rfc5424,
    self_signed,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "pcaps" / "real" / "tls_curl.pcap"
STEP_TIMEOUT = 20.0
REPLAYED = "recorded frames replayed"

T = TypeVar("T")

#: Runs ``egress-monitor run`` in this process with recorded frames in place of the live
#: capture; logs REPLAYED once the frames are used up, then idles until SIGTERM like a daemon.
LAUNCHER = f'''\
import functools, logging, sys, time
from monitor.capture.live import LiveStats
from monitor.capture.pcapfile import read_frames
import monitor.cli.run as run_cmd
from monitor.cli.main import main

pcap, argv = sys.argv[1], sys.argv[2:]
with open(pcap, "rb") as f:
    FRAMES = list(read_frames(f))


class Recorded:
    def __init__(self, config):
        self.iface = config.interfaces[0]
        self.frames = list(FRAMES)
        self.st = LiveStats(self.iface, if_rx_packets=0, if_rx_bytes=0, if_rx_dropped=0)
        self.said = False

    def poll_by_interface(self, timeout):
        if not self.frames:
            if not self.said:
                self.said = True
                logging.getLogger("launcher").warning("{REPLAYED}")
            time.sleep(min(timeout or 0, 0.05))
            return {{}}
        out, self.frames = self.frames[:5], self.frames[5:]
        self.st.packets += len(out)
        self.st.if_rx_packets += len(out)
        self.st.if_rx_bytes += sum(len(x[2]) for x in out)
        return {{self.iface: out}}

    def stats(self):
        return {{self.iface: self.st}}

    def close(self):
        pass


run_cmd.Sensor = functools.partial(run_cmd.Sensor, open_capture=Recorded)
sys.exit(main(argv))
'''


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = STEP_TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Daemon:
    """A daemon process, its JSON-lines output, its log and its SIGTERM stop."""

    def __init__(self, cmd: list[str], workdir: Path, events: Path, ready: str) -> None:
        self.events = events
        self.stderr = workdir / "stderr"
        with open(workdir / "stdout", "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO)
        try:
            wait_for(f"the daemon to log {ready!r}", lambda: self.alive() and ready in self.log())
        except BaseException:
            self.kill()
            raise

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log()[-3000:]}")
        return True

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def docs(self) -> list[dict[str, Any]]:
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines()]

    def stop(self) -> int:
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STEP_TIMEOUT)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def recorded_daemon(tmp_path: Path) -> Iterator[Callable[[str], Daemon]]:
    """Start ``run --config`` on the recorded sample with the given extra config text."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    started: list[Daemon] = []

    def start(extra: str) -> Daemon:
        events = tmp_path / "log" / "events.jsonl"
        config = tmp_path / "config.yaml"
        config.write_text(
            "interfaces: [mirror0]\n"
            "watch: false\n"
            f"state_dir: {tmp_path / 'state'}\n"
            "sinks:\n"
            f"  - {{type: jsonl, path: {events}}}\n" + extra
        )
        cmd = [sys.executable, str(launcher), str(SAMPLE), "run", "--config", str(config)]
        d = Daemon(cmd, tmp_path, events, REPLAYED)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


def canonical(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True)


def first_arrivals(docs: list[dict[str, Any]]) -> list[str]:
    """Each document once, in the order it first arrived (syslog may repeat a batch after an
    outage: at-least-once, bounded duplicates)."""
    seen: set[str] = set()
    out: list[str] = []
    for doc in docs:
        key = canonical(doc)
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def syslog_docs(receiver: SyslogStreamReceiver) -> list[dict[str, Any]]:
    return [
        json.loads(parse_rfc5424(m).msg.removeprefix(b"\xef\xbb\xbf")) for m in receiver.messages
    ]


# -- alerts to a webhook and to syslog over TCP and TLS -------------------------------------------


@pytest.mark.parametrize("receivers_up_at_start", [True, False], ids=["up", "down-then-back"])
def test_every_document_reaches_webhook_and_syslog_tcp_and_tls_in_order(
    recorded_daemon: Callable[[str], Daemon], tmp_path: Path, receivers_up_at_start: bool
) -> None:
    tls = self_signed(tmp_path / "tls")
    webhook = WebhookReceiver(port=free_port())
    tcp = SyslogStreamReceiver(port=free_port())
    tls_rx = SyslogStreamReceiver(tls.server_context(), port=free_port())
    receivers: list[Any] = [webhook, tcp, tls_rx]
    running: list[Any] = []
    try:
        if receivers_up_at_start:
            for r in receivers:
                r.start()
                running.append(r)
        d = recorded_daemon(
            f"  - {{type: webhook, url: 'http://127.0.0.1:{webhook.port}/hook', "
            "timeout_seconds: 2, headers: {X-Token: sekrit}}\n"
            f"  - {{type: syslog, host: 127.0.0.1, transport: tcp, port: {tcp.port}}}\n"
            f"  - {{type: syslog, host: 127.0.0.1, transport: tls, port: {tls_rx.port}, "
            f"ca_file: {tls.cert}, facility: local4}}\n"
        )
        docs = wait_for(
            "the events and alerts in the jsonl sink",
            lambda: (got := d.docs()) and len(got) >= 14 and got,
        )
        kinds = {doc["event"]["kind"] for doc in docs}
        assert kinds == {"event", "alert"}
        if not receivers_up_at_start:
            time.sleep(1.0)  # a few failed attempts while the receivers are down
            assert not webhook.received and not tcp.messages and not tls_rx.messages
            # Held in the daemon's spools meanwhile, one per network sink.
            spool = tmp_path / "state" / "spool"
            for name in ("webhook", "syslog", "syslog-2"):
                held = sum(f.stat().st_size for f in (spool / name).rglob("*") if f.is_file())
                assert held > 0, name
            for r in receivers:
                r.start()  # back on the same ports
                running.append(r)
        want = [canonical(doc) for doc in d.docs()]

        def delivered() -> bool:
            return (
                len(webhook.received) >= len(want)
                and len(first_arrivals(syslog_docs(tcp))) >= len(want)
                and len(first_arrivals(syslog_docs(tls_rx))) >= len(want)
            )

        wait_for("delivery to every receiver", delivered, timeout=30)
        assert d.stop() == 0
        final = [canonical(doc) for doc in d.docs()]
        assert final[: len(want)] == want
        closed = [doc for doc in d.docs() if doc.get("alert", {}).get("closed_reason")]
        assert closed, "shutdown or window ends close the alerts"
        wait_for(
            "the documents written at shutdown",
            lambda: (
                len(webhook.received) >= len(final)
                and len(first_arrivals(syslog_docs(tcp))) >= len(final)
                and len(first_arrivals(syslog_docs(tls_rx))) >= len(final)
            ),
            timeout=10,
        )
        # The webhook acknowledges each POST: exactly once, in the jsonl order.
        assert [canonical(doc) for doc in webhook.received] == final
        assert all(h.get("X-Token") == "sekrit" for h in webhook.headers)
        # Syslog has no acknowledgement: every document, first arrivals in order.
        assert first_arrivals(syslog_docs(tcp)) == final
        assert first_arrivals(syslog_docs(tls_rx)) == final
        assert len(tcp.messages) - len(final) <= 100 and len(tls_rx.messages) - len(final) <= 100
        assert {parse_rfc5424(m).facility for m in tls_rx.messages} == {20}  # local4
        assert {parse_rfc5424(m).facility for m in tcp.messages} == {16}  # local0
        assert tls_rx.connections >= 1
    finally:
        for r in running:
            r.stop()


# -- the metrics endpoint with TLS and basic auth -------------------------------------------------


def scrape(url: str, ca: Path, auth: tuple[str, str] | None) -> tuple[int, str, dict[str, str]]:
    ctx = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=5) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)


def test_metrics_over_https_need_the_configured_basic_auth(
    recorded_daemon: Callable[[str], Daemon], tmp_path: Path
) -> None:
    tls = self_signed(tmp_path / "tls")
    password = "correct horse battery staple"
    hashed = subprocess.run(
        [sys.executable, "-m", "monitor.metrics", "hash-password"],
        input=password + "\n", capture_output=True, text=True, timeout=STEP_TIMEOUT, check=True,
    ).stdout.strip()  # fmt: skip
    assert hashed.startswith("scrypt$")
    port = free_port()
    d = recorded_daemon(
        "metrics:\n"
        f'  listen: "127.0.0.1:{port}"\n'
        f"  tls_cert: {tls.cert}\n"
        f"  tls_key: {tls.key}\n"
        f"  basic_auth: {{user: prometheus, password_hash: '{hashed}'}}\n"
    )
    url = f"https://127.0.0.1:{port}/metrics"
    status, body, headers = scrape(url, tls.cert, None)
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Basic")
    assert "egress_monitor" not in body
    assert scrape(url, tls.cert, ("prometheus", "wrong"))[0] == 401
    assert scrape(url, tls.cert, ("someone", password))[0] == 401
    status, body, _ = scrape(url, tls.cert, ("prometheus", password))
    assert status == 200
    assert (
        'egress_monitor_matches_total{protocol="tls",severity="high",vendor="lenso-ai"} 1.0' in body
    )
    assert 'egress_monitor_interface_received_packets_total{interface="mirror0"}' in body
    for leak in ("10.99.0.2", "fd99::2"):
        assert leak not in body
    # Plain HTTP on the TLS port gets no metrics.
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            plain = resp.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError):
        plain = ""
    assert "egress_monitor_matches_total" not in plain
    assert d.stop() == 0


# -- two interfaces at once (root) ----------------------------------------------------------------


def _run(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return res.stdout


def _two_interface_skip_reason() -> str | None:
    if sys.platform != "linux":
        return "Linux only"
    if os.geteuid() != 0:
        return "needs root (network namespaces, packet sockets)"
    for tool in ("ip", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    probe = f"soprobe{os.getpid()}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
    if res.returncode != 0:
        return f"ip netns unavailable: {res.stderr.decode(errors='replace').strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def dns_query(name: str, ident: int) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


@pytest.mark.root
def test_capture_on_two_interfaces_yields_events_and_counters_for_both() -> None:
    reason = _two_interface_skip_reason()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}"
    sensor_ns, client_ns = f"sos{tag}", f"soc{tag}"
    workdir = Path(tempfile.mkdtemp(prefix="sensor-outputs-"))
    pairs = (("so0", "co0", "10.67.0"), ("so1", "co1", "10.68.0"))
    daemon: Daemon | None = None
    try:
        _run("ip", "netns", "add", sensor_ns)
        _run("ip", "netns", "add", client_ns)
        for ns in (sensor_ns, client_ns):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        for s_dev, c_dev, net in pairs:
            _run("ip", "link", "add", "name", s_dev, "netns", sensor_ns, "type", "veth",
                 "peer", "name", c_dev, "netns", client_ns)  # fmt: skip
            for ns, dev, host in ((sensor_ns, s_dev, 1), (client_ns, c_dev, 2)):
                _run("ip", "-n", ns, "addr", "add", f"{net}.{host}/24", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
        events = workdir / "log" / "events.jsonl"
        config = workdir / "config.yaml"
        config.write_text(
            "interfaces: [so0, so1]\n"
            "watch: false\n"
            f"state_dir: {workdir / 'state'}\n"
            f"sinks:\n  - {{type: jsonl, path: {events}}}\n"
            'metrics:\n  listen: "127.0.0.1:10463"\n'
        )
        daemon = Daemon(
            ["ip", "netns", "exec", sensor_ns, sys.executable, "-m", "monitor", "run",
             "--config", str(config)],
            workdir, events, "capturing on",
        )  # fmt: skip
        assert "so0, so1" in daemon.log()
        queries = (
            ("10.67.0.1", "app.clearview.ai", 0x1111),
            ("10.68.0.1", "www.pimeyes.com", 0x2222),
        )
        code = "import socket, sys\n" + "".join(
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.sendto({dns_query(name, ident)!r}, ('{server}', 53))\n"
            for server, name, ident in queries
        )

        def seen_both() -> list[dict[str, Any]] | None:
            assert daemon is not None
            got = [doc for doc in daemon.docs() if doc["event"]["kind"] == "event"]
            names = {doc["match"]["name"] for doc in got}
            if {"app.clearview.ai", "www.pimeyes.com"} <= names:
                return got
            _run("ip", "netns", "exec", client_ns, sys.executable, "-c", code)
            time.sleep(0.3)
            return None

        got = wait_for("events from both interfaces", seen_both)
        by_name = {doc["match"]["name"]: doc for doc in got}
        assert by_name["app.clearview.ai"]["destination"]["ip"] == "10.67.0.1"
        assert by_name["app.clearview.ai"]["source"]["ip"] == "10.67.0.2"
        assert by_name["www.pimeyes.com"]["destination"]["ip"] == "10.68.0.1"
        assert by_name["www.pimeyes.com"]["source"]["ip"] == "10.68.0.2"

        def metrics() -> dict[str, float]:
            text = _run("ip", "netns", "exec", sensor_ns, "curl", "-sf", "--max-time", "5",
                        "http://127.0.0.1:10463/metrics")  # fmt: skip
            out: dict[str, float] = {}
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    key, _, value = line.rpartition(" ")
                    out[key] = float(value)
            return out

        m = metrics()
        for dev, _, _ in pairs:
            received = m.get(
                f'egress_monitor_interface_received_packets_total{{interface="{dev}"}}'
            )
            passed = m.get(
                f'egress_monitor_capture_filter_passed_packets_total{{interface="{dev}"}}'
            )
            assert received is not None and received >= 1, (dev, received)
            assert passed is not None and passed >= 1, (dev, passed)
            assert m.get(f'egress_monitor_capture_healthy{{interface="{dev}"}}') == 1
        assert daemon.stop() == 0
    finally:
        if daemon is not None:
            daemon.kill()
        for ns in (sensor_ns, client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
