"""Evidence: the packets behind an alert, as a pcapng file an investigator can open.

An alert says *that* a workstation reached a face-search service; a disciplinary or legal
process will ask *how we know*.  The answer is the packets themselves -- the DNS exchange, the
TCP handshake and ClientHello, the QUIC Initials -- in a file that Wireshark opens, whose
SHA-256 is recorded in the alert so nobody can later swap it.

How it fits the pipeline (sans-IO except for the one file write):

* ``remember(ts_ns, linktype, frame, flow_key)`` for packets of flows that may become
  evidence.  ``flow_key`` is the flow's **Community ID string** (``1:...``), the same value
  events carry in ``network.community_id``, so an alert can name its flows without the
  pipeline keeping any other index.  Each flow keeps its first ``per_flow_packets // 2``
  packets (the handshake and the hello: what proves the access) and a ring of its latest
  ones (so a DNS query on a reused port, or the answer that follows it, is not lost behind
  older traffic).
* ``write_for(alert, flow_keys)`` writes those flows' packets to ``<event-id>.pcapng`` and
  returns an :class:`EvidenceFile` (path, SHA-256, packet count) to put in the alert with
  :func:`attach_evidence`; ``defer``/``due`` hold an alert for a few seconds of packet time
  first so that answers and the rest of a handshake are in the file too.

Privacy: packets live in memory only, bounded per flow, in total bytes and in flow count,
and are dropped when their flow has been idle for ``ring_seconds`` or is pushed out (least
recently used first; every drop is counted).  Nothing reaches the disk unless an alert names
its flow, and ``forget`` lets the pipeline drop a flow as soon as it knows it is not vendor
traffic.

Crash safety: a file is written under a temporary name in the same directory, fsynced,
renamed over its final name with ``os.replace`` and the directory fsynced; so after a crash
every ``*.pcapng`` here is complete, and leftover temporaries are removed at the next start.
Write the evidence *before* the alert that names it goes out, and an alert never points at a
missing or half-written file (unless the size cap deleted it later, which is counted).

Time is packet time throughout (the rate limit too), so a replay writes the same files.
Not thread-safe: one owner, the capture thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import struct
import tempfile
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor import __version__
from monitor.alerts.engine import parse_timestamp_us, subject_of

__all__ = [
    "EvidenceFile",
    "EvidenceRecorder",
    "EvidenceStats",
    "attach_evidence",
    "encode_pcapng",
]

_SHB = 0x0A0D0D0A
_IDB = 1
_EPB = 6
_BOM = 0x1A2B3C4D
_OPT_END = 0
_OPT_COMMENT = 1
_SHB_USERAPPL = 4
_IF_TSRESOL = 9
#: Rough per-packet bookkeeping cost, so a flood of tiny frames is bounded too.
_PACKET_OVERHEAD = 96
#: Event ids become file names: only these characters, so no id can escape the directory.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SUFFIX = ".pcapng"
_TEMP_PREFIX = ".evidence-"
_TEMP_SUFFIX = ".pcapng.part"
_MINUTE_NS = 60 * 1_000_000_000

#: One remembered packet: (timestamp ns, link type, frame bytes, length on the wire, flow key).
Packet = tuple[int, int, bytes, int, str]


@dataclass(frozen=True, slots=True)
class EvidenceFile:
    """A written evidence file; ``sha256`` is of the final bytes on disk."""

    path: Path
    sha256: str
    packets: int
    bytes: int

    def as_field(self) -> dict[str, Any]:
        """The value of ``alert.evidence`` in a document."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "packets": self.packets,
            "bytes": self.bytes,
            "format": "pcapng",
        }


@dataclass(slots=True)
class EvidenceStats:
    """Counters for the metrics endpoint; all only increase except the two gauges at the end."""

    packets_remembered: int = 0
    #: Pushed out of a flow's ring by newer packets of the same flow.
    packets_overwritten: int = 0
    #: Frames bigger than the whole memory budget, or with a link type pcapng cannot carry.
    packets_refused: int = 0
    #: Flows dropped, least recently used first, to stay within memory or flow-count bounds.
    flows_evicted: int = 0
    #: Flows dropped after ``ring_seconds`` of packet time without a packet.
    flows_expired: int = 0
    #: Flows dropped by ``forget`` (the pipeline knew they were not vendor traffic).
    flows_forgotten: int = 0
    files_written: int = 0
    bytes_written: int = 0
    #: ``write_for`` for an event whose file already exists: the same file is returned.
    files_reused: int = 0
    #: Not written because ``max_files_per_minute`` were already written in the last minute.
    files_rate_limited: int = 0
    #: Oldest files deleted to keep the directory under ``max_bytes``.
    files_deleted: int = 0
    bytes_deleted: int = 0
    #: ``write_for`` found no remembered packet for the flows it was given.
    no_packets: int = 0
    #: A single file would be larger than ``max_bytes``; not written.
    too_large: int = 0
    write_errors: int = 0
    #: Temporary files a crash left behind, removed at start.
    stale_temp_removed: int = 0
    memory_bytes: int = 0
    flows: int = 0


class _FlowRing:
    """The first packets of a flow, kept, and a ring of its latest ones."""

    __slots__ = ("bytes", "head", "last_ns", "tail")

    def __init__(self, tail_cap: int) -> None:
        self.head: list[Packet] = []
        self.tail: deque[Packet] = deque(maxlen=tail_cap)
        self.bytes = 0
        self.last_ns = 0

    def packets(self) -> list[Packet]:
        return [*self.head, *self.tail]


@dataclass(slots=True)
class _Pending:
    """A document held for ``defer``; ``key`` is its alert's (subject type, id, vendor)."""

    due_ns: int
    seq: int
    doc: dict[str, Any]
    flows: list[str]
    key: tuple[str, str, str] | None


def _cost(data: bytes) -> int:
    return len(data) + _PACKET_OVERHEAD


class EvidenceRecorder:
    """Remembers candidate packets per flow and writes them out for alerts.

    ``max_bytes`` caps the evidence directory on disk (oldest files deleted first);
    ``max_memory_bytes`` and ``max_flows`` cap what is held in memory; ``ring_seconds`` is how
    long (packet time) a flow's packets are kept after its last packet.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int = 1 << 30,
        per_flow_packets: int = 32,
        ring_seconds: float = 300.0,
        *,
        max_memory_bytes: int = 64 << 20,
        max_flows: int = 65_536,
        max_files_per_minute: int = 60,
        max_pending: int = 1_000,
    ) -> None:
        checks = {
            "max_bytes": max_bytes >= 1,
            "per_flow_packets": per_flow_packets >= 1,
            "ring_seconds": ring_seconds > 0,
            "max_memory_bytes": max_memory_bytes >= 1,
            "max_flows": max_flows >= 1,
            "max_files_per_minute": max_files_per_minute >= 1,
            "max_pending": max_pending >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} out of range")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.per_flow_packets = per_flow_packets
        self.ring_ns = round(ring_seconds * 1_000_000_000)
        self.max_memory_bytes = max_memory_bytes
        self.max_flows = max_flows
        self.max_files_per_minute = max_files_per_minute
        self.max_pending = max_pending
        self.stats = EvidenceStats()
        self.last_error: str | None = None
        self._head_cap = per_flow_packets - per_flow_packets // 2
        self._tail_cap = per_flow_packets // 2
        self._flows: OrderedDict[str, _FlowRing] = OrderedDict()
        self._now_ns = 0
        self._recent_writes: deque[int] = deque()
        #: Files on disk that this recorder manages, oldest first: name -> size.
        self._files: OrderedDict[str, int] = OrderedDict()
        self._disk_bytes = 0
        #: Recently written or verified files by event id, so updates of one alert reuse them.
        self._known: OrderedDict[str, EvidenceFile] = OrderedDict()
        self._pending: list[_Pending] = []
        self._pending_seq = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._scan()

    # -- memory side -------------------------------------------------------------------------

    @property
    def now_ns(self) -> int:
        """The latest packet time seen."""
        return self._now_ns

    def remember(
        self,
        ts_ns: int,
        linktype: int,
        frame: bytes,
        flow_key: str,
        orig_len: int | None = None,
    ) -> None:
        """Keep a packet of ``flow_key`` (a Community ID) in case an alert names the flow."""
        data = bytes(frame)
        cost = _cost(data)
        if not 0 <= linktype <= 0xFFFF or cost > self.max_memory_bytes:
            self.stats.packets_refused += 1
            return
        ts_ns = max(0, int(ts_ns))
        if ts_ns > self._now_ns:
            self._now_ns = ts_ns
        self._expire()
        ring = self._flows.get(flow_key)
        if ring is None:
            while len(self._flows) >= self.max_flows:
                self._drop_lru()
            ring = _FlowRing(self._tail_cap)
            self._flows[flow_key] = ring
        else:
            self._flows.move_to_end(flow_key)
        packet: Packet = (ts_ns, linktype, data, max(orig_len or 0, len(data)), flow_key)
        if len(ring.head) < self._head_cap:
            ring.head.append(packet)
        elif self._tail_cap == 0:
            self.stats.packets_overwritten += 1
            self.stats.packets_remembered += 1
            ring.last_ns = max(ring.last_ns, ts_ns)
            return
        else:
            if len(ring.tail) == self._tail_cap:
                old = ring.tail[0]
                ring.bytes -= _cost(old[2])
                self.stats.memory_bytes -= _cost(old[2])
                self.stats.packets_overwritten += 1
            ring.tail.append(packet)
        ring.bytes += cost
        ring.last_ns = max(ring.last_ns, ts_ns)
        self.stats.memory_bytes += cost
        self.stats.packets_remembered += 1
        while self.stats.memory_bytes > self.max_memory_bytes and len(self._flows) > 1:
            self._drop_lru()
        if self.stats.memory_bytes > self.max_memory_bytes:
            # The only flow left is this one and it alone is over budget: shed its tail.
            while ring.tail and ring.bytes > self.max_memory_bytes:
                old = ring.tail.popleft()
                ring.bytes -= _cost(old[2])
                self.stats.memory_bytes -= _cost(old[2])
                self.stats.packets_overwritten += 1
        self.stats.flows = len(self._flows)

    def forget(self, flow_key: str) -> bool:
        """Drop a flow's packets now (e.g. its SNI matched nothing); True if it was held."""
        ring = self._flows.pop(flow_key, None)
        if ring is None:
            return False
        self.stats.memory_bytes -= ring.bytes
        self.stats.flows_forgotten += 1
        self.stats.flows = len(self._flows)
        return True

    def packets_of(self, flow_key: str) -> list[Packet]:
        """What is held for a flow, oldest first (for tests and diagnostics)."""
        ring = self._flows.get(flow_key)
        return [] if ring is None else ring.packets()

    def _drop_lru(self) -> None:
        _, ring = self._flows.popitem(last=False)
        self.stats.memory_bytes -= ring.bytes
        self.stats.flows_evicted += 1
        self.stats.flows = len(self._flows)

    def _expire(self) -> None:
        horizon = self._now_ns - self.ring_ns
        while self._flows:
            ring = next(iter(self._flows.values()))
            if ring.last_ns >= horizon:
                break
            self._flows.popitem(last=False)
            self.stats.memory_bytes -= ring.bytes
            self.stats.flows_expired += 1
        self.stats.flows = len(self._flows)

    # -- disk side ---------------------------------------------------------------------------

    def write_for(
        self,
        doc: Mapping[str, Any],
        flow_keys: Iterable[str] | None = None,
        *,
        now_ns: int | None = None,
    ) -> EvidenceFile | None:
        """Write the packets of ``flow_keys`` (default: the document's own
        ``network.community_id``) to ``<event.id>.pcapng``; None if nothing was written
        (the reason is counted in ``stats``, an OS error also kept in ``last_error``).

        Later updates of the same alert (same ``event.id``) get the file already written:
        one alert, one evidence file, one hash.
        """
        event_id = _event_id(doc)
        name = _file_name(event_id)
        path = self.directory / name
        if name in self._files or path.is_file():
            # Written before (this run, or before a restart): the same alert, the same file.
            existing = self._known.get(event_id)
            if existing is None or not path.is_file():
                try:
                    existing = self._verify(path)
                except FileNotFoundError:
                    existing = None
                    self._untrack(name)
                except OSError as exc:
                    self.last_error = f"{path}: {exc}"
                    self.stats.write_errors += 1
                    return None
            if existing is not None:
                self.stats.files_reused += 1
                self._remember_known(event_id, existing)
                if name not in self._files:
                    self._track(name, existing.bytes)
                return existing

        keys = _flow_keys(doc) if flow_keys is None else list(dict.fromkeys(flow_keys))
        packets: list[Packet] = []
        for key in keys:
            ring = self._flows.get(key)
            if ring is not None:
                packets.extend(ring.packets())
        if not packets:
            self.stats.no_packets += 1
            return None
        packets.sort(key=lambda p: p[0])

        now = self._now_ns if now_ns is None else now_ns
        if now == 0:
            now = _doc_time_ns(doc)
        if not self._rate_ok(now):
            self.stats.files_rate_limited += 1
            return None
        data = encode_pcapng(event_id, packets, kind=_doc_kind(doc))
        if len(data) > self.max_bytes:
            self.stats.too_large += 1
            return None
        try:
            self._write_atomically(path, data)
        except OSError as exc:
            self.last_error = f"{path}: {exc}"
            self.stats.write_errors += 1
            return None
        self._recent_writes.append(now)
        result = EvidenceFile(path, hashlib.sha256(data).hexdigest(), len(packets), len(data))
        self.stats.files_written += 1
        self.stats.bytes_written += len(data)
        self._track(name, len(data))
        self._remember_known(event_id, result)
        self._enforce_cap(keep=name)
        return result

    def defer(
        self,
        doc: dict[str, Any],
        flow_keys: Iterable[str] | None = None,
        *,
        settle_seconds: float = 2.0,
    ) -> list[dict[str, Any]]:
        """Hold a document until ``settle_seconds`` of packet time have passed, so the DNS
        answer, the connection that follows the lookup (see ``note``) and the rest of the
        handshake are in its evidence too.

        Returns documents that are ready now: normally none; when ``max_pending`` documents
        are already held, the oldest is written out early and returned, so memory stays
        bounded.  Call ``due`` as packet time advances and ``drain`` at shutdown.
        """
        self._pending_seq += 1
        keys = _flow_keys(doc) if flow_keys is None else list(dict.fromkeys(flow_keys))
        at = self._now_ns + round(settle_seconds * 1_000_000_000)
        self._pending.append(_Pending(at, self._pending_seq, doc, keys, _alert_key(doc)))
        out: list[dict[str, Any]] = []
        while len(self._pending) > self.max_pending:
            self._pending.sort(key=lambda p: (p.due_ns, p.seq))
            held = self._pending.pop(0)
            out.append(self._finish(held))
        return out

    def note(self, event: Mapping[str, Any]) -> None:
        """Add a vendor-access event's flow to the held alert of the same subject and vendor.

        An alert opens on the first access -- usually the DNS lookup -- and the TLS or QUIC
        connection that proves the visit follows milliseconds later in another flow; feeding
        every annotated event here puts that flow in the alert's evidence as well.
        """
        if not self._pending:
            return
        ev = event.get("event")
        if not isinstance(ev, Mapping) or ev.get("kind") != "event":
            return
        if ev.get("action") != "vendor-access":
            return
        match = event.get("match")
        vendor = match.get("vendor") if isinstance(match, Mapping) else None
        subject = subject_of(event)
        flows = _flow_keys(event)
        if subject is None or not isinstance(vendor, str) or not flows:
            return
        key = (subject.type, subject.id, vendor)
        for held in self._pending:
            if held.key == key and flows[0] not in held.flows and len(held.flows) < 64:
                held.flows.append(flows[0])

    def due(self, now_ns: int | None = None) -> list[dict[str, Any]]:
        """Held documents whose settle time has passed, with their evidence attached."""
        now = self._now_ns if now_ns is None else now_ns
        ready = sorted(
            (p for p in self._pending if p.due_ns <= now), key=lambda p: (p.due_ns, p.seq)
        )
        if not ready:
            return []
        self._pending = [p for p in self._pending if p.due_ns > now]
        return [self._finish(p) for p in ready]

    def drain(self) -> list[dict[str, Any]]:
        """Every held document, with evidence attached (shutdown)."""
        ready = sorted(self._pending, key=lambda p: (p.due_ns, p.seq))
        self._pending = []
        return [self._finish(p) for p in ready]

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _finish(self, held: _Pending) -> dict[str, Any]:
        evidence = self.write_for(held.doc, held.flows)
        return held.doc if evidence is None else attach_evidence(held.doc, evidence)

    def _rate_ok(self, now: int) -> bool:
        recent = self._recent_writes
        if recent and now < recent[-1] - _MINUTE_NS:
            # Packet time went back (another capture file): the old window means nothing.
            recent.clear()
        while recent and recent[0] <= now - _MINUTE_NS:
            recent.popleft()
        return len(recent) < self.max_files_per_minute

    def _write_atomically(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o640)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _verify(self, path: Path) -> EvidenceFile:
        data = path.read_bytes()
        packets = 0
        pos = 0
        # Count EPBs by walking the block headers: cheap, and proves the file is whole.
        while pos + 12 <= len(data):
            btype, blen = struct.unpack_from("<II", data, pos)
            if blen < 12 or pos + blen > len(data):
                break
            packets += btype == _EPB
            pos += blen
        return EvidenceFile(path, hashlib.sha256(data).hexdigest(), packets, len(data))

    def _scan(self) -> None:
        """Adopt the files already here (oldest first) and remove a crash's temporaries."""
        found: list[tuple[int, str, int]] = []
        for entry in os.scandir(self.directory):
            if not entry.is_file(follow_symlinks=False):
                continue
            if entry.name.startswith(_TEMP_PREFIX) and entry.name.endswith(_TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    self.stats.stale_temp_removed += 1
                continue
            stem = entry.name[: -len(_SUFFIX)] if entry.name.endswith(_SUFFIX) else None
            if stem is not None and _SAFE_ID.fullmatch(stem):
                st = entry.stat(follow_symlinks=False)
                found.append((st.st_mtime_ns, entry.name, st.st_size))
        for _, name, size in sorted(found):
            self._track(name, size)

    def _untrack(self, name: str) -> None:
        old = self._files.pop(name, None)
        if old is not None:
            self._disk_bytes -= old

    def _track(self, name: str, size: int) -> None:
        self._untrack(name)
        self._files[name] = size
        self._disk_bytes += size

    def _enforce_cap(self, keep: str) -> None:
        deleted = False
        while self._disk_bytes > self.max_bytes and len(self._files) > 1:
            name, size = next(iter(self._files.items()))
            if name == keep:
                self._files.move_to_end(name)
                continue
            del self._files[name]
            self._disk_bytes -= size
            try:
                os.unlink(self.directory / name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.last_error = f"{self.directory / name}: {exc}"
                self.stats.write_errors += 1
                continue
            self.stats.files_deleted += 1
            self.stats.bytes_deleted += size
            deleted = True
            stem = name[: -len(_SUFFIX)]
            for event_id, ev in list(self._known.items()):
                if ev.path.name == name or event_id == stem:
                    del self._known[event_id]
        if deleted:
            with contextlib.suppress(OSError):
                self._fsync_directory()

    def _remember_known(self, event_id: str, evidence: EvidenceFile) -> None:
        self._known[event_id] = evidence
        self._known.move_to_end(event_id)
        while len(self._known) > 10_000:
            self._known.popitem(last=False)

    @property
    def disk_bytes(self) -> int:
        """Bytes of evidence files in the directory, as this recorder accounts them."""
        return self._disk_bytes


def attach_evidence(doc: Mapping[str, Any], evidence: EvidenceFile) -> dict[str, Any]:
    """A copy of ``doc`` naming its evidence: ``alert.evidence`` in an alert (``evidence``
    in any other document) and the hash in ECS ``related.hash`` for pivoting."""
    out = dict(doc)
    field = evidence.as_field()
    alert = out.get("alert")
    if isinstance(alert, Mapping):
        out["alert"] = {**alert, "evidence": field}
    else:
        out["evidence"] = field
    related = out.get("related")
    related = dict(related) if isinstance(related, Mapping) else {}
    hashes = list(related.get("hash") or [])
    if evidence.sha256 not in hashes:
        hashes.append(evidence.sha256)
    related["hash"] = hashes
    out["related"] = related
    return out


# -- pcapng encoding ---------------------------------------------------------------------------


def _option(code: int, value: bytes) -> bytes:
    pad = -len(value) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


_END_OF_OPTIONS = struct.pack("<HH", _OPT_END, 0)


def encode_pcapng(event_id: str, packets: Iterable[Packet], *, kind: str = "alert") -> bytes:
    """One pcapng section: an SHB naming this program, one interface per link type with
    nanosecond timestamps, and one EPB per packet whose comment names the event and flow."""
    shb_body = (
        struct.pack("<IHHq", _BOM, 1, 0, -1)
        + _option(_SHB_USERAPPL, f"egress-monitor {__version__}".encode())
        + _option(_OPT_COMMENT, f"evidence for {kind} {event_id}".encode())
        + _END_OF_OPTIONS
    )
    blocks = [_block(_SHB, shb_body)]
    interfaces: dict[int, int] = {}
    for ts_ns, linktype, data, orig_len, flow_key in packets:
        ifid = interfaces.get(linktype)
        if ifid is None:
            ifid = interfaces[linktype] = len(interfaces)
            idb_body = (
                struct.pack("<HHI", linktype, 0, 0)
                + _option(_IF_TSRESOL, bytes([9]))
                + _END_OF_OPTIONS
            )
            blocks.append(_block(_IDB, idb_body))
        ts = ts_ns & 0xFFFF_FFFF_FFFF_FFFF
        comment = f"egress-monitor: {kind} {event_id}, flow {flow_key}"
        epb_body = (
            struct.pack(
                "<IIIII",
                ifid,
                ts >> 32,
                ts & 0xFFFF_FFFF,
                len(data),
                min(max(orig_len, len(data)), 0xFFFF_FFFF),
            )
            + data
            + b"\0" * (-len(data) % 4)
            + _option(_OPT_COMMENT, comment.encode("utf-8", "replace"))
            + _END_OF_OPTIONS
        )
        blocks.append(_block(_EPB, epb_body))
    return b"".join(blocks)


# -- document helpers --------------------------------------------------------------------------


def _event_id(doc: Mapping[str, Any]) -> str:
    ev = doc.get("event")
    event_id = ev.get("id") if isinstance(ev, Mapping) else None
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("document has no event.id to name its evidence after")
    return event_id


def _doc_kind(doc: Mapping[str, Any]) -> str:
    ev = doc.get("event")
    kind = ev.get("kind") if isinstance(ev, Mapping) else None
    return kind if kind in ("alert", "event") else "event"


def _file_name(event_id: str) -> str:
    if _SAFE_ID.fullmatch(event_id):
        return event_id + _SUFFIX
    # Ids are hex from the engine; anything else is hashed rather than trusted as a path.
    return "id-" + hashlib.sha256(event_id.encode("utf-8", "replace")).hexdigest()[:40] + _SUFFIX


def _flow_keys(doc: Mapping[str, Any]) -> list[str]:
    network = doc.get("network")
    cid = network.get("community_id") if isinstance(network, Mapping) else None
    return [cid] if isinstance(cid, str) and cid else []


def _alert_key(doc: Mapping[str, Any]) -> tuple[str, str, str] | None:
    alert = doc.get("alert")
    if not isinstance(alert, Mapping):
        return None
    subject = alert.get("subject")
    vendor = alert.get("vendor")
    if not isinstance(subject, Mapping) or not isinstance(vendor, str):
        return None
    kind, ident = subject.get("type"), subject.get("id")
    if not isinstance(kind, str) or not isinstance(ident, str):
        return None
    return (kind, ident, vendor)


def _doc_time_ns(doc: Mapping[str, Any]) -> int:
    ts_us = parse_timestamp_us(doc.get("@timestamp"))
    return 0 if ts_us is None else max(0, ts_us) * 1000
