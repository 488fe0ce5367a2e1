//! The permission matrix, end to end with real clients over real sockets: every edge (REST
//! history and latest, SSE, WebSocket, MQTT over TCP and over WebSocket, the FIX acceptor) ×
//! {anonymous, API key, a valid JWT, an expired JWT, a JWT with a wrong signature, another
//! user's JWT} × {read, publish} on `user.42`, `chat.lobby` and `quotes.EURUSD`, with the
//! default permissions (docs/security.md). Every cell is asserted; a failure lists them all.
//!
//! Valid tokens are minted by `tickwire token` (the binary), the broken ones here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fmt, time::Duration};

use common::{
    http,
    mqtt::{packet, string},
    start_with_config, FixClient, Server, TIMEOUT,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
const KEY: &str = "k-ops-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    ApiKey,
    User42,
    Expired,
    BadSignature,
    User7,
}

const EVERYONE: [Who; 6] = [
    Who::Anonymous,
    Who::ApiKey,
    Who::User42,
    Who::Expired,
    Who::BadSignature,
    Who::User7,
];

/// What a cell must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    /// Refused: not signed in (401 / `unauthorized`).
    Unauthorized,
    /// Refused: signed in, not allowed (403 / `forbidden`).
    Forbidden,
    /// The credential itself is refused when connecting.
    BadCredential,
}

use Outcome::*;

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The default permissions: user.42 read by its owner (and subscribe_all keys), published by
/// API keys; chat by anyone signed in; quotes read by anyone, published by API keys.
fn expected(who: Who, channel: &str, publish: bool) -> Outcome {
    match who {
        Who::Expired | Who::BadSignature => return BadCredential,
        Who::ApiKey => return Allowed,
        _ => {}
    }
    let anon = who == Who::Anonymous;
    let refuse = if anon { Unauthorized } else { Forbidden };
    match (channel, publish) {
        ("user.42", false) if who == Who::User42 => Allowed,
        ("user.42", _) => refuse,
        ("chat.lobby", _) if anon => Unauthorized,
        ("chat.lobby", _) => Allowed,
        ("quotes.EURUSD", false) => Allowed,
        ("quotes.EURUSD", true) => refuse,
        _ => unreachable!(),
    }
}

struct Creds {
    user42: String,
    user7: String,
    expired: String,
    bad: String,
}

impl Creds {
    fn of(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::ApiKey => Some(KEY),
            Who::User42 => Some(&self.user42),
            Who::Expired => Some(&self.expired),
            Who::BadSignature => Some(&self.bad),
            Who::User7 => Some(&self.user7),
        }
    }
}

/// `tickwire token --sub <sub>` with the server's secret.
fn cli_token(sub: &str) -> String {
    let bin = std::env::var_os("TICKWIRE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tickwire").into());
    let out = std::process::Command::new(bin)
        .args(["token", "--sub", sub, "--ttl", "1h"])
        .env("TICKWIRE_AUTH__JWT_HMAC_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn creds() -> Creds {
    let claims = |sub: &str, exp: u64| tickwire_gateway::Claims {
        sub: sub.into(),
        exp: Some(exp),
        channels: None,
        publish: None,
        info: None,
    };
    Creds {
        user42: cli_token("42"),
        user7: cli_token("7"),
        expired: tickwire_gateway::mint_hs256(SECRET.as_bytes(), &claims("42", now() - 3600))
            .unwrap(),
        bad: tickwire_gateway::mint_hs256(
            b"another-secret-of-at-least-32-bytes",
            &claims("42", now() + 3600),
        )
        .unwrap(),
    }
}

/// MQTT and FIX on ports the server picks ([`Server::mqtt_port`], [`Server::fix_port`]).
fn config() -> String {
    format!(
        r#"
[auth]
jwt_hmac_secret = "{SECRET}"
[[auth.api_keys]]
name = "ops"
key = "{KEY}"
scopes = ["publish", "subscribe_all", "admin"]

[mqtt]
listen = "127.0.0.1:0"

[fix.acceptor]
listen = "127.0.0.1:0"
sender_comp_id = "TICKWIRE"
allowed_comp_ids = ["*"]
"#
    )
}

fn data_for(channel: &str) -> Value {
    if channel.starts_with("quotes.") {
        json!({"bid": "1.1", "ask": "1.2"})
    } else {
        json!({"text": "hi"})
    }
}

fn from_status(status: u16) -> Outcome {
    match status {
        200 => Allowed,
        401 => Unauthorized,
        403 => Forbidden,
        other => panic!("unexpected status {other}"),
    }
}

fn from_code(code: &str) -> Outcome {
    match code {
        "unauthorized" => Unauthorized,
        "forbidden" => Forbidden,
        "token_expired" => BadCredential,
        other => panic!("unexpected error code {other}"),
    }
}

// ---- REST and SSE ----

async fn rest_read(srv: &Server, cred: Option<&str>, channel: &str) -> Outcome {
    let path = if channel.starts_with("quotes.") {
        format!("/v1/latest/{channel}")
    } else {
        format!("/v1/history/{channel}?from=0")
    };
    let mut req = http().get(srv.url(&path));
    if let Some(c) = cred {
        req = req.bearer_auth(c);
    }
    let r = req.send().await.unwrap();
    match r.status().as_u16() {
        401 => {
            let v: Value = r.json().await.unwrap();
            // A bad credential says so; no credential says what to present.
            if cred.is_some() && !matches!(v["code"].as_str(), Some("forbidden")) {
                BadCredential
            } else {
                Unauthorized
            }
        }
        s => from_status(s),
    }
}

async fn rest_publish(srv: &Server, cred: Option<&str>, channel: &str) -> Outcome {
    let mut req = http()
        .post(srv.url("/v1/publish"))
        .body(json!({"channel": channel, "data": data_for(channel)}).to_string());
    if let Some(c) = cred {
        req = req.bearer_auth(c);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    if status == 401 && cred.is_some() {
        return BadCredential;
    }
    from_status(status)
}

async fn sse_read(srv: &Server, cred: Option<&str>, channel: &str) -> Outcome {
    let mut q = format!("channel={channel}");
    if let Some(c) = cred {
        q.push_str(&format!("&token={c}"));
    }
    let r = reqwest::Client::new()
        .get(srv.url(&format!("/v1/sse?{q}")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 401 && cred.is_some() {
        let v: Value = r.json().await.unwrap();
        if v["code"] != "forbidden" {
            return BadCredential;
        }
    }
    from_status(status)
}

// ---- WebSocket ----

/// A WebSocket connected with `cred` as `?token=` (`None` if the upgrade was refused).
async fn ws_connect(srv: &Server, cred: Option<&str>) -> Option<common::Ws> {
    let q = cred.map(|c| format!("?token={c}")).unwrap_or_default();
    match tokio_tungstenite::connect_async(srv.ws_url(&q)).await {
        Ok((ws, _)) => Some(common::Ws::from_stream(ws)),
        Err(_) => None,
    }
}

async fn ws_cell(srv: &Server, cred: Option<&str>, channel: &str, publish: bool) -> Outcome {
    let Some(mut ws) = ws_connect(srv, cred).await else {
        return BadCredential;
    };
    let r = if publish {
        ws.cmd(json!({"op": "publish", "channel": channel, "data": data_for(channel)}))
            .await
    } else {
        ws.cmd(json!({"op": "subscribe", "channel": channel})).await
    };
    if r["ok"] == true {
        Allowed
    } else {
        from_code(r["error"]["code"].as_str().unwrap())
    }
}

/// The `connect` op: the same credential presented after opening.
async fn ws_connect_op_cell(srv: &Server, cred: Option<&str>, channel: &str) -> Outcome {
    let mut ws = ws_connect(srv, None).await.unwrap();
    if let Some(c) = cred {
        let r = ws.cmd(json!({"op": "connect", "token": c})).await;
        if r["ok"] != true {
            return BadCredential;
        }
    }
    let r = ws.cmd(json!({"op": "subscribe", "channel": channel})).await;
    if r["ok"] == true {
        Allowed
    } else {
        from_code(r["error"]["code"].as_str().unwrap())
    }
}

// ---- MQTT 5, over TCP or WebSocket ----

enum MqttIo {
    Tcp(TcpStream),
    Ws(
        Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>,
        Vec<u8>,
    ),
}

impl MqttIo {
    async fn send(&mut self, bytes: Vec<u8>) {
        match self {
            MqttIo::Tcp(s) => s.write_all(&bytes).await.unwrap(),
            MqttIo::Ws(ws, _) => ws.send(Message::Binary(bytes.into())).await.unwrap(),
        }
    }

    async fn byte(&mut self) -> Option<u8> {
        match self {
            MqttIo::Tcp(s) => s.read_u8().await.ok(),
            MqttIo::Ws(ws, buf) => {
                while buf.is_empty() {
                    match ws.next().await? {
                        Ok(Message::Binary(b)) => buf.extend_from_slice(&b),
                        Ok(Message::Close(_)) | Err(_) => return None,
                        Ok(_) => {}
                    }
                }
                Some(buf.remove(0))
            }
        }
    }

    /// One packet: (first byte, body); `None` when the connection closed.
    async fn packet(&mut self) -> Option<(u8, Vec<u8>)> {
        let work = async {
            let first = self.byte().await?;
            let (mut len, mut shift) = (0usize, 0);
            loop {
                let b = self.byte().await?;
                len |= usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let mut body = Vec::with_capacity(len);
            for _ in 0..len {
                body.push(self.byte().await?);
            }
            Some((first, body))
        };
        tokio::time::timeout(TIMEOUT, work).await.ok().flatten()
    }
}

/// Connects with MQTT 5, the credential as password; the CONNACK reason code.
async fn mqtt_open(io: &mut MqttIo, cred: Option<&str>, id: &str) -> u8 {
    let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 5];
    b.push(0x02 | if cred.is_some() { 0xC0 } else { 0 });
    b.extend_from_slice(&30u16.to_be_bytes());
    b.push(0); // no properties
    string(&mut b, id.as_bytes());
    if let Some(c) = cred {
        string(&mut b, b"u");
        string(&mut b, c.as_bytes());
    }
    io.send(packet(0x10, &b)).await;
    let (first, body) = io.packet().await.expect("CONNACK");
    assert_eq!(first, 0x20);
    body[1]
}

async fn mqtt_cell(
    io: MqttIo,
    cred: Option<&str>,
    channel: &str,
    publish: bool,
    id: &str,
) -> Outcome {
    let mut io = io;
    match mqtt_open(&mut io, cred, id).await {
        0 => {}
        0x86 => return BadCredential,
        other => panic!("CONNACK {other:#x}"),
    }
    let topic = channel.replace('.', "/");
    let reason = if publish {
        let mut b = Vec::new();
        string(&mut b, topic.as_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
        b.push(0);
        b.extend_from_slice(data_for(channel).to_string().as_bytes());
        io.send(packet(0x32, &b)).await;
        let (first, body) = io.packet().await.expect("PUBACK");
        assert_eq!(first >> 4, 4, "PUBACK");
        body.get(2).copied().unwrap_or(0)
    } else {
        let mut b = vec![0, 1, 0];
        string(&mut b, topic.as_bytes());
        b.push(1);
        io.send(packet(0x82, &b)).await;
        let (first, body) = io.packet().await.expect("SUBACK");
        assert_eq!(first >> 4, 9, "SUBACK");
        // Packet id, properties (a reason string when refused), then the reason codes.
        let (mut props, mut i, mut shift) = (0usize, 2, 0);
        loop {
            let b = body[i];
            props |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        body[i + props]
    };
    match reason {
        0..=2 => Allowed,
        // MQTT has one code for both; the anonymous case is told the same.
        0x87 if cred.is_none() => Unauthorized,
        0x87 => Forbidden,
        other => panic!("reason {other:#x}"),
    }
}

async fn mqtt_tcp(port: u16) -> MqttIo {
    MqttIo::Tcp(TcpStream::connect(("127.0.0.1", port)).await.unwrap())
}

async fn mqtt_ws(srv: &Server) -> MqttIo {
    let mut req = format!("ws://{}/mqtt", srv.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    MqttIo::Ws(Box::new(ws), Vec::new())
}

// ---- FIX acceptor (market data: read-only, quotes) ----

async fn fix_read(port: u16, cred: Option<&str>, n: usize) -> Outcome {
    let mut c = FixClient::with_password(&format!("PERM{n}"), "TICKWIRE", cred);
    c.connect(&format!("127.0.0.1:{port}")).await;
    if !c.until(Duration::from_secs(3), |c| c.logged_on).await {
        // Refused Logons get no answer (as for an unknown CompID).
        return if cred.is_some() {
            BadCredential
        } else {
            Unauthorized
        };
    }
    c.send(&common::md_request("perm", vec!["EURUSD"])).await;
    let m = c.next_app(TIMEOUT).await.expect("an answer");
    if m.msg_type() == tickwire_fix::tags::msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH {
        Allowed
    } else {
        Forbidden
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_edge_enforces_the_permission_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, &config());
    let (mqtt_port, fix_port) = (srv.mqtt_port(), srv.fix_port());
    let creds = creds();
    // Something to read everywhere.
    for ch in ["user.42", "chat.lobby", "quotes.EURUSD"] {
        let r = http()
            .post(srv.url("/v1/publish"))
            .bearer_auth(KEY)
            .body(json!({"channel": ch, "data": data_for(ch)}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let mut wrong = Vec::new();
    let mut cells = 0;
    let mut check = |edge: &str, who: Who, ch: &str, publish: bool, want: Outcome, got: Outcome| {
        cells += 1;
        if want != got {
            let what = if publish { "publish" } else { "read" };
            wrong.push(format!(
                "{edge:<10} {who:?} {what} {ch}: want {want}, got {got}"
            ));
        }
    };
    for (i, who) in EVERYONE.into_iter().enumerate() {
        let cred = creds.of(who);
        for ch in ["user.42", "chat.lobby", "quotes.EURUSD"] {
            for publish in [false, true] {
                let want = expected(who, ch, publish);
                if publish {
                    check(
                        "rest",
                        who,
                        ch,
                        true,
                        want,
                        rest_publish(&srv, cred, ch).await,
                    );
                } else {
                    check(
                        "rest",
                        who,
                        ch,
                        false,
                        want,
                        rest_read(&srv, cred, ch).await,
                    );
                    check("sse", who, ch, false, want, sse_read(&srv, cred, ch).await);
                    check(
                        "ws-connect",
                        who,
                        ch,
                        false,
                        want,
                        ws_connect_op_cell(&srv, cred, ch).await,
                    );
                }
                check(
                    "websocket",
                    who,
                    ch,
                    publish,
                    want,
                    ws_cell(&srv, cred, ch, publish).await,
                );
                let id = format!("perm-{i}-{ch}-{publish}");
                let got = mqtt_cell(mqtt_tcp(mqtt_port).await, cred, ch, publish, &id).await;
                check("mqtt-tcp", who, ch, publish, want, got);
                let got =
                    mqtt_cell(mqtt_ws(&srv).await, cred, ch, publish, &format!("{id}-ws")).await;
                check("mqtt-ws", who, ch, publish, want, got);
            }
        }
        // FIX serves quotes only, read-only; a Logon needs a credential once identities exist.
        let want = match who {
            Who::Anonymous => Unauthorized,
            Who::Expired | Who::BadSignature => BadCredential,
            _ => Allowed,
        };
        check(
            "fix",
            who,
            "quotes.EURUSD",
            false,
            want,
            fix_read(fix_port, cred, i).await,
        );
    }
    assert!(cells > 150, "{cells} cells");
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A user's chat message carries who sent it, stamped by the server; a forged `from` is
/// refused; nothing a user publishes can claim another identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_their_sender_which_clients_cannot_forge() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, &config());
    let creds = creds();
    let mut ws = ws_connect(&srv, Some(&creds.user42)).await.unwrap();
    let r = ws
        .cmd(json!({"op": "publish", "channel": "chat.lobby", "data": {"text": "hi"}}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = ws
        .cmd(json!({"op": "publish", "channel": "chat.lobby", "data": {"text": "x", "from": {"sub": "admin"}}}))
        .await;
    assert_eq!(r["error"]["code"], "bad_data", "{r}");
    let h: Value = http()
        .get(srv.url("/v1/history/chat.lobby?from=0"))
        .bearer_auth(&creds.user7)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{h}");
    assert_eq!(msgs[0]["data"]["from"], json!({"sub": "42"}));
    assert_eq!(msgs[0]["data"]["text"], "hi");
}

/// The operator endpoints need the admin scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_endpoints_need_the_admin_scope() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, &config());
    let creds = creds();
    for path in [
        "/metrics",
        "/v1/namespaces",
        "/v1/channels/chat",
        "/v1/fix/sessions",
        "/v1/connections",
    ] {
        let get = |cred: Option<&str>| {
            let mut req = http().get(srv.url(path));
            if let Some(c) = cred {
                req = req.bearer_auth(c);
            }
            req.send()
        };
        assert_eq!(get(None).await.unwrap().status(), 401, "{path}");
        assert_eq!(
            get(Some(&creds.user42)).await.unwrap().status(),
            403,
            "{path}"
        );
        assert_eq!(get(Some(KEY)).await.unwrap().status(), 200, "{path}");
    }
    // Health stays open: load balancers probe it without credentials.
    assert_eq!(
        http()
            .get(srv.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// An operator lists the live connections (edge, identity, client id, subscriptions) and
/// closes one; the client is told why. Only the admin scope may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_connections_and_kicks_one() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, &config());
    let mqtt = srv.mqtt_port();
    let creds = creds();
    let mut ws = ws_connect(&srv, Some(&creds.user42)).await.unwrap();
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "user.42", "from": 0}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let mut m = mqtt_tcp(mqtt).await;
    assert_eq!(mqtt_open(&mut m, Some(&creds.user7), "phone-7").await, 0);

    let list = |cred: String, query: &'static str| {
        let srv = &srv;
        async move {
            http()
                .get(srv.url(&format!("/v1/connections{query}")))
                .bearer_auth(cred)
                .send()
                .await
                .unwrap()
        }
    };
    let v: Value = list(KEY.to_string(), "").await.json().await.unwrap();
    let conns = v["connections"].as_array().unwrap();
    let web = conns
        .iter()
        .find(|c| c["edge"] == "websocket")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(web["identity"], "user:42", "{v}");
    assert_eq!(web["subscriptions"], 1, "{v}");
    assert_eq!(web["ip"], "127.0.0.1", "{v}");
    assert!(
        web["connected_at"].as_u64().unwrap() > 1_700_000_000_000,
        "{v}"
    );
    let phone = conns
        .iter()
        .find(|c| c["edge"] == "mqtt")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(phone["client_id"], "phone-7", "{v}");
    assert_eq!(phone["identity"], "user:7", "{v}");
    assert_eq!(v["by_edge"]["websocket"], 1, "{v}");
    // Filtered by edge: the MQTT client alone.
    let only: Value = list(KEY.to_string(), "?edge=mqtt")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(only["connections"].as_array().unwrap().len(), 1, "{only}");
    assert_eq!(only["connections"][0]["client_id"], "phone-7", "{only}");

    // A user cannot kick anyone; the admin key can, once.
    let id = web["id"].as_u64().unwrap();
    let kick = |cred: String| {
        let srv = &srv;
        async move {
            http()
                .delete(srv.url(&format!("/v1/connections/{id}")))
                .bearer_auth(cred)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(kick(creds.user42.clone()).await, 403);
    assert_eq!(kick(KEY.to_string()).await, 204);
    let closed = disconnect_frame(&mut ws, "the kicked connection stayed open").await;
    assert_eq!(closed["code"], "forbidden", "{closed}");
    assert!(
        closed["message"]
            .as_str()
            .is_some_and(|r| r.contains("operator")),
        "{closed}"
    );
    assert_eq!(kick(KEY.to_string()).await, 404, "already closed");
    let status = http()
        .delete(srv.url("/v1/connections/not-a-number"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
    // The MQTT client is still there.
    let v: Value = list(KEY.to_string(), "").await.json().await.unwrap();
    assert!(
        v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["edge"] != "websocket"),
        "{v}"
    );
    assert_eq!(v["by_edge"]["mqtt"], 1, "{v}");
}

/// The `disconnect` frame a server-side close sends, read within 10 s (`what` says what failed
/// when none came).
async fn disconnect_frame(ws: &mut common::Ws, what: &str) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["op"] == "disconnect" {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                _ => panic!("closed without a disconnect frame"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"))
}

fn short_token(sub: &str, secs: u64) -> String {
    let claims = tickwire_gateway::Claims {
        sub: sub.into(),
        exp: Some(now() + secs),
        channels: None,
        publish: None,
        info: None,
    };
    tickwire_gateway::mint_hs256(SECRET.as_bytes(), &claims).unwrap()
}

fn start_with_grace(dir: &tempfile::TempDir) -> Server {
    let cfg = dir.path().join("tickwire.toml");
    std::fs::write(&cfg, config()).unwrap();
    Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
        &[("TICKWIRE_AUTH__TOKEN_GRACE_SECS", "1")],
    )
}

/// A WebSocket whose token expires is told so, may refresh it (same user only) and goes on;
/// without a refresh it is closed after the grace period with `token_expired` and its resume
/// points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_must_be_refreshed_or_the_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_grace(&dir);

    // Refreshed in time: the connection lives on.
    let mut ws = ws_connect(&srv, Some(&short_token("42", 2))).await.unwrap();
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "user.42"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = ws
        .cmd(json!({"op": "refresh", "token": short_token("7", 3600)}))
        .await;
    assert_eq!(
        r["error"]["code"], "forbidden",
        "another user's token cannot take over: {r}"
    );
    let expired = loop {
        let m = ws.ws.next().await.unwrap().unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if v["ok"] == false {
            break v;
        }
    };
    assert_eq!(expired["error"]["code"], "token_expired", "{expired}");
    let r = ws
        .cmd(json!({"op": "refresh", "token": short_token("42", 3600)}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = ws.cmd(json!({"op": "ping"})).await;
    assert_eq!(r["pong"], true, "still open after the grace period: {r}");

    // Not refreshed: closed with the reason and resume points.
    let mut ws = ws_connect(&srv, Some(&short_token("42", 1))).await.unwrap();
    let r = ws
        .cmd(json!({"op": "subscribe", "channel": "user.42", "from": 0}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let closed = disconnect_frame(
        &mut ws,
        "the connection was not closed after the grace period",
    )
    .await;
    assert_eq!(closed["code"], "token_expired", "{closed}");
    assert!(
        closed["resume"].is_object() || closed["resume"].is_array(),
        "{closed}"
    );
}

/// SSE and MQTT cannot refresh: at expiry the stream ends with a `disconnect` event, and
/// MQTT 5 gets DISCONNECT 0xA0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_mqtt_connections_end_when_their_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_grace(&dir);
    let mqtt_port = srv.mqtt_port();
    let token = short_token("42", 1);
    let mut sse = common::Sse::open(&srv, &format!("channel=user.42&token={token}"), None).await;
    let e = tokio::time::timeout(Duration::from_secs(10), sse.next())
        .await
        .expect("SSE did not end at expiry");
    assert_eq!(e.event.as_deref(), Some("disconnect"), "{:?}", e.data);
    assert_eq!(e.data["code"], "token_expired");

    let mut io = mqtt_tcp(mqtt_port).await;
    assert_eq!(
        mqtt_open(&mut io, Some(&short_token("42", 1)), "exp-1").await,
        0
    );
    let (first, body) = tokio::time::timeout(Duration::from_secs(10), io.packet())
        .await
        .unwrap()
        .expect("a DISCONNECT");
    assert_eq!(
        (first, body[0]),
        (0xE0, 0xA0),
        "DISCONNECT Maximum connect time"
    );
}

/// A persistent MQTT session belongs to the identity that made it: another identity using
/// the same client id is refused (0x87), whether the owner is connected or not, and never
/// handed its session or queued messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_client_id_cannot_be_taken_over_by_another_identity() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with_config(&dir, &config());
    let mqtt_port = srv.mqtt_port();
    let creds = creds();
    let persistent = |cred: &str, id: &str| {
        // CONNECT v5, clean start 0, session expiry 3600 s.
        let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0xC0];
        b.extend_from_slice(&30u16.to_be_bytes());
        b.extend_from_slice(&[5, 0x11, 0, 0, 0x0e, 0x10]);
        string(&mut b, id.as_bytes());
        string(&mut b, b"u");
        string(&mut b, cred.as_bytes());
        packet(0x10, &b)
    };
    async fn connack(io: &mut MqttIo) -> (bool, u8) {
        let (first, body) = io.packet().await.expect("CONNACK");
        assert_eq!(first, 0x20);
        (body[0] & 1 == 1, body[1])
    }
    let mut owner = mqtt_tcp(mqtt_port).await;
    owner.send(persistent(&creds.user42, "phone-42")).await;
    assert_eq!(connack(&mut owner).await, (false, 0));
    let mut b = vec![0, 1, 0];
    string(&mut b, b"user/42");
    b.push(1);
    owner.send(packet(0x82, &b)).await;
    assert_eq!(owner.packet().await.unwrap().0 >> 4, 9);

    // While connected, and after it left: refused, and the owner is not kicked.
    let mut thief = mqtt_tcp(mqtt_port).await;
    thief.send(persistent(&creds.user7, "phone-42")).await;
    assert_eq!(connack(&mut thief).await, (false, 0x87));
    let r = http()
        .post(srv.url("/v1/publish"))
        .bearer_auth(KEY)
        .body(json!({"channel": "user.42", "data": {"otp": "998877"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (first, _) = owner
        .packet()
        .await
        .expect("the owner still gets its messages");
    assert_eq!(first >> 4, 3);
    drop(owner);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut thief = mqtt_tcp(mqtt_port).await;
    thief.send(persistent(&creds.user7, "phone-42")).await;
    assert_eq!(connack(&mut thief).await, (false, 0x87));
    let mut anon = mqtt_tcp(mqtt_port).await;
    let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x00];
    b.extend_from_slice(&30u16.to_be_bytes());
    b.extend_from_slice(&[5, 0x11, 0, 0, 0x0e, 0x10]);
    string(&mut b, b"phone-42");
    anon.send(packet(0x10, &b)).await;
    assert_eq!(connack(&mut anon).await, (false, 0x87));

    // The owner comes back to its session.
    let mut owner = mqtt_tcp(mqtt_port).await;
    owner.send(persistent(&creds.user42, "phone-42")).await;
    assert_eq!(connack(&mut owner).await, (true, 0));
}

/// Clients are rate-limited (the server API is not): over the limit a publish gets
/// `rate_limited` with when to retry, on WebSocket, HTTP (429 + Retry-After) and MQTT (PUBACK
/// 0x96); it passes again after waiting; connections per address are capped; all counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_refuse_floods_with_a_retry_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tickwire.toml");
    let limits = r#"
[limits]
max_connections_per_ip = 3
exempt_loopback = false
[limits.connection]
messages = { per_sec = 5, burst = 5 }
bytes = { per_sec = 100000, burst = 100000 }
[limits.principal]
messages = { per_sec = 1, burst = 8 }
bytes = { per_sec = 100000, burst = 100000 }
"#;
    std::fs::write(&cfg, format!("{}{limits}", config())).unwrap();
    let srv = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
        &[],
    );
    let mqtt_port = srv.mqtt_port();
    let creds = creds();
    let chat = |n: usize| json!({"op": "publish", "channel": "chat.flood", "data": {"n": n}});

    let mut ws = ws_connect(&srv, Some(&creds.user42)).await.unwrap();
    let mut ok = 0;
    let mut limited = None;
    for n in 0..20 {
        let r = ws.cmd(chat(n)).await;
        if r["ok"] == true {
            ok += 1;
        } else {
            limited = Some(r);
            break;
        }
    }
    assert_eq!(ok, 5, "the burst passes");
    let r = limited.expect("the flood is refused");
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retry after"),
        "{r}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        ws.cmd(chat(99)).await["ok"],
        true,
        "passes again after waiting"
    );

    // The same user over HTTP shares the per-identity budget (8, refilled at 1/s: 6 spent).
    let mut statuses = Vec::new();
    for n in 0..6 {
        let r = http()
            .post(srv.url("/v1/publish"))
            .bearer_auth(&creds.user42)
            .body(json!({"channel": "chat.flood", "data": {"n": n}}).to_string())
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
        }
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");

    // MQTT QoS 1 over the limit: PUBACK 0x96 (Message rate too high). Another user, own budget.
    let mut io = mqtt_tcp(mqtt_port).await;
    assert_eq!(mqtt_open(&mut io, Some(&creds.user7), "rl-7").await, 0);
    let mut codes = Vec::new();
    for pid in 1..=8u16 {
        let mut b = Vec::new();
        string(&mut b, b"chat/flood");
        b.extend_from_slice(&pid.to_be_bytes());
        b.push(0);
        b.extend_from_slice(br#"{"n":1}"#);
        io.send(packet(0x32, &b)).await;
        let (first, body) = io.packet().await.expect("PUBACK");
        assert_eq!(first >> 4, 4);
        codes.push(body.get(2).copied().unwrap_or(0));
    }
    assert_eq!(&codes[..5], &[0, 0, 0, 0, 0], "{codes:?}");
    assert!(codes[5..].iter().all(|&c| c == 0x96), "{codes:?}");

    // Connections per address, every edge together: with three open from 127.0.0.1 (a
    // WebSocket and two MQTT), a fourth is refused, MQTT with CONNACK 0x9F and a WebSocket
    // upgrade with 429.
    drop(ws);
    drop(io);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ws = ws_connect(&srv, Some(&creds.user42)).await.expect("first");
    let mut open = Vec::new();
    for i in 0..2 {
        let mut io = mqtt_tcp(mqtt_port).await;
        assert_eq!(mqtt_open(&mut io, None, &format!("ip-{i}")).await, 0);
        open.push(io);
    }
    let mut fourth = mqtt_tcp(mqtt_port).await;
    assert_eq!(mqtt_open(&mut fourth, None, "ip-3").await, 0x9F);
    match tokio_tungstenite::connect_async(srv.ws_url("")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!(
            "a fourth connection was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    drop(open);
    drop(ws);

    let m = http()
        .get(srv.url("/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for edge in ["websocket", "mqtt", "http"] {
        let line = format!("tickwire_edge_rate_limited_total{{edge=\"{edge}\"}} ");
        let n: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(n > 0, "{edge} counted: {m}");
    }
}
