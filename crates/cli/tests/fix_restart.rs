//! FIX sequence numbers survive a SIGKILL of the server: the real binary is killed mid-session
//! and restarted on the same data directory, and the counterparty logs on again WITHOUT
//! ResetSeqNumFlag. FIX 4.4 requires both sides to carry on from where they were: the server
//! expects exactly the client's next MsgSeqNum (no ResendRequest, no "too low" logout) and its
//! own messages continue above the ones it sent before the kill (the peer sees no gap and no
//! reset). Checked for the acceptor (our engine as the client) and for the initiator (our
//! engine as the provider).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{fix_session, publish, start_with_config, wait_for, FixClient, Server};
use serde_json::{json, Value};
use tickwire_fix::{
    md::{MarketDataIncrementalRefresh, MarketDataSnapshotFullRefresh, MdEntryType, SnapshotEntry},
    tags::msg_type,
    Decimal, SeqNums,
};

const WAIT: Duration = Duration::from_secs(30);

/// Connects and logs on, retrying while the restarted server is not listening yet.
async fn connect_when_listening(c: &mut FixClient, addr: &str) {
    let end = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < end, "acceptor never listened on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.connect(addr).await;
}

async fn subscribe(c: &mut FixClient, id: &str, sym: &str) {
    c.send(&common::md_request(id, vec![sym])).await;
}

/// The next message, which must be a W for `sym` with `bid`; returns its MsgSeqNum.
async fn expect_w(c: &mut FixClient, sym: &str, bid: &str) -> u64 {
    let m = c.next_app(WAIT).await.expect("a W");
    assert_eq!(m.msg_type(), msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH);
    let w = MarketDataSnapshotFullRefresh::decode(&m.raw()).unwrap();
    assert_eq!(w.symbol, sym);
    assert_eq!(w.entries[0].px.unwrap().as_str(), bid, "{w:?}");
    m.seq_num().unwrap()
}

fn quote(sym: &str, bid: &str) -> Value {
    json!({"channel": format!("quotes.{sym}"), "data": {"bid": bid, "ask": "2.00000"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptor_sequence_numbers_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
[fix.acceptor]
listen = "127.0.0.1:0"
sender_comp_id = "TICKWIRE"
allowed_comp_ids = ["CLIR"]
"#;
    let mut srv = start_with_config(&dir, toml);
    let addr = srv.fix_addr();
    for (s, b) in [("EURUSD", "1.10000"), ("GBPUSD", "1.30000")] {
        assert_eq!(publish(&srv, &quote(s, b)).await.0, 200);
    }

    let mut c = FixClient::new("CLIR", "TICKWIRE");
    c.connect(&addr).await;
    assert!(c.until(WAIT, |c| c.logged_on).await, "{:?}", c.closed);
    subscribe(&mut c, "r1", "EURUSD").await;
    assert_eq!(expect_w(&mut c, "EURUSD", "1.10000").await, 2);
    assert_eq!(publish(&srv, &quote("EURUSD", "1.10001")).await.0, 200);
    let m = c.next_app(WAIT).await.expect("an X");
    assert_eq!(m.msg_type(), msg_type::MARKET_DATA_INCREMENTAL_REFRESH);
    assert_eq!(m.seq_num(), Some(3));
    let x = MarketDataIncrementalRefresh::decode(&m.raw()).unwrap();
    assert!(x
        .entries
        .iter()
        .any(|e| e.px.map(|p| p.as_str()) == Some("1.10001")));
    subscribe(&mut c, "r2", "GBPUSD").await;
    assert_eq!(expect_w(&mut c, "GBPUSD", "1.30000").await, 4);
    // Logon, 2 V sent; Logon, W, X, W received.
    let before = c.session.seq_nums();
    assert_eq!(
        before,
        SeqNums {
            next_sender: 4,
            next_target: 5
        }
    );

    srv.kill9();
    assert!(
        c.until(WAIT, |c| c.closed.is_some()).await,
        "the client noticed the server's death"
    );
    assert!(!c.logged_on);
    // The session's numbers are in the data directory under its CompIDs, not tied to the
    // address: the restarted acceptor binds a new port.
    let srv = start_with_config(&dir, toml);
    let addr = srv.fix_addr();
    connect_when_listening(&mut c, &addr).await;
    assert!(c.until(WAIT, |c| c.logged_on).await, "{:?}", c.closed);
    // The server accepted MsgSeqNum 4 as the next one, and its Logon carried 5: exactly one
    // past the last message it sent before the kill, without ResetSeqNumFlag (a reset would
    // have set our expected number back to 2).
    assert_eq!(
        c.session.seq_nums(),
        SeqNums {
            next_sender: 5,
            next_target: 6
        }
    );
    // No gap either way: we detected none, and the server did not ask us to resend.
    assert!(c.events.is_empty(), "{:?}", c.events);
    // The session works on: a new subscription gets the newest value, numbered 6.
    subscribe(&mut c, "r3", "EURUSD").await;
    assert_eq!(expect_w(&mut c, "EURUSD", "1.10001").await, 6);
    assert!(c.logout(WAIT).await, "{:?}", c.closed);
    assert!(c.events.is_empty(), "{:?}", c.events);

    let s = fix_session(&srv, "acceptor:CLIR").await;
    assert_eq!(s["gaps"], 0, "{s}");
    assert_eq!(s["resend_requests_answered"], 0, "{s}");
}

/// The initiator persists its own numbers: after a SIGKILL it logs on to the provider with the
/// next MsgSeqNum (not 1, no ResetSeqNumFlag) and accepts the provider's continuing numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initiator_sequence_numbers_survive_kill_9() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[[fix.initiators]]
name = "prov"
host = "127.0.0.1"
port = {port}
sender_comp_id = "TW"
target_comp_id = "PROV"
symbols = ["EURUSD"]
reconnect_min_ms = 100
reconnect_max_ms = 500
"#
    );
    let mut srv = start_with_config(&dir, &toml);
    let mut prov = FixClient::acceptor("PROV", "TW");
    prov.accept(&listener, WAIT).await;
    assert!(prov.until(WAIT, |c| c.logged_on).await, "{:?}", prov.closed);
    let v = prov.next_app(WAIT).await.expect("a V");
    assert_eq!(v.msg_type(), msg_type::MARKET_DATA_REQUEST);
    assert_eq!(v.seq_num(), Some(2));
    let w = |bid: &'static str| MarketDataSnapshotFullRefresh {
        md_req_id: Some("tw-EURUSD"),
        symbol: "EURUSD",
        entries: vec![
            SnapshotEntry {
                entry_type: MdEntryType::Bid,
                px: Some(Decimal::new(bid).unwrap()),
                size: None,
                date: None,
                time: None,
            },
            SnapshotEntry {
                entry_type: MdEntryType::Offer,
                px: Some(Decimal::new("1.20010").unwrap()),
                size: None,
                date: None,
                time: None,
            },
        ],
    };
    prov.send(&w("1.20000")).await;
    latest_bid(&srv, "1.20000").await;
    // The status counts what the initiator wrote: its Logon and the V (it said 0).
    let st = fix_session(&srv, "prov").await;
    assert_eq!(st["messages_out"], 2, "{st}");
    assert_eq!(st["next_sender_seq"], 3, "{st}");
    // Provider side: Logon and W sent, Logon and V received.
    assert_eq!(
        prov.session.seq_nums(),
        SeqNums {
            next_sender: 3,
            next_target: 3
        }
    );

    srv.kill9();
    assert!(prov.until(WAIT, |c| c.closed.is_some()).await);
    let srv = start_with_config(&dir, &toml);
    prov.accept(&listener, WAIT).await;
    assert!(prov.until(WAIT, |c| c.logged_on).await, "{:?}", prov.closed);
    // The initiator's Logon was MsgSeqNum 3 (a 1 would have been "too low" and ended the
    // session; ResetSeqNumFlag would have reset ours), and it took our Logon numbered 3
    // without asking for a resend (the ResendRequest would show up as an event here).
    let v = prov
        .next_app(WAIT)
        .await
        .expect("the V after the new logon");
    assert_eq!(v.msg_type(), msg_type::MARKET_DATA_REQUEST);
    assert_eq!(v.seq_num(), Some(4));
    assert!(prov.events.is_empty(), "{:?}", prov.events);
    prov.send(&w("1.20001")).await;
    latest_bid(&srv, "1.20001").await;
    assert_eq!(
        prov.session.seq_nums(),
        SeqNums {
            next_sender: 5,
            next_target: 5
        }
    );
    let st = fix_session(&srv, "prov").await;
    assert_eq!(st["gaps"], 0, "{st}");
    assert!(prov.events.is_empty(), "{:?}", prov.events);
}

/// Waits until `quotes.EURUSD` has `bid` (the initiator publishes after each read).
async fn latest_bid(srv: &Server, bid: &str) {
    wait_for(srv, "/v1/latest/quotes.EURUSD", WAIT, |r| {
        r["data"]["bid"] == bid
    })
    .await;
}
