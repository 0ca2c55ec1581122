"""The /metrics endpoint: loopback by default, basic auth against a stored hash, TLS, bounded
connections, and a handshake or a slow client that cannot stall other scrapes."""

from __future__ import annotations

import base64
import datetime
import gzip
import http.client
import ipaddress
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from monitor.metrics import (
    DEFAULT_PORT,
    MetricsServer,
    MetricsSnapshot,
    PasswordHash,
    PasswordHashError,
    hash_password,
    serve_metrics,
)
from monitor.metrics.server import tls_context

SNAP = MetricsSnapshot(start_time=1_767_225_600.0, matches={("pimeyes", "dns", "high"): 2})


def provider() -> MetricsSnapshot:
    return SNAP


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = serve_metrics(provider, port=0)
    try:
        yield srv
    finally:
        srv.close()


def get(
    srv: MetricsServer,
    path: str = "/metrics",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    if context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            srv.host, srv.port, timeout=10, context=context
        )
    else:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# -- plain HTTP ------------------------------------------------------------------------------------


def test_default_port_is_outside_the_prometheus_exporter_allocations() -> None:
    # Core components 9090-9094, exporters 9100-9999 (full), and the wiki's list of exporters
    # outside the standard range.
    outside = {3903, 7300, 8080, 8082, 8088, 8089, 8292, 8404, 9042, 9087, 9095, 9097, 9099}
    outside |= {16995, 19091, 19999, 24231, 42004, 44322, 61091}
    assert not 9090 <= DEFAULT_PORT <= 9999
    assert DEFAULT_PORT not in outside
    assert 1024 < DEFAULT_PORT < 32768  # unprivileged, below the Linux ephemeral range


def test_serves_metrics_on_loopback_by_default(server: MetricsServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    status, headers, body = get(server)
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert (
        'egress_monitor_matches_total{protocol="dns",severity="high",vendor="pimeyes"} 2.0' in text
    )
    assert "process_resident_memory_bytes" in text  # the process collector rides along


def test_negotiates_openmetrics_and_gzip_like_prometheus_asks(server: MetricsServer) -> None:
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    status, headers, body = get(server, headers={"Accept": accept, "Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert headers["content-encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE egress_monitor_build info" in text


def test_unknown_paths_are_404_and_the_index_points_to_metrics(server: MetricsServer) -> None:
    assert get(server, "/nope")[0] == 404
    status, _, body = get(server, "/")
    assert status == 200 and b"/metrics" in body
    assert get(server, "/metrics?x=1")[0] == 200


def test_server_header_does_not_disclose_the_python_version(server: MetricsServer) -> None:
    _, headers, _ = get(server)
    assert "python" not in headers.get("server", "").lower()


def test_a_failing_provider_gives_500_and_the_server_keeps_serving() -> None:
    calls = [0]

    def flaky() -> MetricsSnapshot:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("daemon not ready")
        return SNAP

    with serve_metrics(flaky, port=0, process_metrics=False) as srv:
        assert get(srv)[0] == 500
        assert get(srv)[0] == 200


def test_close_releases_the_port() -> None:
    srv = serve_metrics(provider, port=0)
    port = srv.port
    srv.close()
    srv.close()  # idempotent
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_an_address_in_use_fails_at_start() -> None:
    with serve_metrics(provider, port=0) as srv, pytest.raises(OSError):
        serve_metrics(provider, port=srv.port)


def test_serves_on_ipv6_loopback() -> None:
    try:
        srv = serve_metrics(provider, host="::1", port=0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with srv:
        assert srv.url == f"http://[::1]:{srv.port}/metrics"
        assert get(srv)[0] == 200


def test_connections_over_the_limit_are_closed_not_queued() -> None:
    with serve_metrics(provider, port=0, max_connections=2, timeout_s=3) as srv:
        idle = [socket.create_connection((srv.host, srv.port)) for _ in range(2)]
        try:
            time.sleep(0.3)
            with socket.create_connection((srv.host, srv.port), timeout=5) as extra:
                try:
                    extra.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                    answer = extra.recv(100)
                except (ConnectionResetError, BrokenPipeError):
                    answer = b""
                assert answer == b""  # closed without an answer
        finally:
            for s in idle:
                s.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the slots come back
            try:
                if get(srv)[0] == 200:
                    break
            except (ConnectionError, http.client.HTTPException):
                time.sleep(0.1)
        else:
            pytest.fail("server did not recover after idle connections closed")


# -- basic auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["scrypt", "sha256"])
def test_basic_auth_accepts_only_the_right_user_and_password(scheme: str) -> None:
    import hashlib

    stored = (
        hash_password("s3cret-pass", n=1 << 10)
        if scheme == "scrypt"
        else "sha256$" + hashlib.sha256(b"s3cret-pass").hexdigest()
    )
    with serve_metrics(provider, port=0, basic_auth=("prometheus", stored)) as srv:
        status, headers, _ = get(srv)
        assert status == 401
        assert headers["www-authenticate"].startswith('Basic realm="egress-monitor"')
        assert get(srv, headers=basic("prometheus", "wrong"))[0] == 401
        assert get(srv, headers=basic("someone", "s3cret-pass"))[0] == 401
        assert get(srv, headers={"Authorization": "Basic !!!notbase64"})[0] == 401
        assert get(srv, headers={"Authorization": "Bearer abc"})[0] == 401
        assert get(srv, "/", headers=basic("prometheus", "wrong"))[0] == 401
        for _ in range(2):  # the second time comes from the cache of the accepted header
            assert get(srv, headers=basic("prometheus", "s3cret-pass"))[0] == 200
        assert get(srv, headers=basic("prometheus", "s3cret-pass2"))[0] == 401


def test_password_hashes_round_trip_and_reject_other_passwords() -> None:
    stored = hash_password("correct horse", n=1 << 10)
    assert stored.startswith("scrypt$1024$8$1$")
    ph = PasswordHash.parse(stored)
    assert ph.verify("correct horse")
    assert not ph.verify("correct horse ")
    assert hash_password("correct horse", n=1 << 10) != stored  # salted


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain-password",
        "sha256$xyz",
        "sha256$abcd",
        "scrypt$1000$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # N not a power of two
        "scrypt$4194304$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # too costly
        "scrypt$1024$8$1$c2E$aGFzaGhhc2hoYXNoaGFzaA",  # salt too short
        "scrypt$a$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        "$2b$12$abcdefghijklmnopqrstuu5e1sYEhPcdj9.2J0TpbkQwEkZSGyzlu",  # bcrypt: not supported
    ],
)
def test_unreadable_hashes_fail_at_start_not_at_scrape_time(stored: str) -> None:
    with pytest.raises(PasswordHashError):
        PasswordHash.parse(stored)
    with pytest.raises(ValueError):
        serve_metrics(provider, port=0, basic_auth=("prometheus", stored))


def test_user_names_with_a_colon_are_refused() -> None:
    with pytest.raises(ValueError):
        serve_metrics(provider, port=0, basic_auth=("a:b", hash_password("x", n=1 << 10)))


def test_hash_password_command_reads_stdin_and_prints_a_usable_hash() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "monitor.metrics", "hash-password"],
        input="from-stdin\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert PasswordHash.parse(res.stdout.strip()).verify("from-stdin")
    assert "from-stdin" not in res.stdout


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress-monitor test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def client_context(cert: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    return ctx


def test_tls_serves_with_the_given_certificate_and_auth(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    stored = hash_password("pw", n=1 << 10)
    with serve_metrics(
        provider, port=0, tls_cert=cert, tls_key=key, basic_auth=("prom", stored)
    ) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        ctx = client_context(cert)
        assert get(srv, context=ctx)[0] == 401
        status, _, body = get(srv, headers=basic("prom", "pw"), context=ctx)
        assert status == 200 and b"egress_monitor_matches_total" in body
        # plain HTTP to the TLS port gets no metrics
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            get(srv)


def test_a_client_that_never_finishes_the_handshake_does_not_block_others(
    tls_files: tuple[Path, Path],
) -> None:
    cert, key = tls_files
    with serve_metrics(provider, port=0, tls_cert=cert, tls_key=key, timeout_s=30) as srv:
        stalled = socket.create_connection((srv.host, srv.port))
        try:
            t0 = time.monotonic()
            assert get(srv, context=client_context(cert))[0] == 200
            assert time.monotonic() - t0 < 5
        finally:
            stalled.close()


def test_tls_options_are_checked_before_anything_starts(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    assert tls_context(cert, key).minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError):
        serve_metrics(provider, port=0, tls_key=key)
    with pytest.raises((ssl.SSLError, OSError)):
        serve_metrics(provider, port=0, tls_cert=key, tls_key=cert)
