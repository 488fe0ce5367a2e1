//! The JavaScript reference client of docs/books.md against the real server: depth published
//! over HTTP (a snapshot, then random level changes and deletes in batches, some faster than
//! the book projection flushes) becomes `book.<SYM>`; a WebSocket subscriber's values, applied
//! by docs/book-client.js in Node (tests/interop/books/check.cjs), verify every sequence number
//! and checksum and end with the server's book. Node is required (as for the console test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{get_json, publish, Server, Ws};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_reference_client_keeps_the_servers_book() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &[]);
    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "book.JSB"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");

    // Prices with several spellings of one value and different precisions; 15 levels a side
    // against the default depth of 10, so deletes bring deeper levels into view.
    let bid_px = |i: u64| format!("1.{:04}", 5000 - i * 7);
    let ask_px = |i: u64| format!("1.{:04}", 5001 + i * 7);
    let mut levels = Vec::new();
    for i in 0..15 {
        levels.push(json!({"side": "bid", "price": bid_px(i), "size": format!("{}", i + 1)}));
        levels.push(json!({"side": "ask", "price": ask_px(i), "size": format!("{}.5", i + 1)}));
    }
    let (st, body) = publish(
        &srv,
        &json!([{"channel": "depth.JSB", "data": {"snapshot": levels}}]),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for batch in 0..60 {
        let mut items = Vec::new();
        for _ in 0..1 + rnd(4) {
            let i = rnd(18);
            let (side, px) = if rnd(2) == 0 {
                ("bid", bid_px(i))
            } else {
                ("ask", ask_px(i))
            };
            // "1.4993" and "1.49930" are one level.
            let px = if rnd(3) == 0 { format!("{px}0") } else { px };
            let update = if rnd(4) == 0 {
                json!({"action": "delete", "side": side, "price": px})
            } else {
                json!({"action": "change", "side": side, "price": px, "size": format!("{}.{}", rnd(50) + 1, rnd(100))})
            };
            items.push(json!({"channel": "depth.JSB", "data": {"updates": [update]}}));
        }
        let (st, body) = publish(&srv, &Value::Array(items)).await;
        assert_eq!(st, 200, "{body}");
        // Some batches come faster than the projection's 20 ms flush, some slower.
        if batch % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    // Take the subscriber's values until it holds what the server's book says.
    let mut values = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        while let Some(p) = ws.try_push(Duration::from_millis(300)).await {
            assert_eq!(p["ch"], "book.JSB", "{p}");
            values.push(p["data"].clone());
        }
        let latest = get_json(&srv, "/v1/latest/book.JSB").await;
        if values.last().map(|v| &v["seq"]) == Some(&latest["data"]["seq"]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscriber never caught up: {latest}"
        );
    }
    assert!(values.len() > 10, "{} values", values.len());
    assert_eq!(values[0]["snapshot"], true);
    assert!(values[1..].iter().all(|v| v.get("snapshot").is_none()));

    let file = dir.path().join("values.jsonl");
    let lines: Vec<String> = values.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/books/check.cjs"
    );
    let out = std::process::Command::new("node")
        .arg(script)
        .arg(&file)
        .output()
        .expect("node is installed (the console test needs it too)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let held: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        held["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r == "ok"),
        "every value follows and verifies: {held}"
    );
    let latest = get_json(&srv, "/v1/latest/book.JSB").await;
    let book = &latest["data"];
    assert_eq!(held["bids"], book["bids"], "{held} vs {book}");
    assert_eq!(held["asks"], book["asks"], "{held} vs {book}");
    assert_eq!(held["seq"], book["seq"]);
    assert_eq!(held["checksum"], book["checksum"]);
    assert_eq!(book["bids"].as_array().unwrap().len(), 10);
}

/// `tickwire sim --depth 5` publishes books around its quotes on `depth.<SYM>`; the book
/// projection makes `book.<SYM>` of them: five levels a side, best first, bids below asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_feeds_books() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &[]);
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "sim",
            "--symbols",
            "2",
            "--rate",
            "100",
            "--duration",
            "1",
            "--depth",
            "5",
        ])
        .args(["--url", &srv.url("")])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let b = common::wait_for(
        &srv,
        "/v1/latest/book.EURUSD",
        Duration::from_secs(20),
        |v| v["data"]["bids"].as_array().is_some_and(|b| b.len() == 5),
    )
    .await;
    // EURUSD prices all have one integer digit and five decimals: as text they sort as
    // numbers (no float needed, none used).
    let px = |side: &str, i: usize| -> String {
        let p = b["data"][side][i][0].as_str().unwrap();
        assert_eq!(p.len(), 7, "{p}");
        p.to_string()
    };
    assert_eq!(b["data"]["asks"].as_array().unwrap().len(), 5, "{b}");
    assert!(px("bids", 0) < px("asks", 0), "{b}");
    assert!(
        (1..5).all(|i| px("bids", i) < px("bids", i - 1) && px("asks", i) > px("asks", i - 1)),
        "{b}"
    );
}
