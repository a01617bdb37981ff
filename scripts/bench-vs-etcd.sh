#!/usr/bin/env bash
# Measures tpc against etcd on this machine with anchor-bench, and prints the ratio.
#
#   scripts/bench-vs-etcd.sh [WORKLOAD...]
#   scripts/bench-vs-etcd.sh --report RESULTS_DIR    (re-print the tables of a past run)
#
# A WORKLOAD is OP:CLIENTS with OP put, get or mixed (default: put:1 put:64 get:64).
# For each workload and each round the script starts a FRESH 3-member etcd cluster
# (default durability: fsync on every commit), runs anchor-bench against its leader
# member, stops it, then starts a FRESH tpc cluster (leader + 3 followers, TCP on
# loopback) and runs the identical workload against the tpc leader, then stops it.
# The order flips every round (etcd first, then tpc first, ...) so that drift in the
# machine's speed does not favour one side. At the end it prints markdown tables: the
# medians over the rounds (and over only the runs that started on a quiet machine, if
# some did not), the per-round values, and the leaders' peak RSS (VmHWM).
#
# Environment (all optional):
#   ROUNDS=3              rounds per workload
#   SECONDS_PER_RUN=10    anchor-bench --seconds
#   VALUE_SIZE=100        bytes per value
#   KEYSPACE=1000         distinct keys (get/mixed runs preload them all first; this
#                         is done by anchor-bench itself and is not timed)
#   WORKLOADS="put:1 put:64 get:64"   same as the arguments (arguments win)
#   RESULTS_DIR=DIR       where raw outputs, logs and the summary go (default: a new
#                         temporary directory; its path is printed)
#   ANCHOR_BENCH=PATH     the anchor-bench binary; default: built from
#                         ../shared/anchor-bench into ${TMPDIR:-/tmp}/anchor-target
#   ANCHOR_BENCH_SRC=DIR  anchor-bench's source (default: ../shared/anchor-bench)
#   TPC_BIN=PATH          the tpc binary; default: `cargo build --release --bin tpc`
#   TPC_PORT=25000        tpc leader port; follower i listens on TPC_PORT+i (below
#                         Linux's ephemeral range, 32768-60999: a port in it can be
#                         taken by any outgoing connection, such as the load's)
#   KEEP_DATA=1           keep the etcd/tpc data directories (default: deleted when
#                         the script ends, not between runs)
#   QUIET_PCT=25 QUIET_WRITES=20 QUIET_WAIT=60   before each run, wait up to QUIET_WAIT
#                         seconds for the machine to be quiet: other work using at most
#                         QUIET_PCT% of all cores and at most QUIET_WRITES disk writes/s
#                         (sampled over 1 s); then run anyway, and say so in the report.
# etcd uses the ports of ../shared/anchor-bench/etcd-cluster.sh: client 12379, 22379,
# 32379 and peer 12380, 22380, 32380. The script refuses to start if any port is busy.
# Needs: etcd and etcdctl (apt-get install -y etcd-server etcd-client), protoc to build
# anchor-bench (apt-get install -y protobuf-compiler).
#
# Every process the script starts is stopped by its PID when it exits (also on Ctrl-C).
# Only one instance runs at a time (a lock in ${TMPDIR:-/tmp}); a second one waits.
set -euo pipefail

usage() { sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-3}
seconds=${SECONDS_PER_RUN:-10}
value_size=${VALUE_SIZE:-100}
keyspace=${KEYSPACE:-1000}
tpc_port=${TPC_PORT:-25000}
quiet_pct=${QUIET_PCT:-25}
quiet_wait=${QUIET_WAIT:-60}
quiet_writes=${QUIET_WRITES:-20}
followers=3
cores=$(nproc)
if [ $# -gt 0 ] && [ "$1" != --report ]; then workloads=("$@"); else read -r -a workloads <<<"${WORKLOADS:-put:1 put:64 get:64}"; fi
for w in "${workloads[@]}"; do
  ok=1
  case "$w" in
    put:*|get:*|mixed:*) case "${w#*:}" in ''|0|*[!0-9]*) ok=0 ;; esac ;;
    *) ok=0 ;;
  esac
  if [ "$ok" = 0 ]; then
    echo "bench-vs-etcd: bad workload '$w' (want OP:CLIENTS, OP put|get|mixed, CLIENTS >= 1)" >&2
    exit 2
  fi
done
for v in rounds seconds value_size keyspace tpc_port quiet_pct quiet_wait quiet_writes; do
  case "${!v}" in ''|*[!0-9]*) echo "bench-vs-etcd: $v must be a number, got '${!v}'" >&2; exit 2 ;; esac
done

log() { echo "[bench-vs-etcd $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# median WORKLOAD TARGET COLUMN [quiet]: median over the rounds that did not fail ("-"
# if none); with "quiet", only over the runs that started on a quiet machine.
median() {
  awk -F'\t' -v w="$1" -v t="$2" -v c="$3" -v q="${4:-}" -v qc="$quiet_pct" -v qw="$quiet_writes" \
    'NR > 1 && $1 == w && $3 == t && $c != "FAIL" && (q == "" || ($10 <= qc && $11 <= qw)) {print $c}' \
    "$summary" | sort -n \
    | awk '{v[NR] = $1} END {
        if (NR == 0) {print "-"; exit}
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.0f\n", m }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f\n", a / b }'; }
ms() { awk -v u="$1" 'BEGIN { if (u == "-") print "-"; else printf "%.2f ms\n", u / 1000 }'; }
mib() { awk -v k="$1" 'BEGIN { if (k == "-") print "-"; else printf "%.1f MiB\n", k / 1024 }'; }
pairs() { # pairs WORKLOAD TARGET: per-round "CPU%/writes" of other work before the run
  awk -F'\t' -v w="$1" -v t="$2" 'NR > 1 && $1 == w && $3 == t {printf "%s%s%%/%s", sep, $10, $11; sep = ", "}' "$summary"
}
values() { # values WORKLOAD TARGET COLUMN: the per-round values, comma-separated
  awk -F'\t' -v w="$1" -v t="$2" -v c="$3" 'NR > 1 && $1 == w && $3 == t {printf "%s%s", sep, $c; sep = ", "}' "$summary"
}
errors() { # errors WORKLOAD: failed requests over all runs, and runs that failed outright
  awk -F'\t' -v w="$1" 'NR > 1 && $1 == w { if ($7 == "FAIL") f++; else n += $7 }
    END { printf "%d%s\n", n, f ? " (+" f " failed runs)" : "" }' "$summary"
}

quiet_runs() { # quiet_runs WORKLOAD TARGET: how many runs started on a quiet machine
  awk -F'\t' -v w="$1" -v t="$2" -v qc="$quiet_pct" -v qw="$quiet_writes" \
    'NR > 1 && $1 == w && $3 == t && $4 != "FAIL" && $10 <= qc && $11 <= qw {n++} END {print n + 0}' "$summary"
}

# report: writes $results/summary.md from $results/runs.tsv, and prints it.
report() {
  local w eo to ep tp noisy
  summary=$results/runs.tsv
  {
    echo "### tpc vs etcd (anchor-bench, ${seconds}s runs, ${value_size}-byte values, ${keyspace} keys, median of $rounds rounds)"
    echo
    echo "| workload | etcd ops/s | tpc ops/s | ratio tpc/etcd | etcd p50 | tpc p50 | ratio tpc/etcd p50 | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for w in "${workloads[@]}"; do
      eo=$(median "$w" etcd 4); to=$(median "$w" tpc 4)
      ep=$(median "$w" etcd 5); tp=$(median "$w" tpc 5)
      echo "| ${w%%:*} ${w#*:} client$([ "${w#*:}" = 1 ] || echo s) | $eo | $to | $(ratio "$to" "$eo") | $(ms "$ep") | $(ms "$tp") | $(ratio "$tp" "$ep") | $(errors "$w") |"
    done
    echo
    echo "p50 ratio > 1 means tpc's median latency is higher. Per-round values:"
    echo
    echo "| workload | etcd ops/s | tpc ops/s | etcd p50 us | tpc p50 us | etcd p99 us | tpc p99 us | other work before: CPU %, writes/s (etcd; tpc) |"
    echo "|---|---|---|---|---|---|---|---|"
    for w in "${workloads[@]}"; do
      echo "| $w | $(values "$w" etcd 4) | $(values "$w" tpc 4) | $(values "$w" etcd 5) | $(values "$w" tpc 5) | $(values "$w" etcd 6) | $(values "$w" tpc 6) | $(pairs "$w" etcd); $(pairs "$w" tpc) |"
    done
    noisy=$(awk -F'\t' -v c="$quiet_pct" -v w="$quiet_writes" 'NR > 1 && ($10 > c || $11 > w) {n++} END {print n + 0}' "$summary")
    echo
    echo "Other work = share of all $cores cores busy, and writes/s to $disk, in the second before each run."
    if [ "$noisy" -gt 0 ]; then
      echo "Warning: $noisy runs started while other work exceeded ${quiet_pct}% CPU or ${quiet_writes} writes/s:"
      echo "it competed for CPU and disk, so those figures are low and noisy. Medians over only the"
      echo "runs that started quiet (n = how many, etcd/tpc):"
      echo
      echo "| workload | n | etcd ops/s | tpc ops/s | ratio tpc/etcd | etcd p50 | tpc p50 | ratio tpc/etcd p50 |"
      echo "|---|---|---:|---:|---:|---:|---:|---:|"
      for w in "${workloads[@]}"; do
        eo=$(median "$w" etcd 4 quiet); to=$(median "$w" tpc 4 quiet)
        ep=$(median "$w" etcd 5 quiet); tp=$(median "$w" tpc 5 quiet)
        echo "| $w | $(quiet_runs "$w" etcd)/$(quiet_runs "$w" tpc) | $eo | $to | $(ratio "$to" "$eo") | $(ms "$ep") | $(ms "$tp") | $(ratio "$tp" "$ep") |"
      done
    fi
    echo
    echo "Leader peak RSS (VmHWM at the end of each run; median, per-round values):"
    echo
    echo "| workload | tpc leader | etcd leader member |"
    echo "|---|---|---|"
    for w in "${workloads[@]}"; do
      echo "| $w | $(mib "$(median "$w" tpc 8)") ($(values "$w" tpc 8) kB) | $(mib "$(median "$w" etcd 8)") ($(values "$w" etcd 8) kB) |"
    done
  } >"$results/summary.md"
  echo
  cat "$results/summary.md"
  echo
  echo "Raw outputs, server logs and runs.tsv: $results"
}

# settings the report needs, for --report
write_settings() {
  {
    echo "workloads=${workloads[*]}"
    for v in rounds seconds value_size keyspace quiet_pct quiet_writes disk cores; do echo "$v=${!v}"; done
  } >"$results/settings"
}
read_settings() {
  local k v
  while IFS='=' read -r k v; do
    case "$k" in
      workloads) read -r -a workloads <<<"$v" ;;
      rounds|seconds|value_size|keyspace|quiet_pct|quiet_writes|disk|cores) printf -v "$k" '%s' "$v" ;;
    esac
  done <"$results/settings"
}
if [ "${1:-}" = --report ]; then
  results=${2:?--report needs the results directory}
  if [ ! -f "$results/runs.tsv" ] || [ ! -f "$results/settings" ]; then die "no runs.tsv and settings in $results"; fi
  read_settings
  report
  exit 0
fi

command -v etcd >/dev/null || die "etcd not found: apt-get install -y etcd-server"
command -v etcdctl >/dev/null || die "etcdctl not found: apt-get install -y etcd-client"
export ETCDCTL_API=3

# --- one run at a time -------------------------------------------------------------
# Two instances would share the ports and compete for CPU and disk: the second waits.
command -v flock >/dev/null || die "flock not found (util-linux)"
lock=${TMPDIR:-/tmp}/bench-vs-etcd.lock
exec 9>>"$lock" # (closed in the processes started below: 9>&-)
if ! flock -n 9; then
  log "another bench-vs-etcd is running (lock $lock); waiting for it to finish"
  flock 9
fi

# --- scratch space, results, cleanup -------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-vs-etcd.XXXXXX")
results=${RESULTS_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bench-vs-etcd-results.XXXXXX")}
mkdir -p "$results/raw" "$results/logs"

pids=()      # every process started and not yet stopped
etcd_pids=() # the running etcd members (also in pids)

# stop PID...: SIGTERM, up to 15 s to exit, then SIGKILL; reaps them.
stop() {
  local pid state i
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for pid in "$@"; do
    for ((i = 0; i < 150; i++)); do
      # A child that has exited but is not reaped yet is a zombie (state Z).
      state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
      [ -z "$state" ] || [ "$state" = Z ] && break
      sleep 0.1
    done
    if [ "$i" = 150 ]; then
      log "pid $pid ignored SIGTERM for 15 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}
alive() { # alive PID...: true if every one is running (not exited, not a zombie)
  local pid state
  for pid in "$@"; do
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    if [ -z "$state" ] || [ "$state" = Z ]; then return 1; fi
  done
}
forget() { # forget PID...: drop from the list of running processes
  local keep=() p q drop
  for p in "${pids[@]}"; do
    drop=0
    for q in "$@"; do [ "$p" = "$q" ] && drop=1; done
    [ "$drop" = 1 ] || keep+=("$p")
  done
  pids=("${keep[@]}")
}
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ ${#etcd_pids[@]} -gt 0 ]; then { kill -KILL "${etcd_pids[@]}"; } 2>/dev/null || true; fi
  if [ ${#pids[@]} -gt 0 ]; then { stop "${pids[@]}"; } 2>/dev/null; fi
  if [ "${KEEP_DATA:-0}" = 1 ]; then log "data kept in $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
require_free_ports() {
  local p
  for p in "$@"; do
    if port_busy "$p"; then die "port $p is in use (another etcd or tpc running?)"; fi
  done
}

# --- binaries ---------------------------------------------------------------------
if [ -n "${ANCHOR_BENCH:-}" ]; then
  bench=$ANCHOR_BENCH
else
  src=${ANCHOR_BENCH_SRC:-$root/../shared/anchor-bench}
  [ -f "$src/Cargo.toml" ] || die "anchor-bench source not found at $src (set ANCHOR_BENCH or ANCHOR_BENCH_SRC)"
  command -v protoc >/dev/null || die "protoc not found: apt-get install -y protobuf-compiler"
  target_dir="${TMPDIR:-/tmp}/anchor-target"
  log "building anchor-bench into $target_dir"
  CARGO_TARGET_DIR=$target_dir cargo build --release --quiet --manifest-path "$src/Cargo.toml"
  bench=$target_dir/release/anchor-bench
fi
[ -x "$bench" ] || die "anchor-bench binary not executable: $bench"

if [ -n "${TPC_BIN:-}" ]; then
  tpc_src=$TPC_BIN
else
  log "building tpc (cargo build --release --bin tpc)"
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin tpc \
    || die "building tpc failed; set TPC_BIN=path/to/tpc to use an existing binary"
  tpc_src=$root/target/release/tpc
fi
[ -x "$tpc_src" ] || die "tpc binary not executable: $tpc_src"
# A private copy: a concurrent cargo build must not swap the binary between rounds.
tpc=$work/tpc
cp "$tpc_src" "$tpc"

{
  echo "date: $(date -Is)"
  echo "host: $(uname -srm), $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB"
  echo "tpc binary: $tpc_src (sha256 $(sha256sum "$tpc" | cut -c1-16))"
  repo_state="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
  if [ -n "${TPC_BIN:-}" ]; then
    echo "tpc source: given as TPC_BIN (built $(date -r "$tpc_src" -Is)); the repository is at $repo_state"
  else
    echo "tpc source: built now from $repo_state"
  fi
  echo "etcd: $(etcd --version | head -1)"
  echo "anchor-bench: $bench"
  echo "workloads: ${workloads[*]}; rounds: $rounds; seconds: $seconds; value size: $value_size; keyspace: $keyspace"
  echo "data dirs under: $work (filesystem: $(df -P "$work" | awk 'NR==2{print $1}'))"
} >"$results/meta.txt"
cat "$results/meta.txt" >&2

# --- etcd -------------------------------------------------------------------------
# Mirrors ../shared/anchor-bench/etcd-cluster.sh (which cannot be given a data
# directory), with fresh data per run and default durability (fsync on).
etcd_endpoints=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379
etcd_leader=
etcd_leader_pid=

start_etcd() { # start_etcd DIR
  local dir=$1 i t leaders
  local cluster="n1=http://127.0.0.1:12380,n2=http://127.0.0.1:22380,n3=http://127.0.0.1:32380"
  require_free_ports 12379 22379 32379 12380 22380 32380
  mkdir -p "$dir"
  etcd_pids=()
  etcd_leader=
  for i in 1 2 3; do
    etcd --name "n$i" --data-dir "$dir/n$i" \
      --listen-client-urls "http://127.0.0.1:${i}2379" --advertise-client-urls "http://127.0.0.1:${i}2379" \
      --listen-peer-urls "http://127.0.0.1:${i}2380" --initial-advertise-peer-urls "http://127.0.0.1:${i}2380" \
      --initial-cluster "$cluster" --initial-cluster-state new --log-level error >"$dir/n$i.log" 2>&1 9>&- &
    etcd_pids+=($!)
    pids+=($!)
  done
  # Ready = every member healthy (a committed proposal) and exactly one leader.
  for ((t = 0; t < 300; t++)); do
    if etcdctl --endpoints="$etcd_endpoints" --command-timeout=2s endpoint health >/dev/null 2>&1; then
      leaders=$(etcdctl --endpoints="$etcd_endpoints" --command-timeout=2s endpoint status -w simple 2>/dev/null \
        | awk -F', ' '$5 == "true" {print $1}' || true)
      if [ "$(printf '%s\n' "$leaders" | grep -c .)" = 1 ]; then etcd_leader=$leaders; break; fi
    fi
    sleep 0.1
  done
  [ -n "$etcd_leader" ] || { tail -n 20 "$dir"/n*.log >&2; die "etcd did not become ready in 30 s"; }
  # Ready, but is it ours? (If a member could not bind its ports, something else answered.)
  alive "${etcd_pids[@]}" || { tail -n 20 "$dir"/n*.log >&2; die "an etcd member exited at start"; }
  # Member i serves client port ${i}2379: find the leader's process.
  i=${etcd_leader##*:}; i=${i:0:1}
  etcd_leader_pid=${etcd_pids[$((i - 1))]}
}

stop_etcd() {
  # SIGKILL: on SIGTERM etcd's leader first tries to hand over leadership to members
  # that are stopping too, which stalls each shutdown for ~7 s. The data is thrown away.
  # (stderr hidden: bash would report each member as "Killed")
  { kill -KILL "${etcd_pids[@]}"; stop "${etcd_pids[@]}"; } 2>/dev/null || true
  forget "${etcd_pids[@]}"
  etcd_pids=()
  etcd_leader=
}

# --- tpc --------------------------------------------------------------------------
tpc_pids=()
tpc_leader_pid=

start_tpc() { # start_tpc DIR
  local dir=$1 i t port list
  local ports=("$tpc_port")
  for ((i = 1; i <= followers; i++)); do ports+=($((tpc_port + i))); done
  require_free_ports "${ports[@]}"
  mkdir -p "$dir"
  tpc_pids=()
  for ((i = 1; i <= followers; i++)); do
    port=$((tpc_port + i))
    "$tpc" --tpc-follower --journal-dir "$dir/f$i" --kv-dir "$dir/f$i/kv" --listen "127.0.0.1:$port" --name "f$i" \
      >"$dir/f$i.log" 2>&1 9>&- &
    tpc_pids+=($!)
    pids+=($!)
    list=${list:+$list,}127.0.0.1:$port
  done
  "$tpc" --tpc-leader --journal-dir "$dir/leader" --follower "$list" --listen "127.0.0.1:$tpc_port" --name leader \
    >"$dir/leader.log" 2>&1 9>&- &
  tpc_leader_pid=$!
  tpc_pids+=($!)
  pids+=($!)
  # Ready = the leader answers Status and sees every follower connected.
  for ((t = 0; t < 300; t++)); do
    if [ "$("$tpc" status --leader "127.0.0.1:$tpc_port" --json --timeout 2s 2>/dev/null \
      | grep -c '"connected": true')" = "$followers" ]; then
      alive "${tpc_pids[@]}" || { tail -n 20 "$dir"/*.log >&2; die "a tpc node exited at start"; }
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$dir"/*.log >&2
  die "tpc did not become ready in 30 s"
}

stop_tpc() {
  stop "${tpc_pids[@]}"
  forget "${tpc_pids[@]}"
  tpc_pids=()
}

# background: "CPU% WRITES" over one second, taken while none of our processes runs,
# so it is other work competing with the run: the percent of all cores busy, and the
# write requests completed by the disk holding the data (puts are fsync-bound).
disk=$(basename "$(df -P "$work" | awk 'NR == 2 {print $1}')")
sample() {
  # user nice system idle iowait irq softirq steal (guest time is already in user)
  awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; printf "%d %d ", t, $5 + $6}' /proc/stat
  awk -v d="$disk" '$3 == d {w = $8} END {print w + 0}' /proc/diskstats
}
background() {
  local t0 i0 w0 t1 i1 w1
  read -r t0 i0 w0 < <(sample)
  sleep 1
  read -r t1 i1 w1 < <(sample)
  awk -v dt=$((t1 - t0)) -v di=$((i1 - i0)) -v dw=$((w1 - w0)) \
    'BEGIN { printf "%.0f %d\n", dt ? 100 * (dt - di) / dt : 0, dw }'
}

# wait_for_quiet: waits up to $quiet_wait s for background CPU <= $quiet_pct % and
# disk writes <= $quiet_writes /s; prints the last sample "CPU% WRITES".
wait_for_quiet() {
  local cpu writes waited=0 quiet
  while :; do
    read -r cpu writes < <(background)
    quiet=0
    if [ "$cpu" -le "$quiet_pct" ] && [ "$writes" -le "$quiet_writes" ]; then quiet=1; fi
    if [ "$quiet" = 1 ] || [ "$waited" -ge "$quiet_wait" ]; then break; fi
    [ "$waited" -gt 0 ] || log "other work: CPU $cpu%, $writes disk writes/s; waiting up to ${quiet_wait}s for <= $quiet_pct% and <= $quiet_writes/s"
    sleep 4
    waited=$((waited + 5))
  done
  [ "$quiet" = 1 ] || log "running anyway with other work at CPU $cpu%, $writes disk writes/s"
  echo "$cpu $writes"
}

# memory PID: "VmHWM_kB VmRSS_kB" of a running process
memory() { awk '/^VmHWM:/{h=$2} /^VmRSS:/{r=$2} END{print h+0, r+0}' "/proc/$1/status"; }

# --- one run ----------------------------------------------------------------------
summary=$results/runs.tsv
printf 'workload\tround\ttarget\tops_per_s\tp50_us\tp99_us\terrors\tserver_leader_hwm_kb\tserver_leader_rss_kb\tbackground_cpu_pct\tbackground_disk_writes_per_s\n' >"$summary"
bench_timeout=$((seconds * 3 + 120 + keyspace / 20))

run() { # run TARGET OP CLIENTS ROUND
  local target=$1 op=$2 clients=$3 round=$4
  local name="$op-$clients-r$round-$target" dir="$work/$op-$clients-r$round-$target"
  local out="$results/raw/$name.txt" endpoint pid line status=0 bench_pid hwm rss cpu writes
  read -r cpu writes < <(wait_for_quiet)
  if [ "$target" = etcd ]; then
    start_etcd "$dir"; endpoint=$etcd_leader; pid=$etcd_leader_pid
  else
    start_tpc "$dir"; endpoint=127.0.0.1:$tpc_port; pid=$tpc_leader_pid
  fi
  log "$name: (other work: CPU $cpu%, $writes writes/s) anchor-bench --target $target --endpoints $endpoint --op $op --clients $clients"
  # In the background so that Ctrl-C is handled at once; timeout bounds a hung run.
  timeout "$bench_timeout" "$bench" --target "$target" --endpoints "$endpoint" --op "$op" \
    --clients "$clients" --seconds "$seconds" --value-size "$value_size" --keyspace "$keyspace" \
    >"$out" 2>&1 9>&- &
  bench_pid=$!
  pids+=("$bench_pid")
  wait "$bench_pid" || status=$?
  forget "$bench_pid"
  read -r hwm rss < <(memory "$pid" 2>/dev/null || echo "0 0")
  if [ "$target" = etcd ]; then stop_etcd; else stop_tpc; fi
  mkdir -p "$results/logs/$name"
  cp "$dir"/*.log "$results/logs/$name/" 2>/dev/null || true
  # The data is deleted only when the script ends: on this machine's ext4 (no journal),
  # creating a file after many recent deletions is slow (the inode allocator skips
  # inodes freed in the last minute, scanning for others), so deleting a run's 3,000
  # key files would slow the next run's first writes to each key.

  line=$(grep '^target=' "$out" | tail -n 1 || true)
  if [ "$status" != 0 ] || [ -z "$line" ]; then
    log "$name: anchor-bench failed (exit $status); output in $out:"
    tail -n 5 "$out" >&2
    printf '%s\t%s\t%s\tFAIL\tFAIL\tFAIL\tFAIL\t%s\t%s\t%s\t%s\n' "$op:$clients" "$round" "$target" "$hwm" "$rss" "$cpu" "$writes" >>"$summary"
    return 0
  fi
  field() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$op:$clients" "$round" "$target" \
    "$(field ops_per_s)" "$(field p50_us)" "$(field p99_us)" "$(field errors)" "$hwm" "$rss" "$cpu" "$writes" >>"$summary"
  log "$name: $line leader_hwm_kb=$hwm"
}

# --- main loop --------------------------------------------------------------------
log "results: $results"
for w in "${workloads[@]}"; do
  op=${w%%:*}; clients=${w#*:}
  for ((r = 1; r <= rounds; r++)); do
    if ((r % 2 == 1)); then order=(etcd tpc); else order=(tpc etcd); fi
    for target in "${order[@]}"; do run "$target" "$op" "$clients" "$r"; done
  done
done

# --- report -----------------------------------------------------------------------
write_settings
report

