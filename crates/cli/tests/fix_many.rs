//! Hundreds of concurrent FIX sessions on the acceptor of the real binary, over real TCP, with
//! our own engine as the client: every session logs on, subscribes to a few symbols, gets a W
//! per symbol with the current quote, then exactly the X it should for a quote published over
//! HTTP, and logs out cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{publish, start_with_config, FixClient, Server};
use serde_json::json;
use tickwire_fix::{
    md::{
        MarketDataIncrementalRefresh, MarketDataSnapshotFullRefresh, MdEntryType, MdUpdateAction,
    },
    tags::msg_type,
};

const SESSIONS: usize = 300;
const SYMBOLS: usize = 12;
/// Generous: 2 shared cores, 300 clients and the server in one box.
const WAIT: Duration = Duration::from_secs(60);

fn sym(i: usize) -> String {
    format!("S{i:02}")
}

/// The symbols session `n` subscribes to: three different ones, spread so every symbol has
/// subscribers from many sessions.
fn symbols_of(n: usize) -> Vec<String> {
    vec![
        sym(n % SYMBOLS),
        sym((n + 5) % SYMBOLS),
        sym((n + 7) % SYMBOLS),
    ]
}

/// Quote `gen` of symbol `i`: distinct per symbol and generation, so a value received for the
/// wrong symbol or a stale one cannot pass.
fn quote(i: usize, gen: usize) -> (String, String, String, String) {
    (
        format!("1.{:03}{gen}0", 100 + i),
        format!("1.{:03}{gen}5", 100 + i),
        format!("{}000", 10 + i + gen),
        format!("{}000", 20 + i + gen),
    )
}

async fn publish_quote(srv: &Server, i: usize, gen: usize) {
    let (bid, ask, bid_size, ask_size) = quote(i, gen);
    let (s, v) = publish(
        srv,
        &json!({"channel": format!("quotes.{}", sym(i)),
                "data": {"bid": bid, "ask": ask, "bid_size": bid_size, "ask_size": ask_size}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

/// A config with the FIX acceptor accepting any client, on a port the server picks
/// ([`Server::fix_port`]); `top` goes above its table.
fn acceptor_config(top: &str) -> String {
    format!(
        r#"
{top}
[fix.acceptor]
listen = "127.0.0.1:0"
sender_comp_id = "TICKWIRE"
allowed_comp_ids = ["*"]
"#
    )
}

/// (symbol, action, type, px, size) of each X entry, owned; enums as their wire characters.
type Entry = (String, u8, u8, String, String);

fn entry(s: &str, a: MdUpdateAction, t: MdEntryType, px: String, size: String) -> Entry {
    (s.to_string(), a.as_byte(), t.as_byte(), px, size)
}

/// One client's whole life; returns an error text instead of panicking so the test can report
/// which session failed and why.
async fn session(
    n: usize,
    addr: String,
    subscribed: Arc<tokio::sync::Barrier>,
) -> Result<(), String> {
    let mut c = FixClient::new(&format!("CLI{n}"), "TICKWIRE");
    c.connect(&addr).await;
    if !c.until(WAIT, |c| c.logged_on).await {
        return Err(format!("no logon: {:?}", c.closed));
    }
    let syms = symbols_of(n);
    let id = format!("req-{n}");
    c.send(&common::md_request(
        &id,
        syms.iter().map(String::as_str).collect(),
    ))
    .await;
    // One W per symbol, in any order, with the generation-0 quote.
    let mut got_w = Vec::new();
    while got_w.len() < syms.len() {
        let m = c
            .next_app(WAIT)
            .await
            .ok_or_else(|| format!("W {} of {}: none ({:?})", got_w.len(), syms.len(), c.closed))?;
        if m.msg_type() != msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH {
            return Err(format!("expected W, got {}", m.msg_type()));
        }
        let w = MarketDataSnapshotFullRefresh::decode(&m.raw()).map_err(|e| e.to_string())?;
        let i: usize = w.symbol[1..].parse().map_err(|_| w.symbol.to_string())?;
        let (bid, ask, bid_size, ask_size) = quote(i, 0);
        let entries: Vec<_> = w
            .entries
            .iter()
            .map(|e| {
                (
                    e.entry_type,
                    e.px.map(|p| p.as_str().to_string()),
                    e.size.map(|z| z.as_str().to_string()),
                )
            })
            .collect();
        let want = vec![
            (MdEntryType::Bid, Some(bid), Some(bid_size)),
            (MdEntryType::Offer, Some(ask), Some(ask_size)),
        ];
        if w.md_req_id != Some(id.as_str()) || entries != want {
            return Err(format!("W for {}: {entries:?}, want {want:?}", w.symbol));
        }
        got_w.push(w.symbol.to_string());
    }
    got_w.sort();
    let mut want_syms = syms.clone();
    want_syms.sort();
    if got_w != want_syms {
        return Err(format!("W for {got_w:?}, subscribed {want_syms:?}"));
    }

    // The test publishes generation 1 once every session is here.
    subscribed.wait().await;

    // Exactly one X per subscribed symbol: each side moved, so Delete(old) + New(new).
    let mut xs: Vec<Vec<Entry>> = Vec::new();
    while xs.len() < syms.len() {
        let m = c
            .next_app(WAIT)
            .await
            .ok_or_else(|| format!("X {} of {}: none ({:?})", xs.len(), syms.len(), c.closed))?;
        if m.msg_type() != msg_type::MARKET_DATA_INCREMENTAL_REFRESH {
            return Err(format!("expected X, got {}", m.msg_type()));
        }
        let x = MarketDataIncrementalRefresh::decode(&m.raw()).map_err(|e| e.to_string())?;
        if x.md_req_id != Some(id.as_str()) {
            return Err(format!("X for request {:?}", x.md_req_id));
        }
        xs.push(
            x.entries
                .iter()
                .map(|e| {
                    entry(
                        e.symbol.unwrap_or_default(),
                        e.update_action,
                        e.entry_type.unwrap_or(MdEntryType::Imbalance),
                        e.px.map(|p| p.as_str().to_string()).unwrap_or_default(),
                        e.size.map(|z| z.as_str().to_string()).unwrap_or_default(),
                    )
                })
                .collect(),
        );
    }
    xs.sort();
    let mut want: Vec<Vec<Entry>> = syms
        .iter()
        .map(|s| {
            let i: usize = s[1..].parse().unwrap();
            let (b0, a0, bz0, az0) = quote(i, 0);
            let (b1, a1, bz1, az1) = quote(i, 1);
            vec![
                entry(s, MdUpdateAction::Delete, MdEntryType::Bid, b0, bz0),
                entry(s, MdUpdateAction::New, MdEntryType::Bid, b1, bz1),
                entry(s, MdUpdateAction::Delete, MdEntryType::Offer, a0, az0),
                entry(s, MdUpdateAction::New, MdEntryType::Offer, a1, az1),
            ]
        })
        .collect();
    want.sort();
    if xs != want {
        return Err(format!("X entries {xs:?}, want {want:?}"));
    }

    if !c.logout(WAIT).await {
        return Err(format!("logout did not complete: {:?}", c.closed));
    }
    // Nothing after the X: no duplicate, no gap, no reject on either side.
    if !c.inbox.is_empty() || !c.events.is_empty() {
        return Err(format!(
            "left over: {} messages, events {:?}",
            c.inbox.len(),
            c.events
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_sessions_log_on_subscribe_get_x_and_log_out() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, &acceptor_config(""));
    let port = srv.fix_port();
    for i in 0..SYMBOLS {
        publish_quote(&srv, i, 0).await;
    }

    let started = Instant::now();
    let addr = format!("127.0.0.1:{port}");
    // Everyone subscribed (W received) before the new quotes exist, so each session's update
    // must arrive as X.
    let subscribed = Arc::new(tokio::sync::Barrier::new(SESSIONS + 1));
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|n| tokio::spawn(session(n, addr.clone(), subscribed.clone())))
        .collect();
    tokio::time::timeout(WAIT, subscribed.wait())
        .await
        .expect("every session logged on and got its W");
    let all_subscribed = started.elapsed();
    for i in 0..SYMBOLS {
        publish_quote(&srv, i, 1).await;
    }

    let mut failures = Vec::new();
    for (n, t) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(WAIT, t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failures.push(format!("session {n}: {e}")),
            Ok(Err(e)) => failures.push(format!("session {n}: panicked: {e}")),
            Err(_) => failures.push(format!("session {n}: timed out")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {SESSIONS} sessions failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{SESSIONS} sessions: all subscribed after {all_subscribed:?}, done after {:?}",
        started.elapsed()
    );

    // The server saw every session log on once and end once (it records the end after the
    // client has seen the Logout answer, so poll).
    let end = Instant::now() + WAIT;
    loop {
        let ours: Vec<_> = common::fix_sessions(&srv)
            .await
            .into_iter()
            .filter(|s| s["name"].as_str().unwrap_or("").starts_with("acceptor:CLI"))
            .collect();
        let done = ours.len() == SESSIONS
            && ours
                .iter()
                .all(|s| s["logons"] == 1 && s["disconnects"] == 1 && s["gaps"] == 0);
        if done {
            break;
        }
        assert!(
            Instant::now() < end,
            "server status never showed {SESSIONS} sessions each logged on and off once: {ours:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A MarketDataRequest refused part-way (the session's subscription limit is reached at its
/// third symbol) takes nothing: the channels it had already subscribed are given back, so a
/// later request for other symbols fits in the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_part_way_keeps_no_subscriptions() {
    use tickwire_fix::md::MarketDataRequestReject;
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, &acceptor_config("max_subscriptions = 2"));
    let port = srv.fix_port();
    for i in 0..4 {
        publish_quote(&srv, i, 0).await;
    }
    let mut c = FixClient::new("LIMITED", "TICKWIRE");
    c.connect(&format!("127.0.0.1:{port}")).await;
    assert!(c.until(WAIT, |c| c.logged_on).await, "{:?}", c.closed);
    let request = common::md_request;
    c.send(&request("too-many", vec!["S00", "S01", "S02"]))
        .await;
    let m = c.next_app(WAIT).await.expect("an answer to the request");
    assert_eq!(m.msg_type(), msg_type::MARKET_DATA_REQUEST_REJECT);
    let y = MarketDataRequestReject::decode(&m.raw()).unwrap();
    assert_eq!(y.md_req_id, "too-many");
    // Two other symbols: within the limit only if the refused request left nothing behind.
    c.send(&request("fits", vec!["S02", "S03"])).await;
    for _ in 0..2 {
        let m = c.next_app(WAIT).await.expect("a W per symbol");
        assert_eq!(m.msg_type(), msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH);
    }
    assert!(c.logout(WAIT).await);
}

/// MarketDepth other than 1 is served from `book.<SYM>` (crates/cli/tests/fix_depth.rs): a
/// symbol with a quote but no book is refused with Y reason 0 (UnknownSymbol), never answered
/// with the top of book as if N levels had been served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_depth_of_a_symbol_without_a_book_is_refused() {
    use tickwire_fix::md::{MarketDataRequestReject, MdReqRejReason};
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, &acceptor_config(""));
    let port = srv.fix_port();
    publish_quote(&srv, 0, 0).await;
    let mut c = FixClient::new("DEPTH", "TICKWIRE");
    c.connect(&format!("127.0.0.1:{port}")).await;
    assert!(c.until(WAIT, |c| c.logged_on).await, "{:?}", c.closed);
    for depth in [5, 0] {
        let id = format!("depth-{depth}");
        let mut req = common::md_request(&id, vec!["S00"]);
        req.market_depth = depth;
        c.send(&req).await;
        let m = c.next_app(WAIT).await.expect("an answer to the request");
        assert_eq!(
            m.msg_type(),
            msg_type::MARKET_DATA_REQUEST_REJECT,
            "depth {depth}"
        );
        let y = MarketDataRequestReject::decode(&m.raw()).unwrap();
        assert_eq!(y.reason, Some(MdReqRejReason::UnknownSymbol), "{y:?}");
    }
    // Top of book is served.
    c.send(&common::md_request("top", vec!["S00"])).await;
    let m = c.next_app(WAIT).await.expect("a W");
    assert_eq!(m.msg_type(), msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH);
    assert!(c.logout(WAIT).await);
}
