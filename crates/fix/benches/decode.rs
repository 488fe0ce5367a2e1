//! ns/message for decoding (frame + checksum + header + typed body) and encoding W and X.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tickwire_fix::md::{
    IncrementalEntry, MarketDataIncrementalRefresh, MarketDataSnapshotFullRefresh, MdEntryType,
    MdUpdateAction, SnapshotEntry,
};
use tickwire_fix::{encode, AppMessage, Decimal, Header, RawMessage, Timestamp};

fn header() -> Header<'static> {
    Header {
        begin_string: "FIX.4.4",
        sender_comp_id: "TICKWIRE",
        target_comp_id: "CLIENT",
        seq_num: 123_456,
        sending_time: Timestamp(1_709_214_307_089),
        orig_sending_time: None,
    }
}

fn x(n: usize) -> MarketDataIncrementalRefresh<'static> {
    let sides = [MdEntryType::Bid, MdEntryType::Offer];
    MarketDataIncrementalRefresh {
        md_req_id: Some("req-1"),
        entries: (0..n)
            .map(|i| IncrementalEntry {
                entry_type: Some(sides[i % 2]),
                entry_id: Some(if i % 2 == 0 { "b1" } else { "o1" }),
                symbol: Some("EUR/USD"),
                px: Some(Decimal::new(if i % 2 == 0 { "1.08543" } else { "1.08547" }).unwrap()),
                size: Some(Decimal::new("1000000").unwrap()),
                ..IncrementalEntry::new(MdUpdateAction::Change)
            })
            .collect(),
    }
}

fn w() -> MarketDataSnapshotFullRefresh<'static> {
    MarketDataSnapshotFullRefresh {
        md_req_id: Some("req-1"),
        symbol: "EUR/USD",
        entries: vec![
            SnapshotEntry {
                entry_type: MdEntryType::Bid,
                px: Some(Decimal::new("1.08543").unwrap()),
                size: Some(Decimal::new("1000000").unwrap()),
                date: None,
                time: None,
            },
            SnapshotEntry {
                entry_type: MdEntryType::Offer,
                px: Some(Decimal::new("1.08547").unwrap()),
                size: Some(Decimal::new("500000").unwrap()),
                date: None,
                time: None,
            },
        ],
    }
}

fn bench_pair<M: AppMessage>(
    c: &mut Criterion,
    name: &str,
    msg: &M,
    decode: for<'a> fn(&RawMessage<'a>) -> usize,
) {
    let bytes = encode(&header(), msg).unwrap();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let raw = RawMessage::parse(black_box(&bytes)).unwrap();
            black_box(decode(&raw))
        })
    });
    g.bench_function("encode", |b| {
        b.iter(|| black_box(encode(black_box(&header()), black_box(msg)).unwrap()))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_pair(c, "W_2_entries", &w(), |raw| {
        MarketDataSnapshotFullRefresh::decode(raw)
            .unwrap()
            .entries
            .len()
    });
    bench_pair(c, "X_2_entries", &x(2), |raw| {
        MarketDataIncrementalRefresh::decode(raw)
            .unwrap()
            .entries
            .len()
    });
    bench_pair(c, "X_10_entries", &x(10), |raw| {
        MarketDataIncrementalRefresh::decode(raw)
            .unwrap()
            .entries
            .len()
    });
    let bytes = encode(&header(), &x(2)).unwrap();
    c.bench_function("X_2_entries/frame_only", |b| {
        b.iter(|| tickwire_fix::frame(black_box(&bytes), 65_536).unwrap())
    });
}

criterion_group!(decode_benches, benches);
criterion_main!(decode_benches);
