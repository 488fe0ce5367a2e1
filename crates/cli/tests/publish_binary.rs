//! `POST /v1/publish` with a binary batch (`application/vnd.tickwire.batch`), against the real
//! binary over TCP: what is acknowledged is stored byte for byte, a repeated msg_id is a
//! duplicate, and every kind of bad input is refused whole with a problem+json answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use tickwire_wire::{decode_acks, encode_item, BatchItem, BATCH_CONTENT_TYPE, BATCH_MAGIC};

fn batch(items: &[BatchItem<'_>]) -> Vec<u8> {
    let mut out = BATCH_MAGIC.to_vec();
    for i in items {
        encode_item(&mut out, i).unwrap();
    }
    out
}

fn item<'a>(channel: &'a str, msg_id: Option<&'a str>, data: &'a str) -> BatchItem<'a> {
    BatchItem {
        channel,
        msg_id,
        data: data.as_bytes(),
    }
}

/// POSTs a binary body; returns the status, the content type and the raw answer.
async fn post(srv: &Server, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let r = http()
        .post(srv.url("/v1/publish"))
        .header("content-type", BATCH_CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = content_type(&r);
    (status, ct, r.bytes().await.unwrap().to_vec())
}

/// A refusal: problem+json with the expected status; returns the problem.
async fn refused(srv: &Server, body: Vec<u8>, status: u16) -> Value {
    let (s, ct, b) = post(srv, body).await;
    let p: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, status, "{p}");
    assert_eq!(ct, "application/problem+json");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_batch_publishes_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &[], &[]);

    // Three items in three namespaces; data kept exactly as sent (spacing included).
    let q = r#"{"bid":"1.10000","ask":"1.10002", "ts":1}"#;
    let body = batch(&[
        item("quotes.EURUSD", None, q),
        item("chat.room1", Some("m-1"), r#"{"text":"hello"}"#),
        item("chat.room1", None, r#"[1, "two", {"three": 3}]"#),
    ]);
    let (s, ct, answer) = post(&srv, body).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(ct, "application/vnd.tickwire.acks");
    let acks = decode_acks(&answer).unwrap();
    assert_eq!(acks.len(), 3);
    assert!(acks.iter().all(|(_, dup)| !dup));
    assert_eq!(acks[2].0, acks[1].0 + 1, "chat offsets are consecutive");
    let latest = get_json(&srv, "/v1/latest/quotes.EURUSD").await;
    assert_eq!(latest["offset"].as_u64(), Some(acks[0].0));
    assert_eq!(
        latest["data"],
        json!({"bid":"1.10000","ask":"1.10002","ts":1})
    );
    let h = get_json(&srv, "/v1/history/chat.room1?from=0").await;
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["data"], json!({"text":"hello"}));
    assert_eq!(msgs[1]["data"], json!([1, "two", {"three": 3}]));

    // The same msg_id again: nothing appended, the first offset, flagged duplicate.
    let (s, _, answer) = post(
        &srv,
        batch(&[item("chat.room1", Some("m-1"), r#"{"text":"again"}"#)]),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(decode_acks(&answer).unwrap(), vec![(acks[1].0, true)]);

    // The JSON form still works beside it, and sees the binary items' msg_ids.
    let (s, v) = publish(
        &srv,
        &json!({"channel":"chat.room1","msg_id":"m-1","data":{"text":"json"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["duplicate"], true);

    // Framing errors: the whole batch is refused and named.
    let p = refused(&srv, b"{\"channel\":\"chat.x\"}".to_vec(), 400).await;
    assert!(p["detail"].as_str().unwrap().contains("TWB1"), "{p}");
    refused(&srv, BATCH_MAGIC.to_vec(), 400).await;
    let mut cut = batch(&[item("chat.room1", None, r#"{"text":"x"}"#)]);
    cut.truncate(cut.len() - 3);
    let p = refused(&srv, cut, 400).await;
    assert!(p["detail"].as_str().unwrap().contains("item 0"), "{p}");
    let mut huge_len = BATCH_MAGIC.to_vec();
    huge_len.extend_from_slice(&10u16.to_le_bytes());
    huge_len.extend_from_slice(b"chat.room1");
    huge_len.extend_from_slice(&0u16.to_le_bytes());
    huge_len.extend_from_slice(&u32::MAX.to_le_bytes());
    huge_len.extend_from_slice(b"{}");
    refused(&srv, huge_len, 400).await;

    // Item errors: every bad index listed, nothing published.
    let long_id = "i".repeat(129);
    let too_big = format!(r#"{{"text":"{}"}}"#, "x".repeat(70_000));
    let p = refused(
        &srv,
        batch(&[
            item("chat.room1", None, r#"{"text":"fine"}"#),
            item("chat.room1", None, r#"{"text": nope}"#),
            item("no_dot", None, "{}"),
            item("quotes.EURUSD", None, r#"{"bid":1.5}"#),
            item("nosuch.ns", None, "{}"),
            item("chat.room1", None, &too_big),
            item("chat.room1", Some(&long_id), "{}"),
            item("quotes.EURUSD", None, r#"{"bid":"1.1", "bid":"1.2"}"#),
        ]),
        400,
    )
    .await;
    let bad: Vec<u64> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(bad, vec![1, 2, 3, 4, 5, 6, 7], "{p}");
    assert!(p["detail"].as_str().unwrap().contains("7 of 8"), "{p}");
    let h = get_json(&srv, "/v1/history/chat.room1?from=0").await;
    assert_eq!(
        h["messages"].as_array().unwrap().len(),
        2,
        "nothing published"
    );

    // More than 10,000 items: too large, before anything is checked.
    let many: Vec<BatchItem<'_>> = (0..10_001)
        .map(|_| item("chat.room1", None, "{}"))
        .collect();
    refused(&srv, batch(&many), 413).await;
}
