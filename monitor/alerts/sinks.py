"""Where alert documents go: the sink contract, the spool-backed delivery loop, local sinks.

Every sink takes a document with ``send`` and must return quickly, because the caller is the
capture path: a network sink only appends the encoded document to its on-disk spool (one
``write`` syscall) and a delivery thread drains the spool to the receiver, retrying with
exponential backoff while the receiver is down. Delivery is *at least once*: a record is removed
from the spool only after the transport reported it delivered, so a crash or an outage can make
a record arrive twice but never zero times. Each document carries ``event.id`` (assigned here if
the producer did not set one) so a receiver can drop the duplicates.

Local sinks (JSON lines file, stdout) write synchronously: there is nothing to wait for that a
spool on the same disk would improve.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO, runtime_checkable

from monitor.alerts.spool import Spool, SpoolRecord

log = logging.getLogger("monitor.alerts")

Document = dict[str, Any]


@dataclass(slots=True)
class SinkStats:
    """Counters a sink exposes to the metrics endpoint; all monotonic except the spool gauges.

    ``delivered``: documents confirmed written/accepted. ``errors``: failed attempts (a document
    retried five times counts five). ``dropped``: documents this sink will never deliver (spool
    full, disk error). ``spool_depth``/``spool_bytes``: waiting now. ``dead_lettered``: refused
    permanently by the receiver and kept in the dead-letter file. ``corrupt_skipped``: damaged
    spool regions skipped after a crash. ``truncated``: syslog datagrams cut to the UDP limit.
    ``partial_lines_truncated``: half-written lines a crash left in a JSON lines file, removed
    on open.
    """

    delivered: int = 0
    errors: int = 0
    dropped: int = 0
    spool_depth: int = 0
    spool_bytes: int = 0
    dead_lettered: int = 0
    corrupt_skipped: int = 0
    truncated: int = 0
    partial_lines_truncated: int = 0

    def __add__(self, other: SinkStats) -> SinkStats:
        return SinkStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@runtime_checkable
class Sink(Protocol):
    name: str

    def send(self, doc: Document) -> None: ...

    def flush(self, timeout: float) -> bool: ...

    def close(self, timeout: float = 5.0) -> None: ...

    @property
    def stats(self) -> SinkStats: ...


def ensure_id(doc: Document) -> str:
    """Return ``event.id``, assigning a random one first if the document has none.

    The id must be set once, before fan-out, so that every sink and every redelivery of the
    same alert carries the same id; downstream deduplication depends on it.
    """
    event = doc.get("event")
    if not isinstance(event, dict):
        event = {} if event is None else {"original": str(event)}
        doc["event"] = event
    eid = event.get("id")
    if not isinstance(eid, str) or not eid:
        eid = uuid.uuid4().hex
        event["id"] = eid
    return eid


def encode_json(doc: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; never raises for odd values (they become strings) because an alert
    that cannot be serialised must still go out."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode()


class _LoudCounter:
    """Logs the first occurrence at once and then a summary at most every ``interval`` seconds:
    loud enough that nobody misses lost alerts, bounded so an alert storm cannot flood the log."""

    __slots__ = ("_last", "_message", "_since", "interval")

    def __init__(self, message: str, interval: float = 10.0) -> None:
        self._message = message
        self.interval = interval
        self._last = -1e18
        self._since = 0

    def hit(self) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last >= self.interval:
            log.error("%s (%d since last report)", self._message, self._since)
            self._last = now
            self._since = 0


# -- delivery over a spool ---------------------------------------------------------------------


class DeliveryError(Exception):
    """A transport could not deliver the whole batch; ``delivered`` records from the front of it
    were delivered before the failure."""

    def __init__(self, reason: str, delivered: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delivered = delivered


class TransientDeliveryError(DeliveryError):
    """Worth retrying later (receiver down, timeout, 5xx, 429); ``retry_after`` is the receiver's
    own hint in seconds when it gave one."""

    def __init__(self, reason: str, delivered: int = 0, retry_after: float | None = None) -> None:
        super().__init__(reason, delivered)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The receiver refused record number ``delivered`` of the batch for good (e.g. HTTP 400):
    retrying it would block every later alert forever."""


class Transport(Protocol):
    def deliver(self, payloads: Sequence[bytes]) -> None:
        """Deliver all payloads in order or raise a DeliveryError saying how many made it."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with "equal jitter": half the delay is fixed so retries never hammer a
    receiver that is coming back, half is random so many sensors do not retry in lockstep."""

    base: float = 0.5
    cap: float = 60.0
    rand: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 40))
        return ceiling / 2 + self.rand() * ceiling / 2


class SpoolingSink:
    """A sink that appends to a spool and delivers from it on its own thread.

    Order: one delivery thread, records delivered in spool order; a failed batch is rewound and
    sent again before anything after it (head-of-line blocking is the price of order). Records
    the receiver refuses permanently go to ``dead_letter`` (a JSON lines file) so they neither
    block the queue nor vanish. Retries go on without limit while the receiver is down: the
    spool's bounds, not a retry count, decide when alerts start being refused.
    """

    def __init__(
        self,
        name: str,
        transport: Transport,
        spool: Spool,
        encode: Callable[[Document], bytes],
        *,
        max_batch: int = 100,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] | None = None,
        dead_letter: JsonLinesFileSink | None = None,
        sync_interval: float = 0.2,
    ) -> None:
        self.name = name
        self._transport = transport
        self._spool = spool
        self._encode = encode
        self._max_batch = max_batch
        self._backoff = backoff or Backoff()
        self._sleep = sleep or self._wait
        self._dead_letter = dead_letter
        self._sync_interval = sync_interval
        self._stop = threading.Event()
        self._stats = SinkStats(corrupt_skipped=spool.corrupt_skipped)
        self._stats_lock = threading.Lock()
        self._drop_log = _LoudCounter(f"alert sink {name}: spool full, alert DROPPED")
        self._failing_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"sink-{name}", daemon=True)
        self._thread.start()

    # -- producer side

    def send(self, doc: Document) -> None:
        ensure_id(doc)
        payload = self._encode(doc)
        try:
            accepted = self._spool.append(payload)
        except OSError as exc:
            with self._stats_lock:
                self._stats.errors += 1
                self._stats.dropped += 1
            log.error("alert sink %s: cannot spool alert, DROPPED: %s", self.name, exc)
            return
        if not accepted:
            with self._stats_lock:
                self._stats.dropped += 1
            self._drop_log.hit()

    @property
    def stats(self) -> SinkStats:
        with self._stats_lock:
            snap = SinkStats(*(getattr(self._stats, f.name) for f in fields(SinkStats)))
        snap.spool_depth = self._spool.depth
        snap.spool_bytes = self._spool.pending_bytes
        snap.truncated = int(getattr(self._transport, "truncated", 0))
        return snap

    def flush(self, timeout: float) -> bool:
        """Wait until everything spooled so far is delivered; False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        while self._spool.depth > 0:
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Try to drain for ``timeout`` seconds, then stop; what is left stays in the spool and
        is delivered by the next process that opens it."""
        if self._stop.is_set():
            return
        self.flush(timeout)
        self._stop.set()
        self._thread.join()
        self._transport.close()
        self._spool.close()
        if self._dead_letter is not None:
            self._dead_letter.close()

    # -- delivery thread

    def _wait(self, seconds: float) -> None:
        """Sleep that ends early on close and keeps fsyncing fresh appends meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._stop.wait(min(remaining, self._sync_interval))
            if self._spool.needs_sync:
                self._spool.sync()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                failures = self._step(failures)
            except Exception:  # the thread must survive anything, or the spool only grows
                log.exception("alert sink %s: delivery loop error", self.name)
                self._spool.rewind()
                self._sleep(self._backoff.delay(failures))
                failures += 1

    def _step(self, failures: int) -> int:
        if self._spool.needs_sync:
            self._spool.sync()
        if not self._spool.wait(self._sync_interval):
            return failures
        if self._spool.needs_sync:
            self._spool.sync()
        records = self._spool.read(self._max_batch)
        if not records:
            return failures
        try:
            self._transport.deliver([r.payload for r in records])
        except TransientDeliveryError as exc:
            self._commit(records[: exc.delivered])
            self._spool.rewind()
            self._count_failure(exc.reason)
            delay = self._backoff.delay(failures)
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, self._backoff.cap))
            self._sleep(delay)
            return failures + 1
        except PermanentDeliveryError as exc:
            self._commit(records[: exc.delivered])
            self._count_failure(exc.reason)
            buried = self._bury(records[exc.delivered], exc.reason)
            self._spool.rewind()
            if not buried:
                self._sleep(self._backoff.delay(failures))
                return failures + 1
            return 0
        self._commit(records)
        if self._failing_since is not None:
            log.warning(
                "alert sink %s: delivering again after %.1f s of failures",
                self.name,
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None
        return 0

    def _commit(self, records: list[SpoolRecord]) -> None:
        if records:
            self._spool.commit(records)
            with self._stats_lock:
                self._stats.delivered += len(records)

    def _count_failure(self, reason: str) -> None:
        with self._stats_lock:
            self._stats.errors += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("alert sink %s: delivery failed, will retry: %s", self.name, reason)

    def _bury(self, record: SpoolRecord, reason: str) -> bool:
        """Move a permanently refused record to the dead-letter file and off the queue."""
        try:
            original: Any = json.loads(record.payload)
        except ValueError:
            original = record.payload.decode("utf-8", "replace")
        log.error("alert sink %s: receiver refused an alert for good: %s", self.name, reason)
        if self._dead_letter is not None:
            entry = {
                "dead_letter": {"sink": self.name, "reason": reason, "at": time.time()},
                "document": original,
            }
            if not self._dead_letter.write_many([entry]):
                return False  # keep it in the spool rather than lose it; retried later
        self._spool.commit([record])
        with self._stats_lock:
            if self._dead_letter is not None:
                self._stats.dead_lettered += 1
            else:
                self._stats.dropped += 1
        return True


# -- local sinks -------------------------------------------------------------------------------


class JsonLinesFileSink:
    """Alerts as JSON lines in a file that rotates by size: ``events.jsonl`` is current,
    ``events.jsonl.1`` the previous file ... ``events.jsonl.<keep>`` the oldest kept.

    No reader ever sees a partial line: each batch is written with one ``os.write`` of whole
    lines on an ``O_APPEND`` descriptor, rotation only renames complete files, and a line that
    a crash cut short (machine crash, full disk) is truncated away the next time the file is
    opened, and counted. Files stay at or under ``max_bytes`` unless a single line is bigger.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 100 * 1024 * 1024,
        keep: int = 10,
        fsync: Literal["always", "never"] = "always",
        name: str | None = None,
    ) -> None:
        if max_bytes <= 0 or keep < 0:
            raise ValueError("max_bytes must be positive and keep not negative")
        if fsync not in ("always", "never"):
            raise ValueError(f"fsync must be always or never, not {fsync!r}")
        self.path = Path(path)
        self.name = name or f"file:{self.path}"
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        self._lock = threading.Lock()
        self._stats = SinkStats()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._repair_tail()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def _repair_tail(self) -> None:
        if self._size == 0:
            return
        with open(self.path, "rb") as fh:
            fh.seek(self._size - 1)
            if fh.read(1) == b"\n":
                return
            # Scan backwards for the last complete line.
            pos = self._size
            keep_to = 0
            while pos > 0:
                start = max(0, pos - 65536)
                fh.seek(start)
                chunk = fh.read(pos - start)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    keep_to = start + nl + 1
                    break
                pos = start
        os.ftruncate(self._fd, keep_to)
        os.fsync(self._fd)
        self._size = keep_to
        self._stats.partial_lines_truncated += 1
        log.warning("alert file %s: removed a partial last line left by a crash", self.path)

    def send(self, doc: Document) -> None:
        ensure_id(doc)
        self.write_many([doc])

    def write_many(self, docs: Sequence[Mapping[str, Any]]) -> bool:
        """Append documents as lines; False (and counted as dropped) if the disk refused them."""
        lines = [encode_json(d) + b"\n" for d in docs]
        with self._lock:
            if self._closed:
                raise ValueError(f"{self.name} is closed")
            try:
                group: list[bytes] = []
                group_size = 0
                for line in lines:
                    if self._size + group_size > 0 and (
                        self._size + group_size + len(line) > self.max_bytes
                    ):
                        self._write_group(group, group_size)
                        group, group_size = [], 0
                        if self._size > 0:
                            self._rotate()
                    group.append(line)
                    group_size += len(line)
                self._write_group(group, group_size)
            except OSError as exc:
                self._stats.errors += 1
                self._stats.dropped += len(docs)
                log.error(
                    "alert file %s: write failed, %d alert(s) DROPPED: %s",
                    self.path,
                    len(docs),
                    exc,
                )
                return False
            self._stats.delivered += len(docs)
        return True

    def _write_group(self, group: list[bytes], size: int) -> None:
        if not group:
            return
        data = memoryview(b"".join(group))
        before = self._size
        try:
            while data:
                data = data[os.write(self._fd, data) :]
            if self.fsync == "always":
                os.fsync(self._fd)
        except OSError:
            # Leave whole lines only, even when the disk filled up halfway through.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, before)
            raise
        self._size = before + size

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        if self.keep == 0:
            os.unlink(self.path)
        else:
            for i in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()
        self._size = 0
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @property
    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(*(getattr(self._stats, f.name) for f in fields(SinkStats)))

    def flush(self, timeout: float) -> bool:
        with self._lock:
            if not self._closed:
                os.fsync(self._fd)
        return True

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.fsync(self._fd)
            os.close(self._fd)


class StdoutSink:
    """JSON lines on standard output, for piping into another tool or a container's log."""

    def __init__(self, stream: TextIO | None = None, name: str = "stdout") -> None:
        self.name = name
        self._stream = stream
        self._lock = threading.Lock()
        self._stats = SinkStats()

    def send(self, doc: Document) -> None:
        ensure_id(doc)
        line = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        stream = self._stream or sys.stdout
        with self._lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError) as exc:  # closed pipe or closed stream
                self._stats.errors += 1
                self._stats.dropped += 1
                log.error("stdout sink: alert DROPPED: %s", exc)
                return
            self._stats.delivered += 1

    @property
    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(*(getattr(self._stats, f.name) for f in fields(SinkStats)))

    def flush(self, timeout: float) -> bool:
        return True

    def close(self, timeout: float = 5.0) -> None:
        pass


class FanOutSink:
    """Several sinks at once. The id is assigned once here, so all outputs agree on it; one
    sink's failure never keeps an alert from the others."""

    def __init__(self, sinks: Sequence[Sink], name: str = "all") -> None:
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique: {names}")
        self.name = name
        self.sinks = list(sinks)

    def send(self, doc: Document) -> None:
        ensure_id(doc)
        for sink in self.sinks:
            try:
                sink.send(doc)
            except Exception:
                log.exception("alert sink %s failed on send", sink.name)

    @property
    def stats(self) -> SinkStats:
        total = SinkStats()
        for sink in self.sinks:
            total = total + sink.stats
        return total

    def stats_by_sink(self) -> dict[str, SinkStats]:
        return {s.name: s.stats for s in self.sinks}

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        ok = True
        for sink in self.sinks:
            ok = sink.flush(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def close(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for sink in self.sinks:
            sink.close(max(0.0, deadline - time.monotonic()))
