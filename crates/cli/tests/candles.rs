//! Live candles end to end: quotes published over HTTP to the real binary become live bars on
//! `candles.<SYMBOL>.<res>` over a WebSocket, persisted bars answer the TradingView UDF and the
//! native API exactly as an independent batch aggregation of the same ticks, and a kill -9
//! restart neither loses nor duplicates a bar.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{str::FromStr, time::Duration};

use common::{get_json, get_text, publish, wait_for, Server, Ws};
use serde_json::{json, Value};
use tickwire_candles::{aggregate, Decimal, PriceSource, Resolution, Tick};

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;

const FAST: &[(&str, &str)] = &[
    ("TICKWIRE_CANDLES__FLUSH_INTERVAL_MS", "30"),
    ("TICKWIRE_CANDLES__COMMIT_INTERVAL_MS", "50"),
];

fn ticks() -> Vec<(i64, &'static str, &'static str)> {
    vec![
        (T0 + 100, "1.10000", "1.10002"),
        (T0 + 500, "1.10010", "1.10014"),
        (T0 + 900, "1.09990", "1.09992"),
        (T0 + 1_200, "1.10020", "1.10022"),
        (T0 + 61_000, "1.10100", "1.10104"),
        (T0 + 61_500, "1.10050", "1.10052"),
        (T0 + 3_600_000 + 5, "1.20000", "1.20002"),
    ]
}

fn reference(res: Resolution) -> Vec<tickwire_candles::Candle> {
    let t: Vec<Tick> = ticks()
        .into_iter()
        .map(|(ts, b, a)| {
            Tick::quote(
                ts,
                Decimal::from_str(b).unwrap(),
                Decimal::from_str(a).unwrap(),
            )
        })
        .collect();
    aggregate(&t, res, PriceSource::Mid)
}

/// Bars are committed asynchronously: how long to poll for them.
const BARS_WAIT: Duration = Duration::from_secs(20);

fn dec(v: &Value) -> Decimal {
    match v {
        Value::String(s) => Decimal::from_str(s).unwrap(),
        other => Decimal::from_str(&other.to_string()).unwrap(),
    }
}

fn assert_udf_matches(v: &Value, res: Resolution) {
    let want = reference(res);
    assert_eq!(v["s"], "ok", "{v}");
    let t: Vec<i64> = v["t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(
        t,
        want.iter().map(|c| c.start_ms / 1000).collect::<Vec<_>>(),
        "{res}: {v}"
    );
    for (i, c) in want.iter().enumerate() {
        assert_eq!(dec(&v["o"][i]), c.open, "{res} open {i}");
        assert_eq!(dec(&v["h"][i]), c.high, "{res} high {i}");
        assert_eq!(dec(&v["l"][i]), c.low, "{res} low {i}");
        assert_eq!(dec(&v["c"][i]), c.close, "{res} close {i}");
        assert_eq!(dec(&v["v"][i]), c.volume, "{res} volume {i}");
    }
}

/// Waits until `/udf/history` over `[from, to)` has every reference bar at 1S, 1 and 60, and
/// checks them against the reference.
async fn assert_history_matches(srv: &Server, from: i64, to: i64) {
    for (res, tv) in [
        (Resolution::Sec1, "1S"),
        (Resolution::Min1, "1"),
        (Resolution::Hour1, "60"),
    ] {
        let n = reference(res).len();
        let path = format!("/udf/history?symbol=CNDL&resolution={tv}&from={from}&to={to}");
        let v = wait_for(srv, &path, BARS_WAIT, |v| {
            v["t"].as_array().is_some_and(|t| t.len() == n)
        })
        .await;
        assert_udf_matches(&v, res);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_candles_udf_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut srv = Server::start(&data, &[], FAST);

    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let r = ws
        .cmd(json!({"op":"subscribe","channel":"candles.CNDL.1m"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");

    // The first three ticks, then the live 1m bar must arrive over the WebSocket.
    let batch: Vec<Value> = ticks()[..3]
        .iter()
        .map(|(ts, b, a)| json!({"channel":"quotes.CNDL","data":{"bid":b,"ask":a,"ts":ts}}))
        .collect();
    let (st, body) = publish(&srv, &Value::Array(batch)).await;
    assert_eq!(st, 200, "{body}");
    let want = &reference(Resolution::Min1)[0];
    let mut live = Value::Null;
    for _ in 0..20 {
        let p = ws.push().await;
        if p["ch"] == "candles.CNDL.1m" && p["data"]["ticks"] == 3 {
            live = p;
            break;
        }
    }
    assert_eq!(live["data"]["symbol"], "CNDL", "{live}");
    assert_eq!(live["data"]["resolution"], "1m");
    assert_eq!(live["data"]["start_ms"], T0);
    assert_eq!(
        dec(&live["data"]["open"]),
        Decimal::from_str("1.10001").unwrap()
    );
    assert_eq!(
        dec(&live["data"]["high"]),
        Decimal::from_str("1.10012").unwrap()
    );
    assert_eq!(
        dec(&live["data"]["low"]),
        Decimal::from_str("1.09991").unwrap()
    );
    // Only three ticks of the first minute so far: open/high/low agree with the reference.
    assert_eq!(dec(&live["data"]["open"]), want.open);

    // The rest, one request each so arrival order is the log order.
    for (ts, b, a) in &ticks()[3..] {
        let (st, body) = publish(
            &srv,
            &json!({"channel":"quotes.CNDL","data":{"bid":b,"ask":a,"ts":ts}}),
        )
        .await;
        assert_eq!(st, 200, "{body}");
    }

    let from = T0 / 1000;
    let to = from + 3 * 3600;
    assert_history_matches(&srv, from, to).await;

    // Native API: decimal strings, ms times, newest `limit`.
    let v = wait_for(&srv, "/v1/candles/CNDL?res=1m&limit=2", BARS_WAIT, |v| {
        v["candles"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    let m1 = reference(Resolution::Min1);
    assert_eq!(v["candles"][0]["start_ms"], m1[1].start_ms);
    assert_eq!(v["candles"][1]["close"], m1[2].close.to_string());
    assert!(v["candles"][0]["open"].is_string());

    // UDF edge answers.
    let v = get_json(
        &srv,
        &format!(
            "/udf/history?symbol=CNDL&resolution=1&from={}&to={}",
            to + 3600,
            to + 7200
        ),
    )
    .await;
    assert_eq!(v["s"], "no_data", "{v}");
    assert_eq!(v["nextTime"], m1[2].start_ms / 1000, "{v}");
    let v = get_json(&srv, "/udf/history?symbol=NOPE&resolution=1&from=0&to=10").await;
    assert_eq!(v["s"], "error", "{v}");
    assert!(v["errmsg"].as_str().unwrap().contains("unknown_symbol"));
    let v = get_json(&srv, "/udf/history?symbol=CNDL&resolution=7&from=0&to=10").await;
    assert_eq!(v["s"], "error", "{v}");
    let v = get_json(
        &srv,
        &format!("/udf/history?symbol=CNDL&resolution=1&to={to}&countback=2"),
    )
    .await;
    assert_eq!(v["t"].as_array().unwrap().len(), 2, "{v}");
    let v = get_json(&srv, "/udf/symbols?symbol=Tickwire:CNDL").await;
    assert_eq!(v["name"], "CNDL");
    assert_eq!(v["pricescale"], 100_000, "{v}");
    let v = get_json(&srv, "/udf/search?query=cnd&limit=5").await;
    assert_eq!(v[0]["symbol"], "CNDL", "{v}");
    let v = get_json(&srv, "/udf/config").await;
    assert!(v["supported_resolutions"]
        .as_array()
        .unwrap()
        .contains(&json!("1D")));
    let t = get_text(&srv, "/udf/time").await;
    assert!(t.trim().parse::<i64>().unwrap() > from);

    // Crash and restart: the same bars, none lost, none doubled.
    let before = get_json(
        &srv,
        &format!("/udf/history?symbol=CNDL&resolution=1S&from={from}&to={to}"),
    )
    .await;
    drop(ws);
    srv.kill9();
    let srv = Server::start(&data, &[], FAST);
    assert_history_matches(&srv, from, to).await;
    let after = get_json(
        &srv,
        &format!("/udf/history?symbol=CNDL&resolution=1S&from={from}&to={to}"),
    )
    .await;
    assert_eq!(before, after);
    // A live tick after the restart makes a new bar and leaves the history alone.
    let (st, body) = publish(
        &srv,
        &json!({"channel":"quotes.CNDL","data":{"bid":"2.0","ask":"2.2"}}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let v = wait_for(&srv, "/v1/candles/CNDL?res=1D&limit=10", BARS_WAIT, |v| {
        v["candles"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    assert_eq!(v["candles"][1]["close"], "2.1", "{v}");
    assert_eq!(v["candles"][0]["ticks"], 7, "{v}");
}
