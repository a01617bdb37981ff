#!/usr/bin/env bash
# Starts a local tpc cluster: N followers (default 3) and a leader, with a console to
# break it on purpose.
#
#   scripts/cluster.sh [N] [--replication R] [--leaders L] [--tls] [--fresh] [--data DIR]
#                      [--port BASE] [--script FILE]
#
# The leader listens on BASE (default 50000), follower i on BASE+i, and the leader's
# live view and metrics on BASE+80. Each key lives on R followers (default 3; with R
# at least N, on every follower). With --leaders L (3 recommended), L leaders elect an
# active one and the others stand by (DESIGN §9): leader j listens on BASE+60+j for
# j >= 2, and serves its live view on BASE+80+j-1. Data lives under DIR (default
# .tpc-cluster in the repository) and survives restarts; --fresh wipes it first. With
# --tls every connection is mutual TLS (DESIGN §10), with a throwaway CA and
# certificates made by `tpc certs` in DIR/tls. Each node's log lines are prefixed with
# its name. A node that exits is reported and the others keep running.
#
# The console (type `help` at the tpc> prompt) kills, starts, restarts, cuts off and
# heals nodes, and adds and removes followers; --script FILE runs its commands in
# order first, one per line (`sleep S` waits; `quit` stops the cluster), so that a
# failure sequence replays the same way every time. Ctrl-C (or `quit`) stops the nodes
# this script started, and nothing else. TPC_BIN runs that binary instead of building.
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

n=3
fresh=0
root=$(cd "$(dirname "$0")/.." && pwd)
data="$root/.tpc-cluster"
base=50000
replication=3
leaders=1
tls=0
script=
while [ $# -gt 0 ]; do
  case "$1" in
    --fresh) fresh=1 ;;
    --tls) tls=1 ;;
    --data) data=${2:?--data needs a directory}; shift ;;
    --port) base=${2:?--port needs a number}; shift ;;
    --replication) replication=${2:?--replication needs a number}; shift ;;
    --leaders) leaders=${2:?--leaders needs a number}; shift ;;
    --script) script=${2:?--script needs a file}; shift ;;
    -h|--help) usage; exit 0 ;;
    ''|*[!0-9]*) echo "cluster.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    *) n=$1 ;;
  esac
  shift
done
if [ "$n" -lt 1 ]; then echo "cluster.sh: need at least one follower" >&2; exit 2; fi
case "$leaders" in ''|*[!0-9]*|0) echo "cluster.sh: --leaders needs a number of at least 1" >&2; exit 2 ;; esac
if [ -n "$script" ] && [ ! -r "$script" ]; then echo "cluster.sh: cannot read --script $script" >&2; exit 2; fi
case "$data" in *[[:space:]]*) echo "cluster.sh: --data needs a path without spaces" >&2; exit 2 ;; esac

if [ -n "${TPC_BIN:-}" ]; then
  bin=$TPC_BIN
else
  echo "building the release binary..." >&2
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin tpc
  bin="$root/target/release/tpc"
fi

if [ "$fresh" = 1 ]; then rm -rf "$data"; fi
mkdir -p "$data"

# Every node by name: its flags, its port, its process (empty when down), and whether
# the console cut it off.
declare -A node_args node_port node_pid node_cut
nodes=()

stop() {
  trap - INT TERM EXIT
  local pids=()
  for name in "${nodes[@]}"; do [ -z "${node_pid[$name]}" ] || pids+=("${node_pid[$name]}"); done
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop EXIT
stopping=0
trap 'stopping=1' INT TERM

# cert NAME: makes NAME's certificate (with --tls), once.
cert() {
  if [ "$tls" = 1 ] && [ ! -e "$data/tls/$1.pem" ]; then
    "$bin" certs --dir "$data/tls" "$1" > /dev/null
  fi
}

# tls_flags NAME: the TLS flags of NAME's certificate (with --tls).
tls_flags() {
  if [ "$tls" = 1 ]; then
    echo "--tls-cert $data/tls/$1.pem --tls-key $data/tls/$1-key.pem --tls-ca $data/tls/ca.pem"
  fi
}

# define NAME PORT ARGS...: a node the console knows, not started yet.
define() {
  local name=$1 port=$2; shift 2
  cert "$name"
  node_args[$name]="$* --name $name $(tls_flags "$name")"
  node_port[$name]=$port
  node_pid[$name]=
  node_cut[$name]=0
  nodes+=("$name")
}

# launch NAME: runs a defined node, its output prefixed by its name. TPC_CUTTABLE
# lets the console cut it off (SIGUSR1) and heal it (SIGUSR2).
launch() {
  local name=$1
  # shellcheck disable=SC2086 # the flags are words without spaces
  TPC_CUTTABLE=1 "$bin" ${node_args[$name]} > >(sed -u "s/^/[$name] /") 2>&1 &
  node_pid[$name]=$!
  node_cut[$name]=0
}

followers=()
for i in $(seq 1 "$n"); do
  port=$((base + i))
  define "f$i" "$port" --tpc-follower --journal-dir "$data/f$i" --kv-dir "$data/f$i/kv" --port "$port"
  followers+=("127.0.0.1:$port")
done
# leader_port J: where leader J listens.
leader_port() { if [ "$1" = 1 ]; then echo "$base"; else echo $((base + 60 + $1)); fi; }
leader_names=()
# define_leaders: (re)defines the leaders over the current followers.
define_leaders() {
  local follower_flags=()
  for f in "${followers[@]}"; do follower_flags+=(--follower "$f"); done
  if [ "$leaders" = 1 ]; then
    [ ${#leader_names[@]} -gt 0 ] || define leader "$base"
    node_args[leader]="--tpc-leader --journal-dir $data/leader ${follower_flags[*]} --port $base
      --http-port $((base + 80)) --replication $replication --name leader $(tls_flags leader)"
    leader_names=(leader)
    return
  fi
  local all=()
  for j in $(seq 1 "$leaders"); do all+=("127.0.0.1:$(leader_port "$j")"); done
  for j in $(seq 1 "$leaders"); do
    local name="leader$j" peers=()
    for k in $(seq 1 "$leaders"); do [ "$k" = "$j" ] || peers+=(--peer "${all[$((k - 1))]}"); done
    [ ${#leader_names[@]} -ge "$leaders" ] || define "$name" "$(leader_port "$j")"
    node_args[$name]="--tpc-leader --journal-dir $data/$name ${follower_flags[*]} --port $(leader_port "$j")
      ${peers[*]} --http-port $((base + 80 + j - 1)) --replication $replication --name $name $(tls_flags "$name")"
  done
  leader_names=()
  for j in $(seq 1 "$leaders"); do leader_names+=("leader$j"); done
}
define_leaders
addresses=$(for name in "${leader_names[@]}"; do printf '127.0.0.1:%s,' "${node_port[$name]}"; done)
addresses=${addresses%,}
if [ "$leaders" = 1 ]; then
  about="leader on $addresses"
else
  about="$leaders leaders on $addresses (one active, the others standing by)"
fi
tool_tls=()
if [ "$tls" = 1 ]; then
  cert client
  about="$about, mutual TLS (certificates in $data/tls)"
  # shellcheck disable=SC2207 # words without spaces
  tool_tls=($(tls_flags client))
fi
for name in "${nodes[@]}"; do launch "$name"; done

tools_env=
if [ "$tls" = 1 ]; then
  tools_env="
For the tools, first: export TPC_TLS_CERT=$data/tls/client.pem TPC_TLS_KEY=$data/tls/client-key.pem TPC_TLS_CA=$data/tls/ca.pem"
fi
cat >&2 <<MSG

tpc cluster: $about,
$n followers on ports $((base + 1))-$((base + n)), each key on $((replication < n ? replication : n)) of them.
Data: $data (kept across runs; --fresh wipes it).
Live view: http://127.0.0.1:$((base + 80))/   (also /metrics, /healthz)
Status:   $bin status --leader $addresses
Connect:  $bin client --leader $addresses          (interactive shell)
          $bin client --leader $addresses put k v  (one command)
Console:  type help at the tpc> prompt. Ctrl-C or quit stops the cluster.$tools_env

MSG

say() { echo "console: $*" >&2; }

# known NAME: whether NAME is a node; says so if not.
known() {
  if [ -n "${1:-}" ] && [ -n "${node_port[$1]+x}" ]; then return 0; fi
  say "no node ${1:-(none given)}; nodes: ${nodes[*]}"
  return 1
}

# wait_listening NAME: until NAME accepts connections (at most 20 s).
wait_listening() {
  local i
  for i in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${node_port[$1]}") 2>/dev/null; then return 0; fi
    if [ -z "${node_pid[$1]}" ] || ! kill -0 "${node_pid[$1]}" 2>/dev/null; then break; fi
    sleep 0.1
  done
  say "$1 is not listening on ${node_port[$1]}"
  return 1
}

# signal_node NAME SIGNAL: true if NAME runs and was sent SIGNAL.
signal_node() {
  if [ -z "${node_pid[$1]}" ]; then say "$1 is down"; return 1; fi
  kill "-$2" "${node_pid[$1]}" 2>/dev/null
}

# halt NAME SIGNAL: stops a running node with SIGNAL and waits for it.
halt() {
  signal_node "$1" "$2" || return 0
  wait "${node_pid[$1]}" 2>/dev/null || true
  node_pid[$1]=
}

tpc_tool() { "$bin" "$@" "${tool_tls[@]}"; }

console_help() {
  cat >&2 <<'HELP'
  status            every node: up, down or cut off; then the leader's `tpc status`
  kill NODE         kill -9 NODE (a crash: no shutdown, nothing flushed)
  stop NODE         stop NODE cleanly (SIGTERM)
  start NODE        start NODE again (its data is kept); waits until it is back (a
                    follower: connected to the leader; a leader: serving)
  restart NODE      stop NODE cleanly, then start it
  cut NODE          cut NODE off the network: its connections fail, both ways
  heal [NODE]       undo cut, for NODE or for every node; waits until they are back
  add               start a new follower and make it a member (the leaders restart
                    with it among their followers, one by one); waits for the change
  remove NODE       take follower NODE out of the members (`tpc members remove`);
                    waits for the change
  members           `tpc members list`
  client ARGS...    `tpc client ARGS` against the leaders, e.g. client put k v
  sleep SECONDS     wait (for scripts)
  help              this list
  quit              stop every node and exit
Nodes: leader (or leader1..L), f1..fN. A node that exits by itself is reported.
HELP
}

console_status() {
  local name state
  for name in "${nodes[@]}"; do
    if [ -z "${node_pid[$name]}" ]; then state=down
    elif [ "${node_cut[$name]}" = 1 ]; then state="up, cut off"
    else state=up
    fi
    printf '  %-9s 127.0.0.1:%-6s %s\n' "$name" "${node_port[$name]}" "$state" >&2
  done
  tpc_tool status --leader "$addresses" --timeout 2s >&2 || true
}

# add_follower: defines and starts f(N+1), restarts the leaders one by one with it
# among their followers, then makes it a member.
add_follower() {
  n=$((n + 1))
  local name="f$n" port=$((base + n))
  if [ "$n" -ge 60 ]; then say "at most 59 followers (leader ports start at BASE+61)"; n=$((n - 1)); return; fi
  define "$name" "$port" --tpc-follower --journal-dir "$data/$name" --kv-dir "$data/$name/kv" --port "$port"
  followers+=("127.0.0.1:$port")
  launch "$name"
  wait_listening "$name" || return 0
  define_leaders
  local leader
  for leader in "${leader_names[@]}"; do
    if [ -n "${node_pid[$leader]}" ]; then
      halt "$leader" TERM
      launch "$leader"
      wait_listening "$leader" || return 0
    fi
  done
  wait_ready
  say "$name started on 127.0.0.1:$port; making it a member"
  tpc_tool members add "127.0.0.1:$port" --leader "$addresses" >&2 && wait_members_settled
}

# wait_ready: until every node listens and the leaders serve (at most 30 s).
wait_ready() {
  local name i
  for name in "${nodes[@]}"; do wait_listening "$name" || return 0; done
  for i in $(seq 1 300); do
    # 0: the probe key's value, 1: absent; both mean the leaders serve.
    if tpc_tool client --leader "$addresses" --timeout 1s get __cluster_probe__ > /dev/null 2>&1 \
      || [ $? = 1 ]; then return 0; fi
    sleep 0.1
  done
  say "the leaders do not serve yet"
}

# wait_back NAME: until NAME is back in the cluster (at most 20 s): a follower is
# connected to the active leader; a leader serves.
wait_back() {
  local i listed
  wait_listening "$1" || return 1
  case "$1" in
    f*) ;;
    *) wait_ready; return 0 ;;
  esac
  for i in $(seq 1 200); do
    listed=$(tpc_tool status --json --leader "$addresses" --timeout 1s 2>/dev/null | tr -d ' \n')
    case "$listed" in *"\"address\":\"127.0.0.1:${node_port[$1]}\",\"connected\":true"*) return 0 ;; esac
    sleep 0.1
  done
  say "the leader has not reconnected to $1"
  return 1
}

# wait_members_settled: until no member is joining or leaving (at most 60 s).
wait_members_settled() {
  local i listed
  for i in $(seq 1 600); do
    listed=$(tpc_tool members list --json --leader "$addresses" --timeout 1s 2>/dev/null) || listed=
    case "$listed" in
      '') ;;
      *'"joining"'*|*'"leaving"'*) ;;
      *) return 0 ;;
    esac
    sleep 0.1
  done
  say "the member change is still under way"
}

# run_command LINE: one console command.
run_command() {
  local words
  read -r -a words <<< "$1"
  [ ${#words[@]} -gt 0 ] || return 0
  local node=${words[1]:-}
  case "${words[0]}" in
    \#*) ;;
    help|'?') console_help ;;
    status) console_status ;;
    kill) if known "$node"; then halt "$node" KILL; say "$node killed"; fi ;;
    stop) if known "$node"; then halt "$node" TERM; say "$node stopped"; fi ;;
    start)
      if known "$node"; then
        if [ -n "${node_pid[$node]}" ]; then say "$node is already up"
        else launch "$node"; wait_back "$node" && say "$node started"; fi
      fi ;;
    restart)
      if known "$node"; then
        halt "$node" TERM; launch "$node"; wait_back "$node" && say "$node restarted"
      fi ;;
    cut)
      if known "$node" && signal_node "$node" USR1; then node_cut[$node]=1; say "$node cut off"; fi ;;
    heal)
      local name
      for name in "${nodes[@]}"; do
        if [ "${node_cut[$name]}" = 1 ] && { [ -z "$node" ] || [ "$node" = "$name" ]; }; then
          signal_node "$name" USR2 && node_cut[$name]=0 && wait_back "$name" && say "$name healed"
        fi
      done ;;
    add) add_follower ;;
    remove)
      if known "$node"; then
        case "$node" in
          f*) tpc_tool members remove "127.0.0.1:${node_port[$node]}" --leader "$addresses" >&2 \
                && wait_members_settled ;;
          *) say "only a follower can be removed from the members" ;;
        esac
      fi ;;
    members) tpc_tool members list --leader "$addresses" >&2 || true ;;
    client) tpc_tool client --leader "$addresses" "${words[@]:1}" || true ;;
    sleep) sleep "${node:-1}" ;;
    quit|exit) stopping=1 ;;
    *) say "unknown command ${words[0]}; type help" ;;
  esac
}

# report_exits: says which nodes exited by themselves since the last look.
report_exits() {
  local name status
  for name in "${nodes[@]}"; do
    local pid=${node_pid[$name]}
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null && status=0 || status=$?
      node_pid[$name]=
      say "$name exited (status $status); the other nodes keep running (start $name brings it back)"
    fi
  done
}

set +e
wait_ready
if [ -n "$script" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    [ "$stopping" = 1 ] && break
    case "$line" in ''|\#*) continue ;; esac
    echo "tpc> $line" >&2
    run_command "$line"
    report_exits
  done < "$script"
fi
interactive=0
if [ -t 0 ]; then interactive=1; fi
prompt=1
while [ "$stopping" = 0 ]; do
  if [ "$interactive" = 1 ]; then
    if [ "$prompt" = 1 ]; then printf 'tpc> ' >&2; prompt=0; fi
    if read -r -t 1 line; then
      run_command "$line"
      prompt=1
    elif [ $? -le 128 ]; then
      stopping=1 # end of input
    fi
  else
    sleep 1
  fi
  report_exits
done
echo >&2; echo "stopping the cluster..." >&2
exit 0
