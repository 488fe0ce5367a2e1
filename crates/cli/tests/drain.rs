//! Graceful drain on SIGTERM with `drain_delay_ms` (docs/deploy.md): `/readyz` fails at once
//! while the server still accepts and serves clients, so a load balancer stops sending new
//! ones; after the delay every client gets a `disconnect` with its resume point and the
//! process exits cleanly. Without the delay nothing waits (the default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{http, publish, Server, Ws};
use serde_json::json;

async fn status(srv: &Server, path: &str) -> u16 {
    http()
        .get(srv.url(path))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_during_drain_delay_while_clients_are_still_served_then_they_get_resume_points(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(
        &dir.path().join("d"),
        &[],
        &[("TICKWIRE_DRAIN_DELAY_MS", "2000")],
    );
    for i in 0..3 {
        publish(&srv, &json!({"channel": "chat.x", "data": {"i": i}})).await;
    }
    let mut ws = Ws::connect(&srv.ws_url("")).await;
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "chat.x", "from": 0}))
        .await;
    assert_eq!(r["ok"], json!(true));
    for _ in 0..3 {
        ws.push().await;
    }
    assert_eq!(status(&srv, "/readyz").await, 200);
    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &srv.pid().to_string()])
        .status()
        .unwrap();
    // Within the delay: not ready, still healthy, still serving old and new clients.
    let deadline = Instant::now() + Duration::from_secs(1);
    while status(&srv, "/readyz").await != 503 {
        assert!(Instant::now() < deadline, "readyz did not fail at once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&srv, "/healthz").await, 200);
    let mut late = Ws::connect(&srv.ws_url("")).await;
    assert_eq!(late.cmd(json!({"op": "ping"})).await["pong"], json!(true));
    let (code, ack) = publish(&srv, &json!({"channel": "chat.x", "data": {"i": 3}})).await;
    assert_eq!(code, 200, "{ack}");
    let p = ws.push().await;
    assert_eq!(p["data"], json!({"i": 3}));
    assert!(
        signalled.elapsed() < Duration::from_millis(1900),
        "the checks above ran inside the delay"
    );
    // Then the drain: the subscriber is told where to resume.
    assert!(ws.try_push(Duration::from_secs(10)).await.is_none());
    let bye = ws.closed.clone().expect("a disconnect frame");
    assert_eq!(bye["resume"]["chat.x"], json!(4), "{bye}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(2000),
        "not before the delay: {:?}",
        signalled.elapsed()
    );
    let exit = srv.terminate();
    assert!(exit.success(), "clean exit: {exit:?}");
}
