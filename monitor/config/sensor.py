"""The sensor daemon's configuration file (``/etc/egress-monitor/config.yaml``).

Strict for the same reason as the blocklists: a misspelt key that silently falls back to a
default (``sinsk:`` instead of ``sinks:``) means alerts that never arrive and nobody notices.
So unknown keys are errors with a did-you-mean, values are type-checked instead of coerced
(``snaplen: "2048"`` is an error, not a number), and every error names FILE:LINE.  The commented
example ``deploy/config.example.yaml`` shows every setting.

Every section is optional; only ``interfaces`` is needed to run the live sensor (``load_config``
with ``for_run=True``, as ``run`` and ``config check`` use it).  Defaults:

``interfaces``
    Mirror (SPAN/TAP) interfaces, at least one for ``run``.  Linux names: 1-15 characters,
    no ``/``, ``:`` or whitespace.
``promiscuous``: true
    A mirror port receives frames addressed to other machines; without promiscuous mode the
    NIC drops them.
``snaplen``: 2048 (1518 to 262144)
    Bytes kept per frame.  Each frame must be captured whole: a QUIC Initial (UDP payload of
    at least 1200 bytes) cannot be decrypted if cut short, and a truncated TCP segment leaves a
    hole in the reassembled ClientHello or HTTP head.  A full-size Ethernet frame with a VLAN
    tag is 1518 bytes (the minimum accepted); 2048 adds room for QinQ and tunnel headers.
    Raise it to 9216 for jumbo frames, or to 65535 if receive offloads (GRO/LRO) cannot be
    switched off, since those merge segments into frames larger than the MTU.
``buffer_bytes``: 67108864 (1 MiB to 1 GiB)
    Socket receive buffer per interface: absorbs bursts while the pipeline is busy.
``user``: none
    Drop privileges to this user after opening the capture sockets (when started as root).
``blocklists``: the shipped lists
    Blocklist files or directories (their ``*.yaml``/``*.yml``).
``watch``: true
    Reload blocklists and approvals when their files change; SIGHUP always reloads.
``ports``: dns [53], tls [443, 8443, 853], http [80, 8080, 3128, 8000], quic [443, 853],
    encrypted_dns [853] -- the ``monitor.pipeline.engine.EngineConfig`` defaults.  Each a list of
    1-65535; ``[]`` turns that port-based classification off.
``limits``: the ``EngineConfig`` bounds, in seconds where the name says so: max_flows 65536,
    flow_idle_timeout_seconds 120, max_hello_bytes 16384, max_http_head_bytes 16384,
    max_dns_transactions 65536, dns_transaction_timeout_seconds 30, max_quic_connections 4096,
    blind_spot_window_seconds 600, max_blind_spot_keys 16384.
``inventory``, ``leases`` (list of ``{format: isc|kea|dnsmasq, path}``), ``resolvers`` (IP
    addresses of the internal DNS resolvers): none; attribution inputs.
``state_dir``: /var/lib/egress-monitor
``alerts``: the ``monitor.alerts.engine.AlertConfig`` defaults; the mapping is handed to
    ``AlertConfig.from_mapping`` and its errors are located in this file.
``approvals``: none (no use is sanctioned)
``sinks``: one ``{type: stdout}`` sink (journald keeps it under systemd).  Types:
    ``jsonl`` (path*, max_bytes 104857600, keep 10), ``syslog`` (host*, transport udp|tcp|tls
    default udp, port 514 or 6514 for tls, ca_file (tls only), facility local0),
    ``webhook`` (url*, timeout_seconds 10, headers), ``stdout``.
``evidence``: none (nothing is kept beyond the events); ``{dir, max_bytes}`` with defaults
    ``<state_dir>/evidence`` and 1073741824.
``metrics``: none (no endpoint); ``{listen, tls_cert, tls_key, basic_auth}`` with ``listen``
    defaulting to ``127.0.0.1:10463``.  ``basic_auth`` is ``{user, password_sha256}`` (64 hex
    digits, for long random passwords) or ``{user, password_hash}`` in the
    ``monitor.metrics.auth`` format (``scrypt$...``, recommended).

Paths are kept as strings.  A relative path is taken relative to the configuration file's
directory (not the daemon's working directory, which under systemd is ``/``).  Existence is
checked (``check_files=True``) only where a missing file is certainly wrong at start-up: the
blocklists, ``approvals``, ``inventory``, ``metrics.tls_cert``/``tls_key`` and a syslog
``ca_file``.  Lease files are not checked because DHCP servers create them on first use and
replace them while rewriting; directories the daemon writes (``state_dir``, ``evidence.dir``, a
jsonl sink's directory) are created by the daemon.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit

import yaml

from monitor.alerts.approvals import load_approvals
from monitor.alerts.engine import AlertConfig, AlertConfigError
from monitor.blocklist.loader import BlocklistError, load_blocklists, shipped_blocklist_dir
from monitor.config.yamlsource import (
    NULL_TAG,
    ConfigError,
    Entry,
    FileKind,
    FileParser,
    describe,
    line_of,
    node_at,
    parse_text,
    plain,
    read_text,
)
from monitor.pipeline.engine import EngineConfig

__all__ = [
    "BasicAuth",
    "EvidenceConfig",
    "JsonlSinkConfig",
    "LeaseSource",
    "LimitsConfig",
    "MetricsConfig",
    "PortsConfig",
    "SensorConfig",
    "SensorConfigError",
    "SinkConfig",
    "StdoutSinkConfig",
    "SyslogSinkConfig",
    "WebhookSinkConfig",
    "check_config",
    "load_config",
    "parse_config",
]

DEFAULT_PATH = "/etc/egress-monitor/config.yaml"
DEFAULT_STATE_DIR = "/var/lib/egress-monitor"
#: monitor.metrics.server.DEFAULT_PORT (see there for why 10463).
DEFAULT_METRICS_PORT = 10463
#: A configuration file is a few kilobytes; anything near this is a mistake.
MAX_CONFIG_BYTES = 1024 * 1024

MIN_SNAPLEN = 1518
MAX_SNAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN
MAX_BUFFER_BYTES = 1 << 30  # the kernel caps SO_RCVBUF at INT_MAX / 2 anyway

LEASE_FORMATS = ("isc", "kea", "dnsmasq")
SINK_TYPES = ("jsonl", "syslog", "webhook", "stdout")
SYSLOG_TRANSPORTS = ("udp", "tcp", "tls")
#: RFC 5424 facility names, as monitor.alerts.syslog.FACILITIES spells them.
SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3",
    "local4", "local5", "local6", "local7",
)  # fmt: skip

_TOP_KEYS = (
    "interfaces",
    "promiscuous",
    "snaplen",
    "buffer_bytes",
    "user",
    "blocklists",
    "watch",
    "ports",
    "limits",
    "inventory",
    "leases",
    "resolvers",
    "state_dir",
    "alerts",
    "approvals",
    "sinks",
    "evidence",
    "metrics",
)
_PORT_KEYS = ("dns", "tls", "http", "quic", "encrypted_dns")
_LEASE_KEYS = ("format", "path")
_SINK_KEYS = {
    "jsonl": ("type", "path", "max_bytes", "keep"),
    "syslog": ("type", "host", "transport", "port", "ca_file", "facility"),
    "webhook": ("type", "url", "timeout_seconds", "headers"),
    "stdout": ("type",),
}
_SINK_REQUIRED = {"jsonl": ("path",), "syslog": ("host",), "webhook": ("url",), "stdout": ()}
_EVIDENCE_KEYS = ("dir", "max_bytes")
_METRICS_KEYS = ("listen", "tls_cert", "tls_key", "basic_auth")
_AUTH_KEYS = ("user", "password_sha256", "password_hash")

_IFNAME_MAX = 15  # IFNAMSIZ - 1, in bytes
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SCRYPT = re.compile(r"scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+")
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?\.?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_LISTEN = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})")

_ENGINE = EngineConfig()


class SensorConfigError(ConfigError):
    """A sensor configuration problem, located as FILE:LINE like blocklist errors."""


_KIND = FileKind(
    error=SensorConfigError,
    document="a sensor configuration file",
    expected="settings such as 'interfaces: [eth1]'",
    quote_example='headers: {X-Token: "*secret"}',
)


# -- the configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortsConfig:
    """Which ports the engine treats as which protocol (``ports:``)."""

    dns: frozenset[int] = _ENGINE.dns_ports
    tls: frozenset[int] = _ENGINE.tls_ports
    http: frozenset[int] = _ENGINE.http_ports
    quic: frozenset[int] = _ENGINE.quic_ports
    encrypted_dns: frozenset[int] = _ENGINE.encrypted_dns_ports


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The engine's memory and time bounds (``limits:``)."""

    max_flows: int = _ENGINE.max_flows
    flow_idle_timeout_seconds: float = _ENGINE.flow_idle_timeout_s
    max_hello_bytes: int = _ENGINE.max_hello_bytes
    max_http_head_bytes: int = _ENGINE.max_http_head_bytes
    max_dns_transactions: int = _ENGINE.max_dns_transactions
    dns_transaction_timeout_seconds: float = _ENGINE.dns_transaction_timeout_s
    max_quic_connections: int = _ENGINE.max_quic_connections
    blind_spot_window_seconds: float = _ENGINE.blind_spot_window_s
    max_blind_spot_keys: int = _ENGINE.max_blind_spot_keys


#: limits key -> (whole number?, low, high); numbers are ``low < n <= high``.
_LIMITS: dict[str, tuple[bool, float, float]] = {
    "max_flows": (True, 1, 10_000_000),
    "flow_idle_timeout_seconds": (False, 0, 86400),
    "max_hello_bytes": (True, 1024, 1 << 20),
    "max_http_head_bytes": (True, 1024, 1 << 20),
    "max_dns_transactions": (True, 1, 10_000_000),
    "dns_transaction_timeout_seconds": (False, 0, 3600),
    "max_quic_connections": (True, 1, 10_000_000),
    "blind_spot_window_seconds": (False, 0, 7 * 86400),
    "max_blind_spot_keys": (True, 1, 10_000_000),
}


@dataclass(frozen=True, slots=True)
class LeaseSource:
    """A DHCP lease file to attribute addresses to machines."""

    format: str
    path: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class JsonlSinkConfig:
    """Events as JSON lines in a size-rotated file (``path``, ``path.1`` ... ``path.<keep>``)."""

    path: str
    max_bytes: int = 100 * 1024 * 1024
    keep: int = 10
    #: Where the sink is defined, for errors the daemon reports when opening it.
    line: int = 0


@dataclass(frozen=True, slots=True)
class SyslogSinkConfig:
    """RFC 5424 syslog to a SIEM; ``port`` is already defaulted (514, or 6514 for TLS)."""

    host: str
    transport: str = "udp"
    port: int = 514
    ca_file: str | None = None
    facility: str = "local0"
    line: int = 0


@dataclass(frozen=True, slots=True)
class WebhookSinkConfig:
    """Each event POSTed as JSON; ``headers`` in file order (e.g. an API token)."""

    url: str
    timeout_seconds: float = 10.0
    headers: tuple[tuple[str, str], ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class StdoutSinkConfig:
    """Events as JSON lines on standard output."""

    line: int = 0


SinkConfig = JsonlSinkConfig | SyslogSinkConfig | WebhookSinkConfig | StdoutSinkConfig


@dataclass(frozen=True, slots=True)
class EvidenceConfig:
    dir: str
    max_bytes: int = 1 << 30


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """``password_hash`` is in the stored format of ``monitor.metrics.auth`` (``sha256$HEX`` or
    ``scrypt$...``), ready for ``serve_metrics(basic_auth=(user, password_hash))``."""

    user: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_METRICS_PORT
    tls_cert: str | None = None
    tls_key: str | None = None
    basic_auth: BasicAuth | None = None


@dataclass(frozen=True, slots=True)
class SensorConfig:
    """A loaded configuration; see the module docstring for every setting and its default."""

    #: The file it was loaded from.
    path: str
    interfaces: tuple[str, ...] = ()
    promiscuous: bool = True
    snaplen: int = 2048
    buffer_bytes: int = 64 * 1024 * 1024
    user: str | None = None
    #: None means the shipped lists (see ``blocklist_paths``).
    blocklists: tuple[str, ...] | None = None
    watch: bool = True
    ports: PortsConfig = PortsConfig()
    limits: LimitsConfig = LimitsConfig()
    inventory: str | None = None
    leases: tuple[LeaseSource, ...] = ()
    resolvers: tuple[str, ...] = ()
    state_dir: str = DEFAULT_STATE_DIR
    alerts: AlertConfig = field(default_factory=AlertConfig)
    approvals: str | None = None
    sinks: tuple[SinkConfig, ...] = (StdoutSinkConfig(),)
    evidence: EvidenceConfig | None = None
    metrics: MetricsConfig | None = None
    #: Legal but risky settings, each "FILE:LINE: warning: text"; ``config check`` prints them.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def engine_config(self) -> EngineConfig:
        """The detection engine's settings: ``ports`` and ``limits``."""
        p, lim = self.ports, self.limits
        return EngineConfig(
            dns_ports=p.dns,
            tls_ports=p.tls,
            http_ports=p.http,
            quic_ports=p.quic,
            encrypted_dns_ports=p.encrypted_dns,
            blind_spot_window_s=lim.blind_spot_window_seconds,
            max_blind_spot_keys=lim.max_blind_spot_keys,
            max_quic_connections=lim.max_quic_connections,
            max_flows=lim.max_flows,
            flow_idle_timeout_s=lim.flow_idle_timeout_seconds,
            max_hello_bytes=lim.max_hello_bytes,
            max_http_head_bytes=lim.max_http_head_bytes,
            max_dns_transactions=lim.max_dns_transactions,
            dns_transaction_timeout_s=lim.dns_transaction_timeout_seconds,
        )

    def blocklist_paths(self) -> list[str]:
        """The configured blocklist paths, or the shipped lists' directory."""
        if self.blocklists is None:
            return [str(shipped_blocklist_dir())]
        return list(self.blocklists)


# -- parsing ----------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _SensorParser(FileParser):
    error_type = SensorConfigError

    def __init__(self, file: str, base_dir: str | None, check_files: bool) -> None:
        super().__init__(file)
        self.base_dir = base_dir
        self.check_files = check_files
        self.warnings: list[tuple[int, str]] = []

    def warn(self, node: yaml.Node, text: str) -> None:
        line = line_of(node)
        self.warnings.append((line, f"{self.file}:{line}: warning: {text}"))

    # -- helpers ----------------------------------------------------------------------------

    def path(self, entry: Entry, what: str, must_exist: str | None = None) -> str:
        """A path string, joined to the config's directory if relative; ``must_exist`` is
        "file" or "any" to check it (when checking files at all)."""
        text = self.string(entry, what)
        if "\0" in text:
            raise self.value_error(entry, f"{what} contains a NUL character")
        if text != text.strip():
            raise self.value_error(entry, f"{what} {text!r} has leading or trailing spaces")
        if self.base_dir is not None and not os.path.isabs(text):
            text = os.path.join(self.base_dir, text)
        if self.check_files and must_exist is not None:
            if must_exist == "file" and not os.path.isfile(text):
                problem = "is not a file" if os.path.exists(text) else "does not exist"
                raise self.value_error(entry, f"{what} {text} {problem}")
            if must_exist == "any" and not os.path.exists(text):
                raise self.value_error(entry, f"{what} {text} does not exist")
        return text

    def optional_path(
        self, fields: dict[str, Entry], key: str, what: str, must_exist: str | None = None
    ) -> str | None:
        entry = fields.get(key)
        if entry is None or entry[1].tag == NULL_TAG:
            return None
        return self.path(entry, what, must_exist)

    def list_of(self, entry: Entry, what: str, allow_empty: bool) -> list[yaml.Node]:
        _, value = entry
        if allow_empty and isinstance(value, yaml.SequenceNode) and not value.value:
            return []
        return self.sequence(entry, what)

    def unique(self, seen: dict[object, int], key: object, node: yaml.Node, what: str) -> None:
        if key in seen:
            raise self.error(node, f"{what} is listed twice (first on line {seen[key]})")
        seen[key] = line_of(node)

    def port(self, entry: Entry, what: str) -> int:
        return self.integer(entry, what, 1, 65535)

    # -- document ---------------------------------------------------------------------------

    def document(self, root: yaml.Node, for_run: bool) -> SensorConfig:
        top = self.mapping(root, "the configuration", _TOP_KEYS, ())
        kwargs: dict[str, object] = {"path": self.file}
        if "interfaces" in top:
            kwargs["interfaces"] = self.interfaces(top["interfaces"])
        elif for_run:
            raise self.error(
                root, "'interfaces' is required to run the sensor: list the mirror interfaces"
            )
        for key in ("promiscuous", "watch"):
            if key in top:
                kwargs[key] = self.boolean(top[key], key)
        if "snaplen" in top:
            kwargs["snaplen"] = self.integer(top["snaplen"], "snaplen", MIN_SNAPLEN, MAX_SNAPLEN)
        if "buffer_bytes" in top:
            kwargs["buffer_bytes"] = self.integer(
                top["buffer_bytes"], "buffer_bytes", 1 << 20, MAX_BUFFER_BYTES
            )
        if "user" in top:
            user = self.string(top["user"], "user")
            if not _USER.fullmatch(user):
                raise self.value_error(top["user"], f"user {user!r} is not a valid user name")
            kwargs["user"] = user
        if "blocklists" in top:
            seen: dict[object, int] = {}
            paths = []
            for node in self.sequence(top["blocklists"], "blocklists"):
                path = self.path((node, node), "blocklist path", "any")
                self.unique(seen, os.path.normpath(path), node, f"blocklist path {path}")
                paths.append(path)
            kwargs["blocklists"] = tuple(paths)
        if "ports" in top:
            kwargs["ports"] = self.ports(top["ports"])
        if "limits" in top:
            kwargs["limits"] = self.limits(top["limits"])
        kwargs["inventory"] = self.optional_path(top, "inventory", "inventory", "file")
        if "leases" in top:
            kwargs["leases"] = self.leases(top["leases"])
        if "resolvers" in top:
            kwargs["resolvers"] = self.resolvers(top["resolvers"])
        state_dir = self.optional_path(top, "state_dir", "state_dir") or DEFAULT_STATE_DIR
        kwargs["state_dir"] = state_dir
        if "alerts" in top:
            kwargs["alerts"] = self.alerts(top["alerts"])
        kwargs["approvals"] = self.optional_path(top, "approvals", "approvals", "file")
        if "sinks" in top:
            kwargs["sinks"] = self.sinks(top["sinks"])
        if "evidence" in top:
            kwargs["evidence"] = self.evidence(top["evidence"], state_dir)
        if "metrics" in top:
            kwargs["metrics"] = self.metrics(top["metrics"])
        kwargs["warnings"] = tuple(text for _, text in sorted(self.warnings))
        return SensorConfig(**kwargs)  # type: ignore[arg-type]

    def interfaces(self, entry: Entry) -> tuple[str, ...]:
        seen: dict[object, int] = {}
        names = []
        for node in self.sequence(entry, "interfaces"):
            name = self.string((node, node), "interface")
            if (
                len(name.encode("utf-8", "surrogatepass")) > _IFNAME_MAX
                or name in (".", "..")
                or any(ch in "/:\0" or ch.isspace() for ch in name)
            ):
                raise self.error(
                    node,
                    f"interface {name!r} is not a Linux interface name "
                    f"(1-{_IFNAME_MAX} characters, no '/', ':' or spaces)",
                )
            self.unique(seen, name, node, f"interface {name}")
            names.append(name)
        return tuple(names)

    def ports(self, entry: Entry) -> PortsConfig:
        _, value = entry
        if value.tag == NULL_TAG:
            return PortsConfig()
        fields = self.mapping(value, "ports", _PORT_KEYS, ())
        chosen: dict[str, frozenset[int]] = {}
        for key, item in fields.items():
            seen: dict[object, int] = {}
            ports: list[int] = []
            for node in self.list_of(item, f"ports.{key}", allow_empty=True):
                port = self.port((node, node), f"port in ports.{key}")
                self.unique(seen, port, node, f"port {port} in ports.{key}")
                ports.append(port)
            chosen[key] = frozenset(ports)
        return PortsConfig(**chosen)

    def limits(self, entry: Entry) -> LimitsConfig:
        _, value = entry
        if value.tag == NULL_TAG:
            return LimitsConfig()
        fields = self.mapping(value, "limits", tuple(_LIMITS), ())
        chosen: dict[str, float] = {}
        for key, item in fields.items():
            whole, low, high = _LIMITS[key]
            if whole:
                chosen[key] = self.integer(item, key, int(low), int(high))
            else:
                chosen[key] = self.number(item, key, low, high)
        return LimitsConfig(**chosen)  # type: ignore[arg-type]

    def leases(self, entry: Entry) -> tuple[LeaseSource, ...]:
        seen: dict[object, int] = {}
        sources = []
        for node in self.list_of(entry, "leases", allow_empty=True):
            fields = self.mapping(node, "lease source", _LEASE_KEYS, _LEASE_KEYS)
            fmt = self.choice(fields["format"], "lease format", LEASE_FORMATS)
            path = self.path(fields["path"], "lease file")
            self.unique(seen, os.path.normpath(path), fields["path"][1], f"lease file {path}")
            sources.append(LeaseSource(format=fmt, path=path, line=line_of(node)))
        return tuple(sources)

    def resolvers(self, entry: Entry) -> tuple[str, ...]:
        seen: dict[object, int] = {}
        out = []
        for node in self.list_of(entry, "resolvers", allow_empty=True):
            text = self.string((node, node), "resolver")
            try:
                address = ipaddress.ip_address(text.strip())
            except ValueError:
                raise self.error(
                    node, f"resolver {text!r} is not an IP address (names can change address)"
                ) from None
            self.unique(seen, address, node, f"resolver {address}")
            out.append(str(address))
        return tuple(out)

    def alerts(self, entry: Entry) -> AlertConfig:
        key, value = entry
        if value.tag == NULL_TAG:
            return AlertConfig()
        if not isinstance(value, yaml.MappingNode):
            raise self.value_error(entry, f"alerts must be a mapping, got {describe(value)}")
        raw = plain(value, self.file, error=SensorConfigError)
        try:
            return AlertConfig.from_mapping(raw, "alerts")
        except AlertConfigError as exc:
            node = node_at(value, exc.where)
            problem = exc.problem
            allowed = re.fullmatch(r"unknown setting \(allowed: (.*)\)", problem)
            if allowed:
                name = exc.where.rsplit(".", 1)[-1]
                hint = difflib.get_close_matches(name, allowed.group(1).split(", "), n=1)
                if hint:
                    problem = (
                        f"unknown setting; did you mean {hint[0]!r}? (allowed: {allowed.group(1)})"
                    )
            raise self.error(key if node is value else node, f"{exc.where}: {problem}") from None
        except (TypeError, ValueError, OverflowError) as exc:  # a bug there, still located here
            raise self.value_error(entry, f"alerts: {exc}") from None

    def sinks(self, entry: Entry) -> tuple[SinkConfig, ...]:
        sinks: list[SinkConfig] = []
        seen: dict[object, int] = {}
        for node in self.sequence(entry, "sinks"):
            sink = self.sink(node)
            ident: object = type(sink)
            if isinstance(sink, JsonlSinkConfig):
                ident = ("jsonl", os.path.normpath(sink.path))
            elif isinstance(sink, SyslogSinkConfig):
                ident = ("syslog", sink.transport, sink.host.lower(), sink.port)
            elif isinstance(sink, WebhookSinkConfig):
                ident = ("webhook", sink.url)
            self.unique(seen, ident, node, "the same sink")
            sinks.append(sink)
        return tuple(sinks)

    def sink(self, node: yaml.Node) -> SinkConfig:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(
                node, f"a sink must be a mapping like {{type: stdout}}, got {describe(node)}"
            )
        type_entry = next(
            ((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "type"),
            None,
        )
        if type_entry is None:
            raise self.error(node, f"a sink needs a 'type': one of {', '.join(SINK_TYPES)}")
        kind = self.choice(type_entry, "sink type", SINK_TYPES)
        fields = self.mapping(node, f"a {kind} sink", _SINK_KEYS[kind], _SINK_REQUIRED[kind])
        line = line_of(node)
        if kind == "jsonl":
            jsonl: dict[str, int] = {}
            if "max_bytes" in fields:
                jsonl["max_bytes"] = self.integer(fields["max_bytes"], "max_bytes", 4096, 1 << 40)
            if "keep" in fields:
                jsonl["keep"] = self.integer(fields["keep"], "keep", 0, 1000)
            return JsonlSinkConfig(path=self.path(fields["path"], "jsonl path"), line=line, **jsonl)
        if kind == "syslog":
            return self.syslog(fields, line)
        if kind == "webhook":
            return self.webhook(fields, line)
        return StdoutSinkConfig(line=line)

    def host(self, entry: Entry, what: str) -> str:
        text = self.string(entry, what).strip()
        if "://" in text:
            raise self.value_error(entry, f"{what} {text!r} is a URL; give only the host name")
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if not _HOST.fullmatch(text):
                raise self.value_error(
                    entry, f"{what} {text!r} is not a host name or IP address"
                ) from None
        return text

    def syslog(self, fields: dict[str, Entry], line: int) -> SyslogSinkConfig:
        transport = (
            self.choice(fields["transport"], "transport", SYSLOG_TRANSPORTS)
            if "transport" in fields
            else "udp"
        )
        ca_file = None
        if "ca_file" in fields:
            if transport != "tls":
                raise self.error(
                    fields["ca_file"][0],
                    f"ca_file only applies to transport: tls (this sink uses {transport})",
                )
            ca_file = self.path(fields["ca_file"], "ca_file", "file")
        return SyslogSinkConfig(
            host=self.host(fields["host"], "syslog host"),
            transport=transport,
            port=(
                self.port(fields["port"], "port")
                if "port" in fields
                else (6514 if transport == "tls" else 514)
            ),
            ca_file=ca_file,
            facility=(
                self.choice(fields["facility"], "facility", SYSLOG_FACILITIES)
                if "facility" in fields
                else "local0"
            ),
            line=line,
        )

    def webhook(self, fields: dict[str, Entry], line: int) -> WebhookSinkConfig:
        url = self.string(fields["url"], "url").strip()
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError:  # e.g. an unbalanced "[" or a bad port
            parts, hostname = urlsplit(""), None
        if parts.scheme not in ("http", "https") or not hostname or any(c.isspace() for c in url):
            raise self.value_error(fields["url"], f"url {url!r} is not an http(s) URL")
        if parts.scheme == "http" and not _is_loopback(hostname):
            self.warn(
                fields["url"][1],
                f"webhook {url} is plain http: alerts would cross the network unencrypted",
            )
        headers: list[tuple[str, str]] = []
        if "headers" in fields:
            _, value = fields["headers"]
            if not isinstance(value, yaml.MappingNode):
                raise self.value_error(
                    fields["headers"],
                    f"headers must map header names to values, got {describe(value)}",
                )
            seen: dict[object, int] = {}
            for name_node, value_node in value.value:
                name = self.string((name_node, name_node), "header name")
                if not _HEADER_NAME.fullmatch(name):
                    raise self.error(name_node, f"header name {name!r} is not an HTTP token")
                self.unique(seen, name.lower(), name_node, f"header {name}")
                text = self.string((name_node, value_node), f"header {name}")
                if any(ch in text for ch in "\r\n\0"):
                    raise self.error(value_node, f"header {name} contains a line break")
                headers.append((name, text))
        timeout: dict[str, float] = {}
        if "timeout_seconds" in fields:
            timeout["timeout_seconds"] = self.number(
                fields["timeout_seconds"], "timeout_seconds", 0, 300
            )
        return WebhookSinkConfig(url=url, headers=tuple(headers), line=line, **timeout)

    def evidence(self, entry: Entry, state_dir: str) -> EvidenceConfig:
        _, value = entry
        fields = (
            {} if value.tag == NULL_TAG else self.mapping(value, "evidence", _EVIDENCE_KEYS, ())
        )
        directory = self.optional_path(fields, "dir", "evidence dir")
        limit: dict[str, int] = {}
        if "max_bytes" in fields:
            limit["max_bytes"] = self.integer(fields["max_bytes"], "max_bytes", 1 << 20, 1 << 44)
        return EvidenceConfig(dir=directory or os.path.join(state_dir, "evidence"), **limit)

    def metrics(self, entry: Entry) -> MetricsConfig:
        _, value = entry
        fields = {} if value.tag == NULL_TAG else self.mapping(value, "metrics", _METRICS_KEYS, ())
        host, port = "127.0.0.1", DEFAULT_METRICS_PORT
        where: yaml.Node = entry[0]
        if "listen" in fields:
            host, port = self.listen(fields["listen"])
            where = fields["listen"][1]
        cert = self.optional_path(fields, "tls_cert", "tls_cert", "file")
        key = self.optional_path(fields, "tls_key", "tls_key", "file")
        if key is not None and cert is None:
            raise self.error(fields["tls_key"][0], "tls_key needs tls_cert")
        auth = None
        if "basic_auth" in fields:
            auth = self.basic_auth(fields["basic_auth"])
        if not _is_loopback(host):
            if auth is None:
                self.warn(where, f"metrics on {host} are open to anyone who can reach them")
            elif cert is None:
                self.warn(
                    fields["basic_auth"][1],
                    "basic_auth without tls_cert sends the password over the network in clear",
                )
        return MetricsConfig(host=host, port=port, tls_cert=cert, tls_key=key, basic_auth=auth)

    def listen(self, entry: Entry) -> tuple[str, int]:
        _, value = entry
        if isinstance(value, yaml.SequenceNode):
            raise self.value_error(
                entry, 'listen must be a string; quote IPv6 addresses: listen: "[::1]:10463"'
            )
        text = self.string(entry, "listen").strip()
        match = _LISTEN.fullmatch(text)
        host = None if match is None else (match["v6"] or match["host"])
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            address = None
        if match is None or address is None or (address.version == 6) != bool(match["v6"]):
            raise self.value_error(
                entry,
                f"listen {text!r} must be ADDRESS:PORT, e.g. 127.0.0.1:10463 or [::1]:10463",
            )
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise self.value_error(entry, f"listen port must be 1 to 65535, got {port}")
        return str(address), port

    def basic_auth(self, entry: Entry) -> BasicAuth:
        _, value = entry
        fields = self.mapping(value, "basic_auth", _AUTH_KEYS, ("user",))
        user = self.string(fields["user"], "user")
        if ":" in user or user != user.strip():
            raise self.value_error(fields["user"], "basic_auth user must not contain ':' or spaces")
        given = [k for k in ("password_sha256", "password_hash") if k in fields]
        if len(given) != 1:
            raise self.error(
                value if not given else fields[given[1]][0],
                "basic_auth needs exactly one of password_sha256 and password_hash",
            )
        secret = self.string(fields[given[0]], given[0]).strip()
        if given[0] == "password_sha256":
            if not _HEX64.fullmatch(secret):
                raise self.value_error(
                    fields[given[0]],
                    "password_sha256 must be 64 hex digits (sha256sum of the password)",
                )
            stored = f"sha256${secret.lower()}"
        else:
            if not (_SCRYPT.fullmatch(secret) or re.fullmatch(r"sha256\$[0-9a-fA-F]{64}", secret)):
                raise self.value_error(
                    fields[given[0]],
                    "password_hash must be 'scrypt$N$r$p$SALT$HASH' or 'sha256$HEX' "
                    "(python -m monitor.metrics hash-password)",
                )
            stored = secret
        return BasicAuth(user=user, password_hash=stored)


# -- entry points -----------------------------------------------------------------------------


def parse_config(
    text: str,
    file: str = "<config>",
    *,
    base_dir: str | None = None,
    for_run: bool = False,
    check_files: bool = False,
) -> SensorConfig:
    """Parse configuration text; raises SensorConfigError (FILE:LINE) on the first problem.

    ``base_dir`` is where relative paths start (None keeps them as written).
    """
    root = parse_text(text, file, kind=_KIND)
    return _SensorParser(file, base_dir, check_files).document(root, for_run)


def load_config(
    path: str | os.PathLike[str] = DEFAULT_PATH,
    *,
    for_run: bool = False,
    check_files: bool = True,
) -> SensorConfig:
    """Load the sensor's configuration; raises SensorConfigError (FILE:LINE) on any problem.

    ``for_run`` requires ``interfaces``; ``check_files`` checks that the input files the sensor
    cannot start without exist (see the module docstring).  Relative paths in the file are
    taken relative to the file's directory.
    """
    file = os.fspath(path)
    text = read_text(file, error=SensorConfigError, max_bytes=MAX_CONFIG_BYTES)
    base_dir = os.path.dirname(os.path.abspath(file))
    return parse_config(text, file, base_dir=base_dir, for_run=for_run, check_files=check_files)


def check_config(path: str | os.PathLike[str], out: TextIO) -> int:
    """``egress-monitor config check``: validate the file and what it refers to; exit code.

    Loads the configuration as ``run`` would, then the blocklists and the approvals file it
    names, so a bad list or approval is caught before the daemon is restarted.  Warnings are
    printed and do not fail the check.
    """
    try:
        config = load_config(path, for_run=True)
    except SensorConfigError as exc:
        print(exc, file=out)
        return 1
    for warning in config.warnings:
        print(warning, file=out)
    status = 0
    known_vendors: set[str] | None = None
    try:
        matcher = load_blocklists(config.blocklist_paths())
    except BlocklistError as exc:
        print(exc, file=out)
        status = 1
    else:
        known_vendors = set(matcher.vendors)
        print(
            f"OK blocklists: {len(matcher.lists)} lists, {len(matcher.vendors)} vendors, "
            f"{matcher.indicator_count} indicators",
            file=out,
        )
    if config.approvals is not None:
        try:
            approvals = load_approvals(config.approvals, known_vendors)
        except ConfigError as exc:
            print(exc, file=out)
            status = 1
        else:
            print(f"OK approvals {config.approvals}: {len(approvals)} approvals", file=out)
    if status == 0:
        print(
            f"OK {os.fspath(path)}: interfaces {', '.join(config.interfaces)}; "
            f"{len(config.sinks)} sink(s): {', '.join(_sink_name(s) for s in config.sinks)}",
            file=out,
        )
    return status


def _sink_name(sink: SinkConfig) -> str:
    if isinstance(sink, JsonlSinkConfig):
        return f"jsonl {sink.path}"
    if isinstance(sink, SyslogSinkConfig):
        return f"syslog {sink.transport}://{sink.host}:{sink.port}"
    if isinstance(sink, WebhookSinkConfig):
        return f"webhook {sink.url}"
    return "stdout"
