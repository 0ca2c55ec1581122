"""Evidence recorder: bounded memory, atomic pcapng files, caps and rate limits, crash safety."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.alerts import evidence as evidence_mod
from monitor.alerts.evidence import (
    EvidenceRecorder,
    attach_evidence,
    encode_pcapng,
)
from monitor.capture.pcapfile import ReaderStats, read_frames

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
ETHERNET, RAW = 1, 101
S = 1_000_000_000
T0 = 1_768_471_200 * S  # 2026-01-15T10:00:00Z


def frame(n: int, size: int = 60) -> bytes:
    return n.to_bytes(4, "big") + bytes((n + i) & 0xFF for i in range(size - 4))


def alert(event_id: str = "a" * 32, flow: str = "1:flowA", **alert_fields: Any) -> dict[str, Any]:
    return {
        "@timestamp": "2026-01-15T10:00:00.000000Z",
        "event": {"kind": "alert", "id": event_id},
        "network": {"community_id": flow},
        "alert": {
            "status": "open",
            "subject": {"type": "user", "id": "alice"},
            "vendor": "clearview-ai",
            **alert_fields,
        },
    }


def read_back(path: Path) -> tuple[list[tuple[int, int, bytes, int]], ReaderStats]:
    stats = ReaderStats()
    with path.open("rb") as fh:
        frames = list(read_frames(fh, stats))
    return frames, stats


def tshark(*args: str) -> str:
    assert TSHARK is not None
    return subprocess.run(
        [TSHARK, *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


# -- the file --------------------------------------------------------------------------------


def test_file_holds_the_flows_packets_in_time_order_with_nanoseconds(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path, max_bytes=1 << 20)
    rec.remember(T0 + 5, ETHERNET, frame(1), "1:flowA", orig_len=1514)
    rec.remember(T0 + 3, RAW, frame(2), "1:flowB")
    rec.remember(T0 + 9, ETHERNET, frame(3), "1:flowA")
    rec.remember(T0 + 7, ETHERNET, frame(4), "1:other")
    ev = rec.write_for(alert(), ["1:flowA", "1:flowB"])
    assert ev is not None
    assert ev.path == tmp_path / ("a" * 32 + ".pcapng")
    frames, stats = read_back(ev.path)
    assert frames == [
        (T0 + 3, RAW, frame(2), 60),
        (T0 + 5, ETHERNET, frame(1), 1514),
        (T0 + 9, ETHERNET, frame(3), 60),
    ]
    assert stats.link_types == {ETHERNET, RAW}
    assert not stats.truncated_tail and stats.skipped_blocks == 0
    assert ev.packets == 3
    assert ev.sha256 == hashlib.sha256(ev.path.read_bytes()).hexdigest()
    assert ev.bytes == ev.path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == [ev.path.name]  # no temporaries


def test_default_flow_is_the_documents_community_id(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path)
    rec.remember(T0, ETHERNET, frame(1), "1:flowA")
    ev = rec.write_for(alert(flow="1:flowA"))
    assert ev is not None and ev.packets == 1


@needs_tshark
def test_tshark_reads_the_file_with_comments_and_the_application_name(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path)
    # A real Ethernet/IPv4/UDP frame, so tshark has something to dissect.
    eth = bytes.fromhex("020000000001020000000002") + b"\x08\x00"
    payload = b"hello"
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     bytes([192, 0, 2, 10]), bytes([198, 51, 100, 3]))  # fmt: skip
    for i in range(3):
        rec.remember(T0 + i * 1001, ETHERNET, eth + ip + udp, "1:flowA")
    rec.remember(T0 + 5000, RAW, ip + udp, "1:flowA")
    ev = rec.write_for(alert("b" * 32))
    assert ev is not None
    out = tshark("-r", str(ev.path), "-T", "fields", "-e", "frame.time_epoch", "-e",
                 "frame.comment", "-e", "udp.dstport")  # fmt: skip
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 4
    assert rows[1][0].endswith(".000001001")  # nanosecond resolution kept
    for _, comment, port in rows:
        assert comment == f"egress-monitor: alert {'b' * 32}, flow 1:flowA"
        assert port == "53"
    info = subprocess.run(["capinfos", str(ev.path)], capture_output=True, text=True).stdout
    assert "egress-monitor" in info
    assert "Number of interfaces in file: 2" in info


def test_attach_evidence_puts_path_and_hash_in_the_alert(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path)
    rec.remember(T0, ETHERNET, frame(1), "1:flowA")
    doc = alert(related={"ip": ["192.0.2.1"]})
    doc["related"] = {"ip": ["192.0.2.1"]}
    ev = rec.write_for(doc)
    assert ev is not None
    out = attach_evidence(doc, ev)
    assert out["alert"]["evidence"] == {
        "path": str(ev.path),
        "sha256": ev.sha256,
        "packets": 1,
        "bytes": ev.bytes,
        "format": "pcapng",
    }
    assert out["related"] == {"ip": ["192.0.2.1"], "hash": [ev.sha256]}
    assert "evidence" not in doc["alert"]  # the input is not modified
    event_doc = {"event": {"kind": "event", "id": "e1"}}
    assert attach_evidence(event_doc, ev)["evidence"]["sha256"] == ev.sha256


def test_updates_of_one_alert_share_its_file_even_after_a_restart(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path)
    rec.remember(T0, ETHERNET, frame(1), "1:flowA")
    first = rec.write_for(alert())
    rec.remember(T0 + 1, ETHERNET, frame(2), "1:flowA")
    again = rec.write_for(alert(status="closed"))
    assert again == first
    assert rec.stats.files_written == 1 and rec.stats.files_reused == 1
    assert first is not None
    restarted = EvidenceRecorder(tmp_path)
    assert restarted.write_for(alert()) == first
    assert restarted.disk_bytes == first.bytes


def test_event_ids_that_are_not_safe_file_names_are_hashed(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path / "ev")
    rec.remember(T0, ETHERNET, frame(1), "1:flowA")
    ev = rec.write_for(alert("../../etc/passwd"))
    assert ev is not None
    assert ev.path.parent == tmp_path / "ev"
    assert ev.path.name.startswith("id-") and ev.path.name.endswith(".pcapng")
    with pytest.raises(ValueError, match=r"event\.id"):
        rec.write_for({"event": {"kind": "alert"}})


def test_nothing_is_written_without_packets(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path)
    assert rec.write_for(alert(flow="1:unknown")) is None
    assert rec.stats.no_packets == 1
    assert list(tmp_path.iterdir()) == []


# -- memory bounds ---------------------------------------------------------------------------


def test_a_flow_keeps_its_first_packets_and_a_ring_of_its_latest(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path, per_flow_packets=8)
    for n in range(100):
        rec.remember(T0 + n, ETHERNET, frame(n), "1:flowA")
    kept = [int.from_bytes(p[2][:4], "big") for p in rec.packets_of("1:flowA")]
    assert kept == [0, 1, 2, 3, 96, 97, 98, 99]
    assert rec.stats.packets_overwritten == 92
    assert rec.stats.memory_bytes == sum(60 + evidence_mod._PACKET_OVERHEAD for _ in kept)


def test_memory_budget_evicts_least_recently_used_flows_and_counts(tmp_path: Path) -> None:
    cost = 1000 + evidence_mod._PACKET_OVERHEAD
    rec = EvidenceRecorder(tmp_path, max_memory_bytes=cost * 3)
    for name in ("a", "b", "c"):
        rec.remember(T0, ETHERNET, frame(1, 1000), f"1:{name}")
    rec.remember(T0 + 1, ETHERNET, frame(2, 1000), "1:a")  # a is now the most recent
    assert rec.packets_of("1:b") == []  # b was least recently used
    assert rec.stats.flows_evicted == 1
    assert rec.stats.memory_bytes <= cost * 3
    rec.remember(T0, ETHERNET, frame(3, 10_000), "1:huge")  # bigger than the budget
    assert rec.stats.packets_refused == 1


def test_flow_count_bound_evicts_the_oldest_flow(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path, max_flows=2)
    for i in range(5):
        rec.remember(T0 + i, ETHERNET, frame(i), f"1:{i}")
    assert rec.stats.flows == 2
    assert rec.stats.flows_evicted == 3
    assert rec.packets_of("1:4") and rec.packets_of("1:3") and not rec.packets_of("1:2")


def test_idle_flows_are_forgotten_after_ring_seconds(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path, ring_seconds=10)
    rec.remember(T0, ETHERNET, frame(1), "1:old")
    rec.remember(T0 + 5 * S, ETHERNET, frame(2), "1:recent")
    rec.remember(T0 + 11 * S, ETHERNET, frame(3), "1:new")
    assert rec.packets_of("1:old") == []
    assert rec.packets_of("1:recent")
    assert rec.stats.flows_expired == 1
    assert rec.write_for(alert(flow="1:old")) is None


def test_forget_drops_a_flow_at_once(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path)
    rec.remember(T0, ETHERNET, frame(1), "1:benign")
    assert rec.forget("1:benign")
    assert not rec.forget("1:benign")
    assert rec.stats.memory_bytes == 0 and rec.stats.flows_forgotten == 1


# -- disk bounds -----------------------------------------------------------------------------


def test_directory_cap_deletes_the_oldest_files_and_counts(tmp_path: Path) -> None:
    one = len(encode_pcapng("x" * 32, [(T0, ETHERNET, frame(0, 1000), 1000, "1:f0")]))
    rec = EvidenceRecorder(tmp_path, max_bytes=one * 3)
    written = []
    for i in range(5):
        rec.remember(T0 + i * S, ETHERNET, frame(i, 1000), f"1:f{i}")
        ev = rec.write_for(alert(f"{i:032x}", flow=f"1:f{i}"))
        assert ev is not None
        written.append(ev.path.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written[2:])
    assert rec.stats.files_deleted == 2
    assert rec.stats.bytes_deleted == 2 * one
    assert rec.disk_bytes == 3 * one


def test_files_already_in_the_directory_count_towards_the_cap(tmp_path: Path) -> None:
    one = len(encode_pcapng("x" * 32, [(T0, ETHERNET, frame(0, 1000), 1000, "1:f0")]))
    (tmp_path / ("0" * 32 + ".pcapng")).write_bytes(b"\0" * one)
    (tmp_path / "unrelated.txt").write_bytes(b"\0" * one * 10)  # not ours: never touched
    rec = EvidenceRecorder(tmp_path, max_bytes=one * 2)
    assert rec.disk_bytes == one
    for i in range(1, 3):
        rec.remember(T0 + i, ETHERNET, frame(i, 1000), f"1:f{i}")
        rec.write_for(alert(f"{i:032x}", flow=f"1:f{i}"))
    assert not (tmp_path / ("0" * 32 + ".pcapng")).exists()
    assert (tmp_path / "unrelated.txt").exists()


def test_a_file_larger_than_the_cap_is_not_written(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path, max_bytes=500)
    rec.remember(T0, ETHERNET, frame(1, 1000), "1:flowA")
    assert rec.write_for(alert()) is None
    assert rec.stats.too_large == 1


def test_no_more_than_n_files_per_minute_of_packet_time(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path, max_files_per_minute=3)
    results = []
    for i in range(5):
        rec.remember(T0 + i * S, ETHERNET, frame(i), f"1:f{i}")
        results.append(rec.write_for(alert(f"{i:032x}", flow=f"1:f{i}")))
    assert [r is not None for r in results] == [True, True, True, False, False]
    assert rec.stats.files_rate_limited == 2
    rec.remember(T0 + 61 * S, ETHERNET, frame(9), "1:later")
    assert rec.write_for(alert("f" * 32, flow="1:later")) is not None


# -- holding alerts so answers make it in ------------------------------------------------------


def test_deferred_alert_gets_the_packets_that_arrive_while_it_settles(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path)
    rec.remember(T0, ETHERNET, frame(1), "1:dns")  # the query that raised the alert
    assert rec.defer(alert(flow="1:dns"), settle_seconds=2.0) == []
    rec.remember(T0 + S // 100, ETHERNET, frame(2), "1:dns")  # its answer
    rec.remember(T0 + S // 10, ETHERNET, frame(3), "1:tls")  # the connection
    rec.note(
        {
            "event": {"kind": "event", "action": "vendor-access", "id": "e2"},
            "source": {"ip": "192.0.2.1", "user": {"name": "Alice"}},
            "network": {"community_id": "1:tls"},
            "match": {"vendor": "clearview-ai"},
        }
    )
    rec.note(  # another vendor: not this alert's business
        {
            "event": {"kind": "event", "action": "vendor-access", "id": "e3"},
            "source": {"ip": "192.0.2.1", "user": {"name": "alice"}},
            "network": {"community_id": "1:other"},
            "match": {"vendor": "pimeyes"},
        }
    )
    rec.remember(T0 + S // 10, ETHERNET, frame(4), "1:other")
    assert rec.due() == []
    rec.remember(T0 + 3 * S, ETHERNET, frame(5), "1:unrelated")
    (doc,) = rec.due()
    assert doc["alert"]["evidence"]["packets"] == 3
    frames, _ = read_back(Path(doc["alert"]["evidence"]["path"]))
    assert [f[2] for f in frames] == [frame(1), frame(2), frame(3)]
    assert rec.pending == 0


def test_held_alerts_are_bounded_and_drained(tmp_path: Path) -> None:
    rec = EvidenceRecorder(tmp_path, max_pending=2)
    rec.remember(T0, ETHERNET, frame(1), "1:flowA")
    assert rec.defer(alert("1" * 32)) == []
    assert rec.defer(alert("2" * 32)) == []
    (early,) = rec.defer(alert("3" * 32))
    assert early["event"]["id"] == "1" * 32 and "evidence" in early["alert"]
    assert [d["event"]["id"] for d in rec.drain()] == ["2" * 32, "3" * 32]


# -- crash safety ----------------------------------------------------------------------------


def test_a_failed_write_leaves_neither_a_file_nor_a_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = EvidenceRecorder(tmp_path)
    rec.remember(T0, ETHERNET, frame(1), "1:flowA")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evidence_mod.os, "fsync", full_disk)
    assert rec.write_for(alert()) is None
    assert rec.stats.write_errors == 1
    assert "No space left" in (rec.last_error or "")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert rec.write_for(alert()) is not None  # and it works once the disk is back


def test_a_crash_leaves_only_complete_files(tmp_path: Path) -> None:
    """Kill -9 a process that writes evidence as fast as it can, several times: every
    ``*.pcapng`` left is whole, and the next start removes any temporary."""
    directory = tmp_path / "ev"
    script = textwrap.dedent(
        f"""
        import sys
        from monitor.alerts.evidence import EvidenceRecorder
        rec = EvidenceRecorder({str(directory)!r}, max_bytes=1 << 30,
                               max_files_per_minute=10**9)
        big = bytes(range(256)) * 200
        for i in range(10**9):
            for j in range(32):
                rec.remember({T0} + i * 1000 + j, 1, big, "1:f%d" % i)
            rec.write_for({{"event": {{"kind": "alert", "id": "%032x" % i}},
                           "network": {{"community_id": "1:f%d" % i}}}})
            if i == 0:
                print("ready", flush=True)
        """
    )
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2 + 0.1 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        for path in directory.glob("*.pcapng"):
            frames, stats = read_back(path)
            assert len(frames) == 32, path
            assert not stats.truncated_tail
    leftovers = list(directory.glob(".evidence-*"))
    rec = EvidenceRecorder(directory)
    assert rec.stats.stale_temp_removed == len(leftovers)
    assert not list(directory.glob(".evidence-*"))


# -- encoding property -----------------------------------------------------------------------

packets = st.lists(
    st.tuples(
        st.integers(0, 2**64 - 1),
        st.sampled_from([1, 101, 113, 276, 0xFFFF]),
        st.binary(max_size=300),
        st.integers(0, 2**32 - 1),
        st.text(max_size=30),
    ),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(packets, st.text(min_size=1, max_size=40))
def test_any_packets_round_trip_through_the_projects_reader(
    pkts: list[tuple[int, int, bytes, int, str]], event_id: str
) -> None:
    data = encode_pcapng(event_id, pkts)
    stats = ReaderStats()
    frames = list(read_frames(io.BytesIO(data), stats))
    assert frames == [(ts, lt, d, max(orig, len(d))) for ts, lt, d, orig, _ in pkts]
    assert not stats.truncated_tail and stats.skipped_blocks == 0
    assert len(data) % 4 == 0
