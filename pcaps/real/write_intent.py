"""Write the NAME.intent.yaml of a real-client capture made by make_real_pcaps.sh.

The intent is the yardstick for the project's sensor, so it must not come from that sensor: a
sensor bug would become the expectation.  Instead the capturing script declares the host names
its clients used, and tshark -- an independent dissector with its own TCP reassembly, DNS
transaction tracking, CONNECT-tunnel handling and QUIC Initial decryption -- says where in the
capture each use happened.  The evidence rules of pcaps/README conventions are applied here:

* dns-query: one per DNS transaction whose question matches (at the query; at the response only
  when the query was not captured); dns-cname: a response whose CNAME chain reaches a vendor
  name the question did not match (name = that CNAME target);
* tls-sni: one per TCP ClientHello whose SNI matches, at the segment that completes it;
* http-host: one per HTTP request whose absolute-URI authority or Host header matches;
  http-connect: one per CONNECT whose authority matches (a CONNECT gives no http-host);
* quic-sni: one per QUIC connection whose Initial ClientHello SNI matches, at the Initial that
  completes it.

Blind-spot signals (only with --resolver-names / --encrypted-dns-ports): a TLS or QUIC
ClientHello whose SNI is a public resolver host, or any hello on an encrypted-DNS port (DoT TCP
853, DoQ UDP 853), is an `{action: encrypted-dns, name: SNI or server IP}` entry, at most one per
(client IP, name) per --rate-limit seconds of packet time.

A name on the wire that the script did not declare aborts the run: a surprise in a capture has
to be looked at, not silently written down as expected.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Base domains of the shipped blocklist entries used by the samples; a name matches when it is
# one of them or a subdomain (label boundary), so notclearview.ai or
# clearview.ai.example.net do not.
VENDOR_DOMAINS = ("clearview.ai", "pimeyes.com", "facecheck.id", "lenso.ai", "search4faces.com")
MLKEM_GROUP = 0x11EC


class IntentError(Exception):
    """The capture does not hold what the script says it made."""


@dataclass(slots=True)
class Detection:
    frame: int
    evidence: str
    name: str
    note: str
    action: str = "vendor-access"


@dataclass(slots=True)
class BlindSpots:
    """The encrypted-DNS rules of the sensor semantics; empty: no blind-spot entries at all."""

    resolver_names: frozenset[str] = frozenset()
    ports: frozenset[int] = frozenset()
    window_s: float = 600.0
    last_event: dict[tuple[str, str], float] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # names reported as encrypted-dns

    def name_for(self, sni: str | None, dst: str, dport: str) -> str | None:
        """The encrypted-dns name of a hello, or None when the hello is no such signal."""
        if sni and canonical(sni) in self.resolver_names:
            return canonical(sni)
        if dport.isdigit() and int(dport) in self.ports:
            return canonical(sni) if sni else dst
        return None

    def admit(self, client: str, name: str, ts: float) -> bool:
        """Rate limit: one event per (client, name) per window, counted from the last event."""
        last = self.last_event.get((client, name))
        if last is not None and ts - last < self.window_s:
            return False
        self.last_event[(client, name)] = ts
        self.names.add(name)
        return True


@dataclass(slots=True)
class Reading:
    """What tshark shows in one capture, reduced to what an intent needs."""

    detections: list[Detection] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)  # name -> first frame, in order
    cname_targets: set[str] = field(default_factory=set)
    facts: list[str] = field(default_factory=list)


def canonical(name: str) -> str:
    return name.strip().lower().rstrip(".")


def is_vendor(name: str) -> bool:
    name = canonical(name)
    return any(name == d or name.endswith("." + d) for d in VENDOR_DOMAINS)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def host_of_authority(authority: str) -> str:
    """'[fd99::1]:443' -> 'fd99::1', 'pimeyes.com:8080' -> 'pimeyes.com'."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")]
    if authority.count(":") == 1:
        return authority.split(":", 1)[0]
    return authority


def host_of_absolute_uri(uri: str) -> str | None:
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme.isalpha():
        return None
    authority = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return host_of_authority(authority)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def find_values(obj: Any, key: str) -> list[Any]:
    """All values stored under `key` anywhere below `obj`, in document order."""
    found: list[Any] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                found.extend(as_list(v) if not key.endswith("_raw") else raw_list(v))
            else:
                found.extend(find_values(v, key))
    elif isinstance(obj, list):
        for item in obj:
            found.extend(find_values(item, key))
    return found


def raw_list(value: Any) -> list[list[Any]]:
    """tshark -x gives [hex, pos, len, mask, type] per field, a list of those when repeated."""
    if value and isinstance(value[0], list):
        return value
    return [value]


def find_dicts_with(obj: Any, key: str) -> Iterator[dict[str, Any]]:
    if isinstance(obj, dict):
        if key in obj:
            yield obj
        for v in obj.values():
            yield from find_dicts_with(v, key)
    elif isinstance(obj, list):
        for item in obj:
            yield from find_dicts_with(item, key)


def read_frames(
    pcap: Path, tls_ports: list[int], quic_ports: list[int] | None = None
) -> list[dict[str, Any]]:
    cmd = ["tshark", "-r", str(pcap), "-T", "json", "-x", "--no-duplicate-keys"]
    cmd += ["-o", "tcp.desegment_tcp_streams:TRUE", "-o", "tcp.analyze_sequence_numbers:TRUE"]
    for port in tls_ports:
        cmd += ["-d", f"tcp.port=={port},tls"]
    for port in quic_ports or []:
        cmd += ["-d", f"udp.port=={port},quic"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [pkt["_source"]["layers"] for pkt in json.loads(proc.stdout)]


def endpoints(layers: dict[str, Any]) -> tuple[str, str, str, str, str]:
    net = layers.get("ip") or layers.get("ipv6") or {}
    src = net.get("ip.src") or net.get("ipv6.src") or "?"
    dst = net.get("ip.dst") or net.get("ipv6.dst") or "?"
    for proto in ("udp", "tcp"):
        if proto in layers:
            tp = layers[proto]
            return proto, src, tp[f"{proto}.srcport"], dst, tp[f"{proto}.dstport"]
    return "?", src, "?", dst, "?"


def first(values: list[Any], default: Any = None) -> Any:
    return values[0] if values else default


class CaptureReader:
    def __init__(
        self,
        pcap: Path,
        tls_ports: list[int],
        hello_facts: bool,
        blind: BlindSpots | None = None,
        quic_ports: list[int] | None = None,
    ) -> None:
        self.frames = read_frames(pcap, tls_ports, quic_ports or [])
        self.hello_facts = hello_facts
        self.blind = blind or BlindSpots()
        self.suppressed: list[str] = []
        self.out = Reading()
        self.dns_seen: set[tuple[Any, ...]] = set()
        self.quic_seen: set[str] = set()
        self.tcp_len: dict[int, int] = {}

    def note_name(self, name: str, frame: int) -> None:
        name = canonical(name)
        if name and not is_ip_literal(name):
            self.out.seen.setdefault(name, frame)

    def detect(self, frame: int, evidence: str, name: str, note: str) -> None:
        self.out.detections.append(Detection(frame, evidence, canonical(name), note))

    def blind_spot(
        self, frame: int, layers: dict[str, Any], evidence: str, sni: str | None, where: str
    ) -> None:
        """An encrypted-dns entry for this hello if the rules say so (rate-limited)."""
        proto, src, _sport, dst, dport = endpoints(layers)
        name = self.blind.name_for(sni, dst, dport)
        if name is None:
            return
        ts = float(layers["frame"]["frame.time_epoch"])
        if not self.blind.admit(src, name, ts):
            self.suppressed.append(f"frame {frame} ({name} from {src})")
            return
        how = evidence if sni else f"no SNI, {proto}/{dport}"
        self.out.detections.append(
            Detection(frame, how, name, f"{where}, client {src}", "encrypted-dns")
        )

    def run(self) -> Reading:
        for layers in self.frames:
            frame = int(layers["frame"]["frame.number"])
            if "tcp" in layers:
                self.tcp_len[frame] = int(layers["tcp"].get("tcp.len", 0))
            for proto in layers:
                if proto == "dns":
                    for inst in as_list(layers[proto]):
                        self.dns(frame, layers, inst)
                elif proto == "tls":
                    for inst in as_list(layers[proto]):
                        self.tls(frame, layers, inst)
                elif proto == "http":
                    for inst in as_list(layers[proto]):
                        self.http(frame, inst)
                elif proto == "quic":
                    for inst in as_list(layers[proto]):
                        self.quic(frame, layers, inst)
        return self.out

    def dns(self, frame: int, layers: dict[str, Any], inst: dict[str, Any]) -> None:
        response = first(find_values(inst, "dns.flags.response")) == "1"
        qnames = find_values(inst.get("Queries", {}), "dns.qry.name")
        cnames = find_values(inst.get("Answers", {}), "dns.cname")
        rcode = first(find_values(inst, "dns.flags.rcode"), "0")
        proto, src, sport, dst, dport = endpoints(layers)
        if response:
            src, sport, dst, dport = dst, dport, src, sport
        txid = inst.get("dns.id")
        for qname in qnames:
            self.note_name(qname, frame)
            key = (proto, src, sport, dst, dport, txid, canonical(qname))
            if key in self.dns_seen:
                continue
            if not response or is_vendor(qname):
                # A response opens a transaction only if its query was not captured.
                self.dns_seen.add(key)
            if is_vendor(qname):
                where = "response; query not captured" if response else "query"
                self.detect(frame, "dns-query", qname, f"{where}, {proto}")
        for target in cnames:
            self.note_name(target, frame)
            self.out.cname_targets.add(canonical(target))
        if response and qnames and not any(is_vendor(q) for q in qnames):
            chain = [c for c in cnames if is_vendor(c)]
            if chain:
                self.detect(
                    frame,
                    "dns-cname",
                    chain[0],
                    f"response for {canonical(qnames[0])}, rcode {rcode}",
                )

    def tls(self, frame: int, layers: dict[str, Any], inst: Any) -> None:
        for hs in find_dicts_with(inst, "tls.handshake.type"):
            if as_list(hs["tls.handshake.type"])[0] != "1":
                continue
            snis = find_values(hs, "tls.handshake.extensions_server_name")
            stream = layers.get("tcp", {}).get("tcp.stream", "?")
            port = layers.get("tcp", {}).get("tcp.dstport", "?")
            if not snis:
                if self.hello_facts:
                    self.out.facts.append(f"frame {frame}: ClientHello without SNI")
                self.blind_spot(frame, layers, "tls-sni", None, f"tcp stream {stream}")
                continue
            for sni in snis:
                self.note_name(sni, frame)
                if is_vendor(sni):
                    self.detect(frame, "tls-sni", sni, f"tcp stream {stream}, port {port}")
                else:
                    self.blind_spot(frame, layers, "tls-sni", sni, f"tcp stream {stream}")
            if self.hello_facts:
                self.out.facts.append(self.tcp_hello_fact(frame, layers, hs, snis[0]))

    def tcp_hello_fact(
        self, frame: int, layers: dict[str, Any], hs: dict[str, Any], sni: str
    ) -> str:
        segments = [int(f) for f in find_values(layers.get("tcp.segments", {}), "tcp.segment")]
        record_len = first(find_values(layers.get("tls", {}), "tls.record.length"), "?")
        groups = [int(g) for g in find_values(hs, "tls.handshake.extensions_key_share_group")]
        shares = ", ".join(f"0x{g:04x}" for g in groups)
        mlkem = "with" if MLKEM_GROUP in groups else "WITHOUT"
        text = (
            f"ClientHello for {canonical(sni)} (frame {frame}): TLS record of "
            f"{int(record_len) + 5 if record_len != '?' else '?'} bytes, {mlkem} the "
            f"X25519MLKEM768 (0x11ec) key share (key shares {shares})"
        )
        if len(segments) < 2:
            return text + ", in one TCP segment"
        lengths = [self.tcp_len.get(s, 0) for s in segments]
        raw = first(find_values(hs, "tls.handshake.extensions_server_name_raw"))
        where = "?"
        if raw:
            start, size = int(raw[1]), int(raw[2])
            bounds, offset = [], 0
            for n in lengths:
                bounds.append((offset, offset + n))
                offset += n
            holders = [
                i + 1 for i, (lo, hi) in enumerate(bounds) if lo < start + size and start < hi
            ]
            where = " and ".join(str(h) for h in holders)
            where = f"segment {where} (name at reassembled bytes {start}-{start + size - 1})"
        seg_text = " + ".join(f"{n} (frame {s})" for n, s in zip(lengths, segments, strict=True))
        return (
            f"{text}, split over {len(segments)} TCP segments of {seg_text} payload bytes; "
            f"the SNI is in {where}"
        )

    def http(self, frame: int, inst: dict[str, Any]) -> None:
        method = first(find_values(inst, "http.request.method"))
        if method is None:
            return
        uri = first(find_values(inst, "http.request.uri"), "")
        host_header = first(find_values(inst, "http.host"))
        header_host = host_of_authority(host_header) if host_header else None
        if method == "CONNECT":
            target = host_of_authority(uri)
            self.note_name(target, frame)
            if header_host:
                self.note_name(header_host, frame)
            if is_vendor(target):
                self.detect(frame, "http-connect", target, f"CONNECT {uri}")
            return
        uri_host = host_of_absolute_uri(uri)
        candidates = [h for h in (uri_host, header_host) if h]
        for h in candidates:
            self.note_name(h, frame)
        matching = [h for h in candidates if is_vendor(h)]
        if matching:
            how = "absolute-URI authority" if matching[0] == uri_host else "Host header"
            self.detect(frame, "http-host", matching[0], f"{method}, {how}")

    def quic(self, frame: int, layers: dict[str, Any], inst: dict[str, Any]) -> None:
        conn = first(find_values(inst, "quic.connection.number"), "?")
        for hs in find_dicts_with(inst, "tls.handshake.type"):
            if as_list(hs["tls.handshake.type"])[0] != "1":
                continue
            snis = find_values(hs, "tls.handshake.extensions_server_name")
            if not snis and conn not in self.quic_seen:  # a hello without SNI (IP literal)
                self.quic_seen.add(conn)
                self.blind_spot(frame, layers, "quic-sni", None, f"QUIC connection {conn}")
            for sni in snis:
                self.note_name(sni, frame)
                if conn in self.quic_seen:
                    continue
                self.quic_seen.add(conn)
                dcid = first(find_values(inst, "quic.dcid"), "?")
                if is_vendor(sni):
                    self.detect(frame, "quic-sni", sni, f"QUIC connection {conn}, DCID {dcid}")
                else:
                    self.blind_spot(frame, layers, "quic-sni", sni, f"QUIC connection {conn}")
                self.out.facts.append(self.quic_fact(frame, conn, hs, sni))

    def quic_fact(self, frame: int, conn: str, hs: dict[str, Any], sni: str) -> str:
        """Which client Initial(s) first carried the SNI bytes of the CRYPTO stream."""
        raw = first(find_values(hs, "tls.handshake.extensions_server_name_raw"))
        hello_len = int(first(find_values(hs, "tls.handshake.length"), "0")) + 4
        initials: list[tuple[int, list[tuple[int, int]]]] = []
        client = endpoints(self.frames[frame - 1])[1:3]
        for layers in self.frames:
            if endpoints(layers)[1:3] != client:
                continue  # the server's Initial carries CRYPTO frames too (its ServerHello)
            for inst in as_list(layers.get("quic", [])):
                if first(find_values(inst, "quic.connection.number")) != conn:
                    continue
                offsets = [int(o) for o in find_values(inst, "quic.crypto.offset")]
                lengths = [int(n) for n in find_values(inst, "quic.crypto.length")]
                if offsets:
                    ranges = list(zip(offsets, lengths, strict=True))
                    initials.append((int(layers["frame"]["frame.number"]), ranges))
        count = len(initials)
        text = (
            f"QUIC connection {conn}: ClientHello for {canonical(sni)} of {hello_len} bytes "
            f"completed in frame {frame}; {count} client Initial packets carried CRYPTO frames "
            f"(frames {', '.join(str(f) for f, _ in initials)}; later ones are retransmissions)"
        )
        if count == 1:
            text = (
                f"QUIC connection {conn}: ClientHello for {canonical(sni)} of {hello_len} bytes "
                f"in a single client Initial (frame {initials[0][0]})"
            )
        if not raw:
            return text
        start, size = int(raw[1]), int(raw[2])
        need = set(range(start, start + size))
        carriers = []
        for f, ranges in initials:
            got = {b for o, n in ranges for b in range(o, o + n)} & need
            if got:
                carriers.append(f)
                need -= got
            if not need:
                break
        return (
            f"{text}; the SNI (CRYPTO stream bytes {start}-{start + size - 1}) first arrived "
            f"in frame{'s' if len(carriers) > 1 else ''} {', '.join(map(str, carriers))}"
        )


def yaml_text(text: str, indent: int = 2) -> str:
    wrapped = textwrap.wrap(text, width=96 - indent, break_long_words=False, break_on_hyphens=False)
    return "\n".join(" " * indent + line for line in wrapped)


def render(
    description: str,
    generator: str,
    reading: Reading,
    must_not: list[str],
    counters: dict[str, int] | None = None,
) -> str:
    lines = ["description: >-", yaml_text(description), "source: real", f"generator: {generator}"]
    if reading.detections:
        lines.append("detections:             # in the order of the completing packets")
        for d in reading.detections:
            if d.action == "vendor-access":
                entry = f"{{evidence: {d.evidence}, name: {d.name}}}"
                note = d.note
            else:  # blind-spot signal; the evidence goes into the comment
                name = f"'{d.name}'" if ":" in d.name else d.name
                entry = f"{{action: {d.action}, name: {name}}}"
                note = f"{d.evidence}, {d.note}"
            lines.append(f"  - {entry}  # frame {d.frame}: {note}")
    else:
        lines.append("detections: []")
    lines.append(f"must_not_match: [{', '.join(must_not)}]")
    if counters:
        lines.append("counters:")
        lines += [f"  {k}: {v}" for k, v in counters.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pcap", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--generator", required=True)
    parser.add_argument("--description", required=True)
    parser.add_argument("--names", nargs="+", required=True, help="host names the clients used")
    parser.add_argument(
        "--hidden",
        nargs="*",
        default=[],
        help="declared names that never appear in clear text (e.g. an encrypted Host header)",
    )
    parser.add_argument("--decode-tls-port", type=int, action="append", default=[])
    parser.add_argument("--hello-facts", action="store_true")
    parser.add_argument("--quic", action="store_true", help="capture is QUIC (states facts)")
    parser.add_argument("--decode-quic-port", type=int, action="append", default=[])
    parser.add_argument(
        "--resolver-names",
        nargs="*",
        default=[],
        help="public resolver host names: a TLS/QUIC hello with such an SNI is encrypted-dns",
    )
    parser.add_argument(
        "--encrypted-dns-ports",
        type=int,
        nargs="*",
        default=[],
        help="any TLS/QUIC hello to these ports is encrypted-dns (named by SNI or server IP)",
    )
    parser.add_argument("--rate-limit", type=float, default=600.0, metavar="SECONDS")
    parser.add_argument(
        "--counter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a sensor counter the scenario itself determines (e.g. quic_decrypt_failures=0)",
    )
    args = parser.parse_args(argv)

    blind = BlindSpots(
        frozenset(canonical(n) for n in args.resolver_names),
        frozenset(args.encrypted_dns_ports),
        args.rate_limit,
    )
    reader = CaptureReader(
        args.pcap, args.decode_tls_port, args.hello_facts, blind, args.decode_quic_port
    )
    reading = reader.run()
    if reader.suppressed:
        reading.facts.append(
            "encrypted-dns hellos within the rate-limit window of an earlier event of the same "
            "client and name (no entry): " + ", ".join(reader.suppressed)
        )
    declared = {canonical(n) for n in args.names}
    hidden = {canonical(n) for n in args.hidden}
    problems = []
    for name, frame in reading.seen.items():
        if name not in declared and name not in reading.cname_targets:
            problems.append(f"undeclared name {name!r} first seen in frame {frame}")
    for name in sorted(declared - set(reading.seen) - hidden):
        problems.append(f"declared name {name!r} never seen in clear text")
    for name in sorted(hidden & set(reading.seen)):
        problems.append(f"name {name!r} declared hidden but seen in clear text")
    if args.quic and not any(d.evidence == "quic-sni" for d in reading.detections):
        problems.append("no QUIC ClientHello with a vendor SNI could be decrypted")
    if problems:
        raise IntentError(f"{args.pcap.name}: " + "; ".join(problems))

    must_not = [n for n in reading.seen if not is_vendor(n) and n not in blind.names]
    description = args.description
    if reading.facts:
        description += " Measured in this capture: " + "; ".join(reading.facts) + "."
    counters = {}
    for item in args.counter:
        name, _, value = item.partition("=")
        counters[name] = int(value)
    if blind.resolver_names or blind.ports:  # counted by the same rules as the entries
        counters["encrypted_dns_events"] = sum(
            d.action == "encrypted-dns" for d in reading.detections
        )
        counters["blind_spot_suppressed"] = len(reader.suppressed)
    args.out.write_text(render(description, args.generator, reading, must_not, counters))

    counts: dict[str, int] = {}
    for d in reading.detections:
        kind = d.evidence if d.action == "vendor-access" else d.action
        counts[kind] = counts.get(kind, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
    print(f"{args.pcap.name}: {len(reading.detections)} detections ({summary})")
    for fact in reading.facts:
        print(f"  {fact}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except IntentError as exc:
        print(f"write_intent: {exc}", file=sys.stderr)
        sys.exit(1)
