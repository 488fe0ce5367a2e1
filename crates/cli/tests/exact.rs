//! Exact decimals and candles that end right, end to end against the real binary:
//! - UDF history writes each price as a JSON number with exactly its own digits (it went
//!   through binary floats: 123456789.123456789 came back as 123456789.12345679);
//! - a decimal outside what the candle builder can carry exactly is refused at publish with
//!   the limit in the message (it was accepted and then lost digits, or made no bar at all);
//! - a live candle subscriber ends with exactly the stored bar of every closed bar (closed
//!   bars' final values were never pushed);
//! - event times in seconds, microseconds or nanoseconds land in the right bar (a `ts` in
//!   nanoseconds was read as milliseconds: bars in the year 55,000,000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{get_json, get_text, publish, wait_for, Server, Ws};
use serde_json::{json, Value};

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;
const WAIT: Duration = Duration::from_secs(20);

const FAST: &[(&str, &str)] = &[
    ("TICKWIRE_CANDLES__FLUSH_INTERVAL_MS", "30"),
    ("TICKWIRE_CANDLES__COMMIT_INTERVAL_MS", "50"),
];

fn trade(sym: &str, ts: i64, price: &str) -> Value {
    json!({"channel": format!("trades.{sym}"), "data": {"price": price, "size": "1", "ts": ts}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udf_history_writes_prices_with_their_own_digits() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], FAST);
    let prices = [
        "123456789.123456789",
        "987654321012.3035401678",
        "0.00000012",
    ];
    // One trade per minute: two closed bars and a live one.
    let batch: Vec<Value> = prices
        .iter()
        .enumerate()
        .map(|(i, p)| trade("EXA", T0 + 60_000 * i as i64 + 1, p))
        .collect();
    let (st, body) = publish(&srv, &Value::Array(batch)).await;
    assert_eq!(st, 200, "{body}");
    let path = format!(
        "/udf/history?symbol=EXA&resolution=1&from={}&to={}",
        T0 / 1000,
        T0 / 1000 + 600
    );
    wait_for(&srv, &path, WAIT, |v| {
        v["t"].as_array().is_some_and(|t| t.len() == 3)
    })
    .await;
    // The raw text, not a parsed Value: a JSON parser would turn the numbers into floats.
    let text = get_text(&srv, &path).await;
    for col in ["o", "h", "l", "c"] {
        let want = format!("\"{col}\":[{}]", prices.join(","));
        assert!(text.contains(&want), "{want} in {text}");
    }
    assert!(!text.contains("e-"), "no exponents: {text}");
    // The native API gives the same digits as strings.
    let v = get_json(&srv, "/v1/candles/EXA?res=1m").await;
    let opens: Vec<&str> = v["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["open"].as_str().unwrap())
        .collect();
    assert_eq!(opens, prices, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decimal_the_server_cannot_carry_exactly_is_refused_at_publish() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &[]);
    for bad in [
        "0.00000000000000000000000000001",
        "12345678901234567890123456789.123456789",
        "79228162514264337593543950336",
        "1234567890123456789012345678901234567890",
    ] {
        let (st, body) = publish(
            &srv,
            &json!({"channel": "trades.BIG", "data": {"price": bad, "size": "1"}}),
        )
        .await;
        assert_eq!(st, 422, "{bad}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("28 digits after the point")
                && detail.contains("79228162514264337593543950335"),
            "the message says the limit: {detail}"
        );
        assert!(!detail.contains("is not a decimal string"), "{detail}");
    }
    // At the edges of the range, and a 19-decimal price, everything is carried exactly.
    for good in [
        "79228162514264337593543950335",
        "0.0000000000000000000000000001",
        "10.0000000000000000001",
    ] {
        let (st, body) = publish(
            &srv,
            &json!({"channel": "quotes.BIG", "data": {"bid": good, "ask": good}}),
        )
        .await;
        assert_eq!(st, 200, "{good}: {body}");
        let latest = get_json(&srv, "/v1/latest/quotes.BIG").await;
        assert_eq!(latest["data"]["bid"], good);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_candle_finals_are_the_stored_bars() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], FAST);
    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "candles.FIN.1s"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    // 40 trades over 8 seconds of event time, published in small bursts so bars close
    // between flushes and within them; one late trade corrects a closed bar.
    let mut n = 0;
    for burst in 0..8 {
        let batch: Vec<Value> = (0..5)
            .map(|k| {
                n += 1;
                trade(
                    "FIN",
                    T0 + burst * 1_000 + k * 190 + 3,
                    &format!("1.{:04}", 1000 + n),
                )
            })
            .collect();
        let (st, body) = publish(&srv, &Value::Array(batch)).await;
        assert_eq!(st, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, _) = publish(
        &srv,
        &Value::Array(vec![trade("FIN", T0 + 6_500, "1.9999")]),
    )
    .await;
    assert_eq!(st, 200);
    // A trade well after the rest closes the last of them.
    let (st, _) = publish(&srv, &Value::Array(vec![trade("FIN", T0 + 20_000, "1.5")])).await;
    assert_eq!(st, 200);
    let stored = wait_for(&srv, "/v1/candles/FIN?res=1s", WAIT, |v| {
        v["candles"].as_array().is_some_and(|c| c.len() >= 9)
    })
    .await;
    let stored: Vec<Value> = stored["candles"].as_array().unwrap().clone();
    // Every value pushed, in order: the last per bar, and every final.
    let mut last: BTreeMap<i64, Value> = BTreeMap::new();
    let mut finals: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let closed_all = stored.iter().all(|c| {
            let start = c["start_ms"].as_i64().unwrap();
            start == T0 + 20_000
                || last
                    .get(&start)
                    .is_some_and(|p| same_bar(p, c) && p["final"] == true)
        });
        if closed_all || tokio::time::Instant::now() > deadline {
            break;
        }
        let Some(p) = ws.try_push(Duration::from_millis(500)).await else {
            continue;
        };
        if p["ch"] == "candles.FIN.1s" {
            let start = p["data"]["start_ms"].as_i64().unwrap();
            if p["data"]["final"] == true {
                finals.push(p["data"].clone());
            }
            last.insert(start, p["data"].clone());
        }
    }
    let stored_bar = |start: i64| {
        stored
            .iter()
            .find(|c| c["start_ms"].as_i64() == Some(start))
            .unwrap_or_else(|| panic!("no stored bar {start}"))
    };
    // A final is exactly the stored bar, digits included — except the one the late trade
    // corrected afterwards, whose corrected final must then follow.
    for f in &finals {
        let start = f["start_ms"].as_i64().unwrap();
        let c = stored_bar(start);
        let corrected_later = start == T0 + 6_000 && f["corrected"] != true;
        assert!(
            same_bar(f, c) || corrected_later,
            "final of bar {start}: pushed {f}, stored {c}"
        );
    }
    assert!(!finals.is_empty(), "no final was pushed at all");
    // Every closed bar's last pushed value is the stored bar: a final is never conflated away
    // by the next bar's values, however slow the connection (docs/candles.md).
    for c in &stored {
        let start = c["start_ms"].as_i64().unwrap();
        if start == T0 + 20_000 {
            continue; // still live
        }
        let pushed = last.get(&start);
        assert!(
            pushed.is_some_and(|p| same_bar(p, c) && p["final"] == true),
            "bar {start}: stored {c}, last pushed {pushed:?}"
        );
    }
    if let Some(corrected) = finals.iter().find(|f| f["corrected"] == true) {
        assert_eq!(
            corrected["high"], "1.9999",
            "the late trade's correction was pushed"
        );
    }
}

fn same_bar(pushed: &Value, stored: &Value) -> bool {
    [
        "start_ms", "open", "high", "low", "close", "volume", "ticks",
    ]
    .iter()
    .all(|k| pushed[*k] == stored[*k])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_times_in_any_unit_land_in_the_right_bar() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], FAST);
    let at = T0 + 90_000; // 00:01:30
    for (sym, ts) in [
        ("US", at / 1000),
        ("UMS", at),
        ("UUS", at * 1000),
        ("UNS", at * 1_000_000),
    ] {
        let (st, body) = publish(
            &srv,
            &json!({"channel": format!("quotes.{sym}"), "data": {"bid": "1.1", "ask": "1.2", "ts": ts}}),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        let v = wait_for(&srv, &format!("/v1/candles/{sym}?res=1m"), WAIT, |v| {
            v["candles"].as_array().is_some_and(|c| !c.is_empty())
        })
        .await;
        assert_eq!(
            v["candles"][0]["start_ms"],
            T0 + 60_000,
            "{sym} (ts {ts}): {v}"
        );
    }
}

/// How far each projection runs behind its streams is in /metrics (it runs at low priority and
/// may fall behind under load; an operator must see it, not guess it from stale candles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_lag_and_position_are_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], FAST);
    let batch: Vec<Value> = (0..2_000)
        .map(|i| json!({"channel": "quotes.LAG", "data": {"bid": "1", "ask": "2", "ts": T0 + i}}))
        .collect();
    let (st, body) = publish(&srv, &Value::Array(batch)).await;
    assert_eq!(st, 200, "{body}");
    let value = |text: &str, series: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let m = loop {
        let m = get_text(&srv, "/metrics").await;
        let pos = "tickwire_projection_position{projection=\"candles\",namespace=\"quotes\"}";
        if value(&m, pos) == Some(2_000) {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "candles never applied 2,000 quotes:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (series, want) in [
        (
            "tickwire_projection_lag{projection=\"candles\",namespace=\"quotes\"}",
            0,
        ),
        (
            "tickwire_projection_lag{projection=\"candles\",namespace=\"trades\"}",
            0,
        ),
        (
            "tickwire_projection_lag{projection=\"book\",namespace=\"depth\"}",
            0,
        ),
        ("tickwire_projection_live{projection=\"candles\"}", 1),
        (
            "tickwire_projection_panics_total{projection=\"candles\"}",
            0,
        ),
        (
            "tickwire_projection_derived_failed_total{projection=\"candles\"}",
            0,
        ),
    ] {
        assert_eq!(value(&m, series), Some(want), "{series} in\n{m}");
    }
    let applied = value(
        &m,
        "tickwire_projection_applied_total{projection=\"candles\"}",
    );
    assert!(applied >= Some(2_000), "applied {applied:?}");
}
