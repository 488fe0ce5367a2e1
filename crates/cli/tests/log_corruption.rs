//! Issue 14, defect 4: corruption in the active log segment used to be cut off as if it were a
//! torn tail, silently: one flipped byte at 10 % of the segment took every acknowledged message
//! after it, and the server said nothing. A bad record followed by valid records is not a torn
//! write: the server must keep every valid record, account exactly for what it lost (server log
//! and `/metrics`), and keep the damaged bytes in quarantine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{get_json, get_text, http, Server};
use serde_json::{json, Value};

const MESSAGES: u64 = 20_000;
const BATCH: u64 = 1_000;

/// The newest segment file of a namespace log.
fn active_segment(log_dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment file")
}

/// The record holding byte `at` of a segment, read from the frozen framing (16-byte header,
/// then `len u32 | crc u32 | offset u64 | ...` with `len` counting the bytes after the crc):
/// (first byte, end, offset).
fn record_at(bytes: &[u8], at: usize) -> (usize, usize, u64) {
    let mut pos = 16;
    while pos < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + 8 + len;
        if at < end {
            let offset = u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().unwrap());
            return (pos, end, offset);
        }
        pos = end;
    }
    panic!("byte {at} is past the last record");
}

/// Every message of `channel` in history: offset → data.
async fn history(srv: &Server, channel: &str) -> HashMap<u64, Value> {
    let mut stored = HashMap::new();
    let mut from = 0u64;
    loop {
        let page = get_json(
            srv,
            &format!("/v1/history/{channel}?from={from}&limit=1000"),
        )
        .await;
        let msgs = page["messages"].as_array().unwrap();
        if msgs.is_empty() {
            return stored;
        }
        for m in msgs {
            stored.insert(m["offset"].as_u64().unwrap(), m["data"].clone());
        }
        from = page["next"].as_u64().unwrap();
    }
}

/// The value of one sample line of `/metrics`.
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_active_segment_loses_exactly_one_message_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let server_log = dir.path().join("server.log");
    let mut srv = Server::start_logging_to(&data, &server_log, &[], &[]);
    let client = http();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for first in (0..MESSAGES).step_by(BATCH as usize) {
        let items: Vec<Value> = (first..first + BATCH)
            .map(|n| json!({"channel": "chat.corrupt", "msg_id": format!("m-{n}"), "data": {"n": n}}))
            .collect();
        let r = client
            .post(srv.url("/v1/publish"))
            .body(Value::Array(items).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body: Value = r.json().await.unwrap();
        for (i, res) in body["results"].as_array().unwrap().iter().enumerate() {
            acked.push((res["offset"].as_u64().unwrap(), first + i as u64));
        }
    }
    assert_eq!(acked.len() as u64, MESSAGES);
    srv.kill9();

    let log_dir = data.join("log").join("chat");
    let seg = active_segment(&log_dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 10;
    let (start, end, lost) = record_at(&bytes, at);
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let srv = Server::start_logging_to(&data, &server_log, &[], &[]);

    // Every acknowledged message but the damaged one is still there, at its offset.
    let stored = history(&srv, "chat.corrupt").await;
    let missing: Vec<u64> = acked
        .iter()
        .filter(|(offset, _)| !stored.contains_key(offset))
        .map(|(offset, _)| *offset)
        .collect();
    assert!(
        missing == vec![lost],
        "history must lose exactly offset {lost}, the record holding the flipped byte; it lost \
         {} messages (from {:?}) and kept {} of {MESSAGES}",
        missing.len(),
        missing.first(),
        stored.len()
    );
    for (offset, n) in &acked {
        if *offset != lost {
            assert_eq!(stored[offset], json!({"n": n}), "offset {offset}");
        }
    }

    // The server log gives the exact account, at error level.
    let text = std::fs::read_to_string(&server_log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("quarantined"))
        .unwrap_or_else(|| panic!("no error about the quarantine in the server log:\n{text}"));
    for want in [
        "namespace=\"chat\"".to_string(),
        format!("lost_offsets={lost}..{}", lost + 1),
        "lost_records=1".to_string(),
        format!("bytes={start}..{end}"),
    ] {
        let bare = want.replace('"', "");
        assert!(
            line.contains(&want) || line.contains(&bare),
            "{want} missing from: {line}"
        );
    }

    // And /metrics counts it.
    let m = get_text(&srv, "/metrics").await;
    let series = |name: &str| metric(&m, &format!("{name}{{namespace=\"chat\"}}"));
    assert_eq!(
        series("tickwire_log_recovery_quarantined_records_total"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        series("tickwire_log_recovery_quarantined_bytes_total"),
        Some((end - start) as u64)
    );
    assert_eq!(
        series("tickwire_log_recovery_truncated_bytes_total"),
        Some(0)
    );

    // The damaged bytes are kept for whoever investigates.
    let copy = log_dir.join("quarantine").join(format!(
        "{}-{start:020}.bad",
        seg.file_stem().unwrap().to_str().unwrap()
    ));
    assert_eq!(std::fs::read(&copy).unwrap(), &bytes[start..end]);
}
