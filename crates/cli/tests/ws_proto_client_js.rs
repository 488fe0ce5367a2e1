//! The JavaScript client of the binary WebSocket encoding (docs/ws-proto-client.mjs: npm
//! `protobufjs` loading proto/tickwire/v1/tickwire.proto at run time) in Node against the real
//! server: tests/interop/ws-proto/check.mjs publishes a typed quote and JSON messages,
//! subscribes (a snapshot, a stream from 0), checks refusals and resumes in an epoch; this test
//! compares what the client decoded with the server's own answers over HTTP.
//!
//! Needs Node and npm (protobufjs and ws are installed under the cargo target directory). It
//! skips loudly when Node is absent or the packages cannot be installed, except in CI
//! (`CI` or `TICKWIRE_REQUIRE_ALL=1`), where that fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, process::Command};

use common::{get_json, Server};
use serde_json::{json, Value};

fn require_all() -> bool {
    let on = |k: &str, strict: fn(&str) -> bool| std::env::var(k).is_ok_and(|v| strict(&v));
    on("TICKWIRE_REQUIRE_ALL", |v| v == "1")
        || on("CI", |v| {
            !matches!(v, "" | "0" | "false" | "FALSE" | "False")
        })
}

/// Not running is a failure in CI and a loud skip elsewhere.
fn skip(why: &str) {
    assert!(
        !require_all(),
        "{why} (CI requires this test to run; see scripts/strict.sh)"
    );
    eprintln!("################################################################");
    eprintln!("## ws_proto_client_js: SKIPPED, nothing checked: {why}");
    eprintln!("################################################################");
}

/// protobufjs and ws installed in `dir` (once; later runs reuse them).
fn npm_install(dir: &Path) -> Result<(), String> {
    if dir.join("node_modules/protobufjs").is_dir() && dir.join("node_modules/ws").is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    // A package.json of our own: "type": "module" is not needed (.mjs), but npm wants one.
    std::fs::write(
        dir.join("package.json"),
        r#"{"name":"tw-ws-proto","private":true}"#,
    )
    .map_err(|e| e.to_string())?;
    let out = Command::new("npm")
        .args([
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "protobufjs@7",
            "ws@8",
        ])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("npm: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(dir.join("node_modules"));
        return Err(format!(
            "npm install protobufjs ws failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_protobuf_client_speaks_the_binary_websocket() {
    if Command::new("node").arg("--version").output().is_err() {
        return skip("node is not installed");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let node_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ws-proto-node");
    if let Err(e) = npm_install(&node_dir) {
        return skip(&e);
    }
    // The client and the script run from the directory npm installed into, so their `import`s
    // find the packages; the client is the docs' file itself.
    for (from, to) in [
        ("docs/ws-proto-client.mjs", "ws-proto-client.mjs"),
        ("tests/interop/ws-proto/check.mjs", "check.mjs"),
    ] {
        std::fs::copy(root.join(from), node_dir.join(to)).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &[]);
    let proto = root.join("proto/tickwire/v1/tickwire.proto");
    let run = tokio::task::spawn_blocking({
        let url = srv.ws_url("");
        let node_dir = node_dir.clone();
        move || {
            Command::new("node")
                .arg("check.mjs")
                .arg(url)
                .arg(proto)
                .current_dir(node_dir)
                .output()
                .unwrap()
        }
    });
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the Node client finished within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "WS PROTO CLIENT PASSED"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();

    // What the client decoded is what the server holds.
    let latest = get_json(&srv, "/v1/latest/quotes.JSPB").await;
    assert_eq!(seen["quote"]["offset"], latest["offset"]);
    assert_eq!(seen["quote"]["bid"], latest["data"]["bid"]);
    assert_eq!(seen["quote"]["bid"], "1.084120000000000000000000001");
    assert_eq!(seen["quote"]["ask"], latest["data"]["ask"]);
    let history = get_json(&srv, "/v1/history/chat.jspb?from=0").await;
    assert_eq!(seen["epoch"], history["epoch"]);
    let stored: Vec<Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!({"offset": m["offset"], "data": m["data"]}))
        .collect();
    assert_eq!(stored.len(), 5, "{history}");
    assert_eq!(seen["chat"], json!(stored[..3]));
    assert_eq!(seen["resumed"], json!(stored[3..]));
    assert_eq!(
        seen["errors"],
        json!({"epoch": "epoch_mismatch", "decimal": "bad_data", "channel": "bad_channel"})
    );
}
