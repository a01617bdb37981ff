//! `tpc bench`: load a leader with requests and report throughput, latency percentiles
//! and errors by gRPC status code.
//!
//! **Closed loop.** Each of N client tasks sends one request, waits for its answer, and
//! only then sends the next; at most N requests are ever in flight. The cluster's speed
//! sets the rate, so the run measures the throughput the cluster sustains at concurrency
//! N and the latency a client sees at that load. The caveat of every closed loop: when
//! the leader stalls, the clients stall with it and send nothing, so a one-second stall
//! shows as N slow requests, not as the many a steady stream of users would have sent
//! meanwhile ("coordinated omission"). Read the tail percentiles with that in mind.
//!
//! **Per-task histograms.** Each task records the latency of its successful requests in
//! its own HDR histograms (microseconds, 3 significant digits, one per kind of request)
//! and counts its failures by status code; the runner merges them once, after the run.
//! Recording takes no lock and shares nothing; the only shared writes are two relaxed
//! atomic counters the progress bar reads.
//!
//! **Connections.** The tasks are spread over a small pool of gRPC channels (by default
//! `min(N, 8)`). A channel is one HTTP/2 connection, served by one task at each end;
//! with dozens of clients on one, that task and the connection's flow-control window
//! can cap the load below what a leader on many cores serves. More connections are not
//! free either (fewer requests share each write), and on a small machine one can be
//! faster: `--connections` sets the number, and is worth varying when it matters.
//!
//! **Keys and values.** Keys are `bench-0` ... `bench-<K-1>`, each request's chosen
//! uniformly at random; values are exactly B printable ASCII bytes. `get`, `mixed` and
//! `txn-get` first write every key once (the preload, not measured), so reads find a
//! value; a `NOT_FOUND` during the run (or a transaction's GET that finds nothing)
//! counts as an error like any other status.
//!
//! **Transactions** (DESIGN §6). `txn` sends one `Txn` per operation that puts T
//! distinct keys (`--txn-keys`, drawn at random) and compares nothing, etcd's `txn-put`
//! with T puts; `txn-get` one read-only `Txn` of T GETs of distinct keys. An operation
//! is the whole transaction: compare their ops/s with `put`'s and `get`'s to see what
//! a transaction costs over a single-key request. `cas` is contention on one hot key,
//! [`HOT_KEY`]: every client increments the decimal counter it holds by
//! compare-and-swap, `if version = V then put N+1 else get`, taking V and N from its
//! last answer (a refused swap's GET reads the fresh ones), so a retry needs no
//! separate read. Swaps are the ops; refused ones are counted apart as conflicts. The
//! counter starts from what the key holds (absent is 0), so after a run without errors
//! it holds its start plus the swaps. A request that failed (a timeout) may have
//! swapped all the same: with errors the counter can be ahead of that sum.
//!
//! **Stopping.** After the run time (or on Ctrl-C) no task starts another request; each
//! waits for the one in flight, which a per-request deadline bounds, so a hung leader
//! delays the report by at most the timeout. The measured time runs from the first
//! request to the last answer.
//!
//! - [`report`]: the measurements, merging them, and the text and JSON reports.
//! - [`worker`]: one client task's loop, and the requests of each workload.
//! - [`cas`]: the hot key's counter, the compare-and-swap and what its answer says.
//! - [`progress`]: the progress bars on stderr.

pub mod cas;
pub mod progress;
pub mod report;
pub mod worker;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::client::{self, Client};
use crate::limits::MAX_VALUE_BYTES;
use crate::net::{self, Address};
use crate::txn::{MAX_OPS, MAX_REQUEST_BYTES};
use cas::HotKey;
pub use cas::HOT_KEY;
use progress::Progress;
use report::{OpKind, Report, Tally};
use worker::{key_name, within, Counters, Values, Worker};

/// Connections to the leader when not given: one per client, up to this many.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;

/// Keys per transaction of `txn` and `txn-get` when not given.
pub const DEFAULT_TXN_KEYS: usize = 4;

/// The most keys per transaction: a branch holds at most this many ops (DESIGN §6).
pub const MAX_TXN_KEYS: usize = MAX_OPS;

/// How often the progress bar is updated.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Which requests a run sends. (The doc lines are `--help`'s.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Only Puts.
    Put,
    /// Only Gets (of keys written first).
    Get,
    /// 50% Gets, 50% Puts, chosen at random per request (keys written first).
    Mixed,
    /// One transaction per op that puts --txn-keys distinct random keys, no compares.
    Txn,
    /// One read-only transaction per op: GETs of --txn-keys distinct keys (written first).
    TxnGet,
    /// Compare-and-swap increments of one hot key's counter (bench-cas) by every client;
    /// ops are swaps, refused swaps are counted as conflicts (and retried).
    Cas,
}

impl Workload {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::Txn => "txn",
            Workload::TxnGet => "txn-get",
            Workload::Cas => "cas",
        }
    }

    /// The name with the mix or the transaction's size spelled out, for reports.
    pub fn describe(self, txn_keys: usize) -> String {
        match self {
            Workload::Mixed => "mixed (50% get, 50% put)".into(),
            Workload::Txn | Workload::TxnGet => {
                let s = if txn_keys == 1 { "" } else { "s" };
                format!("{} ({txn_keys} key{s})", self.name())
            }
            Workload::Cas => format!("cas (one hot key, {HOT_KEY})"),
            other => other.name().into(),
        }
    }

    /// The kinds of request sent.
    pub fn kinds(self) -> &'static [OpKind] {
        match self {
            Workload::Put => &[OpKind::Put],
            Workload::Get => &[OpKind::Get],
            Workload::Mixed => &[OpKind::Get, OpKind::Put],
            Workload::Txn => &[OpKind::Txn],
            Workload::TxnGet => &[OpKind::TxnGet],
            Workload::Cas => &[OpKind::Cas],
        }
    }

    /// Whether the run reads keys of the key space, and so needs them written first.
    pub fn preloads(self) -> bool {
        matches!(self, Workload::Get | Workload::Mixed | Workload::TxnGet)
    }

    /// Whether `--txn-keys` applies.
    pub fn uses_txn_keys(self) -> bool {
        matches!(self, Workload::Txn | Workload::TxnGet)
    }

    /// Whether the run uses the key space (`cas` uses only its hot key).
    pub fn uses_keyspace(self) -> bool {
        self != Workload::Cas
    }
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The leader.
    pub leader: Address,
    /// Concurrent client tasks, each with one request in flight at a time.
    pub clients: usize,
    /// gRPC connections to the leader; clients are spread evenly over them.
    pub connections: usize,
    /// How long to send requests.
    pub duration: Duration,
    /// Which requests to send.
    pub workload: Workload,
    /// Bytes in each value written.
    pub value_size: usize,
    /// Number of distinct keys.
    pub keyspace: u64,
    /// Keys per transaction, for `txn` and `txn-get`.
    pub txn_keys: usize,
    /// How long one request (and connecting) may take.
    pub timeout: Duration,
    /// Whether to draw progress bars on stderr.
    pub show_progress: bool,
}

impl Config {
    /// Checks the settings; the error says which is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.keyspace == 0 {
            return Err("--keyspace must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--seconds must be at least 1".into());
        }
        if self.value_size > MAX_VALUE_BYTES {
            return Err(format!(
                "--value-size {} is over the value limit of {MAX_VALUE_BYTES} bytes",
                self.value_size
            ));
        }
        if self.workload.uses_txn_keys() {
            self.check_txn_keys()?;
        }
        Ok(())
    }

    /// Checks `--txn-keys` against DESIGN §6's limits and the key space.
    fn check_txn_keys(&self) -> Result<(), String> {
        let keys = self.txn_keys;
        if !(1..=MAX_TXN_KEYS).contains(&keys) {
            return Err(format!(
                "--txn-keys {keys} is not in 1..={MAX_TXN_KEYS} (a transaction's ops)"
            ));
        }
        if keys as u64 > self.keyspace {
            return Err(format!(
                "--txn-keys {keys} is more than --keyspace {}: a transaction's keys are distinct",
                self.keyspace
            ));
        }
        // The longest key name is the last one's.
        let key_bytes = key_name(self.keyspace - 1).len();
        let written = if self.workload == Workload::Txn {
            self.value_size
        } else {
            0
        };
        let request = keys.saturating_mul(key_bytes + written);
        if request > MAX_REQUEST_BYTES {
            return Err(format!(
                "--txn-keys {keys} with --value-size {} makes transactions of {request} bytes of \
                 keys and values, over the limit of {MAX_REQUEST_BYTES} (4 MiB)",
                self.value_size
            ));
        }
        Ok(())
    }
}

/// Runs the load described by `config` and returns its report. Stops early, and
/// reports, when `interrupt` resolves (which is only awaited once the load runs).
/// Errors are setup failures (bad settings, no connection, a failed preload), as a
/// message for a person; failed requests during the run are part of the report.
pub async fn run(config: &Config, interrupt: impl Future<Output = ()>) -> Result<Report, String> {
    config.check()?;
    let channels = connect(config).await?;
    let clients: Vec<Client> = (0..config.clients)
        .map(|i| Client::from_channel(channels[i % channels.len()].clone(), config.timeout))
        .collect();
    let values = Values::new(config.value_size, &mut SmallRng::from_rng(&mut rand::rng()));
    let preload = if config.workload.preloads() {
        Some(preload(config, &clients, &values).await?)
    } else {
        None
    };
    let hot_key = if config.workload == Workload::Cas {
        Some(cas::read_hot_key(config, &clients[0]).await?)
    } else {
        None
    };

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let progress = Progress::run(config.show_progress, config.duration);
    let started = Instant::now();
    let tasks: Vec<JoinHandle<Tally>> = clients
        .into_iter()
        .map(|client| {
            let worker = Worker::new(
                client,
                config,
                values.clone(),
                hot_key.clone().unwrap_or(HotKey::Missing),
            );
            let (stop, counters) = (stop.clone(), counters.clone());
            tokio::spawn(async move { worker.run(&stop, &counters).await })
        })
        .collect();

    let deadline = tokio::time::sleep(config.duration);
    tokio::pin!(deadline, interrupt);
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = &mut interrupt => break,
            _ = ticks.tick() => progress.show(
                started.elapsed(),
                counters.ok.load(Ordering::Relaxed),
                counters.failed.load(Ordering::Relaxed),
                counters.conflicts.load(Ordering::Relaxed),
            ),
        }
    }
    stop.store(true, Ordering::Relaxed);
    progress.draining();

    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(&joined(task).await);
    }
    let elapsed = started.elapsed();
    progress.finish();
    Ok(Report {
        config: config.clone(),
        preload,
        hot_key_start: hot_key.map(|key| key.counter()),
        elapsed,
        tally,
    })
}

/// Opens the pool of connections, all at once.
async fn connect(config: &Config) -> Result<Vec<tonic::transport::Channel>, String> {
    let count = config.connections.min(config.clients);
    let leader = &config.leader;
    try_join_all((0..count).map(|_| net::connect(leader, config.timeout)))
        .await
        .map_err(|e| {
            // `net::connect`'s errors start with the address, which we name first.
            let prefix = format!("{leader}: ");
            let reason = e.strip_prefix(&prefix).unwrap_or(&e);
            format!("cannot connect to the leader at {leader}: {reason}")
        })
}

/// Writes every key once, the clients sharing the work; returns how long it took. A
/// failed write fails the run: reads of missing keys would measure nothing useful.
async fn preload(config: &Config, clients: &[Client], values: &Values) -> Result<Duration, String> {
    let started = Instant::now();
    let progress = Progress::preload(config.show_progress, config.keyspace);
    let stride = clients.len() as u64;
    let loaders = clients.iter().enumerate().map(|(first, client)| {
        let mut client = client.clone();
        let progress = &progress;
        async move {
            let mut rng = SmallRng::from_rng(&mut rand::rng());
            for i in (first as u64..config.keyspace).step_by(stride as usize) {
                let key = key_name(i);
                within(config.timeout, client.put(&key, values.pick(&mut rng)))
                    .await
                    .map_err(|status| {
                        format!(
                            "preloading the keys: put {key} on {}: {}",
                            config.leader,
                            client::describe(&status)
                        )
                    })?;
                progress.inc();
            }
            Ok::<(), String>(())
        }
    });
    let result = try_join_all(loaders).await;
    progress.finish();
    result.map(|_| started.elapsed())
}

/// A finished task's tally; a task that panicked panics the run too (a bug, not a
/// measurement).
async fn joined(task: JoinHandle<Tally>) -> Tally {
    match task.await {
        Ok(tally) => tally,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a bench client task was cancelled: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            leader: Address::Unix("/nonexistent/tpc-bench.sock".into()),
            clients: 4,
            connections: 4,
            duration: Duration::from_secs(1),
            workload: Workload::Mixed,
            value_size: 10,
            keyspace: 10,
            txn_keys: 4,
            timeout: Duration::from_secs(1),
            show_progress: false,
        }
    }

    #[test]
    fn only_workloads_reading_the_key_space_preload() {
        use Workload::*;
        let preloading: Vec<Workload> = [Put, Get, Mixed, Txn, TxnGet, Cas]
            .into_iter()
            .filter(|w| w.preloads())
            .collect();
        assert_eq!(preloading, [Get, Mixed, TxnGet]);
    }

    #[test]
    fn workloads_have_their_command_line_names_and_describe_their_size() {
        use clap::ValueEnum;
        for workload in Workload::value_variants() {
            let possible = workload.to_possible_value().expect("not skipped");
            assert_eq!(possible.get_name(), workload.name());
            assert!(workload.describe(4).starts_with(workload.name()));
        }
        assert_eq!(Workload::Txn.describe(4), "txn (4 keys)");
        assert_eq!(Workload::TxnGet.describe(1), "txn-get (1 key)");
        assert_eq!(Workload::Cas.describe(4), "cas (one hot key, bench-cas)");
        assert_eq!(Workload::Put.describe(4), "put");
    }

    #[test]
    fn txn_keys_are_checked_only_for_transactions_and_against_the_key_space() {
        let with = |workload, txn_keys, keyspace, value_size| Config {
            workload,
            txn_keys,
            keyspace,
            value_size,
            ..config()
        };
        assert_eq!(with(Workload::Txn, 10, 10, 100).check(), Ok(()));
        assert_eq!(with(Workload::TxnGet, 128, 1000, 100).check(), Ok(()));
        // Not a transaction: the count does not matter.
        assert_eq!(with(Workload::Put, 0, 10, 100).check(), Ok(()));
        assert_eq!(with(Workload::Cas, 500, 1, 100).check(), Ok(()));
        for (config, words) in [
            (with(Workload::Txn, 0, 10, 100), "not in 1..=128"),
            (with(Workload::TxnGet, 129, 1000, 100), "not in 1..=128"),
            (with(Workload::Txn, 11, 10, 100), "more than --keyspace 10"),
            (with(Workload::TxnGet, 5, 4, 100), "more than --keyspace 4"),
            (
                with(Workload::Txn, 2, 10, MAX_VALUE_BYTES),
                "over the limit",
            ),
        ] {
            let error = config.check().expect_err(words);
            assert!(error.contains("--txn-keys"), "{error}");
            assert!(error.contains(words), "{error}");
        }
        // A read-only transaction carries no values: the value size does not count.
        assert_eq!(
            with(Workload::TxnGet, 2, 10, MAX_VALUE_BYTES).check(),
            Ok(())
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_the_flag() {
        assert_eq!(config().check(), Ok(()));
        type Change = fn(&mut Config);
        let cases: [(Change, &str); 4] = [
            (|c| c.clients = 0, "--clients"),
            (|c| c.keyspace = 0, "--keyspace"),
            (|c| c.connections = 0, "--connections"),
            (|c| c.value_size = MAX_VALUE_BYTES + 1, "--value-size"),
        ];
        for (change, flag) in cases {
            let mut config = config();
            change(&mut config);
            let error = config.check().expect_err(flag);
            assert!(error.contains(flag), "{error}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_leader_is_a_setup_error_naming_it() {
        let error = run(&config(), std::future::pending())
            .await
            .expect_err("nothing listens there");
        assert!(
            error.contains("cannot connect to the leader at unix:/nonexistent/tpc-bench.sock"),
            "{error}"
        );
    }
}
