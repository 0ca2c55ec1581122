"""Real loopback receivers and helpers shared by the sink tests (no tests of its own).

Every receiver runs on 127.0.0.1, binds port 0 the first time, can be stopped and started again
on the same port (that is how the tests take a receiver "down" and bring it "back"), and is
stopped by the fixtures even when a test fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ipaddress
import json
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def alert(i: int, **extra: Any) -> dict[str, Any]:
    """A contract-shaped detection whose id encodes its sequence number."""
    doc: dict[str, Any] = {
        "@timestamp": f"2026-01-15T10:00:{i % 60:02d}.{i:06d}Z",
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection", "protocol"],
            "action": "vendor-access",
            "dataset": "egress_monitor.detection",
            "module": "egress_monitor",
            "id": f"{i:032x}",
            "severity": 99,
        },
        "network": {"protocol": "tls", "transport": "tcp", "type": "ipv4"},
        "source": {"ip": "192.0.2.10", "port": 40000 + i % 20000},
        "destination": {"ip": "198.51.100.3", "port": 443},
        "url": {"domain": "app.clearview.ai"},
        "match": {
            "name": "app.clearview.ai",
            "indicator": "clearview.ai",
            "indicator_type": "domain",
            "vendor": "clearview-ai",
            "vendor_name": "Clearview AI",
            "category": "face-search",
            "severity": "critical",
            "shared": False,
            "list": "face-recognition@2026.11.26",
            "evidence": "tls-sni",
        },
    }
    doc.update(extra)
    return doc


def seq_of(doc: dict[str, Any]) -> int:
    return int(doc["event"]["id"], 16)


def check_at_least_once(received: list[int], sent: int, max_duplicates: int) -> None:
    """Every one of ``range(sent)`` arrived, first arrivals in order, duplicates bounded."""
    first: list[int] = []
    seen: set[int] = set()
    for n in received:
        if n not in seen:
            seen.add(n)
            first.append(n)
    assert first == list(range(sent)), f"missing or out of order: {sorted(set(range(sent)) - seen)}"
    dups = len(received) - len(first)
    assert dups <= max_duplicates, f"{dups} duplicates, bound {max_duplicates}"


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- HTTP webhook receiver ---------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """Records every POST; ``script`` (a list of statuses, or (status, headers) tuples) decides
    the answers to the next requests, 200 once it is empty."""

    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    script: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None
    _server: http.server.HTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, extra = 200, {}
                if receiver.script:
                    step = receiver.script.pop(0)
                    status, extra = step if isinstance(step, tuple) else (step, {})
                if 200 <= status < 300:
                    receiver.received.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.HTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        if self.ssl_context is not None:
            self._server.socket = self.ssl_context.wrap_socket(
                self._server.socket, server_side=True
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = None

    @property
    def seqs(self) -> list[int]:
        return [seq_of(d) for d in self.received]


# -- syslog receivers --------------------------------------------------------------------------


class SyslogStreamReceiver:
    """TCP or TLS syslog receiver with RFC 6587 octet-counting framing."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.ssl_context = ssl_context
        self.port = port
        self.messages: list[bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    def start(self) -> SyslogStreamReceiver:
        self._stop.clear()
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", self.port))
        lsock.listen(16)
        self.port = lsock.getsockname()[1]
        self._listener = lsock
        t = threading.Thread(target=self._accept_loop, args=(lsock,), daemon=True)
        t.start()
        self._threads = [t]
        return self

    def _accept_loop(self, lsock: socket.socket) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([lsock], [], [], 0.02)
            if not r:
                continue
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        if self.ssl_context is not None:
            try:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                return
        with self._lock:
            self._conns.append(conn)
            self.connections += 1
        buf = b""
        conn.settimeout(0.05)
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except (TimeoutError, ssl.SSLWantReadError):
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while True:
                    m = re.match(rb"(\d+) ", buf)
                    if not m or len(buf) < m.end() + int(m.group(1)):
                        break
                    end = m.end() + int(m.group(1))
                    with self._lock:
                        self.messages.append(buf[m.end() : end])
                    buf = buf[end:]
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for t in self._threads:
            t.join(5)
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.close()
            self._conns.clear()


class SyslogUdpReceiver:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.messages: list[bytes] = []
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SyslogUdpReceiver:
        self._stop.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        sock.settimeout(0.02)
        self._sock = sock
        self._thread = threading.Thread(target=self._loop, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def _loop(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append(data)

    def stop(self) -> None:
        """Graceful: what already sits in the socket buffer is read before closing (UDP has no
        way to tell the sender about datagrams a receiver drops when it closes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.setblocking(False)
            while True:
                try:
                    self.messages.append(self._sock.recv(65536))
                except OSError:
                    break
            self._sock.close()
            self._sock = None


# -- RFC 5424 parsing (independent of the code under test) ------------------------------------


_ESCAPED = (b'"', b"\\", b"]")
_HEADER = re.compile(
    rb"<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) "
    rb"(?P<procid>\S+) (?P<msgid>\S+) "
)


@dataclass
class Rfc5424:
    pri: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]]
    msg: bytes

    @property
    def facility(self) -> int:
        return self.pri // 8

    @property
    def severity(self) -> int:
        return self.pri % 8


def parse_rfc5424(data: bytes) -> Rfc5424:
    m = _HEADER.match(data)
    assert m, data[:120]
    pos = m.end()
    sd: dict[str, dict[str, str]] = {}
    if data[pos : pos + 1] == b"-":
        pos += 1
    else:
        while data[pos : pos + 1] == b"[":
            pos += 1
            sd_id_end = min(i for i in (data.find(b" ", pos), data.find(b"]", pos)) if i >= 0)
            sd_id = data[pos:sd_id_end].decode()
            pos = sd_id_end
            params: dict[str, str] = {}
            while data[pos : pos + 1] == b" ":
                eq = data.index(b'="', pos)
                name = data[pos + 1 : eq].decode()
                pos = eq + 2
                value = bytearray()
                while data[pos : pos + 1] != b'"':
                    if data[pos : pos + 1] == b"\\" and data[pos + 1 : pos + 2] in _ESCAPED:
                        pos += 1
                    value += data[pos : pos + 1]
                    pos += 1
                pos += 1
                params[name] = value.decode()
            assert data[pos : pos + 1] == b"]", data[pos : pos + 20]
            pos += 1
            sd[sd_id] = params
    msg = b""
    if pos < len(data):
        assert data[pos : pos + 1] == b" "
        msg = data[pos + 1 :]
    return Rfc5424(
        pri=int(m["pri"]),
        version=int(m["version"]),
        timestamp=m["ts"].decode(),
        hostname=m["host"].decode(),
        app_name=m["app"].decode(),
        procid=m["procid"].decode(),
        msgid=m["msgid"].decode(),
        sd=sd,
        msg=msg,
    )


# -- TLS material --------------------------------------------------------------------------------


@dataclass
class TlsFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def self_signed(directory: Path, name: str = "localhost") -> TlsFiles:
    """A self-signed server certificate for ``localhost`` and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(cert_path, key_path)


@contextlib.contextmanager
def running(*receivers: Any) -> Iterator[None]:
    """Start the receivers, and stop them whatever happens."""
    started = []
    try:
        for r in receivers:
            r.start()
            started.append(r)
        yield
    finally:
        for r in started:
            r.stop()
