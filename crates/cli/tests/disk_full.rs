//! A full disk, for real: the data directory on a small tmpfs is filled until publishing fails,
//! then space is freed. Publishing and candles must resume by themselves (the candle store used
//! to stay broken, "Previous I/O error occurred" every second), nothing acknowledged may be
//! lost, and a restart finds every acknowledged message.
//!
//! Needs permission to mount a tmpfs (root in the test machine's sandbox). Without it the test
//! fails and says so: a suite that cannot run this must not pass silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{get_json, http, wait_for, Server};
use serde_json::{json, Value};

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;
const WAIT: Duration = Duration::from_secs(30);

/// A tmpfs mounted at a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs to fill a disk for real and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Publishes one batch; the status and body.
async fn publish_batch(srv: &Server, items: &[Value]) -> (u16, Value) {
    let r = http()
        .post(srv.url("/v1/publish"))
        .body(Value::Array(items.to_vec()).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn chat(n: usize) -> Value {
    json!({"channel": "chat.full", "msg_id": format!("m-{n}"),
           "data": {"n": n, "pad": "x".repeat(400)}})
}

fn quote(n: usize) -> Value {
    json!({"channel": "quotes.FULL", "data": {"bid": format!("1.{:05}", n % 90_000), "ask": "2", "ts": T0 + n as i64 * 10_000}})
}

/// Fills what is left of the file system at `dir` with a file; its path.
fn fill_up(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler-rest");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_survived_and_nothing_acknowledged_is_lost() {
    let fs = Tmpfs::mount("24m");
    let data = fs.path().join("data");
    // The candle store commits every 2 s, so a commit falls inside the full-disk window.
    let env = [
        ("TICKWIRE_SEGMENT_BYTES", "1048576"),
        ("TICKWIRE_CANDLES__FLUSH_INTERVAL_MS", "30"),
        ("TICKWIRE_CANDLES__COMMIT_INTERVAL_MS", "2000"),
    ];
    // The server's log stays off the full volume, where whoever reads a failure finds it.
    let log = std::env::temp_dir().join("tickwire-disk-full-test.log");
    let _ = std::fs::remove_file(&log);
    let mut srv = Server::start_logging_to(&data, &log, &[], &env);
    let mut acked: Vec<(usize, u64)> = Vec::new();
    let record = |acked: &mut Vec<(usize, u64)>, first: usize, body: &Value| {
        for (i, r) in body["results"].as_array().unwrap().iter().enumerate() {
            if (first + i).is_multiple_of(2) {
                acked.push((first + i, r["offset"].as_u64().unwrap()));
            }
        }
    };
    // Chat and quotes whose bars close (one quote every 20 s of event time).
    let mut n: usize = 0;
    while n < 2_000 {
        let items: Vec<Value> = (n..n + 200)
            .map(|i| {
                if i.is_multiple_of(2) {
                    chat(i)
                } else {
                    quote(i)
                }
            })
            .collect();
        let (st, body) = publish_batch(&srv, &items).await;
        assert_eq!(st, 200, "{body}");
        record(&mut acked, n, &body);
        n += 200;
    }
    // The disk fills up (from outside, like another tenant of the volume): publishing is
    // refused with a storage error, and the candle store's next commit fails.
    let rest = fill_up(fs.path());
    let mut refused = 0;
    for _ in 0..20 {
        let items: Vec<Value> = (n..n + 200)
            .map(|i| {
                if i.is_multiple_of(2) {
                    chat(i)
                } else {
                    quote(i)
                }
            })
            .collect();
        let (st, body) = publish_batch(&srv, &items).await;
        if st == 200 {
            record(&mut acked, n, &body);
        } else {
            assert_eq!(st, 503, "a full disk is a storage error: {body}");
            refused += 1;
        }
        n += 200;
    }
    assert!(refused > 0, "the disk never filled");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let health = http().get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server is still up");

    // Space comes back: publishing resumes by itself.
    std::fs::remove_file(&rest).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let items: Vec<Value> = (n..n + 20)
            .map(|i| {
                if i.is_multiple_of(2) {
                    chat(i)
                } else {
                    quote(i)
                }
            })
            .collect();
        let (st, body) = publish_batch(&srv, &items).await;
        if st == 200 {
            record(&mut acked, n, &body);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing did not resume after space was freed: {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Candles resume too: quotes far after the others close and store new bars.
    for (k, bid) in [(1_000_000_000, "3"), (1_001_000_000, "4")] {
        let q = json!({"channel": "quotes.FULL", "data": {"bid": bid, "ask": bid, "ts": T0 + k}});
        let (st, body) = publish_batch(&srv, &[q]).await;
        assert_eq!(st, 200, "{body}");
    }
    wait_for(&srv, "/v1/candles/FULL?res=1m&limit=5", WAIT, |v| {
        v["candles"]
            .as_array()
            .is_some_and(|c| c.iter().any(|b| b["start_ms"] == T0 + 999_960_000))
    })
    .await;

    // A restart finds every acknowledged message, at its offset.
    srv.kill9();
    let srv = Server::start_logging_to(&data, &log, &[], &env);
    let mut found = std::collections::BTreeMap::new();
    let mut from = 0u64;
    loop {
        let page = get_json(
            &srv,
            &format!("/v1/history/chat.full?from={from}&limit=1000"),
        )
        .await;
        let msgs = page["messages"].as_array().unwrap();
        for m in msgs {
            found.insert(
                m["offset"].as_u64().unwrap(),
                m["data"]["n"].as_u64().unwrap(),
            );
        }
        let next = page["next"].as_u64().unwrap();
        if msgs.is_empty() || next == from {
            break;
        }
        from = next;
    }
    assert!(acked.len() > 1_000);
    for (i, off) in &acked {
        assert_eq!(
            found.get(off),
            Some(&(*i as u64)),
            "acknowledged message {i} at offset {off} is missing after the restart"
        );
    }
}
