//! TLS on every edge, against the real binary with a test CA (rcgen) and clients over rustls:
//! HTTPS and WSS on the HTTP listener, MQTT over TLS on its own listener (with its own
//! certificate or the shared one), FIX over TLS for the acceptor and for the initiator (against
//! `tickwire fix-sim --tls-cert`), a handshake that stalls, SIGHUP reloads, and the
//! configuration mistakes that stop the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    fix_session,
    mqtt::{packet, string},
    refused, start_with_config,
    tls::Pki,
    wait_for, FixClient, Server, TIMEOUT,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tickwire_fix::tags::msg_type;
use tickwire_tls::ClientTlsStream;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};

const SECRET: &str = "tls-test-secret-of-at-least-32-bytes!";
const KEY: &str = "tls-test-api-key";

fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    tickwire_gateway::mint_hs256(
        SECRET.as_bytes(),
        &tickwire_gateway::Claims {
            sub: sub.into(),
            exp: Some(exp),
            channels: None,
            publish: None,
            info: None,
        },
    )
    .unwrap()
}

/// `[auth]` with a JWT secret and an all-scopes API key, then `[tls]`, then `extra`.
fn config(pki: &Pki, extra: &str) -> String {
    format!(
        r#"
[auth]
jwt_hmac_secret = "{SECRET}"
[[auth.api_keys]]
name = "ops"
key = "{KEY}"
{}
{extra}
"#,
        pki.toml()
    )
}

async fn publish(pki: &Pki, srv: &Server, channel: &str, data: Value) {
    let r = pki
        .https()
        .post(srv.url("/v1/publish"))
        .bearer_auth(KEY)
        .body(json!({"channel": channel, "data": data}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

// ---- WebSocket over TLS ----

type Wss = WebSocketStream<ClientTlsStream<TcpStream>>;

async fn wss(pki: &Pki, srv: &Server, query: &str) -> Wss {
    let tls = pki.connect(&srv.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(srv.ws_url(query), tls)
        .await
        .unwrap();
    ws
}

/// The next JSON frame.
async fn frame(ws: &mut Wss) -> Value {
    loop {
        let m = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("WebSocket read timed out")
            .expect("WebSocket closed")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Sends a command with `id` and returns its reply (pushes before it are dropped).
async fn cmd(ws: &mut Wss, id: u64, mut v: Value) -> Value {
    v["id"] = id.into();
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
    loop {
        let f = frame(ws).await;
        if f["id"] == id {
            return f;
        }
    }
}

async fn push(ws: &mut Wss) -> Value {
    loop {
        let f = frame(ws).await;
        if f.get("ch").is_some() {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_serve_the_configured_certificate_and_nothing_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let srv = start_with_config(&dir, &config(&pki, ""));
    assert_eq!(srv.scheme, "https", "{:?}", srv.banner);
    assert!(
        srv.banner.iter().any(|l| l.contains("wss://")),
        "{:?}",
        srv.banner
    );
    let r = pki.https().get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(pki.presented(&srv.addr).await, pki.fingerprint());

    // A client that trusts another CA refuses the server.
    let other = Pki::new(dir.path(), "other");
    let e = other.connect(&srv.addr).await.unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = TcpStream::connect(&srv.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // WSS: a user reads its own channel, not another user's, and gets what an API key
    // published over HTTPS.
    let mut ws = wss(&pki, &srv, &format!("?token={}", token("42"))).await;
    let ok = cmd(&mut ws, 1, json!({"op": "subscribe", "channel": "user.42"})).await;
    assert_eq!(ok["ok"], true, "{ok}");
    let refused = cmd(&mut ws, 2, json!({"op": "subscribe", "channel": "user.43"})).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    publish(&pki, &srv, "user.42", json!({"text": "over tls"})).await;
    let p = push(&mut ws).await;
    assert_eq!(p["ch"], "user.42");
    assert_eq!(p["data"]["text"], "over tls", "{p}");
}

// ---- MQTT over TLS ----

/// MQTT 3.1.1 CONNECT with `password`.
fn mqtt_connect(id: &str, password: &str) -> Vec<u8> {
    let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02 | 0xC0];
    b.extend_from_slice(&30u16.to_be_bytes());
    string(&mut b, id.as_bytes());
    string(&mut b, b"any");
    string(&mut b, password.as_bytes());
    packet(0x10, &b)
}

fn mqtt_subscribe(packet_id: u16, topic: &str) -> Vec<u8> {
    let mut b = packet_id.to_be_bytes().to_vec();
    string(&mut b, topic.as_bytes());
    b.push(1);
    packet(0x82, &b)
}

/// One MQTT packet: (first byte, body); `None` when the connection ended.
async fn mqtt_read<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    common::mqtt::read_packet(s, TIMEOUT).await
}

async fn mqtt_send(s: &mut ClientTlsStream<TcpStream>, bytes: &[u8]) {
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_takes_a_token_as_password_and_may_have_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let own = Pki::new(dir.path(), "mqtt");
    // One MQTT TLS listener with its own certificate; the FIX acceptor shares [tls]'s.
    let srv = start_with_config(
        &dir,
        &config(
            &pki,
            &format!(
                "[mqtt]\ntls_listen = \"127.0.0.1:0\"\ntls_cert_file = {:?}\n\
                 tls_key_file = {:?}\n[fix.acceptor]\nlisten = \"127.0.0.1:0\"\n\
                 tls = true\nallowed_comp_ids = [\"*\"]\n",
                own.cert_file.to_str().unwrap(),
                own.key_file.to_str().unwrap()
            ),
        ),
    );
    // The banner names the listener's address (the port it bound for 0), where it presents
    // its own certificate.
    let addr = srv.mqtts_addr();
    assert_eq!(own.presented(&addr).await, own.fingerprint());
    assert_eq!(pki.presented(&srv.fix_addr()).await, pki.fingerprint());

    let mut s = own.connect(&addr).await.unwrap();
    mqtt_send(&mut s, &mqtt_connect("tls-42", &token("42"))).await;
    assert_eq!(mqtt_read(&mut s).await, Some((0x20, vec![0, 0])), "CONNACK");
    mqtt_send(&mut s, &mqtt_subscribe(1, "user/42")).await;
    assert_eq!(
        mqtt_read(&mut s).await,
        Some((0x90, vec![0, 1, 1])),
        "SUBACK granted"
    );
    mqtt_send(&mut s, &mqtt_subscribe(2, "user/43")).await;
    assert_eq!(
        mqtt_read(&mut s).await,
        Some((0x90, vec![0, 2, 0x80])),
        "SUBACK refused"
    );
    publish(&pki, &srv, "user.42", json!({"text": "mqtts"})).await;
    let (first, body) = mqtt_read(&mut s).await.expect("PUBLISH");
    assert_eq!(first >> 4, 3, "PUBLISH");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("user/42") && text.contains("mqtts"), "{text}");

    // A bad token is refused at CONNECT (3.1.1: 0x04 bad user name or password).
    let mut bad = own.connect(&addr).await.unwrap();
    mqtt_send(&mut bad, &mqtt_connect("tls-bad", "not-a-key")).await;
    assert_eq!(mqtt_read(&mut bad).await, Some((0x20, vec![0, 4])));

    // MQTT in the clear on the TLS port gets no CONNACK.
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(&mqtt_connect("plain", &token("42")))
        .await
        .unwrap();
    let got = mqtt_read(&mut plain).await;
    assert!(
        got.as_ref().is_none_or(|(first, _)| *first != 0x20),
        "{got:?}"
    );
}

// ---- FIX over TLS ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_acceptor_over_tls_serves_quotes_to_a_client_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let srv = start_with_config(
        &dir,
        &config(
            &pki,
            "[fix.acceptor]\nlisten = \"127.0.0.1:0\"\ntls = true\nallowed_comp_ids = [\"*\"]\n",
        ),
    );
    assert!(
        srv.banner
            .iter()
            .any(|l| l.contains("FIX 4.4 acceptor, TLS")),
        "{:?}",
        srv.banner
    );
    publish(
        &pki,
        &srv,
        "quotes.EURUSD",
        json!({"bid": "1.08412", "ask": "1.08414"}),
    )
    .await;
    let addr = srv.fix_addr();
    let mut c = FixClient::with_password("TLSCLIENT", "TICKWIRE", Some(&token("42")));
    c.connect_tls(&addr, &pki).await;
    assert!(
        c.until(TIMEOUT, |c| c.logged_on).await,
        "no Logon answer over TLS: {:?}",
        c.closed
    );
    c.send(&common::md_request("tls", vec!["EURUSD"])).await;
    let m = c.next_app(TIMEOUT).await.expect("a W");
    assert_eq!(m.msg_type(), msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH);
    let w = tickwire_fix::md::MarketDataSnapshotFullRefresh::decode(&m.raw()).unwrap();
    assert_eq!(w.entries[0].px.unwrap().as_str(), "1.08412", "{w:?}");
    assert!(c.logout(TIMEOUT).await);

    // FIX in the clear on the TLS port: no Logon answer.
    let mut plain = FixClient::with_password("PLAIN", "TICKWIRE", Some(&token("42")));
    plain.connect(&addr).await;
    assert!(!plain.until(Duration::from_secs(2), |c| c.logged_on).await);
}

/// `tickwire fix-sim` as a FIX provider over TLS; killed on drop.
struct FixSim(std::process::Child);

impl FixSim {
    /// Listening on a port of its choosing, which it names on its first line ("fix-sim
    /// listening on ADDR as ..."); returns it with that port.
    fn start(pki: &Pki) -> (FixSim, u16) {
        let bin = std::env::var_os("TICKWIRE_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_tickwire").into());
        let mut child = Command::new(bin)
            .args(["fix-sim", "--listen", "127.0.0.1:0"])
            .args(["--comp-id", "FIXSIM", "--symbols", "EURUSD", "--rate", "20"])
            .arg("--tls-cert")
            .arg(&pki.cert_file)
            .arg("--tls-key")
            .arg(&pki.key_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(line.contains("(TLS)"), "fix-sim: {line:?}");
        let port = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(common::port_of)
            .unwrap_or_else(|| panic!("fix-sim: {line:?}"));
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        (FixSim(child), port)
    }
}

impl Drop for FixSim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_initiator_over_tls_verifies_the_provider_and_ingests_its_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "provider");
    let stranger = Pki::new(dir.path(), "stranger");
    let (_sim, port) = FixSim::start(&pki);
    // Two sessions to the same provider: one trusts its CA, one trusts another CA.
    let initiator = |sender: &str, ca: &Pki| {
        format!(
            "[[fix.initiators]]\nname = \"{sender}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             sender_comp_id = \"{sender}\"\ntarget_comp_id = \"FIXSIM\"\nsymbols = [\"EURUSD\"]\n\
             reconnect_min_ms = 200\nreconnect_max_ms = 500\ntls = true\nca_file = {:?}\n\
             server_name = \"localhost\"\n",
            ca.ca_file.to_str().unwrap()
        )
    };
    let srv = start_with_config(
        &dir,
        &format!(
            "{}{}",
            initiator("TRUSTING", &pki),
            initiator("WARY", &stranger)
        ),
    );
    let q = wait_for(&srv, "/v1/latest/quotes.EURUSD", TIMEOUT, |v| {
        v["data"]["bid"].is_string()
    })
    .await;
    assert_eq!(q["data"]["source"], "fix:TRUSTING", "{q}");
    let trusting = fix_session(&srv, "TRUSTING").await;
    assert_eq!(trusting["state"], "active", "{trusting}");
    // The other never logs on: the provider's certificate is not signed by its CA.
    let wary = wait_for(&srv, "/v1/fix/sessions", TIMEOUT, |v| {
        v["sessions"].as_array().unwrap().iter().any(|s| {
            s["name"] == "WARY" && s["last_error"].as_str().is_some_and(|e| e.contains("TLS"))
        })
    })
    .await;
    let wary = wary["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "WARY")
        .unwrap()
        .clone();
    assert_eq!(wary["logons"], 0, "{wary}");
    assert!(
        wary["last_error"]
            .as_str()
            .unwrap()
            .contains("UnknownIssuer"),
        "{wary}"
    );
}

// ---- Handshake deadline ----

/// Whether the server closed `s` (EOF or reset) within `wait`.
async fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a TLS alert
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_neither_holds_up_accept_nor_outlives_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let srv = start_with_config(
        &dir,
        &format!(
            "{}\nhandshake_timeout_ms = 1500\n[http]\nmax_pending_connections = 16\n",
            config(&pki, "")
        ),
    );
    // 40 sockets that never finish a handshake: half send nothing, half the first bytes of a
    // TLS record and then nothing.
    let mut stalled = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(&srv.addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    let https = pki.https();
    let started = Instant::now();
    let r = https.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/healthz took {:?} behind stalled handshakes",
        started.elapsed()
    );
    // Past the deadline every stalled socket is closed (the oldest ones earlier, to keep the
    // pending set under its cap).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (i, s) in stalled.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, Duration::from_secs(2)).await,
            "stalled socket {i} still open"
        );
    }
    let m = https
        .get(srv.url("/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{m}"))
    };
    assert!(
        value("tickwire_tls_handshakes_total{listener=\"http\",result=\"timeout\"}") > 0,
        "{m}"
    );
    assert!(
        value("tickwire_http_closed_total{reason=\"evicted\"}") > 0,
        "the pending cap covers sockets still in their handshake:\n{m}"
    );
}

// ---- SIGHUP ----

fn sighup(srv: &Server) {
    let st = Command::new("kill")
        .args(["-HUP", &srv.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

async fn reloads(pki: &Pki, srv: &Server, result: &str) -> u64 {
    let m = pki
        .https()
        .get(srv.url("/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let name = format!("tickwire_tls_reloads_total{{result=\"{result}\"}}");
    m.lines()
        .find_map(|l| l.strip_prefix(name.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{m}"))
}

/// Polls until the server at `addr` presents `want` to a new connection.
async fn presents(pki: &Pki, addr: &str, want: &str) {
    let end = Instant::now() + TIMEOUT;
    loop {
        let got = pki.presented(addr).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < end, "{addr} still presents {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_gives_new_connections_the_new_certificate_and_old_ones_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let srv = start_with_config(
        &dir,
        &config(
            &pki,
            "[mqtt]\ntls_listen = \"127.0.0.1:0\"\n[fix.acceptor]\n\
             listen = \"127.0.0.1:0\"\ntls = true\nallowed_comp_ids = [\"*\"]\n",
        ),
    );
    let listeners = [srv.addr.clone(), srv.mqtts_addr(), srv.fix_addr()];
    let first = pki.fingerprint();
    for a in &listeners {
        assert_eq!(pki.presented(a).await, first, "{a}");
    }
    // Connections made with the first certificate.
    let mut ws = wss(&pki, &srv, &format!("?token={}", token("42"))).await;
    assert_eq!(
        cmd(&mut ws, 1, json!({"op": "subscribe", "channel": "user.42"})).await["ok"],
        true
    );
    let mut mq = pki.connect(&listeners[1]).await.unwrap();
    mqtt_send(&mut mq, &mqtt_connect("hup-42", &token("42"))).await;
    assert_eq!(mqtt_read(&mut mq).await, Some((0x20, vec![0, 0])));
    mqtt_send(&mut mq, &mqtt_subscribe(1, "user/42")).await;
    assert_eq!(mqtt_read(&mut mq).await, Some((0x90, vec![0, 1, 1])));

    let second = pki.reissue();
    assert_ne!(first, second);
    sighup(&srv);
    // One store, one reload: every listener's new connections get the new certificate.
    for a in &listeners {
        presents(&pki, a, &second).await;
    }
    publish(&pki, &srv, "user.42", json!({"text": "after reload"})).await;
    assert_eq!(push(&mut ws).await["data"]["text"], "after reload");
    let (first_byte, body) = mqtt_read(&mut mq)
        .await
        .expect("PUBLISH on the old connection");
    assert_eq!(first_byte >> 4, 3);
    assert!(String::from_utf8_lossy(&body).contains("after reload"));

    // A renewal caught half way (new certificate, old key) and a broken file: each reload
    // fails, logs, and the server keeps presenting the last good certificate.
    let (cert, _) = pki.leaf();
    std::fs::write(&pki.cert_file, cert).unwrap();
    sighup(&srv);
    let end = Instant::now() + TIMEOUT;
    while reloads(&pki, &srv, "failed").await < 1 {
        assert!(Instant::now() < end, "the failed reload was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&pki.cert_file, "not a certificate").unwrap();
    sighup(&srv);
    while reloads(&pki, &srv, "failed").await < 2 {
        assert!(Instant::now() < end, "the failed reload was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for a in &listeners {
        assert_eq!(pki.presented(a).await, second, "{a}");
    }
    assert_eq!(reloads(&pki, &srv, "ok").await, 1);
    let r = pki.https().get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_and_right_after_start_never_ends_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, "");
    // At once after the banner (a deploy's `systemctl reload`), and again.
    sighup(&srv);
    sighup(&srv);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = common::http()
        .get(srv.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the server is still up");
}

// ---- The CLI's client commands over TLS ----

/// Runs the binary with `args`, bounded; its output.
fn cli(args: &[&str]) -> std::process::Output {
    let bin = std::env::var_os("TICKWIRE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tickwire").into());
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("TICKWIRE_API_KEYS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pub_sub_and_status_talk_to_an_https_server_trusting_cacert() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let srv = start_with_config(&dir, &config(&pki, ""));
    let url = srv.url("");
    let ca = pki.ca_file.to_str().unwrap();
    let with = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(["--url", &url, "--cacert", ca, "--token", KEY].map(String::from));
        v
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&refs)
    };
    let o = run(with(&["pub", "chat.cli", r#"{"text":"over https"}"#]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // sub runs its WebSocket over the same TLS setup (wss).
    let o = run(with(&[
        "sub", "chat.cli", "--from", "0", "--count", "1", "--format", "ndjson",
    ]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("over https"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(with(&["status"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("namespaces:"), "{out}");
    // Without the test CA the system's trust store does not know the server: refused.
    let o = cli(&["status", "--url", &url, "--probe", "healthz"]);
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

// ---- Configuration mistakes ----

/// `tickwire check-config --config <toml>`: (exit code, stdout, stderr).
fn check_config(dir: &std::path::Path, toml: &str) -> (Option<i32>, String, String) {
    let cfg = dir.join("check.toml");
    std::fs::write(&cfg, toml).unwrap();
    let bin = std::env::var_os("TICKWIRE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tickwire").into());
    let o = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn check_config_loads_the_certificates_serve_would() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let (code, out, err) = check_config(dir.path(), &pki.toml());
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&pki.fingerprint()), "{out}");
    // A renewal that wrote the new certificate but not its key.
    let (cert, _) = pki.leaf();
    std::fs::write(&pki.cert_file, cert).unwrap();
    let (code, _, err) = check_config(dir.path(), &pki.toml());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("[tls]") && err.contains("does not belong to the certificate"),
        "{err}"
    );
}

#[test]
fn tls_mistakes_stop_the_server_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let other = Pki::new(dir.path(), "other");
    let cert = pki.cert_file.to_str().unwrap();
    refused(
        &format!("[tls]\ncert_file = {cert:?}\n"),
        "cert_file and key_file go together",
    );
    refused(
        "[mqtt]\ntls_listen = \"127.0.0.1:0\"\n",
        "[mqtt] tls_listen needs",
    );
    refused(
        "[fix.acceptor]\nlisten = \"127.0.0.1:0\"\ntls = true\nallowed_comp_ids = [\"*\"]\n",
        "tls = true needs [tls]",
    );
    // A key that is not the certificate's (a renewal half done) is refused at start, too.
    refused(
        &format!(
            "[tls]\ncert_file = {cert:?}\nkey_file = {:?}\n",
            other.key_file.to_str().unwrap()
        ),
        "the private key does not belong to the certificate",
    );
    refused(
        &format!("[tls]\ncert_file = {cert:?}\nkey_file = \"/nonexistent/key.pem\"\n"),
        "/nonexistent/key.pem",
    );
    // A CA file without tls = true would send the Logon in the clear.
    refused(
        &format!(
            "[[fix.initiators]]\nhost = \"127.0.0.1\"\nport = 1\nsender_comp_id = \"A\"\n\
             target_comp_id = \"B\"\nsymbols = [\"X\"]\nca_file = {:?}\n",
            pki.ca_file.to_str().unwrap()
        ),
        "need tls = true",
    );
}
