//! Benchmarks of the follower's file-per-key store (`tpc::kvstore`), in a real directory
//! with real fsyncs (see `common` for where it goes and `TPC_BENCH_DIR`).
//!
//! A follower applies every committed write to this store, so its cost adds to every
//! commit, and a read is one file read. The store holds 1,000 keys with 100-byte values:
//!
//! * `kvstore/get`: read one existing key (open, read, close; the page cache holds it):
//!   the cost of a read served by the store.
//! * `kvstore/put`: replace one key's value, cycling over the 1,000 keys (temp file,
//!   fsync, rename, directory fsync): the cost of one durable write on its own.
//! * `kvstore/apply_batch/64`: 64 changes to distinct keys in one durable call (an
//!   fsync per file, one directory fsync); reported per change, so it shows what the
//!   batch saves over 64 `put`s.
//! * `kvstore/apply_unsynced/64`: the same 64 changes made visible but not durable
//!   (temp file and rename, no fsync), reported per change: what a change costs when
//!   the journal, not the store, makes it durable.
//! * `kvstore/sync/64`: `sync` after 64 unsynced changes (not timed): what one
//!   checkpoint pays to make them durable at once. `sync` flushes the whole file
//!   system, so other writers on the same disk add to it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use tpc::kvstore::{Change, KvStore, TxId};

mod common;

/// Keys in the store.
const KEYS: usize = 1_000;
/// Changes per batch.
const BATCH: usize = 64;

/// The keys and their initial 100-byte values.
struct Data {
    keys: Vec<String>,
    values: Vec<String>,
}

impl Data {
    fn new() -> Data {
        Data {
            keys: (0..KEYS).map(|i| format!("user{i:06}")).collect(),
            values: (0..KEYS).map(|i| format!("{i:0100}")).collect(),
        }
    }

    /// Batch number `round`: the next 64 keys (cycling), all set to one value.
    fn batch(&self, round: usize) -> Vec<Change<'_>> {
        let value = Some((self.values[round % KEYS].as_str(), VERSION));
        (0..BATCH)
            .map(|j| (self.keys[(round * BATCH + j) % KEYS].as_str(), value))
            .collect()
    }
}

/// The version every benchmark write carries.
const VERSION: TxId = TxId { epoch: 1, seq: 1 };

fn kvstore(c: &mut Criterion) {
    let dir = common::bench_dir();
    let store = KvStore::open(&dir.path().join("kv")).unwrap();
    let data = Data::new();
    let all: Vec<Change<'_>> = data
        .keys
        .iter()
        .zip(&data.values)
        .map(|(k, v)| (k.as_str(), Some((v.as_str(), VERSION))))
        .collect();
    store.apply_batch(&all).unwrap();

    let mut group = c.benchmark_group("kvstore");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    group.bench_function("get", |b| {
        b.iter(|| black_box(store.get(&data.keys[42]).unwrap().unwrap()))
    });

    // fsync-bound from here on: few samples, and flat sampling, so that 10 samples fit
    // the time even when one iteration takes ~65 fsyncs.
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat);
    let mut i = 0;
    group.bench_function("put", |b| {
        b.iter(|| {
            i += 1;
            store
                .put(&data.keys[i % KEYS], &data.values[(i + 1) % KEYS], VERSION)
                .unwrap()
        })
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    let mut round = 0;
    group.bench_function(BenchmarkId::new("apply_batch", BATCH), |b| {
        b.iter(|| {
            round += 1;
            store.apply_batch(&data.batch(round)).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("apply_unsynced", BATCH), |b| {
        b.iter(|| {
            round += 1;
            store.apply_unsynced(&data.batch(round)).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("sync", BATCH), |b| {
        b.iter_batched(
            || {
                round += 1;
                store.apply_unsynced(&data.batch(round)).unwrap()
            },
            |()| store.sync().unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, kvstore);
criterion_main!(benches);
