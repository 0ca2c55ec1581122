"""Alerts as RFC 5424 syslog messages over UDP (RFC 5426), TCP (RFC 6587) or TLS (RFC 5425).

The MSG part is the whole JSON document, so a SIEM that parses JSON gets every field; the
STRUCTURED-DATA element repeats a few key fields (ECS names as SD-PARAM names) so that a plain
syslog server can filter and route without a JSON parser, and so that the essentials survive
when a UDP datagram has to be truncated at the end.

Neither UDP nor TCP syslog acknowledges anything, so "delivered" has to be inferred: after a
batch is written the transport waits ``settle`` seconds and then checks that the connection is
still up (TCP/TLS: no FIN or RST arrived; UDP: no ICMP port-unreachable was reported on the
connected socket). If it is not, the whole batch is sent again on a new connection. That is what
makes a receiver restart lose nothing, at the cost of duplicates bounded by one batch per
outage. What it cannot see is a receiver that takes data into its socket buffer and then dies
without reading it *after* the settle time, or a host that vanishes without sending anything;
for those, use the webhook sink (HTTP status codes are real acknowledgements) or a RELP relay.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from monitor.alerts.sinks import (
    Backoff,
    Document,
    SpoolingSink,
    TransientDeliveryError,
)
from monitor.alerts.spool import FsyncPolicy, Spool

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14,
    "clock": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip

#: RFC 5426 3.2: every receiver MUST take 480 octets (IPv4) and SHOULD take 2048.
UDP_MIN_MESSAGE = 480
UDP_DEFAULT_MAX_MESSAGE = 2048
UDP_MAX_PAYLOAD = 65507

BOM = b"\xef\xbb\xbf"
NILVALUE = "-"
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})\Z")

#: SD-PARAMs: (PARAM-NAME, path in the document). Names are the ECS field names, which are
#: valid SD-NAMEs (printable ASCII without '=', ' ', ']', '"', at most 32 characters).
SD_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("event.id", ("event", "id")),
    ("event.action", ("event", "action")),
    ("event.severity", ("event", "severity")),
    ("match.vendor", ("match", "vendor")),
    ("match.name", ("match", "name")),
    ("match.category", ("match", "category")),
    ("match.evidence", ("match", "evidence")),
    ("source.ip", ("source", "ip")),
    ("source.domain", ("source", "domain")),
    ("source.user.name", ("source", "user", "name")),
    ("destination.ip", ("destination", "ip")),
)
_SD_VALUE_MAX = 256


def syslog_severity(event_severity: object) -> int:
    """RFC 5424 severity for the contract's numeric ``event.severity`` (low 21, medium 47,
    high 73, critical 99): critical->2 Critical, high->3 Error, medium->4 Warning, low->5
    Notice; anything unknown->6 Informational, so a malformed value never pages anyone."""
    if isinstance(event_severity, bool) or not isinstance(event_severity, int | float):
        return 6
    if event_severity >= 90:
        return 2
    if event_severity >= 70:
        return 3
    if event_severity >= 40:
        return 4
    if event_severity >= 1:
        return 5
    return 6


def _header_field(value: str, limit: int) -> str:
    """HOSTNAME/APP-NAME/PROCID/MSGID: 1..limit printable US-ASCII, else NILVALUE."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or NILVALUE


def _sd_escape(value: str) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' MUST be escaped. Control characters are replaced as
    # well, because many receivers still split on newlines; the JSON MSG keeps exact values.
    value = value[:_SD_VALUE_MAX]
    value = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    return "".join("?" if ord(c) < 32 or ord(c) == 127 else c for c in value)


def _lookup(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


@dataclass(slots=True, frozen=True)
class SyslogFormat:
    """Header choices. ``facility`` defaults to local0 so that an administrator can route the
    sensor's alerts with one selector without mixing them into auth or kernel logs.
    ``sd_id`` uses enterprise number 32473 (RFC 5612, reserved for documentation) unless the
    operator has a PEN of their own."""

    facility: int = FACILITIES["local0"]
    hostname: str = field(default_factory=socket.getfqdn)
    app_name: str = "egress-monitor"
    procid: str = field(default_factory=lambda: str(os.getpid()))
    sd_id: str = "egressmon@32473"
    bom: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.facility <= 23:
            raise ValueError(f"syslog facility must be 0..23, not {self.facility}")
        if not 1 <= len(self.sd_id) <= 32 or any(
            c in '= ]"' or not 33 <= ord(c) <= 126 for c in self.sd_id
        ):
            raise ValueError(f"invalid SD-ID {self.sd_id!r}")


def format_rfc5424(doc: Mapping[str, Any], fmt: SyslogFormat) -> bytes:
    """One SYSLOG-MSG (RFC 5424 section 6) for an alert document, without transport framing."""
    raw_event = doc.get("event")
    event: Mapping[str, Any] = raw_event if isinstance(raw_event, Mapping) else {}
    pri = fmt.facility * 8 + syslog_severity(event.get("severity"))
    ts = doc.get("@timestamp")
    timestamp = ts if isinstance(ts, str) and _TIMESTAMP.match(ts) else NILVALUE
    action = event.get("action")
    msgid = _header_field(action, 32) if isinstance(action, str) else NILVALUE
    params = []
    for name, path in SD_FIELDS:
        value = _lookup(doc, path)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            params.append(f' {name}="{_sd_escape(str(value))}"')
    sd = f"[{fmt.sd_id}{''.join(params)}]"
    header = (
        f"<{pri}>1 {timestamp} {_header_field(fmt.hostname, 255)} "
        f"{_header_field(fmt.app_name, 48)} {_header_field(fmt.procid, 128)} {msgid} {sd} "
    )
    if fmt.bom:
        msg = BOM + json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    else:
        msg = json.dumps(doc, ensure_ascii=True, separators=(",", ":"), default=str).encode()
    return header.encode() + msg


def truncate_utf8(data: bytes, limit: int) -> bytes:
    """Cut to at most ``limit`` bytes without splitting a UTF-8 sequence."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


def octet_counted(payloads: Sequence[bytes]) -> bytes:
    """RFC 6587 3.4.1 framing: ``MSG-LEN SP SYSLOG-MSG``, which (unlike newline framing) is safe
    for any content and is what RFC 5425 mandates over TLS."""
    return b"".join(b"%d %s" % (len(p), p) for p in payloads)


def tls_context(
    *,
    cafile: str | None = None,
    verify: bool = True,
    check_hostname: bool = True,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> ssl.SSLContext:
    """Client context for RFC 5425: TLS 1.2+, the server certificate checked against ``cafile``
    (or the system store), optional client certificate for mutual authentication."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = check_hostname
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


class UdpSyslogTransport:
    """One message per datagram (RFC 5426), truncated to ``max_message`` octets and counted."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_message: int = UDP_DEFAULT_MAX_MESSAGE,
        settle: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not UDP_MIN_MESSAGE <= max_message <= UDP_MAX_PAYLOAD:
            raise ValueError(f"max_message must be {UDP_MIN_MESSAGE}..{UDP_MAX_PAYLOAD}")
        self.host, self.port = host, port
        self.max_message = max_message
        self.settle = settle
        self.truncated = 0
        self._sleep = sleep
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            family, kind, proto, _, addr = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                # Connected, so the kernel reports ICMP port-unreachable back to us.
                sock.connect(addr)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def deliver(self, payloads: Sequence[bytes]) -> None:
        try:
            sock = self._connect()
            for payload in payloads:
                if len(payload) > self.max_message:
                    payload = truncate_utf8(payload, self.max_message)
                    self.truncated += 1
                sock.send(payload)
            self._sleep(self.settle)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as exc:
            self.close()
            raise TransientDeliveryError(f"syslog udp {self.host}:{self.port}: {exc}") from exc
        if err:
            self.close()
            raise TransientDeliveryError(f"syslog udp {self.host}:{self.port}: {os.strerror(err)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class StreamSyslogTransport:
    """TCP (RFC 6587) or, with an ``ssl_context``, TLS (RFC 5425); octet-counting framing."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float = 5.0,
        io_timeout: float = 10.0,
        settle: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname or host
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.settle = settle
        self._sleep = sleep
        self._sock: socket.socket | None = None

    @property
    def _what(self) -> str:
        return f"syslog {'tls' if self.ssl_context else 'tcp'} {self.host}:{self.port}"

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.server_hostname)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(self.io_timeout)
        return sock

    def _alive(self, sock: socket.socket) -> bool:
        """True unless the receiver closed or reset the connection. A syslog receiver never
        sends application data, so anything readable is EOF, an error, or TLS housekeeping
        (TLS 1.3 session tickets, which surface as SSLWantReadError)."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        if not readable:
            return True
        sock.setblocking(False)
        try:
            return bool(sock.recv(4096))
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return True
        except OSError:
            return False
        finally:
            sock.settimeout(self.io_timeout)

    def deliver(self, payloads: Sequence[bytes]) -> None:
        if self._sock is not None and not self._alive(self._sock):
            self.close()
        try:
            if self._sock is None:
                self._sock = self._connect()
            self._sock.sendall(octet_counted(payloads))
        except OSError as exc:  # includes ssl.SSLError and timeouts
            self.close()
            raise TransientDeliveryError(f"{self._what}: {exc}") from exc
        self._sleep(self.settle)
        if not self._alive(self._sock):
            self.close()
            raise TransientDeliveryError(f"{self._what}: connection closed by the receiver")

    def close(self) -> None:
        if self._sock is not None:
            if isinstance(self._sock, ssl.SSLSocket):
                # close_notify, so the receiver sees an orderly end rather than a truncation
                # (RFC 5425 4.4); bounded, since a dead peer will not answer.
                with contextlib.suppress(OSError, ValueError):
                    self._sock.settimeout(0.5)
                    self._sock.unwrap()
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def syslog_sink(
    spool_dir: str | os.PathLike[str],
    *,
    host: str,
    port: int | None = None,
    transport: Literal["udp", "tcp", "tls"] = "udp",
    name: str | None = None,
    fmt: SyslogFormat | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    max_message: int = UDP_DEFAULT_MAX_MESSAGE,
    settle: float | None = None,
    connect_timeout: float = 5.0,
    spool_max_bytes: int = 64 * 1024 * 1024,
    spool_max_records: int = 100_000,
    spool_fsync: FsyncPolicy = "batch",
    max_batch: int = 100,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] | None = None,
) -> SpoolingSink:
    """A spool-backed syslog sink. Default ports: 514 for UDP and TCP, 6514 for TLS."""
    fmt = fmt or SyslogFormat()
    if transport == "udp":
        tx: UdpSyslogTransport | StreamSyslogTransport = UdpSyslogTransport(
            host,
            port or 514,
            max_message=max_message,
            settle=0.05 if settle is None else settle,
        )
    elif transport in ("tcp", "tls"):
        if transport == "tls" and ssl_context is None:
            ssl_context = tls_context()
        tx = StreamSyslogTransport(
            host,
            port or (6514 if transport == "tls" else 514),
            ssl_context=ssl_context if transport == "tls" else None,
            server_hostname=server_hostname,
            connect_timeout=connect_timeout,
            settle=0.2 if settle is None else settle,
        )
    else:
        raise ValueError(f"syslog transport must be udp, tcp or tls, not {transport!r}")
    spool = Spool(
        Path(spool_dir),
        max_bytes=spool_max_bytes,
        max_records=spool_max_records,
        fsync=spool_fsync,
    )

    def encode(doc: Document) -> bytes:
        return format_rfc5424(doc, fmt)

    return SpoolingSink(
        name or f"syslog-{transport}:{host}:{tx.port}",
        tx,
        spool,
        encode,
        max_batch=max_batch,
        backoff=backoff,
        sleep=sleep,
    )


__all__ = [
    "FACILITIES",
    "StreamSyslogTransport",
    "SyslogFormat",
    "UdpSyslogTransport",
    "format_rfc5424",
    "octet_counted",
    "syslog_severity",
    "syslog_sink",
    "tls_context",
]
