//! Append throughput (100-byte values, batches of 1/64/1024, with and without an fsync per batch)
//! and read throughput. Run: `cargo bench -p tickwire-log --bench append -- --quick`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tickwire_log::{Entry, Log, LogConfig};

const VALUE_BYTES: usize = 100;

fn cfg() -> LogConfig {
    LogConfig {
        // Bounded disk use however long criterion runs.
        retention_bytes: Some(512 * 1024 * 1024),
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let value = [0x5au8; VALUE_BYTES];
    let keys: Vec<[u8; 8]> = (0..1024u64).map(|i| (i % 1000).to_be_bytes()).collect();
    let mut group = c.benchmark_group("append");
    group.measurement_time(Duration::from_secs(3));
    for sync in [false, true] {
        for batch in [1usize, 64, 1024] {
            let entries: Vec<Entry<'_>> = keys[..batch]
                .iter()
                .map(|k| Entry {
                    timestamp: 1,
                    key: k,
                    value: &value,
                })
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), cfg()).unwrap();
            let mut n = 0u64;
            group.throughput(Throughput::Elements(batch as u64));
            let name = if sync { "sync_each_batch" } else { "no_sync" };
            group.bench_with_input(BenchmarkId::new(name, batch), &batch, |b, _| {
                b.iter(|| {
                    log.append(&entries).unwrap();
                    if sync {
                        log.sync().unwrap();
                    }
                    n += 1;
                    if n & 4095 == 0 {
                        log.enforce_retention(0).unwrap();
                    }
                });
            });
        }
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let value = [0x5au8; VALUE_BYTES];
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), cfg()).unwrap();
    let entries: Vec<Entry<'_>> = (0..1024)
        .map(|_| Entry {
            timestamp: 1,
            key: b"EURUSD",
            value: &value,
        })
        .collect();
    const RECORDS: u64 = 1024 * 256;
    for _ in 0..RECORDS / 1024 {
        log.append(&entries).unwrap();
    }
    let reader = log.reader();
    let mut group = c.benchmark_group("read");
    group.measurement_time(Duration::from_secs(3));
    for max_records in [1usize, 1024] {
        group.throughput(Throughput::Elements(max_records as u64));
        let mut from = 0u64;
        group.bench_with_input(
            BenchmarkId::new("records_per_call", max_records),
            &max_records,
            |b, &m| {
                b.iter(|| {
                    let recs = reader.read(from, m, usize::MAX).unwrap();
                    from = (from + 7919 * m as u64) % (RECORDS - m as u64);
                    recs.len()
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
