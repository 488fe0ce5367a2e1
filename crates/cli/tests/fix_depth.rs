//! The FIX acceptor serves MarketDepth N (0: the full book) from the same books as every other
//! edge (`book.<SYM>`, built by the book projection): the real binary, depth published over
//! HTTP, and our own FIX engine as the client. Three requests on one session — MarketDepth 3
//! and 0 with incremental refresh, MarketDepth 5 with full refreshes — each keep a local book
//! from W then X (or W); after every batch of random level changes and deletes (some deeper
//! than N, some of the best levels, so deeper levels come into view) each local book must be
//! the best N levels of the server's book, prices and sizes exactly as published.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use common::{get_json, publish, start_with_config, FixClient, Server};
use serde_json::{json, Value};
use tickwire_fix::{
    md::{
        MarketDataIncrementalRefresh, MarketDataRequest, MarketDataRequestReject,
        MarketDataSnapshotFullRefresh, MdEntryType, MdReqRejReason, MdUpdateAction, MdUpdateType,
        SubscriptionRequestType,
    },
    tags::msg_type,
};

const WAIT: Duration = Duration::from_secs(20);
const SYM: &str = "FXD";

/// The FIX acceptor on a port the server picks ([`Server::fix_port`]).
const CONFIG: &str = r#"
[fix.acceptor]
listen = "127.0.0.1:0"
sender_comp_id = "TICKWIRE"
allowed_comp_ids = ["*"]
"#;

fn request<'a>(id: &'a str, depth: u32, update: MdUpdateType) -> MarketDataRequest<'a> {
    MarketDataRequest {
        md_req_id: id,
        subscription_request_type: SubscriptionRequestType::SnapshotPlusUpdates,
        market_depth: depth,
        md_update_type: Some(update),
        entry_types: vec![MdEntryType::Bid, MdEntryType::Offer],
        symbols: vec![SYM],
    }
}

/// (is bid, price text, size text).
type Level = (bool, String, String);

/// A client's book for one request, keyed by price text as the acceptor sends levels.
#[derive(Default, Debug)]
struct Local {
    levels: HashMap<(bool, String), String>,
    messages: usize,
}

impl Local {
    fn set(&self) -> BTreeSet<Level> {
        self.levels
            .iter()
            .map(|((bid, p), z)| (*bid, p.clone(), z.clone()))
            .collect()
    }
}

/// The best `n` levels a side (0: all) of the server's book, from `latest`.
fn best(book: &Value, n: usize) -> BTreeSet<Level> {
    let side = |key: &str, bid: bool| {
        let levels = book[key].as_array().unwrap();
        let n = if n == 0 { levels.len() } else { n };
        levels
            .iter()
            .take(n)
            .map(|l| {
                (
                    bid,
                    l[0].as_str().unwrap().to_string(),
                    l[1].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    side("bids", true)
        .into_iter()
        .chain(side("asks", false))
        .collect()
}

/// Applies every market data message waiting (or arriving within `wait`) to its request's book.
async fn take(c: &mut FixClient, books: &mut HashMap<String, Local>, wait: Duration) {
    while let Some(m) = c.next_app(wait).await {
        let raw = m.raw();
        match m.msg_type() {
            t if t == msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH => {
                let w = MarketDataSnapshotFullRefresh::decode(&raw).unwrap();
                assert_eq!(w.symbol, SYM);
                let b = books
                    .get_mut(w.md_req_id.expect("W names its request"))
                    .expect("a W for a known request");
                b.levels.clear();
                b.messages += 1;
                for e in &w.entries {
                    let bid = match e.entry_type {
                        MdEntryType::Bid => true,
                        MdEntryType::Offer => false,
                        other => panic!("only bid and offer entries: {other:?}"),
                    };
                    let px = e.px.unwrap().as_str().to_string();
                    let z = e.size.unwrap().as_str().to_string();
                    assert!(b.levels.insert((bid, px), z).is_none(), "a level twice");
                }
            }
            t if t == msg_type::MARKET_DATA_INCREMENTAL_REFRESH => {
                let x = MarketDataIncrementalRefresh::decode(&raw).unwrap();
                let b = books
                    .get_mut(x.md_req_id.expect("X names its request"))
                    .expect("an X for a known request");
                b.messages += 1;
                assert!(!x.entries.is_empty(), "an X with no entry");
                for e in &x.entries {
                    assert_eq!(e.symbol, Some(SYM));
                    let bid = e.entry_type == Some(MdEntryType::Bid);
                    let key = (bid, e.px.unwrap().as_str().to_string());
                    let z = e.size.map(|z| z.as_str().to_string());
                    match e.update_action {
                        MdUpdateAction::New => {
                            assert!(
                                b.levels.insert(key, z.unwrap()).is_none(),
                                "New on a held level"
                            )
                        }
                        MdUpdateAction::Change => {
                            assert!(
                                b.levels.insert(key, z.unwrap()).is_some(),
                                "Change of a level not held"
                            )
                        }
                        MdUpdateAction::Delete => {
                            assert!(
                                b.levels.remove(&key).is_some(),
                                "Delete of a level not held"
                            )
                        }
                    }
                }
            }
            other => panic!("unexpected message type {other}"),
        }
    }
}

async fn publish_depth(srv: &Server, data: Value) {
    let (st, body) = publish(
        srv,
        &json!({"channel": format!("depth.{SYM}"), "data": data}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
}

/// The server's book once the projection has published everything sent so far (its `seq`
/// stops moving).
async fn settled(srv: &Server) -> Value {
    let mut last = Value::Null;
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = get_json(srv, &format!("/v1/latest/book.{SYM}")).await["data"].clone();
        if now["seq"] == last["seq"] && !now["seq"].is_null() {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_market_depth_n_is_served_from_the_books_as_w_then_x() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, CONFIG);
    let port = srv.fix_port();

    // 15 levels a side against the book channel's 10 (the default `[books] depth`); prices of
    // several precisions.
    let bid_px = |i: u64| format!("1.{:04}", 5000 - i * 7);
    let ask_px = |i: u64| format!("1.{:04}", 5001 + i * 7);
    let mut levels = Vec::new();
    for i in 0..15 {
        levels.push(json!({"side": "bid", "price": bid_px(i), "size": format!("{}", i + 1)}));
        levels.push(json!({"side": "ask", "price": ask_px(i), "size": format!("{}.5", i + 1)}));
    }
    publish_depth(&srv, json!({"snapshot": levels})).await;
    let book = settled(&srv).await;

    let mut c = FixClient::new("DEPTHCLI", "TICKWIRE");
    c.connect(&format!("127.0.0.1:{port}")).await;
    assert!(c.until(WAIT, |c| c.logged_on).await, "{:?}", c.closed);

    // Refusals first: trades are not in a book, and a symbol without a book is unknown.
    let mut with_trades = request("trades", 5, MdUpdateType::IncrementalRefresh);
    with_trades.entry_types.push(MdEntryType::Trade);
    c.send(&with_trades).await;
    let mut no_book = request("nobook", 5, MdUpdateType::IncrementalRefresh);
    no_book.symbols = vec!["NOBOOK"];
    c.send(&no_book).await;
    for want in [
        MdReqRejReason::UnsupportedMdEntryType,
        MdReqRejReason::UnknownSymbol,
    ] {
        let m = c.next_app(WAIT).await.expect("a Y");
        assert_eq!(m.msg_type(), msg_type::MARKET_DATA_REQUEST_REJECT);
        let y = MarketDataRequestReject::decode(&m.raw()).unwrap();
        assert_eq!(y.reason, Some(want), "{y:?}");
    }

    let reqs = [
        ("d3", 3u32, MdUpdateType::IncrementalRefresh),
        ("d0", 0, MdUpdateType::IncrementalRefresh),
        ("d5w", 5, MdUpdateType::FullRefresh),
    ];
    let mut books: HashMap<String, Local> = HashMap::new();
    for (id, depth, update) in reqs {
        books.insert(id.to_string(), Local::default());
        c.send(&request(id, depth, update)).await;
    }
    take(&mut c, &mut books, Duration::from_millis(500)).await;
    for (id, depth, _) in reqs {
        let b = &books[id];
        assert_eq!(b.messages, 1, "{id}: one W");
        assert_eq!(b.set(), best(&book, depth as usize), "{id}");
    }
    // Full depth is every level the channel keeps: 10 a side.
    assert_eq!(books["d0"].levels.len(), 20);

    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..12 {
        let mut updates = Vec::new();
        for _ in 0..1 + rnd(5) {
            let i = rnd(16);
            let (side, px) = if rnd(2) == 0 {
                ("bid", bid_px(i))
            } else {
                ("ask", ask_px(i))
            };
            updates.push(if rnd(3) == 0 {
                json!({"action": "delete", "side": side, "price": px})
            } else {
                json!({"action": "change", "side": side, "price": px, "size": format!("{}.{}", rnd(90) + 1, rnd(10))})
            });
        }
        // Every few rounds the best bid goes: the next levels come into every view.
        if round % 4 == 1 {
            let top = get_json(&srv, &format!("/v1/latest/book.{SYM}")).await["data"]["bids"][0][0]
                .clone();
            updates.push(json!({"action": "delete", "side": "bid", "price": top}));
        }
        publish_depth(&srv, json!({"updates": updates})).await;
        // Until every request's book is the server's best N (the projection and the
        // acceptor take their time on a busy machine), then the same once more.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let book = settled(&srv).await;
            take(&mut c, &mut books, Duration::from_millis(200)).await;
            let wrong: Vec<_> = reqs
                .iter()
                .filter(|(id, depth, _)| books[*id].set() != best(&book, *depth as usize))
                .map(|(id, _, _)| *id)
                .collect();
            if wrong.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "after round {round}, {wrong:?} differ from the server's book {book}: {books:?}"
            );
        }
    }
    // Changes deeper than a request's N send it nothing: the MarketDepth 3 request got fewer
    // messages than the full-depth one.
    assert!(
        books["d3"].messages < books["d0"].messages,
        "{} vs {}",
        books["d3"].messages,
        books["d0"].messages
    );
    assert!(c.logout(WAIT).await);
}
