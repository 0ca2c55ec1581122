"""The sensor daemon end to end: live traffic from real clients in network namespaces.

One veth pair joins two namespaces. The sensor namespace runs dnsmasq (answering vendor names),
an ``openssl s_server`` (TLS named as vendors), a plain HTTP server, and the daemon itself --
started as ``python -m monitor run --config CFG``, exactly as the systemd unit does -- capturing
on its end of the pair. The client namespace runs dig, curl and ``openssl s_client``. The tests
check the events and alerts in the daemon's JSON-lines file, scrape ``/metrics`` over HTTP,
let a real Prometheus server scrape the daemon and fire the vendor-access rule from
``deploy/prometheus/rules/``, reload blocklists with SIGHUP (broken, then good) and by file
watch, and stop the daemon with SIGTERM.

Needs root (namespaces, AF_PACKET) and dnsmasq, dig, curl, openssl and Prometheus; missing
Debian packages are installed when apt-get can, otherwise the tests are skipped with the reason.
Every wait is bounded and every process and namespace is removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from monitor.blocklist.loader import shipped_blocklist_dir

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy" / "prometheus" / "rules" / "egress-monitor.rules.yml"
SERVER, CLIENT = "10.66.0.1", "10.66.0.2"
STEP_TIMEOUT = 30.0
METRICS = "http://127.0.0.1:10463/metrics"
PROMETHEUS_PORT = 19090

#: Tool -> Debian package, installed on demand (CI starts from a fresh Debian).
TOOLS = {
    "ip": "iproute2",
    "dnsmasq": "dnsmasq-base",
    "dig": "bind9-dnsutils",
    "curl": "curl",
    "openssl": "openssl",
    "prometheus": "prometheus",
}

TEST_LIST = """\
list: sensor-test
version: "{version}"
vendors:
  - id: {vendor}
    name: Sensor test vendor
    category: face-search
    severity: high
    references: [https://sensor-test.example/]
    indicators:
      - domain: {domain}
"""
BROKEN_LIST = 'list: sensor-test\nversion: "2"\nvendors:\n  - id: broken\n    nmae: typo\n'

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = STEP_TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _run(*cmd: str, timeout: float = STEP_TIMEOUT, check: bool = True) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return res.stdout


def _install(package: str) -> None:
    if shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", package],
            capture_output=True,
            timeout=300,
            env=env,
        )


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "Linux only"
    if os.geteuid() != 0:
        return "needs root (network namespaces, packet sockets)"
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            _install(package)
        if shutil.which(tool) is None:
            return f"{tool} not installed and apt-get could not install {package}"
    probe = f"snprobe{os.getpid()}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
    if res.returncode != 0:
        return f"ip netns unavailable: {res.stderr.decode(errors='replace').strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


@dataclass
class Lab:
    sensor_ns: str
    client_ns: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def sensor(self, *cmd: str, timeout: float = STEP_TIMEOUT) -> str:
        return _run("ip", "netns", "exec", self.sensor_ns, *cmd, timeout=timeout)

    def client(self, *cmd: str, timeout: float = STEP_TIMEOUT) -> str:
        return _run("ip", "netns", "exec", self.client_ns, *cmd, timeout=timeout)

    def start(self, ns: str, *cmd: str, log: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *cmd], stdout=out, stderr=out, cwd=self.workdir
            )
        self.procs.append(proc)
        return proc

    # -- clients ----------------------------------------------------------------------------

    def dig(self, name: str) -> str:
        return self.client("dig", "+time=2", "+tries=2", f"@{SERVER}", name, "A", "+short")

    def https(self, name: str) -> None:
        self.client(
            "curl", "-sk", "--max-time", "10", "-o", "/dev/null",
            "--resolve", f"{name}:443:{SERVER}", f"https://{name}/",
        )  # fmt: skip

    def s_client(self, name: str) -> None:
        res = subprocess.run(
            ["ip", "netns", "exec", self.client_ns, "openssl", "s_client", "-connect",
             f"{SERVER}:443", "-servername", name],
            input=b"", capture_output=True, timeout=STEP_TIMEOUT,
        )  # fmt: skip
        assert b"BEGIN CERTIFICATE" in res.stdout, res.stderr[-1000:]

    def http(self, name: str) -> None:
        self.client(
            "curl", "-s", "--max-time", "10", "-o", "/dev/null",
            "--resolve", f"{name}:8080:{SERVER}", f"http://{name}:8080/",
        )  # fmt: skip

    def garbage_dns(self) -> None:
        code = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.sendto(b'\\x00\\x01garbage', ('{SERVER}', 53))\n"
        )
        self.client(sys.executable, "-c", code)

    def scrape(self, url: str = METRICS) -> str:
        return self.sensor("curl", "-sf", "--max-time", "5", url)


def _wait_listening(lab: Lab, port: int, proto: str = "t") -> None:
    def probe() -> bool:
        out = _run("ip", "netns", "exec", lab.sensor_ns, "ss", f"-Hl{proto}n", check=False)
        return f":{port} " in out

    wait_for(f"a listener on port {port}", probe)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}"
    # World-readable, so that the daemon can still read its lists after dropping to nobody.
    workdir = Path(tempfile.mkdtemp(prefix="sensor-netns-"))
    workdir.chmod(0o755)
    lab = Lab(f"sns{tag}", f"snc{tag}", workdir)
    try:
        s, c = lab.sensor_ns, lab.client_ns
        _run("ip", "netns", "add", s)
        _run("ip", "netns", "add", c)
        _run(
            "ip",
            "link",
            "add",
            "name",
            "s0",
            "netns",
            s,
            "type",
            "veth",
            "peer",
            "name",
            "c0",
            "netns",
            c,
        )
        for ns, dev, addr in ((s, "s0", SERVER), (c, "c0", CLIENT)):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        names = (
            "app.clearview.ai",
            "www.pimeyes.com",
            "facecheck.id",
            "lenso.ai",
            "sensor-test.example",
            "newvendor.test",
            "watched.test",
            "intranet.pd.test",
        )
        lab.start(
            s, "dnsmasq", "--no-resolv", "--no-hosts", "--no-poll", "--keep-in-foreground",
            "--bind-interfaces", f"--listen-address={SERVER}", "--user=root", "--group=root",
            f"--pid-file={workdir / 'dnsmasq.pid'}",
            *(f"--host-record={n},{SERVER}" for n in names), log="dnsmasq.log",
        )  # fmt: skip
        key, cert = workdir / "key.pem", workdir / "cert.pem"
        _run(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=sensor-test", "-keyout", str(key),
            "-out", str(cert),
        )  # fmt: skip
        lab.start(
            s, "openssl", "s_server", "-quiet", "-www", "-cert", str(cert), "-key", str(key),
            "-accept", f"{SERVER}:443", log="s_server.log",
        )  # fmt: skip
        lab.start(s, sys.executable, "-m", "http.server", "8080", "--bind", SERVER, log="http.log")
        _wait_listening(lab, 443)
        _wait_listening(lab, 8080)
        _wait_listening(lab, 53, "u")
        yield lab
    finally:
        for proc in lab.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in lab.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for ns in (lab.sensor_ns, lab.client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


# -- the daemon ---------------------------------------------------------------------------------


class Daemon:
    """``python -m monitor run --config CFG`` in the sensor namespace, its files and signals."""

    def __init__(self, lab: Lab, name: str, extra_config: str = "", *args: str) -> None:
        self.lab = lab
        self.dir = lab.workdir / name
        self.dir.mkdir(mode=0o755)
        self.lists = self.dir / "lists"
        self.lists.mkdir(mode=0o755)
        self.write_list(
            TEST_LIST.format(version="1", vendor="sensor-test", domain="sensor-test.example")
        )
        self.events = self.dir / "log" / "events.jsonl"
        self.status = self.dir / "state" / "status.json"
        self.config = self.dir / "config.yaml"
        self.config.write_text(
            "interfaces: [s0]\n"
            f"blocklists: [{shipped_blocklist_dir()}, {self.lists}]\n"
            f"state_dir: {self.dir / 'state'}\n"
            f"sinks:\n  - {{type: jsonl, path: {self.events}}}\n"
            'metrics:\n  listen: "127.0.0.1:10463"\n' + extra_config
        )
        self.config.chmod(0o644)
        self.stdout = self.dir / "stdout"
        self.stderr = self.dir / "stderr"
        self.started = time.time()
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", lab.sensor_ns, sys.executable, "-m", "monitor", "run",
                 "--config", str(self.config), *args],
                stdout=out, stderr=err, cwd=REPO,
                env={**os.environ, "COLUMNS": "200"},  # --console: room for the view
            )  # fmt: skip
        try:
            wait_for("the daemon to start", lambda: self.alive() and "capturing on" in self.log())
        except BaseException:
            self.kill()
            raise

    def write_list(self, text: str) -> None:
        tmp = self.lists / ".test.yaml.tmp"
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, self.lists / "test.yaml")

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

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [
            d for d in self.docs() if d["event"]["kind"] == "event" and d["match"]["name"] == name
        ]

    def wait_event(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        return wait_for(
            f"{count} event(s) for {name}",
            lambda: (e := self.events_named(name)) and len(e) >= count and e,
        )

    def metrics(self) -> dict[str, float]:
        """``name{labels}`` -> value, as the text exposition spells it."""
        out: dict[str, float] = {}
        for line in self.lab.scrape().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def send(self, signum: int) -> None:
        # ``ip netns exec`` execs the command, so the Popen's pid is the daemon's.
        os.kill(self.proc.pid, signum)

    def stop(self) -> int:
        self.send(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STEP_TIMEOUT)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def daemon_factory(lab: Lab) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(name: str, extra_config: str = "", *args: str) -> Daemon:
        d = Daemon(lab, name, extra_config, *args)
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()


def metric(values: dict[str, float], name: str, **labels: str) -> float | None:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return values.get(f"{name}{{{inner}}}" if labels else name)


# -- tests --------------------------------------------------------------------------------------


def test_live_clients_become_events_alerts_and_metrics_and_prometheus_alerts(
    lab: Lab, daemon_factory: Callable[..., Daemon]
) -> None:
    inventory = lab.workdir / "inventory.yaml"
    inventory.write_text(f"- ip: {CLIENT}\n  hostname: ws01.pd.test\n  owner: PD\\alice\n")
    inventory.chmod(0o644)
    # As in a container started as root: capture opened as root, then everything as nobody.
    d = daemon_factory("main", f"user: nobody\nwatch: false\ninventory: {inventory}\n")
    assert "running as nobody" in d.log()
    lab.dig("app.clearview.ai")
    lab.https("www.pimeyes.com")
    lab.s_client("facecheck.id")
    lab.http("lenso.ai")
    lab.dig("intranet.pd.test")  # not a vendor: must leave no trace
    lab.garbage_dns()

    (dns,) = d.wait_event("app.clearview.ai")
    (tls,) = d.wait_event("www.pimeyes.com")
    (s_client,) = d.wait_event("facecheck.id")
    (http,) = d.wait_event("lenso.ai")
    for event, evidence, vendor in (
        (dns, "dns-query", "clearview-ai"),
        (tls, "tls-sni", "pimeyes"),
        (s_client, "tls-sni", "facecheck-id"),
        (http, "http-host", "lenso-ai"),
    ):
        assert event["match"]["evidence"] == evidence
        assert event["match"]["vendor"] == vendor
        assert event["source"]["ip"] == CLIENT
        assert event["destination"]["ip"] == SERVER
        assert event["event"]["outcome"] == "unsanctioned"
        assert event["source"]["domain"] == "ws01.pd.test"
        assert event["source"]["user"] == {"name": "alice", "domain": "PD"}
        assert event["attribution"]["source"] == "inventory"
    assert dns["dns"]["question"] == {"name": "app.clearview.ai", "type": "A"}
    assert tls["tls"]["client"]["server_name"] == "www.pimeyes.com"
    assert http["url"] == {"domain": "lenso.ai", "port": 8080}
    alerts = wait_for(
        "four open alerts",
        lambda: (a := [x for x in d.docs() if x["event"]["kind"] == "alert"]) and len(a) >= 4 and a,
    )
    assert {(a["alert"]["vendor"], a["alert"]["status"]) for a in alerts} == {
        ("clearview-ai", "open"),
        ("pimeyes", "open"),
        ("facecheck-id", "open"),
        ("lenso-ai", "open"),
    }
    assert all(
        a["alert"]["subject"] == {"type": "user", "id": "alice", "unattributed": False}
        for a in alerts
    )
    assert "intranet.pd.test" not in d.events.read_text()

    # /metrics over HTTP: counts only, no address.
    text = lab.scrape()
    for personal in (CLIENT, SERVER, "intranet", "alice", "ws01"):
        assert personal not in text, personal
    m = wait_for(
        "the DNS parse error in metrics",
        lambda: (
            (v := d.metrics())
            and metric(v, "egress_monitor_parse_errors_total", protocol="dns") == 1
            and v
        ),
    )
    received = metric(m, "egress_monitor_interface_received_packets_total", interface="s0") or 0
    passed = metric(m, "egress_monitor_capture_filter_passed_packets_total", interface="s0") or 0
    # The prefilter passes DNS both ways, the hellos, the HTTP request and little else: far
    # fewer packets than the TCP handshakes, certificates and pages the interface received.
    assert received >= 20 and 8 <= passed < received
    assert metric(m, "egress_monitor_capture_kernel_dropped_packets_total", interface="s0") == 0
    assert metric(m, "egress_monitor_capture_healthy", interface="s0") == 1
    for vendor, protocol, severity in (
        ("clearview-ai", "dns", "critical"),
        ("pimeyes", "tls", "critical"),
        ("facecheck-id", "tls", "critical"),
        ("lenso-ai", "http", "high"),
    ):
        labels = {"vendor": vendor, "protocol": protocol, "severity": severity}
        assert metric(m, "egress_monitor_matches_total", **labels) == 1, labels
    assert sum(v for k, v in m.items() if k.startswith("egress_monitor_matches_total{")) == 4
    assert (metric(m, "egress_monitor_parsed_messages_total", protocol="dns") or 0) >= 4
    assert metric(m, "egress_monitor_parse_errors_total", protocol="tls") == 0
    last = metric(m, "egress_monitor_last_packet_timestamp_seconds")
    assert last is not None and d.started < last <= time.time() + 1
    assert metric(m, "egress_monitor_sink_events_written_total", sink="jsonl") == len(d.docs())
    assert metric(m, "egress_monitor_blocklist_entries", list="sensor-test@1") == 1
    assert metric(m, "egress_monitor_blocklist_reload_failures_total") == 0
    assert metric(m, "egress_monitor_attribution_outcomes_total", outcome="inventory") == 4

    # A real Prometheus scrapes the daemon and fires the vendor-access rule as deployed.
    prom = lab.workdir / "prometheus"
    prom.mkdir()
    (prom / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 1s}\n"
        f"rule_files: [{RULES}]\n"
        "scrape_configs:\n"
        "  - job_name: egress-monitor\n"
        "    static_configs: [{targets: ['127.0.0.1:10463']}]\n"
    )
    prometheus = lab.start(
        lab.sensor_ns, "prometheus", f"--config.file={prom / 'prometheus.yml'}",
        f"--storage.tsdb.path={prom / 'data'}",
        f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}", log="prometheus.log",
    )  # fmt: skip

    def firing() -> set[tuple[str, str]]:
        try:
            out = lab.scrape(f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/alerts")
        except AssertionError:
            return set()
        return {
            (a["labels"].get("vendor", ""), a["labels"].get("severity", ""))
            for a in json.loads(out)["data"]["alerts"]
            if a["labels"]["alertname"] == "EgressMonitorVendorAccess" and a["state"] == "firing"
        }

    fired = wait_for(
        "EgressMonitorVendorAccess to fire in Prometheus",
        lambda: (f := firing()) and len(f) == 4 and f,
        timeout=45,
    )
    assert fired == {
        ("clearview-ai", "critical"),
        ("pimeyes", "critical"),
        ("facecheck-id", "critical"),
        ("lenso-ai", "high"),
    }
    up = json.loads(lab.scrape(f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?query=up"))
    assert [r["value"][1] for r in up["data"]["result"]] == ["1"]
    prometheus.terminate()
    prometheus.wait(timeout=STEP_TIMEOUT)

    # SIGTERM: exit 0, every open alert closed and on disk, the status file says stopped.
    assert d.stop() == 0
    closed = [
        a for a in d.docs() if a["event"]["kind"] == "alert" and a["alert"]["status"] == "closed"
    ]
    assert {a["event"]["id"] for a in closed} == {a["event"]["id"] for a in alerts}
    assert all(a["alert"]["closed_reason"] == "shutdown" for a in closed)
    assert "closed 4 open alert(s) at shutdown" in d.log()
    status = json.loads(d.status.read_text())
    assert status["running"] is False
    assert {(h["name"], h["workstation"], h["user"]) for h in status["recent"]} == {
        (name, "ws01.pd.test", "PD\\alice")
        for name in ("app.clearview.ai", "www.pimeyes.com", "facecheck.id", "lenso.ai")
    }
    # top, as the operator runs it (root may read the daemon's 0600 status file).
    view = subprocess.run(
        [sys.executable, "-m", "monitor", "top", "--status", str(d.status), "--once",
         "--interval", "0.2"],
        capture_output=True, text=True, timeout=STEP_TIMEOUT, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert view.returncode == 0, view.stderr
    assert "ws01.pd.test" in view.stdout and "PD\\alice" in view.stdout
    assert "lenso-ai" in view.stdout and "STOPPED" in view.stdout
    assert d.stdout.read_text() == ""


def test_sighup_keeps_the_last_good_lists_on_a_broken_file_and_loads_a_good_one(
    lab: Lab, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory("reload", "watch: false\n")
    lab.dig("sensor-test.example")
    d.wait_event("sensor-test.example")

    d.write_list(BROKEN_LIST)
    d.send(signal.SIGHUP)
    wait_for("the reload error in the log", lambda: "reload (SIGHUP) failed" in d.log())
    assert f"{d.lists / 'test.yaml'}:5" in d.log()  # FILE:LINE of the typo
    assert metric(d.metrics(), "egress_monitor_blocklist_reload_failures_total") == 1
    assert d.proc.poll() is None
    # The old list is still in force: its vendor and the shipped ones are detected.
    lab.dig("sensor-test.example")
    lab.dig("app.clearview.ai")
    assert d.wait_event("sensor-test.example", 2)[-1]["match"]["list"] == "sensor-test@1"
    d.wait_event("app.clearview.ai")

    d.write_list(TEST_LIST.format(version="2", vendor="new-vendor", domain="newvendor.test"))
    d.send(signal.SIGHUP)
    wait_for("the reload", lambda: "reloaded (SIGHUP)" in d.log())
    lab.dig("sensor-test.example")  # gone from version 2
    lab.dig("newvendor.test")
    (new,) = d.wait_event("newvendor.test")
    assert new["match"]["vendor"] == "new-vendor"
    assert new["match"]["list"] == "sensor-test@2"
    assert len(d.events_named("sensor-test.example")) == 2
    m = d.metrics()
    assert metric(m, "egress_monitor_blocklist_reload_failures_total") == 1
    assert metric(m, "egress_monitor_blocklist_entries", list="sensor-test@2") == 1
    assert metric(m, "egress_monitor_blocklist_entries", list="sensor-test@1") is None
    assert (
        metric(
            m, "egress_monitor_matches_total", vendor="new-vendor", protocol="dns", severity="high"
        )
        == 1
    )
    assert d.stop() == 0


def test_watch_reloads_a_changed_list_and_console_mode_draws_the_view(
    lab: Lab, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory("watch", "watch: true\n", "--console")
    d.write_list(TEST_LIST.format(version="2", vendor="watched", domain="watched.test"))
    wait_for("the watch reload", lambda: "reloaded (file changed)" in d.log(), timeout=10)
    lab.dig("watched.test")
    (event,) = d.wait_event("watched.test")
    assert event["match"]["list"] == "sensor-test@2"
    time.sleep(1.5)  # one more redraw with the hit in it
    assert d.stop() == 0
    view = d.log()
    assert "Vendor matches" in view and "Recent vendor hits" in view
    assert "watched.test" in view and CLIENT in view  # the console shows who
    assert d.stdout.read_text() == ""  # --console: no JSON stream on stdout


def test_quick_start_on_an_interface_prints_events_on_stdout(lab: Lab) -> None:
    state = lab.workdir / "quick-state"
    out_path, err_path = lab.workdir / "quick.out", lab.workdir / "quick.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.sensor_ns, sys.executable, "-m", "monitor", "run",
             "--interface", "s0", "--state-dir", str(state)],
            stdout=out, stderr=err, cwd=REPO,
        )  # fmt: skip
    try:
        wait_for("the daemon to start", lambda: "capturing on s0" in err_path.read_text())
        lab.dig("app.clearview.ai")

        def printed() -> list[dict[str, Any]]:
            lines = out_path.read_text().splitlines()
            return [json.loads(line) for line in lines if line.strip()]

        docs = wait_for("events on stdout", lambda: (p := printed()) and len(p) >= 2 and p)
        assert docs[0]["match"]["name"] == "app.clearview.ai"
        assert docs[1]["event"]["kind"] == "alert"
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: the same clean stop as SIGTERM
        assert proc.wait(timeout=STEP_TIMEOUT) == 0
        assert printed()[-1]["alert"]["closed_reason"] == "shutdown"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
