"""Append-only on-disk queue that holds alerts while a sink is unreachable.

Why on disk: an alert about a vendor access is the whole point of the sensor, so a SIEM that is
down for an hour, or a sensor restart in the middle of that hour, must not lose it. Records are
delivered again after a crash (at least once), in the order they were appended.

Layout of a spool directory::

    lock                        flock()ed while a process owns the spool (one owner at a time)
    00000000000000000007.seg    segment files, named by their index, appended to in order
    committed                   {"segment": 7, "offset": 4096}: everything before it is delivered

Each record is framed as ``MAGIC(2) LENGTH(4, big endian) CRC32(4) PAYLOAD`` where the CRC covers
the length and the payload. The frame lets a reader tell a record that a crash cut short (or that
the disk mangled) from a good one: on open, a bad tail of the newest segment is truncated away and
a bad region elsewhere is skipped up to the next frame that checks out; both are counted in
``corrupt_skipped``. ``committed`` is only ever replaced with ``os.replace`` of a fsynced
temporary file, so it is always either the old or the new position, never half of each.

Durability: ``append`` makes the record survive a crash of this *process* at once (it is in the
kernel's page cache as soon as ``os.write`` returns). Surviving a crash of the *machine* needs an
fsync: with ``fsync="always"`` every append pays for one; with ``fsync="batch"`` (the default) the
owner calls ``sync()`` from its delivery thread a moment later, so the capture path pays one
``write`` syscall and many appends share one fsync.

Bounds and what happens when they are reached: a full spool *refuses new records* (``append``
returns False and the caller counts the refusal as ``dropped``). We do not evict the oldest
records, although that is the usual choice for metrics: for alerts, the oldest undelivered record
is typically the start of an incident and the one an investigator needs, and evicting it would
silently rewrite history that was already accepted as "will be delivered". Refusing at the door is
equally lossy in count but is visible at the moment it happens (counter + error log), keeps what
is spooled intact and in order, and keeps the disk bounded. Disk use is at most ``max_bytes`` of
undelivered frames plus one segment of delivered-but-not-yet-deleted frames.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MAGIC = b"\xa1\xe7"
_HEADER = struct.Struct(">2sII")
HEADER_SIZE = _HEADER.size
MAX_RECORD_BYTES = 16 * 1024 * 1024
_SEGMENT_SUFFIX = ".seg"
_COMMITTED = "committed"

FsyncPolicy = Literal["always", "batch", "never"]


class SpoolError(OSError):
    """The spool cannot be opened or written (locked by another process, disk error)."""


@dataclass(slots=True, frozen=True)
class SpoolRecord:
    """One record as read back; ``segment``/``end`` locate the position just after it, which is
    what ``commit`` persists."""

    payload: bytes
    segment: int
    end: int
    size: int


def frame(payload: bytes) -> bytes:
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "big")))
    return _HEADER.pack(MAGIC, length, crc) + payload


def _frame_at(buf: bytes | memoryview, off: int) -> int:
    """Length of the valid frame starting at ``off`` in ``buf``, or -1 if there is none."""
    if off + HEADER_SIZE > len(buf):
        return -1
    magic, length, crc = _HEADER.unpack_from(buf, off)
    if magic != MAGIC or length > MAX_RECORD_BYTES or off + HEADER_SIZE + length > len(buf):
        return -1
    start = off + HEADER_SIZE
    if zlib.crc32(buf[start : start + length], zlib.crc32(length.to_bytes(4, "big"))) != crc:
        return -1
    return HEADER_SIZE + length


def _next_valid_frame(buf: bytes, off: int) -> int:
    """Offset of the next valid frame after a bad one at ``off``, or ``len(buf)`` if none."""
    pos = off + 1
    while True:
        pos = buf.find(MAGIC, pos)
        if pos < 0:
            return len(buf)
        if _frame_at(buf, pos) > 0:
            return pos
        pos += 1


class Spool:
    """A bounded, crash-safe FIFO of byte records for one sink.

    Thread model: any number of producers call ``append``; one consumer (the sink's delivery
    thread) calls ``read``, ``commit``, ``rewind`` and ``sync``. The consumer reads ahead of the
    committed position so a batch can be in flight; ``rewind`` goes back to the committed
    position when a delivery failed and the batch must be sent again.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_records: int = 100_000,
        segment_bytes: int = 4 * 1024 * 1024,
        fsync: FsyncPolicy = "batch",
    ) -> None:
        if max_bytes <= 0 or max_records <= 0 or segment_bytes <= 0:
            raise ValueError("spool bounds must be positive")
        if fsync not in ("always", "batch", "never"):
            raise ValueError(f"fsync must be always, batch or never, not {fsync!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.corrupt_skipped = 0
        self._cond = threading.Condition()
        self._closed = False
        self._dirty = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolError(f"spool {self.directory} is in use by another process") from exc
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening -------------------------------------------------------------------------------

    def _segment_path(self, index: int) -> Path:
        return self.directory / f"{index:020d}{_SEGMENT_SUFFIX}"

    def _recover(self) -> None:
        """Find the committed position, drop delivered segments, validate and count the rest."""
        indexes = sorted(
            int(p.name[: -len(_SEGMENT_SUFFIX)])
            for p in self.directory.iterdir()
            if p.name.endswith(_SEGMENT_SUFFIX) and p.name[: -len(_SEGMENT_SUFFIX)].isdigit()
        )
        seg, off = self._read_committed()
        if indexes and seg < indexes[0]:
            seg, off = indexes[0], 0
        for index in indexes:
            if index < seg:
                self._segment_path(index).unlink()
        indexes = [i for i in indexes if i >= seg]
        self._sizes: dict[int, int] = {}
        records = 0
        nbytes = 0
        for pos, index in enumerate(indexes):
            data = self._segment_path(index).read_bytes()
            cursor = off if index == seg else 0
            while cursor < len(data):
                size = _frame_at(data, cursor)
                if size > 0:
                    records += 1
                    nbytes += size
                    cursor += size
                    continue
                resume = _next_valid_frame(data, cursor)
                self.corrupt_skipped += 1
                if resume == len(data) and pos == len(indexes) - 1:
                    # A torn tail of the newest segment (crash or power loss mid-append): cut it
                    # off so new appends follow a good frame.
                    with open(self._segment_path(index), "r+b") as fh:
                        fh.truncate(cursor)
                        os.fsync(fh.fileno())
                    data = data[:cursor]
                    break
                cursor = resume
            self._sizes[index] = len(data)
        if not indexes:
            indexes = [seg]
            self._segment_path(seg).touch()
            self._sizes[seg] = 0
            off = 0
        self._committed = (seg, min(off, self._sizes[seg]))
        self._read_pos = self._committed
        self._pending_records = records
        self._pending_bytes = nbytes
        self._active = indexes[-1]
        self._write_fd = os.open(self._segment_path(self._active), os.O_WRONLY | os.O_APPEND)
        self._read_seg = -1
        self._read_fd = -1
        self._fsync_dir()

    def _read_committed(self) -> tuple[int, int]:
        try:
            raw = json.loads((self.directory / _COMMITTED).read_text())
            seg, off = int(raw["segment"]), int(raw["offset"])
        except FileNotFoundError:
            return 0, 0
        except (ValueError, KeyError, TypeError):
            # Cannot happen with os.replace, but if someone edits the file: deliver everything
            # again rather than lose anything.
            return 0, 0
        if seg < 0 or off < 0:
            return 0, 0
        return seg, off

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- producer side --------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Records appended and not yet committed."""
        return self._pending_records

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def append(self, payload: bytes) -> bool:
        """Queue one record; False when the spool is full (the caller counts it as dropped)."""
        data = frame(payload)
        with self._cond:
            if self._closed:
                raise SpoolError(f"spool {self.directory} is closed")
            if (
                len(payload) > MAX_RECORD_BYTES
                or self._pending_records + 1 > self.max_records
                or self._pending_bytes + len(data) > self.max_bytes
            ):
                return False
            size = self._sizes[self._active]
            if size > 0 and size + len(data) > self.segment_bytes:
                self._roll()
                size = 0
            try:
                self._write_all(data)
            except OSError:
                # Keep the segment a sequence of whole frames: cut back what a failed (e.g.
                # ENOSPC) write left behind.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._write_fd, size)
                raise
            self._sizes[self._active] = size + len(data)
            self._pending_records += 1
            self._pending_bytes += len(data)
            self._dirty = True
            self._cond.notify_all()
        if self.fsync == "always":
            self.sync()
        return True

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._write_fd, view)
            view = view[written:]

    def _roll(self) -> None:
        """Start a new segment so delivered data can be deleted a segment at a time."""
        if self.fsync != "never":
            os.fsync(self._write_fd)
        os.close(self._write_fd)
        self._active += 1
        self._write_fd = os.open(
            self._segment_path(self._active), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
        self._sizes[self._active] = 0
        if self.fsync != "never":
            self._fsync_dir()

    @property
    def needs_sync(self) -> bool:
        return self._dirty and self.fsync == "batch"

    def sync(self) -> None:
        """fsync what was appended so far; one call covers every append before it."""
        with self._cond:
            if self._closed or not self._dirty:
                return
            fd = os.dup(self._write_fd)
            self._dirty = False
        try:
            if self.fsync != "never":
                os.fsync(fd)
        finally:
            os.close(fd)

    # -- consumer side --------------------------------------------------------------------------

    def wait(self, timeout: float) -> bool:
        """Block until a record is readable past the read position (True) or timeout/close."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed and not self._readable():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._readable()

    def _readable(self) -> bool:
        seg, off = self._read_pos
        return seg != self._active or off < self._sizes[self._active]

    def read(self, max_records: int) -> list[SpoolRecord]:
        """Up to ``max_records`` records after the read position, advancing it."""
        out: list[SpoolRecord] = []
        while len(out) < max_records:
            with self._cond:
                if self._closed:
                    break
                seg, off = self._read_pos
                end = self._sizes.get(seg, 0)
                active = seg == self._active
            if off >= end:
                if active:
                    break
                self._read_pos = (seg + 1, 0)
                continue
            fd = self._reader_for(seg)
            header = os.pread(fd, HEADER_SIZE, off)
            length = _HEADER.unpack_from(header)[1] if len(header) == HEADER_SIZE else 0
            size = -1
            if len(header) == HEADER_SIZE and length <= MAX_RECORD_BYTES:
                buf = header + os.pread(fd, length, off + HEADER_SIZE)
                size = _frame_at(buf, 0)
            if size < 0:
                # Only reachable for a region that open() already counted (or disk rot since):
                # skip to the next good frame.
                rest = os.pread(fd, end - off, off)
                self._read_pos = (seg, off + _next_valid_frame(rest, 0))
                continue
            out.append(SpoolRecord(buf[HEADER_SIZE:size], seg, off + size, size))
            self._read_pos = (seg, off + size)
        return out

    def _reader_for(self, seg: int) -> int:
        if self._read_seg != seg:
            if self._read_fd >= 0:
                os.close(self._read_fd)
            self._read_fd = os.open(self._segment_path(seg), os.O_RDONLY)
            self._read_seg = seg
        return self._read_fd

    def rewind(self) -> None:
        """Go back to the committed position: the records read since will be read again."""
        self._read_pos = self._committed

    def commit(self, records: list[SpoolRecord]) -> None:
        """Mark ``records`` (the next ones after the committed position, in order) delivered."""
        if not records:
            return
        last = records[-1]
        seg, off = last.segment, last.end
        with self._cond:
            if self._closed:
                return
            if seg != self._active and off >= self._sizes.get(seg, 0):
                seg, off = seg + 1, 0
            first_kept = seg
            self._pending_records = max(0, self._pending_records - len(records))
            self._pending_bytes = max(0, self._pending_bytes - sum(r.size for r in records))
            self._committed = (seg, off)
            doomed = [i for i in self._sizes if i < first_kept and i != self._active]
        self._write_committed(seg, off)
        for index in doomed:
            with self._cond:
                self._sizes.pop(index, None)
                if self._read_seg == index:
                    os.close(self._read_fd)
                    self._read_fd, self._read_seg = -1, -1
            with contextlib.suppress(FileNotFoundError):
                self._segment_path(index).unlink()

    def _write_committed(self, seg: int, off: int) -> None:
        tmp = self.directory / f"{_COMMITTED}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"segment": seg, "offset": off}).encode())
            if self.fsync != "never":
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / _COMMITTED)
        if self.fsync != "never":
            self._fsync_dir()

    def close(self) -> None:
        """Flush to disk and release the directory; undelivered records stay for the next owner."""
        with self._cond:
            if self._closed:
                return
            if self.fsync != "never" and self._dirty:
                os.fsync(self._write_fd)
            self._closed = True
            os.close(self._write_fd)
            if self._read_fd >= 0:
                os.close(self._read_fd)
                self._read_fd = -1
            self._cond.notify_all()
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
