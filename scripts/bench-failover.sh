#!/usr/bin/env bash
# How soon a write succeeds again after kill -9 of the active leader under load
# (issue 14's target: within 3 s; the median and the max over the trials).
#
#   scripts/bench-failover.sh [TRIALS] [CLIENTS]    (default: 20 8)
#
# It starts 3 standby leaders (--peer) and 3 followers of the release build (ports
# TPC_PORT.., default 29500). Each trial loads the cluster with `tpc bench` (CLIENTS
# clients, through a standby, which forwards), kills the active leader with -9, and
# then writes through the other two leaders every 20 ms until one write succeeds: the
# time from the kill to that write's answer is the trial's. The killed leader is
# started again and rejoins as a standby before the next trial. Then it stops what it
# started (by PID) and deletes its data.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
trials=${1:-20}
clients=${2:-8}
port=${TPC_PORT:-29500}
bin=${TPC_BIN:-$root/target/release/tpc}
[ -x "$bin" ] || (cd "$root" && cargo build --release --bin tpc >&2)
data=$(mktemp -d "${TMPDIR:-/tmp}/tpc-failover.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT INT TERM

followers=()
for i in 1 2 3; do
  "$bin" --tpc-follower --journal-dir "$data/f$i" --kv-dir "$data/f$i/kv" \
    --port $((port + i)) 2>>"$data/f$i.log" &
  pids+=($!)
  followers+=(--follower "127.0.0.1:$((port + i))")
done
leader_addr() { echo "127.0.0.1:$((port + 10 + $1))"; }
all="$(leader_addr 1),$(leader_addr 2),$(leader_addr 3)"
declare -A lpid
start_leader() {
  local peers=()
  for k in 1 2 3; do [ "$k" = "$1" ] || peers+=(--peer "$(leader_addr "$k")"); done
  "$bin" --tpc-leader --journal-dir "$data/l$1" "${followers[@]}" --port $((port + 10 + $1)) \
    "${peers[@]}" 2>>"$data/l$1.log" &
  lpid[$1]=$!
  pids+=($!)
}
for j in 1 2 3; do start_leader "$j"; done

# active: the index (1-3) of the leader every running leader names active, once they agree.
active() {
  for _ in $(seq 400); do
    local named=() j a
    for j in 1 2 3; do
      a=$("$bin" status --json --timeout 1s --leader "$(leader_addr "$j")" 2>/dev/null \
        | sed -n 's/.*"active_leader": "\(.*\)".*/\1/p' || true)
      named+=("$a")
    done
    if [ -n "${named[0]}" ] && [ "${named[0]}" = "${named[1]}" ] && [ "${named[1]}" = "${named[2]}" ]; then
      for j in 1 2 3; do [ "${named[0]}" = "$(leader_addr "$j")" ] && { echo "$j"; return; }; done
    fi
    sleep 0.05
  done
  echo "bench-failover: the leaders do not agree on an active one; logs in $data" >&2
  exit 1
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

times=()
for t in $(seq 1 "$trials"); do
  a=$(active)
  standby=$(( a % 3 + 1 ))
  "$bin" bench --leader "$(leader_addr "$standby")" --clients "$clients" --seconds 6 \
    --timeout 1s --json >"$data/bench-$t.json" 2>/dev/null &
  bench=$!
  sleep 2
  kill -9 "${lpid[$a]}"
  killed=$(now_ms)
  wait "${lpid[$a]}" 2>/dev/null || true
  others=""
  for j in 1 2 3; do [ "$j" = "$a" ] || others="$others,$(leader_addr "$j")"; done
  n=0
  until "$bin" client --timeout 1s --leader "$(leader_addr $(( n % 2 == 0 ? standby : 6 - a - standby )))" \
      put failover "$t" >/dev/null 2>&1; do
    n=$((n + 1))
    sleep 0.02
  done
  took=$(( $(now_ms) - killed ))
  times+=("$took")
  echo "trial $t: leader $a killed; a write succeeded after $took ms" >&2
  wait "$bench" || true
  start_leader "$a"
  active >/dev/null
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
max=$(echo "$sorted" | tail -1)
echo "failover over $trials trials ($clients clients of load): median ${median} ms, max ${max} ms"
