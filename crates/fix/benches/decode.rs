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

/// `decode` gets the entries vector reused across messages, as the initiator does.
fn bench_pair<'b, M: AppMessage>(
    c: &mut Criterion,
    name: &str,
    msg: &M,
    bytes: &'b [u8],
    mut decode: impl FnMut(&RawMessage<'b>) -> usize,
) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let raw = RawMessage::parse(black_box(bytes)).unwrap();
            black_box(decode(&raw))
        })
    });
    g.bench_function("encode", |b| {
        b.iter(|| black_box(encode(black_box(&header()), black_box(msg)).unwrap()))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let (w, x2, x10) = (w(), x(2), x(10));
    let w_bytes = encode(&header(), &w).unwrap();
    let x2_bytes = encode(&header(), &x2).unwrap();
    let x10_bytes = encode(&header(), &x10).unwrap();
    let mut snap = Vec::new();
    bench_pair(c, "W_2_entries", &w, &w_bytes, |raw| {
        MarketDataSnapshotFullRefresh::decode_into(raw, &mut snap).unwrap();
        snap.len()
    });
    let mut inc = Vec::new();
    bench_pair(c, "X_2_entries", &x2, &x2_bytes, |raw| {
        MarketDataIncrementalRefresh::decode_into(raw, &mut inc).unwrap();
        inc.len()
    });
    bench_pair(c, "X_10_entries", &x10, &x10_bytes, |raw| {
        MarketDataIncrementalRefresh::decode_into(raw, &mut inc).unwrap();
        inc.len()
    });
    // The allocating API, comparable with the figures from before decode_into existed.
    c.bench_function("X_2_entries/decode_alloc", |b| {
        b.iter(|| {
            let raw = RawMessage::parse(black_box(&x2_bytes)).unwrap();
            black_box(
                MarketDataIncrementalRefresh::decode(&raw)
                    .unwrap()
                    .entries
                    .len(),
            )
        })
    });
    c.bench_function("X_2_entries/frame_only", |b| {
        b.iter(|| tickwire_fix::frame(black_box(&x2_bytes), 65_536).unwrap())
    });
}

criterion_group!(decode_benches, benches);
criterion_main!(decode_benches);
