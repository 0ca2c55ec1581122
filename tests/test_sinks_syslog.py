"""RFC 5424 formatting, and UDP/TCP/TLS delivery to real receivers on loopback (ours, and
rsyslogd when it is installed) that go down and come back."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.alerts.sinks import Backoff
from monitor.alerts.syslog import (
    BOM,
    SyslogFormat,
    format_rfc5424,
    octet_counted,
    syslog_severity,
    syslog_sink,
    tls_context,
    truncate_utf8,
)
from tests.test_sinks_support import (
    Rfc5424,
    SyslogStreamReceiver,
    SyslogUdpReceiver,
    alert,
    check_at_least_once,
    free_port,
    parse_rfc5424,
    running,
    self_signed,
    wait_for,
)

FAST = Backoff(base=0.02, cap=0.2)
FMT = SyslogFormat(hostname="sensor01.pd.example", procid="4242")
SD_ID = "egressmon@32473"


def seqs(messages: list[bytes]) -> list[int]:
    return [int(json.loads(parse_rfc5424(m).msg)["event"]["id"], 16) for m in messages]


def assert_alert_fields(msg: Rfc5424, doc: dict, fmt: SyslogFormat = FMT) -> None:
    assert msg.version == 1
    assert msg.facility == 16 and msg.severity == 2  # local0, critical
    assert msg.timestamp == doc["@timestamp"]
    assert (msg.hostname, msg.app_name, msg.procid) == (fmt.hostname, "egress-monitor", "4242")
    assert msg.msgid == doc["event"]["action"]
    sd = msg.sd[SD_ID]
    assert sd["event.id"] == doc["event"]["id"]
    assert sd["match.vendor"] == doc["match"]["vendor"]
    assert sd["source.ip"] == doc["source"]["ip"]
    assert json.loads(msg.msg) == doc


# -- formatting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "expected"),
    [(99, 2), (73, 3), (47, 4), (21, 5), (0, 6), (None, 6), ("high", 6), (True, 6)],
)
def test_event_severity_maps_to_syslog_severity(severity: object, expected: int) -> None:
    assert syslog_severity(severity) == expected


def test_message_has_rfc5424_header_structured_data_and_json_msg() -> None:
    doc = alert(12)
    doc["source"]["user"] = {"name": 'ev"il]\\user'}
    raw = format_rfc5424(doc, FMT)
    assert raw.startswith(b"<130>1 2026-01-15T10:00:12.000012Z sensor01.pd.example egress-monitor")
    msg = parse_rfc5424(raw)
    assert_alert_fields(msg, doc)
    assert msg.sd[SD_ID]["source.user.name"] == 'ev"il]\\user'
    assert b'source.user.name="ev\\"il\\]\\\\user"' in raw


def test_missing_values_become_nilvalue() -> None:
    raw = format_rfc5424({"event": {"id": "x"}}, SyslogFormat(hostname="", procid="a b"))
    msg = parse_rfc5424(raw)
    assert (msg.timestamp, msg.hostname, msg.procid, msg.msgid) == ("-", "-", "ab", "-")
    assert msg.pri == 16 * 8 + 6


def test_bom_marks_a_utf8_msg_and_is_off_by_default() -> None:
    doc = alert(1, url={"domain": "bücher.example"})
    plain = parse_rfc5424(format_rfc5424(doc, FMT)).msg
    assert plain.isascii() and json.loads(plain) == doc
    with_bom = parse_rfc5424(format_rfc5424(doc, SyslogFormat(hostname="h", bom=True))).msg
    assert with_bom.startswith(BOM) and json.loads(with_bom[3:].decode()) == doc


@given(st.text(max_size=300), st.text(max_size=40))
def test_structured_data_values_survive_escaping(user: str, domain: str) -> None:
    doc = alert(1)
    doc["source"]["user"] = {"name": user}
    doc["source"]["domain"] = domain
    msg = parse_rfc5424(format_rfc5424(doc, FMT))

    def expect(v: str) -> str:
        return "".join("?" if ord(c) < 32 or ord(c) == 127 else c for c in v[:256])

    assert msg.sd[SD_ID]["source.user.name"] == expect(user)
    assert msg.sd[SD_ID]["source.domain"] == expect(domain)
    assert json.loads(msg.msg) == doc


@given(st.text(min_size=1, max_size=200), st.integers(0, 400))
def test_truncation_never_splits_a_utf8_character(text: str, limit: int) -> None:
    data = text.encode()
    cut = truncate_utf8(data, limit)
    assert len(cut) <= limit and data.startswith(cut)
    cut.decode()  # raises if a sequence was split


def test_octet_counting_frames() -> None:
    assert octet_counted([b"<13>1 a", b"\xc3\xa9"]) == b"7 <13>1 a2 \xc3\xa9"


# -- our receivers ------------------------------------------------------------------------------


def test_udp_one_message_per_datagram(tmp_path: Path) -> None:
    receiver = SyslogUdpReceiver()
    with running(receiver):
        sink = syslog_sink(tmp_path, host="127.0.0.1", port=receiver.port, fmt=FMT, backoff=FAST)
        try:
            docs = [alert(i) for i in range(30)]
            for d in docs:
                sink.send(d)
            assert sink.flush(10)
            assert wait_for(lambda: len(receiver.messages) >= 30)
        finally:
            sink.close()
    assert seqs(receiver.messages) == list(range(30))
    assert_alert_fields(parse_rfc5424(receiver.messages[7]), docs[7])
    assert sink.stats.truncated == 0


def test_udp_messages_over_the_limit_are_truncated_and_counted(tmp_path: Path) -> None:
    receiver = SyslogUdpReceiver()
    with running(receiver):
        sink = syslog_sink(tmp_path, host="127.0.0.1", port=receiver.port, fmt=FMT, max_message=480)
        try:
            sink.send(alert(1))
            sink.send({"event": {"id": "small", "action": "x"}})
            assert sink.flush(10)
            assert wait_for(lambda: len(receiver.messages) == 2)
        finally:
            sink.close()
    big, small = receiver.messages
    assert len(big) == 480 and len(small) < 480
    # The header and structured data come first, so they survive the cut.
    assert parse_rfc5424(big).sd[SD_ID]["event.id"] == f"{1:032x}"
    assert sink.stats.truncated == 1


def test_udp_receiver_down_and_back_is_noticed_and_retried(tmp_path: Path) -> None:
    receiver = SyslogUdpReceiver()
    with running(receiver):
        sink = syslog_sink(
            tmp_path, host="127.0.0.1", port=receiver.port, fmt=FMT, backoff=FAST, max_batch=10
        )
        try:
            for i in range(20):
                sink.send(alert(i))
            assert sink.flush(10)
            receiver.stop()
            for i in range(20, 60):
                sink.send(alert(i))
            assert wait_for(lambda: sink.stats.errors >= 2)  # ICMP port unreachable seen
            receiver.start()
            assert sink.flush(10)
            assert wait_for(lambda: len(set(seqs(receiver.messages))) >= 60)
        finally:
            sink.close()
    check_at_least_once(seqs(receiver.messages), 60, max_duplicates=10 * sink.stats.errors)


def test_tcp_octet_counted_messages_parse_back(tmp_path: Path) -> None:
    receiver = SyslogStreamReceiver()
    with running(receiver):
        sink = syslog_sink(tmp_path, host="127.0.0.1", port=receiver.port, transport="tcp", fmt=FMT)
        try:
            docs = [alert(i) for i in range(50)]
            for d in docs:
                sink.send(d)
            assert sink.flush(10)
        finally:
            sink.close()
    assert seqs(receiver.messages) == list(range(50))
    for m, d in zip(receiver.messages, docs, strict=True):
        assert_alert_fields(parse_rfc5424(m), d)
    assert receiver.connections == 1


def test_tcp_receiver_down_and_back_loses_nothing(tmp_path: Path) -> None:
    receiver = SyslogStreamReceiver()
    with running(receiver):
        sink = syslog_sink(
            tmp_path,
            host="127.0.0.1",
            port=receiver.port,
            transport="tcp",
            fmt=FMT,
            backoff=FAST,
            max_batch=10,
            settle=0.05,
        )
        try:
            for i in range(50):
                sink.send(alert(i))
            assert sink.flush(10)
            receiver.stop()
            for i in range(50, 150):
                sink.send(alert(i))
            assert wait_for(lambda: sink.stats.errors >= 2)
            receiver.start()
            for i in range(150, 200):
                sink.send(alert(i))
            assert sink.flush(20)
        finally:
            sink.close()
    # An outage can resend the batch (max_batch=10) that was in flight when it started.
    check_at_least_once(seqs(receiver.messages), 200, max_duplicates=10 * sink.stats.errors)
    assert sink.stats.delivered == 200


def test_tcp_receiver_flapping_while_sending_keeps_order(tmp_path: Path) -> None:
    receiver = SyslogStreamReceiver()
    stop = threading.Event()

    def flap() -> None:
        while not stop.is_set():
            time.sleep(0.07)
            receiver.stop()
            time.sleep(0.1)
            receiver.start()

    with running(receiver):
        sink = syslog_sink(
            tmp_path,
            host="127.0.0.1",
            port=receiver.port,
            transport="tcp",
            fmt=FMT,
            backoff=FAST,
            max_batch=10,
            settle=0.05,
        )
        t = threading.Thread(target=flap)
        t.start()
        try:
            for i in range(300):
                sink.send(alert(i))
                time.sleep(0.002)
        finally:
            stop.set()
            t.join()
        try:
            assert sink.flush(30)
        finally:
            sink.close()
    assert receiver.connections > 1
    check_at_least_once(seqs(receiver.messages), 300, max_duplicates=10 * sink.stats.errors)


@pytest.fixture
def tls_files(tmp_path: Path):  # type: ignore[no-untyped-def]
    return self_signed(tmp_path / "tls")


def test_tls_delivers_to_a_verified_receiver(tmp_path: Path, tls_files) -> None:  # type: ignore[no-untyped-def]
    receiver = SyslogStreamReceiver(tls_files.server_context())
    with running(receiver):
        sink = syslog_sink(
            tmp_path / "spool",
            host="127.0.0.1",
            port=receiver.port,
            transport="tls",
            fmt=FMT,
            ssl_context=tls_context(cafile=str(tls_files.cert)),
        )
        try:
            docs = [alert(i) for i in range(40)]
            for d in docs:
                sink.send(d)
            assert sink.flush(10)
        finally:
            sink.close()
    assert seqs(receiver.messages) == list(range(40))
    assert_alert_fields(parse_rfc5424(receiver.messages[-1]), docs[-1])


def test_tls_with_an_untrusted_certificate_delivers_nothing_and_keeps_the_spool(
    tmp_path: Path,
    tls_files,  # type: ignore[no-untyped-def]
) -> None:
    other_ca = self_signed(tmp_path / "other")
    receiver = SyslogStreamReceiver(tls_files.server_context())
    with running(receiver):
        sink = syslog_sink(
            tmp_path / "spool",
            host="127.0.0.1",
            port=receiver.port,
            transport="tls",
            ssl_context=tls_context(cafile=str(other_ca.cert)),
            backoff=FAST,
        )
        try:
            sink.send(alert(0))
            assert wait_for(lambda: sink.stats.errors >= 2)
            assert sink.stats.spool_depth == 1 and receiver.messages == []
        finally:
            sink.close(0)
        sink = syslog_sink(
            tmp_path / "spool",
            host="127.0.0.1",
            port=receiver.port,
            transport="tls",
            ssl_context=tls_context(cafile=str(tls_files.cert)),
        )
        try:
            assert sink.flush(10)  # fixed configuration: the spooled alert goes out
        finally:
            sink.close()
    assert seqs(receiver.messages) == [0]


def test_tls_receiver_down_and_back_loses_nothing(tmp_path: Path, tls_files) -> None:  # type: ignore[no-untyped-def]
    receiver = SyslogStreamReceiver(tls_files.server_context())
    with running(receiver):
        sink = syslog_sink(
            tmp_path / "spool",
            host="127.0.0.1",
            port=receiver.port,
            transport="tls",
            fmt=FMT,
            ssl_context=tls_context(cafile=str(tls_files.cert)),
            backoff=FAST,
            max_batch=10,
            settle=0.05,
        )
        try:
            for i in range(30):
                sink.send(alert(i))
            assert sink.flush(10)
            receiver.stop()
            for i in range(30, 80):
                sink.send(alert(i))
            assert wait_for(lambda: sink.stats.errors >= 2)
            receiver.start()
            assert sink.flush(20)
        finally:
            sink.close()
    check_at_least_once(seqs(receiver.messages), 80, max_duplicates=10 * sink.stats.errors)


# -- rsyslogd, a third-party receiver ------------------------------------------------------------


RSYSLOG_CONF = """
global(workDirectory="{work}"
       defaultNetstreamDriverCAFile="{cert}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
module(load="imudp")
input(type="imtcp" port="{tcp}" address="127.0.0.1" name="tcp")
{tls_input}
input(type="imudp" port="{udp}" address="127.0.0.1" name="udp")
template(name="fields" type="list") {{
  property(name="inputname") constant(value="|")
  property(name="pri") constant(value="|")
  property(name="timereported" dateFormat="rfc3339") constant(value="|")
  property(name="hostname") constant(value="|")
  property(name="app-name") constant(value="|")
  property(name="procid") constant(value="|")
  property(name="msgid") constant(value="|")
  property(name="structured-data") constant(value="|")
  property(name="msg") constant(value="\\n")
}}
action(type="omfile" file="{out}" template="fields")
"""


TLS_INPUT = """input(type="imtcp" port="{port}" address="127.0.0.1" name="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")"""


def rsyslog_has_gnutls() -> bool:
    return (
        any(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"))
        or Path("/usr/lib/rsyslog/lmnsd_gtls.so").exists()
    )


@dataclass
class Rsyslog:
    tcp: int
    udp: int
    tls: int
    out: Path
    cert: Path

    def lines(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        return [line.split("|", 8) for line in self.out.read_text().splitlines()]


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    exe = shutil.which("rsyslogd") or (
        "/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None
    )
    if exe is None:
        pytest.skip("rsyslogd not installed (apt-get install rsyslog rsyslog-gnutls)")
    tls = self_signed(tmp_path / "rsyslog-tls")
    work = tmp_path / "rsyslog"
    work.mkdir()
    rs = Rsyslog(free_port(), free_port(socket.SOCK_DGRAM), free_port(), work / "out.log", tls.cert)
    conf = work / "rsyslog.conf"
    conf.write_text(
        RSYSLOG_CONF.format(
            work=work,
            cert=tls.cert,
            key=tls.key,
            tcp=rs.tcp,
            udp=rs.udp,
            out=rs.out,
            tls_input=TLS_INPUT.format(port=rs.tls) if rsyslog_has_gnutls() else "",
        )
    )
    log = open(work / "rsyslogd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [exe, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")], stdout=log, stderr=log
    )
    try:

        def listening() -> bool:
            for port in (rs.tcp, rs.tls) if rsyslog_has_gnutls() else (rs.tcp,):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                except OSError:
                    return False
            return True

        if not wait_for(listening, 10):
            pytest.fail(f"rsyslogd did not start: {(work / 'rsyslogd.log').read_text()}")
        yield rs
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_rsyslogd_parses_our_messages(tmp_path: Path, rsyslog: Rsyslog, transport: str) -> None:
    if transport == "tls" and not rsyslog_has_gnutls():
        pytest.skip("rsyslog's TLS driver not installed (apt-get install rsyslog-gnutls)")
    port = {"udp": rsyslog.udp, "tcp": rsyslog.tcp, "tls": rsyslog.tls}[transport]
    sink = syslog_sink(
        tmp_path / "spool",
        host="127.0.0.1",
        port=port,
        transport=transport,  # type: ignore[arg-type]
        fmt=FMT,
        ssl_context=tls_context(cafile=str(rsyslog.cert)) if transport == "tls" else None,
    )
    docs = [alert(i) for i in range(25)]
    docs[3]["source"]["user"] = {"name": 'o"dd]\\name'}
    try:
        for d in docs:
            sink.send(d)
        assert sink.flush(10)
    finally:
        sink.close()
    assert wait_for(lambda: len(rsyslog.lines()) >= 25, 10)
    lines = rsyslog.lines()
    assert [json.loads(line[8])["event"]["id"] for line in lines] == [
        d["event"]["id"] for d in docs
    ]
    for line, doc in zip(lines, docs, strict=True):
        inputname, pri, ts, host, app, procid, msgid, sd, msg = line
        assert inputname == transport  # the input that received it (config names them)
        assert pri == "130"
        assert datetime.fromisoformat(ts) == datetime.fromisoformat(doc["@timestamp"])
        assert (host, app, procid, msgid) == (
            FMT.hostname,
            "egress-monitor",
            "4242",
            "vendor-access",
        )
        assert (
            parse_rfc5424(f"<1>1 - - - - - {sd}".encode()).sd[SD_ID]["event.id"]
            == (doc["event"]["id"])
        )
        assert json.loads(msg) == doc
    assert 'source.user.name="o\\"dd\\]\\\\name"' in lines[3][7]
