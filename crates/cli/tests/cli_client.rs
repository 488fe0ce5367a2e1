//! The command line against a running server: `pub`, `sub`, `tail`, `status`,
//! `check-config`, `completions`, and `sim` taking its key as the server documents keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::Server;
use serde_json::{json, Value};

const KEY: &str = "cli-test-admin-key-0123456789abcdef";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![(
        "TICKWIRE_API_KEYS",
        "[\"cli-test-admin-key-0123456789abcdef\"]",
    )]
}

fn tickwire(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickwire"));
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("TICKWIRE_API_KEYS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    // Bounded: a command that hangs fails the test instead of the suite.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tickwire {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines(o: &Output) -> Vec<Value> {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_and_tail_keep_every_digit_resume_by_offset_and_print_the_last_messages() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &env());
    let url = srv.url("");
    let with_key = ["--url", &url, "--token", KEY];
    // One message from an argument, with a price no float can hold.
    let px = "1.1000000000000000000000000001";
    let data = format!(r#"{{"text":"hi","px":"{px}","n":1.10000000000000000000001}}"#);
    let o = tickwire(
        &[&["pub", "chat.a", &data][..], &with_key[..]].concat(),
        None,
        &[],
    );
    let acks = lines(&o);
    assert_eq!(acks[0]["offset"], json!(0));
    // Many from standard input, interleaved with another channel of the same namespace.
    let mut stdin = String::new();
    for i in 1..=30 {
        stdin.push_str(&format!("{{\"i\":{i}}}\n\n"));
    }
    let acks = lines(&tickwire(
        &[&["pub", "chat.a", "--batch", "7"][..], &with_key[..]].concat(),
        Some(&stdin),
        &[],
    ));
    assert_eq!(acks.len(), 30, "blank lines are skipped");
    lines(&tickwire(
        &[&["pub", "chat.b", r#"{"other":true}"#][..], &with_key[..]].concat(),
        None,
        &[],
    ));
    // An explicit msg_id again: the first offset, marked duplicate, nothing stored.
    let first = lines(&tickwire(
        &[
            &["pub", "chat.a", "{}", "--msg-id", "same"][..],
            &with_key[..],
        ]
        .concat(),
        None,
        &[],
    ));
    let again = lines(&tickwire(
        &[
            &["pub", "chat.a", "{}", "--msg-id", "same"][..],
            &with_key[..],
        ]
        .concat(),
        None,
        &[],
    ));
    assert_eq!(again[0]["offset"], first[0]["offset"]);
    assert_eq!(again[0]["duplicate"], json!(true));
    // Without a key the server refuses, and the command says why.
    let o = tickwire(
        &["pub", "quotes.X", r#"{"bid":"1","ask":"2"}"#, "--url", &url],
        None,
        &[],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("401"));

    // sub --from 0: everything, in order, data byte for byte.
    let o = tickwire(
        &[
            &[
                "sub", "chat.a", "--from", "0", "--count", "32", "--format", "ndjson",
            ][..],
            &with_key[..],
        ]
        .concat(),
        None,
        &[],
    );
    let got = lines(&o);
    assert_eq!(got.len(), 32);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&data),
        "exact data"
    );
    let offsets: Vec<u64> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert_eq!(got[31]["data"], json!({}));

    // tail -n 3 --no-follow: the last three of chat.a only.
    let got = lines(&tickwire(
        &[
            &[
                "tail",
                "chat.a",
                "-n",
                "3",
                "--no-follow",
                "--format",
                "ndjson",
            ][..],
            &with_key[..],
        ]
        .concat(),
        None,
        &[],
    ));
    let datas: Vec<Value> = got.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(datas, vec![json!({"i": 29}), json!({"i": 30}), json!({})]);

    // sub --last 2, then follow: the two newest, then a live one, no duplicate.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "sub", "chat.a", "--last", "2", "--count", "3", "--format", "ndjson",
        ])
        .args(with_key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    lines(&tickwire(
        &[&["pub", "chat.a", r#"{"live":1}"#][..], &with_key[..]].concat(),
        None,
        &[],
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while follower.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "sub did not stop after --count"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = lines(&follower.wait_with_output().unwrap());
    let datas: Vec<Value> = got.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(datas, vec![json!({"i": 30}), json!({}), json!({"live": 1})]);

    // State channels: --last 1 prints the newest value once (not again as the snapshot).
    for bid in ["1.10", "1.11"] {
        lines(&tickwire(
            &[
                &[
                    "pub",
                    "quotes.EURUSD",
                    &format!(r#"{{"bid":"{bid}","ask":"1.20"}}"#),
                ][..],
                &with_key[..],
            ]
            .concat(),
            None,
            &[],
        ));
    }
    let got = lines(&tickwire(
        &[
            &[
                "tail",
                "quotes.EURUSD",
                "-n",
                "1",
                "--no-follow",
                "--format",
                "ndjson",
            ][..],
            &with_key[..],
        ]
        .concat(),
        None,
        &[],
    ));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["data"]["bid"], json!("1.11"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_resumes_after_a_server_restart_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    // Port 0 for the first start. The restart must come back on the port it bound, free again
    // once the first process is gone: the follower (`tickwire sub --url`) reconnects to the
    // address it was given.
    let mut server = Server::start_on(&data, "127.0.0.1:0", &[], &env());
    let listen = server.addr.clone();
    let url = format!("http://{listen}");
    let publish = |from: u32, to: u32| {
        let mut stdin = String::new();
        for i in from..to {
            stdin.push_str(&format!("{{\"i\":{i}}}\n"));
        }
        lines(&tickwire(
            &["pub", "chat.r", "--url", &url, "--token", KEY],
            Some(&stdin),
            &[],
        ));
    };
    publish(0, 10);
    let follower = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args([
            "sub", "chat.r", "--from", "0", "--count", "30", "--format", "ndjson",
        ])
        .args(["--url", &url, "--token", KEY])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SIGTERM: the server tells the subscriber to go, with its resume point.
    server.terminate();
    // Killed on drop, once the follower has what it waits for.
    let _restarted = Server::start_on(&data, &listen, &[], &env());
    publish(10, 30);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut follower = follower;
    while follower.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = follower.kill();
            panic!("sub did not get 30 messages");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = lines(&follower.wait_with_output().unwrap());
    let is: Vec<u64> = got
        .iter()
        .map(|m| m["data"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(is, (0..30).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_health_namespaces_and_lag_and_probes_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &env());
    let url = srv.url("");
    let o = tickwire(
        &["status", "--json", "--url", &url, "--token", KEY],
        None,
        &[],
    );
    let s = &lines(&{
        // --json prints one pretty object: read it whole.
        let mut o = o;
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        o.stdout = v.to_string().into_bytes();
        o
    })[0];
    assert_eq!(s["healthy"], json!(true));
    assert_eq!(s["ready"], json!(true));
    let names: Vec<&str> = s["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"chat") && names.contains(&"quotes"),
        "{names:?}"
    );
    assert!(s["projection_lag"]["candles/quotes"].is_number(), "{s}");
    assert!(s["sessions"].is_number());
    // The key from the environment the server reads (TICKWIRE_API_KEYS) is used too.
    let o = tickwire(&["status", "--url", &url], None, &env());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("namespaces:"), "{text}");
    // Without it: health only, and a hint.
    let o = tickwire(&["status", "--url", &url], None, &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("admin scope"));
    for probe in ["healthz", "readyz"] {
        let o = tickwire(&["status", "--url", &url, "--probe", probe], None, &[]);
        assert!(o.status.success(), "{probe}");
    }
    drop(srv);
    let o = tickwire(&["status", "--url", &url, "--probe", "healthz"], None, &[]);
    assert!(!o.status.success(), "a stopped server fails the probe");
}

#[test]
fn check_config_accepts_what_serve_accepts_and_names_what_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "fsync = \"always\"\ndrain_delay_ms = 5000\n[http]\nlisten = \"0.0.0.0:7700\"\n",
    )
    .unwrap();
    let o = tickwire(
        &["check-config", "--config", good.to_str().unwrap()],
        None,
        &[],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("ok") && text.contains("0.0.0.0:7700") && text.contains("development mode")
    );
    for (body, says) in [
        ("bogus = 1\n", "bogus"),
        ("fsync = \"sometimes\"\n", "sometimes"),
        ("[auth]\njwt_hmac_secret = \"short\"\n", "32"),
        ("[candles]\nquote_namespaces = [\"nope\"]\n", "nope"),
        (
            "[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nreplicas = 7\n",
            "replicas",
        ),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, body).unwrap();
        let o = tickwire(
            &["check-config", "--config", bad.to_str().unwrap()],
            None,
            &[],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{body}: {err}");
        assert!(err.contains(says), "{body}: {err}");
    }
    assert!(text.contains("cluster:    none"), "{text}");
    // Cluster mode from the environment, as the Kubernetes manifests set it.
    let o = tickwire(
        &["check-config", "--config", good.to_str().unwrap()],
        None,
        &[
            (
                "TICKWIRE_CLUSTER__NATS",
                r#"["nats://a:4222","nats://b:4222"]"#,
            ),
            ("TICKWIRE_CLUSTER__REPLICAS", "3"),
            ("TICKWIRE_CLUSTER__NODE", "n1"),
        ],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("node `n1`, 3 replica(s), NATS nats://a:4222, nats://b:4222"),
        "{text}"
    );
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tickwire.example.toml");
    assert!(tickwire(&["check-config", "--config", shipped], None, &[])
        .status
        .success());
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let o = tickwire(&["completions", shell], None, &[]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains("tail") && text.contains("backup"),
            "{shell}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_publishes_with_the_key_from_the_servers_environment_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("d"), &[], &env());
    let url = srv.url("");
    let o = tickwire(
        &[
            "sim",
            "--symbols",
            "2",
            "--rate",
            "200",
            "--duration",
            "1",
            "--url",
            &url,
        ],
        None,
        &env(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        !err.contains("not a setting") && !err.contains("refused"),
        "{err}"
    );
    let latest = common::get_json(&srv, "/v1/latest/quotes.EURUSD").await;
    assert!(latest["data"]["bid"].is_string(), "sim published: {latest}");
}
