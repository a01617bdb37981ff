#!/usr/bin/env bash
# Starts a local tpc cluster: N followers (default 3) and a leader, in the foreground.
#
#   scripts/cluster.sh [N] [--replication R] [--leaders L] [--tls] [--fresh] [--data DIR] [--port BASE]
#
# The leader listens on BASE (default 50000), follower i on BASE+i, and the leader's
# live view and metrics on BASE+80. Each key lives on R followers (default 3; with R
# at least N, on every follower). With --leaders L (3 recommended), L leaders elect an
# active one and the others stand by (DESIGN §9): leader j listens on BASE+60+j for
# j >= 2, and serves its live view on BASE+80+j-1. Data lives under
# DIR (default .tpc-cluster in the repository) and survives restarts; --fresh wipes it
# first. Each node's log lines are prefixed with its name. A node that exits is
# reported and the others keep running. Ctrl-C stops the nodes this script started,
# and nothing else. With --tls every connection is mutual TLS (DESIGN §10), with a
# throwaway CA and certificates made by `tpc certs` in DIR/tls (kept with the data).
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

n=3
fresh=0
root=$(cd "$(dirname "$0")/.." && pwd)
data="$root/.tpc-cluster"
base=50000
replication=3
leaders=1
tls=0
while [ $# -gt 0 ]; do
  case "$1" in
    --fresh) fresh=1 ;;
    --tls) tls=1 ;;
    --data) data=${2:?--data needs a directory}; shift ;;
    --port) base=${2:?--port needs a number}; shift ;;
    --replication) replication=${2:?--replication needs a number}; shift ;;
    --leaders) leaders=${2:?--leaders needs a number}; shift ;;
    -h|--help) usage; exit 0 ;;
    ''|*[!0-9]*) echo "cluster.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    *) n=$1 ;;
  esac
  shift
done
if [ "$n" -lt 1 ]; then echo "cluster.sh: need at least one follower" >&2; exit 2; fi
case "$leaders" in ''|*[!0-9]*|0) echo "cluster.sh: --leaders needs a number of at least 1" >&2; exit 2 ;; esac

echo "building the release binary..." >&2
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin tpc
bin="$root/target/release/tpc"

if [ "$fresh" = 1 ]; then rm -rf "$data"; fi
mkdir -p "$data"

pids=()
stop() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop EXIT
stopping=0
trap 'stopping=1' INT TERM

# With --tls, a certificate for each node and for the tools, made once and kept.
if [ "$tls" = 1 ]; then
  case "$data" in *[[:space:]]*) echo "cluster.sh: --tls needs a --data path without spaces" >&2; exit 2 ;; esac
  if [ "$leaders" = 1 ]; then leader_names=leader; else leader_names=$(seq -f 'leader%g' 1 "$leaders"); fi
  for name in client $(seq -f 'f%g' 1 "$n") $leader_names; do
    if [ ! -e "$data/tls/$name.pem" ]; then "$bin" certs --dir "$data/tls" "$name" > /dev/null; fi
  done
fi

# tls_flags NAME: the TLS flags of NAME's certificate (with --tls).
tls_flags() {
  if [ "$tls" = 1 ]; then
    echo "--tls-cert $data/tls/$1.pem --tls-key $data/tls/$1-key.pem --tls-ca $data/tls/ca.pem"
  fi
}

# start NAME ARGS...: runs one node with its output prefixed by its name.
declare -A names
start() {
  local name=$1; shift
  # shellcheck disable=SC2046 # the TLS flags are words without spaces
  "$bin" "$@" --name "$name" $(tls_flags "$name") > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
  names[$!]=$name
}

followers=()
for i in $(seq 1 "$n"); do
  port=$((base + i))
  start "f$i" --tpc-follower --journal-dir "$data/f$i" --kv-dir "$data/f$i/kv" --port "$port"
  followers+=(--follower "127.0.0.1:$port")
done
# leader_port J: where leader J listens.
leader_port() { if [ "$1" = 1 ]; then echo "$base"; else echo $((base + 60 + $1)); fi; }
if [ "$leaders" = 1 ]; then
  start leader --tpc-leader --journal-dir "$data/leader" "${followers[@]}" --port "$base" \
    --http-port "$((base + 80))" --replication "$replication"
  addresses="127.0.0.1:$base"
  about="leader on 127.0.0.1:$base"
else
  all=()
  for j in $(seq 1 "$leaders"); do all+=("127.0.0.1:$(leader_port "$j")"); done
  addresses=$(IFS=,; echo "${all[*]}")
  for j in $(seq 1 "$leaders"); do
    peers=()
    for k in $(seq 1 "$leaders"); do
      if [ "$k" != "$j" ]; then peers+=(--peer "127.0.0.1:$(leader_port "$k")"); fi
    done
    start "leader$j" --tpc-leader --journal-dir "$data/leader$j" "${followers[@]}" \
      --port "$(leader_port "$j")" "${peers[@]}" --http-port "$((base + 80 + j - 1))" \
      --replication "$replication"
  done
  about="$leaders leaders on $addresses (one active, the others standing by)"
fi

client_env=
if [ "$tls" = 1 ]; then
  about="$about, mutual TLS (certificates in $data/tls)"
  client_env="TPC_TLS_CERT=$data/tls/client.pem TPC_TLS_KEY=$data/tls/client-key.pem TPC_TLS_CA=$data/tls/ca.pem"
  client_env="
For the tools, first: export $client_env"
fi

cat >&2 <<MSG

tpc cluster: $about,
$n followers on ports $((base + 1))-$((base + n)), each key on $((replication < n ? replication : n)) of them.
Data: $data (kept across runs; --fresh wipes it).
Live view: http://127.0.0.1:$((base + 80))/   (also /metrics, /healthz)
Status:   $bin status --leader $addresses
Connect:  $bin client --leader $addresses          (interactive shell)
          $bin client --leader $addresses put k v  (one command)
Ctrl-C stops the cluster.$client_env

MSG

# A node that exits (killed, or stopped by an error) is reported; the others keep
# running, so that a cluster with a node down can be watched and used.
set +e
running=("${pids[@]}")
while [ ${#running[@]} -gt 0 ]; do
  wait -n -p exited "${running[@]}"
  status=$?
  if [ "$stopping" = 1 ]; then
    echo; echo "stopping the cluster..." >&2
    exit 0
  fi
  [ -n "${exited:-}" ] || continue
  echo "cluster.sh: ${names[$exited]} exited (status $status); the other nodes keep running (Ctrl-C stops them)" >&2
  left=()
  for pid in "${running[@]}"; do [ "$pid" = "$exited" ] || left+=("$pid"); done
  running=("${left[@]}")
  exited=
done
echo "cluster.sh: every node has exited" >&2
