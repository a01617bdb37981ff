#!/usr/bin/env bash
# What one request costs each node of a local cluster: CPU time (user + system, from
# /proc/PID/stat) and journal fsyncs (tpc_journal_fsync_duration_seconds_count, from
# each node's /metrics), divided by the requests `tpc bench` completed.
#
#   scripts/cost-per-write.sh [OP] [CLIENTS] [SECONDS]     (default: put 64 10)
#
# It starts a fresh leader and 3 followers (the binary TPC_BIN, default
# target/release/tpc, built if missing) on ports TPC_PORT.. (default 26000; HTTP on
# +100), waits until they serve, runs `tpc bench --op OP --clients CLIENTS --seconds
# SECONDS`, prints one line per node and a total, then stops the nodes it started (by
# PID) and deletes their data. TPC_BIN may be an older build, to compare.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
op=${1:-put}
clients=${2:-64}
seconds=${3:-10}
port=${TPC_PORT:-26000}
bin=${TPC_BIN:-$root/target/release/tpc}
[ -x "$bin" ] || (cd "$root" && cargo build --release --bin tpc >&2)
data=$(mktemp -d "${TMPDIR:-/tmp}/tpc-cost.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT INT TERM

names=(leader f1 f2 f3)
followers=()
for i in 1 2 3; do
  "$bin" --tpc-follower --journal-dir "$data/f$i" --kv-dir "$data/f$i/kv" \
    --port $((port + i)) --http-port $((port + 100 + i)) 2>"$data/f$i.log" &
  pids+=($!)
  followers+=(--follower "127.0.0.1:$((port + i))")
done
"$bin" --tpc-leader --journal-dir "$data/leader" "${followers[@]}" \
  --port "$port" --http-port $((port + 100)) 2>"$data/leader.log" &
pids=("$!" "${pids[@]}")

for i in 0 1 2 3; do
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$((port + 100 + i))/healthz" >/dev/null && break
    sleep 0.05
  done
done

# CPU seconds (utime + stime) of a PID, and its journal fsyncs so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
fsyncs() {
  curl -sf "http://127.0.0.1:$1/metrics" |
    awk '/^tpc_journal_fsync_duration_seconds_count/ { n = $2 } END { print n + 0 }'
}
declare -A cpu0 fs0
for i in 0 1 2 3; do
  cpu0[$i]=$(cpu "${pids[$i]}")
  fs0[$i]=$(fsyncs $((port + 100 + i)))
done
json=$("$bin" bench --leader "127.0.0.1:$port" --op "$op" --clients "$clients" \
  --seconds "$seconds" --json)
ops=$(echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["ops"])')
p50=$(echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["latency_us"]["p50"] / 1000)')
echo "$op, $clients clients, ${seconds}s: $ops requests (p50 ${p50} ms), $(basename "$bin") $("$bin" --version 2>/dev/null || true)"
printf '%-8s %14s %14s\n' node "CPU us/req" "fsyncs/req"
total_cpu=0
total_fs=0
for i in 0 1 2 3; do
  c=$(cpu "${pids[$i]}")
  f=$(fsyncs $((port + 100 + i)))
  read -r us per <<<"$(python3 -c "print(($c - ${cpu0[$i]}) * 1e6 / $ops, ($f - ${fs0[$i]}) / $ops)")"
  printf '%-8s %14.1f %14.3f\n' "${names[$i]}" "$us" "$per"
  total_cpu=$(python3 -c "print($total_cpu + $us)")
  total_fs=$(python3 -c "print($total_fs + $per)")
done
printf '%-8s %14.1f %14.3f\n' total "$total_cpu" "$total_fs"
