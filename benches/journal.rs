//! Benchmarks of the write-ahead journal (`tpc::journal`), on a real file with real
//! fdatasyncs (see `common` for where the file goes and `TPC_BENCH_DIR`).
//!
//! Every write of the protocol waits for a journal fsync, so the journal bounds how many
//! writes per second a node can take. These benches show by how much, and how much
//! batching buys back:
//!
//! * `journal/append`: one ~150-byte record per call, one fdatasync each: the disk's
//!   fsync rate, the floor every other number is compared with.
//! * `journal/append_batch/64`: 64 records with one write and one fdatasync; reported per
//!   record, so it shows what sharing an fsync is worth when one caller has many records.
//! * `journal/group_commit/N`: N threads each append one record and wait until it is
//!   durable, again and again, through one `GroupJournal` (group commit). One iteration is
//!   one record from every appender, so the throughput is records per second. With one
//!   appender it is the fsync rate; with 64 the records waiting during an fsync share the
//!   next one, so it should be far above it. The ratio of appends to fsyncs is printed
//!   after each N.
//! * `journal/open_replay/10000`: `Journal::open` of a journal of 10,000 records (the
//!   checkpoint bound, `CHECKPOINT_RECORDS` in `tpc::tpc::leader` and `follower`), the
//!   replay cost of a restart. The file is in the page cache after the first iteration,
//!   so this is the CPU cost of reading and checking it, not of the disk.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use tpc::journal::{encode_line, GroupJournal, Journal, Record};

mod common;

/// Bytes of one journal line (checksum, fields, separators, '\n').
const RECORD_BYTES: usize = 150;
/// Records per `append_batch`.
const BATCH: usize = 64;
/// Records in the replayed journal: the checkpoint bound.
const REPLAY_RECORDS: usize = 10_000;

/// A record shaped like a transaction's: operation, transaction id, key, value; its line
/// is `RECORD_BYTES` long.
fn record(i: usize) -> Record {
    let record = vec![
        "put".to_string(),
        format!("{i:032x}"),
        format!("key-{:06}", i % 1_000_000),
        "v".repeat(92),
    ];
    assert_eq!(encode_line(&record).len(), RECORD_BYTES);
    record
}

/// fsync-bound benches are slow: few samples, a few seconds each.
fn slow(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
}

fn append(c: &mut Criterion) {
    let dir = common::bench_dir();
    let (mut journal, _) = Journal::open(&dir.path().join("journal")).unwrap();
    let one = record(0);
    let batch: Vec<Record> = (0..BATCH).map(record).collect();

    let mut group = c.benchmark_group("journal");
    slow(&mut group);
    group.throughput(Throughput::Elements(1));
    group.bench_function("append", |b| b.iter(|| journal.append(&one).unwrap()));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_with_input(
        BenchmarkId::new("append_batch", BATCH),
        &batch,
        |b, batch| b.iter(|| journal.append_batch(batch).unwrap()),
    );
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal");
    slow(&mut group);
    for appenders in [1, 8, 64] {
        let dir = common::bench_dir();
        let (journal, _) = Journal::open(&dir.path().join("journal")).unwrap();
        let journal = GroupJournal::start(journal).unwrap();
        group.throughput(Throughput::Elements(appenders as u64));
        group.bench_with_input(
            BenchmarkId::new("group_commit", appenders),
            &appenders,
            |b, &appenders| b.iter_custom(|iters| run_appenders(&journal, appenders, iters)),
        );
        let (appends, syncs) = (journal.record_count(), journal.syncs());
        eprintln!(
            "journal/group_commit/{appenders}: {appends} appends, {syncs} fsyncs ({:.1} records per fsync)",
            appends as f64 / syncs.max(1) as f64
        );
    }
    group.finish();
}

/// Starts `appenders` threads that each append `per_appender` records one at a time,
/// waiting for each to be durable; returns the time from when all are ready to when the
/// last is done (thread start-up is not measured).
fn run_appenders(journal: &GroupJournal, appenders: usize, per_appender: u64) -> Duration {
    let ready = Barrier::new(appenders + 1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..appenders)
            .map(|t| {
                let ready = &ready;
                scope.spawn(move || {
                    let record = record(t);
                    ready.wait();
                    for _ in 0..per_appender {
                        let durable = journal.append(vec![record.clone()]);
                        durable.blocking_recv().unwrap().unwrap();
                    }
                })
            })
            .collect();
        ready.wait();
        let start = Instant::now();
        for thread in threads {
            thread.join().unwrap();
        }
        start.elapsed()
    })
}

fn open_replay(c: &mut Criterion) {
    let dir = common::bench_dir();
    let path = dir.path().join("journal");
    let records: Vec<Record> = (0..REPLAY_RECORDS).map(record).collect();
    Journal::open(&path)
        .unwrap()
        .0
        .append_batch(&records)
        .unwrap();

    let mut group = c.benchmark_group("journal");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(REPLAY_RECORDS as u64));
    group.bench_function(BenchmarkId::new("open_replay", REPLAY_RECORDS), |b| {
        b.iter(|| {
            let (journal, records) = Journal::open(&path).unwrap();
            assert_eq!(records.len(), REPLAY_RECORDS);
            black_box((journal, records))
        })
    });
    group.finish();
}

criterion_group!(benches, append, group_commit, open_replay);
criterion_main!(benches);
