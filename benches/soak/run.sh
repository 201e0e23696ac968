#!/usr/bin/env bash
# The soak benchmark (W2.9): does a meshed pair's memory stay flat under steady load?
#
#   sudo benches/soak/run.sh                 # 10 minutes; MINUTES=60 for an hour
#   (RATE=<rps> for another load, REMORA_BIN=<path> to soak a given binary)
#
# Topology (network namespaces on one bridge, 10.78.0.0/24): remora control in `cp`; a client
# pod (load generators → iptables → Remora outbound) and a server pod (Remora inbound → nginx,
# 1 KiB at /, HTTP/1.1 on 8080 and HTTP/2 on 8082). The load, RATE requests a second in all
# (default 2 000), is mixed: 60 % HTTP/1.1 keep-alive, 30 % HTTP/2 (prior knowledge), 10 % a new
# HTTP/1.1 connection per request. Every minute the control plane's config is edited (a route
# of the web service's profile is added or removed), which reaches both proxies' watches.
#
# Every 10 s it samples each proxy: RSS, anonymous RSS, open file descriptors, CPU seconds, and
# the connections it holds open (its own tcp_open_connections gauge). Results in $OUT (default
# benches/soak/): samples.csv, load-*.json (oha's summaries), soak.svg (RSS and fds over time),
# and report.md (the figures BENCHMARKS.md quotes: RSS after warm-up, its spread, fds).
set -euo pipefail

MINUTES=${MINUTES:-10}
RATE=${RATE:-2000}
WORKERS=${WORKERS:-1}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${OUT:-$here}
work=$(mktemp -d /tmp/remora-soak.XXXXXX)
P=rms$$
NS=()

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, iptables)" >&2; exit 64; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cleanup() {
  set +e
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null; done
  pkill -f "$work" 2>/dev/null
  for ns in "${NS[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null; done
  sleep 0.5
  for ns in "${NS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

log "installing nginx (Debian) and oha (crates.io) if missing"
export DEBIAN_FRONTEND=noninteractive
if ! command -v nginx >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq nginx-light iptables iproute2 util-linux python3 >/dev/null
fi
command -v oha >/dev/null || cargo install --locked oha >/dev/null
OHA=$(command -v oha)
# REMORA_BIN=<path>: soak that binary instead of building this tree's (release).
if [ -z "${REMORA_BIN:-}" ]; then
  log "building remora (release)"
  (cd "$repo" && cargo build --release -q -p remora --bin remora)
  REMORA_BIN=$repo/target/release/remora
fi
install -m 0755 "$REMORA_BIN" "$work/remora"
REMORA=$work/remora
chmod 0755 "$work"

log "topology"
ns() { NS+=("$P-$1"); ip netns add "$P-$1"; ip -n "$P-$1" link set lo up; }
ns br
ip -n $P-br link add br0 type bridge
ip -n $P-br addr add 10.78.0.254/24 dev br0
ip -n $P-br link set br0 up
declare -A IP
host=1
for p in cp client server; do
  ns "$p"
  ip -n "$P-$p" link add eth0 type veth peer name "v$host" netns "$P-br"
  ip -n $P-br link set "v$host" master br0 up
  ip -n "$P-$p" addr add "10.78.0.$host/24" dev eth0
  ip -n "$P-$p" link set eth0 up
  ip -n "$P-$p" route add default via 10.78.0.254
  IP[$p]=10.78.0.$host
  host=$((host + 1))
done
inns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 > "$work/index.html"
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log /dev/null;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 8080; location / { root $work; index index.html; } }
  server { listen 8082 http2; location / { root $work; index index.html; } }
}
EOF
inns server nginx -c "$work/nginx.conf" -e /dev/null

log "PKI and remora control"
"$REMORA" certs root --out "$work/pki" >/dev/null
"$REMORA" certs issuer --root "$work/pki" --trust-domain soak.example --out "$work/pki/soak" >/dev/null
"$REMORA" certs token-key --out "$work/pki/soak" >/dev/null
# The config, with or without an extra profile route ($1 = 0 / 1): the edit made every minute.
config() {
  cat <<EOF
[cluster]
name = "soak"
trust_domain = "soak.example"
[server]
addr = "${IP[cp]}:8086"
admin_addr = "127.0.0.1:9990"
[identity]
trust_anchors = "$work/pki/root.pem"
issuer_cert = "$work/pki/soak/issuer.pem"
issuer_key = "$work/pki/soak/issuer.key"
token_key = "$work/pki/soak/token.key"
[[services]]
name = "web"
namespace = "soak"
cluster_ip = "10.96.0.10"
ports = [{ port = 8080 }, { port = 8082 }]
[[services.endpoints]]
pod = "server-0"
ip = "${IP[server]}"
service_account = "web"
[[services.routes]]
name = "index"
path = "/.*"
EOF
  if [ "$1" = 1 ]; then
    printf '[[services.routes]]\nname = "edited"\npath = "/edited/.*"\ntimeout = "2s"\n'
  fi
}
config 0 > "$work/control.toml"
inns cp "$REMORA" control --config "$work/control.toml" > "$work/control.log" 2>&1 &
CP_ID=remora-control.linkerd.serviceaccount.identity.linkerd.soak.example
for side in client server; do
  sa=$side
  [ $side = server ] && sa=web
  id=$sa.soak.serviceaccount.identity.linkerd.soak.example
  until "$REMORA" control token --config "$work/control.toml" --identity "$id" > "$work/$side.token" 2>/dev/null; do sleep 0.2; done
  chmod 0644 "$work/$side.token"
  inns $side "$REMORA" init >/dev/null
  inns $side env -i PATH=/usr/bin:/bin \
    REMORA_WORKER_THREADS=$WORKERS REMORA_LOG=warn \
    REMORA_INBOUND_ADDR=0.0.0.0:4143 REMORA_OUTBOUND_ADDR=127.0.0.1:4140 REMORA_ADMIN_ADDR=0.0.0.0:4191 \
    REMORA_IDENTITY_NAME=$id REMORA_IDENTITY_TRUST_ANCHORS=$work/pki/root.pem \
    REMORA_IDENTITY_TOKEN_FILE=$work/$side.token \
    REMORA_IDENTITY_ADDR=${IP[cp]}:8086 REMORA_IDENTITY_SVC_NAME=$CP_ID \
    REMORA_DESTINATION_ADDR=${IP[cp]}:8086 REMORA_DESTINATION_SVC_NAME=$CP_ID \
    setpriv --reuid=2102 --regid=2102 --clear-groups -- "$REMORA" proxy > "$work/proxy-$side.log" 2>&1 &
done
admin() { inns "$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/4191 && printf 'GET $2 HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null; }
for side in client server; do
  for _ in $(seq 150); do admin $side /ready | head -1 | grep -q 200 && break; sleep 0.2; done
  admin $side /ready | head -1 | grep -q 200 || { echo "the $side proxy never got ready" >&2; tail "$work/proxy-$side.log" "$work/control.log" >&2; exit 1; }
done
declare -A PID
for pid in $(pgrep -f "$REMORA proxy"); do
  case $(ip netns identify "$pid") in
    $P-client) PID[client]=$pid ;;
    $P-server) PID[server]=$pid ;;
  esac
done
[ -n "${PID[client]:-}" ] && [ -n "${PID[server]:-}" ] || { echo "proxies not found" >&2; exit 1; }

secs=$((MINUTES * 60))
h1=$((RATE * 6 / 10)); h2=$((RATE * 3 / 10)); fresh=$((RATE - h1 - h2))
log "load: $RATE rps for $MINUTES min ($h1 HTTP/1.1 keep-alive, $h2 HTTP/2, $fresh new connections)"
URL=http://10.96.0.10
LOAD=()
inns client "$OHA" --no-tui --output-format json -z ${secs}s -q $h1 -c 32 "$URL:8080/" > "$work/load-http1.json" 2>&1 &
LOAD+=($!)
inns client "$OHA" --no-tui --output-format json -z ${secs}s -q $h2 -c 8 -p 16 --http2 "$URL:8082/" > "$work/load-http2.json" 2>&1 &
LOAD+=($!)
inns client "$OHA" --no-tui --output-format json -z ${secs}s -q $fresh -c 8 --disable-keepalive "$URL:8080/" > "$work/load-new.json" 2>&1 &
LOAD+=($!)

ticks=$((secs / 10))
echo "t_s,proxy,rss_kib,anon_kib,fds,cpu_s,open_conns" > "$work/samples.csv"
hz=$(getconf CLK_TCK)
sample() {
  local t=$1 side pid rss anon fds cpu conns
  for side in client server; do
    pid=${PID[$side]}
    rss=$(awk '/^VmRSS:/ {print $2}' /proc/$pid/status)
    anon=$(awk '/^RssAnon:/ {print $2}' /proc/$pid/status)
    fds=$(ls /proc/$pid/fd | wc -l)
    cpu=$(awk -v hz="$hz" '{printf "%.2f", ($14 + $15) / hz}' /proc/$pid/stat)
    conns=$(admin $side /metrics | awk '/^tcp_open_connections\{/ {s += $NF} END {print s + 0}')
    echo "$t,$side,$rss,$anon,$fds,$cpu,$conns" >> "$work/samples.csv"
  done
}
edits=0
# Samples while the load runs (the last one 10 s before it ends).
for i in $(seq 0 $((ticks - 1))); do
  sample $((i * 10))
  if [ $i -gt 0 ] && [ $((i % 6)) = 0 ]; then
    edits=$((edits + 1))
    config $((edits % 2)) > "$work/control.toml.new" && mv "$work/control.toml.new" "$work/control.toml"
  fi
  sleep 10
done
wait "${LOAD[@]}" 2>/dev/null || true
log "done: $edits config edits"
mkdir -p "$out"
cp "$work/samples.csv" "$work"/load-*.json "$out/"
python3 "$here/report.py" "$out" "$MINUTES" "$RATE" "$edits" | tee "$out/report.md"
