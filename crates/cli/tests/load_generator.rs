//! The load generator (`tickwire bench run`) against a real server: the figures the benchmark
//! reports are only as good as its counting, so it is checked on shapes whose answer is known.
//! Breaks these catch: a delivery counted twice or a snapshot counted as a live update
//! (delivered per published above the fan-out factor), a subscriber that misses the newest
//! value of a symbol and is still reported converged, a chat resume counted as loss or the
//! duplicate detector blind to replays, a book subscriber whose book is not the server's
//! reported converged. The parsers themselves are unit-tested in
//! `crates/bench/src/proto.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::Server;
use serde_json::Value;

/// Runs `tickwire bench run ARGS --json FILE` against `srv` and returns the JSON result.
fn bench(srv: &Server, dir: &std::path::Path, name: &str, args: &[&str]) -> Value {
    let json = dir.join(format!("{name}.json"));
    let bin = std::env::var_os("TICKWIRE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tickwire").into());
    let out = Command::new(bin)
        .args(["bench", "run", "--addr", &srv.addr, "--label", name])
        .args(["--server-pid", &srv.pid().to_string()])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run tickwire bench");
    assert!(
        out.status.success(),
        "bench {name} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).expect("read the bench JSON")).expect("bench JSON")
}

fn extra(r: &Value, key: &str) -> f64 {
    r["extra"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no extra.{key} in {r}"))
}

#[test]
fn fanout_counts_each_delivery_once_and_checks_convergence() {
    // The same check for each way subscribers read: JSON and binary WebSocket, gRPC calls.
    for encoding in ["json", "proto", "grpc"] {
        fanout_counts(encoding);
    }
}

fn fanout_counts(encoding: &str) {
    let dir = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", common::free_port());
    let srv = Server::start(
        &dir.path().join("data"),
        &["--fsync", "interval:100ms"],
        &[("TICKWIRE_GRPC__LISTEN", grpc.as_str())],
    );
    // 20 clients on 10 of 50 symbols each: every quote has exactly 20 * 10 / 50 = 4
    // subscribers. 1,000 quotes/s is far below what the server sustains, so next to nothing is
    // conflated: delivered per published sits just under 4, never above it.
    let r = bench(
        &srv,
        dir.path(),
        "fanout",
        &[
            "--scenario",
            "fanout",
            "--target",
            "tickwire-ws",
            "--clients",
            "20",
            "--subs",
            "10",
            "--symbols",
            "50",
            "--size",
            "100",
            "--rate",
            "1000",
            "--duration",
            "2",
            "--warmup",
            "1",
            "--drain",
            "2",
            "--sub-encoding",
            encoding,
            "--grpc-addr",
            &grpc,
        ],
    );
    let published = r["published_per_s"].as_f64().unwrap();
    assert!(
        (500.0..=1100.0).contains(&published),
        "{encoding}: published {published}/s for 1,000/s offered"
    );
    let per = extra(&r, "delivered_per_published");
    assert!(
        (3.0..=4.1).contains(&per),
        "{encoding}: each quote has 4 subscribers, the generator counted {per} deliveries per quote"
    );
    assert_eq!(
        extra(&r, "converged"),
        1.0,
        "{encoding}: every subscriber ends with each symbol's newest value"
    );
    // Payload bytes: 100 per delivery, whatever the envelope.
    let mb = r["mb_per_s"].as_f64().unwrap();
    let delivered = r["delivered_per_s"].as_f64().unwrap();
    assert!(
        (mb - delivered * 100.0 / 1e6).abs() < 1e-6,
        "{mb} MB/s for {delivered} deliveries/s"
    );
    // Staleness is sampled through the run and can never be below zero or above the run.
    let p99 = extra(&r, "staleness_p99_us");
    assert!((0.0..=3_000_000.0).contains(&p99), "staleness p99 {p99} us");
}

#[test]
fn chat_resume_reports_no_loss_and_no_duplicate_on_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &["--fsync", "always"], &[]);
    // Clients drop their connection every ~0.5 s and resume by offset: the server loses
    // nothing, so any loss, duplicate or reordering reported would be the generator's.
    let r = bench(
        &srv,
        dir.path(),
        "chat",
        &[
            "--scenario",
            "chat",
            "--target",
            "tickwire-ws",
            "--clients",
            "10",
            "--rooms",
            "2",
            "--rate",
            "200",
            "--disconnect-ms",
            "500",
            "--duration",
            "2",
            "--warmup",
            "1",
        ],
    );
    assert!(extra(&r, "reconnects") > 0.0, "no reconnect happened: {r}");
    for k in ["lost", "duplicated", "out_of_order"] {
        assert_eq!(extra(&r, k), 0.0, "{k}: {r}");
    }
    let published = r["published_per_s"].as_f64().unwrap();
    assert!(
        (100.0..=220.0).contains(&published),
        "chat published {published}/s for 200/s offered (counted over the measured window)"
    );
    assert!(r["delivered_per_s"].as_f64().unwrap() > 0.0, "{r}");
}

#[test]
fn book_subscribers_end_with_the_servers_books_at_depth_10_and_full_depth() {
    for depth in ["10", "0"] {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(
            &dir.path().join("data"),
            &["--fsync", "interval:100ms"],
            &[("TICKWIRE_BOOKS__DEPTH", depth)],
        );
        // 4 books of 20 levels a side, 3 clients on 2 books each, 300 level changes/s: far
        // below what the server sustains, so every subscriber must end with the server's book
        // (same seq, same levels), with no gap and every checksum matching its own book.
        let r = bench(
            &srv,
            dir.path(),
            &format!("book-{depth}"),
            &[
                "--scenario",
                "book",
                "--target",
                "tickwire-ws",
                "--symbols",
                "4",
                "--levels",
                "20",
                "--clients",
                "3",
                "--subs",
                "2",
                "--rate",
                "300",
                "--duration",
                "2",
                "--warmup",
                "1",
                "--drain",
                "1",
            ],
        );
        assert_eq!(extra(&r, "converged"), 1.0, "depth {depth}: {r}");
        assert_eq!(extra(&r, "gaps"), 0.0, "depth {depth}: {r}");
        assert_eq!(extra(&r, "checksum_mismatches"), 0.0, "depth {depth}: {r}");
        assert_eq!(
            extra(&r, "server_depth"),
            depth.parse::<f64>().unwrap(),
            "the snapshots carry the server's depth: {r}"
        );
        // One snapshot per subscription, none counted as a delta.
        assert_eq!(extra(&r, "snapshots"), 6.0, "depth {depth}: {r}");
        let published = r["published_per_s"].as_f64().unwrap();
        assert!(
            (150.0..=330.0).contains(&published),
            "depth {depth}: published {published}/s for 300/s offered"
        );
        let delivered = r["delivered_per_s"].as_f64().unwrap();
        // Each book is on 1.5 subscribers and gets at most one delta per 20 ms flush: 6
        // subscriptions x 50/s bound what can arrive.
        assert!(
            delivered > 0.0 && delivered <= 6.0 * 55.0,
            "depth {depth}: {delivered} deltas/s"
        );
        assert!(extra(&r, "levels_per_delta") >= 1.0, "{r}");
        assert!(r["latency"]["count"].as_u64().unwrap() > 0, "{r}");
    }
}
