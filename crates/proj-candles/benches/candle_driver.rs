//! Throughput of the live candle driver's per-message path on one core: the real
//! `CandleProjection::apply` (quote JSON parse, decimal parse, 12 resolutions, live-bar
//! conflation, closed-bar routing) over 1,000 symbols, plus the flush that hands the conflated
//! live bars to the publisher. Run: `cargo bench -p tickwire-proj-candles --bench candle_driver`.
//!
//! The ingest benchmark feeds this path from HTTP publishes of L1 quotes. The projection reads
//! the stream behind the writers, so ticks/s here bound how far behind live candles run under
//! a given ingest rate, and what CPU they take from it on a 2-core machine.
//!
//! Time is the bench thread's on-CPU time (`/proc/thread-self/schedstat`), not wall time: the
//! machine is shared, and under a load average above its core count wall time mostly measures
//! how often the scheduler ran us. Where schedstat is unavailable it falls back to wall time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tickwire_hub::Channel;
use tickwire_proj_candles::DriverBench;

const SYMBOLS: usize = 1_000;
const TICKS_PER_SYMBOL: usize = 200;
const N: usize = SYMBOLS * TICKS_PER_SYMBOL;
/// 2024-01-01 00:00:00 UTC, unix ms.
const T0: i64 = 1_704_067_200_000;
/// Event time advances 1 ms per this many ticks (100K ticks/s of event time): the 200K ticks
/// span 2 s, so each symbol also closes 1 s and (some) 5 s bars, as a live feed does.
const TICKS_PER_MS: usize = 100;

/// Nanoseconds this thread has run on a CPU, if the kernel reports it.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Starts a measurement; the returned closure gives the elapsed CPU (or wall) time.
fn clock() -> impl Fn() -> Duration {
    let cpu = thread_cpu_ns();
    let wall = Instant::now();
    move || match (cpu, thread_cpu_ns()) {
        (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
        _ => wall.elapsed(),
    }
}

struct Msg {
    channel: Channel,
    data: Vec<u8>,
    log_ts_nanos: u64,
}

/// Deterministic quotes in the shape the ingest benchmark publishes
/// (`{"bid":"1.08123","ask":"1.08125","ts":...}`): a per-symbol random walk at 5 decimals (3 for
/// every tenth symbol, JPY-like), symbols in a shuffled round-robin order.
fn messages() -> Vec<Msg> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let channels: Vec<Channel> = (0..SYMBOLS)
        .map(|i| Channel::parse(&format!("quotes.S{i:04}")).unwrap())
        .collect();
    let mut mantissa: Vec<i64> = (0..SYMBOLS)
        .map(|i| 100_000 + (i as i64 * 7_919) % 50_000)
        .collect();
    let mut order: Vec<usize> = (0..SYMBOLS).collect();
    let mut out = Vec::with_capacity(N);
    for round in 0..TICKS_PER_SYMBOL {
        // Fisher-Yates with the LCG: a different symbol order every round.
        for i in (1..SYMBOLS).rev() {
            order.swap(i, next() as usize % (i + 1));
        }
        for (k, &sym) in order.iter().enumerate() {
            let i = round * SYMBOLS + k;
            let ts = T0 + (i / TICKS_PER_MS) as i64;
            mantissa[sym] += (next() % 5) as i64 - 2;
            let (bid, ask) = (mantissa[sym], mantissa[sym] + 1 + (next() % 4) as i64);
            let scale = if sym % 10 == 0 { 3 } else { 5 };
            let data = format!(
                r#"{{"bid":"{}","ask":"{}","ts":{ts}}}"#,
                tickwire_candles::Decimal::new(bid, scale),
                tickwire_candles::Decimal::new(ask, scale),
            );
            out.push(Msg {
                channel: channels[sym].clone(),
                data: data.into_bytes(),
                // Appended ~2 ms after the event.
                log_ts_nanos: ((ts + 2) as u64) * 1_000_000,
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let msgs = messages();
    let dir = tempfile::tempdir().unwrap();
    let mut driver = DriverBench::open(dir.path()).unwrap();
    let mut group = c.benchmark_group("candle_driver");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("apply_1000_symbols_all12_200k_quotes", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Fresh state each pass so the same timestamps are not judged late.
                driver.reset();
                let before = driver.ticks();
                let elapsed = clock();
                for (k, m) in msgs.iter().enumerate() {
                    driver.apply(&m.channel, &m.data, m.log_ts_nanos);
                    // The live loop flushes every 200 ms; at the 2M quotes/s target that is
                    // every 400K ticks, so one flush per 100K is on the heavy side.
                    if k % 100_000 == 99_999 {
                        assert!(driver.flush() > 0);
                    }
                }
                total += elapsed();
                assert_eq!(driver.ticks() - before, N as u64, "every quote must count");
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
