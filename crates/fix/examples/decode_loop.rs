//! Decodes the bench's 2-entry X in a loop, for `perf stat -e task-clock` / `perf record`.
//!
//! The machine this is tuned on is shared, and criterion's wall-clock figures swing by 20–50 %
//! with other people's builds; CPU time of this process divided by the iteration count does not
//! count the time it was descheduled, so it makes before/after comparisons under load usable.
//!
//! `cargo run --release -p tickwire-fix --example decode_loop -- [iterations]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;
use tickwire_fix::md::{
    IncrementalEntry, MarketDataIncrementalRefresh, MdEntryType, MdUpdateAction,
};
use tickwire_fix::{encode, Decimal, Header, RawMessage, Timestamp};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(5_000_000, |a| a.parse().expect("iterations"));
    let header = Header {
        begin_string: "FIX.4.4",
        sender_comp_id: "TICKWIRE",
        target_comp_id: "CLIENT",
        seq_num: 123_456,
        sending_time: Timestamp(1_709_214_307_089),
        orig_sending_time: None,
    };
    // The same message as benches/decode.rs "X_2_entries".
    let sides = [MdEntryType::Bid, MdEntryType::Offer];
    let x = MarketDataIncrementalRefresh {
        md_req_id: Some("req-1"),
        entries: (0..2)
            .map(|i| IncrementalEntry {
                entry_type: Some(sides[i % 2]),
                entry_id: Some(if i % 2 == 0 { "b1" } else { "o1" }),
                symbol: Some("EUR/USD"),
                px: Some(Decimal::new(if i % 2 == 0 { "1.08543" } else { "1.08547" }).unwrap()),
                size: Some(Decimal::new("1000000").unwrap()),
                ..IncrementalEntry::new(MdUpdateAction::Change)
            })
            .collect(),
    };
    let bytes = encode(&header, &x).unwrap();
    let mut entries = Vec::new();
    let t = Instant::now();
    for _ in 0..n {
        let raw = RawMessage::parse(black_box(&bytes)).unwrap();
        MarketDataIncrementalRefresh::decode_into(&raw, &mut entries).unwrap();
        black_box(entries.len());
    }
    let wall = t.elapsed();
    println!(
        "{n} decodes, wall {:.1} ns/decode",
        wall.as_nanos() as f64 / n as f64
    );
}
