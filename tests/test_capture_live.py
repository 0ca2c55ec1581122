"""Live capture on real interfaces: veth pairs between two network namespaces.

The server namespace runs dnsmasq and openssl s_server and the capture; the client namespace runs
dig, curl, scapy ``sendp`` and tcpreplay. Captures run in a helper process started with
``ip netns exec`` (this file, run as a script), because scapy's interface table and
``/sys/class/net`` belong to the namespace a process starts in. Each capture spec can open several
``LiveCapture`` objects at once, so a filtered capture is always compared with an unfiltered one
of the same interface, and the live filter with libpcap's verdict on those same frames in a file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.capture.pcapfile import read_frames
from monitor.capture.prefilter import PortConfig, build_filter
from monitor.decode.packet import PROTO_TCP, PROTO_UDP, Decoder, Packet

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent
PORTS = PortConfig(
    dns=frozenset({53}),
    tls=frozenset({443, 8443}),
    http=frozenset({80, 8080, 3128, 8000}),
    quic=frozenset({443}),
)
PREFILTER = build_filter(PORTS)
MAC_S0, MAC_C0 = "02:00:00:00:77:01", "02:00:00:00:77:02"
MAC_S1, MAC_C1 = "02:00:00:00:78:01", "02:00:00:00:78:02"
SERVER_V4, CLIENT_V4, SERVER_V6, CLIENT_V6 = "10.77.0.1", "10.77.0.2", "fd77::1", "fd77::2"
VLAN_ID = 110
VLAN_SERVER_V4, VLAN_SERVER_V6 = "10.110.0.1", "fd10:110::1"  # behind s1, the VLAN trunk
NAME = "facecheck.test"
STEP_TIMEOUT = 30


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "live capture is Linux only"
    if os.geteuid() != 0:
        return "needs root"
    return None


def _netns_skip_reason() -> str | None:
    reason = _skip_reason()
    if reason:
        return reason
    for tool in ("ip", "dnsmasq", "dig", "openssl", "curl", "tcpdump"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    probe = f"lcprobe{os.getpid()}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
    if res.returncode != 0:
        return f"ip netns unavailable: {res.stderr.decode(errors='replace').strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def _run(*cmd: str, timeout: float = STEP_TIMEOUT, check: bool = True) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return res.stdout


@dataclasses.dataclass
class Lab:
    server_ns: str
    client_ns: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]]

    def server(self, *cmd: str, timeout: float = STEP_TIMEOUT, check: bool = True) -> str:
        return _run("ip", "netns", "exec", self.server_ns, *cmd, timeout=timeout, check=check)

    def client(self, *cmd: str, timeout: float = STEP_TIMEOUT, check: bool = True) -> str:
        return _run("ip", "netns", "exec", self.client_ns, *cmd, timeout=timeout, check=check)

    def sendp(self, frames_expr: str, iface: str = "c0") -> None:
        """Send scapy frames from the client end; ``frames_expr`` is a Python list expression."""
        code = (
            "from scapy.all import Ether, Dot1Q, Dot1AD, IP, IPv6, UDP, TCP, sendp\n"
            f"sendp({frames_expr}, iface={iface!r}, verbose=0)\n"
        )
        self.client(sys.executable, "-c", code)

    def dig(self, server: str, qtype: str = "A") -> None:
        out = self.client("dig", "+time=2", "+tries=2", f"@{server}", NAME, qtype, "+short")
        assert out.strip(), f"no answer from dnsmasq at {server}"

    def https(self, server: str) -> None:
        literal = f"[{server}]" if ":" in server else server
        self.client(
            "curl", "-sk", "--max-time", "10", "-o", "/dev/null",
            "--resolve", f"{NAME}:443:{literal}", f"https://{NAME}/",
        )  # fmt: skip


def _start(lab: Lab, ns: str, *cmd: str, log: str) -> None:
    with open(lab.workdir / log, "wb") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=out, stderr=out)
    lab.procs.append(proc)


def _wait_tcp(lab: Lab, host: str, port: int) -> None:
    literal = f"[{host}]" if ":" in host else host
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        res = subprocess.run(
            ["ip", "netns", "exec", lab.server_ns, "bash", "-c", f"ss -Hltn 'sport = :{port}'"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if literal in res.stdout or f"*:{port}" in res.stdout or f"[::]:{port}" in res.stdout:
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port}")


def _vlan_endpoint(lab: Lab, ns: str, parent: str) -> str:
    """Make ``parent`` carry VLAN 110 and return the device the addresses go on.

    The usual way is an 802.1Q sub-interface. Kernels built without 8021q (like the one these
    tests were written on) get the same wire behaviour from two tiny tc programs on ``parent``
    (tcx egress: ``bpf_skb_vlan_push``; tcx ingress: ``bpf_skb_vlan_pop``): the stack sends and
    receives untagged, the link carries tagged frames, and a packet socket sees the tag in the
    metadata exactly as with a sub-interface. Both run before or after the packet taps, never
    between a tap and the wire.
    """
    sub = f"{parent}.{VLAN_ID}"
    res = subprocess.run(
        ["ip", "-n", ns, "link", "add", "link", parent, "name", sub, "type", "vlan",
         "id", str(VLAN_ID)], capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    if res.returncode == 0:
        _run("ip", "-n", ns, "link", "set", sub, "up")
        return sub
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, __file__, "trunk", parent, str(VLAN_ID)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    lab.procs.append(proc)  # type: ignore[arg-type]
    assert proc.stdout is not None and proc.stderr is not None
    if not select.select([proc.stdout], [], [], STEP_TIMEOUT)[0] or not proc.stdout.readline():
        err = proc.stderr.read().decode(errors="replace")
        pytest.skip(f"no VLAN support: {res.stderr.strip()}; tc VLAN programs: {err[-500:]}")
    return parent


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = _netns_skip_reason()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}"
    lab = Lab(f"lcs{tag}", f"lcc{tag}", tmp_path_factory.mktemp("livecap"), [])
    try:
        s, c = lab.server_ns, lab.client_ns
        _run("ip", "netns", "add", s)
        _run("ip", "netns", "add", c)
        for sname, smac, cname, cmac in (
            ("s0", MAC_S0, "c0", MAC_C0),
            ("s1", MAC_S1, "c1", MAC_C1),
        ):
            _run(
                "ip", "link", "add", "name", sname, "netns", s, "address", smac, "type", "veth",
                "peer", "name", cname, "netns", c, "address", cmac,
            )  # fmt: skip
        plan = [
            (s, "s0", "10.77.0.1/24", "fd77::1/64"),
            (c, "c0", "10.77.0.2/24", "fd77::2/64"),
        ]
        for ns in (s, c):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        for ns, dev in ((s, "s0"), (c, "c0"), (s, "s1"), (c, "c1")):
            # Static IPv6 addresses survive a down/up test instead of vanishing.
            _run(
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                f"net.ipv6.conf.{dev}.keep_addr_on_down=1",
            )
            _run("ip", "-n", ns, "link", "set", dev, "up")
        # s1/c1 is an 802.1Q trunk: every frame between them carries VLAN 110 on the wire.
        trunk = [(s, "s1", "10.110.0.1/24", "fd10:110::1/64"),
                 (c, "c1", "10.110.0.2/24", "fd10:110::2/64")]  # fmt: skip
        for ns, parent, v4, v6 in trunk:
            plan.append((ns, _vlan_endpoint(lab, ns, parent), v4, v6))
        for ns, dev, v4, v6 in plan:
            _run("ip", "-n", ns, "addr", "add", v4, "dev", dev)
            _run("ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad")
        listen = [SERVER_V4, SERVER_V6, VLAN_SERVER_V4, VLAN_SERVER_V6]
        _start(
            lab, s, "dnsmasq", "--no-resolv", "--no-hosts", "--no-poll", "--keep-in-foreground",
            "--bind-interfaces", "--except-interface=lo", "--user=root", "--group=root",
            f"--pid-file={lab.workdir / 'dnsmasq.pid'}", f"--host-record={NAME},10.77.0.9,fd77::9",
            *(f"--listen-address={a}" for a in listen), log="dnsmasq.log",
        )  # fmt: skip
        key, cert = lab.workdir / "key.pem", lab.workdir / "cert.pem"
        _run(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={NAME}", "-keyout", str(key), "-out", str(cert),
        )  # fmt: skip
        for addr in ("10.77.0.1", "[fd77::1]", VLAN_SERVER_V4):
            _start(
                lab, s, "openssl", "s_server", "-quiet", "-www", "-cert", str(cert), "-key",
                str(key), "-accept", f"{addr}:443", log=f"s_server-{addr.strip('[]')}.log",
            )  # fmt: skip
        for addr in ("10.77.0.1", "fd77::1", VLAN_SERVER_V4):
            _wait_tcp(lab, addr, 443)
        _wait_tcp(lab, "10.77.0.1", 53)
        yield lab
    finally:
        for proc in lab.procs:
            proc.terminate()
        for proc in lab.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for ns in (lab.server_ns, lab.client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


# -- the capture helper --------------------------------------------------------------------------


@dataclasses.dataclass
class Captured:
    iface: str
    ts: int
    linktype: int
    data: bytes
    wirelen: int


@dataclasses.dataclass
class CaptureResult:
    ready: dict[str, Any]
    frames: dict[str, list[Captured]]
    stats: dict[str, dict[str, dict[str, Any]]]
    after: dict[str, Any]

    def window(self, name: str) -> list[Captured]:
        """Frames that arrived once every capture of the run was open (comparable ones)."""
        start = self.ready["all_open_ns"]
        return [f for f in self.frames[name] if f.ts >= start]


class CaptureRun:
    """A capture helper inside the server namespace; ``stop()`` returns what it saw."""

    def __init__(self, lab: Lab, captures: list[dict[str, Any]], **options: Any) -> None:
        spec = {"captures": captures, "max_seconds": 90, **options}
        fd, path = tempfile.mkstemp(prefix="livecap-", suffix=".json", dir=lab.workdir)
        os.close(fd)
        self.spec_path = Path(path)
        self.out_path = self.spec_path.with_suffix(".out.json")
        self.spec_path.write_text(json.dumps(spec))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.server_ns, sys.executable, __file__,
             str(self.spec_path), str(self.out_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], STEP_TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.kill()
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise AssertionError(f"capture helper did not get ready: {err[-3000:]}")
        self.ready: dict[str, Any] = json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, settle: float = 0.5) -> CaptureResult:
        time.sleep(settle)  # let the last replies cross the link
        assert self.proc.stdin is not None and self.proc.stderr is not None
        try:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.flush()
            _, err = self.proc.communicate(timeout=STEP_TIMEOUT)
        finally:
            self.kill()
        assert self.proc.returncode == 0, err.decode(errors="replace")[-3000:]
        out = json.loads(self.out_path.read_text())
        frames = {
            name: [Captured(i, ts, lt, bytes.fromhex(h), wl) for i, ts, lt, h, wl in recs]
            for name, recs in out["frames"].items()
        }
        return CaptureResult(self.ready, frames, out["stats"], out["after"])

    def __enter__(self) -> CaptureRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _capture_main(spec_path: str, out_path: str) -> int:
    """Runs inside the server namespace (``ip netns exec``): open, report ready, read, report."""
    from monitor.capture.live import LiveCapture
    from monitor.capture.privileges import current_identity, drop_privileges

    spec = json.loads(Path(spec_path).read_text())

    def promisc(ifaces: list[str]) -> dict[str, bool]:
        return {
            i: bool(int(Path(f"/sys/class/net/{i}/flags").read_text(), 16) & 0x100) for i in ifaces
        }

    all_ifaces = sorted({i for c in spec["captures"] for i in c["ifaces"]})
    caps: dict[str, LiveCapture] = {}
    for c in spec["captures"]:
        kwargs: dict[str, Any] = {"filter_target": c.get("target", "interface")}
        for key in ("rcvbuf", "snaplen", "promiscuous"):
            if key in c:
                kwargs[key] = c[key]
        caps[c["name"]] = LiveCapture(c["ifaces"], c.get("bpf"), **kwargs)
    ready: dict[str, Any] = {
        "all_open_ns": time.time_ns(),
        "interfaces": {
            n: {i: dataclasses.asdict(info) for i, info in cap.interfaces.items()}
            for n, cap in caps.items()
        },
        "promisc": promisc(all_ifaces),
    }
    out_file = open(out_path, "w")  # noqa: SIM115 (opened while still root, like the sockets)
    if spec.get("drop_user"):
        ready["identity"] = dataclasses.asdict(drop_privileges(spec["drop_user"]))
    print(json.dumps(ready), flush=True)

    hold = {c["name"] for c in spec["captures"] if c.get("hold")}
    frames: dict[str, list[list[Any]]] = {name: [] for name in caps}

    def read(name: str, timeout: float) -> int:
        cap = caps[name]
        if len(cap.interfaces) == 1:  # the plain API, labelled here for the test
            got = {next(iter(cap.interfaces)): cap.poll(timeout)}
        else:
            got = cap.poll_by_interface(timeout)
        for iface, batch in got.items():
            frames[name].extend([iface, ts, lt, d.hex(), wl] for ts, lt, d, wl in batch)
        return sum(len(b) for b in got.values())

    deadline = time.monotonic() + spec["max_seconds"]
    while time.monotonic() < deadline:
        if select.select([sys.stdin], [], [], 0)[0]:
            sys.stdin.readline()
            break
        for name in caps:
            if name not in hold:
                read(name, 0.01)
    for name in caps:  # drain what is queued, held captures included
        while read(name, 0.05):
            pass
    stats = {
        n: {i: dataclasses.asdict(s) for i, s in cap.stats().items()} for n, cap in caps.items()
    }
    for cap in caps.values():
        cap.close()
    after = {
        "stopped_ns": time.time_ns(),
        "promisc": promisc(all_ifaces),
        "identity": dataclasses.asdict(current_identity()),
    }
    with out_file:
        out_file.write(json.dumps({"frames": frames, "stats": stats, "after": after}))
    return 0


def _trunk_main(iface: str, vid: int) -> int:
    """Runs inside a namespace: tag everything ``iface`` sends, untag what it receives.

    Hand-assembled eBPF (no compiler needed), attached with tcx links that live as long as this
    process: the caller closes stdin to remove them.
    """
    import ctypes
    import ctypes.util
    import socket

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.syscall.restype = ctypes.c_long
    keep: list[Any] = []

    def bpf(cmd: int, attr: bytes) -> int:
        buf = ctypes.create_string_buffer(attr, len(attr))
        fd = int(libc.syscall(321, cmd, buf, len(attr)))  # __NR_bpf on x86_64
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return fd

    def insn(code: int, dst: int = 0, imm: int = 0) -> bytes:
        return struct.pack("<BBhi", code, dst, 0, imm)

    def load(helper: int, args: list[tuple[int, int]]) -> int:
        # r2.. = args; call helper(ctx in r1, ...); r0 = 0 (TCX_PASS); exit
        code = b"".join(insn(0xB7, reg, val) for reg, val in args)
        code += insn(0x85, 0, helper) + insn(0xB7, 0, 0) + insn(0x95)
        ibuf, lic = (
            ctypes.create_string_buffer(code, len(code)),
            ctypes.create_string_buffer(b"GPL"),
        )
        keep.extend((ibuf, lic))
        attr = struct.pack(
            "=IIQQIIQII16sII", 3, len(code) // 8, ctypes.addressof(ibuf), ctypes.addressof(lic),
            0, 0, 0, 0, 0, b"vlan", 0, 0,
        )  # fmt: skip
        return bpf(5, attr + bytes(144 - len(attr)))  # BPF_PROG_LOAD, BPF_PROG_TYPE_SCHED_CLS

    ifindex = socket.if_nametoindex(iface)
    push = load(18, [(2, socket.htons(0x8100)), (3, vid)])  # bpf_skb_vlan_push
    pop = load(19, [])  # bpf_skb_vlan_pop
    for prog, attach_type in ((push, 47), (pop, 46)):  # BPF_TCX_EGRESS, BPF_TCX_INGRESS
        bpf(28, struct.pack("=IIII", prog, ifindex, attach_type, 0) + bytes(48))  # LINK_CREATE
    print("ready", flush=True)
    sys.stdin.read()
    return 0


# -- helpers for assertions ----------------------------------------------------------------------


def _decode(f: Captured) -> Packet | None:
    return Decoder().decode(f.ts, f.linktype, f.data)


def _write_pcap(path: Path, frames: list[Captured]) -> None:
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        for f in frames:
            sec, nsec = divmod(f.ts, 1_000_000_000)
            out.write(struct.pack("<IIII", sec, nsec, len(f.data), f.wirelen))
            out.write(f.data)


def _file_verdict(tmp: Path, frames: list[Captured], expression: str) -> Counter[bytes]:
    """The frames libpcap keeps when the same expression filters them as a capture file."""
    src, dst = tmp / "all.pcap", tmp / "kept.pcap"
    _write_pcap(src, frames)
    _run("tcpdump", "-n", "-r", str(src), "-w", str(dst), expression)
    with open(dst, "rb") as f:
        return Counter(data for _ts, _lt, data, _wl in read_frames(f))


def _bytes(frames: list[Captured]) -> Counter[bytes]:
    return Counter(f.data for f in frames)


def _tci(data: bytes, offset: int = 14) -> int:
    return struct.unpack_from("!H", data, offset)[0] & 0x0FFF


def _quic_frames(tagged: bool) -> str:
    """Client QUIC-like datagrams: long header (0xc3) and short header (0x43), v4 and v6."""
    vlan = f"Dot1Q(vlan={VLAN_ID})/" if tagged else ""
    v4 = f"IP(src='{CLIENT_V4}', dst='{SERVER_V4}')"
    v6 = f"IPv6(src='{CLIENT_V6}', dst='{SERVER_V6}')"
    frames = [
        f"Ether(src='{MAC_C0}', dst='{MAC_S0}')/{vlan}{ip}/UDP(sport={sport}, dport=443)"
        f"/(bytes([{first}]) + b'\\x00\\x00\\x00\\x01' + bytes(1200))"
        for ip, sport in ((v4, 50001), (v6, 50002))
        for first in (0xC3, 0x43)
    ]
    return "[" + ", ".join(frames) + "]"


def _quic(frames: list[Captured], first_byte: int, version: int) -> list[Packet]:
    out = []
    for f in frames:
        p = _decode(f)
        if (
            p
            and p.proto == PROTO_UDP
            and p.dport == 443
            and p.version == version
            and p.payload[:1] == bytes([first_byte])
        ):
            out.append(p)
    return out


# -- tests ---------------------------------------------------------------------------------------


def test_prefilter_passes_client_dns_tls_and_quic_long_headers_and_drops_server_payload_and_short_headers(  # noqa: E501
    lab: Lab, tmp_path: Path
) -> None:
    run = CaptureRun(
        lab,
        [
            {"name": "pre", "ifaces": ["s0"], "bpf": PREFILTER},
            {"name": "all", "ifaces": ["s0"], "bpf": None},
        ],
    )
    with run:
        lab.dig(SERVER_V4)
        lab.dig(SERVER_V6, "AAAA")
        lab.https(SERVER_V4)
        lab.https(SERVER_V6)
        lab.sendp(_quic_frames(tagged=False))
        res = run.stop()
    pre, everything = res.window("pre"), res.window("all")
    pre_pkts = [p for p in map(_decode, pre) if p is not None]
    all_pkts = [p for p in map(_decode, everything) if p is not None]

    for version in (4, 6):
        dns = [p for p in pre_pkts if p.version == version and p.proto == PROTO_UDP]
        assert any(p.dport == 53 for p in dns), f"IPv{version} DNS query missing"
        assert any(p.sport == 53 for p in dns), f"IPv{version} DNS response missing"
        hellos = [
            p
            for p in pre_pkts
            if p.version == version and p.proto == PROTO_TCP and p.dport == 443 and p.payload
        ]
        assert any(p.payload[:1] == b"\x16" and NAME.encode() in p.payload for p in hellos)
        assert _quic(pre, 0xC3, version), f"IPv{version} QUIC long header dropped"
        assert not _quic(pre, 0x43, version), f"IPv{version} QUIC short header passed"
        assert _quic(everything, 0x43, version)

    # TLS server payload: on the wire there is a ServerHello and application data from port 443;
    # the filter keeps none of it (the any-port hello clause wants a ClientHello, type 1).
    def server_payload(pkts: list[Packet]) -> Counter[bytes]:
        return Counter(p.payload for p in pkts if p.proto == PROTO_TCP and p.sport == 443)

    wire = server_payload(all_pkts)
    assert any(payload[:1] == b"\x17" for payload in wire), "no server application data seen"
    assert any(payload[:1] == b"\x16" for payload in wire), "no ServerHello seen"
    assert server_payload(pre_pkts) == Counter()

    # Exactly what libpcap keeps from the same frames in a file: interface and file agree. The
    # kernel's own IPv6 multicast (neighbour discovery, MLD reports to 33:33:...) is left out: the
    # two capture windows open a moment apart, so one may see a report the other missed.
    def unicast(counter: Counter[bytes]) -> Counter[bytes]:
        return Counter({k: v for k, v in counter.items() if not k.startswith(b"\x33\x33")})

    assert unicast(_bytes(pre)) == unicast(_file_verdict(tmp_path, everything, PREFILTER))
    assert res.ready["interfaces"]["pre"]["s0"]["filter_reads_vlan_metadata"] is True


def test_tagged_traffic_passes_with_its_vlan_tag_restored_under_both_compile_targets(
    lab: Lab, tmp_path: Path
) -> None:
    run = CaptureRun(
        lab,
        [
            {"name": "iface", "ifaces": ["s0", "s1"], "bpf": PREFILTER, "target": "interface"},
            {"name": "file", "ifaces": ["s0", "s1"], "bpf": PREFILTER, "target": "file"},
            {"name": "all", "ifaces": ["s0", "s1"], "bpf": None},
        ],
    )
    qinq_dns = (
        f"[Ether(src='{MAC_C0}', dst='{MAC_S0}')/Dot1AD(vlan=200)/Dot1Q(vlan={VLAN_ID})"
        f"/IP(src='{CLIENT_V4}', dst='{SERVER_V4}')/UDP(sport=40001, dport=53)/(b'\\x12\\x34' + bytes(20)),"  # noqa: E501
        f" Ether(src='{MAC_C0}', dst='{MAC_S0}')/Dot1Q(vlan=300)/Dot1Q(vlan={VLAN_ID})"
        f"/IPv6(src='{CLIENT_V6}', dst='{SERVER_V6}')/UDP(sport=40002, dport=53)/(b'\\x56\\x78' + bytes(20))]"  # noqa: E501
    )
    with run:
        lab.dig(VLAN_SERVER_V4)  # real client and server, tagged on the c1-s1 trunk
        lab.dig(VLAN_SERVER_V6, "AAAA")
        lab.https(VLAN_SERVER_V4)
        lab.sendp(_quic_frames(tagged=True))
        lab.sendp(qinq_dns)
        res = run.stop()

    everything = res.window("all")
    expected = _file_verdict(tmp_path, everything, PREFILTER)
    for name in ("iface", "file"):
        frames = res.window(name)
        assert _bytes(frames) == expected, f"{name}: live verdict differs from the file verdict"
        pkts = [(f, _decode(f)) for f in frames]
        dns = [(f, p) for f, p in pkts if p and p.proto == PROTO_UDP and 53 in (p.sport, p.dport)]
        for version in (4, 6):
            tagged = [(f, p) for f, p in dns if p.version == version and p.vlan == VLAN_ID]
            assert any(p.dport == 53 for _, p in tagged), f"{name}: tagged v{version} query"
            assert any(p.sport == 53 for _, p in tagged), f"{name}: tagged v{version} response"
            for f, _p in tagged:
                assert f.data[12:14] == b"\x81\x00" and _tci(f.data) == VLAN_ID
                assert f.wirelen == len(f.data)
        hello = [
            p
            for _, p in pkts
            if p and p.proto == PROTO_TCP and p.dport == 443 and p.payload[:1] == b"\x16"
        ]
        assert hello and all(p.vlan == VLAN_ID for p in hello)
        for version in (4, 6):
            assert [p.vlan for p in _quic(frames, 0xC3, version)] == [VLAN_ID]
            assert not _quic(frames, 0x43, version)
        # QinQ: the kernel strips only the outer tag; it comes back in front of the inner one.
        qinq = [f for f in frames if f.data[12:14] in (b"\x88\xa8", b"\x81\x00")]
        outer = {(f.data[12:14], _tci(f.data), f.data[16:18], _tci(f.data, 18)) for f in qinq}
        assert (b"\x88\xa8", 200, b"\x81\x00", VLAN_ID) in outer
        assert (b"\x81\x00", 300, b"\x81\x00", VLAN_ID) in outer
        for iface in ("s0", "s1"):
            assert res.stats[name][iface]["vlan_tags_restored"] > 0
    assert _quic(everything, 0x43, 6)
    info = res.ready["interfaces"]
    assert info["iface"]["s0"]["filter_reads_vlan_metadata"] is True
    assert info["file"]["s0"]["filter_reads_vlan_metadata"] is False


def test_vlan_keyword_matches_metadata_live_but_bytes_in_a_file(lab: Lab, tmp_path: Path) -> None:
    """The trap the prefilter's shape avoids, shown with a naive expression."""
    naive = "vlan and udp port 53"
    run = CaptureRun(
        lab,
        [
            {"name": "vlan_iface", "ifaces": ["s0", "s1"], "bpf": naive, "target": "interface"},
            {"name": "vlan_file", "ifaces": ["s0", "s1"], "bpf": naive, "target": "file"},
            {"name": "plain_file", "ifaces": ["s0", "s1"], "bpf": "udp port 53", "target": "file"},
        ],
    )
    with run:
        lab.dig(SERVER_V4)
        lab.dig(VLAN_SERVER_V4)
        res = run.stop()
    vlans = {name: {_decode(f).vlan for f in res.window(name)} for name in res.frames}  # type: ignore[union-attr]
    # Live, compiled for the interface: ``vlan`` reads the tag from metadata.
    assert vlans["vlan_iface"] == {VLAN_ID}
    # Live, compiled for a file (scapy's default): the tag is not in the bytes the kernel
    # filters, so ``vlan`` never matches, while plain ``udp port 53`` matches tagged frames too.
    assert res.window("vlan_file") == []
    assert vlans["plain_file"] == {None, VLAN_ID}
    # In a file the tag is in the bytes: the same two expressions swap roles.
    frames = res.window("plain_file")
    in_file_plain = _file_verdict(tmp_path, frames, "udp port 53")
    in_file_vlan = _file_verdict(tmp_path, frames, naive)
    assert {_tci(d) if d[12:14] == b"\x81\x00" else None for d in in_file_plain} == {None}
    assert {_tci(d) for d in in_file_vlan} == {VLAN_ID}


def test_several_interfaces_are_captured_at_once(lab: Lab) -> None:
    run = CaptureRun(lab, [{"name": "both", "ifaces": ["s0", "s1"], "bpf": PREFILTER}])
    with run:
        lab.dig(SERVER_V4)
        lab.dig(VLAN_SERVER_V4)
        lab.dig(SERVER_V6, "AAAA")
        res = run.stop()
    seen: dict[str, set[tuple[int, int | None]]] = {"s0": set(), "s1": set()}
    for f in res.window("both"):
        p = _decode(f)
        if p is not None and p.proto == PROTO_UDP:  # not the kernel's own ICMPv6 (MLD, ND)
            seen[f.iface].add((p.version, p.vlan))
    assert seen == {"s0": {(4, None), (6, None)}, "s1": {(4, VLAN_ID)}}
    ts = [f.ts for f in res.frames["both"]]
    assert ts == sorted(ts)
    for iface in ("s0", "s1"):
        assert res.stats["both"][iface]["packets"] >= 2
        assert res.stats["both"][iface]["frames"] >= 2


def test_counters_come_from_the_socket_and_the_interface(lab: Lab) -> None:
    burst = (
        f"[Ether(src='{MAC_C0}', dst='{MAC_S0}')/IP(src='{CLIENT_V4}', dst='{SERVER_V4}')"
        f"/UDP(sport=40000 + i, dport=53)/(bytes(2) + bytes(100)) for i in range(600)]"
    )
    run = CaptureRun(
        lab,
        [
            # Not read until the end, with the smallest queue the kernel allows: it must drop.
            {
                "name": "starved",
                "ifaces": ["s0"],
                "bpf": "udp dst port 53",
                "rcvbuf": 1,
                "hold": True,
            },
            {"name": "busy", "ifaces": ["s0"], "bpf": "udp dst port 53"},
        ],
    )
    with run:
        lab.sendp(burst)
        res = run.stop()
    starved, busy = res.stats["starved"]["s0"], res.stats["busy"]["s0"]
    assert starved["drops"] > 0
    assert starved["packets"] == starved["frames"] + starved["drops"] >= 600
    assert busy["drops"] == 0 and busy["packets"] == busy["frames"] >= 600
    assert busy["if_rx_packets"] >= 600 and busy["if_rx_bytes"] >= 600 * 100
    assert busy["if_rx_dropped"] is not None
    assert res.ready["interfaces"]["busy"]["s0"]["rcvbuf"] > (1 << 20)
    # Kernel receive timestamps, in nanoseconds, inside the capture's lifetime.
    for f in res.frames["busy"]:
        assert res.ready["all_open_ns"] - 10**9 <= f.ts <= res.after["stopped_ns"]
        assert f.wirelen == len(f.data)


def test_capture_resumes_after_the_interface_goes_down_and_up(lab: Lab) -> None:
    run = CaptureRun(lab, [{"name": "c", "ifaces": ["s0"], "bpf": PREFILTER}])
    with run:
        lab.dig(SERVER_V4)
        lab.server("ip", "link", "set", "s0", "down")
        time.sleep(0.3)
        lab.server("ip", "link", "set", "s0", "up")
        time.sleep(0.5)
        marker = time.time_ns()
        lab.dig(SERVER_V4)
        res = run.stop()
    st = res.stats["c"]["s0"]
    assert st["errors"] >= 1 and st["last_error"].startswith("ENETDOWN")
    after = [_decode(f) for f in res.frames["c"] if f.ts >= marker]
    assert any(p and p.dport == 53 for p in after) and any(p and p.sport == 53 for p in after)


def test_loopback_frames_are_seen_once(lab: Lab) -> None:
    run = CaptureRun(lab, [{"name": "lo", "ifaces": ["lo"], "bpf": "udp port 5555"}])
    send = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for i in range(3):\n"
        "    s.sendto(bytes([i]) * 10, ('127.0.0.1', 5555))\n"
    )
    with run:
        lab.server(sys.executable, "-c", send)
        res = run.stop()
    payloads = sorted(f.data[-10:] for f in res.frames["lo"])
    assert payloads == [bytes([i]) * 10 for i in range(3)]
    assert res.stats["lo"]["lo"]["loopback_duplicates"] == 3


def test_promiscuous_mode_is_on_while_capturing_and_off_after_close(lab: Lab) -> None:
    run = CaptureRun(lab, [{"name": "p", "ifaces": ["s1"], "bpf": PREFILTER}])
    with run:
        res = run.stop(settle=0)
    assert res.ready["promisc"] == {"s1": True}
    assert res.after["promisc"] == {"s1": False}
    assert res.ready["interfaces"]["p"]["s1"]["promiscuous"] is True


def test_frames_longer_than_the_snap_length_are_cut_and_keep_their_wire_length(lab: Lab) -> None:
    run = CaptureRun(lab, [{"name": "short", "ifaces": ["s0"], "bpf": PREFILTER, "snaplen": 96}])
    with run:
        lab.sendp(_quic_frames(tagged=True))
        res = run.stop()
    everything = res.frames["short"]
    frames = [f for f in everything if f.data[12:14] == b"\x81\x00"]
    assert len(frames) == 2  # the two long headers; short headers are filtered out
    for f in frames:
        assert len(f.data) == 96 + 4 and f.wirelen > 1200 and _tci(f.data) == VLAN_ID
    cut = [f for f in everything if len(f.data) < f.wirelen]
    assert res.stats["short"]["s0"]["truncated"] == len(cut) >= 2


def test_capture_keeps_working_after_dropping_privileges(lab: Lab) -> None:
    run = CaptureRun(lab, [{"name": "c", "ifaces": ["s0"], "bpf": PREFILTER}], drop_user="nobody")
    with run:
        lab.dig(SERVER_V4)  # sent after the helper reported ready, i.e. after the drop
        res = run.stop()
    ident = res.ready["identity"]
    assert ident["uid"] != 0 and ident["gid"] != 0 and ident["groups"] == []
    assert set(ident["capabilities"].values()) == {0}
    assert res.after["identity"]["uid"] == ident["uid"]
    pkts = [_decode(f) for f in res.window("c")]
    assert any(p and p.dport == 53 for p in pkts)
    assert res.stats["c"]["s0"]["packets"] >= 2
    assert res.stats["c"]["s0"]["if_rx_packets"] >= 1


def _ethernet_samples() -> list[Path]:
    out = []
    for path in sorted((REPO / "pcaps").rglob("*.pcap")):
        head = path.read_bytes()[:24]
        if len(head) == 24 and struct.unpack_from("<I", head, 20)[0] == 1:
            out.append(path)
    return out


def _sendable(frame: bytes) -> bool:
    """Whether a veth can carry the frame at all (a header, at most MTU plus a tag)."""
    return 14 <= len(frame) <= 1518


def _replay_and_compare(
    lab: Lab, files: list[Path], pps: int, limit: int | None = None
) -> dict[str, Any]:
    """tcpreplay ``files`` onto c0 and check the live verdict equals libpcap's on the files."""
    if shutil.which("tcpreplay") is None:
        pytest.skip("tcpreplay not installed")
    if limit:
        subsets = [lab.workdir / f"first-{limit}-{path.name}" for path in files]
        for path, subset in zip(files, subsets, strict=True):
            _run("tcpdump", "-r", str(path), "-c", str(limit), "-w", str(subset))
        files = subsets
    sent: list[bytes] = []
    expected: Counter[bytes] = Counter()
    for path in files:
        with open(path, "rb") as f:
            sent.extend(data for _ts, _lt, data, _wl in read_frames(f) if _sendable(data))
        kept = subprocess.run(
            ["tcpdump", "-n", "-r", str(path), "-w", "-", PREFILTER],
            capture_output=True,
            timeout=STEP_TIMEOUT,
            check=True,
        )
        frames = read_frames(io.BytesIO(kept.stdout))
        expected.update(data for _ts, _lt, data, _wl in frames if _sendable(data))
    run = CaptureRun(
        lab,
        [
            {"name": "pre", "ifaces": ["s0"], "bpf": PREFILTER},
            {"name": "all", "ifaces": ["s0"], "bpf": None},
        ],
    )
    with run:
        replay = ["tcpreplay", "-q", "-i", "c0", f"--pps={pps}", *map(str, files)]
        lab.client(*replay, timeout=STEP_TIMEOUT + 2 * len(sent) / pps)
        res = run.stop(settle=1.0)
    sent_set = set(sent)
    live_all = Counter(f.data for f in res.window("all") if f.data in sent_set)
    live_pre = Counter(f.data for f in res.window("pre") if f.data in sent_set)
    pre_stats, all_stats = res.stats["pre"]["s0"], res.stats["all"]["s0"]
    assert pre_stats["drops"] == 0 and all_stats["drops"] == 0
    assert live_all == Counter(sent), "the link changed or lost replayed frames"
    assert live_pre == expected
    return {
        "sent": len(sent),
        "sent_bytes": sum(map(len, sent)),
        "passed": sum(live_pre.values()),
        "passed_bytes": sum(len(d) * n for d, n in live_pre.items()),
        "pre": pre_stats,
    }


def test_replayed_samples_pass_the_live_filter_exactly_as_they_pass_it_in_a_file(
    lab: Lab,
) -> None:
    files = _ethernet_samples()
    if not files:
        pytest.skip("no Ethernet sample captures")
    # Files read by tcpreplay one after the other; frames it cannot send (shorter than an
    # Ethernet header, longer than the link) would show up as a difference in the "all" capture.
    figures = _replay_and_compare(lab, files, pps=2000, limit=None)
    assert figures["passed"] > 0


BENCH = REPO / "benchmarks" / "work" / "mixed-100000-seed1.pcap"


@pytest.mark.skipif(not BENCH.exists(), reason="benchmark workload not generated")
def test_benchmark_workload_passes_the_live_filter_as_it_passes_it_in_a_file(lab: Lab) -> None:
    figures = _replay_and_compare(lab, [BENCH], pps=10000, limit=20000)
    print(f"\nlive prefilter on {BENCH.name}: {json.dumps(figures)}")
    assert 0 < figures["passed"] < figures["sent"]


# -- privilege drop ------------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=STEP_TIMEOUT
    )


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_drop_privileges_refuses_to_continue_when_the_switch_fails() -> None:
    res = _python(
        "import os\n"
        "from monitor.capture.privileges import PrivilegeDropError, drop_privileges\n"
        "def fail(*a):\n"
        "    raise PermissionError(1, 'Operation not permitted')\n"
        "os.setresuid = fail\n"
        "try:\n"
        "    drop_privileges('nobody')\n"
        "except PrivilegeDropError as e:\n"
        "    print('refused', os.getuid(), e)\n"
        "    raise SystemExit(3)\n"
    )
    assert res.returncode == 3, res.stderr
    assert res.stdout.startswith("refused 0 cannot switch to 'nobody'")


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_drop_privileges_rejects_an_unknown_user() -> None:
    res = _python(
        "from monitor.capture.privileges import PrivilegeDropError, drop_privileges\n"
        "try:\n"
        "    drop_privileges('no-such-user-for-the-sensor')\n"
        "except PrivilegeDropError as e:\n"
        "    print(e)\n"
    )
    assert "unknown user" in res.stdout, res.stderr


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_drop_privileges_leaves_no_way_back_to_root() -> None:
    res = _python(
        "import json, os\n"
        "from monitor.capture.privileges import drop_privileges\n"
        "ident = drop_privileges('nobody')\n"
        "try:\n"
        "    os.setuid(0)\n"
        "    back = True\n"
        "except PermissionError:\n"
        "    back = False\n"
        "nnp = [l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0].split()[1]\n"
        "print(json.dumps([ident.uid, os.getresuid(), os.getresgid(), os.getgroups(),\n"
        "                  ident.capabilities, back, nnp]))\n"
    )
    assert res.returncode == 0, res.stderr
    uid, resuid, resgid, groups, caps, back, nnp = json.loads(res.stdout)
    assert uid != 0 and resuid == [uid] * 3 and 0 not in resgid and groups == []
    assert set(caps.values()) == {0} and back is False and nnp == "1"


if __name__ == "__main__":
    if sys.argv[1] == "trunk":
        sys.exit(_trunk_main(sys.argv[2], int(sys.argv[3])))
    sys.exit(_capture_main(sys.argv[1], sys.argv[2]))
