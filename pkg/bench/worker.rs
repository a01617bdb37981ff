//! One client task of a bench run: a closed loop of one request at a time, each
//! recorded into the task's own [`Tally`]; and the requests of each workload.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::{Code, Status};

use super::cas::{self, HotKey, Swapped};
use super::report::{OpKind, Tally};
use super::{Config, Workload};
use crate::client::{Client, Txn};
use crate::proto::api;

/// The name of key number `i`. Every bench key starts with `bench-`, so a bench run
/// overwrites only keys of its own kind.
pub fn key_name(i: u64) -> String {
    format!("bench-{i}")
}

/// Requests finished so far by all tasks together, for the progress bar. The only state
/// tasks share while running; relaxed atomics, as the counts are only displayed.
#[derive(Debug, Default)]
pub struct Counters {
    /// Successful requests.
    pub ok: AtomicU64,
    /// Failed requests.
    pub failed: AtomicU64,
    /// Refused compare-and-swaps (`cas`).
    pub conflicts: AtomicU64,
}

/// Values of exactly `size` printable ASCII bytes. Each is a window, at a random offset,
/// into one random buffer twice as long: values differ from request to request without
/// drawing `size` random characters for each.
#[derive(Clone, Debug)]
pub struct Values {
    buffer: String,
    size: usize,
}

impl Values {
    /// Values of `size` bytes drawn with `rng`.
    pub fn new(size: usize, rng: &mut impl Rng) -> Values {
        Values {
            buffer: Alphanumeric.sample_string(rng, 2 * size),
            size,
        }
    }

    /// A value.
    pub fn pick(&self, rng: &mut impl Rng) -> &str {
        let offset = rng.random_range(0..=self.size);
        &self.buffer[offset..offset + self.size]
    }
}

/// Waits for `call` at most `timeout`; a call that takes longer fails with
/// `DEADLINE_EXCEEDED`. The client also sends the deadline (`grpc-timeout`), and tonic
/// enforces that one itself, but reports it as `CANCELLED` "Timeout expired"; a call
/// cancelled once its deadline has passed is counted as what it is, a missed deadline
/// (grpc-dotnet does the same). The bench's own timer covers a call that never
/// returns at all.
pub async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let missed = || Status::deadline_exceeded(format!("no answer within {timeout:?}"));
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(missed()),
        Ok(Err(status)) if status.code() == Code::Cancelled && started.elapsed() >= timeout => {
            Err(missed())
        }
        Ok(result) => result,
    }
}

/// `keys` distinct key numbers below `keyspace`, in random order (`keys <= keyspace`,
/// as [`Config::check`] makes sure).
pub fn distinct_keys(rng: &mut impl Rng, keyspace: u64, keys: usize) -> Vec<u64> {
    let keyspace = usize::try_from(keyspace).unwrap_or(usize::MAX);
    rand::seq::index::sample(rng, keyspace, keys)
        .into_iter()
        .map(|i| i as u64)
        .collect()
}

/// Awaits `call`, and says how long it took.
async fn timed<T>(call: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let result = call.await;
    (result, started.elapsed())
}

/// What one request came to.
#[derive(Debug)]
enum Outcome {
    /// Done (for `cas`: swapped).
    Done,
    /// A refused compare-and-swap, retried with what its answer read.
    Conflict,
    /// Failed with this status.
    Failed(Status),
}

impl From<Result<(), Status>> for Outcome {
    fn from(result: Result<(), Status>) -> Outcome {
        match result {
            Ok(()) => Outcome::Done,
            Err(status) => Outcome::Failed(status),
        }
    }
}

/// One client task's settings and state.
pub struct Worker {
    /// This task's client (on one of the pooled connections).
    client: Client,
    /// Which requests to send.
    workload: Workload,
    /// Keys are `bench-0` ... `bench-<keyspace - 1>`.
    keyspace: u64,
    /// Keys per transaction (`txn`, `txn-get`).
    txn_keys: usize,
    /// Values to put.
    values: Values,
    /// How long one request may take.
    timeout: Duration,
    /// What this task's last answer said of the hot key (`cas`).
    hot_key: HotKey,
    /// This task's own random numbers (keys, values, get or put).
    rng: SmallRng,
}

impl Worker {
    /// A worker for `config`'s workload, with its own random number generator; a `cas`
    /// worker starts from `hot_key`, as read before the run.
    pub fn new(client: Client, config: &Config, values: Values, hot_key: HotKey) -> Worker {
        Worker {
            client,
            workload: config.workload,
            keyspace: config.keyspace,
            txn_keys: config.txn_keys,
            values,
            timeout: config.timeout,
            hot_key,
            rng: SmallRng::from_rng(&mut rand::rng()),
        }
    }

    /// Sends requests one at a time until `stop` is set, and returns what it measured.
    /// A request in flight when `stop` is set is finished (or timed out) and counted.
    pub async fn run(mut self, stop: &AtomicBool, counters: &Counters) -> Tally {
        let mut tally = Tally::for_workload(self.workload);
        while !stop.load(Ordering::Relaxed) {
            let kind = match self.workload {
                Workload::Put => OpKind::Put,
                Workload::Get => OpKind::Get,
                Workload::Mixed if self.rng.random_bool(0.5) => OpKind::Get,
                Workload::Mixed => OpKind::Put,
                Workload::Txn => OpKind::Txn,
                Workload::TxnGet => OpKind::TxnGet,
                Workload::Cas => OpKind::Cas,
            };
            let (outcome, latency) = self.request(kind).await;
            match outcome {
                Outcome::Done => {
                    tally.of(kind).record_ok(latency);
                    counters.ok.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Conflict => {
                    tally.of(kind).record_conflict();
                    counters.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Failed(status) => {
                    tally.of(kind).record_error(&status);
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tally
    }

    /// Sends one request of `kind`, waits for its answer, and says what it came to and
    /// how long it took: the time from sending to the answer, without choosing keys and
    /// building the request before, or reading the answer after.
    async fn request(&mut self, kind: OpKind) -> (Outcome, Duration) {
        let timeout = self.timeout;
        match kind {
            OpKind::Get => {
                let key = key_name(self.rng.random_range(0..self.keyspace));
                let (answer, latency) = timed(within(timeout, self.client.get(&key))).await;
                (answer.map(drop).into(), latency)
            }
            OpKind::Put => {
                let key = key_name(self.rng.random_range(0..self.keyspace));
                let value = self.values.pick(&mut self.rng);
                let (answer, latency) = timed(within(timeout, self.client.put(&key, value))).await;
                (answer.into(), latency)
            }
            OpKind::Txn => {
                let txn = self.txn_of_puts();
                let (answer, latency) = timed(within(timeout, self.client.txn(txn))).await;
                (answer.and_then(|a| succeeded(&a)).into(), latency)
            }
            OpKind::TxnGet => {
                let txn = self.txn_of_gets();
                let (answer, latency) = timed(within(timeout, self.client.txn(txn))).await;
                (answer.and_then(|a| all_found(&a)).into(), latency)
            }
            OpKind::Cas => {
                let txn = cas::swap(&self.hot_key);
                let (answer, latency) = timed(within(timeout, self.client.txn(txn))).await;
                let outcome = match answer.and_then(|a| cas::answered(&self.hot_key, a)) {
                    Ok(Swapped::Yes(now)) => {
                        self.hot_key = now;
                        Outcome::Done
                    }
                    Ok(Swapped::Conflict(now)) => {
                        self.hot_key = now;
                        Outcome::Conflict
                    }
                    Err(status) => Outcome::Failed(status),
                };
                (outcome, latency)
            }
        }
    }

    /// A transaction that puts `txn_keys` distinct random keys, with no compare.
    fn txn_of_puts(&mut self) -> Txn {
        distinct_keys(&mut self.rng, self.keyspace, self.txn_keys)
            .into_iter()
            .fold(Txn::new(), |txn, i| {
                txn.then_put(&key_name(i), self.values.pick(&mut self.rng))
            })
    }

    /// A read-only transaction of `txn_keys` GETs of distinct random keys.
    fn txn_of_gets(&mut self) -> Txn {
        distinct_keys(&mut self.rng, self.keyspace, self.txn_keys)
            .into_iter()
            .fold(Txn::new(), |txn, i| txn.then_get(&key_name(i)))
    }
}

/// A transaction with no compare always runs its success branch; one that did not is
/// a failed request.
fn succeeded(answer: &api::TxnResponse) -> Result<(), Status> {
    if answer.succeeded {
        Ok(())
    } else {
        Err(Status::internal(
            "a transaction without compares answered that its compares failed",
        ))
    }
}

/// Every key was preloaded, so a GET that finds nothing fails the request, as a `get`
/// of a missing key does (`NOT_FOUND`).
fn all_found(answer: &api::TxnResponse) -> Result<(), Status> {
    succeeded(answer)?;
    match answer.results.iter().find(|read| !read.found) {
        Some(missing) => Err(Status::not_found(format!(
            "a transaction's GET found no {}",
            missing.key
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_exact_size_and_are_printable() {
        let mut rng = SmallRng::seed_from_u64(1);
        for size in [0, 1, 100, 4096] {
            let values = Values::new(size, &mut rng);
            for _ in 0..50 {
                let value = values.pick(&mut rng);
                assert_eq!(value.len(), size);
                assert!(value.bytes().all(|b| b.is_ascii_graphic()), "{value:?}");
            }
        }
    }

    #[test]
    fn transactions_take_distinct_keys_of_the_key_space() {
        let mut rng = SmallRng::seed_from_u64(7);
        for (keyspace, keys) in [(1, 1), (4, 4), (10, 3), (1000, 128)] {
            for _ in 0..50 {
                let chosen = distinct_keys(&mut rng, keyspace, keys);
                assert_eq!(chosen.len(), keys);
                assert!(chosen.iter().all(|&i| i < keyspace), "{chosen:?}");
                let distinct: std::collections::BTreeSet<_> = chosen.iter().collect();
                assert_eq!(distinct.len(), keys, "{chosen:?}");
            }
        }
        // Over many draws, every key is chosen.
        let seen: std::collections::BTreeSet<u64> = (0..200)
            .flat_map(|_| distinct_keys(&mut rng, 10, 3))
            .collect();
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn a_read_only_transaction_fails_on_a_key_not_found() {
        let read = |key: &str, found| api::TxnResult {
            key: key.into(),
            found,
            value: String::new(),
            version: String::new(),
        };
        let answer = |results| api::TxnResponse {
            succeeded: true,
            results,
            version: String::new(),
        };
        assert!(all_found(&answer(vec![read("bench-1", true), read("bench-2", true)])).is_ok());
        let status = all_found(&answer(vec![read("bench-1", true), read("bench-2", false)]))
            .expect_err("one missing");
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("bench-2"), "{status:?}");
        let refused = api::TxnResponse {
            succeeded: false,
            ..answer(vec![])
        };
        assert_eq!(all_found(&refused).expect_err("").code(), Code::Internal);
    }

    #[tokio::test]
    async fn a_request_without_an_answer_ends_as_deadline_exceeded() {
        let never = std::future::pending::<Result<(), Status>>();
        let status = within(Duration::from_millis(10), never)
            .await
            .expect_err("times out");
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn a_call_cancelled_at_its_deadline_missed_it_and_one_cancelled_before_did_not() {
        let timeout = Duration::from_millis(10);
        let late = async {
            tokio::time::sleep(timeout).await;
            Err::<(), _>(Status::cancelled("Timeout expired"))
        };
        let status = within(timeout * 100, late).await.expect_err("fails");
        assert_eq!(status.code(), Code::Cancelled, "the deadline was far");
        let at_deadline = async {
            tokio::time::sleep(timeout).await;
            Err::<(), _>(Status::cancelled("Timeout expired"))
        };
        // `within`'s own timer and the call race at the deadline; either way it is missed.
        let status = within(timeout, at_deadline).await.expect_err("fails");
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }
}
