"""JSON lines file sink (whole lines only, atomic size rotation), stdout, fan-out, config."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.alerts.outputs import SinkConfigError, open_sinks
from monitor.alerts.sinks import FanOutSink, JsonLinesFileSink, SinkStats, StdoutSink, ensure_id
from tests.test_sinks_support import alert


def files_oldest_first(path: Path) -> list[Path]:
    rotated = sorted(
        path.parent.glob(path.name + ".*"), key=lambda p: int(p.name.rsplit(".", 1)[1])
    )
    return [*reversed(rotated), path]


def all_lines(path: Path) -> list[dict]:
    out = []
    for f in files_oldest_first(path):
        data = f.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{f.name} ends in a partial line"
        out += [json.loads(line) for line in data.splitlines()]
    return out


def test_each_alert_is_one_json_line(tmp_path: Path) -> None:
    sink = JsonLinesFileSink(tmp_path / "events.jsonl")
    sink.send(alert(1))
    sink.send(alert(2, url={"domain": "line\nbreak\u2028.example"}))
    sink.close()
    lines = (tmp_path / "events.jsonl").read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[-1] == b""
    assert json.loads(lines[1])["url"]["domain"] == "line\nbreak\u2028.example"
    assert sink.stats.delivered == 2


def test_rotation_keeps_n_files_newest_unsuffixed(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonLinesFileSink(path, max_bytes=3000, keep=3)
    for i in range(40):
        sink.send(alert(i))
    sink.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    seqs = [int(d["event"]["id"], 16) for d in all_lines(path)]
    assert seqs == list(range(40 - len(seqs), 40))  # the newest, contiguous, in order


def test_partial_last_line_left_by_a_crash_is_removed_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    sink = JsonLinesFileSink(path)
    assert sink.stats.partial_lines_truncated == 1
    sink.send({"d": 4})
    sink.close()
    assert [list(d) for d in all_lines(path)] == [["a"], ["b"], ["d", "event"]]


def test_file_with_only_a_partial_line_becomes_empty(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"half":' * 20000)
    sink = JsonLinesFileSink(path)
    assert sink.stats.partial_lines_truncated == 1
    assert path.stat().st_size == 0
    sink.close()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=60),
    batch=st.integers(1, 7),
    max_bytes=st.integers(50, 6000),
    keep=st.integers(0, 4),
)
def test_rotation_never_produces_a_partial_line(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    batch: int,
    max_bytes: int,
    keep: int,
) -> None:
    path = tmp_path_factory.mktemp("rot") / "events.jsonl"
    sink = JsonLinesFileSink(path, max_bytes=max_bytes, keep=keep, fsync="never")
    docs = [{"n": i, "pad": "é" * size} for i, size in enumerate(sizes)]
    for start in range(0, len(docs), batch):
        assert sink.write_many(docs[start : start + batch])
    sink.close()
    files = files_oldest_first(path)
    assert len(files) <= keep + 1
    for f in files:
        data = f.read_bytes()
        assert data == b"" or data.endswith(b"\n")
        # A file only exceeds the threshold when it holds a single over-sized line.
        assert len(data) <= max_bytes or data.count(b"\n") == 1
    got = [d["n"] for d in all_lines(path)]
    assert got == list(range(len(docs)))[len(docs) - len(got) :]
    if keep >= len(docs):
        assert got == list(range(len(docs)))


WRITER = textwrap.dedent(
    """
    import sys
    from monitor.alerts.sinks import JsonLinesFileSink
    sink = JsonLinesFileSink(sys.argv[1], max_bytes=20000, keep=1000, fsync="never")
    i = 0
    while True:
        sink.write_many([{"n": i + k, "pad": "x" * ((i * 37) % 900)} for k in range(3)])
        i += 3
        print(i, flush=True)
    """
)


def test_killed_writer_leaves_complete_lines_in_every_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if int(line) >= 3000:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    got = [d["n"] for d in all_lines(path)]
    assert got == list(range(len(got))) and len(got) >= 3000


def test_stdout_sink_writes_json_lines() -> None:
    out = io.StringIO()
    sink = StdoutSink(out)
    sink.send(alert(5))
    sink.send({"no": "id"})
    lines = out.getvalue().splitlines()
    assert json.loads(lines[0])["event"]["id"] == f"{5:032x}"
    assert len(json.loads(lines[1])["event"]["id"]) == 32
    assert sink.stats == SinkStats(delivered=2)


def test_stdout_sink_counts_a_closed_stream_as_dropped() -> None:
    out = io.StringIO()
    out.close()
    sink = StdoutSink(out)
    sink.send(alert(1))
    assert sink.stats.dropped == 1 and sink.stats.errors == 1


def test_missing_id_is_assigned_once_and_shared_by_all_sinks(tmp_path: Path) -> None:
    a, b = io.StringIO(), io.StringIO()
    fan = FanOutSink([StdoutSink(a, name="a"), StdoutSink(b, name="b")])
    doc = {"@timestamp": "2026-01-15T10:00:00.000000Z", "event": {"action": "vendor-access"}}
    fan.send(doc)
    assert json.loads(a.getvalue()) == json.loads(b.getvalue())
    assert json.loads(a.getvalue())["event"]["id"] == doc["event"]["id"]
    assert ensure_id(doc) == doc["event"]["id"]  # stable once assigned
    assert fan.stats.delivered == 2
    assert set(fan.stats_by_sink()) == {"a", "b"}


def test_an_existing_id_is_never_replaced() -> None:
    doc = alert(7)
    assert ensure_id(doc) == f"{7:032x}"


def test_sinks_are_built_from_config(tmp_path: Path) -> None:
    fan = open_sinks(
        [
            {"type": "file", "path": str(tmp_path / "out" / "events.jsonl"), "keep": 2},
            {"type": "stdout"},
            {"type": "webhook", "name": "soar", "url": "http://127.0.0.1:9/hook", "text": True},
            {
                "type": "syslog",
                "host": "127.0.0.1",
                "port": 9,
                "transport": "tcp",
                "facility": "audit",
                "spool": {"max_records": 10},
            },
        ],
        tmp_path / "spool",
    )
    try:
        assert [s.name for s in fan.sinks][1:] == ["stdout", "soar", "syslog-tcp-127.0.0.1"]
        assert (tmp_path / "spool" / "soar").is_dir()
        assert (tmp_path / "spool" / "syslog-tcp-127.0.0.1").is_dir()
    finally:
        fan.close(0)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "carrier-pigeon"},
        {"type": "file"},
        {"type": "file", "path": "x", "rotate": 3},
        {"type": "webhook", "url": "ftp://example/"},
        {"type": "syslog", "host": "h", "transport": "sctp"},
        {"type": "syslog", "host": "h", "spool": {"max_records": 1, "evict": "oldest"}},
    ],
)
def test_bad_sink_config_is_refused_at_start(tmp_path: Path, spec: dict) -> None:
    with pytest.raises((SinkConfigError, ValueError)):
        open_sinks([spec], tmp_path)
