"""Length-prefixed records on a reassembled TCP stream (DNS over TCP, Kerberos over TCP).

Both protocols put a big-endian length in front of every message; only the prefix size and
what makes a length impossible differ, so one splitter serves both and each protocol module
says what it accepts.
"""

from __future__ import annotations

from collections.abc import Callable


class LengthPrefixedFramer:
    """Splits a byte stream into records behind a ``prefix``-byte big-endian length.

    Segments may carry several records or a fraction of one. A length that ``check`` rejects
    means the stream is not (or no longer) framed the way the sensor can follow: ``feed`` raises
    ``error(reason, records)`` carrying the records completed before the bad prefix in the same
    call, and every later ``feed`` raises too, because there is no way to find the next
    boundary. At most one partial record is kept between calls, and ``check`` bounds its size.
    """

    __slots__ = ("_buf", "_check", "_error", "_failed", "_failed_reason", "_prefix")

    def __init__(
        self,
        prefix: int,
        check: Callable[[int], str | None],
        error: Callable[[str, list[bytes]], Exception],
        failed_reason: str,
    ) -> None:
        self._prefix = prefix
        self._check = check
        self._error = error
        self._failed_reason = failed_reason
        self._buf = bytearray()
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held for a record that is not complete yet."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add stream bytes; return every record they complete, in order, without prefixes."""
        if self._failed:
            raise self._error(self._failed_reason, [])
        buf = self._buf
        buf += data
        size = len(buf)
        prefix = self._prefix
        records: list[bytes] = []
        pos = 0
        while size - pos >= prefix:
            length = int.from_bytes(buf[pos : pos + prefix], "big")
            reason = self._check(length)
            if reason is not None:
                self._failed = True
                self._buf = bytearray()
                raise self._error(reason, records)
            if size - pos - prefix < length:
                break
            records.append(bytes(buf[pos + prefix : pos + prefix + length]))
            pos += prefix + length
        if pos:
            del buf[:pos]
        return records
