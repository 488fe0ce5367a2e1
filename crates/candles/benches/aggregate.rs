//! Throughput of candle aggregation: 1,000,000 ticks into 1m bars (batch and live), plus the
//! live aggregator over all 12 resolutions. Run: `cargo bench -p tickwire-candles --bench aggregate`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tickwire_candles::{
    aggregate, Aggregator, AggregatorConfig, Decimal, PriceSource, Resolution, Tick,
};

const N: usize = 1_000_000;
/// 2024-01-01 00:00:00 UTC.
const T0: i64 = 1_704_067_200_000;

/// Deterministic EURUSD-like stream: 0-399 ms apart (about 2.3 days, ~3,300 one-minute bars),
/// 80% quotes and 20% trades (half with sizes), prices a random walk at 5 decimals.
fn ticks() -> Vec<Tick> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut ts = T0;
    let mut mantissa: i64 = 108_500;
    (0..N)
        .map(|_| {
            ts += (next() % 400) as i64;
            mantissa += (next() % 5) as i64 - 2;
            let price = Decimal::new(mantissa, 5);
            match next() % 10 {
                0 => Tick::trade(
                    ts,
                    price,
                    Some(Decimal::new((next() % 1_000) as i64 + 1, 2)),
                ),
                1 => Tick::trade(ts, price, None),
                _ => Tick::quote(ts, price, Decimal::new(mantissa + 2, 5)),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let ticks = ticks();
    let mut group = c.benchmark_group("candles");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);

    group.bench_function("batch_aggregate_1m_1M_ticks", |b| {
        b.iter(|| aggregate(black_box(&ticks), Resolution::Min1, PriceSource::Mid))
    });

    for (name, resolutions) in [
        ("live_update_1m_1M_ticks", vec![Resolution::Min1]),
        ("live_update_all12_1M_ticks", Resolution::ALL.to_vec()),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut agg = Aggregator::new(AggregatorConfig {
                    resolutions: resolutions.clone(),
                    price_source: PriceSource::Mid,
                    late_tolerance_ms: 5_000,
                })
                .unwrap();
                // The driver reuses one buffer, as the hub would.
                let mut out = Vec::with_capacity(32);
                let mut published = 0usize;
                for tick in &ticks {
                    agg.update_into(black_box(tick), &mut out);
                    published += out.len();
                    out.clear();
                }
                published
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
