//! One client task of a bench run: a closed loop of one request at a time, each
//! recorded into the task's own [`Tally`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::{Code, Status};

use super::report::{OpKind, Tally};
use super::Workload;
use crate::client::Client;

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

/// One client task's settings and state.
pub struct Worker {
    /// This task's client (on one of the pooled connections).
    client: Client,
    /// Which requests to send.
    workload: Workload,
    /// Keys are `bench-0` ... `bench-<keyspace - 1>`.
    keyspace: u64,
    /// Values to put.
    values: Values,
    /// How long one request may take.
    timeout: Duration,
    /// This task's own random numbers (keys, values, get or put).
    rng: SmallRng,
}

impl Worker {
    /// A worker with its own random number generator.
    pub fn new(
        client: Client,
        workload: Workload,
        keyspace: u64,
        values: Values,
        timeout: Duration,
    ) -> Worker {
        Worker {
            client,
            workload,
            keyspace,
            values,
            timeout,
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
            };
            let key = key_name(self.rng.random_range(0..self.keyspace));
            let started = Instant::now();
            let result = match kind {
                OpKind::Get => within(self.timeout, self.client.get(&key)).await.map(drop),
                OpKind::Put => {
                    let value = self.values.pick(&mut self.rng);
                    within(self.timeout, self.client.put(&key, value)).await
                }
            };
            let latency = started.elapsed();
            match result {
                Ok(()) => {
                    tally.of(kind).record_ok(latency);
                    counters.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(status) => {
                    tally.of(kind).record_error(&status);
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tally
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
