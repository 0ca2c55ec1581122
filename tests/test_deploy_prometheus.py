"""The Prometheus side of the deployment: the rules and config pass promtool, every alert fires
on its failure and stays quiet when healthy (promtool test rules), the dashboard's queries are
valid PromQL over metrics the exporter really exposes, and a real Prometheus server scrapes the
exporter, sees the vendor label and fires the vendor-access alert."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.metrics import DEFAULT_PORT, MetricsSnapshot, serve_metrics
from tests.test_metrics_collector import ENGINE_COUNTERS, exposition, full_snapshot

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "egress-monitor.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "rules" / "egress-monitor.rules.test.yml"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "egress-monitor.json"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"

NEEDS = "not installed; CI needs the Debian package '{}'"


def tool(name: str, package: str = "prometheus") -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} {NEEDS.format(package)}")
    return path


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"]]
    return exprs


def grafana_to_promql(expr: str) -> str:
    """Substitute Grafana's variables with values any Prometheus accepts."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
    return expr.replace("$instance", ".*").replace("$interface", ".*")


def exposed_metric_names() -> set[str]:
    text = exposition(full_snapshot())
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


# -- promtool ------------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check_rules() -> None:
    res = run(tool("promtool"), "check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_fires_on_its_failure_and_not_when_healthy() -> None:
    # The unit tests name every alert: a new alert without a test fails here.
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
    }
    assert alerts == tested
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        by_alert: dict[str, list[int]] = {}
        for t in case.get("alert_rule_test", []):
            by_alert.setdefault(t["alertname"], []).append(len(t["exp_alerts"]))
        for name, counts in by_alert.items():
            assert 0 in counts and any(counts), f"{name}: needs a quiet and a firing check"
    res = run(tool("promtool"), "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_prometheus_config_passes_promtool_and_scrapes_the_default_port() -> None:
    res = run(tool("promtool"), "check", "config", str(PROM_CONFIG))
    assert res.returncode == 0, res.stdout + res.stderr
    config = yaml.safe_load(PROM_CONFIG.read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    targets = jobs["egress-monitor"]["static_configs"][0]["targets"]
    assert targets == [f"127.0.0.1:{DEFAULT_PORT}"]
    # the rules' up{job=...} matches this job name
    assert 'up{job="egress-monitor"}' in RULES.read_text()


def test_alertmanager_config_passes_amtool() -> None:
    res = run(tool("amtool", "prometheus-alertmanager"), "check-config", str(ALERTMANAGER))
    assert res.returncode == 0, res.stdout + res.stderr


def test_rules_and_dashboard_only_use_metrics_the_exporter_exposes() -> None:
    exposed = exposed_metric_names()
    used: set[str] = set()
    for text in (RULES.read_text(), *dashboard_queries()):
        used |= set(re.findall(r"egress_monitor_[a-z0-9_]+", text))
    assert used, "no metric found in rules and dashboard"
    assert used <= exposed, sorted(used - exposed)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)}
                    for i, e in enumerate(dashboard_queries())
                    if not e.startswith("label_values(")
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    res = run(tool("promtool"), "check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


# -- a real Prometheus server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def wait_for(what: str, check: Any, timeout_s: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (urllib.error.URLError, ConnectionError, OSError, KeyError, IndexError):
            pass
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    pytest.fail(f"timed out waiting for {what} (last: {last!r})\nprometheus log:\n{tail}")


@pytest.fixture
def moving_provider() -> Iterator[Any]:
    """A daemon whose counters move between scrapes, so rates are not all zero."""
    ticks = itertools.count()

    def provider() -> MetricsSnapshot:
        n = next(ticks)
        snap = full_snapshot({k: v * n for k, v in ENGINE_COUNTERS.items()})
        snap.interfaces["eth1"].rx_packets += 1000 * n
        snap.interfaces["eth1"].filter_passed_packets += 100 * n
        snap.last_packet_time = time.time()
        snap.interfaces["eth1"].last_packet_time = time.time()
        return snap

    yield provider


def test_a_real_prometheus_scrapes_the_exporter_and_fires_the_vendor_alert(
    tmp_path: Path, moving_provider: Any
) -> None:
    prometheus = tool("prometheus")
    exporter = serve_metrics(moving_provider, port=0)
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "egress-monitor",
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}],
                    }
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{web_port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def target_up() -> bool:
            assert proc is not None and proc.poll() is None, "prometheus exited"
            targets = api(base, "/api/v1/targets")["data"]["activeTargets"]
            return bool(targets) and targets[0]["health"] == "up"

        wait_for("the exporter target to be up", target_up, 60, log)

        def vendors() -> set[str]:
            res = api(base, "/api/v1/query", query="egress_monitor_matches_total")
            return {r["metric"]["vendor"] for r in res["data"]["result"]}

        assert wait_for("matches in the TSDB", vendors, 30, log) == {
            "clearview-ai",
            "pimeyes",
            "amazon-rekognition",
        }
        res = api(base, "/api/v1/query", query="egress_monitor_matches_total")["data"]["result"]
        labels = {r["metric"]["vendor"]: r["metric"] for r in res}
        assert labels["clearview-ai"]["protocol"] == "tls"
        assert labels["clearview-ai"]["severity"] == "critical"
        assert labels["clearview-ai"]["job"] == "egress-monitor"

        # The vendor-access alert fires from the real TSDB (first sight of each series).
        def firing_vendors() -> set[str]:
            alerts = api(base, "/api/v1/alerts")["data"]["alerts"]
            return {
                a["labels"]["vendor"]
                for a in alerts
                if a["labels"]["alertname"] == "EgressMonitorVendorAccess"
                and a["state"] == "firing"
            }

        assert wait_for("the vendor-access alert", firing_vendors, 30, log) == {
            "clearview-ai",
            "pimeyes",
            "amazon-rekognition",
        }

        # Every rule loaded and evaluates without error.
        def rules_ok() -> list[str]:
            groups = api(base, "/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if not rules or any(r.get("lastEvaluation", "").startswith("0001") for r in rules):
                return []
            return [f"{r['name']}:{r['health']}" for r in rules]

        health = wait_for("rule evaluation", rules_ok, 30, log)
        assert all(h.endswith(":ok") for h in health), health

        # Every dashboard query runs and returns data once a few scrapes are in.
        def scrapes() -> bool:
            res = api(base, "/api/v1/query", query="count_over_time(up[1m])")["data"]["result"]
            return bool(res) and float(res[0]["value"][1]) >= 4

        wait_for("four scrapes", scrapes, 30, log)
        for expr in dashboard_queries():
            if expr.startswith("label_values("):
                metric = expr[len("label_values(") :].rsplit(",", 1)[0]
                expr = grafana_to_promql(metric)
            res = api(base, "/api/v1/query", query=grafana_to_promql(expr))
            assert res["status"] == "success", (expr, res)
            assert res["data"]["result"], f"dashboard query returns nothing: {expr}"
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        exporter.close()
