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
//! uniformly at random; values are exactly B printable ASCII bytes. `get` and `mixed`
//! first write every key once (the preload, not measured), so reads find a value; a
//! `NOT_FOUND` during the run counts as an error like any other status.
//!
//! **Stopping.** After the run time (or on Ctrl-C) no task starts another request; each
//! waits for the one in flight, which a per-request deadline bounds, so a hung leader
//! delays the report by at most the timeout. The measured time runs from the first
//! request to the last answer.
//!
//! - [`report`]: the measurements, merging them, and the text and JSON reports.
//! - [`worker`]: one client task's loop.
//! - [`progress`]: the progress bars on stderr.

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
use progress::Progress;
use report::{OpKind, Report, Tally};
use worker::{key_name, within, Counters, Values, Worker};

/// Connections to the leader when not given: one per client, up to this many.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;

/// How often the progress bar is updated.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Which requests a run sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Only Puts.
    Put,
    /// Only Gets (of keys written first).
    Get,
    /// 50% Gets, 50% Puts, chosen at random per request (keys written first).
    Mixed,
}

impl Workload {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
        }
    }

    /// The name with the mix spelled out, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Workload::Mixed => "mixed (50% get, 50% put)",
            other => other.name(),
        }
    }

    /// The kinds of request sent.
    pub fn kinds(self) -> &'static [OpKind] {
        match self {
            Workload::Put => &[OpKind::Put],
            Workload::Get => &[OpKind::Get],
            Workload::Mixed => &[OpKind::Get, OpKind::Put],
        }
    }

    /// Whether the run reads, and so needs the keys written first.
    pub fn reads(self) -> bool {
        self.kinds().contains(&OpKind::Get)
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
    let preload = if config.workload.reads() {
        Some(preload(config, &clients, &values).await?)
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
                config.workload,
                config.keyspace,
                values.clone(),
                config.timeout,
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
            timeout: Duration::from_secs(1),
            show_progress: false,
        }
    }

    #[test]
    fn only_reading_workloads_preload() {
        assert!(!Workload::Put.reads());
        assert!(Workload::Get.reads());
        assert!(Workload::Mixed.reads());
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
