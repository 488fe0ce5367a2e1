//! HTTP hardening end to end (issue 15 #6), over real sockets on 127.0.0.1 against the real
//! binary: close code 1009 for a frame over the limit, and error bodies without server file
//! paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{http, Server, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};

fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &["--fsync", "never"], env);
    (dir, srv)
}

/// docs/protocol.md: frames larger than 4 MiB are refused by the WebSocket layer with close
/// code 1009. (The connection used to be dropped without a close frame.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_frame_over_the_limit_gets_close_code_1009() {
    let (_dir, srv) = start(&[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(srv.ws_url(""))
        .await
        .unwrap();
    let big = "x".repeat(5 * 1024 * 1024);
    // The server may close before the whole frame is written: a failed send is expected.
    let _ = ws.send(Message::Text(big.into())).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let code = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close frame within {TIMEOUT:?}"),
            Ok(Some(Ok(Message::Close(Some(f))))) => break Some(f.code),
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) => break None,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("connection failed without a close frame: {e}"),
        }
    };
    assert_eq!(code, Some(CloseCode::Size), "close code 1009");
}

/// A tmpfs mounted at a temporary directory, unmounted on drop (root only, like disk_full.rs).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test fills a real tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A storage failure's text names the log file it failed on. The client gets the failure
/// (503, `unavailable`) without the server's paths; the server log keeps the whole text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_do_not_show_server_file_paths() {
    let fs = Tmpfs::mount("6m");
    let data = fs.dir.path().join("data");
    let log = std::env::temp_dir().join(format!("tickwire-paths-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let srv = Server::start_logging_to(
        &data,
        &log,
        &["--fsync", "always"],
        &[("TICKWIRE_SEGMENT_BYTES", "1048576")],
    );
    let mut ws = common::Ws::connect(&srv.ws_url("")).await;
    // Fill the volume from outside, then publish until the log cannot write.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(fs.dir.path().join("filler")).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
    }
    let pad = "x".repeat(4000);
    let mut bodies = Vec::new();
    for i in 0..400 {
        let items: Vec<Value> = (0..20)
            .map(|k| json!({"channel": "chat.full", "data": {"i": i, "k": k, "pad": pad}}))
            .collect();
        let r = http()
            .post(srv.url("/v1/publish"))
            .body(Value::Array(items).to_string())
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            assert_eq!(r.status(), 503);
            bodies.push(r.text().await.unwrap());
            if bodies.len() >= 3 {
                break;
            }
        }
    }
    assert!(!bodies.is_empty(), "the disk never filled");
    // The WebSocket edge answers a storage failure with an error reply, not a problem body.
    let big = "y".repeat(60_000);
    let mut reply = Value::Null;
    for _ in 0..20 {
        reply = ws
            .cmd(json!({"op": "publish", "channel": "chat.full", "data": {"pad": big}}))
            .await;
        if reply["ok"] == false {
            break;
        }
    }
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    let data_dir = data.to_str().unwrap();
    let fs_dir = fs.dir.path().to_str().unwrap();
    for body in bodies.iter().chain([&reply.to_string()]) {
        assert!(
            !body.contains(fs_dir) && !body.contains("/log/"),
            "an error body shows a server path: {body}"
        );
    }
    let first: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(first["code"], "unavailable", "{first}");
    eprintln!("503 body: {first}\nWebSocket reply: {reply}");
    drop(srv);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(data_dir),
        "the server log keeps the full error: {logged}"
    );
    let _ = std::fs::remove_file(&log);
}
