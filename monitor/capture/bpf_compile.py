"""Turn a libpcap expression into the classic BPF program a packet socket runs, and attach it.

Why the compile target matters: libpcap generates different code for the same expression
depending on the handle it compiles for. For a *live* Linux handle (``tcpdump -i IFACE``,
``pcap_open_live``) it knows the kernel moves the outermost 802.1Q/802.1ad tag out of the frame
into socket-buffer metadata before any filter runs, so the first ``vlan`` keyword becomes a test
of the ancillary field ``SKF_AD_VLAN_TAG_PRESENT`` (``ldb [vlanp]``) and only shifts later
offsets when the tag really is in the bytes. For a *dead* handle (a file, ``pcap_open_dead``,
which is what scapy's ``compile_filter(expr, iface)`` uses once it has guessed the link type)
``vlan`` is always an in-packet test of the EtherType at offset 12. See ``monitor/capture/live.py``
for what that means for the sensor's expression, with the compiled programs as evidence.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass
from typing import Literal

SO_ATTACH_FILTER = 26
BPF_MAXINSNS = 4096  # the kernel refuses longer classic programs
SKF_AD_OFF = -0x1000
SKF_AD_VLAN_TAG = 44
SKF_AD_VLAN_TAG_PRESENT = 48
_BPF_LD_ABS_MASK = 0xE0 | 0x07  # BPF_MODE | BPF_CLASS
_BPF_LD_ABS = 0x20 | 0x00  # BPF_ABS | BPF_LD

CompileTarget = Literal["interface", "file"]

# One classic BPF instruction as the kernel's struct sock_filter holds it: (code, jt, jf, k).
Instruction = tuple[int, int, int, int]


class FilterCompileError(ValueError):
    """libpcap refused the expression, or the program cannot be attached."""


@dataclass(frozen=True, slots=True)
class BpfProgram:
    expression: str
    target: CompileTarget
    instructions: tuple[Instruction, ...]

    @property
    def reads_vlan_metadata(self) -> bool:
        """Whether the program asks the kernel for the stripped tag instead of frame bytes."""
        wanted = {
            (SKF_AD_OFF + SKF_AD_VLAN_TAG) & 0xFFFFFFFF,
            (SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT) & 0xFFFFFFFF,
        }
        return any(
            (code & _BPF_LD_ABS_MASK) == _BPF_LD_ABS and k in wanted
            for code, _jt, _jf, k in self.instructions
        )

    def __len__(self) -> int:
        return len(self.instructions)


def _pcap() -> object:
    try:
        from scapy.libs import winpcapy
    except (ImportError, OSError) as exc:  # libpcap.so missing
        raise FilterCompileError(f"libpcap is not available: {exc}") from exc
    return winpcapy


def _read_program(bpf: object, expression: str, target: CompileTarget) -> BpfProgram:
    n = int(bpf.bf_len)  # type: ignore[attr-defined]
    insns = bpf.bf_insns  # type: ignore[attr-defined]
    out = tuple(
        (int(insns[i].code), int(insns[i].jt), int(insns[i].jf), int(insns[i].k) & 0xFFFFFFFF)
        for i in range(n)
    )
    return BpfProgram(expression, target, out)


def compile_for_interface(expression: str, iface: str, snaplen: int = 262144) -> BpfProgram:
    """Compile exactly as ``tcpdump -i IFACE`` would: against a live libpcap handle.

    Opening the handle needs the privileges live capture needs anyway; it is closed again at once.
    """
    w = _pcap()
    errbuf = ctypes.create_string_buffer(w.PCAP_ERRBUF_SIZE)  # type: ignore[attr-defined]
    handle = w.pcap_open_live(iface.encode(), snaplen, 0, 0, errbuf)  # type: ignore[attr-defined]
    if not handle:
        msg = errbuf.value.decode(errors="replace")
        raise FilterCompileError(f"{iface}: cannot open for compiling: {msg}")
    return _compile(w, handle, expression, "interface")


def compile_for_linktype(expression: str, linktype: int = 1, snaplen: int = 262144) -> BpfProgram:
    """Compile as for a capture file of ``linktype`` (what replay and scapy's default do)."""
    w = _pcap()
    handle = w.pcap_open_dead(linktype, snaplen)  # type: ignore[attr-defined]
    if not handle:
        raise FilterCompileError(f"libpcap cannot open a dead handle for link type {linktype}")
    return _compile(w, handle, expression, "file")


def _compile(w: object, handle: object, expression: str, target: CompileTarget) -> BpfProgram:
    from scapy.libs.structures import bpf_program

    bpf = bpf_program()
    try:
        rc = w.pcap_compile(  # type: ignore[attr-defined]
            handle, ctypes.byref(bpf), expression.encode(), 1, 0xFFFFFFFF
        )
        if rc == -1:
            err = w.pcap_geterr(handle)  # type: ignore[attr-defined]
            text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
            raise FilterCompileError(f"cannot compile filter: {text}")
        try:
            program = _read_program(bpf, expression, target)
        finally:
            w.pcap_freecode(ctypes.byref(bpf))  # type: ignore[attr-defined]
    finally:
        w.pcap_close(handle)  # type: ignore[attr-defined]
    if not program.instructions:
        raise FilterCompileError("libpcap produced an empty program")
    if len(program) > BPF_MAXINSNS:
        raise FilterCompileError(
            f"filter compiles to {len(program)} instructions; the kernel accepts {BPF_MAXINSNS}"
        )
    return program


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


def attach(sock: socket.socket, program: BpfProgram) -> None:
    """Attach (or atomically replace) the socket's filter with SO_ATTACH_FILTER."""
    n = len(program.instructions)
    array = (_SockFilter * n)(*(_SockFilter(c, t, f, k) for c, t, f, k in program.instructions))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } with native padding.
    fprog = struct.pack("HP", n, ctypes.addressof(array))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as exc:
        raise FilterCompileError(f"kernel refused the filter program: {exc}") from exc


def render(program: BpfProgram) -> str:
    """The program in ``tcpdump -ddd`` form (count, then ``code jt jf k`` per line)."""
    lines = [str(len(program.instructions))]
    lines.extend(f"{c} {t} {f} {k}" for c, t, f, k in program.instructions)
    return "\n".join(lines)
