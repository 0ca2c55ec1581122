"""The BPF prefilter: let through only the packets the parsers can use.

The same expression goes to the kernel on a live interface and to libpcap (through tcpdump) when
replaying a file, so a replay measures what the sensor would see. Traps it avoids (measured on the
benchmark workload, see ../shared/bench/README.md): ``tcp[]``/``udp[]``/``ip[]`` index IPv4 only,
so IPv6 gets its own clauses with fixed offsets (no extension headers: those packets fall to the
tunnel/port clauses or are missed by the filter, never by the parser), and ``vlan`` shifts every
later offset, so the whole expression is repeated after one and two ``vlan`` keywords.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from monitor.decode.packet import GENEVE_PORT, VXLAN_PORT


@dataclass(frozen=True, slots=True)
class PortConfig:
    dns: frozenset[int]
    tls: frozenset[int]
    http: frozenset[int]
    quic: frozenset[int] = frozenset({443})


# A clause that matches nothing (an IPv4 header cannot start with version 0): an empty port list
# in the configuration must switch its clause off, not break the expression.
_NEVER = "(ip and ip[0] = 0)"


def _ports(proto: str, direction: str, ports: Iterable[int]) -> str:
    items = sorted(set(ports))
    if not items:
        return _NEVER
    return "(" + " or ".join(f"{proto} {direction} port {p}" for p in items) + ")"


def _any_port(ports: Iterable[int]) -> str:
    items = sorted(set(ports))
    return "(" + " or ".join(f"port {p}" for p in items) + ")" if items else _NEVER


#: Which share of the traffic a filter selects: everything the parsers use, or one of the two
#: disjoint halves a two-process replay splits it into (see monitor.pipeline.parallel).
FilterPart = Literal["all", "worker", "main"]


def build_filter(ports: PortConfig, vlan: bool = True, part: FilterPart = "all") -> str:
    """A libpcap expression for DNS, client payload on TLS/HTTP ports, TLS on any port, tunnels.

    ``vlan`` adds the tagged variants; libpcap refuses ``vlan`` on link types other than
    Ethernet (Linux cooked, raw IP, loopback), whose frames carry no tag in the packet anyway.
    ``part="worker"`` keeps the DNS answers (source port a DNS port) and the QUIC packets, both
    plain (not tunnelled, not fragmented, no IPv6 extension headers), ``part="main"``
    everything else of ``"all"``: the two are disjoint and together are ``"all"``, so two
    processes can share a file without a packet being seen twice or lost.
    """
    dns_any = _any_port(ports.dns)
    # DNS answers the parser can read as they stand; IPv4 fragments go to the main half (the
    # "opaque" clause below) to be counted there, and so does IPv6 with extension headers,
    # which libpcap's port test does not walk.
    answers = (
        "(" + " or ".join(f"src port {p}" for p in sorted(ports.dns)) + ")" if ports.dns else _NEVER
    )
    answers_plain = f"({answers} and not (ip and ip[6:2] & 0x3fff != 0))"
    client_ports = sorted(ports.tls | ports.http)
    tcp_dst = _ports("tcp", "dst", client_ports)
    # IPv4: client segments with payload (IP total length - IP header - TCP header > 0).
    v4_payload = "ip[2:2] - ((ip[0]&0xf)<<2) - ((tcp[12]&0xf0)>>2) > 0"
    # A client segment that begins with a change-cipher-spec, alert or application-data record
    # header (0x14/0x15/0x17, version 3.x) follows a finished handshake: the parsers never need
    # it, and it is most of what a client sends. (A hello's continuation segment could begin
    # with such bytes by chance: about 3 in 2**16 at worst; the tests know the limit.)
    v4_first = "tcp[((tcp[12]&0xf0)>>2)]"
    v4_second = "tcp[((tcp[12]&0xf0)>>2) + 1]"
    v4_record = (
        f"(({v4_first} = 0x14 or {v4_first} = 0x15 or {v4_first} = 0x17) and {v4_second} = 3)"
    )
    v4 = f"(ip and {tcp_dst} and {v4_payload} and not {v4_record})"
    # Any port where a segment starts a handshake record whose first message is a ClientHello
    # (type 1 at byte 5). Without the type, every server's ServerHello (also 0x16, type 2)
    # passes: an eighth of all packets on the benchmark workload, for nothing. The price: a
    # hello on an unlisted port whose first segment holds under 6 bytes is not seen.
    v4_hello = (
        f"(ip and tcp and {v4_payload} and tcp[((tcp[12]&0xf0)>>2)] = 0x16"
        " and tcp[((tcp[12]&0xf0)>>2) + 5] = 1)"
    )
    # IPv6 without extension headers: TCP header at 40, flags at 53, data offset at 52.
    v6_payload = "ip6[4:2] - ((ip6[52]&0xf0)>>2) > 0"
    v6_first = "ip6[40 + ((ip6[52]&0xf0)>>2)]"
    v6_second = "ip6[41 + ((ip6[52]&0xf0)>>2)]"
    v6_record = (
        f"(({v6_first} = 0x14 or {v6_first} = 0x15 or {v6_first} = 0x17) and {v6_second} = 3)"
    )
    v6 = f"(ip6 and ip6[6] = 6 and {tcp_dst} and {v6_payload} and not {v6_record})"
    v6_hello = (
        f"(ip6 and ip6[6] = 6 and {v6_payload} and ip6[40 + ((ip6[52]&0xf0)>>2)] = 0x16"
        " and ip6[45 + ((ip6[52]&0xf0)>>2)] = 1)"
    )
    # QUIC: the client's Initial packets (v1 type bits 00, v2 type bits 01, RFC 9369) and any
    # long header of another version (counted as unknown); not Handshake/0-RTT/1-RTT, which
    # are opaque. Plus the server's Version Negotiation (version 0), which is counted.
    udp_dst = _ports("udp", "dst", sorted(ports.quic))
    udp_src = _ports("udp", "src", sorted(ports.quic))

    def initial(b: str, v: str) -> str:
        return (
            f"{b} & 0x80 != 0 and (({v} = 1 and {b} & 0x30 = 0)"
            f" or ({v} = 0x6b3343cf and {b} & 0x30 = 0x10)"
            f" or ({v} != 1 and {v} != 0x6b3343cf and {v} != 0))"
        )

    quic = (
        f"(ip and (({udp_dst} and {initial('udp[8]', 'udp[9:4]')})"
        f" or ({udp_src} and udp[8] & 0x80 != 0 and udp[9:4] = 0)))"
    )
    quic6 = (
        f"(ip6 and ip6[6] = 17 and (({udp_dst} and {initial('ip6[48]', 'ip6[49:4]')})"
        f" or ({udp_src} and ip6[48] & 0x80 != 0 and ip6[49:4] = 0)))"
    )
    tunnels = f"(udp port {VXLAN_PORT} or udp port {GENEVE_PORT} or ip proto 47 or ip6 proto 47)"
    # Connection opens (SYN without ACK) on any port: the engine needs them to know whether a
    # later 0x16 segment on an unlisted port really is the connection's first payload.
    # Listed ports need no SYN (streams there anchor on the hello or request itself), and
    # leaving them out keeps one packet per connection of ordinary HTTPS out of Python.
    listed = _any_port(ports.tls | ports.http | ports.dns)
    syns = (
        f"((tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn"
        f" or (ip6 and ip6[6] = 6 and ip6[53] & 0x12 = 0x02)) and not {listed})"
    )
    # What the offsets above cannot see into: IPv6 with extension headers (the parser walks
    # them) and IPv4 fragments (counted, not reassembled). Both are rare on a healthy network.
    opaque = (
        "(ip6 and (ip6[6] = 0 or ip6[6] = 43 or ip6[6] = 44 or ip6[6] = 51 or ip6[6] = 60))"
        " or (ip and ip[6:2] & 0x3fff != 0)"
    )
    # Identity evidence for attribution: DHCPv4/v6, Kerberos (UDP and TCP 88), and the SMB2
    # SESSION_SETUP requests that carry NTLM (NetBIOS header, 0xFE 'SMB', command 1 little-endian)
    # -- not the rest of SMB, which is file traffic.
    identity = (
        "udp port 67 or udp port 68 or udp port 546 or udp port 547 or port 88"
        " or (ip and tcp dst port 445 and tcp[((tcp[12]&0xf0)>>2) + 4] = 0xfe"
        " and tcp[((tcp[12]&0xf0)>>2) + 16:2] = 0x0100)"
        " or (ip6 and ip6[6] = 6 and tcp dst port 445 and ip6[44 + ((ip6[52]&0xf0)>>2)] = 0xfe"
        " and ip6[56 + ((ip6[52]&0xf0)>>2):2] = 0x0100)"
    )
    clauses = (v4, v6, v4_hello, v6_hello, quic, quic6, tunnels, syns, opaque, identity)
    if part == "all":
        core = "(" + " or ".join((dns_any, *clauses)) + ")"
    else:
        worker = f"({answers_plain} or {quic} or {quic6})"
        if part == "worker":
            core = worker
        else:
            core = "((" + " or ".join((dns_any, *clauses)) + f") and not {worker})"
    if not vlan:
        return core
    return f"{core} or (vlan and ({core} or (vlan and {core})))"


class PrefilterUnavailable(RuntimeError):
    """tcpdump is missing or refused the file; the caller falls back to reading everything."""


def tcpdump_path() -> str | None:
    return shutil.which("tcpdump")


def widen_pipe(fd: int) -> None:
    """Let a pipe hold as much as the system allows (1 MiB by default, not 64 KiB).

    tcpdump passes a few percent of a file's bytes: 64 KiB of its output stands for about 2 MB
    of capture, a few milliseconds of work, so with the default size it soon waits for the
    reader and the two barely overlap. Best effort: not Linux, or a lower limit, is no error.
    """
    try:
        import fcntl

        with open("/proc/sys/fs/pipe-max-size") as f:
            size = int(f.read())
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError, ValueError):
        pass


@contextmanager
def filtered_stream(path: Path, expression: str) -> Iterator[BinaryIO]:
    """Yield tcpdump's filtered pcap output for ``path`` (libpcap reads pcap and pcapng).

    tcpdump runs as a separate process, so filtering and parsing use both cores.
    """
    exe = tcpdump_path()
    if exe is None:
        raise PrefilterUnavailable("tcpdump not found")
    proc = subprocess.Popen(
        [exe, "-n", "-r", str(path), "--time-stamp-precision=nano", "-w", "-", expression],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=1 << 20,
    )
    assert proc.stdout is not None and proc.stderr is not None
    widen_pipe(proc.stdout.fileno())
    failure: BaseException | None = None
    try:
        yield proc.stdout
    except Exception as exc:
        failure = exc
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        rc = proc.wait()
    if rc != 0:
        # tcpdump's own words explain an empty or cut stream better than the reader can.
        lines = [ln for ln in err.splitlines() if not ln.startswith("reading from file")]
        raise PrefilterUnavailable(f"tcpdump exited {rc}: {' '.join(lines)[:300]}") from failure
    if failure is not None:
        raise failure
