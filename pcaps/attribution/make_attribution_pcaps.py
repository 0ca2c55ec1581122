#!/usr/bin/env python3
"""Regenerate the attribution sample captures (needs root, dnsmasq, isc-dhcp-client, MIT
krb5-kdc/krb5-user, gss-ntlmssp, curl, openssl, dig, tcpdump, tshark, ethtool, impacket).

Attribution is the question "which workstation and which person", and its hard case is an IP
address that changes hands. So a small police-department LAN is built from network namespaces
and real software, and two workstations take the same address one after the other:

* ``pdattr-srv`` is the gateway and domain controller: it owns the LAN bridge ``br0``
  (10.98.0.1/24) with dnsmasq as DHCP server (a pool of ONE address, 10.98.0.50, so the second
  workstation is given exactly the address the first released), an MIT KDC for PD.TEST on
  UDP+TCP 88, an HTTP server on :80 that asks for SPNEGO/NTLM (the intranet), and the
  "internet" on /32 loopback addresses: a TLS server for the vendor names (10.98.200.10-.12,
  .20, .30) and, in the resolver capture, the authoritative DNS server 10.98.200.53.
* ``pdattr-ws01`` / ``pdattr-ws02`` are workstations with fixed MACs, each plugged into the
  bridge by a veth. ISC dhclient sending its host name (DHCP option 12), ``kinit -k`` with the
  machine account's keytab (as a domain-joined machine does at boot), ``kinit`` of the user who
  logs on, then dig/curl/openssl to vendor names. ws01 releases its lease and disappears before ws02
  boots.
* ``pdattr-res`` (resolver capture only) is an internal forwarding resolver (dnsmasq on
  10.98.0.53, cache on) that forwards to the authoritative server.

tcpdump records ``br0`` in the gateway namespace without promiscuous mode (``-p``): it sees what
the gateway sends and receives (DHCP, Kerberos, traffic routed to the internet, broadcasts), but
not traffic between two other bridge ports, i.e. not the workstations' queries to the internal
resolver -- the view of a sensor at the uplink.

For each capture the script writes ``NAME.intent.yaml`` from what it did: every step is logged
with its wall-clock interval, tshark (an independent dissector) says which frames carry which
names, and the step a detection's packet falls into says whose it is (workstation, and the user
logged on at that moment, or null). It aborts when tshark shows a name the steps did not
declare, or misses one they did, and it checks the identity facts (DHCP ACK yiaddr, RELEASE,
Kerberos AS-REP cname, NTLM AUTHENTICATE) before anything is copied into place.

    sudo python3 pcaps/attribution/make_attribution_pcaps.py            # both captures
    sudo python3 pcaps/attribution/make_attribution_pcaps.py --only attribution_resolver
    sudo python3 pcaps/attribution/make_attribution_pcaps.py --out /tmp/x

Idempotent and bounded: namespaces left by an interrupted run (prefix ``pdattr-``) are removed
first, a lock file keeps two runs apart, the whole run is limited by ``--timeout`` seconds, and
on every exit (error, Ctrl-C, SIGTERM, timeout) the processes started here are stopped and the
namespaces, ``/etc/netns/pdattr-*`` and the temporary folder removed. No namespace has a route
out of 10.98.0.0/16, so nothing leaves the machine. Every run produces new bytes (ports, ids,
randoms, timestamps), so captures and intents are rewritten together and must be committed
together.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GENERATOR = "pcaps/attribution/make_attribution_pcaps.py"
PREFIX = "pdattr-"
SRV_NS = f"{PREFIX}srv"
RES_NS = f"{PREFIX}res"
LOCK_FILE = Path("/run/lock/pdattr-make-attribution-pcaps.lock")

GATEWAY = "10.98.0.1"
POOL = "10.98.0.50"  # the only DHCP address: both workstations get it
RESOLVER = "10.98.0.53"
AUTH_DNS = "10.98.200.53"
SERVER_MAC = "02:00:00:98:00:fe"
RESOLVER_MAC = "02:00:00:98:00:35"
REALM = "PD.TEST"
NTLM_DOMAIN = "PD"
DNS_TTL = 300  # dnsmasq's local records have TTL 0 unless told; a resolver would not cache

# "Internet" addresses, all local to the gateway namespace (on lo, /32). Each name is a
# --host-record (A, TTL DNS_TTL) inside its own --local domain, so that dnsmasq answers AAAA
# with NODATA and subdomains with NXDOMAIN, as a real authoritative server does; without an
# upstream it would answer them REFUSED.
A_RECORDS = {
    "app.clearview.ai": "10.98.200.10",
    "pimeyes.com": "10.98.200.11",
    "facecheck.id": "10.98.200.12",
    "notclearview.ai": "10.98.200.20",  # decoy
    "www.example.com": "10.98.200.30",  # benign
    "intranet.police.example": GATEWAY,  # the department's own web server
}
INTERNET = sorted({ip for ip in A_RECORDS.values() if ip != GATEWAY} | {AUTH_DNS})
VENDOR_DOMAINS = ("clearview.ai", "pimeyes.com", "facecheck.id", "lenso.ai", "search4faces.com")

KDC_MASTER_PASSWORD = "pass"  # throw-away test realm


@dataclass(frozen=True, slots=True)
class Workstation:
    name: str  # namespace suffix and DHCP option 12 host name
    mac: str
    user: str
    password: str
    machine: str  # machine account principal (AD style, upper case, ends in $)
    kerberos_tcp: bool  # udp_preference_limit = 1 in this workstation's krb5.conf

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.name}"


WS01 = Workstation("ws01", "02:00:00:98:00:01", "alice", "Secret1", "WS01$", kerberos_tcp=False)
WS02 = Workstation("ws02", "02:00:00:98:00:02", "bob", "Secret2", "WS02$", kerberos_tcp=True)
WORKSTATIONS = (WS01, WS02)

# dhclient runs this on every state change. The stock dhclient-script would rewrite the host's
# /etc/resolv.conf; this one configures the address and default route, and writes the
# namespace's own resolv.conf (the file `ip netns exec` binds over /etc/resolv.conf), as a
# workstation's network manager does. No search domain: glibc would try vendor names with it
# appended after a failure, adding names nobody typed.
CLIENT_SCRIPT = """#!/bin/sh
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    ip addr replace "$new_ip_address/24" dev "$interface"
    [ -n "$new_routers" ] && ip route replace default via "${{new_routers%% *}}" dev "$interface"
    : > {resolv}
    for ns in $new_domain_name_servers; do echo "nameserver $ns" >> {resolv}; done ;;
  EXPIRE|FAIL|RELEASE|STOP)
    ip route del default 2>/dev/null
    [ -n "$old_ip_address" ] && ip addr del "$old_ip_address/24" dev "$interface" 2>/dev/null
    : > {resolv} ;;
esac
exit 0
"""

# Debian's dhclient 4.4 has no -H; "send host-name" puts the same option 12 in DISCOVER and
# REQUEST.
DHCLIENT_CONF = """send host-name "{name}";
request subnet-mask, broadcast-address, routers, domain-name-servers;
"""

# TLS on 443 for every "internet" name (self-signed certificate), and on :80 the intranet,
# which asks for HTTP Negotiate and answers an NTLM NEGOTIATE wrapped in SPNEGO with a CHALLENGE
# from domain PD, so that a real client (curl + gss-ntlmssp) sends a real AUTHENTICATE.
SERVER_CODE = r"""
import base64, socket, ssl, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from impacket import spnego

cert, key = sys.argv[1:3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["http/1.1"])
BODY = b"<!doctype html><title>test</title><p>sample page</p>\n"


def challenge():
    def av(av_id, value):
        return struct.pack("<HH", av_id, len(value)) + value
    info = b"".join((
        av(2, "PD".encode("utf-16-le")),
        av(1, "INTRANET".encode("utf-16-le")),
        av(4, "pd.test".encode("utf-16-le")),
        av(3, "intranet.pd.test".encode("utf-16-le")),
        # MsvAvTimestamp, now: gss-ntlmssp refuses a skewed clock.
        av(7, struct.pack("<Q", (int(time.time()) + 11_644_473_600) * 10_000_000)),
        av(0, b""),
    ))
    # UNICODE|REQUEST_TARGET|SIGN|NTLM|ALWAYS_SIGN|TARGET_TYPE_DOMAIN|EXTENDED_SESSIONSECURITY|
    # TARGET_INFO|VERSION|128|KEY_EXCH|56
    flags = 0x1 | 0x4 | 0x10 | 0x200 | 0x8000 | 0x10000 | 0x80000 | 0x800000 | 0x2000000
    flags |= 0x20000000 | 0x40000000 | 0x80000000
    target = "PD".encode("utf-16-le")
    version = struct.pack("<BBHxxxB", 10, 0, 20348, 15)
    msg = (b"NTLMSSP\x00" + struct.pack("<I", 2) + struct.pack("<HHI", len(target), len(target), 56)
           + struct.pack("<I", flags) + bytes.fromhex("0123456789abcdef") + bytes(8)
           + struct.pack("<HHI", len(info), len(info), 56 + len(target)) + version + target + info)
    resp = spnego.SPNEGO_NegTokenResp()
    resp["NegState"] = b"\x01"
    resp["SupportedMech"] = spnego.TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]
    resp["ResponseToken"] = msg
    return resp.getData()


class Page(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.client_address[0], fmt % args))


class Intranet(Page):
    def do_GET(self):
        token = self.headers.get("Authorization", "").partition(" ")[2]
        blob = base64.b64decode(token) if token else b""
        at = blob.find(b"NTLMSSP\x00")
        kind = blob[at + 8 : at + 12] if at >= 0 else b""
        if kind == b"\x03\x00\x00\x00":
            return super().do_GET()
        reply = "Negotiate"
        if kind == b"\x01\x00\x00\x00":
            reply += " " + base64.b64encode(challenge()).decode()
        self.send_response(401)
        self.send_header("WWW-Authenticate", reply)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Tls(ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        sock, addr = super().get_request()
        return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        sys.stderr.write("tls %s: %s\n" % (client_address[0], sys.exc_info()[1]))


plain = ThreadingHTTPServer(("0.0.0.0", 80), Intranet)
plain.daemon_threads = True
threading.Thread(target=plain.serve_forever, daemon=True).start()
Tls(("0.0.0.0", 443), Page).serve_forever()
"""


class GenerationError(Exception):
    """The capture does not hold what the script did, or the lab could not be built."""


class Timeout(BaseException):
    """The run exceeded its time budget (raised from SIGALRM, like KeyboardInterrupt)."""


def run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 30)
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def ns(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def is_vendor(name: str) -> bool:
    name = name.lower().rstrip(".")
    return any(name == d or name.endswith("." + d) for d in VENDOR_DOMAINS)


@dataclass(slots=True)
class Step:
    """One thing a workstation (or the lab) did, and when: a detection's packet time falls into
    exactly one step, which says whose traffic it is."""

    actor: str  # workstation name, or "lab"
    label: str
    start: float
    end: float = 0.0
    user: str | None = None  # the user logged on at the workstation while this step ran
    names: tuple[str, ...] = ()  # host names the step's clients use


def kill_namespace(netns: str) -> None:
    """Stop what still runs in one of this script's namespaces (dhclient daemonises) and delete
    it. Only namespaces with this script's prefix are ever passed here."""
    assert netns.startswith(PREFIX)
    pids = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in pids:
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
    shutil.rmtree(Path("/etc/netns") / netns, ignore_errors=True)


def leftover_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith(PREFIX)]


@dataclass(slots=True)
class Lab:
    """The LAN of one capture; ``stop`` undoes everything ``start`` and the steps did."""

    root: Path
    with_resolver: bool
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    logged_on: dict[str, str] = field(default_factory=dict)

    # --- building ---------------------------------------------------------------------------

    def add_namespace(self, netns: str) -> None:
        run(["ip", "netns", "add", netns])
        self.namespaces.append(netns)
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        # IPv4 only: no router solicitations, MLD or ND in the capture.
        run(ns(netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"))
        run(ns(netns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"))

    @staticmethod
    def no_offloads(netns: str, dev: str) -> None:
        """Real segments with valid checksums in the capture, as on a wire (veths would
        otherwise hand over unchecksummed or GRO-merged packets)."""
        offloads = ("tso", "gso", "gro", "tx", "rx")
        run(ns(netns, "ethtool", "-K", dev, *(w for o in offloads for w in (o, "off"))))

    def plug(self, netns: str, port: str, mac: str, ifname: str = "eth0") -> None:
        """A veth from a new bridge port into ``netns``."""
        run(["ip", "-n", SRV_NS, "link", "add", port, "type", "veth", "peer", "name", ifname])
        run(["ip", "-n", SRV_NS, "link", "set", ifname, "netns", netns])
        run(["ip", "-n", SRV_NS, "link", "set", port, "master", "br0"])
        self.no_offloads(SRV_NS, port)
        run(["ip", "-n", SRV_NS, "link", "set", port, "up"])
        run(["ip", "-n", netns, "link", "set", ifname, "address", mac])
        self.no_offloads(netns, ifname)
        run(["ip", "-n", netns, "link", "set", ifname, "up"])

    def start(self) -> None:
        self.add_namespace(SRV_NS)
        s = SRV_NS
        run(["ip", "-n", s, "link", "add", "br0", "type", "bridge", "stp_state", "0"])
        run(["ip", "-n", s, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])
        run(["ip", "-n", s, "link", "set", "br0", "address", SERVER_MAC])
        run(["ip", "-n", s, "addr", "add", f"{GATEWAY}/24", "dev", "br0"])
        for ip in INTERNET:
            run(["ip", "-n", s, "addr", "add", f"{ip}/32", "dev", "lo"])
        run(["ip", "-n", s, "link", "set", "br0", "up"])
        self.no_offloads(s, "br0")
        self.start_kdc()
        self.start_servers()
        self.start_dns_dhcp()
        if self.with_resolver:
            self.add_namespace(RES_NS)
            self.plug(RES_NS, "pres", RESOLVER_MAC)
            run(["ip", "-n", RES_NS, "addr", "add", f"{RESOLVER}/24", "dev", "eth0"])
            run(["ip", "-n", RES_NS, "route", "add", "default", "via", GATEWAY])
            self.daemon(
                RES_NS,
                "resolver",
                [
                    "dnsmasq",
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--user=root",
                    f"--pid-file={self.root / 'resolver.pid'}",
                    f"--listen-address={RESOLVER}",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    f"--server={AUTH_DNS}",
                    "--cache-size=150",
                    "--log-queries",
                    f"--log-facility={self.root / 'resolver.log'}",
                ],
                ready=(self.root / "resolver.log", "using nameserver"),
            )

    def daemon(
        self, netns: str, label: str, argv: list[str], ready: tuple[Path, str], **kw: Any
    ) -> None:
        err = (self.root / f"{label}.err").open("wb")
        proc = subprocess.Popen(ns(netns, *argv), stdout=err, stderr=subprocess.STDOUT, **kw)
        self.procs.append(proc)
        path, text = ready
        for _ in range(200):
            if path.exists() and text in path.read_text(errors="replace"):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise GenerationError(f"{label} did not start; see {path} and {err.name}")

    def start_dns_dhcp(self) -> None:
        records = [
            arg
            for name, ip in A_RECORDS.items()
            for arg in (f"--host-record={name},{ip}", f"--local=/{name}/")
        ]
        dns = ["--no-resolv", "--no-hosts", f"--local-ttl={DNS_TTL}", "--log-queries", *records]
        dhcp = [
            "--interface=br0",
            "--bind-interfaces",
            "--dhcp-authoritative",
            f"--dhcp-range={POOL},{POOL},255.255.255.0,10m",
            f"--dhcp-option=option:router,{GATEWAY}",
            f"--dhcp-option=option:dns-server,{RESOLVER if self.with_resolver else GATEWAY}",
            f"--dhcp-leasefile={self.root / 'dnsmasq.leases'}",
            "--log-dhcp",
        ]
        common = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--user=root"]
        if self.with_resolver:
            # The DHCP server serves no DNS; the internet's authoritative server does.
            dhcp_argv = [*common, "--port=0", *dhcp]
            self.daemon(
                SRV_NS,
                "authoritative",
                [
                    *common,
                    f"--pid-file={self.root / 'auth.pid'}",
                    f"--listen-address={AUTH_DNS}",
                    "--bind-interfaces",
                    *dns,
                    f"--log-facility={self.root / 'auth.log'}",
                ],
                ready=(self.root / "auth.log", "started"),
            )
        else:
            dhcp_argv = [*common, *dhcp, *dns]
        self.daemon(
            SRV_NS,
            "dhcp",
            [
                *dhcp_argv,
                f"--pid-file={self.root / 'dnsmasq.pid'}",
                f"--log-facility={self.root / 'dnsmasq.log'}",
            ],
            ready=(self.root / "dnsmasq.log", "DHCP, IP range"),
        )

    def krb5_conf(self, tcp: bool) -> Path:
        path = self.root / f"krb5{'-tcp' if tcp else ''}.conf"
        path.write_text(
            f"""[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    {"udp_preference_limit = 1" if tcp else ""}
[realms]
    {REALM} = {{
        kdc = {GATEWAY}:88
    }}
"""
        )
        return path

    def start_kdc(self) -> None:
        r = self.root
        (r / "kdc.conf").write_text(
            f"""[kdcdefaults]
    kdc_listen = 88
    kdc_tcp_listen = 88
[realms]
    {REALM} = {{
        database_name = {r / "principal"}
        key_stash_file = {r / "stash"}
        acl_file = {r / "kadm5.acl"}
        # Pre-authentication for every principal, as Active Directory does by default.
        default_principal_flags = +preauth
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}
[logging]
    kdc = FILE:{r / "kdc.log"}
"""
        )
        (r / "kadm5.acl").write_text("")
        env = self.kdc_env()
        run(["kdb5_util", "create", "-s", "-r", REALM, "-P", KDC_MASTER_PASSWORD], env=env)
        for ws in WORKSTATIONS:
            admin = ["kadmin.local", "-r", REALM, "-q"]
            run([*admin, f"addprinc -pw {ws.password} {ws.user}"], env=env)
            run([*admin, f"addprinc -randkey {ws.machine}"], env=env)
            run([*admin, f"ktadd -k {r / (ws.name + '.keytab')} {ws.machine}"], env=env)
        self.daemon(
            SRV_NS,
            "kdc",
            ["krb5kdc", "-n", "-r", REALM],
            ready=(r / "kdc.log", "commencing operation"),
            env=env,
        )

    def kdc_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KRB5_CONFIG=str(self.krb5_conf(tcp=False)), KRB5_KDC_PROFILE=str(self.root / "kdc.conf")
        )
        return env

    def start_servers(self) -> None:
        names = sorted(A_RECORDS)
        san = ",".join(f"DNS:{n},DNS:*.{n}" for n in names)
        cert, key = self.root / "cert.pem", self.root / "key.pem"
        run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=app.clearview.ai",
                "-addext",
                f"subjectAltName={san}",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ]
        )
        code = self.root / "servers.py"
        code.write_text(SERVER_CODE)
        err = (self.root / "servers.err").open("wb")
        self.procs.append(
            subprocess.Popen(
                ns(SRV_NS, sys.executable, str(code), str(cert), str(key)),
                stdout=err,
                stderr=subprocess.STDOUT,
            )
        )
        for _ in range(200):
            listening = run(ns(SRV_NS, "ss", "-Htln")).stdout
            if ":443 " in listening and ":80 " in listening:
                return
            time.sleep(0.05)
        raise GenerationError(f"servers did not start; see {err.name}")

    def add_workstation(self, ws: Workstation) -> None:
        self.add_namespace(ws.netns)
        self.plug(ws.netns, f"p{ws.name}", ws.mac)
        etc = Path("/etc/netns") / ws.netns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("")
        wdir = self.root / ws.name
        wdir.mkdir(exist_ok=True)
        (wdir / "dhclient.conf").write_text(DHCLIENT_CONF.format(name=ws.name))
        script = wdir / "dhclient-script"
        script.write_text(CLIENT_SCRIPT.format(resolv=etc / "resolv.conf"))
        script.chmod(0o755)
        # gss-ntlmssp's credentials (DOMAIN:user:password) for the intranet's NTLM.
        (wdir / "ntlm_users").write_text(f"{NTLM_DOMAIN}:{ws.user}:{ws.password}\n")

    def remove_workstation(self, ws: Workstation) -> None:
        kill_namespace(ws.netns)
        self.namespaces.remove(ws.netns)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for netns in reversed(self.namespaces):
            kill_namespace(netns)
        self.namespaces.clear()

    # --- doing ------------------------------------------------------------------------------

    @contextmanager
    def step(
        self, actor: Workstation | None, label: str, names: tuple[str, ...] = ()
    ) -> Iterator[None]:
        who = actor.name if actor else "lab"
        user = self.logged_on.get(actor.name) if actor else None
        st = Step(who, label, time.time(), user=user, names=names)
        time.sleep(0.05)
        try:
            yield
        finally:
            time.sleep(0.3)  # let answers and FINs arrive inside the step's interval
            st.end = time.time()
            self.steps.append(st)
            time.sleep(0.05)

    def ws_env(self, ws: Workstation) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KRB5_CONFIG=str(self.krb5_conf(tcp=ws.kerberos_tcp)),
            KRB5CCNAME=f"FILE:{self.root / ws.name / 'ccache'}",
        )
        return env

    def ws_run(
        self,
        ws: Workstation,
        argv: Sequence[str],
        stdin: str = "",
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ns(ws.netns, *argv),
            input=stdin,
            env=env or self.ws_env(ws),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        with (self.root / ws.name / "commands.log").open("a") as log:
            log.write(f"$ {' '.join(argv)}\nexit {done.returncode}\n{done.stdout}{done.stderr}\n")
        return done

    def must(
        self,
        ws: Workstation,
        argv: Sequence[str],
        stdin: str = "",
        env: dict[str, str] | None = None,
    ) -> str:
        done = self.ws_run(ws, argv, stdin, env)
        if done.returncode != 0:
            raise GenerationError(
                f"{ws.name}: {' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout

    def dhclient(self, ws: Workstation, *args: str) -> None:
        wdir = self.root / ws.name
        self.must(
            ws,
            [
                "dhclient",
                "-4",
                "-v",
                "-cf",
                str(wdir / "dhclient.conf"),
                "-lf",
                str(wdir / "dhclient.leases"),
                "-pf",
                str(wdir / "dhclient.pid"),
                "-sf",
                str(wdir / "dhclient-script"),
                *args,
                "eth0",
            ],
        )

    def boot(self, ws: Workstation) -> None:
        """DHCP with the host name, then the machine account's Kerberos logon (keytab)."""
        with self.step(ws, "dhcp"):
            self.dhclient(ws, "-1")
        addr = run(ns(ws.netns, "ip", "-4", "-o", "addr", "show", "dev", "eth0")).stdout
        if f"inet {POOL}/" not in addr:
            raise GenerationError(f"{ws.name} did not get {POOL}: {addr!r}")
        with self.step(ws, "machine logon"):
            keytab = self.root / f"{ws.name}.keytab"
            self.must(ws, ["kinit", "-k", "-t", str(keytab), ws.machine])

    def logon(self, ws: Workstation) -> None:
        with self.step(ws, "user logon"):
            self.must(ws, ["kinit", ws.user], stdin=ws.password + "\n")
        self.logged_on[ws.name] = ws.user

    def dig(self, ws: Workstation, name: str) -> None:
        with self.step(ws, f"dig {name}", (name,)):
            self.must(ws, ["dig", "+tries=1", "+time=3", name, "A"])

    def curl_https(self, ws: Workstation, name: str) -> None:
        with self.step(ws, f"curl https://{name}/", (name,)):
            self.must(
                ws, ["curl", "-sk", "-o", "/dev/null", "--max-time", "10", f"https://{name}/"]
            )

    def openssl_hello(self, ws: Workstation, name: str, sni: bool = True) -> None:
        sni_args = ["-servername", name] if sni else ["-noservername"]
        label = f"openssl s_client {name}{'' if sni else ' (no SNI)'}"
        with self.step(ws, label, (name,)):
            self.must(ws, ["openssl", "s_client", "-connect", f"{name}:443", *sni_args], stdin="")

    def intranet_ntlm(self, ws: Workstation) -> None:
        """curl --negotiate through gss-ntlmssp: SPNEGO-wrapped NTLM naming user, domain and
        the workstation's NetBIOS name. (No Kerberos ticket is offered -- an empty ccache -- so
        SPNEGO picks NTLM, as a Windows client does for a server without an SPN.)"""
        env = self.ws_env(ws)
        env.update(
            NTLM_USER_FILE=str(self.root / ws.name / "ntlm_users"),
            NETBIOS_COMPUTER_NAME=ws.name.upper(),
            KRB5CCNAME=f"FILE:{self.root / ws.name / 'no-such-ccache'}",
        )
        name = "intranet.police.example"
        with self.step(ws, f"curl --negotiate http://{name}/", (name,)):
            out = self.must(
                ws,
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "10",
                    "--negotiate",
                    "-u",
                    ":",
                    f"http://{name}/",
                ],
                env=env,
            )
            if out.strip() != "200":
                raise GenerationError(f"intranet NTLM logon failed: HTTP {out!r}")

    def release(self, ws: Workstation) -> None:
        with self.step(ws, "dhcp release"):
            self.dhclient(ws, "-r")
        with self.step(None, f"{ws.name} unplugged"):
            self.remove_workstation(ws)


@contextmanager
def capture(pcap: Path) -> Iterator[None]:
    """tcpdump on the gateway's bridge interface, not promiscuous (see the module docstring).
    ``--immediate-mode``: without it packets reach tcpdump in blocks and the last ones are lost
    when it is stopped soon after."""
    dump = subprocess.Popen(
        ns(
            SRV_NS,
            "tcpdump",
            "-i",
            "br0",
            "-p",
            "-s",
            "0",
            "--immediate-mode",
            "-U",
            "-n",
            "-w",
            str(pcap),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert dump.stderr is not None
        line = dump.stderr.readline()
        if b"listening" not in line:
            raise GenerationError(f"tcpdump failed: {line!r}")
        time.sleep(0.2)
        yield
        time.sleep(0.5)
    finally:
        dump.send_signal(signal.SIGINT)
        try:
            dump.wait(timeout=5)
        except subprocess.TimeoutExpired:
            dump.kill()
            dump.wait()


# --- the two scenarios ---------------------------------------------------------------------


def two_workstations(lab: Lab) -> None:
    lab.add_workstation(WS01)
    lab.add_workstation(WS02)
    lab.boot(WS01)
    lab.logon(WS01)
    lab.dig(WS01, "app.clearview.ai")
    lab.dig(WS01, "notclearview.ai")
    lab.curl_https(WS01, "app.clearview.ai")
    lab.curl_https(WS01, "www.example.com")
    lab.release(WS01)
    lab.boot(WS02)
    # Before bob logs on: the address's previous user (alice) must not be carried over.
    lab.dig(WS02, "facecheck.id")
    lab.logon(WS02)
    lab.intranet_ntlm(WS02)
    lab.dig(WS02, "pimeyes.com")
    lab.openssl_hello(WS02, "pimeyes.com")


def resolver(lab: Lab) -> None:
    lab.add_workstation(WS01)
    lab.add_workstation(WS02)
    lab.boot(WS01)
    lab.logon(WS01)
    lab.dig(WS01, "app.clearview.ai")
    lab.curl_https(WS01, "app.clearview.ai")
    lab.curl_https(WS01, "www.example.com")
    lab.release(WS01)
    lab.boot(WS02)
    lab.logon(WS02)
    lab.dig(WS02, "pimeyes.com")
    # A ClientHello without SNI: only the address, learned from the resolver's answer, tells.
    lab.openssl_hello(WS02, "pimeyes.com", sni=False)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    with_resolver: bool
    play: Any
    description: str


SCENARIOS = (
    Scenario(
        "attribution_two_workstations",
        False,
        two_workstations,
        "A LAN built from network namespaces (bridge, dnsmasq as DHCP server with a ONE-address "
        f"pool and as DNS server, MIT KDC for {REALM}, TLS server for the vendor names), "
        "captured on the gateway's bridge interface. ws01 (ISC dhclient, host-name ws01) is given "
        f"{POOL}, logs on its machine account WS01$ (keytab) and user alice (kinit, Kerberos "
        "over UDP: AS-REQ, KRB-ERROR 25, AS-REQ, AS-REP), digs app.clearview.ai and the decoy "
        "notclearview.ai, curls https://app.clearview.ai/ and https://www.example.com/ (glibc "
        "A+AAAA first), releases its lease (DHCPRELEASE) and is unplugged. ws02 (other MAC, "
        f"dhclient, host-name ws02) is then given the SAME {POOL}, logs on WS02$ and, after a "
        "pre-logon lookup of facecheck.id (no user yet: alice must not carry over), bob "
        "(Kerberos over TCP), authenticates to the intranet with SPNEGO/NTLM (bob, PD, WS02; "
        "curl + gss-ntlmssp), digs pimeyes.com and opens TLS to pimeyes.com (openssl "
        "s_client). Every detection must carry the workstation that held the address at that "
        "moment and the user logged on there.",
    ),
    Scenario(
        "attribution_resolver",
        True,
        resolver,
        "The same LAN and workstations, but the workstations resolve through an internal "
        f"forwarding resolver (dnsmasq, cache on) at {RESOLVER}, which forwards to the "
        f"authoritative server at {AUTH_DNS} on the internet side. The capture point (the "
        "gateway's bridge interface) sees DHCP, Kerberos, the resolver's upstream queries and "
        "the workstations' connections to the internet, but none of the workstations' own "
        "DNS: a vendor name is tied to a workstation only through the address the resolver "
        f"was given. ws01 ({POOL}, alice) digs app.clearview.ai and curls it (TLS with SNI) "
        "and www.example.com, releases and is unplugged; ws02 (same address, bob) digs "
        "pimeyes.com and opens TLS to it WITHOUT SNI (openssl s_client -noservername): only "
        "the resolver-learned address names the vendor (ip-resolved). The resolver's own "
        "queries are resolver-only: no person behind them.",
    ),
)


# --- reading the capture back with tshark --------------------------------------------------

FIELDS = (
    "frame.number",
    "frame.time_epoch",
    "eth.src",
    "eth.dst",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "udp.srcport",
    "udp.dstport",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.stream",
    "tcp.flags.syn",
    "tcp.flags.ack",
    "tcp.len",
    "dhcp.option.dhcp",
    "dhcp.hw.mac_addr",
    "dhcp.ip.your",
    "dhcp.ip.client",
    "dhcp.option.hostname",
    "kerberos.msg_type",
    "kerberos.error_code",
    "kerberos.CNameString",
    "kerberos.crealm",
    "dns.flags.response",
    "dns.id",
    "dns.qry.name",
    "dns.qry.type",
    "dns.flags.rcode",
    "dns.a",
    "dns.resp.ttl",
    "dns.cname",
    "tls.handshake.type",
    "tls.handshake.extensions_server_name",
    "http.host",
    "http.request.method",
    "ntlmssp.messagetype",
    "ntlmssp.auth.username",
    "ntlmssp.auth.domain",
    "ntlmssp.auth.hostname",
)

DHCP_TYPES = {
    1: "DISCOVER",
    2: "OFFER",
    3: "REQUEST",
    4: "DECLINE",
    5: "ACK",
    6: "NAK",
    7: "RELEASE",
}
KRB_TYPES = {10: "AS-REQ", 11: "AS-REP", 12: "TGS-REQ", 13: "TGS-REP", 30: "KRB-ERROR"}


@dataclass(slots=True)
class Frame:
    no: int
    ts: float
    src_mac: str
    dst_mac: str
    src: str
    dst: str
    f: dict[str, list[str]]

    def one(self, key: str, default: str = "") -> str:
        return self.f.get(key, [default])[0]

    def all(self, key: str) -> list[str]:
        return self.f.get(key, [])


def read_frames(pcap: Path) -> list[Frame]:
    cmd = ["tshark", "-r", str(pcap), "-T", "json", "-o", "tcp.desegment_tcp_streams:TRUE"]
    for name in FIELDS:
        cmd += ["-e", name]
    out = json.loads(run(cmd, timeout=60).stdout or "[]")
    frames = []
    for pkt in out:
        f = pkt["_source"]["layers"]
        frames.append(
            Frame(
                int(f["frame.number"][0]),
                float(f["frame.time_epoch"][0]),
                f.get("eth.src", [""])[0],
                f.get("eth.dst", [""])[0],
                f.get("ip.src", [""])[0],
                f.get("ip.dst", [""])[0],
                f,
            )
        )
    return frames


@dataclass(slots=True)
class Detection:
    frame: Frame
    evidence: str
    name: str
    client_ip: str
    client_mac: str
    note: str
    attribution: dict[str, Any] = field(default_factory=dict)
    resolver_only: bool = False


@dataclass(slots=True)
class Reading:
    detections: list[Detection] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)  # every host name seen -> first frame
    dhcp: list[tuple[Frame, str]] = field(default_factory=list)
    kerberos: list[tuple[Frame, str]] = field(default_factory=list)
    ntlm: list[Frame] = field(default_factory=list)
    dns_frames: list[Frame] = field(default_factory=list)
    hellos: list[Frame] = field(default_factory=list)


def read_capture(pcap: Path) -> Reading:
    """The evidence rules of the sample conventions, applied to tshark's view, plus
    ip-resolved (see README): one per TCP connection, at the client's first payload segment,
    when the server address came from a vendor-matching DNS answer sent to a different host,
    within the answer's TTL, and that payload names no host (no SNI, no HTTP Host): a hello
    naming the vendor is its own tls-sni detection, one naming another host goes elsewhere on
    a shared address. Not at the SYN: the project's prefilter drops SYNs on listed ports,
    while the first payload (ClientHello, request) passes it."""
    r = Reading()
    queries: dict[tuple[str, str, str], Frame] = {}
    answered: set[tuple[str, str, str]] = set()
    learned: dict[str, tuple[str, str, float]] = {}  # ip -> (name, recipient, expiry)
    clients: dict[str, str] = {}  # tcp stream -> the address that sent its SYN
    first_payload: set[str] = set()
    for fr in read_frames(pcap):
        for name in fr.all("dns.qry.name") + fr.all("tls.handshake.extensions_server_name"):
            r.names.setdefault(name.lower(), fr.no)
        for host in fr.all("http.host"):
            r.names.setdefault(host.split(":")[0].lower(), fr.no)
        for name in fr.all("dns.cname"):
            r.names.setdefault(name.lower(), fr.no)
        if fr.all("dhcp.option.dhcp"):
            r.dhcp.append((fr, DHCP_TYPES.get(int(fr.one("dhcp.option.dhcp")), "?")))
        for t in fr.all("kerberos.msg_type"):
            r.kerberos.append((fr, KRB_TYPES.get(int(t), t)))
        if 3 in [int(t, 0) for t in fr.all("ntlmssp.messagetype")]:
            r.ntlm.append(fr)
        if fr.all("dns.qry.name"):
            r.dns_frames.append(fr)
            response = fr.one("dns.flags.response") in ("1", "True", "true")
            client = fr.dst if response else fr.src
            cport = fr.one("udp.dstport" if response else "udp.srcport") or fr.one(
                "tcp.dstport" if response else "tcp.srcport"
            )
            key = (client, cport, fr.one("dns.id"))
            qname = fr.one("dns.qry.name").lower()
            if not response:
                queries.setdefault(key, fr)
                if is_vendor(qname):
                    r.detections.append(
                        Detection(fr, "dns-query", qname, fr.src, fr.src_mac, "query")
                    )
            else:
                if key not in queries and key not in answered and is_vendor(qname):
                    r.detections.append(
                        Detection(fr, "dns-query", qname, fr.dst, fr.dst_mac, "response only")
                    )
                answered.add(key)
                if any(is_vendor(c) for c in fr.all("dns.cname")):
                    raise GenerationError(f"frame {fr.no}: unexpected CNAME to a vendor")
                if is_vendor(qname):
                    ttls = [int(t) for t in fr.all("dns.resp.ttl")] or [0]
                    for ip in fr.all("dns.a"):
                        learned[ip] = (qname, fr.dst, fr.ts + min(ttls))
        # ip-resolved, checked before the payload's own evidence: in one packet it comes first.
        stream = fr.one("tcp.stream")
        if fr.one("tcp.flags.syn") == "1" and fr.one("tcp.flags.ack") == "0":
            clients.setdefault(stream, fr.src)
        elif clients.get(stream) == fr.src and stream not in first_payload:
            if int(fr.one("tcp.len", "0")) == 0:
                continue  # handshake ACK: nothing else to see in this frame
            first_payload.add(stream)
            hit = learned.get(fr.dst)
            named = fr.all("tls.handshake.extensions_server_name") or fr.all("http.host")
            if hit and hit[1] != fr.src and fr.ts <= hit[2] and not named:
                r.detections.append(
                    Detection(
                        fr,
                        "ip-resolved",
                        hit[0],
                        fr.src,
                        fr.src_mac,
                        f"first client payload of tcp stream {stream} to {fr.dst}:"
                        f"{fr.one('tcp.dstport')}, an address the answer to {hit[1]} gave",
                    )
                )
        if "1" in fr.all("tls.handshake.type"):
            r.hellos.append(fr)
            sni = fr.one("tls.handshake.extensions_server_name").lower()
            if sni and is_vendor(sni):
                port = fr.one("tcp.dstport")
                r.detections.append(
                    Detection(
                        fr,
                        "tls-sni",
                        sni,
                        fr.src,
                        fr.src_mac,
                        f"tcp stream {fr.one('tcp.stream')}, port {port}",
                    )
                )
        for host, method in zip(fr.all("http.host"), fr.all("http.request.method"), strict=False):
            if is_vendor(host.split(":")[0]):
                r.detections.append(
                    Detection(fr, "http-host", host.lower(), fr.src, fr.src_mac, method)
                )
    return r


# --- checking what the capture holds against what the script did ---------------------------


def step_at(steps: list[Step], ts: float) -> Step:
    for st in steps:
        if st.start <= ts <= st.end:
            return st
    raise GenerationError(f"packet at {ts:.6f} falls outside every step")


def attribute(lab: Lab, r: Reading) -> None:
    macs = {ws.mac: ws for ws in WORKSTATIONS}
    for d in r.detections:
        if d.client_mac == RESOLVER_MAC and d.client_ip == RESOLVER:
            d.resolver_only = True
            # No MAC: the sensor reports one only when DHCP, a lease file or the inventory ties
            # it to the address (at an uplink a frame's source MAC is the router's); the
            # resolver has a static address (see README "The intents: attribution fields").
            d.attribution = {"ip": RESOLVER}
            # Which workstation made the resolver ask (not visible to the sensor; for the note).
            st = step_at(lab.steps, d.frame.ts)
            d.note += f", on behalf of {st.actor} ({st.label}; not visible at the capture point)"
            continue
        ws = macs.get(d.client_mac)
        if ws is None or d.client_ip != POOL:
            raise GenerationError(f"frame {d.frame.no}: detection from {d.client_ip}")
        st = step_at(lab.steps, d.frame.ts)
        if st.actor != ws.name or d.name not in st.names:
            raise GenerationError(
                f"frame {d.frame.no}: {d.evidence} {d.name} from {ws.name} during "
                f"{st.actor}'s step {st.label!r}"
            )
        d.attribution = {"ip": d.client_ip, "mac": ws.mac, "domain": ws.name, "user": st.user}
        d.note += f", {ws.name}: {st.label}"


def check_names(lab: Lab, r: Reading) -> None:
    declared = {n for st in lab.steps for n in st.names}
    seen = set(r.names)
    if seen != declared:
        raise GenerationError(
            f"names on the wire {sorted(seen)} differ from the steps' names {sorted(declared)}"
        )


@dataclass(slots=True)
class Tenure:
    """Who held the pool address from one DHCP ACK to its RELEASE (or the capture's end)."""

    ws: Workstation
    ack: Frame
    release: Frame | None = None
    # (frame, what the intent lists, how it was seen), in frame order
    logons: list[tuple[Frame, dict[str, Any], str]] = field(default_factory=list)


def check_identities(sc: Scenario, lab: Lab, r: Reading) -> list[Tenure]:
    """The identity facts the attribution feature relies on, as tshark sees them."""
    tenures: list[Tenure] = []
    for ws in WORKSTATIONS:
        mine = [(fr, kind) for fr, kind in r.dhcp if fr.one("dhcp.hw.mac_addr") == ws.mac]
        kinds = [k for _, k in mine]
        if kinds[:4] != ["DISCOVER", "OFFER", "REQUEST", "ACK"]:
            raise GenerationError(f"{ws.name}: DHCP exchange {kinds}")
        ack = mine[3][0]
        if ack.one("dhcp.ip.your") != POOL:
            raise GenerationError(f"{ws.name}: ACK frame {ack.no} yiaddr {ack.one('dhcp.ip.your')}")
        if any(fr.one("dhcp.option.hostname") != ws.name for fr, k in mine[:3:2]):
            raise GenerationError(f"{ws.name}: DISCOVER/REQUEST without option 12 {ws.name}")
        tenure = Tenure(ws, ack)
        released = [fr for fr, k in mine if k == "RELEASE"]
        if ws is WS01:
            if not released or released[0].one("dhcp.ip.client") != POOL:
                raise GenerationError("ws01: no DHCPRELEASE of the pool address")
            tenure.release = released[0]
        for fr, kind in r.kerberos:
            if kind == "AS-REP" and fr.dst_mac == ws.mac:
                transport = "tcp" if fr.one("tcp.stream") else "udp"
                who = f"{fr.one('kerberos.CNameString')}@{fr.one('kerberos.crealm')}"
                how = f"Kerberos AS-REP over {transport}"
                if who.split("@")[0].endswith("$"):
                    how += " (machine account: not a user)"
                tenure.logons.append((fr, {"frame": fr.no, "principal": who}, how))
        for fr in r.ntlm:
            if fr.src_mac == ws.mac:
                entry = {
                    "frame": fr.no,
                    "ntlm_user": fr.one("ntlmssp.auth.username"),
                    "ntlm_domain": fr.one("ntlmssp.auth.domain"),
                    "ntlm_workstation": fr.one("ntlmssp.auth.hostname"),
                }
                how = "NTLM AUTHENTICATE (HTTP Negotiate, SPNEGO)"
                tenure.logons.append((fr, entry, how))
        tenure.logons.sort(key=lambda x: x[0].no)
        want = [f"{ws.machine}@{REALM}", f"{ws.user}@{REALM}"]
        got = [e["principal"] for _, e, _ in tenure.logons if "principal" in e]
        if got != want:
            raise GenerationError(f"{ws.name}: AS-REP cnames {got}, expected {want}")
        want_tcp = ws.kerberos_tcp
        for fr, _, how in tenure.logons:
            if how.startswith("Kerberos") and ("over tcp" in how) != want_tcp:
                raise GenerationError(f"{ws.name}: frame {fr.no} {how}")
        tenures.append(tenure)
    if tenures[1].ack.no < tenures[0].release.no:  # type: ignore[union-attr]
        raise GenerationError("ws02 was given the address before ws01 released it")
    errors = [fr for fr, k in r.kerberos if k == "KRB-ERROR"]
    if {fr.one("kerberos.error_code") for fr in errors} != {"25"}:
        raise GenerationError("expected KRB-ERROR 25 (PREAUTH_REQUIRED) before each AS-REP")
    if not sc.with_resolver:
        ntlm = [(fr.one("ntlmssp.auth.username"), fr.one("ntlmssp.auth.domain")) for fr in r.ntlm]
        if ntlm != [(WS02.user, NTLM_DOMAIN)] or r.ntlm[0].one("ntlmssp.auth.hostname") != "WS02":
            raise GenerationError(f"NTLM AUTHENTICATE: {ntlm}")
    else:
        leaked = [fr.no for fr in r.dns_frames if POOL in (fr.src, fr.dst)]
        if leaked:
            raise GenerationError(f"workstation DNS visible at the capture point: frames {leaked}")
        if not any(d.resolver_only for d in r.detections):
            raise GenerationError("no resolver upstream query captured")
        if not any(d.evidence == "ip-resolved" and d.name == "pimeyes.com" for d in r.detections):
            raise GenerationError("no ip-resolved connection to pimeyes.com")
    hellos = [
        (fr.src_mac, fr.one("tls.handshake.extensions_server_name") or None) for fr in r.hellos
    ]
    last_sni = None if sc.with_resolver else "pimeyes.com"
    expect = [(WS01.mac, "app.clearview.ai"), (WS01.mac, "www.example.com"), (WS02.mac, last_sni)]
    if hellos != expect:
        raise GenerationError(f"ClientHellos {hellos}, expected {expect}")
    return tenures


# --- the intent ----------------------------------------------------------------------------


def flow(d: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, str) and (":" in v or "$" in v or "\\" in v or " " in v):
            return json.dumps(v)
        return str(v)

    return "{" + ", ".join(f"{k}: {value(v)}" for k, v in d.items()) + "}"


def wrap(text: str, indent: int = 2) -> str:
    pad = " " * indent
    return "\n".join(textwrap.wrap(text, 96, initial_indent=pad, subsequent_indent=pad))


def render(sc: Scenario, r: Reading, tenures: list[Tenure]) -> str:
    lines = ["description: >-", wrap(sc.description), "source: real", f"generator: {GENERATOR}"]
    if sc.with_resolver:
        lines += [
            "sensor_config:          # what the sensor must be told for this capture",
            f"  resolvers: [{RESOLVER}]   # internal resolvers: their queries are resolver-only",
        ]
    lines.append("detections:             # in the order of the completing packets")
    for d in sorted(r.detections, key=lambda d: d.frame.no):
        entry: dict[str, Any] = {"evidence": d.evidence, "name": d.name}
        source = flow(d.attribution)
        text = flow(entry)[:-1] + f", source: {source}"
        if d.resolver_only:
            text += ", attribution: resolver-only"
        lines.append(f"  - {text}}}  # frame {d.frame.no}: {d.note}")
    benign = sorted(n for n in r.names if not is_vendor(n))
    lines.append(f"must_not_match: [{', '.join(benign)}]")
    lines.append(f"ip_timeline:            # who held {POOL}, and the logons seen from there")
    for t in tenures:
        lines += [
            f"  - ip: {POOL}",
            f'    mac: "{t.ws.mac}"',
            f"    domain: {t.ws.name}  # DHCP option 12 of its DISCOVER and REQUEST",
            f"    bound_at_frame: {t.ack.no}  # DHCPACK, yiaddr {POOL}",
            f"    released_at_frame: {t.release.no if t.release else 'null'}"
            + ("  # DHCPRELEASE" if t.release else "  # still held at the end of the capture"),
            "    logons:",
        ]
        lines += [f"      - {flow(entry)}  # {how}" for _, entry, how in t.logons]
    return "\n".join(lines) + "\n"


def timeline_text(r: Reading, tenures: list[Tenure]) -> str:
    out = []
    for t in tenures:
        end = f"frame {t.release.no} (RELEASE)" if t.release else "end of capture"
        logons = ", ".join(f"{flow(e)}" for _, e, _ in t.logons)
        out.append(f"  {POOL} {t.ws.name} {t.ws.mac}: frame {t.ack.no} (ACK) .. {end}; {logons}")
    for d in sorted(r.detections, key=lambda d: d.frame.no):
        out.append(
            f"  frame {d.frame.no}: {d.evidence} {d.name} -> {d.attribution}"
            + (" resolver-only" if d.resolver_only else "")
        )
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------------


def make(sc: Scenario, tmp: Path) -> tuple[Path, str, str]:
    root = tmp / sc.name
    root.mkdir()
    lab = Lab(root, sc.with_resolver)
    pcap = tmp / f"{sc.name}.pcap"
    try:
        lab.start()
        with capture(pcap):
            sc.play(lab)
    finally:
        lab.stop()
    r = read_capture(pcap)
    check_names(lab, r)
    attribute(lab, r)
    tenures = check_identities(sc, lab, r)
    return pcap, render(sc, r, tenures), timeline_text(r, tenures)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    parser.add_argument("--only", action="append", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--timeout", type=int, default=300, help="seconds for the whole run")
    parser.add_argument("--keep-work", type=Path, help="copy the lab's logs here on failure")
    args = parser.parse_args(argv)
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    tools = ("dnsmasq", "dhclient", "krb5kdc", "kdb5_util", "kadmin.local", "kinit", "curl")
    for tool in (*tools, "openssl", "dig", "tcpdump", "tshark", "ethtool", "ss"):
        if shutil.which(tool) is None:
            sys.exit(
                f"{tool} not found: apt-get install dnsmasq-base isc-dhcp-client krb5-kdc "
                "krb5-admin-server krb5-user gss-ntlmssp curl openssl dnsutils tcpdump tshark "
                "ethtool iproute2"
            )
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    lock = LOCK_FILE.open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"another run holds {LOCK_FILE}")

    def interrupt(signum: int, frame: object) -> None:
        raise Timeout() if signum == signal.SIGALRM else KeyboardInterrupt()

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(args.timeout)
    # Left by an earlier run that was killed outright (we hold the lock: none is running).
    for netns in leftover_namespaces():
        print(f"removing leftover namespace {netns}")
        kill_namespace(netns)
    for old in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        shutil.rmtree(old, ignore_errors=True)
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    made: list[tuple[str, Path, str]] = []
    with tempfile.TemporaryDirectory(prefix="pdattr-") as tmp:
        try:
            for sc in chosen:
                pcap, intent, timeline = make(sc, Path(tmp))
                made.append((sc.name, pcap, intent))
                print(f"{sc.name}.pcap ({pcap.stat().st_size} bytes)\n{timeline}")
        except (GenerationError, Timeout, KeyboardInterrupt, subprocess.SubprocessError) as exc:
            if args.keep_work:
                shutil.copytree(tmp, args.keep_work, dirs_exist_ok=True)
            what = "time budget exceeded" if isinstance(exc, Timeout) else str(exc) or repr(exc)
            if isinstance(exc, subprocess.CalledProcessError):
                what += f"\n{exc.stderr}"
            print(f"FAILED: {what}", file=sys.stderr)
            return 1
        finally:
            signal.alarm(0)
            for netns in leftover_namespaces():
                kill_namespace(netns)
        # Only when every capture passed its checks: the committed files are replaced together.
        args.out.mkdir(parents=True, exist_ok=True)
        for name, pcap, intent in made:
            shutil.copyfile(pcap, args.out / f"{name}.pcap")
            (args.out / f"{name}.intent.yaml").write_text(intent)
            print(f"wrote {args.out / name}.pcap and .intent.yaml")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("network namespaces and tcpdump need root")
    sys.exit(main())
