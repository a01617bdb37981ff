#!/usr/bin/env bash
# What one request costs each node of a local cluster: CPU time (user + system, from
# /proc/PID/stat) and journal fsyncs (tpc_journal_fsync_duration_seconds_count, from
# each node's /metrics), divided by the requests `tpc bench` completed.
#
#   scripts/cost-per-write.sh [OP] [CLIENTS] [SECONDS]     (default: put 64 10)
#
# It starts a fresh leader and TPC_FOLLOWERS followers (default 3), each key on
# TPC_REPLICATION of them (default 3, the leader's --replication), from the binary
# TPC_BIN (default target/release/tpc, built if missing), on ports TPC_PORT..
# (default 26000: the leader, then follower i on +i; HTTP on +100), waits until they
# serve and the leader has journaled its view, runs `tpc bench --op OP --clients
# CLIENTS --seconds SECONDS`, prints the requests and errors, one line per node, the
# followers' mean, a total, and the CPU of `tpc bench` itself (outside the total), then
# stops the nodes it started (by PID) and deletes their data. TPC_BIN may be an older
# build, to compare (for one without --replication, set TPC_REPLICATION= to pass none).
# TPC_LEADERS=3 starts three standby leaders instead of one (DESIGN §9; leader j on
# +50+j for j >= 2, HTTP on +100 as well), and loads the active one. TPC_TLS=1 runs
# every connection over mutual TLS (DESIGN §10), with certificates from `tpc certs`.
#
#   TPC_FOLLOWERS=9 TPC_REPLICATION=3 scripts/cost-per-write.sh put 64 10
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
op=${1:-put}
clients=${2:-64}
seconds=${3:-10}
port=${TPC_PORT:-26000}
n=${TPC_FOLLOWERS:-3}
replication=${TPC_REPLICATION-3}
leaders=${TPC_LEADERS:-1}
case "$leaders" in ''|*[!0-9]*|0) echo "cost-per-write.sh: TPC_LEADERS must be a number >= 1" >&2; exit 2 ;; esac
case "$n" in ''|*[!0-9]*|0) echo "cost-per-write.sh: TPC_FOLLOWERS must be a number >= 1" >&2; exit 2 ;; esac
if [ "$n" -gt 99 ]; then echo "cost-per-write.sh: at most 99 followers (HTTP ports are +100)" >&2; exit 2; fi
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
if [ "${TPC_TLS:-0}" = 1 ]; then
  "$bin" certs --dir "$data/tls" node > /dev/null
  # The TLS flags read these, in every node and in the tools.
  export TPC_TLS_CERT="$data/tls/node.pem" TPC_TLS_KEY="$data/tls/node-key.pem" TPC_TLS_CA="$data/tls/ca.pem"
fi

# Node k listens on ports[k] and serves HTTP on ports[k] + 100; leaders first.
names=()
ports=()
if [ "$leaders" = 1 ]; then
  names+=(leader); ports+=("$port")
else
  for j in $(seq 1 "$leaders"); do
    names+=("l$j"); ports+=($([ "$j" = 1 ] && echo "$port" || echo $((port + 50 + j))))
  done
fi
followers=()
for i in $(seq 1 "$n"); do
  names+=("f$i")
  ports+=($((port + i)))
  "$bin" --tpc-follower --journal-dir "$data/f$i" --kv-dir "$data/f$i/kv" \
    --port $((port + i)) --http-port $((port + 100 + i)) 2>"$data/f$i.log" &
  pids+=($!)
  followers+=(--follower "127.0.0.1:$((port + i))")
done
repl=()
[ -z "$replication" ] || repl=(--replication "$replication")
leader_pids=()
all=()
for j in $(seq 1 "$leaders"); do all+=("127.0.0.1:${ports[$((j - 1))]}"); done
for j in $(seq 1 "$leaders"); do
  peers=()
  for k in $(seq 1 "$leaders"); do [ "$k" = "$j" ] || peers+=(--peer "${all[$((k - 1))]}"); done
  lport=${ports[$((j - 1))]}
  "$bin" --tpc-leader --journal-dir "$data/l$j" "${followers[@]}" "${repl[@]}" "${peers[@]}" \
    --port "$lport" --http-port $((lport + 100)) 2>"$data/l$j.log" &
  leader_pids+=($!)
done
pids=("${leader_pids[@]}" "${pids[@]}")
leader_list=$(IFS=,; echo "${all[*]}")

nodes=$(seq 0 $((n + leaders - 1)))
for i in $nodes; do
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$((ports[i] + 100))/healthz" >/dev/null && break
    sleep 0.05
  done
done
# The leader forms its view (epoch 1) once every follower has told its member id;
# before that, with fewer replicas than followers, it writes nothing. Builds without
# `members` are taken as ready.
if "$bin" members list --help >/dev/null 2>&1; then
  epoch=0
  for _ in $(seq 200); do
    epoch=$("$bin" members list --leader "$leader_list" --json 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["epoch"])' 2>/dev/null || echo 0)
    [ "$epoch" -gt 0 ] && break
    sleep 0.05
  done
  [ "$epoch" -gt 0 ] || echo "cost-per-write.sh: the leader formed no view in 10 s; measuring anyway" >&2
fi

# CPU seconds (utime + stime) of a PID, and its journal fsyncs so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
fsyncs() {
  curl -sf "http://127.0.0.1:$1/metrics" |
    awk '/^tpc_journal_fsync_duration_seconds_count/ { n = $2 } END { print n + 0 }'
}
declare -A cpu0 fs0
for i in $nodes; do
  cpu0[$i]=$(cpu "${pids[$i]}")
  fs0[$i]=$(fsyncs $((ports[i] + 100)))
done
# The load generator's own CPU seconds go to $data/client-cpu (it shares the cores).
json=$(python3 -c 'import resource, subprocess, sys
done = subprocess.run(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(str(usage.ru_utime + usage.ru_stime))
sys.exit(done.returncode)' "$data/client-cpu" \
  "$bin" bench --leader "$leader_list" --op "$op" --clients "$clients" \
  --seconds "$seconds" --json)
ops=$(echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["ops"])')
p50=$(echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["latency_us"]["p50"] / 1000)')
errors=$(echo "$json" | python3 -c 'import json,sys; e=json.load(sys.stdin).get("errors") or {}; print(sum(e.values()) if isinstance(e, dict) else e)')
echo "$op, $clients clients, ${seconds}s, $leaders leader(s), $n followers, replication ${replication:-default}: $ops requests, $errors errors (p50 ${p50} ms), $(basename "$bin") $("$bin" --version 2>/dev/null || true)"
printf '%-8s %14s %14s\n' node "CPU us/req" "fsyncs/req"
total_cpu=0
total_fs=0
follower_cpu=0
follower_fs=0
for i in $nodes; do
  c=$(cpu "${pids[$i]}")
  f=$(fsyncs $((ports[i] + 100)))
  read -r us per <<<"$(python3 -c "print(($c - ${cpu0[$i]}) * 1e6 / $ops, ($f - ${fs0[$i]}) / $ops)")"
  printf '%-8s %14.1f %14.3f\n' "${names[$i]}" "$us" "$per"
  total_cpu=$(python3 -c "print($total_cpu + $us)")
  total_fs=$(python3 -c "print($total_fs + $per)")
  if [ "$i" -ge "$leaders" ]; then
    follower_cpu=$(python3 -c "print($follower_cpu + $us)")
    follower_fs=$(python3 -c "print($follower_fs + $per)")
  fi
done
printf '%-8s %14.1f %14.3f\n' "f mean" "$(python3 -c "print($follower_cpu / $n)")" \
  "$(python3 -c "print($follower_fs / $n)")"
printf '%-8s %14.1f %14.3f\n' total "$total_cpu" "$total_fs"
printf '%-8s %14.1f %14s\n' "(bench)" "$(python3 -c "print($(cat "$data/client-cpu") * 1e6 / $ops)")" \
  "not in total"
