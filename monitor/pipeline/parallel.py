"""Replay on two cores: the parsing-heavy half of the traffic in a forked worker.

Most of the work is parsing that needs nothing from other flows: a DNS answer's records, a
QUIC connection's Initials (decrypted, CRYPTO frames put back in order, the ClientHello
parsed). Most of what needs shared state is cheap: whether a DNS transaction was already
reported, the blind-spot rate limits, the vendor addresses answers resolved to (ip-resolved),
the identity store. So the worker reads the file through its own tcpdump with the ``worker``
half of the BPF filter (plain DNS answers and QUIC), this process reads the ``main`` half
(the halves are disjoint and add up to the whole filter), and the worker sends back, in packet
order, what it parsed -- DNS detections with their transaction keys, QUIC ClientHellos, learned
addresses -- and how far it has got. This process applies each before its own first packet
that comes later in the capture, deciding there exactly as one process would (deduplicating,
rate-limiting, attributing), and waits for the worker when it is ahead of it. Events and
counters are those of a single process; two differences: an item of the worker and one of
this process with the same timestamp to the nanosecond come out worker first, whatever their
order in the file; and a QUIC connection whose Initials are partly plain and partly not (IPv6
extension headers, IPv4 fragments) is tracked in two halves.

Not with the evidence recorder (``on_packet``/``after_frame``), which needs every candidate
packet in one place. Only for files large enough for the fork to pay: small files, and so the
sample pcaps, run in one process unless asked.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from monitor.blocklist.matcher import Matcher
from monitor.blocklist.model import Match
from monitor.capture.files import (
    ReplayStats,
    account_reader,
    filter_for_file,
    partial_read_warning,
)
from monitor.capture.pcapfile import CaptureFormatError, ReaderStats, read_frames
from monitor.capture.prefilter import (
    PortConfig,
    PrefilterUnavailable,
    filtered_stream,
    widen_pipe,
)
from monitor.decode.packet import Packet
from monitor.pipeline.detection import Detection
from monitor.pipeline.engine import Engine, EngineConfig
from monitor.pipeline.resolved import ResolvedAddresses
from monitor.protocols.tls import ClientHello

#: Below this many bytes of capture a second process costs more than it saves (the fork, a
#: second tcpdump); the sample pcaps and every test that compares events stay in one process.
SPLIT_MIN_BYTES = 32 << 20
#: The worker reports its progress every this many packets (and at the end of each file).
MARK_EVERY = 256
_INF = 1 << 80


def split_possible(paths: Sequence[Path], config: EngineConfig, *, force: bool = False) -> bool:
    """Whether two processes would help: a second core, fork, DNS ports, enough bytes."""
    if not hasattr(os, "fork") or not config.dns_ports:
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if cores < 2:
        return False
    if force:
        return True
    total = 0
    for p in paths:
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total >= SPLIT_MIN_BYTES


class _ForwardedAddresses(ResolvedAddresses):
    """The worker's resolved-address table: it keeps nothing and forwards each learned address
    to the main process, whose table (and whose counters) are then those of one process."""

    __slots__ = ("send",)

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self.send = send

    def learn(self, ts: int, address: str, ttl: int, match: Match, recipient: bytes) -> None:
        self.send(("learn", ts, address, ttl, match, recipient))


class _WorkerEngine(Engine):
    """The worker's engine: it parses as usual but decides nothing that needs shared state.

    A DNS transaction seen in both halves (the query in the main half, the answer here) must
    still give one event, so a DNS detection goes to the main process with its transaction
    key and is made there; a QUIC ClientHello goes there to be matched, rate-limited and
    checked against resolved addresses; learned addresses go there too."""

    def __init__(
        self, matcher: Matcher, config: EngineConfig, send: Callable[[tuple[Any, ...]], None]
    ) -> None:
        super().__init__(matcher, _unused_emit, config)
        self.resolved = _ForwardedAddresses(send)
        self._send = send
        self._transaction: tuple[Any, ...] | None = None

    def _quic_hello(self, pkt: Packet, hello: ClientHello) -> None:
        # Decrypting and reassembling was the work; what the hello means is decided there.
        self._send(("quic", pkt.ts, _header(pkt), _extra(pkt), hello))

    def _seen_transaction(self, key: tuple[Any, ...], ts: int) -> bool:
        self._transaction = key  # decided by the main process, with the detection
        return False

    def _emit(
        self,
        pkt: Packet,
        evidence: str,
        protocol: str,
        transport: str,
        match: Match,
        details: dict[str, Any],
        action: str = "vendor-access",
        reply: bool = False,
    ) -> None:
        key, self._transaction = self._transaction, None
        found = _Found(_header(pkt), _extra(pkt), key, evidence, protocol, transport, match)
        found.details, found.action, found.reply = details, action, reply
        self._send(("det", pkt.ts, found))


@dataclass(slots=True)
class _Found:
    """A detection the worker made, for the main process to decide on and emit."""

    header: tuple[Any, ...]  # see _header
    extra: tuple[Any, ...]  # see _extra
    transaction: tuple[Any, ...] | None  # the DNS transaction key, None for a CNAME hit
    evidence: str
    protocol: str
    transport: str
    match: Match
    details: dict[str, Any] = field(default_factory=dict)
    action: str = "vendor-access"
    reply: bool = False


def _header(pkt: Packet) -> tuple[Any, ...]:
    return (pkt.version, pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport)


def _extra(pkt: Packet) -> tuple[Any, ...]:
    return (pkt.vlan, pkt.tunnel, pkt.smac)


def _packet(ts: int, header: tuple[Any, ...], extra: tuple[Any, ...]) -> Packet:
    """The worker's packet again, as far as detections use it (no payload)."""
    version, src, dst, proto, sport, dport = header
    vlan, tunnel, smac = extra
    pkt = Packet(ts, version, src, dst, proto, sport, dport, 0, 0, b"", vlan, tunnel)
    pkt.smac = smac
    return pkt


def _unused_emit(d: Detection) -> None:  # pragma: no cover -- _WorkerEngine._emit replaces it
    raise AssertionError("the worker forwards its detections, it never emits them")


class _Channel:
    """The worker's side of the pipe: pickled messages, each tagged with the file in hand."""

    __slots__ = ("dump", "file_index", "out")

    def __init__(self, write_fd: int) -> None:
        self.out: BinaryIO = os.fdopen(write_fd, "wb", buffering=1 << 16)
        self.dump = pickle.Pickler(self.out, protocol=pickle.HIGHEST_PROTOCOL).dump
        self.file_index = 0

    def send(self, message: tuple[Any, ...]) -> None:
        self.dump((self.file_index, *message))

    def flush(self) -> None:
        self.out.flush()


def _worker(
    write_fd: int,
    paths: Sequence[Path],
    matcher: Matcher,
    config: EngineConfig,
    ports: PortConfig,
) -> None:
    """The forked worker; never returns (os._exit), never touches the parent's files."""
    status = 0
    channel = _Channel(write_fd)
    send = channel.send
    try:
        engine = _WorkerEngine(matcher, config, send)
        process = engine.process
        stats = ReplayStats()
        for index, path in enumerate(paths):
            channel.file_index = index
            rstats = ReaderStats()
            yielded = 0
            last = 0
            try:
                with filtered_stream(path, filter_for_file(path, ports, "worker")) as stream:
                    for ts, linktype, data, _wirelen in read_frames(stream, rstats):
                        process(ts, linktype, data)
                        yielded += 1
                        if ts > last:
                            last = ts
                        if not yielded % MARK_EVERY:
                            send(("mark", last))
                            channel.flush()
                stats.prefiltered_files += 1
            except (PrefilterUnavailable, CaptureFormatError) as exc:
                if yielded:
                    stats.warnings.append(partial_read_warning(path, exc))
                else:
                    send(("whole",))  # the main process reads this file whole, both halves
            account_reader(stats, rstats, path)
            send(("done",))
            channel.flush()
        channel.file_index = len(paths)
        send(("end", engine.counters(), engine.stats, stats))
    except BaseException:  # reported to the main process, which raises WorkerFailed with it
        status = 1
        with contextlib.suppress(Exception):  # the pipe is gone: the exit status says enough
            send(("error", traceback.format_exc()))
    finally:
        try:
            channel.flush()
        except Exception:
            status = 1
        os._exit(status)


class WorkerFailed(RuntimeError):
    """The worker died or raised; its traceback is in the message."""


def replay_split(
    paths: Sequence[Path],
    engine: Engine,
    ports: PortConfig,
    stats: ReplayStats,
) -> None:
    """Replay ``paths`` through ``engine`` with a forked worker (see the module docstring).

    ``engine`` ends up with every detection emitted through its callback, in capture order,
    and with the worker's counters absorbed into its own.
    """
    paths = list(paths)
    read_fd, write_fd = os.pipe()
    widen_pipe(write_fd)  # the worker may run ahead by this much without blocking
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the worker ends in os._exit; its work is checked here
        os.close(read_fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _worker(write_fd, paths, engine.matcher, engine.config, ports)
    os.close(write_fd)
    reaped = False
    try:
        with os.fdopen(read_fd, "rb", buffering=1 << 16) as pipe:
            _Merger(pipe, engine, ports, stats).run(paths)
        _, status = os.waitpid(pid, 0)
        reaped = True
        if status != 0:
            raise WorkerFailed(f"replay worker exited with status {status}")
    finally:
        if not reaped:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


class _Merger:
    """This process's side: its own packets, interleaved with the worker's messages."""

    def __init__(
        self, pipe: BinaryIO, engine: Engine, ports: PortConfig, stats: ReplayStats
    ) -> None:
        self.unpickler = pickle.Unpickler(pipe)
        self.engine = engine
        self.ports = ports
        self.stats = stats
        # Worker detections and learned addresses not applied yet: (file, kind, ts, ...).
        self.pending: deque[tuple[Any, ...]] = deque()
        self.marks: dict[int, int] = {}  # file -> the worker's progress (packet time)
        self.whole: set[int] = set()  # files the worker could not filter: read here, whole
        self.end: tuple[Any, ...] | None = None

    def _receive(self) -> None:
        """Read one message from the worker (blocking); keep it in order."""
        try:
            message = self.unpickler.load()
        except EOFError:
            raise WorkerFailed("replay worker stopped without finishing") from None
        file_index, kind = message[0], message[1]
        if kind == "mark":
            self.marks[file_index] = message[2]
        elif kind == "done":
            self.marks[file_index] = _INF
        elif kind == "whole":
            self.whole.add(file_index)
        elif kind == "end":
            self.end = message
            self.marks[file_index] = _INF
        elif kind == "error":
            raise WorkerFailed(f"replay worker failed:\n{message[2]}")
        else:  # "det", "quic" or "learn": (file, kind, ts, ...)
            self.pending.append(message)

    def _wait(self, file_index: int, ts: int) -> int:
        """Block until the worker is past ``ts`` in this file; return its progress there."""
        marks = self.marks
        while marks.get(file_index, -1) < ts:
            self._receive()
        return marks[file_index]

    def _apply(self, file_index: int, ts: int) -> int:
        """Apply the worker's messages up to ``ts`` of this file; return the next one's time."""
        pending = self.pending
        engine = self.engine
        while pending:
            message = pending[0]
            if message[0] > file_index:
                return _INF
            if message[0] == file_index and message[2] > ts:
                return message[2]
            pending.popleft()
            kind = message[1]
            if kind == "det":
                self._detection(message[2], message[3])
            elif kind == "quic":
                _, _, when, header, extra, hello = message
                engine._quic_hello(_packet(when, header, extra), hello)
            else:
                _, _, when, address, ttl, match, recipient = message
                engine.resolved.sweep(when)
                engine.resolved.learn(when, address, ttl, match, recipient)
        return _INF

    def _detection(self, ts: int, found: _Found) -> None:
        """A worker's detection, made here at its place in the capture: deduplicated against
        this process's DNS transactions, counted, and attributed with the identity traffic
        read so far (which is exactly what precedes it)."""
        engine = self.engine
        if found.transaction is not None and engine._seen_transaction(found.transaction, ts):
            return
        engine._emit(
            _packet(ts, found.header, found.extra),
            found.evidence,
            found.protocol,
            found.transport,
            found.match,
            found.details,
            found.action,
            found.reply,
        )

    def run(self, paths: list[Path]) -> None:
        engine = self.engine
        process = engine.process
        stats = self.stats
        for file_index, path in enumerate(paths):
            stats.files += 1
            rstats = ReaderStats()
            horizon = self.marks.get(file_index, -1)
            following = self._apply(file_index, -1)
            yielded = 0
            try:
                with filtered_stream(path, filter_for_file(path, self.ports, "main")) as stream:
                    for ts, linktype, data, _wirelen in read_frames(stream, rstats):
                        yielded += 1
                        if ts > horizon:
                            horizon = self._wait(file_index, ts)
                            following = self._apply(file_index, ts)
                        elif ts >= following:
                            following = self._apply(file_index, ts)
                        process(ts, linktype, data)
                stats.prefiltered_files += 1
                account_reader(stats, rstats, path)
            except (PrefilterUnavailable, CaptureFormatError) as exc:
                account_reader(stats, rstats, path)
                if yielded:
                    stats.prefiltered_files += 1
                    stats.warnings.append(partial_read_warning(path, exc))
                else:
                    self._wait(file_index, _INF)
                    self._apply(file_index, _INF)
                    self._whole_file(file_index, path, exc, stats)
                    continue
            self._wait(file_index, _INF)
            self._apply(file_index, _INF)
            if file_index in self.whole:
                stats.warnings.append(
                    f"{path}: its DNS answers and QUIC were not read (tcpdump refused the "
                    "worker's half of the filter); re-run this file with --workers 1"
                )
        while self.end is None:
            self._receive()
        _, _, counters, worker_stats, worker_replay = self.end
        engine.absorb(counters, worker_stats)
        stats.frames += worker_replay.frames
        stats.bytes += worker_replay.bytes
        for warning in worker_replay.warnings:
            if warning not in stats.warnings:
                stats.warnings.append(warning)

    def _whole_file(self, file_index: int, path: Path, exc: Exception, stats: ReplayStats) -> None:
        """tcpdump refused the file: read it all here, DNS included, as one process would."""
        stats.warnings.append(f"{path}: prefilter unavailable ({exc}); reading all packets")
        if file_index not in self.whole:
            # The worker's tcpdump read its half of the file that this one's refused: reading
            # the whole here would report that half twice, so the worker's share stands.
            stats.warnings.append(
                f"{path}: only its DNS answers and QUIC were read (tcpdump refused the main "
                "half of the filter); re-run this file with --workers 1"
            )
            return
        stats.unfiltered_files += 1
        rstats = ReaderStats()
        process = self.engine.process
        with open(path, "rb") as f:
            try:
                for ts, linktype, data, _wirelen in read_frames(f, rstats):
                    process(ts, linktype, data)
            except CaptureFormatError as err:
                stats.warnings.append(f"{path}: {err}")
        account_reader(stats, rstats, path)
