//! The decimal property, end to end: any price or size the server accepts comes back with
//! exactly its own digits through every path — byte-identical as a string on WebSocket, SSE,
//! history, latest, MQTT, FIX and `book.<SYM>`; with the same digits in `/v1/candles` (a
//! string) and `/udf/history` (a JSON number).
//!
//! The values are drawn at random across the whole documented range (docs/protocol.md,
//! "Decimals": at most 28 digits after the point, unscaled at most 2^96 - 1), plus its edges.
//! `TICKWIRE_PROP_SEED=<n>` replays one draw; the seed is printed on every run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{get_json, get_text, publish, start_with_config, wait_for, FixClient, Sse, Ws};
use serde_json::{json, Value};
use tickwire_fix::md::{MarketDataSnapshotFullRefresh, MdEntryType};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;
const WAIT: Duration = Duration::from_secs(20);
const MAX_UNSCALED: &str = "79228162514264337593543950335";
const RANDOM: usize = 40;

/// Values at the edges of the range and ones that broke before (binary floats, 96 bits).
const EDGES: &[&str] = &[
    "0",
    "0.0000000000000000000000000001",
    "79228162514264337593543950335",
    "-79228162514264337593543950335",
    "7.9228162514264337593543950335",
    "0.00000012",
    "123456789.123456789",
    "987654321012.3035401678",
    "10.0000000000000000001",
    "1.10000",
    "-0.5",
    "100",
];

/// xorshift64*: a reproducible draw without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

/// Is the unscaled value of `int` and `frac` (no sign) within 2^96 - 1?
fn in_range(int: &str, frac: &str) -> bool {
    let all = format!("{int}{frac}");
    let digits = all.trim_start_matches('0');
    digits.len() < MAX_UNSCALED.len()
        || (digits.len() == MAX_UNSCALED.len() && digits <= MAX_UNSCALED)
}

/// A random decimal in the accepted range: up to 29 integer digits, up to 28 after the point,
/// trailing zeros kept (they are digits the client sent).
fn draw(rng: &mut Rng, signed: bool) -> String {
    loop {
        let int_len = rng.below(30) as usize;
        let frac_len = if rng.below(4) == 0 {
            0
        } else {
            1 + rng.below(28) as usize
        };
        let mut int = rng.digits(int_len).trim_start_matches('0').to_string();
        if int.is_empty() {
            int.push('0');
        }
        let frac = rng.digits(frac_len);
        if !in_range(&int, &frac) {
            continue;
        }
        let negative =
            signed && rng.below(5) == 0 && (int != "0" || frac.bytes().any(|b| b != b'0'));
        let sign = if negative { "-" } else { "" };
        return if frac.is_empty() {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        };
    }
}

/// One symbol's values: a quote's bid, ask and sizes, a trade's price and size.
struct Case {
    sym: String,
    bid: String,
    ask: String,
    bid_size: String,
    ask_size: String,
    price: String,
    size: String,
}

fn cases(seed: u64) -> Vec<Case> {
    let mut rng = Rng(seed | 1);
    let mut prices: Vec<String> = EDGES.iter().map(|s| s.to_string()).collect();
    prices.extend((0..RANDOM).map(|_| draw(&mut rng, true)));
    let n = prices.len();
    (0..n)
        .map(|i| {
            let size = |rng: &mut Rng, p: &str| {
                // Sizes are the same range without a sign; the edges' own digits first.
                let s = p.trim_start_matches('-').to_string();
                if rng.below(2) == 0 {
                    s
                } else {
                    draw(rng, false)
                }
            };
            Case {
                sym: format!("DEC{i}"),
                bid: prices[i].clone(),
                ask: prices[(i + 1) % n].clone(),
                bid_size: size(&mut rng, &prices[(i + 2) % n]),
                ask_size: size(&mut rng, &prices[(i + 3) % n]),
                price: prices[(i + 4) % n].clone(),
                size: size(&mut rng, &prices[(i + 5) % n]),
            }
        })
        .collect()
}

/// The digits a JSON number or a decimal string must keep: the sign, the digits without
/// leading zeros before the point, every digit after it. `-0` and `0` are the same value.
fn digits_of(s: &str) -> String {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let int = match int.trim_start_matches('0') {
        "" => "0",
        i => i,
    };
    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let sign = if neg && !zero { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// MQTT and FIX on ports the server picks; its banner tells them.
const CONFIG: &str = r#"
[candles]
flush_interval_ms = 30
commit_interval_ms = 50

[mqtt]
listen = "127.0.0.1:0"

[fix.acceptor]
listen = "127.0.0.1:0"
sender_comp_id = "TICKWIRE"
allowed_comp_ids = ["*"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_decimal_comes_back_with_its_own_digits_on_every_path() {
    let seed = std::env::var("TICKWIRE_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(clock_seed);
    eprintln!("decimal property: TICKWIRE_PROP_SEED={seed}");
    let cases = cases(seed);
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, CONFIG);
    let (mqtt_port, fix_port) = (srv.mqtt_port(), srv.fix_port());

    // Live readers first, so the values also travel as live pushes, not only as snapshots.
    let mut ws = Ws::connect(&srv.ws_url("")).await;
    for c in &cases {
        for ch in [format!("quotes.{}", c.sym), format!("trades.{}", c.sym)] {
            let r = ws.cmd(json!({"op": "subscribe", "channel": ch})).await;
            assert_eq!(r["ok"], true, "{r}");
        }
    }
    let sse_query: Vec<String> = cases
        .iter()
        .map(|c| format!("channel=trades.{}", c.sym))
        .collect();
    let mut sse = Sse::open(&srv, &sse_query.join("&"), None).await;

    let mut batch = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let ts = T0 + 60_000 * i as i64 + 7;
        batch.push(json!({"channel": format!("quotes.{}", c.sym), "data": {
            "bid": c.bid, "ask": c.ask, "bid_size": c.bid_size, "ask_size": c.ask_size, "ts": ts}}));
        batch.push(json!({"channel": format!("trades.{}", c.sym), "data": {
            "price": c.price, "size": c.size, "ts": ts}}));
        batch.push(
            json!({"channel": format!("depth.{}", c.sym), "data": {"snapshot": [
            {"side": "bid", "price": c.bid, "size": c.bid_size},
            {"side": "ask", "price": c.ask, "size": c.ask_size}]}}),
        );
    }
    let (st, body) = publish(&srv, &Value::Array(batch)).await;
    assert_eq!(
        st, 200,
        "seed {seed}: every value is in the documented range: {body}"
    );

    let mut failures = Vec::new();
    let mut check = |path: &str, sym: &str, got: Option<&str>, want: &str| {
        if got != Some(want) {
            failures.push(format!("{path} {sym}: sent {want}, got {got:?}"));
        }
    };

    // WebSocket: every quote and trade as pushed.
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 * cases.len() {
        let p = tokio::time::timeout(WAIT, ws.push())
            .await
            .expect("WebSocket pushes");
        if let Some(ch) = p["ch"].as_str() {
            seen.insert(ch.to_string(), p["data"].clone());
        }
    }
    for c in &cases {
        let q = &seen[&format!("quotes.{}", c.sym)];
        let t = &seen[&format!("trades.{}", c.sym)];
        for (field, want) in [
            ("bid", &c.bid),
            ("ask", &c.ask),
            ("bid_size", &c.bid_size),
            ("ask_size", &c.ask_size),
        ] {
            check("websocket quote", &c.sym, q[field].as_str(), want);
        }
        check(
            "websocket trade price",
            &c.sym,
            t["price"].as_str(),
            &c.price,
        );
        check("websocket trade size", &c.sym, t["size"].as_str(), &c.size);
    }

    // SSE: every trade.
    let mut sse_seen = std::collections::BTreeMap::new();
    while sse_seen.len() < cases.len() {
        let e = sse.next().await;
        if let Some(ch) = e.data["ch"].as_str() {
            sse_seen.insert(ch.to_string(), e.data["data"].clone());
        }
    }
    for c in &cases {
        let t = &sse_seen[&format!("trades.{}", c.sym)];
        check("sse trade price", &c.sym, t["price"].as_str(), &c.price);
        check("sse trade size", &c.sym, t["size"].as_str(), &c.size);
    }

    // History and latest.
    for c in &cases {
        let h = get_json(&srv, &format!("/v1/history/trades.{}?from=0", c.sym)).await;
        let t = &h["messages"][0]["data"];
        check("history price", &c.sym, t["price"].as_str(), &c.price);
        check("history size", &c.sym, t["size"].as_str(), &c.size);
        let l = get_json(&srv, &format!("/v1/latest/quotes.{}", c.sym)).await;
        check("latest bid", &c.sym, l["data"]["bid"].as_str(), &c.bid);
        check(
            "latest ask_size",
            &c.sym,
            l["data"]["ask_size"].as_str(),
            &c.ask_size,
        );
    }

    // MQTT 3.1.1 over TCP: the retained value of every quote topic.
    let mqtt = mqtt_quotes(mqtt_port, &cases).await;
    for c in &cases {
        let q: Value = serde_json::from_slice(&mqtt[&format!("quotes/{}", c.sym)]).unwrap();
        check("mqtt bid", &c.sym, q["bid"].as_str(), &c.bid);
        check("mqtt ask", &c.sym, q["ask"].as_str(), &c.ask);
        check("mqtt bid_size", &c.sym, q["bid_size"].as_str(), &c.bid_size);
    }

    // FIX: a snapshot of every symbol, prices and sizes as FIX decimal text.
    let mut fix = FixClient::new("DECIMALS", "TICKWIRE");
    fix.connect(&format!("127.0.0.1:{fix_port}")).await;
    assert!(
        fix.until(WAIT, |c| c.logged_on).await,
        "FIX logon: {:?}",
        fix.closed
    );
    for c in &cases {
        fix.send(&common::md_request(&c.sym, vec![c.sym.as_str()]))
            .await;
        let m = fix.next_app(WAIT).await.expect("a W per symbol");
        let w = MarketDataSnapshotFullRefresh::decode(&m.raw()).unwrap();
        for e in &w.entries {
            let (px, size) = match e.entry_type {
                MdEntryType::Bid => (&c.bid, &c.bid_size),
                MdEntryType::Offer => (&c.ask, &c.ask_size),
                _ => continue,
            };
            check("fix px", &c.sym, e.px.as_ref().map(|p| p.as_str()), px);
            check(
                "fix size",
                &c.sym,
                e.size.as_ref().map(|z| z.as_str()),
                size,
            );
        }
        let two = w.entries.len().to_string();
        check("fix entries", &c.sym, Some(two.as_str()), "2");
    }

    // The book built from depth snapshots. A level of size zero (any spelling) is no level:
    // in a book channel size zero deletes (docs/books.md).
    let zero = |v: &str| v.bytes().all(|b| matches!(b, b'0' | b'.' | b'-'));
    for c in &cases {
        let b = wait_for(&srv, &format!("/v1/latest/book.{}", c.sym), WAIT, |v| {
            v["data"]["bids"].is_array()
        })
        .await;
        for (side, px, size) in [("bid", &c.bid, &c.bid_size), ("ask", &c.ask, &c.ask_size)] {
            let level = &b["data"][format!("{side}s")][0];
            if zero(size) {
                // Nothing there: the level was deleted, not kept at size zero.
                let kept = level[1].as_str().map(|z| format!("kept at {z}"));
                check(
                    &format!("book {side} zero"),
                    &c.sym,
                    kept.as_deref().or(Some("none")),
                    "none",
                );
                continue;
            }
            check(&format!("book {side} px"), &c.sym, level[0].as_str(), px);
            check(
                &format!("book {side} size"),
                &c.sym,
                level[1].as_str(),
                size,
            );
        }
    }

    // Candles: one trade per symbol, so open = high = low = close = its price, volume = size;
    // the quote's mid goes to the quote bars and is not a value anyone sent.
    for (i, c) in cases.iter().enumerate() {
        let v = wait_for(&srv, &format!("/v1/candles/{}?res=1m", c.sym), WAIT, |v| {
            v["candles"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        let bar = &v["candles"][0];
        for f in ["open", "high", "low", "close"] {
            check(
                "candles",
                &c.sym,
                bar[f].as_str().map(digits_of).as_deref(),
                &digits_of(&c.price),
            );
        }
        check(
            "candles volume",
            &c.sym,
            bar["volume"].as_str().map(digits_of).as_deref(),
            &digits_of(&c.size),
        );
        // UDF: the raw text, since a JSON parser would turn the numbers into floats.
        let from = (T0 + 60_000 * i as i64) / 1000;
        let text = get_text(
            &srv,
            &format!(
                "/udf/history?symbol={}&resolution=1&from={from}&to={}",
                c.sym,
                from + 60
            ),
        )
        .await;
        for col in ["o", "h", "l", "c"] {
            let got = json_number_array(&text, col);
            check(
                "udf",
                &c.sym,
                got.as_deref().map(digits_of).as_deref(),
                &digits_of(&c.price),
            );
        }
    }

    assert!(
        failures.is_empty(),
        "seed {seed}: {} values changed on the way:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A seed from the clock, so each run draws new values (printed for a replay).
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// The one number in `"col":[n]` of a UDF answer, as written.
fn json_number_array(text: &str, col: &str) -> Option<String> {
    let start = text.find(&format!("\"{col}\":["))? + col.len() + 4;
    let end = start + text[start..].find(']')?;
    let item = &text[start..end];
    (!item.contains(',')).then(|| item.to_string())
}

async fn mqtt_read(s: &mut TcpStream) -> (u8, Vec<u8>) {
    common::mqtt::read_packet(s, WAIT).await.expect("MQTT read")
}

/// Subscribes to `quotes/<sym>` of every case over MQTT 3.1.1; the payload of each topic.
async fn mqtt_quotes(port: u16, cases: &[Case]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 8];
    connect.extend_from_slice(b"decimals");
    s.write_all(&common::mqtt::packet(0x10, &connect))
        .await
        .unwrap();
    let (first, body) = mqtt_read(&mut s).await;
    assert_eq!((first, body[1]), (0x20, 0), "CONNACK accepted");
    let mut sub = vec![0, 1];
    for c in cases {
        let topic = format!("quotes/{}", c.sym);
        sub.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        sub.extend_from_slice(topic.as_bytes());
        sub.push(0);
    }
    s.write_all(&common::mqtt::packet(0x82, &sub))
        .await
        .unwrap();
    let mut got = std::collections::BTreeMap::new();
    let mut suback = false;
    while !suback || got.len() < cases.len() {
        let (first, body) = mqtt_read(&mut s).await;
        match first >> 4 {
            9 => {
                assert!(
                    body[2..].iter().all(|&rc| rc == 0),
                    "SUBACK granted QoS 0: {body:?}"
                );
                suback = true;
            }
            3 => {
                let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let topic = String::from_utf8(body[2..2 + len].to_vec()).unwrap();
                got.insert(topic, body[2 + len..].to_vec());
            }
            other => panic!("unexpected MQTT packet type {other}"),
        }
    }
    got
}
