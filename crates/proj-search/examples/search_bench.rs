//! Indexing throughput and search latency of the search projection, for bench/search.sh.
//!
//!     search_bench CORPUS.jsonl QUERIES.txt INDEX_DIR REPEAT
//!
//! The corpus has one message a line (`{"c":channel,"s":sub,"t":text,"ts":unix_ms}`), the
//! queries one a line. Messages go through the projection's own `apply` and `checkpoint`
//! (a commit with positions every second of wall time, as the runner does), so the figure is
//! the server's indexing path without the stream read. Then each query runs `REPEAT` times
//! (newest first, 20 hits with snippets, over every channel). Prints one JSON object.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::BufRead,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tickwire_gateway::NamespaceScope;
use tickwire_model::{Channel, Publication};
use tickwire_proj_search::SearchProjection;
use tickwire_projection::{Positions, Projection};
use tickwire_wire::SearchQuery;

#[derive(serde::Deserialize)]
struct Line {
    c: String,
    s: String,
    t: String,
    ts: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(
        args.len() == 5,
        "usage: search_bench CORPUS.jsonl QUERIES.txt INDEX_DIR REPEAT"
    );
    let corpus = std::fs::File::open(&args[1]).expect("corpus");
    let queries: Vec<String> = std::fs::read_to_string(&args[2])
        .expect("queries")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let repeat: usize = args[4].parse().expect("REPEAT");
    let (state, mut p) = SearchProjection::open(std::path::Path::new(&args[3])).expect("index");
    p.restore().expect("restore");

    // Read and shape every message first: the clock covers indexing only.
    let mut pubs = Vec::new();
    for (i, line) in std::io::BufReader::new(corpus).lines().enumerate() {
        let l: Line = serde_json::from_str(&line.expect("line")).expect("json");
        let data = serde_json::json!({"from": {"sub": l.s}, "text": l.t}).to_string();
        pubs.push(Publication {
            channel: Channel::parse(&l.c).expect("channel"),
            offset: i as u64,
            timestamp: l.ts * 1_000_000,
            msg_id: None,
            data: Bytes::from(data),
        });
    }
    let n = pubs.len();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut positions = Positions::default();
    for (i, pb) in pubs.iter().enumerate() {
        p.apply(0, pb);
        if last.elapsed() >= Duration::from_secs(1) {
            positions.next.insert("chat".into(), i as u64 + 1);
            p.checkpoint(&positions).expect("checkpoint");
            last = Instant::now();
        }
    }
    positions.next.insert("chat".into(), n as u64);
    p.checkpoint(&positions).expect("checkpoint");
    let index_s = started.elapsed().as_secs_f64();
    drop(pubs);

    let scope = vec![("chat".to_string(), NamespaceScope::All)];
    let mut lat = Vec::new();
    let mut hits_total = 0usize;
    for _ in 0..repeat {
        for q in &queries {
            let query = SearchQuery {
                q: q.clone(),
                limit: Some(20),
                ..Default::default()
            };
            let t = Instant::now();
            let r = state.run(&query, &scope, &|_| true).expect("search");
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            hits_total += r.hits.len();
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{}",
        serde_json::json!({
            "engine": "tantivy",
            "messages": n,
            "index_seconds": index_s,
            "messages_per_second": n as f64 / index_s,
            "docs": state.num_docs(),
            "queries": lat.len(),
            "hits_returned": hits_total,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": lat.last().copied().unwrap_or(0.0),
        })
    );
}
