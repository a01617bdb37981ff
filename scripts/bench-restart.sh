#!/usr/bin/env bash
# How long a follower of a loaded cluster takes to serve again after a restart (issue
# 13's target: 9 followers, 1,000,000 keys, within 2 s).
#
#   scripts/bench-restart.sh [KEYS] [FOLLOWERS] [VALUE_BYTES]    (default: 1000000 9 16)
#
# It starts a leader and FOLLOWERS followers of the release build (each key on 3; ports
# TPC_PORT.., default 29000, HTTP on +100), writes KEYS keys (`tpc bench --op get`
# writes every key once first), stops follower 1 (SIGTERM) and starts it again, and
# prints how long it took from the start to its health check answering SERVING and to
# its first direct read of a key it holds. Then it stops what it started (by PID) and
# deletes its data.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
keys=${1:-1000000}
n=${2:-9}
value=${3:-16}
port=${TPC_PORT:-29000}
bin=${TPC_BIN:-$root/target/release/tpc}
[ -x "$bin" ] || (cd "$root" && cargo build --release --bin tpc >&2)
data=$(mktemp -d "${TMPDIR:-/tmp}/tpc-restart.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT INT TERM

declare -A fpid
start_follower() {
  "$bin" --tpc-follower --journal-dir "$data/f$1" --kv-dir "$data/f$1/kv" \
    --port $((port + $1)) --http-port $((port + 100 + $1)) 2>>"$data/f$1.log" &
  fpid[$1]=$!
  pids+=($!)
}
followers=()
for i in $(seq 1 "$n"); do
  start_follower "$i"
  followers+=(--follower "127.0.0.1:$((port + i))")
done
"$bin" --tpc-leader --journal-dir "$data/leader" "${followers[@]}" --replication 3 \
  --port "$port" --http-port $((port + 100)) 2>"$data/leader.log" &
pids+=($!)
for i in $(seq 0 "$n"); do
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$((port + 100 + i))/healthz" >/dev/null && break
    sleep 0.05
  done
done
sleep 1
echo "writing $keys keys of $value bytes to $n followers (each key on 3)..."
"$bin" bench --leader "127.0.0.1:$port" --op get --keyspace "$keys" --value-size "$value" \
  --clients 64 --seconds 1 --json >/dev/null
held=$(find "$data/f1/kv" -maxdepth 1 -name 'v*' | wc -l)
# A key follower 1 holds: any key file name, decoded (bench keys are `bench-N`).
key=$(find "$data/f1/kv" -maxdepth 1 -name 'vbench_2d*' -print -quit | sed 's/.*vbench_2d/bench-/')
echo "follower 1 holds $held keys; restarting it"
kill "${fpid[1]}"
wait "${fpid[1]}" 2>/dev/null || true
t0=$(date +%s.%N)
start_follower 1
until curl -sf "http://127.0.0.1:$((port + 101))/healthz" >/dev/null; do sleep 0.01; done
t1=$(date +%s.%N)
until "$bin" client --leader "127.0.0.1:$((port + 1))" get "$key" >/dev/null 2>&1; do sleep 0.01; done
t2=$(date +%s.%N)
python3 -c "print(f'healthy after {$t1 - $t0:.2f} s; served a direct read of {\"$key\"} after {$t2 - $t0:.2f} s')"
