//! Shared harness for end-to-end tests: the real `tickwire` binary on a free loopback port
//! with a temporary data directory, and small WebSocket / SSE clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

pub mod mqtt;

use futures_util::StreamExt;
use serde_json::{json, Value};

pub mod tls;
mod ws;

// Every test binary compiles this harness and uses a part of it.
#[allow(unused_imports)]
pub use ws::Ws;

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A running server process. Killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data: PathBuf,
    /// `http`, or `https` when the HTTP listener speaks TLS (from the start banner).
    pub scheme: String,
    /// The start banner, line by line (addresses of the other listeners).
    pub banner: Vec<String>,
}

impl Server {
    /// Starts `tickwire serve` on 127.0.0.1:0 with `data` and waits for it to print its address.
    pub fn start(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_logging_to(data, &data.with_extension("stderr.log"), args, env)
    }

    /// [`Server::start`] with its HTTP listener on `http`: a restart that must come back on
    /// the address the first start bound (a client reconnects to the address it was given).
    pub fn start_on(data: &Path, http: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = data.with_extension("stderr.log");
        Server::launch(Command::new(Server::bin()), data, &log, http, args, env)
    }

    /// [`Server::start`] with the server's stderr appended to `log` (kept off a volume that a
    /// test fills up).
    pub fn start_logging_to(
        data: &Path,
        log: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Server::launch(
            Command::new(Server::bin()),
            data,
            log,
            "127.0.0.1:0",
            args,
            env,
        )
    }

    /// [`Server::start`] under an open-file limit (`ulimit -Sn soft`, then `-Hn hard`: the soft
    /// limit may not exceed the hard one at any step), as a shell
    /// or service manager with a low limit would start it. The shell execs the server, so the
    /// process (its pid, its RSS) is the server's.
    pub fn start_with_open_files(
        data: &Path,
        soft: u64,
        hard: u64,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
            ))
            .arg(Server::bin());
        let log = data.with_extension("stderr.log");
        Server::launch(cmd, data, &log, "127.0.0.1:0", args, env)
    }

    /// The binary under test. TICKWIRE_TEST_BIN runs the suite against another build (a
    /// before/after comparison).
    fn bin() -> std::ffi::OsString {
        std::env::var_os("TICKWIRE_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_tickwire").into())
    }

    fn launch(
        mut cmd: Command,
        data: &Path,
        log: &Path,
        http: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let log_path = log.to_path_buf();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        cmd.args(["serve", "--http", http, "--data"])
            .arg(data)
            .args(args)
            .env("TICKWIRE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tickwire");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // The banner ends with its `data:` line (the first line names the HTTP address).
        let mut banner = Vec::new();
        let mut listening = None;
        while listening.is_none() || !banner.iter().any(|l: &String| l.contains("  data:")) {
            // A server that exits or hangs before its banner: its log says why (the data
            // directory, and the log with it, is usually a temporary one gone after the test).
            let line = rx.recv_timeout(TIMEOUT).unwrap_or_else(|e| {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "server did not print its address ({e}); its log:\n{}",
                    tail.join("\n")
                )
            });
            if let Some(rest) = line.split("listening on ").nth(1) {
                let (scheme, addr) = rest.trim().split_once("://").unwrap();
                listening = Some((scheme.to_string(), addr.to_string()));
            }
            banner.push(line);
        }
        let (scheme, addr) = listening.unwrap();
        // Whatever follows the banner is read and dropped, so the pipe never fills up.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Server {
            child,
            addr,
            data: data.to_path_buf(),
            scheme,
            banner,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        let ws = if self.scheme == "https" { "wss" } else { "ws" };
        format!("{ws}://{}/v1/ws{}", self.addr, query)
    }

    /// The address after `label` in the start banner (`mqtts:`, `fix:`), scheme removed.
    pub fn banner_addr(&self, label: &str) -> Option<String> {
        let line = self
            .banner
            .iter()
            .find(|l| l.trim_start().starts_with(label))?;
        let rest = line.trim_start()[label.len()..].trim();
        let rest = rest.split_once("://").map_or(rest, |(_, a)| a);
        Some(rest.split_whitespace().next()?.to_string())
    }

    /// The address of the listener after `label` in the start banner; panics with the banner
    /// when there is none. Tests configure the server's own listeners on `127.0.0.1:0` and read
    /// the bound address here: a port picked beforehand ([`free_ports`]) may be taken by a test
    /// running in parallel before the server binds it ("Address already in use").
    pub fn listener(&self, label: &str) -> String {
        self.banner_addr(label)
            .unwrap_or_else(|| panic!("no {label} listener in the banner: {:#?}", self.banner))
    }

    /// The gRPC listener's address (`[grpc] listen`).
    pub fn grpc_addr(&self) -> String {
        self.listener("grpc:")
    }

    /// The port of the MQTT-over-TCP listener (`[mqtt] listen`).
    pub fn mqtt_port(&self) -> u16 {
        port_of(&self.listener("mqtt:"))
    }

    /// The MQTT-over-TLS listener's address (`[mqtt] tls_listen`).
    pub fn mqtts_addr(&self) -> String {
        self.listener("mqtts:")
    }

    /// The FIX acceptor's address (`[fix.acceptor] listen`).
    pub fn fix_addr(&self) -> String {
        self.listener("fix:")
    }

    /// The port of the FIX acceptor.
    pub fn fix_port(&self) -> u16 {
        port_of(&self.fix_addr())
    }

    /// SIGKILL: no chance to flush or fsync anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the server, bytes, from /proc.
    pub fn rss(&self) -> u64 {
        tickwire_bench::rss_kb(self.pid()).expect("the server's VmRSS") * 1024
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not exit after SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of `host:port`.
pub fn port_of(addr: &str) -> u16 {
    addr.parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
        .port()
}

/// `n` distinct loopback ports that were free a moment ago. All are held until every one is
/// known, so the kernel cannot hand the same one out twice (a three-node cluster once got one
/// route port twice: "Duplicate route entry"). Racy once returned: they are let go before the
/// caller's processes bind them, and a test running in parallel may take one first. Only for
/// the nats-server cluster (nats_cluster/mod.rs), whose servers must know each other's ports
/// before any starts. The server under test binds `127.0.0.1:0` and its banner tells the
/// port ([`Server::listener`]); the QuickFIX peer picks its own (fix_peer::Peer::port).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(TIMEOUT).build().unwrap()
}

/// GETs `path` on the server and parses the answer as JSON (the status is not checked).
pub async fn get_json(srv: &Server, path: &str) -> Value {
    http()
        .get(srv.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `path` (JSON) until `done` accepts it, at most `wait`; returns the accepted value.
/// For what the server does asynchronously (bars committed, an initiator's publish).
pub async fn wait_for(
    srv: &Server,
    path: &str,
    wait: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let v = get_json(srv, path).await;
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {path}: last {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs `path` on the server as text (the status is not checked): /metrics.
pub async fn get_text(srv: &Server, path: &str) -> String {
    http()
        .get(srv.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled gauge or counter in /metrics.
pub async fn metric(srv: &Server, name: &str) -> Option<u64> {
    let m = get_text(srv, "/metrics").await;
    m.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the unlabelled gauge `name` reads `n`; panics after [`TIMEOUT`].
pub async fn until_metric(srv: &Server, name: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let now = metric(srv, name).await;
        if now == Some(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} {n} expected, /metrics reads {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Content-Type of an answer, "" if none.
pub fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// POSTs `body` to /v1/publish; returns status and JSON body.
pub async fn publish(srv: &Server, body: &Value) -> (u16, Value) {
    publish_raw(srv, body.to_string(), None).await
}

pub async fn publish_raw(srv: &Server, body: String, key: Option<&str>) -> (u16, Value) {
    let mut req = http().post(srv.url("/v1/publish")).body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = content_type(&r);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(
            ct, "application/problem+json",
            "errors are problem+json: {v}"
        );
    }
    (status, v)
}

pub fn quote(bid: u64) -> Value {
    json!({"bid": format!("1.{bid:05}"), "ask": format!("1.{:05}", bid + 2)})
}

/// Sends `request` on a fresh connection; the status and the lower-cased response head.
pub async fn raw_exchange(srv: &Server, request: &str) -> (u16, String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut byte))
            .await
            .expect("no answer to the handshake")
            .unwrap();
        assert_eq!(n, 1, "connection closed in the answer's head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    (status, head, s)
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Value,
}

/// Reads SSE events from a streaming response.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    pub async fn open(srv: &Server, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = reqwest::Client::new().get(srv.url(&format!("/v1/sse?{query}")));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "SSE open");
        Sse {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }

    pub async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return SseEvent {
                    id,
                    event,
                    data: serde_json::from_str(&data).unwrap(),
                };
            }
            let chunk = tokio::time::timeout(TIMEOUT, self.body.next())
                .await
                .expect("SSE read timed out");
            let chunk = chunk.expect("SSE ended").unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// A FIX 4.4 client over real TCP driven by our own engine ([`tickwire_fix::Session`], the
/// same state machine the server uses), so heartbeats, TestRequests, gaps and Logout follow the
/// spec without a script of our own. Everything the session reports is kept for assertions.
pub struct FixClient {
    pub session: tickwire_fix::Session<tickwire_fix::MemorySeqStore>,
    stream: Option<tickwire_tls::Stream>,
    /// Application messages delivered and not yet taken, in sequence order.
    pub inbox: VecDeque<tickwire_fix::Message>,
    /// Session events (gaps, resend requests, resets, rejects) since the client was created.
    pub events: Vec<tickwire_fix::SessionEvent>,
    pub logged_on: bool,
    /// Why the connection ended, once it has.
    pub closed: Option<String>,
}

impl FixClient {
    /// A client session `sender` -> `target` that starts at sequence number 1 and keeps its
    /// numbers across reconnects (no ResetSeqNumFlag).
    pub fn new(sender: &str, target: &str) -> FixClient {
        FixClient::with_password(sender, target, None)
    }

    /// An initiator whose Logon carries Password (554): an API key or a token.
    pub fn with_password(sender: &str, target: &str, password: Option<&str>) -> FixClient {
        let mut cfg = tickwire_fix::SessionConfig::initiator(sender, target);
        cfg.password = password.map(str::to_string);
        let session =
            tickwire_fix::Session::new(cfg, tickwire_fix::MemorySeqStore::default()).unwrap();
        FixClient {
            session,
            stream: None,
            inbox: VecDeque::new(),
            events: Vec::new(),
            logged_on: false,
            closed: None,
        }
    }

    /// The acceptor side, `sender` being our CompID: a test provider for the server's
    /// initiator. [`FixClient::accept`] takes its connection.
    pub fn acceptor(sender: &str, target: &str) -> FixClient {
        let cfg = tickwire_fix::SessionConfig::acceptor(sender, target);
        FixClient {
            session: tickwire_fix::Session::new(cfg, tickwire_fix::MemorySeqStore::default())
                .unwrap(),
            ..FixClient::new(sender, target)
        }
    }

    /// Accepts one connection on `listener` and waits for its Logon there.
    pub async fn accept(&mut self, listener: &tokio::net::TcpListener, wait: Duration) {
        let (stream, _) = tokio::time::timeout(wait, listener.accept())
            .await
            .expect("no connection")
            .unwrap();
        self.attach(stream.into()).await;
    }

    /// Takes a fresh connection and lets the session start on it (an initiator sends its
    /// Logon).
    async fn attach(&mut self, stream: tickwire_tls::Stream) {
        stream.tcp().set_nodelay(true).unwrap();
        self.stream = Some(stream);
        self.closed = None;
        let a = self.session.connected(Self::now());
        self.apply(a).await;
    }

    fn now() -> tickwire_fix::Timestamp {
        tickwire_fix::Timestamp::from(std::time::SystemTime::now())
    }

    /// Connects and sends the Logon; [`FixClient::until`] then drives the exchange.
    pub async fn connect(&mut self, addr: &str) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        self.attach(stream.into()).await;
    }

    /// [`FixClient::connect`] over TLS, trusting `pki`'s CA.
    pub async fn connect_tls(&mut self, addr: &str, pki: &tls::Pki) {
        let stream = pki.connect(addr).await.expect("TLS handshake");
        self.attach(stream.into()).await;
    }

    async fn apply(&mut self, actions: Vec<tickwire_fix::Action>) {
        use tickwire_fix::Action;
        use tokio::io::AsyncWriteExt;
        for a in actions {
            match a {
                Action::Send(b) => {
                    if let Some(s) = self.stream.as_mut() {
                        // The flush sends what TLS buffered (a no-op on TCP).
                        let r = match s.write_all(&b).await {
                            Ok(()) => s.flush().await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = r {
                            self.close(format!("write: {e}"));
                        }
                    }
                }
                Action::Deliver(m) => self.inbox.push_back(m),
                Action::Disconnect(why) => self.close(why.to_string()),
                Action::LoggedOn => self.logged_on = true,
                Action::LoggedOut => self.logged_on = false,
                Action::Event(e) => self.events.push(e),
                Action::SetTimer(_) => {} // timers are polled on every read timeout
            }
        }
    }

    fn close(&mut self, why: String) {
        self.stream = None;
        if self.closed.is_none() {
            self.closed = Some(why);
        }
    }

    /// Reads and feeds the session until `done` holds or the connection ends; false on timeout.
    pub async fn until(&mut self, wait: Duration, done: impl Fn(&FixClient) -> bool) -> bool {
        use tokio::io::AsyncReadExt;
        let end = tokio::time::Instant::now() + wait;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if done(self) {
                return true;
            }
            if self.closed.is_some() || tokio::time::Instant::now() >= end {
                return false;
            }
            let Some(s) = self.stream.as_mut() else {
                return false;
            };
            let step = end.min(tokio::time::Instant::now() + Duration::from_millis(250));
            let r = tokio::time::timeout_at(step, s.read(&mut buf)).await;
            let actions = match r {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.close("connection closed by the peer".into());
                    self.session.disconnected(Self::now())
                }
                Ok(Ok(n)) => self.session.handle_bytes(&buf[..n], Self::now()),
                Err(_) => self.session.poll_timers(Self::now()),
            };
            self.apply(actions).await;
        }
    }

    /// Sends an application message; the session must be logged on.
    pub async fn send<M: tickwire_fix::AppMessage>(&mut self, m: &M) {
        let a = self.session.send_app(m, Self::now()).unwrap();
        self.apply(a).await;
    }

    /// The next application message, waiting up to `wait`.
    pub async fn next_app(&mut self, wait: Duration) -> Option<tickwire_fix::Message> {
        self.until(wait, |c| !c.inbox.is_empty()).await;
        self.inbox.pop_front()
    }

    /// Logout and wait for the peer's Logout; true when the exchange completed.
    pub async fn logout(&mut self, wait: Duration) -> bool {
        let a = self.session.logout(None, Self::now());
        self.apply(a).await;
        self.until(wait, |c| c.closed.is_some()).await;
        self.closed.as_deref() == Some("logout")
    }
}

/// A MarketDataRequest for bid and offer, snapshot plus incremental updates, depth 1: what
/// the FIX tests subscribe with.
pub fn md_request<'a>(
    id: &'a str,
    symbols: Vec<&'a str>,
) -> tickwire_fix::md::MarketDataRequest<'a> {
    use tickwire_fix::md::{MdEntryType, MdUpdateType, SubscriptionRequestType};
    tickwire_fix::md::MarketDataRequest {
        md_req_id: id,
        subscription_request_type: SubscriptionRequestType::SnapshotPlusUpdates,
        market_depth: 1,
        md_update_type: Some(MdUpdateType::IncrementalRefresh),
        entry_types: vec![MdEntryType::Bid, MdEntryType::Offer],
        symbols,
    }
}

/// Starts the server on `toml` as its config file (written into `dir`; data under
/// `dir/data`), with `--fsync never`.
pub fn start_with_config(dir: &tempfile::TempDir, toml: &str) -> Server {
    let cfg = dir.path().join("tickwire.toml");
    std::fs::write(&cfg, toml).unwrap();
    Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap(), "--fsync", "never"],
        &[],
    )
}

/// Runs `tickwire serve` on `toml`; it must exit with an error that contains `want`.
pub fn refused(toml: &str, want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tickwire.toml");
    std::fs::write(&cfg, toml).unwrap();
    let bin = std::env::var_os("TICKWIRE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tickwire").into());
    let mut child = Command::new(bin)
        .args(["serve", "--http", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started on a configuration it should refuse:\n{toml}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains(want), "expected {want:?} in:\n{err}");
}

/// Every FIX session `GET /v1/fix/sessions` lists.
pub async fn fix_sessions(srv: &Server) -> Vec<Value> {
    let v: Value = get_json(srv, "/v1/fix/sessions").await;
    v["sessions"].as_array().unwrap().clone()
}

/// The FIX session called `name` in `GET /v1/fix/sessions`; `Null` if there is none.
pub async fn fix_session(srv: &Server, name: &str) -> Value {
    fix_sessions(srv)
        .await
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or(Value::Null)
}

/// A JWT (HS256 with `secret`) for user `sub`, valid for an hour, with `info` (JSON text)
/// stamped on their messages and shown in presence.
pub fn user_token(secret: &str, sub: &str, info: Option<&str>) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = tickwire_gateway::Claims {
        sub: sub.into(),
        exp: Some(exp),
        channels: None,
        publish: None,
        info: info.map(|i| serde_json::value::RawValue::from_string(i.into()).unwrap()),
    };
    tickwire_gateway::mint_hs256(secret.as_bytes(), &claims).unwrap()
}

/// The user ids of a presence member list (`[{"sub":..,"info":..},..]`), sorted.
pub fn member_subs(members: &Value) -> Vec<String> {
    let mut s: Vec<String> = members
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["sub"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    s.sort();
    s
}

/// (channel, offset) of every hit of a search answer, in its order.
pub fn search_hits(v: &Value) -> Vec<(String, u64)> {
    v["hits"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    (
                        h["channel"].as_str().unwrap_or("").to_string(),
                        h["offset"].as_u64().unwrap_or(u64::MAX),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
