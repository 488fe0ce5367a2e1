//! `tickwire backup` of a server that is publishing, and a restore from it: every message
//! acknowledged before the backup started is in the copy at its offset, the copy is an exact
//! prefix of the live stream (no gap, no duplicate, no torn record), and its candle store fits
//! its logs: fed the rest of the ticks, the restored server's candles equal the original's.
//! Breaks this catches: a candle store copied after the logs (its positions past the copied
//! ends: ticks counted twice, so `ticks` differ), an active segment cut mid-record, a missing
//! segment after a roll during the copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{http, Server, TIMEOUT};
use serde_json::{json, Value};
use tokio::sync::Mutex;

const KEY: &str = "backup-test-admin-key-0123456789";
const SYMBOLS: [&str; 3] = ["EURUSD", "GBPUSD", "XAUUSD"];

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "TICKWIRE_API_KEYS",
            "[\"backup-test-admin-key-0123456789\"]",
        ),
        // Small segments: the copy races segment rolls.
        ("TICKWIRE_SEGMENT_BYTES", "16384"),
        ("TICKWIRE_CANDLES__FLUSH_INTERVAL_MS", "50"),
    ]
}

async fn post(srv: &Server, body: &Value) -> Value {
    let r = http()
        .post(srv.url("/v1/publish"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

/// Every message of `channel` (offset, msg_id, data), paging through history.
async fn history(srv: &Server, channel: &str) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page: Value = http()
            .get(srv.url(&format!("/v1/history/{channel}?from={from}&limit=1000")))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let msgs = page["messages"].as_array().unwrap();
        for m in msgs {
            out.push((m["offset"].as_u64().unwrap(), m.clone()));
        }
        let next = page["next"].as_u64().unwrap();
        if msgs.is_empty() && next == from {
            return out;
        }
        from = next;
    }
}

fn quote_data(sym_ix: usize, i: u64) -> Value {
    // Event times one second apart from a fixed start: both servers bucket the same ticks
    // into the same bars whenever they process them.
    json!({
        "bid": format!("{}.{:05}", 1 + sym_ix, 10_000 + (i * 7919) % 5000),
        "ask": format!("{}.{:05}", 1 + sym_ix, 15_001 + (i * 7919) % 5000),
        "ts": 1_700_000_000_000u64 + i * 1000,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_publishing_restores_every_acknowledged_message_and_equal_candles() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Arc::new(Server::start(&dir.path().join("live"), &[], &env()));
    let stop = Arc::new(AtomicBool::new(false));
    // Acknowledged publishes: chat (offset → msg) and quotes (offset → (symbol, i)).
    let chat_acked = Arc::new(Mutex::new(BTreeMap::<u64, u64>::new()));
    let quotes_acked = Arc::new(Mutex::new(BTreeMap::<u64, (usize, u64)>::new()));

    let chat = {
        let (srv, stop, acked) = (srv.clone(), stop.clone(), chat_acked.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"channel": "chat.room", "msg_id": format!("c-{i}"),
                                  "data": {"i": i, "pad": "x".repeat(200)}});
                let ack = post(&srv, &body).await;
                acked
                    .lock()
                    .await
                    .insert(ack["offset"].as_u64().unwrap(), i);
                i += 1;
            }
        })
    };
    let quotes = {
        let (srv, stop, acked) = (srv.clone(), stop.clone(), quotes_acked.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A batch of one tick per symbol, in order.
                let items: Vec<Value> = (0..SYMBOLS.len())
                    .map(|s| json!({"channel": format!("quotes.{}", SYMBOLS[s]), "data": quote_data(s, i)}))
                    .collect();
                let r = post(&srv, &Value::Array(items)).await;
                let mut a = acked.lock().await;
                for (s, res) in r["results"].as_array().unwrap().iter().enumerate() {
                    a.insert(res["offset"].as_u64().unwrap(), (s, i));
                }
                i += 1;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let chat_before = chat_acked.lock().await.clone();
    let quotes_before = quotes_acked.lock().await.len();
    assert!(
        chat_before.len() > 50 && quotes_before > 50,
        "publishers run"
    );
    let out = dir.path().join("copy");
    let (url, out2) = (srv.url(""), out.clone());
    let backup = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args(["backup", "--url", &url, "--token", KEY, "--out"])
            .arg(&out2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        backup.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&backup.stderr)
    );
    // The server goes on after the copy; the copy must not need any of it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    chat.await.unwrap();
    quotes.await.unwrap();
    let chat_all = chat_acked.lock().await.clone();
    let quotes_all = quotes_acked.lock().await.clone();
    assert!(
        chat_all.len() > chat_before.len(),
        "published during and after the backup"
    );

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("BACKUP.json")).unwrap()).unwrap();
    let copied_chat = manifest["namespaces"]["chat"]["next_offset"]
        .as_u64()
        .unwrap();
    let copied_quotes = manifest["namespaces"]["quotes"]["next_offset"]
        .as_u64()
        .unwrap();
    // The candle store's copy resumes within the copied quote stream (a store copied after
    // the logs could hold ticks the copy does not).
    let resumes = manifest["candle_positions"]["quotes"].as_u64().unwrap();
    assert!(
        resumes <= copied_quotes,
        "candles resume at {resumes}, past the copied quotes' end {copied_quotes}"
    );
    let segments = std::fs::read_dir(out.join("log/chat"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert!(segments > 1, "the chat log spans several segments");

    // Restore: a server on the copy.
    let restored = Server::start(&out, &[], &env());
    let log = std::fs::read_to_string(out.with_extension("stderr.log")).unwrap_or_default();
    assert!(
        !log.contains("torn tail") && !log.contains("corruption"),
        "the copy opens without repair: {log}"
    );
    let live_chat = history(&srv, "chat.room").await;
    let restored_chat = history(&restored, "chat.room").await;
    // Every message acknowledged before the backup started is there, at its offset.
    let by_offset: BTreeMap<u64, &Value> = restored_chat.iter().map(|(o, m)| (*o, m)).collect();
    for (offset, i) in &chat_before {
        let m = by_offset
            .get(offset)
            .unwrap_or_else(|| panic!("acknowledged message {i} at offset {offset} is missing"));
        assert_eq!(m["data"]["i"], json!(i));
    }
    // The copy is exactly the live stream up to the copy's end: nothing missing, nothing
    // extra, nothing changed.
    let live_prefix: Vec<&(u64, Value)> =
        live_chat.iter().filter(|(o, _)| *o < copied_chat).collect();
    assert_eq!(restored_chat.len(), live_prefix.len());
    for ((a, ma), (b, mb)) in restored_chat.iter().zip(live_prefix) {
        assert_eq!((a, ma), (b, mb));
    }
    assert!(
        restored_chat.len() >= chat_before.len(),
        "{} < {}",
        restored_chat.len(),
        chat_before.len()
    );

    // Candles: feed the restored server the ticks the copy does not have, in the original
    // order, so both have the same quote stream; then their bars must be equal.
    let missing: Vec<(u64, (usize, u64))> = quotes_all
        .range(copied_quotes..)
        .map(|(o, v)| (*o, *v))
        .collect();
    for chunk in missing.chunks(300) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|(_, (s, i))| json!({"channel": format!("quotes.{}", SYMBOLS[*s]), "data": quote_data(*s, *i)}))
            .collect();
        let r = post(&restored, &Value::Array(items)).await;
        for ((offset, _), res) in chunk.iter().zip(r["results"].as_array().unwrap()) {
            assert_eq!(res["offset"].as_u64(), Some(*offset), "the same stream");
        }
    }
    for sym in SYMBOLS {
        for res in ["1s", "1m"] {
            let path = format!("/v1/candles/{sym}?res={res}&from=0&to=9999999999999&limit=1000");
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            loop {
                let a = common::get_json(&srv, &path).await;
                let b = common::get_json(&restored, &path).await;
                let ticks = |v: &Value| {
                    v["candles"].as_array().map_or(0, |c| {
                        c.iter()
                            .map(|b| b["ticks"].as_u64().unwrap_or(0))
                            .sum::<u64>()
                    })
                };
                if a == b && a["candles"].as_array().is_some_and(|c| !c.is_empty()) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{sym} {res}: candles differ: live {} ticks, restored {} ticks\nlive {a}\nrestored {b}",
                    ticks(&a),
                    ticks(&b)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_needs_the_admin_scope_and_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("live"), &[], &env());
    let r = http()
        .post(srv.url("/v1/admin/backup"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http()
        .post(srv.url("/v1/admin/backup"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("x"), b"x").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["backup", "--url", &srv.url(""), "--token", KEY, "--out"])
        .arg(&full)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
}
