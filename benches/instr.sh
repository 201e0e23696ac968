#!/usr/bin/env bash
# Instructions per proxied request through an in-process proxy pair (W2.10), counted by
# valgrind (callgrind), which the machine's load does not move: see benches/benches/http_pair.rs
# (`REMORA_BENCH_REQUESTS`) for what is counted and how the client and app cancel out.
#
#   benches/instr.sh                 # h1, h2, new_conn and h1_policy; N1=200 N2=1200 requests
#   KINDS="h1" N1=100 N2=600 benches/instr.sh
#   REPEAT=3 KINDS="h1 h2" benches/instr.sh   # three runs per kind, then their median
#
# A kind ending in `_policy` (`h1_policy`) runs with both proxies following the control plane's
# policies (REMORA_BENCH_POLICY: outbound policy routes, inbound servers and authorizations), as
# under Linkerd's control plane. A kind ending in `_log` (`h1_log`) installs the proxies' logging
# with the filter Linkerd's injector gives a proxy by default (REMORA_BENCH_LOG; LOG_FILTER
# overrides it); the other kinds install none.
#
# Prints one line per kind and run: instructions per request for the pair (both proxies), and for
# the client and app alone; with REPEAT=k (k > 1), k runs per kind and then their median and
# spread, which compare builds better than one run (timers move single counts by a few
# thousand). BENCH=<path> counts a given http_pair binary (an earlier commit's).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KINDS=${KINDS:-"h1 h2 new_conn h1_policy"}
N1=${N1:-200}
N2=${N2:-1200}
REPEAT=${REPEAT:-1}
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "REPEAT must be a positive count" >&2; exit 64; }
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 64; }
if [ -z "${BENCH:-}" ]; then
  BENCH=$(cd "$here/.." && cargo bench -q -p remora-benches --bench http_pair --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "http_pair" and m.get("executable"):
        print(m["executable"])' | tail -1)
fi
[ -x "$BENCH" ] || { echo "no http_pair bench binary" >&2; exit 1; }
LOG_FILTER=${LOG_FILTER:-"warn,remora=info,hickory=error"}
instr() {  # kind path n → total instructions
  local kind=$1 extra=()
  while :; do
    case $kind in
      *_policy) extra+=(REMORA_BENCH_POLICY=1) kind=${kind%_policy} ;;
      *_log) extra+=(REMORA_BENCH_LOG="$LOG_FILTER") kind=${kind%_log} ;;
      *) break ;;
    esac
  done
  env "${extra[@]}" REMORA_BENCH_REQUESTS="$3" REMORA_BENCH_KIND="$kind" REMORA_BENCH_PATH="$2" \
    REMORA_LOG=off valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BENCH" 2>&1 |
    awk '/Collected :/ {print $NF}'
}
for kind in $KINDS; do
  runs=()
  for ((r = 0; r < REPEAT; r++)); do
    p1=$(instr "$kind" pair "$N1"); p2=$(instr "$kind" pair "$N2")
    d1=$(instr "$kind" direct "$N1"); d2=$(instr "$kind" direct "$N2")
    runs+=("$p1,$p2,$d1,$d2")
  done
  python3 - "$kind" "$N1" "$N2" "${runs[@]}" <<'PY'
import statistics, sys
kind, n1, n2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = n2 - n1
proxies, pairs, directs = [], [], []
for run in sys.argv[4:]:
    p1, p2, d1, d2 = map(int, run.split(","))
    pair, direct = (p2 - p1) / n, (d2 - d1) / n
    print(f"{kind}: {pair - direct:,.0f} instructions per request in the proxies "
          f"(pair {pair:,.0f}, client and app alone {direct:,.0f}; n = {n1} and {n2})")
    proxies.append(pair - direct); pairs.append(pair); directs.append(direct)
if len(proxies) > 1:
    # Timers that fire per unit of time move single counts by a few thousand (BENCHMARKS.md,
    # stop 37): the median of several runs, and their spread, compare builds.
    med = statistics.median
    print(f"{kind}: median {med(proxies):,.0f} instructions per request in the proxies "
          f"(min {min(proxies):,.0f}, max {max(proxies):,.0f}; pair median {med(pairs):,.0f}, "
          f"client and app alone median {med(directs):,.0f}; {len(proxies)} runs)")
PY
done
