#!/usr/bin/env bash
# Regenerate the real-client sample captures in pcaps/real/.
#
# Why real clients: crafted packets only contain what their author thought of.  dig, kdig, curl,
# openssl, gnutls-cli, Python's ssl module and Chromium each lay out DNS messages, ClientHellos,
# HTTP requests and proxy CONNECTs in their own way (EDNS cookies, GREASE, permuted extensions,
# ML-KEM key shares that push a ClientHello past one TCP segment, QUIC chaos protection ...),
# and the sensor has to cope with all of them.
#
# Two network namespaces joined by one veth pair (MTU 1500) stand in for a workstation (emws) and
# "the internet" (emsrv: dnsmasq, TLS, HTTP and a CONNECT proxy).  Neither namespace has a
# default route, so nothing can leave them.  Each scenario is captured by tcpdump (or dumpcap)
# inside emws on its veth, then pcaps/real/write_intent.py writes NAME.intent.yaml from the
# scenario's declared host names and tshark's dissection of the capture (never from the
# project's own sensor).
#
# Usage: sudo bash pcaps/real/make_real_pcaps.sh      (root; idempotent; about a minute)
#   OUT=/some/dir  write captures and intents there instead of pcaps/real/
#   SKIP_APT=1     do not try to install missing Debian packages
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-$HERE}
GENERATOR="pcaps/real/make_real_pcaps.sh"
WS=emws
SRV=emsrv
WS_IF=veth-ws
SRV_IF=veth-srv
SRV4=10.99.0.1
WS4=10.99.0.2
SRV6=fd99::1
WS6=fd99::2
PROXY="http://${SRV4}:3128"

if [[ $EUID -ne 0 ]]; then
    echo "make_real_pcaps.sh must run as root (network namespaces, packet capture)" >&2
    exit 1
fi

log() { printf '[make_real_pcaps] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- packages
need_pkgs=()
for pair in dnsmasq:dnsmasq-base dig:dnsutils kdig:knot-dnsutils gnutls-cli:gnutls-bin \
    openssl:openssl curl:curl tcpdump:tcpdump tinyproxy:tinyproxy chromium:chromium \
    tshark:tshark dumpcap:tshark capinfos:tshark ethtool:ethtool python3:python3; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$cmd ]]; then
        need_pkgs+=("$pkg")
    fi
done
if ((${#need_pkgs[@]})); then
    if [[ -n ${SKIP_APT:-} ]]; then
        echo "missing packages: ${need_pkgs[*]}" >&2
        exit 1
    fi
    log "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need_pkgs[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/make_real_pcaps.XXXXXX)
chmod 755 "$WORK"
BG_PIDS=()

kill_netns_pids() {
    # Only processes living inside our own namespaces: the ones this script (or an earlier,
    # interrupted run of it) started there.
    local ns=$1 pid
    ip netns list 2>/dev/null | grep -qw "^$ns" || return 0
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 0.5
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

teardown() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${BG_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    BG_PIDS=()
    kill_netns_pids "$WS"
    kill_netns_pids "$SRV"
    ip netns del "$WS" 2>/dev/null || true
    ip netns del "$SRV" 2>/dev/null || true
    rm -rf "/etc/netns/$WS" "/etc/netns/$SRV"
}

on_exit() {
    local rc=$?
    teardown
    if [[ $rc -ne 0 ]]; then
        log "FAILED (exit $rc); work files kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# A previous run that was killed hard may have left its namespaces behind.
teardown

# Foreground helpers.  Background jobs call `ip netns exec` directly (it execs the program), so
# that $! is the server's or capturer's own pid and a signal reaches it.
ws() { ip netns exec "$WS" "$@"; }
srv() { ip netns exec "$SRV" "$@"; }

# ---------------------------------------------------------------- network
log "building namespaces $WS <-> $SRV"
ip netns add "$WS"
ip netns add "$SRV"
ip link add "$WS_IF" type veth peer name "$SRV_IF"
ip link set "$WS_IF" netns "$WS"
ip link set "$SRV_IF" netns "$SRV"
setup_side() {  # setup_side NS IFNAME IPV4 IPV6
    local ns=$1 ifname=$2 a4=$3 a6=$4
    # No DAD (addresses usable at once), no router solicitations (would show up in captures).
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
        net.ipv6.conf.default.accept_dad=0 "net.ipv6.conf.$ifname.accept_dad=0" \
        "net.ipv6.conf.$ifname.router_solicitations=0" "net.ipv6.conf.$ifname.accept_ra=0"
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$ifname" mtu 1500
    ip -n "$ns" addr add "$a4/24" dev "$ifname"
    ip -n "$ns" -6 addr add "$a6/64" dev "$ifname" nodad
    # Without offloads the capture shows the segments as they would cross a real wire (a
    # ~1.8 kB ClientHello as two TCP segments, not one GSO super-packet) with valid checksums.
    ip netns exec "$ns" ethtool -K "$ifname" tso off gso off gro off tx off rx off \
        >/dev/null 2>&1 || true
    ip -n "$ns" link set "$ifname" up
}
setup_side "$WS" "$WS_IF" "$WS4" "$WS6"
setup_side "$SRV" "$SRV_IF" "$SRV4" "$SRV6"

# Resolver of each namespace: dnsmasq in emsrv.  `ip netns exec` bind-mounts these files.
mkdir -p "/etc/netns/$WS" "/etc/netns/$SRV"
set_ws_resolver() { printf 'nameserver %s\n' "$1" >"/etc/netns/$WS/resolv.conf"; }
set_ws_resolver "$SRV4"
printf 'nameserver %s\n' "$SRV4" >"/etc/netns/$SRV/resolv.conf"
# Empty hosts files: no name may be answered from the host's /etc/hosts.
printf '127.0.0.1 localhost\n::1 localhost\n' >"/etc/netns/$WS/hosts"
printf '127.0.0.1 localhost\n::1 localhost\n' >"/etc/netns/$SRV/hosts"


# ---------------------------------------------------------------- servers
VENDOR_HOSTS=(app.clearview.ai api.clearview.ai clearview.ai pimeyes.com www.pimeyes.com
    facecheck.id lenso.ai search4faces.com)
DECOY_HOSTS=(notclearview.ai clearview.ai.example.net pimeyes.com.cdn.example.org myfacecheck.id)
BENIGN_HOSTS=(example.org www.example.com intranet.police.example)

dns_args=(--no-resolv --no-hosts --no-poll --keep-in-foreground --bind-interfaces
    "--listen-address=$SRV4" "--listen-address=$SRV6" --except-interface=lo
    --user=root --group=root --local-ttl=300 "--pid-file=$WORK/dnsmasq.pid"
    --log-queries "--log-facility=$WORK/dnsmasq.log")
for h in "${VENDOR_HOSTS[@]}" "${DECOY_HOSTS[@]}" "${BENIGN_HOSTS[@]}"; do
    dns_args+=("--host-record=$h,$SRV4,$SRV6")
done
# CNAME aliases: a benign-looking name whose chain reaches a vendor (dns-cname evidence), a
# two-step chain, and a benign alias of a decoy (must not match).
dns_args+=("--cname=photos.example.org,app.clearview.ai"
    "--cname=img.example.net,photos.example.org"
    "--cname=static.example.org,pimeyes.com.cdn.example.org")
# HTTPS (type 65) records, "1 . alpn=h2", for the names the scenarios ask type 65 about;
# without them dnsmasq (no upstream) would answer REFUSED.
for h in pimeyes.com lenso.ai facecheck.id; do
    dns_args+=("--dns-rr=$h,65,00010000010003026832")
done
# Names under a vendor domain that do not exist: NXDOMAIN.
dns_args+=(--address=/nonexistent.pimeyes.com/ --address=/gone.facecheck.id/)
ip netns exec "$SRV" dnsmasq "${dns_args[@]}" 2>"$WORK/dnsmasq.err" &
BG_PIDS+=($!)

# Self-signed certificate naming every host the TLS server pretends to be.
san=$(printf 'DNS:%s,' "${VENDOR_HOSTS[@]}" "${DECOY_HOSTS[@]}" "${BENIGN_HOSTS[@]}")
san=${san%,}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=app.clearview.ai" -addext "subjectAltName=$san" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

mkdir -p "$WORK/www"
printf '<!doctype html><title>test</title><p>sample page</p>\n' >"$WORK/www/index.html"
printf '<!doctype html><title>a</title><p>a</p>\n' >"$WORK/www/a.html"
printf 'b\n' >"$WORK/www/b.txt"
printf 'search\n' >"$WORK/www/search"

# Python ssl client of the TLS scenario (server_hostname sets the SNI).
cat >"$WORK/tls_client.py" <<'PY'
import socket
import ssl
import sys

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for port, name in ((443, "search4faces.com"), (8443, "www.pimeyes.com"), (443, "myfacecheck.id")):
    with socket.create_connection((sys.argv[1], port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: " + name.encode() + b"\r\nConnection: close\r\n\r\n")
            while tls.recv(4096):
                pass
PY

# TLS on 443 and 8443: a threaded HTTPS server (Chromium opens parallel connections; a
# single-threaded openssl s_server would stall them).  Dual-stack sockets serve v4 and v6.
cat >"$WORK/tls_server.py" <<'PY'
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

cert, key, *ports = sys.argv[1:]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["http/1.1"])
BODY = b"<!doctype html><title>tls test</title><p>tls sample page</p>\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, fmt, *args):
        sys.stderr.write("tls %s %s\n" % (self.client_address[0], fmt % args))


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def get_request(self):
        sock, addr = super().get_request()
        return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        sys.stderr.write("tls %s: %s\n" % (client_address[0], sys.exc_info()[1]))


servers = [Server(("::", int(p)), Handler) for p in ports]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
PY
start_tls_server() {  # (a function so that the DoT/DoH scenario can lend TCP 443 to unbound)
    ip netns exec "$SRV" python3 "$WORK/tls_server.py" "$WORK/cert.pem" "$WORK/key.pem" 443 8443 \
        2>>"$WORK/tls_server.log" &
    TLS_SERVER_PID=$!
    BG_PIDS+=("$TLS_SERVER_PID")
}
start_tls_server

# UDP/443: a sink that reads and drops datagrams.  Without a listener emsrv answers Chromium's
# first QUIC Initial with ICMP port unreachable and Chromium gives up before sending the rest of
# its ClientHello; with the sink it sends all of it (and retransmits it until it gives up).
cat >"$WORK/udp_sink.py" <<'PY'
import socket
import sys

sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
sock.bind(("::", int(sys.argv[1])))
while True:
    sock.recvfrom(65535)
PY
start_udp_sink() {  # (a function so that the aioquic scenario can lend UDP 443 to its server)
    ip netns exec "$SRV" python3 "$WORK/udp_sink.py" 443 &
    UDP_SINK_PID=$!
    BG_PIDS+=("$UDP_SINK_PID")
}
start_udp_sink

for port in 80 8080; do
    ip netns exec "$SRV" python3 -m http.server -p HTTP/1.1 -b :: -d "$WORK/www" "$port" \
        >"$WORK/http_$port.log" 2>&1 &
    BG_PIDS+=($!)
done

# A real forward proxy: CONNECT tunnels to 443/8443 and absolute-URI requests.
mkdir -p "$WORK/tinyproxy"
chmod 777 "$WORK/tinyproxy"
cat >"$WORK/tinyproxy.conf" <<EOF
User nobody
Group nogroup
Port 3128
Listen $SRV4
Timeout 30
MaxClients 20
LogFile "$WORK/tinyproxy/tinyproxy.log"
LogLevel Info
DisableViaHeader Yes
Allow 10.99.0.0/24
Allow fd99::/64
ConnectPort 443
ConnectPort 8443
EOF
ip netns exec "$SRV" tinyproxy -d -c "$WORK/tinyproxy.conf" >"$WORK/tinyproxy.out" 2>&1 &
BG_PIDS+=($!)

wait_port() {  # wait_port PROTO PORT: until something in emsrv listens there
    for _ in $(seq 50); do
        if srv ss -Hln"$1" "sport = :$2" | grep -q .; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1/$2 in $SRV" >&2
    return 1
}
wait_port u 53
wait_port t 53
wait_port t 443
wait_port t 8443
wait_port u 443
wait_port t 80
wait_port t 8080
wait_port t 3128
ws dig +short +time=2 +tries=1 "@$SRV4" app.clearview.ai A | grep -qx "$SRV4"
# Let the one-off IPv6 MLD reports of link-up pass before the first capture starts.
sleep 3

# ---------------------------------------------------------------- capture helpers
CAP_PIDS=()
CAP_FILE=
start_capture() {  # start_capture FILE [tcpdump|any|dumpcap|nano]
    local file=$1 mode=${2:-tcpdump} ready=$WORK/capture.log
    CAP_FILE="$WORK/out/$file"
    CAP_PIDS=()
    mkdir -p "$WORK/out"
    rm -f "$CAP_FILE" "$ready"
    case $mode in
    tcpdump)
        ip netns exec "$WS" tcpdump -i "$WS_IF" -s 0 -U -n -Z root -w "$CAP_FILE" 2>"$ready" &
        CAP_PIDS+=($!)
        ;;
    any)
        ip netns exec "$WS" tcpdump -i any -s 0 -U -n -Z root -w "$CAP_FILE" 2>"$ready" &
        CAP_PIDS+=($!)
        ;;
    dumpcap)
        ip netns exec "$WS" dumpcap -i "$WS_IF" -s 0 -n -w "$CAP_FILE" 2>"$ready" &
        CAP_PIDS+=($!)
        ;;
    nano)
        # Classic pcap with the nanosecond magic number (0xa1b23c4d).
        ip netns exec "$WS" tcpdump -i "$WS_IF" -s 0 -U -n -Z root --time-stamp-precision=nano \
            -w "$CAP_FILE" 2>"$ready" &
        CAP_PIDS+=($!)
        ;;
    esac
    for _ in $(seq 100); do
        if grep -qE 'listening on|Capturing on' "$ready" 2>/dev/null; then break; fi
        sleep 0.1
    done
    sleep 0.5
    log "capturing $file ($mode)"
}

stop_capture() {
    local pid
    sleep 1
    kill -INT "${CAP_PIDS[0]}" 2>/dev/null || true
    for pid in "${CAP_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    CAP_PIDS=()
    [[ -s $CAP_FILE ]] || { echo "capture $CAP_FILE is empty" >&2; exit 1; }
}

# Per-capture metadata consumed by write_intent.py: description and the host names the
# scenario's clients used (the intent lists the vendor ones in capture order and the others as
# must_not_match; any other name in the capture aborts the run).
declare -A DESC NAMES EXTRA
CAPTURES=()
declare_capture() {  # declare_capture FILE "description" "names..." [extra write_intent args]
    CAPTURES+=("$1")
    DESC[$1]=$2
    NAMES[$1]=$3
    EXTRA[$1]=${4:-}
}

# ONLY="a.pcap b.pcap" regenerates just those captures (and their intents).
want() { [[ -z ${ONLY:-} || " $ONLY " == *" $1 "* ]]; }

DIG=(dig "@$SRV4" +time=2 +tries=1)
CURL=(curl -sS -k --max-time 10 -o /dev/null)

# Headless Chromium as a user would run it, minus everything that phones home.  The resolver
# rules keep it off DNS entirely (MAP * ~NOTFOUND: no name other than ours can be looked up).
CHROME_COMMON=(chromium --headless --no-sandbox --disable-gpu --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --disable-default-apps --disable-extensions --no-default-browser-check --no-pings
    --metrics-recording-only --disable-domain-reliability --disable-breakpad
    --ignore-certificate-errors
    "--host-resolver-rules=MAP app.clearview.ai $SRV4, MAP pimeyes.com $SRV4, MAP * ~NOTFOUND")
run_chromium() {  # run_chromium OUTFILE args...
    local dom=$1
    shift
    local profile
    profile=$(mktemp -d "$WORK/chrome.XXXXXX")
    ws env HOME="$profile" timeout 60 "${CHROME_COMMON[@]}" "--user-data-dir=$profile/ud" "$@" \
        >"$dom" 2>>"$WORK/chromium.log" || true
}

# ---------------------------------------------------------------- scenarios
# 1. DNS over UDP with dig.
if want dns_dig_udp.pcap; then
    start_capture dns_dig_udp.pcap
    ws "${DIG[@]}" app.clearview.ai A >/dev/null
    ws "${DIG[@]}" app.clearview.ai AAAA >/dev/null
    ws "${DIG[@]}" pimeyes.com HTTPS >/dev/null
    ws "${DIG[@]}" App.ClearView.AI A >/dev/null
    ws "${DIG[@]}" nonexistent.pimeyes.com A >/dev/null
    ws "${DIG[@]}" photos.example.org A >/dev/null
    ws "${DIG[@]}" img.example.net AAAA >/dev/null
    ws "${DIG[@]}" static.example.org A >/dev/null
    ws "${DIG[@]}" notclearview.ai A >/dev/null
    ws "${DIG[@]}" clearview.ai.example.net A >/dev/null
    ws "${DIG[@]}" pimeyes.com.cdn.example.org AAAA >/dev/null
    ws "${DIG[@]}" myfacecheck.id A >/dev/null
    ws "${DIG[@]}" intranet.police.example A >/dev/null
    ws "${DIG[@]}" www.pimeyes.com A facecheck.id AAAA lenso.ai HTTPS search4faces.com A >/dev/null
    ws "${DIG[@]}" gone.facecheck.id AAAA >/dev/null
    stop_capture
    declare_capture dns_dig_udp.pcap \
        "DNS over UDP from dig 9.18 (EDNS with cookie option) to dnsmasq: A, AAAA and HTTPS (type 65) questions for vendor names, a vendor name written in mixed case (App.ClearView.AI, reported lower-cased), two NXDOMAIN names under vendor domains, a benign alias whose CNAME chain reaches app.clearview.ai (photos.example.org, and the two-step chain img.example.net -> photos.example.org -> app.clearview.ai: dns-cname evidence on the response), a benign alias of a decoy (static.example.org -> pimeyes.com.cdn.example.org: no match), the four look-alike decoys and a benign name. The last dig invocation asks four questions in one run." \
        "app.clearview.ai App.ClearView.AI pimeyes.com nonexistent.pimeyes.com photos.example.org img.example.net static.example.org notclearview.ai clearview.ai.example.net pimeyes.com.cdn.example.org myfacecheck.id intranet.police.example www.pimeyes.com facecheck.id lenso.ai search4faces.com gone.facecheck.id"
fi

# 2. DNS over TCP: kdig pipelining several queries on one kept-open connection, then dig +tcp.
if want dns_kdig_tcp.pcap; then
    start_capture dns_kdig_tcp.pcap
    ws kdig "@$SRV4" +tcp +keepopen +timeout=2 +retry=0 app.clearview.ai A pimeyes.com AAAA \
        photos.example.org A notclearview.ai A nonexistent.pimeyes.com A facecheck.id HTTPS >/dev/null
    ws "${DIG[@]}" +tcp lenso.ai A >/dev/null
    ws "${DIG[@]}" +tcp example.org A >/dev/null
    ws "${DIG[@]}" +tcp +keepopen search4faces.com A myfacecheck.id A >/dev/null
    stop_capture
    declare_capture dns_kdig_tcp.pcap \
        "DNS over TCP port 53 (two-byte length prefix). kdig (Knot 3.2) sends six queries one after the other on a single kept-open TCP connection (+keepopen): vendor names, the CNAME alias photos.example.org (dns-cname on its response), a decoy and an NXDOMAIN vendor name; then dig +tcp opens one connection per query (a vendor and a benign name) and dig +tcp +keepopen asks a vendor and a decoy on one connection." \
        "app.clearview.ai pimeyes.com photos.example.org notclearview.ai nonexistent.pimeyes.com facecheck.id lenso.ai example.org search4faces.com myfacecheck.id"
fi

# 3. TLS ClientHellos from openssl, gnutls-cli and Python's ssl module (no DNS: IP + SNI).
if want tls_openssl_gnutls_python.pcap; then
    start_capture tls_openssl_gnutls_python.pcap
    ws openssl s_client -connect "$SRV4:443" -servername app.clearview.ai </dev/null >/dev/null 2>&1
    ws openssl s_client -connect "$SRV4:8443" -servername Api.ClearView.AI </dev/null >/dev/null 2>&1
    ws openssl s_client -connect "$SRV4:443" -servername notclearview.ai </dev/null >/dev/null 2>&1
    ws openssl s_client -tls1_2 -connect "$SRV4:443" -servername lenso.ai </dev/null >/dev/null 2>&1
    ws gnutls-cli --insecure --port 443 --sni-hostname pimeyes.com "$SRV4" </dev/null >/dev/null 2>&1
    ws gnutls-cli --insecure --port 8443 --sni-hostname facecheck.id "$SRV4" </dev/null >/dev/null 2>&1
    ws python3 "$WORK/tls_client.py" "$SRV4"
    stop_capture
    declare_capture tls_openssl_gnutls_python.pcap \
        "TLS ClientHellos from three TLS stacks straight to 10.99.0.1 (no DNS): openssl 3.0 s_client -servername on 443 and 8443 (one SNI in mixed case, Api.ClearView.AI, reported lower-cased; one forced to TLS 1.2), gnutls-cli 3.7 --sni-hostname on 443 and 8443, Python 3.11 ssl with server_hostname on 443 and 8443. Decoys notclearview.ai and myfacecheck.id in the SNI must not match." \
        "app.clearview.ai Api.ClearView.AI notclearview.ai lenso.ai pimeyes.com facecheck.id search4faces.com www.pimeyes.com myfacecheck.id" \
        "--decode-tls-port 8443"
fi

# 4. curl over TLS (names resolved through the namespace's resolv.conf, or --resolve).
if want tls_curl.pcap; then
    start_capture tls_curl.pcap
    ws "${CURL[@]}" https://app.clearview.ai/
    ws "${CURL[@]}" https://www.pimeyes.com:8443/
    ws "${CURL[@]}" --resolve facecheck.id:443:$SRV4 https://facecheck.id/
    ws "${CURL[@]}" --tlsv1.2 --tls-max 1.2 --resolve lenso.ai:443:$SRV4 https://lenso.ai/
    ws "${CURL[@]}" https://clearview.ai.example.net/
    ws "${CURL[@]}" https://intranet.police.example/
    ws "${CURL[@]}" -H 'Host: pimeyes.com' "https://$SRV4/"
    stop_capture
    declare_capture tls_curl.pcap \
        "curl 7.88 (OpenSSL) HTTPS requests. Names go through glibc getaddrinfo and the namespace resolver (one A and one AAAA query per name, both reported; curl then connects over IPv6 first), or through --resolve (no DNS). Covers port 8443, a TLS 1.2-only ClientHello (--tls-max 1.2; the server Certificate, which lists vendor names in its SAN, is then in clear text and must not be reported: certificates are not evidence), a decoy and a benign name, and an IP-literal URL with a vendor Host header: curl sends no SNI there and the Host header is encrypted, so no detection." \
        "app.clearview.ai www.pimeyes.com facecheck.id lenso.ai clearview.ai.example.net intranet.police.example pimeyes.com" \
        "--decode-tls-port 8443 --hidden pimeyes.com"
fi

# 5. Plain HTTP with curl.
if want http_curl.pcap; then
    start_capture http_curl.pcap
    ws curl -sS --max-time 10 -o /dev/null -o /dev/null -o /dev/null \
        http://pimeyes.com/ http://pimeyes.com/a.html http://pimeyes.com/b.txt
    ws curl -sS --max-time 10 -o /dev/null http://lenso.ai:8080/
    ws curl -sS --max-time 10 -o /dev/null 'http://www.example.com/search?q=pimeyes.com&site=app.clearview.ai'
    ws curl -sS --max-time 10 -o /dev/null -H 'Host: facecheck.id' "http://$SRV4/"
    ws curl -sS --max-time 10 -o /dev/null --resolve api.clearview.ai:80:$SRV4 http://api.clearview.ai/a.html
    ws curl -sS --max-time 10 -o /dev/null http://myfacecheck.id:8080/
    stop_capture
    declare_capture http_curl.pcap \
        "Plain HTTP/1.1 from curl 7.88 to python http.server (HTTP/1.1, keep-alive). One curl run fetches three URLs of pimeyes.com over a single kept-alive connection (three requests, three http-host detections); lenso.ai on port 8080 (Host header carries :8080); a benign host whose path and query contain vendor names (no detection); an IP-literal URL with a Host header override naming facecheck.id; api.clearview.ai via --resolve (no DNS); a decoy on 8080. DNS A and AAAA queries from getaddrinfo precede each named connection, and curl then connects over IPv6 (fd99::1); the --resolve and IP-literal requests go over IPv4." \
        "pimeyes.com lenso.ai www.example.com facecheck.id api.clearview.ai myfacecheck.id"
fi

# 6. Through the CONNECT proxy (tinyproxy on 10.99.0.1:3128).
if want http_proxy_connect.pcap; then
    start_capture http_proxy_connect.pcap
    ws "${CURL[@]}" -x "$PROXY" https://app.clearview.ai/
    ws curl -sS --max-time 10 -o /dev/null -x "$PROXY" http://pimeyes.com/
    ws "${CURL[@]}" -x "$PROXY" --connect-to app.clearview.ai:443:www.example.com:443 https://app.clearview.ai/
    ws openssl s_client -proxy "$SRV4:3128" -connect facecheck.id:8443 -servername intranet.police.example \
        </dev/null >/dev/null 2>&1
    ws "${CURL[@]}" -x "$PROXY" https://notclearview.ai/
    ws curl -sS --max-time 10 -o /dev/null -x "$PROXY" 'http://example.org/?q=clearview.ai'
    stop_capture
    declare_capture http_proxy_connect.pcap \
        "Explicit forward proxy (tinyproxy 1.11 on 10.99.0.1:3128). curl -x: CONNECT app.clearview.ai:443 followed by the tunnelled ClientHello (http-connect, then tls-sni); an absolute-URI GET http://pimeyes.com/ (http-host); a CONNECT whose authority is benign (www.example.com:443, via curl --connect-to) while the tunnelled SNI is app.clearview.ai (only the tls-sni detection); openssl s_client -proxy with CONNECT facecheck.id:8443 but a benign SNI (only the http-connect detection); a decoy CONNECT; a benign absolute-URI GET whose query names a vendor. No DNS leaves the workstation: the proxy resolves." \
        "app.clearview.ai pimeyes.com www.example.com facecheck.id intranet.police.example notclearview.ai example.org"
fi

# 7. Chromium over TCP/TLS.
if want tls_chromium.pcap; then
    start_capture tls_chromium.pcap
    run_chromium "$WORK/dom_clearview.html" --disable-quic --dump-dom https://app.clearview.ai/
    run_chromium "$WORK/dom_pimeyes.html" --disable-quic --dump-dom https://pimeyes.com:8443/
    stop_capture
    grep -q 'tls sample page' "$WORK/dom_clearview.html" || { echo "Chromium did not load app.clearview.ai" >&2; exit 1; }
    declare_capture tls_chromium.pcap \
        "Headless Chromium (Debian package) loading https://app.clearview.ai/ and https://pimeyes.com:8443/ with --host-resolver-rules (no DNS on the wire) and QUIC disabled. Chromium's ClientHello carries GREASE, a GREASE ECH extension, permuted extensions and an X25519MLKEM768 (0x11ec) key share, which makes it larger than one 1448-byte TCP segment at MTU 1500: the sensor must reassemble two segments. Every ClientHello Chromium sent is listed (it may open more than one connection per page)." \
        "app.clearview.ai pimeyes.com" \
        "--decode-tls-port 8443 --hello-facts"
fi

# 8. Chromium over QUIC (client Initials only: the UDP/443 sink never answers).
if want quic_chromium.pcap; then
    start_capture quic_chromium.pcap
    run_chromium "$WORK/dom_quic.html" --enable-quic --origin-to-force-quic-on=app.clearview.ai:443 \
        --dump-dom https://app.clearview.ai/
    stop_capture
    declare_capture quic_chromium.pcap \
        "Headless Chromium forced onto QUIC v1 for app.clearview.ai:443 (--origin-to-force-quic-on, --host-resolver-rules, no DNS). A UDP sink on 10.99.0.1:443 takes the datagrams without answering, so the capture holds only Chromium's client Initial packets: the ClientHello in two Initials, then retransmissions until Chromium gives up (its last packet is a CONNECTION_CLOSE, still in an Initial). The ClientHello with its ML-KEM key share spans several CRYPTO frames, possibly in more than one Initial, shuffled by Chromium's chaos protection; the SNI is only visible after decrypting the Initials with keys derived from the client's Destination Connection ID. One quic-sni detection per QUIC connection (distinct client DCID)." \
        "app.clearview.ai" \
        "--quic"
fi

# 9. Same kind of traffic captured on the 'any' pseudo-interface (LINUX_SLL2 link type).
if want sll2_any.pcap; then
    start_capture sll2_any.pcap any
    ws "${DIG[@]}" api.clearview.ai A >/dev/null
    ws "${CURL[@]}" https://api.clearview.ai/
    ws curl -sS --max-time 10 -o /dev/null http://example.org/
    stop_capture
    declare_capture sll2_any.pcap \
        "Captured with tcpdump -i any inside the workstation namespace, so the link type is LINUX_SLL2 (20-byte cooked header with interface index and packet type) instead of Ethernet. dig A api.clearview.ai, curl https://api.clearview.ai/ (its own A and AAAA lookups, then TLS over IPv6) and a benign curl http://example.org/." \
        "api.clearview.ai example.org"
fi

# 10. pcapng written by dumpcap.
if want pcapng_dumpcap.pcapng; then
    start_capture pcapng_dumpcap.pcapng dumpcap
    ws "${DIG[@]}" facecheck.id A >/dev/null
    ws "${CURL[@]}" --resolve search4faces.com:8443:$SRV4 https://search4faces.com:8443/
    ws curl -sS --max-time 10 -o /dev/null --resolve lenso.ai:80:$SRV4 http://lenso.ai/
    ws "${DIG[@]}" www.example.com A >/dev/null
    stop_capture
    declare_capture pcapng_dumpcap.pcapng \
        "pcapng file written by dumpcap (Wireshark 4.0) on the veth: section header block, interface description block with if_tsresol = 9 (dumpcap asks libpcap for nanosecond timestamps; a reader that assumes the microsecond default gets times 1000 times too large), enhanced packet blocks. dig A facecheck.id, curl https://search4faces.com:8443/ and curl http://lenso.ai/ (both via --resolve, no DNS), dig A www.example.com (benign)." \
        "facecheck.id search4faces.com lenso.ai www.example.com" \
        "--decode-tls-port 8443"
fi

# 11. Classic pcap with nanosecond timestamps.
if want pcap_nanosec.pcap; then
    start_capture pcap_nanosec.pcap nano
    ws "${DIG[@]}" www.pimeyes.com AAAA >/dev/null
    ws "${CURL[@]}" --resolve clearview.ai:443:$SRV4 https://clearview.ai/
    ws "${DIG[@]}" myfacecheck.id A >/dev/null
    stop_capture
    declare_capture pcap_nanosec.pcap \
        "Classic pcap (not pcapng) with nanosecond timestamps: tcpdump --time-stamp-precision=nano writes the magic number 0xa1b23c4d instead of 0xa1b2c3d4, and the sub-second field of each record header counts nanoseconds. dig AAAA www.pimeyes.com, curl https://clearview.ai/ via --resolve (no DNS), dig A myfacecheck.id (decoy)." \
        "www.pimeyes.com clearview.ai myfacecheck.id"
fi

# 12. IPv6 (and a little IPv4) transport.
if want ipv6_mixed.pcap; then
    set_ws_resolver "$SRV6"
    start_capture ipv6_mixed.pcap
    ws dig "@$SRV6" +time=2 +tries=1 app.clearview.ai AAAA >/dev/null
    ws dig "@$SRV6" +time=2 +tries=1 pimeyes.com A >/dev/null
    ws "${DIG[@]}" search4faces.com AAAA >/dev/null
    ws "${CURL[@]}" -6 https://app.clearview.ai/
    ws curl -sS --max-time 10 -o /dev/null -6 http://www.pimeyes.com:8080/
    ws "${CURL[@]}" -6 --resolve "lenso.ai:443:[$SRV6]" https://lenso.ai/
    ws "${CURL[@]}" -6 https://myfacecheck.id/
    ws curl -sS --max-time 10 -o /dev/null -6 http://intranet.police.example/
    stop_capture
    set_ws_resolver "$SRV4"
    declare_capture ipv6_mixed.pcap \
        "IPv6 transport over fd99::/64: dig AAAA and A over IPv6 to the resolver fd99::1, one dig AAAA over IPv4 transport, then curl -6 (the namespace resolver is fd99::1 here; curl still asks A and AAAA, and connects over IPv6) for https://app.clearview.ai/, http://www.pimeyes.com:8080/, https://lenso.ai/ via --resolve to [fd99::1] (no DNS), a decoy over HTTPS and a benign name over HTTP." \
        "app.clearview.ai pimeyes.com search4faces.com www.pimeyes.com lenso.ai myfacecheck.id intranet.police.example"
fi

# ---------------------------------------------------------------- QUIC and encrypted DNS
# These scenarios need UDP 443 or TCP 443 for a different server than the one the scenarios
# above use, so they stop that one for their duration and start it again afterwards.
stop_bg() {  # stop_bg PID: end one server this script started, and forget its pid
    local pid=$1 p keep=()
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${BG_PIDS[@]}"; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    BG_PIDS=("${keep[@]}")
}
wait_port_free() {  # wait_port_free PROTO PORT: until nothing in emsrv listens there
    for _ in $(seq 50); do
        if ! srv ss -Hln"$1" "sport = :$2" | grep -q .; then return 0; fi
        sleep 0.1
    done
    echo "$1/$2 is still in use in $SRV" >&2
    return 1
}
install_missing() {  # install_missing CMD DEBIAN-PACKAGE: only the scenario that needs it asks
    if command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; then return 0; fi
    if [[ -n ${SKIP_APT:-} ]]; then
        echo "missing package: $2" >&2
        exit 1
    fi
    log "installing $2"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
# Public DoH/DoT resolver host names: a hello naming one is an encrypted-dns signal (the same
# list as the sensor semantics; write_intent.py applies it to what tshark shows).
RESOLVER_NAMES="dns.google cloudflare-dns.com mozilla.cloudflare-dns.com dns.quad9.net doh.opendns.com"

# 13. QUIC with complete handshakes: aioquic HTTP/3 client and server, QUIC v1 and v2.
if want quic_aioquic.pcap; then
    if ! python3 -c 'import aioquic' 2>/dev/null; then
        [[ -z ${SKIP_APT:-} ]] || { echo "missing Python package: aioquic" >&2; exit 1; }
        log "installing aioquic (pip)"
        python3 -m pip install -q aioquic
    fi
    cat >"$WORK/h3_server.py" <<'PY'
import asyncio
import sys

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated
from aioquic.quic.packet import QuicProtocolVersion

BODY = b"<!doctype html><title>h3 test</title><p>h3 sample page</p>\n"


class H3Server(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = None

    def quic_event_received(self, event):
        if isinstance(event, ProtocolNegotiated):
            self.h3 = H3Connection(self._quic)
        if self.h3 is None:
            return
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and ev.stream_ended:
                headers = dict(ev.headers)
                sys.stderr.write("h3 %s %s\n" % (headers.get(b":authority"), headers.get(b":path")))
                self.h3.send_headers(
                    ev.stream_id,
                    [(b":status", b"200"), (b"content-type", b"text/html"),
                     (b"content-length", str(len(BODY)).encode())],
                )
                self.h3.send_data(ev.stream_id, BODY, end_stream=True)
                self.transmit()


async def main(cert, key, port):
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.supported_versions = [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2]
    config.load_cert_chain(cert, key)
    await serve("::", int(port), configuration=config, create_protocol=H3Server)
    await asyncio.Future()


asyncio.run(main(*sys.argv[1:]))
PY
    cat >"$WORK/h3_client.py" <<'PY'
import asyncio
import ssl
import sys

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.done = asyncio.Event()
        self.status = b""
        self.body = b""

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                self.status = dict(ev.headers).get(b":status", b"")
            elif isinstance(ev, DataReceived):
                self.body += ev.data
            if isinstance(ev, (HeadersReceived, DataReceived)) and ev.stream_ended:
                self.done.set()

    async def get(self, authority):
        stream_id = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            stream_id,
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority.encode()),
             (b":path", b"/"), (b"user-agent", b"aioquic")],
            end_stream=True,
        )
        self.transmit()
        await asyncio.wait_for(self.done.wait(), 5)


async def main(host, port, name, version):
    config = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=name, verify_mode=ssl.CERT_NONE
    )
    if version == "v2":  # RFC 9369; the client's first Initial is already version 2
        config.supported_versions = [QuicProtocolVersion.VERSION_2]
    async with connect(host, int(port), configuration=config, create_protocol=H3Client) as client:
        await client.get(name)
        if client.status != b"200" or b"h3 sample page" not in client.body:
            sys.exit(f"{name}: HTTP/3 status {client.status!r}")


asyncio.run(main(*sys.argv[1:]))
PY
    stop_bg "$UDP_SINK_PID"
    wait_port_free u 443
    ip netns exec "$SRV" python3 "$WORK/h3_server.py" "$WORK/cert.pem" "$WORK/key.pem" 443 \
        2>"$WORK/h3_server.log" &
    H3_PID=$!
    BG_PIDS+=("$H3_PID")
    wait_port u 443
    start_capture quic_aioquic.pcap
    ws python3 "$WORK/h3_client.py" "$SRV4" 443 app.clearview.ai v1
    ws python3 "$WORK/h3_client.py" "$SRV4" 443 pimeyes.com v1
    ws python3 "$WORK/h3_client.py" "$SRV4" 443 facecheck.id v2
    ws python3 "$WORK/h3_client.py" "$SRV6" 443 search4faces.com v1
    ws python3 "$WORK/h3_client.py" "$SRV4" 443 www.example.com v1
    stop_capture
    stop_bg "$H3_PID"
    wait_port_free u 443
    start_udp_sink
    wait_port u 443
    declare_capture quic_aioquic.pcap \
        "Complete QUIC handshakes: the aioquic $(python3 -c 'import aioquic; print(aioquic.__version__)') HTTP/3 client (one process per connection, no DNS: server_name sets the SNI) against an aioquic HTTP/3 server on UDP 443 of 10.99.0.1 / fd99::1, each connection a GET / answered 200. QUIC v1 to app.clearview.ai and pimeyes.com; QUIC version 2 (RFC 9369, 0x6b3343cf, client configured with supported_versions=[VERSION_2], so its first Initial is v2) to facecheck.id; QUIC v1 over IPv6 to search4faces.com; a benign QUIC v1 connection to www.example.com. aioquic's ClientHello fits in the first Initial. Besides the client Initials the capture holds the server's Initial (ServerHello) coalesced with Handshake packets, the client's later Initials (ACKs) addressed to the server-chosen connection ID, Handshake and 1-RTT packets in both directions: none of them may add a detection or count as a decrypt failure." \
        "app.clearview.ai pimeyes.com facecheck.id search4faces.com www.example.com" \
        "--quic --counter quic_decrypt_failures=0 --counter quic_version_negotiation=0"
fi

# 14. Encrypted DNS from real clients: DoT (kdig), DoH (kdig +https, curl --doh-url) to unbound.
if want dot_kdig.pcap; then
    install_missing unbound unbound
    # The resolver certificate names the public resolvers the clients believe they talk to.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=dns.quad9.net" \
        -addext "subjectAltName=DNS:dns.quad9.net,DNS:dns.google,DNS:cloudflare-dns.com,IP:$SRV4" \
        -keyout "$WORK/dns_key.pem" -out "$WORK/dns_cert.pem" 2>/dev/null
    # unbound answers only from local data (no recursion, no upstream): DoT on 853, DoH on 443,
    # TCP only (UDP 443 belongs to the sink).
    cat >"$WORK/unbound.conf" <<EOF
server:
    username: ""
    chroot: ""
    directory: "$WORK"
    pidfile: "$WORK/unbound.pid"
    use-syslog: no
    logfile: "$WORK/unbound.log"
    verbosity: 1
    interface-automatic: no
    do-udp: no
    interface: $SRV4@853
    interface: $SRV4@443
    tls-port: 853
    https-port: 443
    tls-service-key: "$WORK/dns_key.pem"
    tls-service-pem: "$WORK/dns_cert.pem"
    access-control: 10.99.0.0/24 allow
    access-control: fd99::/64 allow
    module-config: "iterator"
    local-zone: "." static
    local-data: "app.clearview.ai. 300 IN A $SRV4"
    local-data: "app.clearview.ai. 300 IN AAAA $SRV6"
    local-data: "pimeyes.com. 300 IN A $SRV4"
    local-data: "pimeyes.com. 300 IN AAAA $SRV6"
    local-data: "facecheck.id. 300 IN A $SRV4"
EOF
    stop_bg "$TLS_SERVER_PID"
    wait_port_free t 443
    ip netns exec "$SRV" unbound -d -c "$WORK/unbound.conf" 2>"$WORK/unbound.err" &
    UNBOUND_PID=$!
    BG_PIDS+=("$UNBOUND_PID")
    wait_port t 853
    wait_port t 443
    KDIG=(kdig "@$SRV4" +timeout=3 +retry=0)
    start_capture dot_kdig.pcap
    ws "${KDIG[@]}" -p 853 +tls +tls-hostname=dns.quad9.net "+tls-ca=$WORK/dns_cert.pem" \
        app.clearview.ai A >"$WORK/kdig_dot.txt"
    ws "${KDIG[@]}" -p 853 +tls pimeyes.com AAAA >"$WORK/kdig_dot_nosni.txt"
    ws "${KDIG[@]}" +https +tls-hostname=cloudflare-dns.com "+tls-ca=$WORK/dns_cert.pem" \
        facecheck.id A >"$WORK/kdig_doh.txt"
    ws curl -sS --max-time 10 -o /dev/null --doh-url https://dns.google/dns-query \
        --resolve "dns.google:443:$SRV4" --cacert "$WORK/dns_cert.pem" http://app.clearview.ai/
    stop_capture
    stop_bg "$UNBOUND_PID"
    wait_port_free t 443
    start_tls_server
    wait_port t 443
    wait_port t 8443
    grep -q "app.clearview.ai.*$SRV4" "$WORK/kdig_dot.txt" || { echo "kdig DoT got no answer" >&2; exit 1; }
    grep -q "pimeyes.com.*$SRV6" "$WORK/kdig_dot_nosni.txt" || { echo "kdig DoT (no SNI) got no answer" >&2; exit 1; }
    grep -q "facecheck.id.*$SRV4" "$WORK/kdig_doh.txt" || { echo "kdig DoH got no answer" >&2; exit 1; }
    declare_capture dot_kdig.pcap \
        "Encrypted DNS from real clients to unbound $(unbound -V | sed -n 's/^Version //p') (DoT on TCP 853, DoH over HTTP/2 on TCP 443 of 10.99.0.1; certificate for dns.quad9.net, dns.google, cloudflare-dns.com; answers from local data only). kdig (Knot $(kdig --version | sed -n 's/.*version //p')) +tls with +tls-hostname=dns.quad9.net asks A app.clearview.ai over DoT (SNI dns.quad9.net: encrypted-dns); kdig +tls without a host name asks AAAA pimeyes.com over DoT (no SNI at all: still encrypted-dns, named by the server address 10.99.0.1, because any hello on TCP 853 is DoT); kdig +https with +tls-hostname=cloudflare-dns.com asks A facecheck.id over DoH (encrypted-dns cloudflare-dns.com); curl --doh-url https://dns.google/dns-query (dns.google mapped to 10.99.0.1 with --resolve) resolves app.clearview.ai through DoH (encrypted-dns dns.google; every further hello to dns.google from this client within 10 minutes is rate-limited) and then fetches http://app.clearview.ai/ in clear text (http-host). None of the vendor names asked over DoT/DoH is visible on the wire: no dns-query detection can exist." \
        "dns.quad9.net cloudflare-dns.com dns.google app.clearview.ai" \
        "--resolver-names $RESOLVER_NAMES --encrypted-dns-ports 853"
fi

# 15. DNS over QUIC (RFC 9250) on UDP 853: aioquic client and a small aioquic DoQ server.
if want doq_aioquic.pcap; then
    if ! python3 -c 'import aioquic, dns' 2>/dev/null; then
        [[ -z ${SKIP_APT:-} ]] || { echo "missing Python packages: aioquic dnspython" >&2; exit 1; }
        log "installing aioquic dnspython (pip)"
        python3 -m pip install -q aioquic dnspython
    fi
    cat >"$WORK/doq_server.py" <<'PY'
import asyncio
import struct
import sys

import dns.message
import dns.rcode
import dns.rrset
from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived

cert, key, port, *records = sys.argv[1:]
ANSWERS = {}
for rec in records:  # name,type,address
    name, rdtype, address = rec.split(",")
    ANSWERS[(name.lower() + ".", rdtype)] = address


class DoqServer(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.streams = {}

    def quic_event_received(self, event):
        if not isinstance(event, StreamDataReceived):
            return
        data = self.streams.get(event.stream_id, b"") + event.data
        self.streams[event.stream_id] = data
        if not event.end_stream:
            return
        query = dns.message.from_wire(data[2:])
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        response = dns.message.make_response(query)
        address = ANSWERS.get((name, rdtype))
        if address:
            response.answer.append(dns.rrset.from_text(name, 300, "IN", rdtype, address))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sys.stderr.write("doq %s %s -> %s\n" % (name, rdtype, address))
        wire = response.to_wire()
        self._quic.send_stream_data(event.stream_id, struct.pack("!H", len(wire)) + wire, True)
        self.transmit()


async def main():
    config = QuicConfiguration(is_client=False, alpn_protocols=["doq"])
    config.load_cert_chain(cert, key)
    await serve("::", int(port), configuration=config, create_protocol=DoqServer)
    await asyncio.Future()


asyncio.run(main())
PY
    cat >"$WORK/doq_client.py" <<'PY'
import asyncio
import ssl
import struct
import sys

import dns.message
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived


class DoqClient(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.answer = asyncio.get_running_loop().create_future()
        self.data = b""

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            self.data += event.data
            if event.end_stream and not self.answer.done():
                self.answer.set_result(dns.message.from_wire(self.data[2:]))

    async def query(self, qname, rdtype):
        query = dns.message.make_query(qname, rdtype)
        query.id = 0  # RFC 9250 4.2.1
        wire = query.to_wire()
        stream_id = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(stream_id, struct.pack("!H", len(wire)) + wire, True)
        self.transmit()
        return await asyncio.wait_for(self.answer, 5)


async def main(host, port, server_name, qname, rdtype):
    config = QuicConfiguration(is_client=True, alpn_protocols=["doq"], verify_mode=ssl.CERT_NONE)
    if server_name != "-":
        config.server_name = server_name  # otherwise none: aioquic sends no SNI for an address
    async with connect(host, int(port), configuration=config, create_protocol=DoqClient) as c:
        answer = await c.query(qname, rdtype)
        if not answer.answer:
            sys.exit(f"DoQ: no answer for {qname} {rdtype}")


asyncio.run(main(*sys.argv[1:]))
PY
    ip netns exec "$SRV" python3 "$WORK/doq_server.py" "$WORK/cert.pem" "$WORK/key.pem" 853 \
        "app.clearview.ai,A,$SRV4" "pimeyes.com,AAAA,$SRV6" 2>"$WORK/doq_server.log" &
    DOQ_PID=$!
    BG_PIDS+=("$DOQ_PID")
    wait_port u 853
    start_capture doq_aioquic.pcap
    ws python3 "$WORK/doq_client.py" "$SRV4" 853 dns.adguard-dns.com app.clearview.ai A
    ws python3 "$WORK/doq_client.py" "$SRV4" 853 - pimeyes.com AAAA
    stop_capture
    stop_bg "$DOQ_PID"
    declare_capture doq_aioquic.pcap \
        "DNS over QUIC (RFC 9250, ALPN doq) on UDP 853 from the aioquic $(python3 -c 'import aioquic; print(aioquic.__version__)') client to a small aioquic DoQ server at 10.99.0.1, complete QUIC v1 handshakes, one query per connection on a bidirectional stream. The first connection names dns.adguard-dns.com in its SNI and asks A app.clearview.ai (encrypted-dns dns.adguard-dns.com: any QUIC Initial on UDP 853 is DoQ); the second connects to the bare address, so aioquic sends no SNI at all, and asks AAAA pimeyes.com (encrypted-dns named by the server address 10.99.0.1). The vendor names travel only inside the encrypted streams: no dns-query detection can exist." \
        "dns.adguard-dns.com" \
        "--decode-quic-port 853 --resolver-names $RESOLVER_NAMES --encrypted-dns-ports 853 --counter quic_decrypt_failures=0"
fi

# ---------------------------------------------------------------- checks and intents
log "checking captures and writing intents"
STRAY_FILTER='(ip and not (ip.src==10.99.0.0/24 and ip.dst==10.99.0.0/24)) or (ipv6 and not ((ipv6.src==fd99::/64 or ipv6.src==fe80::/10 or ipv6.src==::) and (ipv6.dst==fd99::/64 or ipv6.dst==fe80::/10 or ipv6.dst==ff02::/16)))'
for cap in "${CAPTURES[@]}"; do
    f="$WORK/out/$cap"
    # Nothing but our two namespaces' addresses (and IPv6 link-local / multicast for neighbour
    # discovery) may appear: proof that no traffic came from or went anywhere else.
    stray=$(tshark -r "$f" -Y "$STRAY_FILTER" 2>/dev/null | wc -l)
    if [[ $stray -ne 0 ]]; then
        echo "$cap: $stray packets with addresses outside the test namespaces" >&2
        exit 1
    fi
    base=${cap%.*}
    # shellcheck disable=SC2086
    python3 "$HERE/write_intent.py" "$f" --out "$WORK/out/$base.intent.yaml" \
        --generator "$GENERATOR" --description "${DESC[$cap]}" --names ${NAMES[$cap]} \
        ${EXTRA[$cap]}
done

mkdir -p "$OUT"
for cap in "${CAPTURES[@]}"; do
    base=${cap%.*}
    install -m 644 "$WORK/out/$cap" "$OUT/$cap"
    install -m 644 "$WORK/out/$base.intent.yaml" "$OUT/$base.intent.yaml"
done
log "done: ${#CAPTURES[@]} captures in $OUT"
