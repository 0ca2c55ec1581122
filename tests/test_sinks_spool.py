"""The on-disk spool: FIFO across segments and restarts, bounded by refusing, crash-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.alerts.spool import HEADER_SIZE, Spool, SpoolError, frame


def drain(spool: Spool, commit: bool = True) -> list[bytes]:
    out = []
    while True:
        batch = spool.read(7)
        if not batch:
            return out
        out += [r.payload for r in batch]
        if commit:
            spool.commit(batch)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_records_come_back_in_append_order_across_segments(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=200) as spool:
        payloads = [f"record-{i}".encode() * (i % 5 + 1) for i in range(100)]
        for p in payloads:
            assert spool.append(p)
        assert len(segments(tmp_path)) > 5
        assert drain(spool) == payloads
        assert spool.depth == 0 and spool.pending_bytes == 0


def test_delivered_segments_are_deleted(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=100) as spool:
        for i in range(50):
            spool.append(b"x" * 40 + str(i).encode())
        drain(spool)
        assert len(segments(tmp_path)) == 1


def test_uncommitted_records_are_delivered_again_after_reopen(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=64) as spool:
        for i in range(20):
            spool.append(b"%d" % i)
        spool.commit(spool.read(5))
        spool.read(5)  # read but never committed: in flight when the process stopped
    with Spool(tmp_path) as spool:
        assert spool.depth == 15
        assert drain(spool) == [b"%d" % i for i in range(5, 20)]
    with Spool(tmp_path) as spool:
        assert spool.depth == 0
        assert drain(spool) == []


def test_rewind_reads_the_failed_batch_again(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for i in range(10):
            spool.append(b"%d" % i)
        spool.commit(spool.read(3))
        assert [r.payload for r in spool.read(4)] == [b"3", b"4", b"5", b"6"]
        spool.rewind()
        assert drain(spool) == [b"%d" % i for i in range(3, 10)]


def test_full_spool_refuses_new_records_and_keeps_the_old(tmp_path: Path) -> None:
    with Spool(tmp_path, max_records=5) as spool:
        assert all(spool.append(b"%d" % i) for i in range(5))
        assert not spool.append(b"late")
        assert spool.depth == 5
        assert drain(spool) == [b"0", b"1", b"2", b"3", b"4"]
        assert spool.append(b"room again")


def test_byte_bound_counts_frames(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=3 * (HEADER_SIZE + 10)) as spool:
        assert [spool.append(b"0123456789") for _ in range(4)] == [True, True, True, False]
        assert spool.pending_bytes == 3 * (HEADER_SIZE + 10)


def test_second_owner_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path), pytest.raises(SpoolError):
        Spool(tmp_path)


def test_torn_tail_is_cut_off_and_counted(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for i in range(3):
            spool.append(b"good-%d" % i)
    seg = segments(tmp_path)[-1]
    with open(seg, "ab") as fh:
        fh.write(frame(b"half written record")[:15])
    with Spool(tmp_path) as spool:
        assert spool.corrupt_skipped == 1
        assert spool.depth == 3
        spool.append(b"after")
        assert drain(spool) == [b"good-0", b"good-1", b"good-2", b"after"]


def test_zeroed_tail_after_power_loss_is_cut_off(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(b"kept")
    with open(segments(tmp_path)[-1], "ab") as fh:
        fh.write(b"\0" * 4096)
    with Spool(tmp_path) as spool:
        assert spool.corrupt_skipped == 1
        assert drain(spool) == [b"kept"]


def test_damaged_record_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for i in range(5):
            spool.append(b"record-%d" % i)
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    one = len(frame(b"record-0"))
    data[2 * one + HEADER_SIZE + 2] ^= 0xFF  # flip a payload byte of record 2
    seg.write_bytes(bytes(data))
    with Spool(tmp_path) as spool:
        assert spool.corrupt_skipped == 1
        assert spool.depth == 4
        assert drain(spool) == [b"record-0", b"record-1", b"record-3", b"record-4"]


def test_commit_file_is_replaced_not_rewritten(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(b"a")
        spool.append(b"b")
        spool.commit(spool.read(1))
        inode = (tmp_path / "committed").stat().st_ino
        spool.commit(spool.read(1))
        assert (tmp_path / "committed").stat().st_ino != inode
        assert not (tmp_path / "committed.tmp").exists()


WRITER = textwrap.dedent(
    """
    import sys
    from monitor.alerts.spool import Spool
    spool = Spool(sys.argv[1], segment_bytes=int(sys.argv[2]), fsync=sys.argv[3])
    i = 0
    while True:
        assert spool.append(b"record-%08d" % i + b"." * (i % 300))
        print(i, flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("fsync", ["always", "batch"])
def test_spool_survives_the_writer_being_killed(tmp_path: Path, fsync: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), "4096", fsync],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        last = -1
        for line in proc.stdout:
            last = int(line)
            if last >= 2000:
                break
        os.kill(proc.pid, signal.SIGKILL)
        for line in proc.stdout:  # what it acknowledged before the kill landed
            last = int(line)
    finally:
        proc.kill()
        proc.wait(10)
    with Spool(tmp_path) as spool:
        got = drain(spool)
    # Everything the writer acknowledged is there, in order, and nothing else but the record
    # it may have appended between its last acknowledgement and the kill.
    assert len(got) in (last + 1, last + 2)
    for i, payload in enumerate(got):
        assert payload == b"record-%08d" % i + b"." * (i % 300)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.binary(max_size=90)),
            st.tuples(st.just("read"), st.integers(1, 6)),
            st.tuples(st.just("commit"), st.just(0)),
            st.tuples(st.just("rewind"), st.just(0)),
            st.tuples(st.just("reopen"), st.just(0)),
        ),
        max_size=60,
    ),
    segment_bytes=st.integers(20, 400),
    max_records=st.integers(1, 30),
)
def test_spool_behaves_like_a_bounded_fifo_with_rewind(
    tmp_path_factory: pytest.TempPathFactory,
    ops: list[tuple[str, object]],
    segment_bytes: int,
    max_records: int,
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(directory, segment_bytes=segment_bytes, max_records=max_records)
    committed: list[bytes] = []  # model: the queue after the committed position
    in_flight: list = []
    read_upto = 0
    try:
        for op, arg in ops:
            if op == "append":
                assert isinstance(arg, bytes)
                accepted = spool.append(arg)
                assert accepted == (len(committed) < max_records)
                if accepted:
                    committed.append(arg)
            elif op == "read":
                assert isinstance(arg, int)
                batch = spool.read(arg)
                assert [r.payload for r in batch] == committed[read_upto : read_upto + arg]
                read_upto += len(batch)
                in_flight += batch
            elif op == "commit":
                spool.commit(in_flight)
                del committed[: len(in_flight)]
                read_upto -= len(in_flight)
                in_flight = []
            elif op == "rewind":
                spool.rewind()
                read_upto, in_flight = 0, []
            else:
                spool.close()
                spool = Spool(directory, segment_bytes=segment_bytes, max_records=max_records)
                read_upto, in_flight = 0, []
            assert spool.depth == len(committed)
        spool.rewind()
        assert drain(spool) == committed
        assert spool.corrupt_skipped == 0
    finally:
        spool.close()
