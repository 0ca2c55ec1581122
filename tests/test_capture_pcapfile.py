"""The capture reader: every byte order, timestamp resolution and block kind tcpdump and
Wireshark write, from files and from pipes, without ever raising on a damaged tail."""

from __future__ import annotations

import contextlib
import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.capture.pcapfile import CaptureFormatError, ReaderStats, read_frames

FRAME_A = bytes(range(60))
FRAME_B = b"\xff" * 42


def classic_pcap(
    endian: str, nano: bool, frames: list[tuple[int, bytes]], linktype: int = 1
) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for ts_ns, data in frames:
        sec, ns = divmod(ts_ns, 1_000_000_000)
        frac = ns if nano else ns // 1000
        out += struct.pack(endian + "IIII", sec, frac, len(data), len(data)) + data
    return out


def pcapng_block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    return struct.pack(endian + "II", btype, total) + body + struct.pack(endian + "I", total)


def pcapng(
    endian: str, interfaces: list[tuple[int, int | None]], packets: list[tuple[int, int, bytes]]
) -> bytes:
    out = pcapng_block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    for linktype, tsresol in interfaces:
        opts = b""
        if tsresol is not None:
            opts = struct.pack(endian + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0"
            opts += struct.pack(endian + "HH", 0, 0)
        out += pcapng_block(endian, 1, struct.pack(endian + "HHI", linktype, 0, 0) + opts)
    for ifid, ts_units, data in packets:
        body = (
            struct.pack(
                endian + "IIIII", ifid, ts_units >> 32, ts_units & 0xFFFFFFFF, len(data), len(data)
            )
            + data
        )
        out += pcapng_block(endian, 6, body)
    return out


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_classic_pcap_any_byte_order_and_resolution(endian: str, nano: bool) -> None:
    ts = 1_700_000_000_123_456_789
    data = classic_pcap(endian, nano, [(ts, FRAME_A), (ts + 1000, FRAME_B)])
    frames = list(read_frames(io.BytesIO(data)))
    expect_ts = ts if nano else ts - 789
    assert frames == [(expect_ts, 1, FRAME_A, 60), (expect_ts + 1000, 1, FRAME_B, 42)]


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_nanosecond_and_microsecond_interfaces_with_different_link_types(
    endian: str,
) -> None:
    data = pcapng(
        endian,
        [(1, 9), (101, None)],
        [(0, 1_700_000_000_000_000_001, FRAME_A), (1, 1_700_000_000_000_002, FRAME_B)],
    )
    frames = list(read_frames(io.BytesIO(data)))
    assert frames == [
        (1_700_000_000_000_000_001, 1, FRAME_A, 60),
        (1_700_000_000_000_002_000, 101, FRAME_B, 42),
    ]


def test_pcapng_binary_resolution_is_converted_exactly() -> None:
    # if_tsresol with the high bit set means 2^-n seconds.
    data = pcapng("<", [(1, 0x80 | 10)], [(0, 1024 * 5 + 512, FRAME_A)])
    ((ts, _, _, _),) = list(read_frames(io.BytesIO(data)))
    assert ts == 5_500_000_000


def test_truncated_tail_is_reported_not_raised() -> None:
    data = classic_pcap("<", False, [(0, FRAME_A), (1000, FRAME_B)])[:-10]
    stats = ReaderStats()
    frames = list(read_frames(io.BytesIO(data), stats))
    assert len(frames) == 1
    assert stats.truncated_tail


def test_unknown_magic_is_a_clear_error() -> None:
    with pytest.raises(CaptureFormatError, match="not pcap or pcapng"):
        list(read_frames(io.BytesIO(b"GIF89a" + b"\0" * 40)))


class Trickle(io.RawIOBase):
    """A pipe that returns a few bytes per read, as tcpdump's stdout may."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos : self.pos + min(self.step, n if n > 0 else self.step)]
        self.pos += len(chunk)
        return chunk


@given(step=st.integers(1, 200))
def test_reading_from_a_pipe_in_small_pieces_gives_the_same_frames(step: int) -> None:
    data = classic_pcap("<", True, [(i * 1000, FRAME_A[: 14 + i]) for i in range(20)])
    assert list(read_frames(Trickle(data, step))) == list(read_frames(io.BytesIO(data)))  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise_anything_but_format_error(blob: bytes) -> None:
    for prefix in (b"", classic_pcap("<", False, [])[:24], pcapng("<", [(1, None)], [])):
        with contextlib.suppress(CaptureFormatError):
            list(read_frames(io.BytesIO(prefix + blob)))
