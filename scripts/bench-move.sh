#!/usr/bin/env bash
# How fast a view change moves keys (DESIGN §8), and what it costs the writes of keys
# that do not move, on a local cluster of the release build.
#
#   scripts/bench-move.sh [KEYS] [VALUE_BYTES] [FOLLOWERS]     (default: 20000 4096 4)
#
# It starts a leader and FOLLOWERS followers (each key on 3 of them, ports TPC_PORT..,
# default 27000; HTTP on +100), writes KEYS keys of VALUE_BYTES each (`tpc bench --op
# get` writes every key first), removes the last follower and waits for the view to
# change (its keys move to the others), then adds it back, empty, while `tpc bench
# --op put` writes 1,000 of the keys (moving or not, as placement has it), and prints: each change's
# duration, the keys the followers wrote from copies and the bytes they received (their
# tpc_catch_up_* metrics: a gainer asks every member in force, so a key arrives from
# each of its old replicas and is written once), and the Put throughput before and
# during the add. It stops what it
# started (by PID) and deletes its data.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
keys=${1:-20000}
value=${2:-4096}
n=${3:-4}
port=${TPC_PORT:-27000}
bin=${TPC_BIN:-$root/target/release/tpc}
[ -x "$bin" ] || (cd "$root" && cargo build --release --bin tpc >&2)
data=$(mktemp -d "${TMPDIR:-/tmp}/tpc-move.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT INT TERM

start_follower() {
  "$bin" --tpc-follower --journal-dir "$data/f$1" --kv-dir "$data/f$1/kv" \
    --port $((port + $1)) --http-port $((port + 100 + $1)) 2>>"$data/f$1.log" &
  fpid[$1]=$!
  pids+=($!)
}
declare -A fpid
followers=()
for i in $(seq 1 "$n"); do
  start_follower "$i"
  followers+=(--follower "127.0.0.1:$((port + i))")
done
"$bin" --tpc-leader --journal-dir "$data/leader" "${followers[@]}" --replication 3 \
  --port "$port" --http-port $((port + 100)) 2>"$data/leader.log" &
pids+=($!)
leader=127.0.0.1:$port
for i in $(seq 0 "$n"); do
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$((port + 100 + i))/healthz" >/dev/null && break
    sleep 0.05
  done
done
epoch() { "$bin" members list --leader "$leader" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["epoch"], d["moving_keys"])'; }
wait_view() { # epoch
  for _ in $(seq 6000); do
    read -r e moving <<<"$(epoch)"
    [ "$e" = "$1" ] && [ "$moving" = 0 ] && return 0
    sleep 0.05
  done
  echo "bench-move.sh: view $1 not in force after 5 minutes" >&2
  exit 1
}
copied() { # the followers' tpc_catch_up_{keys,bytes}_total, summed
  for i in $(seq 1 "$n"); do
    curl -sf "http://127.0.0.1:$((port + 100 + i))/metrics" 2>/dev/null || true
  done | awk '/^tpc_catch_up_keys_total/ { k += $2 } /^tpc_catch_up_bytes_total/ { b += $2 } END { print k + 0, b + 0 }'
}
wait_view 1

echo "loading $keys keys of $value bytes on $n followers (each key on 3)..."
"$bin" bench --leader "$leader" --op get --keyspace "$keys" --value-size "$value" \
  --clients 32 --seconds 1 --json >/dev/null

measure_change() { # verb follower epoch
  read -r k0 b0 <<<"$(copied)"
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" members "$1" "127.0.0.1:$((port + $2))" --leader "$leader" >/dev/null
  wait_view "$3"
  t1=$(date +%s.%N)
  read -r k1 b1 <<<"$(copied)"
  python3 -c "
k, b, s = $k1 - $k0, $b1 - $b0, $t1 - $t0
w = k * $value / 1e6
print(f'$1 f$2: view $3 in force after {s:.2f} s; {k} keys written ({w:.1f} MB of values: {w / s:.1f} MB/s), {b / 1e6:.1f} MB received from all sources ({b / 1e6 / s:.1f} MB/s)')"
}

measure_change remove "$n" 2
kill "${fpid[$n]}"
wait "${fpid[$n]}" 2>/dev/null || true
rm -rf "${data:?}/f$n"
start_follower "$n"
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$((port + 100 + n))/healthz" >/dev/null && break
  sleep 0.05
done
sleep 1 # the leader reconnects and hears the follower's new member id

put_rate() { # seconds: Puts per second to 1,000 of the loaded keys
  "$bin" bench --leader "$leader" --op put --keyspace 1000 --value-size 100 --clients 32 \
    --seconds "$1" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["ops"] / d["seconds"]))'
}
steady=$(put_rate 5)
put_rate 8 >"$data/during" &
bench=$!
sleep 1
add_status=0
until "$bin" members add "127.0.0.1:$((port + n))" --leader "$leader" >/dev/null 2>&1; do
  add_status=$((add_status + 1)); [ "$add_status" -lt 100 ] || exit 1; sleep 0.1
done
read -r k0 b0 <<<"$(copied)"
t0=$(date +%s.%N)
wait_view 3
t1=$(date +%s.%N)
read -r k1 b1 <<<"$(copied)"
wait "$bench"
python3 -c "
k, b, s = $k1 - $k0, $b1 - $b0, $t1 - $t0
w = k * $value / 1e6
print(f'add f$n (empty): view 3 in force after {s:.2f} s; {k} keys written ({w:.1f} MB of values: {w / s:.1f} MB/s), {b / 1e6:.1f} MB received from all sources ({b / 1e6 / s:.1f} MB/s)')"
echo "Puts/s: steady $steady, during the add $(cat "$data/during") (8 s run spanning it)"
