"""The container deployment, checked without a Docker engine: docker-compose.yml parses and every
file it (and the Dockerfile) refers to exists; the sensor runs on the host network with
CAP_NET_RAW only; Grafana's provisioning and dashboard agree; the README's paths exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.metrics import DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for vol in service.get("volumes", []):
        src, _, rest = vol.partition(":")
        if src.startswith((".", "/")):
            out.append((src, rest.split(":")[0]))
    return out


def test_compose_brings_up_sensor_prometheus_alertmanager_and_grafana(
    compose: dict[str, Any],
) -> None:
    assert set(compose["services"]) == {"egress-monitor", "prometheus", "alertmanager", "grafana"}
    for name, svc in compose["services"].items():
        assert svc["network_mode"] == "host", name
        assert "ports" not in svc, f"{name}: ports are meaningless with host networking"


def test_every_bind_mount_and_build_file_exists(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for src, _ in bind_mounts(svc):
            assert (DEPLOY / src).exists(), f"{name}: {src}"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if not src.startswith((".", "/")):
                assert src in declared, f"{name}: named volume {src} not declared"
        build = svc.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    # what the Dockerfile copies is in the build context, and not excluded by its .dockerignore
    context = ROOT
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for src in sources:
                assert (context / src).exists(), src
                assert f"!{src}" in ignore or f"!{src}/" in ignore, src


def test_sensor_container_has_cap_net_raw_only_and_a_read_only_root(
    compose: dict[str, Any],
) -> None:
    svc = compose["services"]["egress-monitor"]
    assert svc["cap_drop"] == ["ALL"] and svc["cap_add"] == ["NET_RAW"]
    assert svc["read_only"] is True
    assert "privileged" not in svc
    # no-new-privileges would make the kernel ignore the interpreter's file capability
    assert not any("no-new-privileges" in o for o in svc.get("security_opt", []))
    assert svc["command"][0] == "run"


def test_dockerfile_runs_a_capable_copy_of_the_interpreter_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "tcpdump" in text
    assert re.search(r"^USER egress-monitor$", text, re.M)
    assert "venv --copies /opt/egress-monitor" in text
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)[1])  # type: ignore[index]
    interpreter = entry[0]
    assert entry[1:] == ["-I", "-m", "monitor"]
    assert f"setcap cap_net_raw+ep {interpreter}" in text
    assert f"chmod 0750 {interpreter}" in text
    # and nothing else gets a capability
    assert text.count("setcap ") == 1


def test_prometheus_alertmanager_and_grafana_listen_where_the_others_look(
    compose: dict[str, Any],
) -> None:
    svcs = compose["services"]
    prom_cmd = " ".join(svcs["prometheus"]["command"])
    assert "--web.listen-address=127.0.0.1:9090" in prom_cmd
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom_cmd
    assert ("./prometheus", "/etc/prometheus") in bind_mounts(svcs["prometheus"])
    am_cmd = " ".join(svcs["alertmanager"]["command"])
    assert "--web.listen-address=127.0.0.1:9093" in am_cmd
    assert ("./alertmanager", "/etc/alertmanager") in bind_mounts(svcs["alertmanager"])
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    am_targets = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am_targets == ["127.0.0.1:9093"]
    sensor = next(j for j in prom["scrape_configs"] if j["job_name"] == "egress-monitor")
    assert sensor["static_configs"][0]["targets"] == [f"127.0.0.1:{DEFAULT_PORT}"]
    for rule_file in prom["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).exists()


def test_grafana_provisioning_loads_the_dashboard_from_the_datasource(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(bind_mounts(grafana))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "egress-monitor.yml").read_text()
    )["providers"][0]
    dash_dir = provider["options"]["path"]
    assert mounts["./grafana/dashboards"] == dash_dir
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dash_dir}/egress-monitor.json"
    ds = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://127.0.0.1:9090"
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "egress-monitor.json").read_text())
    uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", [])} | {
        p["datasource"]["uid"] for p in dash["panels"] if "datasource" in p
    }
    assert uids == {ds["uid"]}
    # the grafana admin password must be given, never defaulted
    assert "GRAFANA_ADMIN_PASSWORD:?" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_dashboard_covers_what_an_operator_needs() -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "egress-monitor.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for metric in (
        "egress_monitor_interface_received_packets_total",  # packets/s per interface
        "egress_monitor_capture_kernel_dropped_packets_total",  # drops
        "egress_monitor_interface_dropped_packets_total",
        "egress_monitor_capture_filter_passed_packets_total",  # filter pass ratio
        "egress_monitor_parse_errors_total",
        "egress_monitor_matches_total",
        "egress_monitor_ech_offered_hellos_total",  # blind spots
        "egress_monitor_blind_spot_events_total",
        "egress_monitor_events_suppressed_total",
        "egress_monitor_flows_tracked",
        "egress_monitor_sink_spool_events",
        "egress_monitor_capture_last_packet_timestamp_seconds",  # last packet age
        "egress_monitor_blocklist_last_reload_success_timestamp_seconds",  # reload age
    ):
        assert metric in exprs, metric
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    # panels do not overlap on the 24-column grid
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_readme_names_only_files_that_exist() -> None:
    text = (DEPLOY / "README.md").read_text()
    paths = set(re.findall(r"deploy/[A-Za-z0-9_./@-]+[A-Za-z0-9_@-]", text))
    assert len(paths) > 5
    for p in sorted(paths):
        assert (ROOT / p).exists(), p


def test_the_stack_config_enables_metrics_where_prometheus_scrapes(
    compose: dict[str, Any],
) -> None:
    svc = compose["services"]["egress-monitor"]
    assert svc["command"] == ["run", "--config", "/etc/egress-monitor/config.yaml"]
    assert ("./egress-monitor", "/etc/egress-monitor") in bind_mounts(svc)
    path = DEPLOY / "egress-monitor" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    assert config["metrics"]["listen"] == f"127.0.0.1:{DEFAULT_PORT}"
    assert config["state_dir"] == "/var/lib/egress-monitor"
    try:
        from monitor.config.sensor import load_config
    except ImportError:
        return  # the daemon's configuration loader is not in this checkout
    loaded = load_config(path, for_run=True)
    assert loaded.metrics is not None
    assert (loaded.metrics.host, loaded.metrics.port) == ("127.0.0.1", DEFAULT_PORT)
