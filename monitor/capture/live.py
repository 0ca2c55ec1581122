"""Live capture for the sensor daemon: one filtered AF_PACKET socket per interface.

Why it looks like this:

* **scapy opens the sockets, but never parses.** Each interface gets a scapy
  ``L2ListenSocket`` (promiscuous membership, filter attached before ``bind`` so nothing unfiltered
  is ever queued, queue flushed). Frames are then read with ``recvmsg_into`` on the socket's file
  descriptor into a reused buffer: one copy per frame, no scapy layers, and the ancillary data
  that scapy's own receive path reduces to a float timestamp is kept whole.
* **The VLAN tag is put back.** On receive the kernel moves the outermost 802.1Q/802.1ad tag into
  the socket-buffer metadata before taps and filters see the frame, so the bytes a packet socket
  returns are untagged. ``PACKET_AUXDATA`` reports the tag (``tp_vlan_tci``, ``tp_vlan_tpid``);
  it is re-inserted after the MAC addresses, so the decoder sees ``vlan=110`` exactly as in a
  capture file, and ``wirelen`` grows by the 4 bytes. An inner QinQ tag stays in the bytes.
* **Timestamps** are the kernel's receive time from ``SO_TIMESTAMPNS`` ancillary data (nanoseconds,
  taken when the frame entered the stack, so queueing in the socket does not skew them);
  ``time.time_ns()`` at read time only if a frame arrives without one.
* **Outgoing frames** are kept (on a host interface the client's own packets are outgoing), except
  on loopback, where every packet would otherwise be seen twice (libpcap does the same).
* **Counters.** ``PACKET_STATISTICS`` is reset by the kernel on every read, so it is accumulated
  here. Its ``tp_packets`` counts frames that passed the filter *including* those dropped because
  the socket queue was full (``tp_drops``). Interface counters come from
  ``/sys/class/net/IFACE/statistics`` and are reported as deltas since the capture opened.

The filter and VLAN tags, live versus file (libpcap 1.10.3, Linux 6.x, measured on veth pairs in
network namespaces by ``tests/test_capture_live.py``):

* Compiled for a **live handle** (``tcpdump -d -i IFACE``, :func:`compile_for_interface`), the first
  ``vlan`` reads metadata and the offsets depend on where the tag is::

      (003) ldb [vlanp]          ; SKF_AD_VLAN_TAG_PRESENT
      (004) jeq #0x1  jt 12 jf 5 ; tag in metadata: offsets stay as they are
      (005) ld  #0x4 ; st M[0]   ; otherwise test the bytes and shift by 4
      (008) ldh [12] ; jeq #0x8100 / #0x88a8 / #0x9100

* Compiled for a **file** (``pcap_open_dead``; also what scapy's ``compile_filter`` does, because
  it guesses the link type from the interface before it would open it), ``vlan`` is only
  ``ldh [12]; jeq #0x8100/#0x88a8/#0x9100`` and everything after it is shifted by 4.

Consequences on a live socket, where a single tag is never in the bytes: ``vlan and udp port 53``
compiled for a file never matches tagged traffic, while plain ``udp port 53`` matches tagged and
untagged traffic alike; on a file it is the other way round. The prefilter's shape,
``CORE or (vlan and (CORE or (vlan and CORE)))`` (:func:`monitor.capture.prefilter.build_filter`),
is therefore safe both ways: tagged frames on a live socket look untagged and match ``CORE``
directly, and the ``vlan`` branches are what a file (or an inner QinQ tag, which stays in the
bytes) needs. The tests prove it: on real tagged and untagged client/server traffic, crafted
QinQ frames and a tcpreplay of the sample captures and of the benchmark workload, both compile
targets keep exactly the frames that libpcap keeps when the same frames are filtered as a file,
so no live variant of the expression is needed. :class:`LiveCapture` still compiles for the
interface by default, so that expressions written for ``tcpdump -i`` (``vlan 110 and ...``) mean
the same to the sensor; ``filter_target="file"`` attaches the file compile instead.

Open as root, then call :func:`monitor.capture.privileges.drop_privileges`.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from monitor.capture.bpf_compile import (
    BpfProgram,
    CompileTarget,
    FilterCompileError,
    attach,
    compile_for_interface,
    compile_for_linktype,
)
from monitor.capture.pcapfile import Frame

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ETH_P_8021Q = 0x8100

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
LINKTYPE_ETHERNET = 1

DEFAULT_SNAPLEN = 262144  # libpcap's default; a ClientHello never needs more
# Absorbs bursts while the engine is busy; SO_RCVBUFFORCE (root) is not capped by rmem_max.
DEFAULT_RCVBUF = 32 << 20
# Frames read per interface per poll, so one busy interface cannot starve the others.
DEFAULT_BATCH = 1024

_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_TIMESPEC = struct.Struct("=qq")
_TIMESPEC32 = struct.Struct("=ii")
_TPACKET_STATS = struct.Struct("=II")
_ANC_SIZE = socket.CMSG_SPACE(_AUXDATA.size) + socket.CMSG_SPACE(_TIMESPEC.size) + 64
_IF_COUNTERS = ("rx_packets", "rx_bytes", "rx_dropped", "tx_packets")


class CaptureOpenError(OSError):
    """An interface cannot be captured on (missing, unsupported link type, no privilege)."""


@dataclass(slots=True)
class LiveStats:
    """Counters of one interface since the capture opened."""

    interface: str
    packets: int = 0  # passed the kernel filter, including ``drops`` (PACKET_STATISTICS)
    drops: int = 0  # passed the filter but found the socket queue full
    frames: int = 0  # handed to the caller
    bytes: int = 0  # captured bytes handed to the caller, tags included
    vlan_tags_restored: int = 0
    truncated: int = 0  # longer than the snap length
    loopback_duplicates: int = 0  # outgoing copies on loopback, skipped
    errors: int = 0  # receive errors (ENETDOWN while the interface was down, ...)
    last_error: str = ""
    if_rx_packets: int | None = None  # /sys/class/net counters; None when unreadable
    if_rx_bytes: int | None = None
    if_rx_dropped: int | None = None
    if_tx_packets: int | None = None


@dataclass(frozen=True, slots=True)
class LiveInterface:
    """How one interface was opened: what the operator needs to trust the counters."""

    name: str
    linktype: int
    promiscuous: bool
    filter_target: CompileTarget | None
    filter_instructions: int
    filter_reads_vlan_metadata: bool
    rcvbuf: int  # as the kernel reports it (twice what was granted)


class _Handle:
    __slots__ = (
        "baseline",
        "buf",
        "fd",
        "info",
        "linktype",
        "loopback",
        "scapy_sock",
        "sock",
        "stats",
        "view",
    )

    def __init__(
        self, scapy_sock: object, sock: socket.socket, info: LiveInterface, snaplen: int
    ) -> None:
        self.scapy_sock = scapy_sock
        self.sock = sock
        self.fd = sock.fileno()
        self.info = info
        self.linktype = info.linktype
        self.loopback = False
        self.buf = bytearray(snaplen)
        self.view = memoryview(self.buf)
        self.stats = LiveStats(info.name)
        self.baseline: dict[str, int] = {}


def _sysfs_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _if_counters(name: str) -> dict[str, int]:
    base = Path("/sys/class/net") / name / "statistics"
    out: dict[str, int] = {}
    for counter in _IF_COUNTERS:
        value = _sysfs_int(base / counter)
        if value is not None:
            out[counter] = value
    return out


class LiveCapture:
    """Frames from several interfaces at once, filtered in the kernel.

    ``poll(timeout)`` returns what is ready (possibly nothing), so a daemon loop can check its
    signal flags between calls; ``frames(stop)`` wraps that as an iterator. Open it as root (or
    with CAP_NET_RAW and CAP_NET_ADMIN for SO_RCVBUFFORCE), then drop privileges: reading,
    statistics and ``close()`` need none.
    """

    def __init__(
        self,
        interfaces: Sequence[str],
        bpf: str | None,
        *,
        promiscuous: bool = True,
        filter_target: CompileTarget = "interface",
        snaplen: int = DEFAULT_SNAPLEN,
        rcvbuf: int = DEFAULT_RCVBUF,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        if not interfaces:
            raise ValueError("at least one interface is needed")
        if len(set(interfaces)) != len(interfaces):
            raise ValueError(f"interface listed twice: {list(interfaces)}")
        self.snaplen = snaplen
        self.batch = batch
        self._handles: list[_Handle] = []
        self._by_fd: dict[int, _Handle] = {}
        self._poller = select.poll()
        self.closed = False
        try:
            for name in interfaces:
                h = self._open(name, bpf, promiscuous, filter_target, snaplen, rcvbuf)
                self._handles.append(h)
                self._by_fd[h.fd] = h
                self._poller.register(h.fd, select.POLLIN)
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------------------------

    @staticmethod
    def _open(
        name: str,
        bpf: str | None,
        promiscuous: bool,
        target: CompileTarget,
        snaplen: int,
        rcvbuf: int,
    ) -> _Handle:
        hatype = _sysfs_int(Path("/sys/class/net") / name / "type")
        if hatype is None:
            raise CaptureOpenError(errno.ENODEV, f"{name}: no such network interface")
        if hatype not in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
            raise CaptureOpenError(
                errno.EPROTONOSUPPORT,
                f"{name}: ARP hardware type {hatype} is not Ethernet; capture a mirror or "
                "Ethernet interface instead",
            )
        program: BpfProgram | None = None
        if bpf is not None:
            # Compiled first so a bad expression fails before any socket exists.
            if target == "interface":
                program = compile_for_interface(bpf, name, snaplen)
            else:
                program = compile_for_linktype(bpf, LINKTYPE_ETHERNET, snaplen)

        from scapy.arch.linux import L2ListenSocket
        from scapy.error import Scapy_Exception
        from scapy.layers import l2  # noqa: F401  (registers Ethernet, or scapy warns per socket)

        try:
            # scapy attaches its own compile of ``bpf`` before bind and flushes the queue; that
            # program is the "file" compile with a 65535 snap length, correct for the prefilter's
            # shape, so replacing it below never opens a window for unwanted frames.
            scapy_sock = L2ListenSocket(iface=name, promisc=promiscuous, filter=bpf)
        except Scapy_Exception as exc:
            raise FilterCompileError(f"{name}: {exc}") from exc
        except PermissionError as exc:
            raise CaptureOpenError(exc.errno, f"{name}: {exc.strerror} (needs root)") from exc
        sock: socket.socket = scapy_sock.ins
        try:
            if program is not None:
                attach(sock, program)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except BaseException:
            scapy_sock.close()
            raise
        info = LiveInterface(
            name=name,
            linktype=LINKTYPE_ETHERNET,
            promiscuous=promiscuous,
            filter_target=target if program is not None else None,
            filter_instructions=len(program) if program is not None else 0,
            filter_reads_vlan_metadata=program.reads_vlan_metadata if program else False,
            rcvbuf=granted,
        )
        h = _Handle(scapy_sock, sock, info, snaplen)
        h.loopback = hatype == ARPHRD_LOOPBACK
        # Start the counters at zero: what was flushed while opening is not the caller's.
        sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
        h.baseline = _if_counters(name)
        return h

    # -- reading ------------------------------------------------------------------------------

    @property
    def interfaces(self) -> dict[str, LiveInterface]:
        return {h.info.name: h.info for h in self._handles}

    def poll(self, timeout: float | None) -> list[Frame]:
        """Frames ready on any interface within ``timeout`` seconds (None: wait), oldest first."""
        grouped = self.poll_by_interface(timeout)
        if len(grouped) == 1:
            return next(iter(grouped.values()))
        merged = [f for frames in grouped.values() for f in frames]
        merged.sort(key=itemgetter(0))
        return merged

    def poll_by_interface(self, timeout: float | None) -> dict[str, list[Frame]]:
        """Like :meth:`poll`, keyed by interface, for callers that label events with it."""
        if self.closed:
            raise ValueError("capture is closed")
        ms = None if timeout is None else max(0, int(timeout * 1000))
        ready = self._poller.poll(ms)
        out: dict[str, list[Frame]] = {}
        for fd, _events in ready:
            h = self._by_fd.get(fd)
            if h is None:
                continue
            frames = self._drain(h)
            if frames:
                out[h.info.name] = frames
        return out

    def frames(
        self, stop: Callable[[], bool] = lambda: False, timeout: float = 0.25
    ) -> Iterator[Frame]:
        """Yield frames until ``stop()`` is true; it is checked at least every ``timeout`` s."""
        while not stop():
            yield from self.poll(timeout)

    def _drain(self, h: _Handle) -> list[Frame]:
        out: list[Frame] = []
        recv = h.sock.recvmsg_into
        buffers = [h.buf]
        view = h.view
        st = h.stats
        linktype = h.linktype
        loopback = h.loopback
        for _ in range(self.batch):
            try:
                n, ancdata, msg_flags, addr = recv(buffers, _ANC_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                # ENETDOWN once when the interface goes down; the socket resumes when it is up.
                st.errors += 1
                st.last_error = f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}"
                break
            if loopback and addr[2] == PACKET_OUTGOING:
                st.loopback_duplicates += 1
                continue
            ts = 0
            wirelen = n
            tag = b""
            for level, kind, cdata in ancdata:
                if level == SOL_PACKET and kind == PACKET_AUXDATA:
                    status, tp_len, _snap, _mac, _net, tci, tpid = _AUXDATA.unpack_from(cdata)
                    wirelen = tp_len
                    if status & TP_STATUS_VLAN_VALID or tci:
                        if not status & TP_STATUS_VLAN_TPID_VALID:
                            tpid = ETH_P_8021Q
                        tag = struct.pack("!HH", tpid, tci)
                elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    if len(cdata) >= 16:
                        sec, nsec = _TIMESPEC.unpack_from(cdata)
                    else:
                        sec, nsec = _TIMESPEC32.unpack_from(cdata)
                    ts = sec * 1_000_000_000 + nsec
            if not ts:
                ts = time.time_ns()
            if n < wirelen or msg_flags & socket.MSG_TRUNC:
                st.truncated += 1
            if tag and n >= 12:
                data = b"".join((view[:12], tag, view[12:n]))
                wirelen += 4
                st.vlan_tags_restored += 1
            else:
                data = bytes(view[:n])
            st.frames += 1
            st.bytes += len(data)
            out.append((ts, linktype, data, wirelen))
        return out

    # -- counters and shutdown ----------------------------------------------------------------

    def stats(self) -> dict[str, LiveStats]:
        """Accumulated kernel and interface counters per interface (reading resets the kernel's)."""
        out: dict[str, LiveStats] = {}
        for h in self._handles:
            st = h.stats
            if not self.closed:
                try:
                    raw = h.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
                    packets, drops = _TPACKET_STATS.unpack(raw)
                    st.packets += packets
                    st.drops += drops
                except OSError as exc:
                    st.errors += 1
                    st.last_error = f"PACKET_STATISTICS: {exc.strerror}"
            now = _if_counters(h.info.name)
            for counter in _IF_COUNTERS:
                value = now.get(counter)
                base = h.baseline.get(counter)
                delta = None if value is None or base is None else value - base
                setattr(st, "if_" + counter, delta)
            out[h.info.name] = st
        return out

    def close(self) -> None:
        """Close every socket (the promiscuous membership goes with it). Idempotent."""
        if self.closed:
            return
        self.stats()  # keep the last kernel counters readable after close
        self.closed = True
        for h in self._handles:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(h.fd)
            with contextlib.suppress(OSError):
                h.scapy_sock.close()  # type: ignore[attr-defined]

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
