"""Build the configured sinks from plain mappings (the ``sinks:`` list of the sensor's config).

Strict on purpose: an unknown key or a wrong type is a configuration error raised at start-up,
because a typo in a sink's settings would otherwise be discovered when an alert fails to arrive.

Keys per ``type`` (all but the marked ones optional)::

    file:     path*, max_bytes, keep, fsync (always|never)
    stdout:   -
    syslog:   host*, port, transport (udp|tcp|tls), facility (name or 0..23), hostname,
              app_name, sd_id, bom, max_message (udp), settle, connect_timeout,
              cafile, verify, check_hostname, certfile, keyfile, server_hostname (tls)
    webhook:  url*, timeout, headers, text, cafile, verify
    common:   name (unique; names the spool directory), spool {max_bytes, max_records, fsync},
              max_batch (network sinks)
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monitor.alerts.sinks import FanOutSink, JsonLinesFileSink, Sink, StdoutSink
from monitor.alerts.syslog import FACILITIES, SyslogFormat, syslog_sink, tls_context
from monitor.alerts.webhook import webhook_sink

_COMMON = {"type", "name"}
_NETWORK = {"spool", "max_batch"}
_SYSLOG_PASSED = ("port", "max_message", "settle", "connect_timeout", "server_hostname")
_SYSLOG_FORMAT = ("hostname", "app_name", "sd_id", "bom")
_SYSLOG_TLS = ("cafile", "verify", "check_hostname", "certfile", "keyfile")
_SYSLOG_KEYS = {"host", "transport", "facility", *_SYSLOG_PASSED, *_SYSLOG_FORMAT, *_SYSLOG_TLS}
_ALLOWED = {
    "file": _COMMON | {"path", "max_bytes", "keep", "fsync"},
    "stdout": _COMMON,
    "syslog": _COMMON | _NETWORK | _SYSLOG_KEYS,
    "webhook": _COMMON | _NETWORK | {"url", "timeout", "headers", "text", "cafile", "verify"},
}
_SPOOL_KEYS = {"max_bytes", "max_records", "fsync"}


class SinkConfigError(ValueError):
    pass


def _dir_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sink"


def _spool_args(spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    spool = spec.get("spool", {})
    if not isinstance(spool, Mapping) or set(spool) - _SPOOL_KEYS:
        raise SinkConfigError(f"sink {name}: spool takes only {sorted(_SPOOL_KEYS)}")
    return {f"spool_{k}": v for k, v in spool.items()}


def open_sink(spec: Mapping[str, Any], spool_root: str | Path, index: int = 0) -> Sink:
    kind = spec.get("type")
    if kind not in _ALLOWED:
        raise SinkConfigError(f"sink #{index}: type must be one of {sorted(_ALLOWED)}")
    unknown = set(spec) - _ALLOWED[kind]
    if unknown:
        raise SinkConfigError(f"sink #{index} ({kind}): unknown keys {sorted(unknown)}")
    try:
        if kind == "file":
            return JsonLinesFileSink(
                spec["path"],
                max_bytes=spec.get("max_bytes", 100 * 1024 * 1024),
                keep=spec.get("keep", 10),
                fsync=spec.get("fsync", "always"),
                name=spec.get("name"),
            )
        if kind == "stdout":
            return StdoutSink(name=spec.get("name", "stdout"))
        if kind == "syslog":
            transport = spec.get("transport", "udp")
            name = spec.get("name") or f"syslog-{transport}-{spec['host']}"
            facility = spec.get("facility", "local0")
            if isinstance(facility, str):
                facility = FACILITIES[facility]
            fmt_args = {k: spec[k] for k in _SYSLOG_FORMAT if k in spec}
            ctx = None
            if transport == "tls":
                ctx = tls_context(
                    cafile=spec.get("cafile"),
                    verify=spec.get("verify", True),
                    check_hostname=spec.get("check_hostname", True),
                    certfile=spec.get("certfile"),
                    keyfile=spec.get("keyfile"),
                )
            extra = {k: spec[k] for k in (*_SYSLOG_PASSED, "max_batch") if k in spec}
            return syslog_sink(
                Path(spool_root) / _dir_name(name),
                host=spec["host"],
                transport=transport,
                name=name,
                fmt=SyslogFormat(facility=facility, **fmt_args),
                ssl_context=ctx,
                **extra,
                **_spool_args(spec, name),
            )
        name = spec.get("name") or f"webhook-{urllib.parse.urlsplit(str(spec['url'])).hostname}"
        ctx = None
        if str(spec["url"]).startswith("https:"):
            ctx = tls_context(cafile=spec.get("cafile"), verify=spec.get("verify", True))
        extra = {k: spec[k] for k in ("timeout", "headers", "text", "max_batch") if k in spec}
        return webhook_sink(
            Path(spool_root) / _dir_name(name),
            url=spec["url"],
            name=name,
            ssl_context=ctx,
            **extra,
            **_spool_args(spec, name),
        )
    except KeyError as exc:
        raise SinkConfigError(f"sink #{index} ({kind}): missing or unknown value {exc}") from exc
    except TypeError as exc:
        raise SinkConfigError(f"sink #{index} ({kind}): {exc}") from exc


def open_sinks(specs: Sequence[Mapping[str, Any]], spool_root: str | Path) -> FanOutSink:
    """All configured sinks behind one ``send``; closes what was opened if one spec is bad."""
    opened: list[Sink] = []
    try:
        for i, spec in enumerate(specs):
            opened.append(open_sink(spec, spool_root, i))
        return FanOutSink(opened)
    except BaseException:
        for sink in opened:
            sink.close(0)
        raise
