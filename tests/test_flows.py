"""TCP reassembly and the bounded flow table: out-of-order, retransmitted and overlapping
segments give the bytes once, in order; held data and table size never exceed their caps."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.flows.table import FlowTable
from monitor.flows.tcp_stream import StreamStats, TcpStream, seq_diff


def starts_with_x(data: bytes) -> bool:
    return data.startswith(b"X")


def segments(data: bytes, seq: int, sizes: list[int]) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    for size in sizes:
        if pos >= len(data):
            break
        out.append(((seq + pos) & 0xFFFFFFFF, data[pos : pos + size]))
        pos += size
    if pos < len(data):
        out.append(((seq + pos) & 0xFFFFFFFF, data[pos:]))
    return out


def deliver(stream: TcpStream, segs: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for seq, payload in segs:
        got = stream.push(seq, payload)
        assert got is not None
        out += got
    return out


def test_second_segment_first_is_held_until_the_first_arrives() -> None:
    s = TcpStream(starts_with_x, StreamStats())
    assert s.push(1100, b"B" * 100) == b""
    assert s.push(1000, b"X" * 100) == b"X" * 100 + b"B" * 100


def test_retransmission_and_overlap_deliver_each_byte_once() -> None:
    stats = StreamStats()
    s = TcpStream(starts_with_x, stats)
    assert s.push(1000, b"X123456789") == b"X123456789"
    assert s.push(1000, b"X123456789") == b""  # exact duplicate
    assert s.push(1005, b"56789abc") == b"abc"  # overlapping retransmission
    assert stats.retransmitted == 1


def test_syn_anchors_the_stream_even_if_data_does_not_look_like_a_start() -> None:
    s = TcpStream(starts_with_x, StreamStats())
    s.syn(999)
    assert s.push(1000, b"hello") == b"hello"


def test_sequence_wraparound() -> None:
    s = TcpStream(starts_with_x, StreamStats())
    base = 0xFFFFFFF0
    assert s.push((base + 10) & 0xFFFFFFFF, b"B" * 20) == b""
    assert s.push(base, b"X" * 10) == b"X" * 10 + b"B" * 20
    assert seq_diff(5, 0xFFFFFFFB) == 10


def test_hold_budget_overflow_gives_up_instead_of_growing() -> None:
    stats = StreamStats()
    s = TcpStream(starts_with_x, stats, max_held_bytes=1000, max_held_segments=4)
    results = [s.push(5000 + i * 100, b"y" * 100) for i in range(5)]
    assert results[-1] is None
    assert stats.overflow == 1
    assert s.held_bytes == 0 and not s.pending


@settings(max_examples=300)
@given(
    data=st.binary(min_size=1, max_size=3000).map(lambda b: b"X" + b.replace(b"X", b"x")),
    isn=st.integers(0, 0xFFFFFFFF),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=12),
    seed=st.integers(0, 1000),
    dup=st.booleans(),
)
def test_any_permutation_with_duplicates_reassembles_exactly(
    data: bytes, isn: int, sizes: list[int], seed: int, dup: bool
) -> None:
    segs = segments(data, isn, sizes)
    first, rest = segs[0], segs[1:]
    rng = random.Random(seed)
    rng.shuffle(rest)
    if dup:
        rest = rest + rest[: len(rest) // 2]
    # The anchor (the segment that looks like the start) may come anywhere.
    order = rest[:]
    order.insert(rng.randint(0, len(order)), first)
    stream = TcpStream(starts_with_x, StreamStats(), max_held_bytes=10_000, max_held_segments=64)
    assert deliver(stream, order) == data
    assert stream.held_bytes == 0


class Entry:
    def __init__(self, ts: int) -> None:
        self.last_seen = ts


def test_flow_table_evicts_oldest_when_full() -> None:
    t: FlowTable[Entry] = FlowTable(max_entries=3, idle_timeout_s=60)
    for i in range(5):
        t.add(i, Entry(0))
    assert len(t) == 3 and t.get(0) is None and t.get(4) is not None
    assert t.stats.evicted == 2


def test_flow_table_expires_idle_entries() -> None:
    t: FlowTable[Entry] = FlowTable(max_entries=10, idle_timeout_s=10, sweep_interval_s=1)
    t.add("old", Entry(0))
    t.add("new", Entry(9 * 10**9))
    t.tick(15 * 10**9)
    assert t.get("old") is None and t.get("new") is not None
    assert t.stats.expired == 1
