"""Webhook sink against a real HTTP receiver on loopback that goes down and comes back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from monitor.alerts.sinks import Backoff, SpoolingSink
from monitor.alerts.syslog import tls_context
from monitor.alerts.webhook import alert_text, webhook_sink
from tests.test_sinks_support import (
    WebhookReceiver,
    alert,
    check_at_least_once,
    free_port,
    running,
    self_signed,
    seq_of,
    wait_for,
)

FAST = Backoff(base=0.02, cap=0.2)


@pytest.fixture
def receiver() -> WebhookReceiver:
    r = WebhookReceiver()
    with running(r):
        yield r


def test_alerts_arrive_in_order_with_their_id_as_idempotency_key(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    sink = webhook_sink(tmp_path, url=receiver.url, backoff=FAST)
    try:
        for i in range(20):
            sink.send(alert(i))
        assert sink.flush(10)
    finally:
        sink.close()
    assert receiver.seqs == list(range(20))
    assert [h["Idempotency-Key"] for h in receiver.headers] == [f"{i:032x}" for i in range(20)]
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert sink.stats.delivered == 20 and sink.stats.spool_depth == 0


def test_https_receiver_is_verified_against_the_configured_ca(tmp_path: Path) -> None:
    tls = self_signed(tmp_path / "tls")
    receiver = WebhookReceiver(ssl_context=tls.server_context())
    with running(receiver):
        untrusted = webhook_sink(tmp_path / "a", url=receiver.url, backoff=FAST)
        try:
            untrusted.send(alert(0))
            assert wait_for(lambda: untrusted.stats.errors >= 1)
            assert untrusted.stats.delivered == 0
        finally:
            untrusted.close(0)
        sink = webhook_sink(
            tmp_path / "b", url=receiver.url, ssl_context=tls_context(cafile=str(tls.cert))
        )
        try:
            sink.send(alert(1))
            assert sink.flush(10)
        finally:
            sink.close()
    assert receiver.seqs == [1]


def test_receiver_down_and_back_loses_nothing(tmp_path: Path, receiver: WebhookReceiver) -> None:
    sink = webhook_sink(tmp_path, url=receiver.url, backoff=FAST)
    try:
        for i in range(50):
            sink.send(alert(i))
        assert wait_for(lambda: len(receiver.received) >= 10)
        receiver.stop()
        for i in range(50, 150):
            sink.send(alert(i))
        assert wait_for(lambda: sink.stats.errors >= 2)
        assert sink.stats.spool_depth > 0
        time.sleep(0.3)
        receiver.start()  # same port
        for i in range(150, 200):
            sink.send(alert(i))
        assert sink.flush(20)
    finally:
        sink.close()
    check_at_least_once(receiver.seqs, 200, max_duplicates=1)
    assert sink.stats.delivered == 200 and sink.stats.dropped == 0


def test_sending_while_the_receiver_flaps_keeps_order(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    sink = webhook_sink(tmp_path, url=receiver.url, backoff=FAST)
    stop = threading.Event()

    def flap() -> None:
        while not stop.is_set():
            time.sleep(0.05)
            receiver.stop()
            time.sleep(0.1)
            receiver.start()

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
    # An outage can only duplicate the one request in flight when it started.
    check_at_least_once(receiver.seqs, 300, max_duplicates=sink.stats.errors)


def test_5xx_and_429_are_retried_with_exponential_backoff(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.script = [503, 500, (429, {"Retry-After": "0"}), 502]
    delays: list[float] = []
    sink = webhook_sink(
        tmp_path,
        url=receiver.url,
        backoff=Backoff(base=1.0, cap=5.0, rand=lambda: 0.5),
        sleep=delays.append,
    )
    try:
        sink.send(alert(0))
        assert sink.flush(10)
    finally:
        sink.close()
    assert receiver.seqs == [0]
    # equal jitter with rand()=0.5: 3/4 of min(cap, base * 2**attempt)
    assert delays == [0.75, 1.5, 3.0, 3.75]
    assert sink.stats.errors == 4 and sink.stats.delivered == 1


def test_retry_after_is_honoured_up_to_the_cap(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.script = [(503, {"Retry-After": "3"}), (429, {"Retry-After": "3600"})]
    delays: list[float] = []
    sink = webhook_sink(
        tmp_path,
        url=receiver.url,
        backoff=Backoff(base=0.1, cap=10.0, rand=lambda: 0.0),
        sleep=delays.append,
    )
    try:
        sink.send(alert(0))
        assert sink.flush(10)
    finally:
        sink.close()
    assert delays == [3.0, 10.0]


def test_permanent_refusal_goes_to_dead_letter_and_the_queue_moves_on(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.script = [200, 400, 200, 401]
    sink = webhook_sink(tmp_path, url=receiver.url, backoff=FAST)
    try:
        for i in range(6):
            sink.send(alert(i))
        assert sink.flush(10)
    finally:
        sink.close()
    assert receiver.seqs == [0, 2, 4, 5]
    dead = [json.loads(line) for line in (tmp_path / "dead-letter.jsonl").read_text().splitlines()]
    assert [seq_of(d["document"]) for d in dead] == [1, 3]
    assert "HTTP 400" in dead[0]["dead_letter"]["reason"]
    stats = sink.stats
    assert (stats.delivered, stats.dead_lettered, stats.errors) == (4, 2, 2)


def test_a_408_is_retried_not_dead_lettered(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.script = [408]
    sink = webhook_sink(tmp_path, url=receiver.url, backoff=FAST)
    try:
        sink.send(alert(0))
        assert sink.flush(10)
    finally:
        sink.close()
    assert receiver.seqs == [0] and sink.stats.dead_lettered == 0


def test_text_field_for_chat_webhooks(tmp_path: Path, receiver: WebhookReceiver) -> None:
    sink = webhook_sink(tmp_path, url=receiver.url, text=True)
    doc = alert(3)
    doc["source"].update({"domain": "ws01.pd.example", "user": {"name": "alice", "domain": "PD"}})
    try:
        sink.send(doc)
        assert sink.flush(10)
    finally:
        sink.close()
    text = receiver.received[0]["text"]
    assert text == alert_text(doc)
    assert "CRITICAL vendor-access to Clearview AI (app.clearview.ai) via tls-sni" in text
    assert "from 192.0.2.10 ws01.pd.example PD\\alice" in text
    assert receiver.received[0]["event"]["id"] == f"{3:032x}"


def test_a_hanging_receiver_times_out_and_is_retried(tmp_path: Path) -> None:
    import socket

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)  # accepts connections but never answers
    port = lsock.getsockname()[1]
    sink = webhook_sink(tmp_path, url=f"http://127.0.0.1:{port}/", timeout=0.2, backoff=FAST)
    try:
        sink.send(alert(0))
        assert wait_for(lambda: sink.stats.errors >= 1, 5)
        assert sink.stats.spool_depth == 1
    finally:
        sink.close(0)
        lsock.close()


def test_full_spool_refuses_and_counts_dropped(tmp_path: Path) -> None:
    sink = webhook_sink(
        tmp_path, url=f"http://127.0.0.1:{free_port()}/", spool_max_records=5, backoff=FAST
    )
    try:
        for i in range(8):
            sink.send(alert(i))
        assert sink.stats.dropped == 3 and sink.stats.spool_depth == 5
    finally:
        sink.close(0)
    receiver = WebhookReceiver()
    with running(receiver):
        sink = webhook_sink(tmp_path, url=receiver.url)
        try:
            assert sink.flush(10)
        finally:
            sink.close()
    assert receiver.seqs == [0, 1, 2, 3, 4]  # the oldest were kept


CHILD = textwrap.dedent(
    """
    import sys, time
    from monitor.alerts.sinks import Backoff
    from monitor.alerts.webhook import webhook_sink
    from tests.test_sinks_support import alert
    sink = webhook_sink(sys.argv[1], url=sys.argv[2], backoff=Backoff(0.01, 0.05))
    i = 0
    while True:
        sink.send(alert(i))
        print(i, flush=True)
        i += 1
        time.sleep(float(sys.argv[3]))
    """
)


def run_child_until(spool: Path, url: str, pace: float, count: int) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(spool), url, str(pace)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    last = -1
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            last = int(line)
            if last >= count:
                break
        os.kill(proc.pid, signal.SIGKILL)
        for line in proc.stdout:  # what it acknowledged before the kill landed
            last = int(line)
    finally:
        proc.kill()
        proc.wait(10)
    return last


def test_spool_of_a_killed_sensor_is_delivered_after_restart(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"
    last = run_child_until(tmp_path, down, 0.0, 500)
    receiver = WebhookReceiver()
    with running(receiver):
        sink: SpoolingSink = webhook_sink(tmp_path, url=receiver.url)
        try:
            assert sink.flush(30)
        finally:
            sink.close()
    assert receiver.seqs == list(range(len(receiver.seqs)))
    assert len(receiver.seqs) in (last + 1, last + 2)


def test_killed_mid_delivery_then_restarted_duplicates_at_most_one(tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    with running(receiver):
        last = run_child_until(tmp_path, receiver.url, 0.002, 300)
        delivered_before = len(receiver.received)
        assert delivered_before > 0
        sink = webhook_sink(tmp_path, url=receiver.url)
        try:
            assert sink.flush(30)
        finally:
            sink.close()
    sent = max(receiver.seqs) + 1
    assert sent in (last + 1, last + 2)
    check_at_least_once(receiver.seqs, sent, max_duplicates=1)


def test_corrupted_spool_tail_after_a_crash_is_skipped_and_counted(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"
    last = run_child_until(tmp_path, down, 0.0, 100)
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    with open(seg, "ab") as fh:
        fh.write(b"\xa1\xe7\x00\x00\x10\x00garbage")  # a header promising more than is there
    receiver = WebhookReceiver()
    with running(receiver):
        sink = webhook_sink(tmp_path, url=receiver.url)
        try:
            assert sink.stats.corrupt_skipped == 1
            assert sink.flush(30)
        finally:
            sink.close()
    assert receiver.seqs == list(range(len(receiver.seqs)))
    assert len(receiver.seqs) >= last + 1


def test_the_secret_in_a_webhook_path_stays_out_of_names_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/services/T000/B000/s3cr3t-t0ken"
    sink = webhook_sink(tmp_path, url=url, backoff=FAST)
    try:
        sink.send(alert(0))
        assert wait_for(lambda: sink.stats.errors >= 1)
    finally:
        sink.close(0)
    assert sink.name == f"webhook-http://127.0.0.1:{port}"
    assert caplog.messages and not any("s3cr3t" in m for m in caplog.messages)
