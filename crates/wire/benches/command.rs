//! ns per WebSocket command read: the plain publish a publisher sends in a loop (the frame
//! `bench/run.sh`'s ws-publish scenario sends, a 100-byte quote) by `scan_publish` and by the
//! general serde parser `parse_command` it falls back to; and a subscribe (general parser).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tickwire_wire::{parse_command, scan_publish};

fn frames() -> Vec<String> {
    (0..1000)
        .map(|i| {
            format!(
                r#"{{"id":{},"op":"publish","channel":"quotes.S{:04}","data":{{"t":"1733300000000000","s":"{}","bid":"1.08421","ask":"1.08423","pad":"xxxxxxxxxxxxxxxxxxxxxxxx"}}}}"#,
                100_000 + i,
                i % 100,
                5_000_000 + i
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let frames = frames();
    let mut g = c.benchmark_group("ws_command");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("publish, scan_publish", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(scan_publish(black_box(f)).unwrap());
            }
        })
    });
    g.bench_function("publish, parse_command", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(parse_command(black_box(f.as_bytes())).unwrap());
            }
        })
    });
    let subs: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                r#"{{"id":{i},"op":"subscribe","channel":"quotes.S{:04}"}}"#,
                i % 100
            )
        })
        .collect();
    g.bench_function("subscribe, parse_command", |b| {
        b.iter(|| {
            for f in &subs {
                black_box(parse_command(black_box(f.as_bytes())).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
