"""The ``/metrics`` endpoint: a small HTTP(S) server thread beside the capture loop.

Not ``prometheus_client.start_http_server``: the sensor needs basic auth checked against a
stored hash (:mod:`monitor.metrics.auth`), a bound on concurrent connections (each one is a
thread, and a scrypt check costs 16 MiB), a TLS handshake that cannot stall the accept loop, and
no request logging to stderr. Content negotiation (OpenMetrics or text 0.0.4) and the encoders
are the client library's own, and gzip is used when the scraper asks for it (Prometheus does).

Default port 10463. Prometheus keeps a registry of default ports so that exporters on one host
do not collide: "Default port allocations" in the prometheus/prometheus wiki,
https://github.com/prometheus/prometheus/wiki/Default-port-allocations . Its core components
take 9090-9094 and its standard exporter range is 9100-9999, which is fully allocated (noted in
June 2023: https://utcc.utoronto.ca/~cks/space/blog/sysadmin/PrometheusExportersFixedPorts ;
the copies of the page we could read already listed 9100-9745 and 9901-9999 as taken), so any
9xxx port would collide with some registered exporter. The page's list of "exporters outside of
the standard port ranges" names 3903, 7300, 8080, 8082, 8088, 8089, 8292, 8404, 9042, 9087,
9095, 9097, 9099, 16995, 19091, 19999, 24231, 42004, 44322 and 61091. 10463 is in neither list,
has no entry in /etc/services (Debian netbase), and lies below the Linux ephemeral port range
(32768-60999), so an outgoing connection never holds it. The exporter binds 127.0.0.1 unless
told otherwise: metrics about a police department's monitoring are not for the whole LAN.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from monitor.metrics.auth import PasswordHash
from monitor.metrics.collector import SnapshotCollector
from monitor.metrics.snapshot import MetricsSnapshot

DEFAULT_PORT = 10463
DEFAULT_MAX_CONNECTIONS = 8
DEFAULT_TIMEOUT_S = 10.0

log = logging.getLogger(__name__)

_INDEX = b"egress-monitor metrics exporter: see /metrics\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        ssl_context: ssl.SSLContext | None,
        auth: tuple[str, PasswordHash] | None,
        max_connections: int,
        timeout_s: float,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.ssl_context = ssl_context
        self.auth = auth
        self.request_timeout_s = timeout_s
        self.slots = threading.BoundedSemaphore(max_connections)
        self.kdf_lock = threading.Lock()  # one scrypt at a time: bounded memory, slow guessing
        self.accepted_header: bytes | None = None  # SHA-256 of the last good Authorization
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.ssl_context is not None:
            # The handshake runs in the request thread (see _Handler.setup), under a timeout.
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the limit: close rather than queue
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Port scanners, TLS probes and timeouts are routine; never a traceback on stderr.
        log.debug("metrics request failed", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "egress-monitor"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        # Every read and write (and the TLS handshake) is bounded: a client that stops talking
        # frees its slot after the timeout.
        self.request.settimeout(self.server.request_timeout_s)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s", format % args)

    def _send(
        self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        auth = self.server.auth
        if auth is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        known = self.server.accepted_header
        if known is not None and hmac.compare_digest(key, known):
            return True
        try:
            user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            return False
        if not sep:
            return False
        want_user, stored = auth
        user_ok = hmac.compare_digest(user.encode(), want_user.encode())
        with self.server.kdf_lock:
            password_ok = stored.verify(password)  # always run: no timing hint about the user
        if user_ok and password_ok:
            self.server.accepted_header = key
            return True
        return False

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorized():
            self._send(
                401,
                b"authentication required\n",
                "text/plain; charset=utf-8",
                {"WWW-Authenticate": 'Basic realm="egress-monitor", charset="UTF-8"'},
            )
            return
        if path == "/":
            self._send(200, _INDEX, "text/plain; charset=utf-8")
            return
        if path != "/metrics":
            self._send(404, b"not found\n", "text/plain; charset=utf-8")
            return
        encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.server.registry)
        except Exception:
            log.exception("metrics snapshot failed")
            self._send(500, b"metrics snapshot failed\n", "text/plain; charset=utf-8")
            return
        extra: dict[str, str] = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=6)
            extra["Content-Encoding"] = "gzip"
        self._send(200, body, ctype, extra)


class MetricsServer:
    """The handle :func:`serve_metrics` returns; ``close()`` stops the thread and the socket."""

    def __init__(self, server: _Server, thread: threading.Thread, tls: bool) -> None:
        self._server = server
        self._thread = thread
        self._closed = False
        addr = server.server_address
        self.host: str = str(addr[0])
        self.port: int = int(addr[1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}/metrics"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tls_context(cert: str | PathLike[str], key: str | PathLike[str] | None) -> ssl.SSLContext:
    """TLS 1.2+ server context; ``key`` may be omitted when the cert file holds it too."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def serve_metrics(
    collector_or_provider: Collector | Callable[[], MetricsSnapshot],
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    tls_cert: str | PathLike[str] | None = None,
    tls_key: str | PathLike[str] | None = None,
    basic_auth: tuple[str, str] | None = None,
    *,
    process_metrics: bool = True,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> MetricsServer:
    """Start serving ``/metrics`` in a daemon thread and return at once.

    ``collector_or_provider`` is a collector (usually :class:`SnapshotCollector`) or a callable
    returning a fresh :class:`MetricsSnapshot`. ``basic_auth`` is ``(user, stored hash)`` in a
    format of :mod:`monitor.metrics.auth`. ``port=0`` picks a free port (see ``.port``).
    Raises ``OSError`` if the address is taken, ``ValueError`` for a bad hash or TLS option,
    ``ssl.SSLError`` for unreadable certificates -- all before any thread starts.
    """
    if tls_key is not None and tls_cert is None:
        raise ValueError("tls_key given without tls_cert")
    collector: Collector
    if hasattr(collector_or_provider, "collect"):
        collector = collector_or_provider
    elif callable(collector_or_provider):
        collector = SnapshotCollector(collector_or_provider)
    else:
        raise TypeError("need a Collector or a callable returning a MetricsSnapshot")
    auth = None
    if basic_auth is not None:
        user, stored = basic_auth
        if not user or ":" in user:
            raise ValueError("basic auth user must be non-empty and contain no ':'")
        auth = (user, PasswordHash.parse(stored))
    ctx = tls_context(tls_cert, tls_key) if tls_cert is not None else None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if process_metrics:
        ProcessCollector(registry=registry)
    server = _Server((host, port), registry, ctx, auth, max_connections, timeout_s)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="metrics-http",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread, tls=ctx is not None)
