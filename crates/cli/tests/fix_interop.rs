//! FIX 4.4 interop against a real QuickFIX (C++ engine, PyPI `quickfix`) counterparty:
//! tests/interop/fix/peer.py as upstream provider (acceptor) and as downstream client
//! (initiator), the real `tickwire` binary in between. Run by scripts/test-fix-interop.sh,
//! which installs quickfix first; ignored in a plain `cargo test` (QuickFIX may be missing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod fix_peer;

use std::time::{Duration, Instant};

use common::{fix_session, get_json, publish, start_with_config, wait_for, Ws};
use fix_peer::Peer;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// Whether a peer event is an X with an entry at `px`.
fn x_with_px(e: &Value, px: &str) -> bool {
    e["ev"] == "X"
        && e["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|en| en["px"] == px)
}

/// Collects quote pushes until one has `bid`; returns all quotes seen on the way.
async fn ws_until_bid(ws: &mut Ws, bid: &str, bids: &mut Vec<Value>) {
    let end = Instant::now() + WAIT;
    loop {
        let left = end
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no quote with bid {bid}; saw {bids:?}"));
        let Some(p) = ws.try_push(left).await else {
            panic!("no quote with bid {bid}; saw {bids:?}")
        };
        if p["ch"] != "quotes.EURUSD" {
            continue;
        }
        let b = p["data"]["bid"].as_str().unwrap().to_string();
        bids.push(p["data"].clone());
        if b == bid {
            return;
        }
    }
}

/// No quote repeated, and bids never went back (the provider only raises them). A quote may
/// keep its bid when another field changed (a trade sets `last`).
fn no_duplicate_or_stale(quotes: &[Value]) -> bool {
    // Any repeat, not only an adjacent one: equal bids may sit between two copies.
    let mut seen = std::collections::HashSet::new();
    let unique = quotes.iter().all(|q| seen.insert(q.to_string()));
    // Same number of decimals in every test price, so text order is numeric order.
    unique
        && quotes
            .windows(2)
            .all(|w| w[0]["bid"].as_str().unwrap() <= w[1]["bid"].as_str().unwrap())
}

/// (a) + (c, upstream side): QuickFIX acceptor as provider; Tickwire's initiator ingests W/X;
/// quotes reach a WebSocket subscriber; gaps on both sides and a forced disconnect recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the quickfix Python package: run scripts/test-fix-interop.sh"]
async fn quickfix_provider_to_tickwire_initiator_to_websocket() {
    // `--port 0`: the peer picks its listening port and tells it (fix_peer::Peer::port).
    let mut peer = Peer::start(&[
        "provider",
        "--port",
        "0",
        "--sender",
        "PROV",
        "--target",
        "TW",
        "--heartbeat",
        "2",
    ]);
    let port = peer.port;
    peer.cmd("quote EURUSD 1.10000 1.10020 500000 700000");
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(
        &dir,
        &format!(
            r#"
[[fix.initiators]]
name = "prov"
host = "127.0.0.1"
port = {port}
sender_comp_id = "TW"
target_comp_id = "PROV"
heartbeat = 2
symbols = ["EURUSD"]
depth = 1
reconnect_min_ms = 300
reconnect_max_ms = 2000
"#
        ),
    );
    let v = peer.wait(|e| e["ev"] == "V");
    assert_eq!(v["id"], "tw-EURUSD");
    assert_eq!(v["sub_type"], "1");
    assert_eq!(v["update_type"], "1", "incremental updates requested");
    assert_eq!(v["depth"], "1");
    assert_eq!(v["symbols"], json!(["EURUSD"]));

    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let mut bids = Vec::new();
    // The W snapshot may land just before or after the subscribe: wait for the value.
    let r = wait_for(&srv, "/v1/latest/quotes.EURUSD", WAIT, |r| {
        r["data"]["bid"] == "1.10000"
    })
    .await;
    assert_eq!(r["data"]["ask"], "1.10020");
    assert_eq!(r["data"]["bid_size"], "500000");
    assert_eq!(r["data"]["ask_size"], "700000");
    let r = ws
        .cmd(json!({"op":"subscribe","channel":"quotes.EURUSD"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    ws_until_bid(&mut ws, "1.10000", &mut bids).await;

    // X: ten increasing quotes, each a Delete(old level) + New(new level) per side.
    for i in 1..=10 {
        peer.cmd(&format!("quote EURUSD 1.1{i:04} 1.1{:04}", i + 20));
    }
    ws_until_bid(&mut ws, "1.10010", &mut bids).await;
    let q: Value = get_json(&srv, "/v1/latest/quotes.EURUSD").await;
    assert_eq!(
        q["data"]["ask"], "1.10030",
        "top of book after deletes: {q}"
    );
    // Books are built by the book projection from the initiator's depth deltas: derived data
    // that follows the quotes within a flush interval, so wait for it.
    let book: Value = wait_for(&srv, "/v1/latest/book.EURUSD", WAIT, |b| {
        b["data"]["bids"] == json!([["1.10010", "1000000"]])
    })
    .await;
    assert_eq!(
        book["data"]["bids"],
        json!([["1.10010", "1000000"]]),
        "old levels deleted: {book}"
    );

    // A trade entry becomes a trades.EURUSD message.
    peer.cmd("trade EURUSD 1.10015 250000");
    let h = wait_for(&srv, "/v1/history/trades.EURUSD?from=0", WAIT, |h| {
        h["messages"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let m = &h["messages"][0];
    assert_eq!(m["data"]["price"], "1.10015", "{h}");
    assert_eq!(m["data"]["size"], "250000", "{h}");

    // Gap from the provider: it skips 5 MsgSeqNums. Tickwire asks for exactly the missing
    // range, QuickFIX (PersistMessages=N) gap-fills it, and the held X is then applied.
    peer.cmd("gap 5");
    peer.cmd("quote EURUSD 1.10011 1.10031");
    let rr = peer.wait(|e| e["ev"] == "admin_in" && e["type"] == "2");
    let begin: u64 = rr["begin"].as_str().unwrap().parse().unwrap();
    let end_: u64 = rr["end"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        end_ - begin + 1,
        5,
        "ResendRequest covers exactly the 5 skipped numbers: {rr}"
    );
    peer.wait(|e| e["ev"] == "admin_out" && e["type"] == "4" && e["gap_fill"] == "Y");
    ws_until_bid(&mut ws, "1.10011", &mut bids).await;

    // Gap seen by the provider: it expects lower numbers than Tickwire sends, so it asks
    // Tickwire to resend; Tickwire answers with SequenceReset-GapFill (heartbeats every 2 s
    // make sure a message arrives).
    peer.cmd("lower_target 3");
    peer.wait(|e| e["ev"] == "admin_out" && e["type"] == "2");
    let gf = peer.wait(|e| e["ev"] == "admin_in" && e["type"] == "4");
    assert_eq!(gf["gap_fill"], "Y", "{gf}");
    peer.cmd("quote EURUSD 1.10012 1.10032");
    ws_until_bid(&mut ws, "1.10012", &mut bids).await;

    // Forced disconnect with a gap across it: Tickwire reconnects, logs on, is told about the
    // skipped numbers by the Logon's MsgSeqNum, recovers them, and re-subscribes.
    peer.cmd("disconnect");
    peer.cmd("gap 3");
    peer.wait(|e| e["ev"] == "logon");
    peer.wait(|e| e["ev"] == "V");
    peer.cmd("quote EURUSD 1.10020 1.10040");
    ws_until_bid(&mut ws, "1.10020", &mut bids).await;
    assert!(
        peer.count(|e| e["ev"] == "admin_in" && e["type"] == "2") >= 2,
        "a ResendRequest after the reconnect too"
    );

    // No duplicate and no stale quote reached the subscriber.
    assert!(
        no_duplicate_or_stale(&bids),
        "quotes repeated or went back: {bids:?}"
    );
    let st = fix_session(&srv, "prov").await;
    assert_eq!(st["state"], "active", "{st}");
    assert!(st["logons"].as_u64().unwrap() >= 2, "{st}");
    assert!(st["gaps"].as_u64().unwrap() >= 2, "{st}");
    assert!(
        st["resend_requests_answered"].as_u64().unwrap() >= 1,
        "{st}"
    );
    assert_eq!(
        peer.count(|e| e["ev"] == "admin_in" && e["type"] == "3"),
        0,
        "QuickFIX rejected nothing"
    );
    peer.cmd("status");
    // The status event comes before the command's "ok", which cmd() already consumed.
    let s = peer
        .seen
        .iter()
        .rev()
        .find(|e| e["ev"] == "status")
        .cloned()
        .unwrap();
    assert_eq!(s["logged_on"], true);
}

/// (b) + (c, downstream side): QuickFIX initiator as client of Tickwire's acceptor: W then X
/// for quotes published over HTTP, Y for an unknown symbol, unsubscribe, gaps both ways,
/// forced disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the quickfix Python package: run scripts/test-fix-interop.sh"]
async fn quickfix_client_subscribes_to_tickwire_acceptor() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(
        &dir,
        r#"
[fix.acceptor]
listen = "127.0.0.1:0"
sender_comp_id = "TICKWIRE"
allowed_comp_ids = ["CLI1"]
"#,
    );
    let port = srv.fix_port();
    let pubq = |sym: &'static str, bid: &str, ask: &str| json!({"channel": format!("quotes.{sym}"), "data": {"bid": bid, "ask": ask, "bid_size": "1000000", "ask_size": "2000000"}});
    let (s, v) = publish(&srv, &pubq("EURUSD", "1.20000", "1.20010")).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = publish(&srv, &pubq("GBPUSD", "1.30000", "1.30010")).await;
    assert_eq!(s, 200);

    let port_s = port.to_string();
    let mut peer = Peer::start(&[
        "client",
        "--port",
        &port_s,
        "--sender",
        "CLI1",
        "--target",
        "TICKWIRE",
        "--heartbeat",
        "2",
    ]);
    peer.wait(|e| e["ev"] == "logon");

    peer.cmd("sub r1 EURUSD");
    let w = peer.wait(|e| e["ev"] == "W");
    assert_eq!(w["id"], "r1");
    assert_eq!(w["symbol"], "EURUSD");
    assert_eq!(
        w["entries"],
        json!([{"type":"0","px":"1.20000","size":"1000000"},{"type":"1","px":"1.20010","size":"2000000"}])
    );

    peer.cmd("sub r2 NOPE");
    let y = peer.wait(|e| e["ev"] == "Y");
    assert_eq!(y["id"], "r2");
    assert_eq!(y["reason"], "0", "UnknownSymbol: {y}");

    let (s, _) = publish(&srv, &pubq("EURUSD", "1.20001", "1.20010")).await;
    assert_eq!(s, 200);
    let x = peer.wait(|e| e["ev"] == "X");
    assert_eq!(x["id"], "r1");
    assert_eq!(
        x["entries"],
        json!([
            {"action":"2","type":"0","symbol":"EURUSD","px":"1.20000","size":"1000000"},
            {"action":"0","type":"0","symbol":"EURUSD","px":"1.20001","size":"1000000"}
        ]),
        "only the bid moved: {x}"
    );

    // Gap from the client: it skips 4 numbers, then subscribes. Tickwire asks for the range,
    // QuickFIX gap-fills, and the held V is served.
    peer.cmd("gap 4");
    peer.cmd("sub r3 GBPUSD");
    let rr = peer.wait(|e| e["ev"] == "admin_in" && e["type"] == "2");
    let begin: u64 = rr["begin"].as_str().unwrap().parse().unwrap();
    let end: u64 = rr["end"].as_str().unwrap().parse().unwrap();
    assert_eq!(end - begin + 1, 4, "{rr}");
    let w3 = peer.wait(|e| e["ev"] == "W");
    assert_eq!(w3["id"], "r3");
    assert_eq!(w3["entries"][0]["px"], "1.30000");

    // Gap seen by the client: it asks Tickwire to resend; Tickwire gap-fills (market data is
    // not replayed), then new quotes flow again.
    peer.cmd("lower_target 2");
    peer.wait(|e| e["ev"] == "admin_out" && e["type"] == "2");
    let gf = peer.wait(|e| e["ev"] == "admin_in" && e["type"] == "4");
    assert_eq!(gf["gap_fill"], "Y", "{gf}");
    for bid in ["1.20002", "1.20003"] {
        let (s, _) = publish(&srv, &pubq("EURUSD", bid, "1.20010")).await;
        assert_eq!(s, 200);
    }
    peer.wait(|e| x_with_px(e, "1.20003"));

    // Forced disconnect: QuickFIX reconnects, logs on again (sequence numbers continue), and
    // a new subscription gets the current value as W.
    peer.cmd("disconnect");
    peer.wait(|e| e["ev"] == "logon");
    peer.cmd("sub r1 EURUSD");
    let w = peer.wait(|e| e["ev"] == "W");
    assert_eq!(
        w["entries"][0]["px"], "1.20003",
        "snapshot after reconnect is the newest value"
    );
    let (s, _) = publish(&srv, &pubq("EURUSD", "1.20004", "1.20010")).await;
    assert_eq!(s, 200);
    peer.wait(|e| x_with_px(e, "1.20004"));

    // Unsubscribe: no more X for r1.
    peer.cmd("unsub r1 EURUSD");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = publish(&srv, &pubq("EURUSD", "1.20005", "1.20010")).await;
    assert_eq!(s, 200);
    assert!(
        peer.wait_for(Duration::from_secs(2), |e| e["ev"] == "X"
            && e["id"] == "r1")
            .is_none(),
        "X after unsubscribe"
    );

    // Every bid value arrived at most once in an X New entry: no duplicate quote, adjacent or
    // not (a resend after the reconnect would repeat an old one much later).
    let news: Vec<String> = peer
        .seen
        .iter()
        .filter(|e| e["ev"] == "X")
        .flat_map(|e| e["entries"].as_array().unwrap().clone())
        .filter(|en| en["action"] == "0" && en["type"] == "0")
        .map(|en| en["px"].as_str().unwrap().to_string())
        .collect();
    assert!(!news.is_empty(), "no X New bid entry at all");
    let mut first_seen = std::collections::HashSet::new();
    let repeated: Vec<&String> = news.iter().filter(|px| !first_seen.insert(*px)).collect();
    assert!(repeated.is_empty(), "duplicate X {repeated:?} in {news:?}");
    assert_eq!(
        peer.count(|e| e["ev"] == "admin_in" && e["type"] == "3"),
        0,
        "Tickwire rejected nothing"
    );
    assert_eq!(
        peer.count(|e| e["ev"] == "admin_out" && e["type"] == "3"),
        0,
        "QuickFIX rejected nothing"
    );
    let st = fix_session(&srv, "acceptor:CLI1").await;
    assert_eq!(st["state"], "active", "{st}");
    assert!(st["gaps"].as_u64().unwrap() >= 1, "{st}");
    assert!(
        st["resend_requests_answered"].as_u64().unwrap() >= 1,
        "{st}"
    );
}
