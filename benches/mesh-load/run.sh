#!/usr/bin/env bash
# The mesh load benchmark (#13): direct vs Remora vs HAProxy (vs linkerd2-proxy), side by side
# in one run.
#
#   sudo benches/mesh-load/run.sh            # installs what it needs, ~15 minutes
#   sudo L2P=/path/to/linkerd2-proxy benches/mesh-load/run.sh   # adds a linkerd2-proxy pair
#
# Topology (network namespaces on one bridge, 10.77.0.0/24):
#   client-{direct,remora,haproxy,l2p}  →  server-{direct,remora,haproxy,l2p} (nginx, 1 KiB)
#   remora:  oha → iptables → Remora outbound → mTLS (HTTP/2) → Remora inbound → nginx,
#            identities from remora control (in its own namespace)
#   haproxy: oha → HAProxy (client side) → TLS 1.3 mTLS, HTTP/2, P-256 certs from the same
#            root → HAProxy (server side) → nginx
#   linkerd2-proxy (only with L2P=<binary>, built by hand; nothing here builds it): as remora,
#            with linkerd2-proxy in both pods, under the same remora control (identity,
#            destination, policy), its environment as Linkerd's injector renders it
#            (tests/fixtures/linkerd-env/ipv4.json) with the control plane's addresses
# Each proxy gets WORKERS worker threads (default 1; linkerd2-proxy: LINKERD2_PROXY_CORES,
# _CORES_MIN and _CORES_MAX all WORKERS). REMORA_BIN=<binary> measures that Remora build instead
# of building this tree. Results: benches/mesh-load/results.jsonl, a Markdown report
# (report.md) and a plot of added latency vs rate (added-latency.svg).
set -euo pipefail

WORKERS=${WORKERS:-1}
DURATION=${DURATION:-10s}
RATES=${RATES:-"500 1000 2000 4000"}
# Which scenarios to run (all by default); e.g. SCENARIOS="max idle" for a quick look.
SCENARIOS=${SCENARIOS:-"rate max new_conn h2 bulk idle"}
# PERF=1: record a CPU profile (perf, cpu-clock, DWARF call graphs) of each Remora proxy during
# the maximum-rate scenario, to $OUT/perf-{client,server}.data.
PERF=${PERF:-0}
# L2P=<path to a linkerd2-proxy binary>: adds the setup `linkerd2-proxy` to every scenario.
L2P=${L2P:-}
# L2P_LOG: linkerd2-proxy's LINKERD2_PROXY_LOG (warn by default).
SETUPS="direct remora haproxy"
if [ -n "$L2P" ]; then
  [ -x "$L2P" ] || { echo "L2P=$L2P is not an executable file" >&2; exit 64; }
  SETUPS="$SETUPS linkerd2-proxy"
fi
PROXIES=${SETUPS#direct }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${OUT:-$here}
work=$(mktemp -d /tmp/remora-bench.XXXXXX)
P=rmb$$
NS=()

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, iptables)" >&2; exit 64; }
# Idle connections through each pair, and HAProxy's maxconn, need descriptors: as many as the
# hard limit allows (IDLE_CONNS is lowered to fit it; 10 000 needs a hard limit above 25 000).
ulimit -Hn 200000 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
FDS=$(ulimit -n)
IDLE_CONNS=${IDLE_CONNS:-10000}
[ $((IDLE_CONNS * 2 + 1000)) -le "$FDS" ] || IDLE_CONNS=$(((FDS - 1000) / 2))
MAXCONN=$(((FDS - 100) / 2))

cleanup() {
  set +e
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null; done
  pkill -f "$work" 2>/dev/null
  # Daemons (iperf3 -D, nginx, haproxy -D) are not our jobs: kill whatever runs in our namespaces.
  for ns in "${NS[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null; done
  sleep 0.5
  for ns in "${NS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

log() { echo "== $*" >&2; }
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
log "installing nginx, haproxy, iperf3 (Debian) and oha (crates.io)"
export DEBIAN_FRONTEND=noninteractive
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null || ! command -v iperf3 >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq nginx-light haproxy iperf3 iptables iproute2 util-linux jq openssl >/dev/null
fi
command -v oha >/dev/null || cargo install --locked oha >/dev/null
[ "$PERF" != 1 ] || command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null
OHA=$(command -v oha)
# REMORA_BIN=<path>: measure that binary (e.g. a build of an earlier commit) instead of this tree.
if [ -n "${REMORA_BIN:-}" ]; then
  REMORA=$REMORA_BIN
else
  log "building remora (release)"
  (cd "$repo" && cargo build --release -q -p remora --bin remora)
  REMORA=$repo/target/release/remora
fi
install -m 0755 "$REMORA" "$work/remora"
REMORA=$work/remora
[ -z "$L2P" ] || install -m 0755 "$L2P" "$work/linkerd2-proxy"
chmod 0755 "$work"

# ---------------------------------------------------------------------------------------------
log "topology"
ns() { NS+=("$P-$1"); ip netns add "$P-$1"; ip -n "$P-$1" link set lo up; }
ns br
ip -n $P-br link add br0 type bridge
ip -n $P-br addr add 10.77.0.254/24 dev br0
ip -n $P-br link set br0 up
host=1
declare -A IP
pod() {
  ns "$1"
  ip -n "$P-$1" link add eth0 type veth peer name "v$host" netns "$P-br"
  ip -n $P-br link set "v$host" master br0 up
  ip -n "$P-$1" addr add "10.77.0.$host/24" dev eth0
  ip -n "$P-$1" link set eth0 up
  ip -n "$P-$1" route add default via 10.77.0.254
  IP[$1]=10.77.0.$host
  host=$((host + 1))
}
PODS="cp client-direct server-direct client-remora server-remora client-haproxy server-haproxy"
[ -z "$L2P" ] || PODS="$PODS client-l2p server-l2p"
for p in $PODS; do pod "$p"; done
inns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

# nginx returning 1 KiB, HTTP/1.1 on 8080 and HTTP/2 (prior knowledge) on 8082, one worker.
head -c 1024 /dev/urandom | base64 -w0 | head -c 1024 > "$work/index.html"
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx-%NS%.pid;
error_log /dev/null;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 8080; location / { root $work; index index.html; } }
  server { listen 8082 http2; location / { root $work; index index.html; } }
}
EOF
for s in $PODS; do
  [[ $s == server-* ]] || continue
  sed "s/%NS%/$s/" "$work/nginx.conf" > "$work/nginx-$s.conf"
  inns $s nginx -c "$work/nginx-$s.conf" -e /dev/null
  inns $s sh -c "iperf3 -s -p 5201 -D --logfile /dev/null"
done

# ---------------------------------------------------------------------------------------------
log "PKI: one root; remora control's issuer; HAProxy's P-256 certificates from the same root"
"$REMORA" certs root --out "$work/pki" >/dev/null
"$REMORA" certs issuer --root "$work/pki" --trust-domain bench.example --out "$work/pki/bench" >/dev/null
"$REMORA" certs token-key --out "$work/pki/bench" >/dev/null
for side in client server; do
  openssl ecparam -name prime256v1 -genkey -noout -out "$work/$side.key" 2>/dev/null
  openssl req -new -key "$work/$side.key" -subj "/CN=$side.bench" -out "$work/$side.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s.bench\nextendedKeyUsage=serverAuth,clientAuth\n' "$side" > "$work/$side.ext"
  openssl x509 -req -in "$work/$side.csr" -CA "$work/pki/bench/issuer.pem" -CAkey "$work/pki/bench/issuer.key" \
    -CAcreateserial -days 1 -sha256 -extfile "$work/$side.ext" -out "$work/$side.crt" 2>/dev/null
  cat "$work/$side.crt" "$work/pki/bench/issuer.pem" "$work/$side.key" > "$work/$side.pem"
done
chmod -R a+rX "$work"

# ---------------------------------------------------------------------------------------------
log "remora: control plane, init and proxies ($WORKERS worker thread(s) each)"
cat > "$work/control.toml" <<EOF
[cluster]
name = "bench"
trust_domain = "bench.example"
[server]
addr = "${IP[cp]}:8086"
admin_addr = "127.0.0.1:9990"
[identity]
trust_anchors = "$work/pki/root.pem"
issuer_cert = "$work/pki/bench/issuer.pem"
issuer_key = "$work/pki/bench/issuer.key"
token_key = "$work/pki/bench/token.key"
[[services]]
name = "web"
namespace = "bench"
cluster_ip = "10.96.0.10"
ports = [{ port = 8080 }, { port = 8082 }, { port = 5201, opaque = true }]
[[services.endpoints]]
pod = "server-0"
ip = "${IP[server-remora]}"
service_account = "web"
EOF
# linkerd2-proxy's server pod: a service of its own, the same ports.
[ -z "$L2P" ] || cat >> "$work/control.toml" <<EOF
[[services]]
name = "web-l2p"
namespace = "bench"
cluster_ip = "10.96.0.11"
ports = [{ port = 8080 }, { port = 8082 }, { port = 5201, opaque = true }]
[[services.endpoints]]
pod = "server-l2p-0"
ip = "${IP[server-l2p]}"
service_account = "web"
EOF
inns cp "$REMORA" control --config "$work/control.toml" > "$work/control.log" 2>&1 &
CP_ID=remora-control.linkerd.serviceaccount.identity.linkerd.bench.example
declare -A PID
for side in client server; do
  sa=$side
  [ $side = server ] && sa=web
  id=$sa.bench.serviceaccount.identity.linkerd.bench.example
  until "$REMORA" control token --config "$work/control.toml" --identity "$id" > "$work/$side.token" 2>/dev/null; do sleep 0.2; done
  chmod 0644 "$work/$side.token"
  inns $side-remora "$REMORA" init >/dev/null
  inns $side-remora env -i PATH=/usr/bin:/bin \
    REMORA_WORKER_THREADS=$WORKERS REMORA_LOG=warn \
    REMORA_INBOUND_ADDR=0.0.0.0:4143 REMORA_OUTBOUND_ADDR=127.0.0.1:4140 REMORA_ADMIN_ADDR=0.0.0.0:4191 \
    REMORA_IDENTITY_NAME=$id REMORA_IDENTITY_TRUST_ANCHORS=$work/pki/root.pem \
    REMORA_IDENTITY_TOKEN_FILE=$work/$side.token \
    REMORA_IDENTITY_ADDR=${IP[cp]}:8086 REMORA_IDENTITY_SVC_NAME=$CP_ID \
    REMORA_DESTINATION_ADDR=${IP[cp]}:8086 REMORA_DESTINATION_SVC_NAME=$CP_ID \
    setpriv --reuid=2102 --regid=2102 --clear-groups -- "$REMORA" proxy > "$work/proxy-$side.log" 2>&1 &
  PID[remora-$side]=$!
done
# ready <ns>: waits (up to 30 s) until the proxy in pod <ns> answers 200 on /ready (port 4191),
# asked through bash's /dev/tcp (sh may be dash, which has none).
ready() {
  for _ in $(seq 150); do
    inns "$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/4191 && printf 'GET /ready HTTP/1.0\r\n\r\n' >&3 && head -1 <&3" 2>/dev/null | grep -q 200 && return 0
    sleep 0.2
  done
  return 1
}
for side in client server; do
  ready $side-remora || { echo "remora proxy in $side-remora not ready; its log:" >&2; cat "$work/proxy-$side.log" >&2; exit 1; }
done
# $! is the subshell of a backgrounded function: find each proxy by its network namespace.
for pid in $(pgrep -f "$REMORA proxy"); do
  case $(ip netns identify "$pid") in
    $P-client-remora) PID[remora-client]=$pid ;;
    $P-server-remora) PID[remora-server]=$pid ;;
  esac
done
[ -n "${PID[remora-client]:-}" ] && [ -n "${PID[remora-server]:-}" ] || { echo "proxies not found" >&2; exit 1; }

if [ -n "$L2P" ]; then
  log "linkerd2-proxy pair ($WORKERS core(s) each), under remora control"
  anchors=$(cat "$work/pki/root.pem")
  for side in client server; do
    sa=$side ports=""
    [ $side = server ] && sa=web ports=8080,8082,5201
    id=$sa.bench.serviceaccount.identity.linkerd.bench.example
    # The identity directory as Linkerd's image entrypoint leaves it before the proxy starts:
    # key.p8 (a P-256 key, PKCS#8 DER) and csr.der (DER, the identity as its DNS SAN).
    dir=$work/l2p-$side
    mkdir -p "$dir/identity"
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/key.pem" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$dir/key.pem" -outform DER -out "$dir/identity/key.p8"
    openssl req -new -key "$dir/key.pem" -subj "/CN=$id" -addext "subjectAltName=DNS:$id" \
      -outform DER -out "$dir/identity/csr.der"
    rm -f "$dir/key.pem"
    # Remora's token (linkerd2-proxy sends the file's bytes, which remora control verifies).
    "$REMORA" control token --config "$work/control.toml" --identity "$id" > "$dir/token"
    chmod 0644 "$dir/token"
    chown -R 2102:2102 "$dir/identity"
    chmod 0700 "$dir/identity"
    # The injector's rendering, expanded as the kubelet would, then the control plane's
    # addresses and names (all three APIs on remora control), the worker count and the log level.
    mapfile -d '' l2p_env < <(jq -j --arg name "$side-l2p-0" --arg ns bench --arg sa $sa \
      --arg ip "${IP[$side-l2p]}" --arg ports "$ports" --arg anchors "$anchors"$'\n' \
      --arg dir "$dir/identity" --arg token "$dir/token" '
      .env[] | select(.[0] | test("^LINKERD2_PROXY_(LOG|CORES|CORES_MIN|CORES_MAX|IDENTITY_LOCAL_NAME|(IDENTITY|DESTINATION|POLICY)_SVC_(ADDR|NAME))$") | not)
      | "\(.[0])=\(.[1] | gsub("\\$\\{POD_NAME\\}"; $name) | gsub("\\$\\{POD_NS\\}"; $ns)
          | gsub("\\$\\{POD_SA\\}"; $sa) | gsub("\\$\\{POD_UID\\}"; "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
          | gsub("\\$\\{POD_IPS?\\}"; $ip) | gsub("\\$\\{POD_PORTS\\}"; $ports)
          | gsub("\\$\\{NODE_NAME\\}"; "node-a") | gsub("\\$\\{TRUST_ANCHORS_PEM\\}"; $anchors)
          | gsub("/var/run/linkerd/identity/end-entity"; $dir)
          | gsub("/var/run/secrets/tokens/linkerd-identity-token"; $token))\u0000"' \
      "$repo/tests/fixtures/linkerd-env/ipv4.json")
    [ "${#l2p_env[@]}" -gt 40 ] || { echo "the Linkerd environment fixture did not render" >&2; exit 1; }
    inns $side-l2p "$REMORA" init >/dev/null
    inns $side-l2p env -i PATH=/usr/bin:/bin "${l2p_env[@]}" \
      LINKERD2_PROXY_LOG="${L2P_LOG:-warn}" \
      LINKERD2_PROXY_CORES=$WORKERS LINKERD2_PROXY_CORES_MIN=$WORKERS LINKERD2_PROXY_CORES_MAX=$WORKERS \
      LINKERD2_PROXY_IDENTITY_LOCAL_NAME=$id \
      LINKERD2_PROXY_IDENTITY_SVC_ADDR=${IP[cp]}:8086 LINKERD2_PROXY_IDENTITY_SVC_NAME=$CP_ID \
      LINKERD2_PROXY_DESTINATION_SVC_ADDR=${IP[cp]}:8086 LINKERD2_PROXY_DESTINATION_SVC_NAME=$CP_ID \
      LINKERD2_PROXY_POLICY_SVC_ADDR=${IP[cp]}:8086 LINKERD2_PROXY_POLICY_SVC_NAME=$CP_ID \
      setpriv --reuid=2102 --regid=2102 --clear-groups -- "$work/linkerd2-proxy" > "$work/l2p-$side.log" 2>&1 &
  done
  for side in client server; do
    ready $side-l2p || { echo "linkerd2-proxy in $side-l2p not ready; its log:" >&2; cat "$work/l2p-$side.log" >&2; pgrep -af "^$work/linkerd2-proxy" >&2; exit 1; }
  done
  for pid in $(pgrep -f "^$work/linkerd2-proxy"); do
    case $(ip netns identify "$pid") in
      $P-client-l2p) PID[linkerd2-proxy-client]=$pid ;;
      $P-server-l2p) PID[linkerd2-proxy-server]=$pid ;;
    esac
  done
  [ -n "${PID[linkerd2-proxy-client]:-}" ] && [ -n "${PID[linkerd2-proxy-server]:-}" ] || { echo "linkerd2-proxy pair not found" >&2; exit 1; }
fi

log "haproxy pair ($WORKERS thread(s) each)"
cat > "$work/haproxy-client.cfg" <<EOF
global
  nbthread $WORKERS
  maxconn $MAXCONN
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend in
  bind 127.0.0.1:10080
  bind 127.0.0.1:10082 proto h2
  default_backend mesh
backend mesh
  server peer ${IP[server-haproxy]}:10443 ssl crt $work/client.pem ca-file $work/pki/root.pem verify required verifyhost server.bench alpn h2
listen opaque
  mode tcp
  bind 127.0.0.1:15201
  server peer ${IP[server-haproxy]}:15443 ssl crt $work/client.pem ca-file $work/pki/root.pem verify required verifyhost server.bench
EOF
cat > "$work/haproxy-server.cfg" <<EOF
global
  nbthread $WORKERS
  maxconn $MAXCONN
  ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend in
  bind :10443 ssl crt $work/server.pem ca-file $work/pki/root.pem verify required alpn h2
  default_backend app
backend app
  server nginx 127.0.0.1:8080
listen opaque
  mode tcp
  bind :15443 ssl crt $work/server.pem ca-file $work/pki/root.pem verify required
  server iperf 127.0.0.1:5201
EOF
inns client-haproxy haproxy -f "$work/haproxy-client.cfg" -D -p "$work/haproxy-client.pid"
inns server-haproxy haproxy -f "$work/haproxy-server.cfg" -D -p "$work/haproxy-server.pid"
PID[haproxy-client]=$(head -1 "$work/haproxy-client.pid")
PID[haproxy-server]=$(head -1 "$work/haproxy-server.pid")
sleep 1

# Where each setup's client sends (ns, HTTP/1 URL, HTTP/2 URL, iperf host port).
declare -A NSOF=([direct]=client-direct [remora]=client-remora [haproxy]=client-haproxy [linkerd2-proxy]=client-l2p)
declare -A URL=([direct]=http://${IP[server-direct]}:8080/ [remora]=http://10.96.0.10:8080/ [haproxy]=http://127.0.0.1:10080/ [linkerd2-proxy]=http://10.96.0.11:8080/)
declare -A URL2=([direct]=http://${IP[server-direct]}:8082/ [remora]=http://10.96.0.10:8082/ [haproxy]=http://127.0.0.1:10082/ [linkerd2-proxy]=http://10.96.0.11:8082/)
declare -A IPERF=([direct]="${IP[server-direct]} 5201" [remora]="10.96.0.10 5201" [haproxy]="127.0.0.1 15201" [linkerd2-proxy]="10.96.0.11 5201")

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }     # clock ticks
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }  # KiB
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }  # KiB
anon() { awk '/RssAnon/ {print $2}' "/proc/$1/status"; }  # KiB: RSS less file-backed pages (code)
procs() { case $1 in direct) echo;; *) echo "${PID[$1-client]} ${PID[$1-server]}";; esac; }

results=$work/results.jsonl
: > "$results"
emit() { echo "$1" >> "$results"; }

oha_json() { local n=$1; shift; inns "$n" "$OHA" --no-tui --output-format json "$@" 2>/dev/null; }

# Warm up every path (connections, certificates, discovery).
for s in $SETUPS; do oha_json ${NSOF[$s]} -z 2s -c 4 "${URL[$s]}" >/dev/null || true; done
# The linkerd2-proxy path is meshed: its server proxy admitted the warm-up over mTLS from the
# client's identity (else the figures would measure something else).
if [ -n "$L2P" ]; then
  inns server-l2p bash -c "exec 3<>/dev/tcp/127.0.0.1/4191 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3" \
    > "$work/l2p-server.metrics" 2>/dev/null || true
  grep -q '^inbound_http_authz_allow_total{.*target_port="8080".*tls="true",client_id="client\.bench\.serviceaccount\.identity\.linkerd\.bench\.example"' \
    "$work/l2p-server.metrics" || { echo "linkerd2-proxy: the warm-up did not reach the server proxy over mTLS; logs:" >&2; cat "$work"/l2p-*.log >&2; exit 1; }
fi

for s in $SETUPS; do
  for p in $(procs $s); do emit "{\"setup\":\"$s\",\"scenario\":\"idle_rss\",\"pid\":$p,\"rss_kib\":$(rss $p),\"anon_kib\":$(anon $p)}"; done
done

# SCENARIOS=hold keeps the topology up for HOLD seconds, to drive and profile it by hand.
if want hold; then
  log "holding for ${HOLD:-600}s: namespaces ${P}-*, remora proxies ${PID[remora-client]} ${PID[remora-server]}, remora URL ${URL[remora]}"
  sleep "${HOLD:-600}"
fi

want rate && log "fixed rates: $RATES rps, $DURATION each, open loop with latency correction"
want rate && for rate in $RATES; do
  for s in $SETUPS; do
    before=0; for p in $(procs $s); do before=$((before + $(cpu $p))); done
    j=$(oha_json ${NSOF[$s]} -z "$DURATION" -q "$rate" --latency-correction -c 64 "${URL[$s]}")
    after=0; for p in $(procs $s); do after=$((after + $(cpu $p))); done
    peak=0; for p in $(procs $s); do h=$(hwm $p); [ "$h" -gt "$peak" ] && peak=$h; done
    an=0; for p in $(procs $s); do h=$(anon $p); [ "$h" -gt "$an" ] && an=$h; done
    emit "$(echo "$j" | jq -c --arg s $s --argjson r $rate --argjson cpu $((after - before)) --argjson hwm $peak --argjson anon $an \
      '{setup:$s, scenario:"rate", rate:$r, rps:.summary.requestsPerSec, ok:(.statusCodeDistribution["200"] // 0),
        total:((.statusCodeDistribution | add) // 0), p50:.latencyPercentiles.p50, p90:.latencyPercentiles.p90,
        p99:.latencyPercentiles.p99, p999:.latencyPercentiles["p99.9"], max:.summary.slowest,
        cpu_ticks:$cpu, peak_rss_kib:$hwm, anon_kib:$anon}')"
  done
done

want max && log "maximum rate: closed loop, 64 connections"
want max && for s in $SETUPS; do
  perf_pids=()
  if [ "$PERF" = 1 ] && [ $s = remora ]; then
    for side in client server; do
      perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "${PID[remora-$side]}" \
        -o "$out/perf-$side.data" -- sleep "${DURATION%s}" >/dev/null 2>&1 &
      perf_pids+=($!)
    done
  fi
  j=$(oha_json ${NSOF[$s]} -z "$DURATION" -c 64 "${URL[$s]}")
  for p in "${perf_pids[@]}"; do wait "$p" || true; done
  emit "$(echo "$j" | jq -c --arg s $s '{setup:$s, scenario:"max", rps:.summary.requestsPerSec, p50:.latencyPercentiles.p50, p99:.latencyPercentiles.p99}')"
done

want new_conn && log "a new connection per request (16 concurrent)"
want new_conn && for s in $SETUPS; do
  j=$(oha_json ${NSOF[$s]} -z "$DURATION" -c 16 --disable-keepalive "${URL[$s]}")
  emit "$(echo "$j" | jq -c --arg s $s '{setup:$s, scenario:"new_conn", rps:.summary.requestsPerSec, p50:.latencyPercentiles.p50, p99:.latencyPercentiles.p99, errors:(.errorDistribution | length)}')"
done

want h2 && log "HTTP/2, one connection, 100 concurrent streams"
want h2 && for s in $SETUPS; do
  j=$(oha_json ${NSOF[$s]} -z "$DURATION" --http2 -c 1 -p 100 "${URL2[$s]}")
  emit "$(echo "$j" | jq -c --arg s $s '{setup:$s, scenario:"h2_100", rps:.summary.requestsPerSec, p50:.latencyPercentiles.p50, p99:.latencyPercentiles.p99}')"
done

want bulk && log "opaque TCP bulk transfer (iperf3, 10 s): 1 and 8 streams"
want bulk && for s in $SETUPS; do
  for streams in 1 8; do
    read -r h port <<< "${IPERF[$s]}"
    j=$(inns ${NSOF[$s]} iperf3 -c "$h" -p "$port" -t 10 -P $streams -J 2>/dev/null || echo '{}')
    emit "$(echo "$j" | jq -c --arg s $s --argjson n $streams '{setup:$s, scenario:"bulk", streams:$n, gbytes_per_s:((.end.sum_received.bits_per_second // 0) / 8e9)}')"
  done
done

want idle && log "$IDLE_CONNS idle connections through each proxy pair"
want idle && for s in $PROXIES; do
  pids=$(procs $s)
  declare -A RSS0=()
  before=0; for p in $pids; do RSS0[$p]=$(rss $p); before=$((before + ${RSS0[$p]})); done
  target=${URL[$s]#http://}; target=${target%/}
  inns ${NSOF[$s]} python3 - "$target" "$IDLE_CONNS" > "$work/idle-$s.out" <<'PY' &
import resource, socket, sys, time
n = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
host, port = sys.argv[1].rsplit(":", 1)
socks = []
for i in range(n):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
    socks.append(s)
ok = sum(s.recv(4096).startswith(b"HTTP/1.1 200") for s in socks)
print("open", ok, flush=True)
time.sleep(30)
PY
  holder=$!
  # Measured once every connection has had its response, and after Remora's trimming thread
  # (alloc/src/lib.rs, every 5 s) has had a turn: what the burst freed is not an idle
  # connection's cost. HAProxy's figure is taken the same way.
  for _ in $(seq 600); do grep -q open "$work/idle-$s.out" 2>/dev/null && break; sleep 0.1; done
  sleep 7
  after=0
  for p in $pids; do
    r=$(rss $p); after=$((after + r))
    emit "{\"setup\":\"$s\",\"scenario\":\"idle_conns_proc\",\"pid\":$p,\"conns\":$IDLE_CONNS,\"rss_delta_kib\":$((r - ${RSS0[$p]})),\"rss_kib\":$r}"
  done
  ok=$(awk '/^open/ {print $2}' "$work/idle-$s.out"); ok=${ok:-0}
  emit "{\"setup\":\"$s\",\"scenario\":\"idle_conns\",\"conns\":$IDLE_CONNS,\"ok\":$ok,\"rss_delta_kib\":$((after - before)),\"rss_kib\":$after}"
  wait $holder 2>/dev/null || true
done

mkdir -p "$out"
cp "$results" "$out/results.jsonl"
python3 "$here/report.py" "$out/results.jsonl" "$out" "$WORKERS" "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
log "done: $out/report.md, $out/added-latency.svg"
