"""The sensor's configuration file: strict, FILE:LINE errors, defaults shared with the engine."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.alerts.engine import AlertConfig
from monitor.blocklist.loader import shipped_blocklist_dir
from monitor.config.sensor import (
    BasicAuth,
    JsonlSinkConfig,
    LeaseSource,
    LimitsConfig,
    PortsConfig,
    SensorConfig,
    SensorConfigError,
    StdoutSinkConfig,
    SyslogSinkConfig,
    WebhookSinkConfig,
    check_config,
    load_config,
    parse_config,
)
from monitor.pipeline.engine import EngineConfig

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "config.example.yaml"


def parse(text: str, **kwargs: object) -> SensorConfig:
    return parse_config(text, "c.yaml", **kwargs)  # type: ignore[arg-type]


def error_of(text: str, **kwargs: object) -> SensorConfigError:
    with pytest.raises(SensorConfigError) as info:
        parse(text, **kwargs)
    return info.value


# -- the example --------------------------------------------------------------------------------


def test_example_config_loads_with_every_section():
    config = load_config(EXAMPLE, for_run=True, check_files=False)
    assert config.interfaces == ("ens1f0", "ens1f1")
    assert config.blocklists == ("/etc/egress-monitor/blocklists",)
    assert config.leases == (LeaseSource("isc", "/var/lib/dhcp/dhcpd.leases", 80),)
    assert config.resolvers == ("10.0.0.53",)
    assert config.alerts.schedule is not None
    assert config.alerts.schedule.timezone == "Europe/Berlin"
    assert [type(s) for s in config.sinks] == [
        JsonlSinkConfig,
        SyslogSinkConfig,
        WebhookSinkConfig,
        StdoutSinkConfig,
    ]
    syslog = config.sinks[1]
    assert isinstance(syslog, SyslogSinkConfig)
    assert (syslog.transport, syslog.port, syslog.facility) == ("tls", 6514, "local4")
    webhook = config.sinks[2]
    assert isinstance(webhook, WebhookSinkConfig)
    assert webhook.headers == (("Authorization", "Bearer REPLACE-ME"),)
    assert config.evidence is not None
    assert config.evidence.max_bytes == 1 << 30
    assert config.metrics is not None
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 10463)
    assert config.metrics.basic_auth == BasicAuth("prom", "sha256$" + "0" * 64)
    assert config.warnings == ()


def test_example_values_not_marked_as_examples_are_the_code_defaults():
    # The example documents the defaults; this keeps the two from drifting apart.
    config = load_config(EXAMPLE, check_files=False)
    default = SensorConfig(path="x")
    for name in ("promiscuous", "snaplen", "buffer_bytes", "watch", "ports", "limits", "state_dir"):
        assert getattr(config, name) == getattr(default, name), name
    assert config.engine_config() == EngineConfig()
    alerts = AlertConfig()
    for name in ("window_seconds", "session_gap_seconds", "repeat_sessions", "max_windows"):
        assert getattr(config.alerts, name) == getattr(alerts, name), name
    assert config.alerts.max_sessions == alerts.max_sessions
    assert config.alerts.rule_name == alerts.rule_name
    assert config.alerts.escalation_updates == alerts.escalation_updates


def test_minimal_config_runs_with_engine_defaults_and_a_stdout_sink():
    config = parse("interfaces: [eth1]\n", for_run=True)
    assert config.engine_config() == EngineConfig()
    assert config.sinks == (StdoutSinkConfig(),)
    assert config.blocklists is None
    assert config.blocklist_paths() == [str(shipped_blocklist_dir())]
    assert (config.evidence, config.metrics, config.approvals) == (None, None, None)


def test_engine_config_maps_ports_and_every_limit():
    config = parse(
        "ports: {dns: [53, 5353], tls: [443], http: [], quic: [443], encrypted_dns: [853, 8853]}\n"
        "limits:\n"
        "  max_flows: 1000\n"
        "  flow_idle_timeout_seconds: 30.5\n"
        "  max_hello_bytes: 32768\n"
        "  max_http_head_bytes: 8192\n"
        "  max_dns_transactions: 2000\n"
        "  dns_transaction_timeout_seconds: 5\n"
        "  max_quic_connections: 100\n"
        "  blind_spot_window_seconds: 60\n"
        "  max_blind_spot_keys: 10\n"
    )
    assert config.ports == PortsConfig(
        dns=frozenset({53, 5353}),
        tls=frozenset({443}),
        http=frozenset(),
        quic=frozenset({443}),
        encrypted_dns=frozenset({853, 8853}),
    )
    assert config.engine_config() == EngineConfig(
        dns_ports=frozenset({53, 5353}),
        tls_ports=frozenset({443}),
        http_ports=frozenset(),
        quic_ports=frozenset({443}),
        encrypted_dns_ports=frozenset({853, 8853}),
        max_flows=1000,
        flow_idle_timeout_s=30.5,
        max_hello_bytes=32768,
        max_http_head_bytes=8192,
        max_dns_transactions=2000,
        dns_transaction_timeout_s=5.0,
        max_quic_connections=100,
        blind_spot_window_s=60.0,
        max_blind_spot_keys=10,
    )


def test_partial_sections_keep_the_other_defaults():
    config = parse("ports: {tls: [443]}\nlimits: {max_flows: 10}\n")
    assert config.ports.dns == PortsConfig().dns
    assert config.ports.tls == frozenset({443})
    assert config.limits == LimitsConfig(max_flows=10)


# -- broken configurations --------------------------------------------------------------------

BROKEN = [
    ("typo_top_key", "interfaces: [eth1]\nsinsk: []\n", 2, "unknown key 'sinsk' in the "
     "configuration; did you mean 'sinks'?"),
    ("quoted_number", "interfaces: [eth1]\nsnaplen: '2048'\n", 2,
     "snaplen must be a whole number, got a string"),
    ("snaplen_too_small", "snaplen: 1000\n", 1, "snaplen must be 1518 to 262144, got 1000"),
    ("port_out_of_range", "ports:\n  dns: [53]\n  tls:\n    - 443\n    - 70000\n", 5,
     "port in ports.tls must be 1 to 65535, got 70000"),
    ("port_twice", "ports:\n  tls: [443,\n        443]\n", 3,
     "port 443 in ports.tls is listed twice (first on line 2)"),
    ("ports_not_a_list", "ports:\n  dns: 53\n", 2,
     "ports.dns must be a list of '- ...' items, got a number (53)"),
    ("limit_typo", "limits:\n  max_flow: 10\n", 2, "did you mean 'max_flows'?"),
    ("limit_zero_timeout", "limits:\n  flow_idle_timeout_seconds: 0\n", 2,
     "flow_idle_timeout_seconds must be more than 0 and at most 86400, got 0"),
    ("no_interfaces_listed", "interfaces: []\n", 1, "interfaces must not be empty"),
    ("interface_name_too_long", "interfaces:\n  - eth0\n  - a-very-long-interface0\n", 3,
     "interface 'a-very-long-interface0' is not a Linux interface name"),
    ("interface_twice", "interfaces: [eth1, eth2,\n  eth1]\n", 2,
     "interface eth1 is listed twice (first on line 1)"),
    ("promiscuous_not_bool", "promiscuous: 1\n", 1, "promiscuous must be true or false"),
    ("explicit_int_tag_on_text", "limits:\n  max_flows: !!int many\n", 2,
     "max_flows 'many' is not a number"),
    ("explicit_bool_tag_on_text", "watch: !!bool maybe\n", 1,
     "watch must be true or false, got 'maybe'"),
    ("bad_user", "user: 'root; rm'\n", 1, "user 'root; rm' is not a valid user name"),
    ("sink_without_type", "sinks:\n  - {path: /x}\n", 2, "a sink needs a 'type'"),
    ("unknown_sink_type", "sinks:\n  - type: kafka\n", 2,
     "sink type 'kafka' is not one of: jsonl, syslog, webhook, stdout"),
    ("jsonl_without_path", "sinks:\n  - type: stdout\n  - type: jsonl\n    keep: 3\n", 3,
     "a jsonl sink is missing required key 'path'"),
    ("sink_key_typo", "sinks:\n  - type: webhook\n    url: https://soar.example/\n"
     "    timeout: 5\n", 4, "unknown key 'timeout' in a webhook sink; did you mean "
     "'timeout_seconds'?"),
    ("ca_file_without_tls", "sinks:\n  - {type: syslog, host: siem, ca_file: /ca.pem}\n", 2,
     "ca_file only applies to transport: tls (this sink uses udp)"),
    ("syslog_host_is_a_url", "sinks:\n  - type: syslog\n    host: tcp://siem:514\n", 3,
     "syslog host 'tcp://siem:514' is a URL"),
    ("webhook_not_http", "sinks:\n  - {type: webhook, url: 'ftp://soar.example/'}\n", 2,
     "url 'ftp://soar.example/' is not an http(s) URL"),
    ("header_with_number", "sinks:\n  - type: webhook\n    url: https://x.example/\n"
     "    headers:\n      X-Version: 2\n", 5, "header X-Version must be a string, got a number "
     "(2) (quote it)"),
    ("same_sink_twice", "sinks:\n  - {type: stdout}\n  - {type: stdout}\n", 3,
     "the same sink is listed twice (first on line 2)"),
    ("empty_sinks", "sinks: []\n", 1, "sinks must not be empty"),
    ("listen_port_out_of_range", "metrics:\n  listen: 127.0.0.1:99999\n", 2,
     "listen port must be 1 to 65535, got 99999"),
    ("listen_host_name", "metrics:\n  listen: prometheus.example:10463\n", 2,
     "listen 'prometheus.example:10463' must be ADDRESS:PORT"),
    ("listen_unquoted_ipv6", "metrics:\n  listen: [::1]:10463\n", 2, "YAML syntax error"),
    ("tls_key_without_cert", "metrics:\n  tls_key: /k.pem\n", 2, "tls_key needs tls_cert"),
    ("two_passwords", "metrics:\n  basic_auth:\n    user: prom\n    password_sha256: "
     f"'{'a' * 64}'\n    password_hash: 'sha256${'b' * 64}'\n", 5,
     "basic_auth needs exactly one of password_sha256 and password_hash"),
    ("short_sha256", "metrics:\n  basic_auth: {user: prom, password_sha256: abc}\n", 2,
     "password_sha256 must be 64 hex digits"),
    ("resolver_name", "resolvers:\n  - 10.0.0.53\n  - dns.example\n", 3,
     "resolver 'dns.example' is not an IP address"),
    ("lease_format", "leases:\n  - format: dhcpd\n    path: /x\n", 2,
     "lease format 'dhcpd' is not one of: isc, kea, dnsmasq"),
    ("alerts_bad_value", "alerts:\n  rule_name: x\n  window_seconds: -5\n", 3,
     "alerts.window_seconds: invalid value -5"),
    ("alerts_typo", "alerts:\n  windw_seconds: 60\n", 2,
     "alerts.windw_seconds: unknown setting; did you mean 'window_seconds'?"),
    ("alerts_schedule_zone", "alerts:\n  schedule:\n    business_hours: {monday: ['07:00-19:00']}\n"
     "    timezone: Europe/Berln\n", 4,
     "alerts.schedule.timezone: unknown time zone 'Europe/Berln'"),
    ("alerts_holiday", "alerts:\n  schedule:\n    timezone: UTC\n    business_hours: {}\n"
     "    holidays:\n      - 2026-12-24\n      - tomorrow\n", 7,
     "alerts.schedule.holidays[1]: 'tomorrow' is not a date YYYY-MM-DD"),
    ("alerts_not_mapping", "alerts: [window_seconds]\n", 1,
     "alerts must be a mapping, got a list"),
    ("duplicate_key", "snaplen: 2048\nwatch: true\nsnaplen: 4096\n", 3,
     "duplicate key 'snaplen' in the configuration (first on line 1)"),
    ("two_documents", "watch: true\n---\nwatch: false\n", 2,
     "a sensor configuration file must hold a single YAML document"),
    ("not_a_mapping", "- eth1\n", 1, "the configuration must be a mapping, got a list"),
    ("empty_file", "# nothing yet\n", 1, "the file is empty"),
    ("syntax_error", "interfaces: [eth1\nwatch: true\n", 2, "YAML syntax error"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [pytest.param(text, line, problem, id=case) for case, text, line, problem in BROKEN],
)
def test_broken_config_error_names_file_and_line(text: str, line: int, problem: str):
    err = error_of(text)
    assert (err.file, err.line) == ("c.yaml", line), str(err)
    assert problem in err.problem, err.problem
    assert str(err) == f"c.yaml:{line}: {err.problem}"


def test_run_needs_interfaces():
    text = "# the sensor\nwatch: true\nsnaplen: 4096\n"
    assert parse(text).interfaces == ()
    err = error_of(text, for_run=True)
    assert err.line == 2
    assert "'interfaces' is required to run the sensor" in err.problem


def test_alias_bomb_in_alerts_is_refused_quickly():
    lines = ["alerts:", "  schedule:", "    holidays:", "      - &a [" + ", ".join("l" * 10) + "]"]
    for name, ref in zip("bcdef", "abcde", strict=True):
        lines.append(f"      - &{name} [" + ", ".join([f"*{ref}"] * 10) + "]")
    err = error_of("\n".join(lines) + "\n")
    assert err.problem == "YAML aliases expand to more than 100000 values"


# -- files ------------------------------------------------------------------------------------


def test_relative_paths_are_taken_from_the_config_directory(tmp_path: Path):
    shutil.copytree(shipped_blocklist_dir(), tmp_path / "lists")
    path = tmp_path / "config.yaml"
    path.write_text(
        "interfaces: [eth1]\nblocklists: [lists]\nleases: [{format: kea, path: kea.csv}]\n"
        "sinks: [{type: jsonl, path: out/events.jsonl}]\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.blocklists == (str(tmp_path / "lists"),)
    # Lease files are not checked for existence: DHCP servers create and replace them.
    assert config.leases[0].path == str(tmp_path / "kea.csv")
    assert config.sinks == (JsonlSinkConfig(path=str(tmp_path / "out/events.jsonl"), line=4),)


@pytest.mark.parametrize(
    ("setting", "line", "problem"),
    [
        ("blocklists:\n  - /nonexistent/lists\n", 3, "blocklist path /nonexistent/lists does not"),
        ("approvals: missing.yaml\n", 2, "missing.yaml does not exist"),
        ("inventory: .\n", 2, "is not a file"),
        ("metrics:\n  tls_cert: cert.pem\n", 3, "tls_cert"),
        ("sinks:\n  - {type: syslog, transport: tls, host: siem, ca_file: ca.pem}\n", 3, "ca_file"),
    ],
)
def test_missing_input_files_are_errors_at_their_line(
    tmp_path: Path, setting: str, line: int, problem: str
):
    path = tmp_path / "config.yaml"
    path.write_text("interfaces: [eth1]\n" + setting, encoding="utf-8")
    with pytest.raises(SensorConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.line) == (str(path), line), str(info.value)
    assert problem in info.value.problem
    # The same file is fine when existence is not checked (e.g. on a build host).
    load_config(path, check_files=False)


def test_risky_but_legal_settings_are_warnings_with_a_line():
    config = parse(
        "metrics:\n  listen: 0.0.0.0:10463\n"
        "sinks:\n  - type: webhook\n    url: http://soar.example/hook\n"
        "  - {type: webhook, url: 'http://[::1]:8080/'}\n"
    )
    assert config.warnings == (
        "c.yaml:2: warning: metrics on 0.0.0.0 are open to anyone who can reach them",
        "c.yaml:5: warning: webhook http://soar.example/hook is plain http: alerts would cross "
        "the network unencrypted",
    )


def test_syslog_port_defaults_by_transport():
    config = parse(
        "sinks:\n  - {type: syslog, host: a}\n  - {type: syslog, host: a, transport: tls}\n"
    )
    assert [s.port for s in config.sinks if isinstance(s, SyslogSinkConfig)] == [514, 6514]


# -- check command ----------------------------------------------------------------------------


def _deployable(tmp_path: Path) -> Path:
    """The example with its /etc paths pointing at real files in tmp_path."""
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copytree(shipped_blocklist_dir(), etc / "blocklists")
    for name in ("inventory.yaml", "siem-ca.pem", "metrics.crt", "metrics.key"):
        (etc / name).write_text("x\n", encoding="utf-8")
    (etc / "approvals.yaml").write_text("approvals: []\n", encoding="utf-8")
    path = etc / "config.yaml"
    text = EXAMPLE.read_text(encoding="utf-8").replace("/etc/egress-monitor/", f"{etc}/")
    path.write_text(text, encoding="utf-8")
    return path


def test_check_config_loads_the_config_and_what_it_names(tmp_path: Path):
    path = _deployable(tmp_path)
    out = io.StringIO()
    assert check_config(path, out) == 0, out.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("OK blocklists: ")
    assert lines[1] == f"OK approvals {path.parent / 'approvals.yaml'}: 0 approvals"
    assert lines[2].startswith(f"OK {path}: interfaces ens1f0, ens1f1; 4 sink(s): jsonl ")


def test_check_config_reports_a_bad_approvals_file_with_its_line(tmp_path: Path):
    path = _deployable(tmp_path)
    approvals = path.parent / "approvals.yaml"
    approvals.write_text("approvals:\n  - reference: [\n", encoding="utf-8")
    out = io.StringIO()
    assert check_config(path, out) == 1
    assert f"{approvals}:2: YAML syntax error" in out.getvalue()


def test_check_config_reports_the_config_error_and_stops(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("interfaces: [eth1]\nsnaplen: lots\n", encoding="utf-8")
    out = io.StringIO()
    assert check_config(path, out) == 1
    assert out.getvalue() == f"{path}:2: snaplen must be a whole number, got a string\n"


# -- fuzzing ------------------------------------------------------------------------------------

_TEXT = EXAMPLE.read_text(encoding="utf-8")
_BITS = st.sampled_from(
    ["", " ", "  ", "-", ":", "*", "&a", "*a", "[", "]", "{", "}", "'", '"', "#", "\n", "!!str",
     "~", "yes", "0", "-1", "1.5", ".inf", "99999", "---", "?", "|", "\t", "%", "<<", "[::1]",
     "2026-13-01", "type: ", "http://", "\\0", "sinks", "alerts", "é", "!!int", "!!bool",
     "!!float", "!!timestamp", "0x", "12:30"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_TEXT)), st.integers(0, 8), _BITS), max_size=5))
def test_mutated_example_only_ever_raises_sensor_config_error(edits: list[tuple[int, int, str]]):
    text = _TEXT
    for pos, cut, bit in edits:
        text = text[:pos] + bit + text[pos + cut :]
    try:
        parse_config(text, "c.yaml", for_run=True, base_dir="/nonexistent")
    except SensorConfigError as err:
        assert err.file == "c.yaml"
        assert err.line is None or err.line >= 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_text_only_ever_raises_sensor_config_error(text: str):
    try:
        parse_config(text, "c.yaml")
    except SensorConfigError as err:
        assert err.file == "c.yaml"
