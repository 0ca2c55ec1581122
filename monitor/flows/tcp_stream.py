"""One direction of a TCP connection, reassembled into an ordered byte stream.

A mirror port shows segments as they crossed the switch: out of order, retransmitted, overlapping,
and usually without the SYN (the sensor's kernel filter drops SYNs on TLS ports, and a flow may
have started before the sensor). So the stream is anchored either by the SYN or by the first
segment that *looks like* the start of the protocol (a ClientHello record header, an HTTP method);
segments seen before the anchor are held, within a small budget, in case they follow it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SEQ_MOD = 1 << 32
HALF = 1 << 31


@dataclass(slots=True)
class StreamStats:
    retransmitted: int = 0
    out_of_order: int = 0
    overflow: int = 0


def seq_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in 32-bit sequence space (RFC 793 arithmetic)."""
    d = (a - b) & 0xFFFFFFFF
    return d - SEQ_MOD if d >= HALF else d


class TcpStream:
    """Delivers contiguous bytes of one direction; holds out-of-order segments within bounds."""

    __slots__ = (
        "_is_start",
        "held_bytes",
        "max_held_bytes",
        "max_held_segments",
        "next_seq",
        "pending",
        "stats",
    )

    def __init__(
        self,
        is_start: Callable[[bytes], bool],
        stats: StreamStats,
        max_held_bytes: int = 16384,
        max_held_segments: int = 32,
    ) -> None:
        self._is_start = is_start
        self.stats = stats
        self.next_seq: int | None = None
        self.pending: dict[int, bytes] = {}
        self.held_bytes = 0
        self.max_held_bytes = max_held_bytes
        self.max_held_segments = max_held_segments

    def syn(self, seq: int) -> None:
        """A SYN fixes where the byte stream starts, whatever the first payload looks like."""
        if self.next_seq is None:
            self.next_seq = (seq + 1) & 0xFFFFFFFF
            self._drop_before_anchor()

    def push(self, seq: int, payload: bytes) -> bytes | None:
        """Add a segment; return the bytes it makes contiguous (b"" if none).

        Returns None when the stream overflowed its hold budget: the caller gives up the flow,
        which is cheaper and safer than buffering an unbounded gap.
        """
        if not payload:
            return b""
        if self.next_seq is None:
            if self._is_start(payload):
                self.next_seq = seq
                self._drop_before_anchor()
            else:
                return self._hold(seq, payload)
        d = seq_diff(seq, self.next_seq)
        if d > 0:
            self.stats.out_of_order += 1
            return self._hold(seq, payload)
        if d < 0:
            if -d >= len(payload):
                self.stats.retransmitted += 1
                return b""
            payload = payload[-d:]
        out = [payload]
        self.next_seq = (self.next_seq + len(payload)) & 0xFFFFFFFF
        if self.pending:
            self._drain(out)
        return out[0] if len(out) == 1 else b"".join(out)

    def _hold(self, seq: int, payload: bytes) -> bytes | None:
        if seq in self.pending:
            old = self.pending[seq]
            if len(old) >= len(payload):
                self.stats.retransmitted += 1
                return b""
            self.held_bytes -= len(old)
        if (
            self.held_bytes + len(payload) > self.max_held_bytes
            or len(self.pending) >= self.max_held_segments
        ):
            self.stats.overflow += 1
            self.pending.clear()
            self.held_bytes = 0
            return None
        self.pending[seq] = payload
        self.held_bytes += len(payload)
        return b""

    def _drain(self, out: list[bytes]) -> None:
        assert self.next_seq is not None
        progressed = True
        while progressed and self.pending:
            progressed = False
            for seq in list(self.pending):
                payload = self.pending[seq]
                d = seq_diff(seq, self.next_seq)
                if d > 0:
                    continue
                del self.pending[seq]
                self.held_bytes -= len(payload)
                if -d >= len(payload):
                    self.stats.retransmitted += 1
                    continue
                piece = payload[-d:] if d else payload
                out.append(piece)
                self.next_seq = (self.next_seq + len(piece)) & 0xFFFFFFFF
                progressed = True

    def _drop_before_anchor(self) -> None:
        """Held segments that end before the anchor can never be delivered."""
        assert self.next_seq is not None
        for seq in list(self.pending):
            if seq_diff(seq, self.next_seq) + len(self.pending[seq]) <= 0:
                self.held_bytes -= len(self.pending.pop(seq))
