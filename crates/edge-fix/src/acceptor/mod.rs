//! Distribution: downstream FIX clients log on, subscribe with V and get W (the state
//! channel's current value) then X (changes) as quotes move. Each connection has its own hub
//! session, so a slow client is conflated like any state subscriber: it gets the newest quote,
//! not a backlog.
//!
//! MarketDepth 1 is served from the quote channel (`<namespace>.<SYM>`); any other depth (0:
//! the full book) from the book channel `book.<SYM>` that the book projection builds, the
//! same books every other edge serves: W carries up to N levels a side, and X the levels of
//! the best N that changed. The connection keeps one copy of each book it serves (fed by the
//! channel's snapshot and deltas, which the hub conflates per level for a slow client) and,
//! per request and symbol, the levels last sent, which X is the difference against.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use tickwire_feed::{
    fields,
    l2::{DepthView, L2Book, LevelChange},
    names,
};
use tickwire_fix::{
    frame,
    md::{
        IncrementalEntry, MarketDataIncrementalRefresh, MarketDataRequest, MarketDataRequestReject,
        MarketDataSnapshotFullRefresh, MdEntryType, MdReqRejReason, MdUpdateAction, MdUpdateType,
        SnapshotEntry, SubscriptionRequestType,
    },
    tags::{self, msg_type},
    Decimal, Error as FixError, FileSeqStore, Message, RawMessage, Session, SessionConfig,
    SessionEvent, DEFAULT_MAX_MESSAGE_SIZE,
};
use tickwire_gateway::{
    deadline::sleep_until,
    depth::{book_of, book_value},
    Connection, Credentials, Event, Gateway, Principal,
};
use tickwire_hub::{Channel, Delivery, Offset};
use tickwire_model::DataDir;
use tickwire_tls::Stream;
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

// The acceptor's parts, by responsibility: answering MarketDataRequest (V), serving quote
// channels (MarketDepth 1) and serving books (any other depth).
mod book;
mod quote;
mod request;

use book::book_snapshot;
use quote::{inc_entry, snap_entry, snapshot, QuoteView};

use crate::FixEdgeError;
use crate::{
    config::AcceptorConfig,
    open_store, store_path,
    transport::{now, AppEvent, Conn},
    FixRegistry, FIX,
};

/// SessionRejectReason (373) values.
const REQUIRED_TAG_MISSING: u32 = 1;
const VALUE_IS_INCORRECT: u32 = 5;
const INVALID_MSG_TYPE: u32 = 11;

struct Shared {
    gateway: Arc<Gateway>,
    cfg: AcceptorConfig,
    data: DataDir,
    registry: FixRegistry,
    /// Client CompIDs with a live session: a second Logon for the same pair is refused.
    active: Mutex<HashSet<String>>,
    /// Handshakes every connection when the acceptor speaks TLS.
    tls: Option<tickwire_tls::Acceptor>,
}

pub(crate) async fn spawn(
    gateway: Arc<Gateway>,
    cfg: AcceptorConfig,
    data: DataDir,
    registry: FixRegistry,
    cancel: CancellationToken,
    tls: Option<tickwire_tls::Acceptor>,
) -> Result<SocketAddr, FixEdgeError> {
    let addr: SocketAddr = cfg
        .listen
        .parse()
        .map_err(|_| FixEdgeError::Config(format!("fix acceptor: bad listen {}", cfg.listen)))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| FixEdgeError::Bind { addr, source })?;
    let bound = listener.local_addr()?;
    tracing::info!(
        "fix acceptor listening on {bound} as {}{}",
        cfg.sender_comp_id,
        if tls.is_some() { " (TLS)" } else { "" }
    );
    let sh = Arc::new(Shared {
        gateway,
        cfg,
        data,
        registry,
        active: Mutex::new(HashSet::new()),
        tls,
    });
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("fix acceptor: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            tickwire_tls::socket::tune_accepted(&stream);
            let sh = sh.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                client(sh, stream, peer, cancel).await;
            });
        }
    });
    Ok(bound)
}

/// Reads until the first complete message (the Logon) and returns the buffered bytes and its
/// SenderCompID; `None` if the peer is not a FIX client for us.
/// The first message of a connection: its bytes, the peer's CompID and the credential
/// fields of its Logon, Username (553) and Password (554).
struct FirstLogon {
    bytes: Vec<u8>,
    sender: String,
    username: Option<String>,
    password: Option<String>,
}

async fn first_message(stream: &mut Stream, sh: &Shared, peer: SocketAddr) -> Option<FirstLogon> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let fr = loop {
        match frame(&buf, DEFAULT_MAX_MESSAGE_SIZE) {
            Ok(fr) => break fr,
            Err(FixError::Incomplete) => {}
            Err(e) => {
                tracing::info!("fix acceptor: {peer}: not FIX ({e}); closing");
                return None;
            }
        }
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        buf.extend_from_slice(&chunk[..n]);
    };
    let raw = RawMessage::parse(&buf[..fr.len]).ok()?;
    let sender = raw.sender_comp_id()?.to_string();
    if raw.msg_type() != msg_type::LOGON
        || raw.target_comp_id() != Some(sh.cfg.sender_comp_id.as_str())
        || !sh.cfg.allows(&sender)
        || !sender
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        // An acceptor answers an unknown peer with nothing (no sequence number is spent).
        tracing::warn!(
            "fix acceptor: {peer}: refused logon from {sender:?} to {:?}",
            raw.target_comp_id()
        );
        return None;
    }
    let (mut username, mut password) = (None, None);
    for f in raw.body_fields() {
        let Ok(f) = f else { break };
        let value = || String::from_utf8(f.value.to_vec()).ok();
        match f.tag {
            tags::USERNAME => username = value(),
            tags::PASSWORD => password = value(),
            _ => {}
        }
    }
    Some(FirstLogon {
        bytes: buf,
        sender,
        username,
        password,
    })
}

/// Who a Logon is: its Password (554) is an API key or a token, checked by the gateway like
/// any other edge's credential. With identities configured a password is required; a
/// Username (553), when sent, must name the same identity; a bound CompID only logs on as
/// its identity.
fn logon_principal(sh: &Shared, logon: &FirstLogon) -> Result<Principal, String> {
    let gw = &sh.gateway;
    if gw.publishing_is_open() {
        return Ok(Principal::Open);
    }
    let Some(password) = logon.password.as_deref() else {
        return Err(
            "no Password (554): identities are configured, log on with an API key or token".into(),
        );
    };
    let principal = gw
        .authenticate(&Credentials::new(Some(password)))
        .map_err(|r| format!("Password (554) refused: {}", r.reason))?;
    if let Some(user) = &logon.username {
        let name = match &principal {
            Principal::User(u) => u.sub.clone(),
            Principal::ApiKey(k) => k.name.clone(),
            other => other.identity(),
        };
        if *user != name {
            return Err(format!(
                "Username (553) {user:?} does not match the credential's identity {}",
                principal.identity()
            ));
        }
    }
    if let Some(bound) = sh.cfg.bind.get(&logon.sender) {
        if *bound != principal.identity() {
            return Err(format!(
                "CompID {} is bound to {bound}, not {}",
                logon.sender,
                principal.identity()
            ));
        }
    }
    Ok(principal)
}

async fn client(sh: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, cancel: CancellationToken) {
    // The handshake runs in the connection's own task, bounded by the handshake timeout: a
    // client that stalls in it holds one socket, never the accept loop.
    let mut stream = match &sh.tls {
        None => Stream::Plain(tcp),
        Some(tls) => match tls.accept(tcp).await {
            Ok(s) => Stream::from(s),
            Err(e) => {
                tracing::info!("fix acceptor: {peer}: TLS handshake failed: {e}");
                return;
            }
        },
    };
    let Some(logon) = first_message(&mut stream, &sh, peer).await else {
        return;
    };
    // Counted, limited and registered for shutdown by the gateway like every other edge. A
    // FIX client is allowed by its CompID (checked above against `allowed_comp_ids`) and
    // proves who it is with its Logon's Password.
    let principal = match logon_principal(&sh, &logon) {
        Ok(p) => p,
        Err(why) => {
            // Like an unknown CompID: no Logon answer, no sequence number spent.
            tracing::warn!(
                "fix acceptor: {peer}: refused logon from {:?}: {why}",
                logon.sender
            );
            sh.gateway.metrics().edge(FIX).rejected();
            return;
        }
    };
    let FirstLogon {
        bytes: first,
        sender: their,
        ..
    } = logon;
    let conn = match sh.gateway.connect_from(
        FIX,
        principal,
        Some(peer.ip()),
        Some(sh.cfg.max_connections),
    ) {
        Ok(c) => c,
        Err(r) => {
            tracing::warn!("fix acceptor: {peer}: {}; refusing {their}", r.reason);
            return;
        }
    };
    conn.set_client_id(their.as_str());
    if !sh.active.lock().insert(their.clone()) {
        tracing::warn!(
            "fix acceptor: {peer}: {their} is already logged on; refusing the second connection"
        );
        return;
    }
    let name = format!("acceptor:{their}");
    let ours = sh.cfg.sender_comp_id.clone();
    let session = open_store(
        &store_path(&sh.data, "acceptor", &ours, &their),
        sh.cfg.fsync_seqnums,
    )
    .and_then(|store| Session::new(SessionConfig::acceptor(&ours, &their), store));
    match session {
        Ok(session) => {
            sh.registry.update(&name, |s| {
                s.role = "acceptor";
                s.sender_comp_id = ours.clone();
                s.target_comp_id = their.clone();
                s.peer = peer.to_string();
                s.state = "awaiting_logon";
            });
            let mut c = Client {
                sh: sh.clone(),
                name: name.clone(),
                hub: conn,
                subs: HashMap::new(),
                channels: HashMap::new(),
                books: HashMap::new(),
            };
            let why = c.run(stream, session, &first, &cancel).await;
            tracing::info!("fix acceptor: {their} ({peer}) disconnected: {why}");
        }
        Err(e) => tracing::error!("fix acceptor: {their}: cannot open its sequence store: {e}"),
    }
    // Kept (not removed) so counters add up across reconnects of the same client.
    sh.registry.update(&name, |s| {
        s.state = "disconnected";
        s.disconnects += 1;
    });
    sh.active.lock().remove(&their);
}

struct Request {
    /// The channel served for each symbol: the quote channel, or `book.<SYM>` for a
    /// MarketDepth other than 1.
    channels: Vec<Channel>,
    /// MarketDepth (264) as asked: 1 is the quote channel, anything else the book (0: all).
    depth: u32,
    full_refresh: bool,
    bid: bool,
    offer: bool,
    trade: bool,
    /// Per symbol: offset and value last sent (MarketDepth 1).
    sent: HashMap<String, (Offset, Arc<QuoteView>)>,
    /// Per symbol: the levels last sent (other depths), the best N of the book (N 0: all),
    /// which X is computed against; the same view type the `depth` subscribe option uses.
    levels: HashMap<String, DepthView>,
}

impl Request {
    fn serves_book(&self) -> bool {
        self.depth != 1
    }
}

struct Client {
    sh: Arc<Shared>,
    name: String,
    hub: Connection,
    /// Live subscriptions by MDReqID.
    subs: HashMap<String, Request>,
    /// Hub channel → number of requests using it.
    channels: HashMap<Channel, usize>,
    /// The books of the book channels this connection is subscribed to, as their values built
    /// them: what each request's best N levels are read from.
    books: HashMap<Channel, L2Book>,
}

type C = Conn<FileSeqStore>;

impl Client {
    async fn run(
        &mut self,
        stream: Stream,
        session: Session<FileSeqStore>,
        first: &[u8],
        cancel: &CancellationToken,
    ) -> String {
        let timeout = Duration::from_millis(self.sh.cfg.write_timeout_ms.max(1));
        let mut conn = Conn::new(stream, session, timeout);
        let mut ev = Vec::new();
        let _ = conn.connected(&mut ev).await;
        let _ = conn.feed(first, &mut ev).await;
        let mut stopping: Option<tokio::time::Instant> = None;
        // What the status registry last showed, and messages sent since (see the loop).
        let mut last_shown = (0, 0, usize::MAX);
        let mut pending_out = 0;
        // A hub wake-up taken and not yet drained: the hub wakes a session once per drain,
        // not once per delivery, so one taken while the session is not logged on is kept
        // for when it is.
        let mut hub_ready = false;
        loop {
            while !ev.is_empty() {
                for e in std::mem::take(&mut ev) {
                    self.on_event(e, &mut conn, &mut ev).await;
                }
            }
            // The shared status registry is locked only when something it shows changed: this
            // loop turns once per wakeup (reads, timers, deliveries).
            let seqs = conn.session.seq_nums();
            let shown = (seqs.next_sender, seqs.next_target, self.subs.len());
            pending_out += conn.take_sent();
            if shown != last_shown || pending_out > 0 {
                let sent = std::mem::take(&mut pending_out);
                self.sh.registry.update(&self.name, |s| {
                    (s.next_sender_seq, s.next_target_seq, s.subscriptions) = shown;
                    s.messages_out += sent;
                });
                last_shown = shown;
            }
            if let Some(why) = conn.closed.clone() {
                return why;
            }
            let deadline = conn.deadline();
            let token_at = self.hub.token_deadline().filter(|_| stopping.is_none());
            tokio::select! {
                _ = cancel.cancelled(), if stopping.is_none() => {
                    conn.logout("server shutting down", &mut ev).await;
                    stopping = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                // FIX has no way to refresh a credential: at expiry the session logs out, and
                // the client logs on again with a new one.
                _ = sleep_until(token_at), if token_at.is_some() => {
                    conn.logout("token expired: log on again with a new Password (554)", &mut ev).await;
                    stopping = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                _ = sleep_until(stopping), if stopping.is_some() => return "shutdown".into(),
                _ = self.hub.closed() => {
                    let why = self.hub.close_reason().map(|r| format!("{r:?}")).unwrap_or_default();
                    conn.logout(&format!("closed by server: {why}"), &mut ev).await;
                    stopping = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                r = conn.read() => { let _ = conn.on_read(r, &mut ev).await; }
                _ = sleep_until(deadline) => { let _ = conn.on_timer(&mut ev).await; }
                _ = self.hub.wait() => hub_ready = true,
            }
            if hub_ready && conn.session.is_logged_on() {
                hub_ready = false;
                // drain() is not cancel-safe, so it runs here, outside the select.
                match self.hub.drain().await {
                    Event::Deliver(ds) => {
                        // Every X/W of the batch is queued and goes out in one write (and one
                        // write timeout), not one per message.
                        let mut sent = 0;
                        for d in ds {
                            sent += self.on_delivery(d, &mut conn, &mut ev).await;
                        }
                        let _ = conn.flush_queued(&mut ev).await;
                        // Counted by the connection (shown at the top of the loop).
                        self.hub.delivered(sent);
                    }
                    Event::Close(r) => {
                        conn.logout(&format!("closed by server: {r:?}"), &mut ev)
                            .await;
                        stopping
                            .get_or_insert(tokio::time::Instant::now() + Duration::from_secs(2));
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, e: AppEvent, conn: &mut C, ev: &mut Vec<AppEvent>) {
        match e {
            AppEvent::LoggedOn => {
                tracing::info!("fix acceptor: {} logged on", self.name);
                self.sh.registry.update(&self.name, |s| {
                    s.state = "active";
                    s.logons += 1;
                });
            }
            AppEvent::LoggedOut => {
                self.sh
                    .registry
                    .update(&self.name, |s| s.state = "disconnected");
            }
            AppEvent::Message(m) => {
                self.sh.registry.update(&self.name, |s| s.messages_in += 1);
                if m.msg_type() == msg_type::MARKET_DATA_REQUEST {
                    self.on_request(&m, conn, ev).await;
                } else {
                    let a = conn.session.reject(
                        &m,
                        INVALID_MSG_TYPE,
                        None,
                        "this acceptor serves market data (V) only",
                        now(),
                    );
                    let _ = conn.run(a, ev).await;
                }
            }
            AppEvent::Session(e) => match e {
                SessionEvent::GapDetected { expected, received } => {
                    tracing::warn!(
                        "fix acceptor: {}: gap, expected {expected} got {received}",
                        self.name
                    );
                    self.sh.registry.update(&self.name, |s| s.gaps += 1);
                }
                SessionEvent::ResendRequested { begin, end } => {
                    tracing::info!(
                        "fix acceptor: {}: resend {begin}..{end} gap-filled",
                        self.name
                    );
                    self.sh
                        .registry
                        .update(&self.name, |s| s.resend_requests_answered += 1);
                }
                other => tracing::debug!("fix acceptor: {}: {other:?}", self.name),
            },
        }
    }

    async fn reject(
        &mut self,
        conn: &mut C,
        ev: &mut Vec<AppEvent>,
        id: &str,
        reason: MdReqRejReason,
        text: &str,
    ) {
        let y = MarketDataRequestReject {
            md_req_id: id,
            reason: Some(reason),
            text: Some(text),
        };
        self.sh.registry.update(&self.name, |s| {
            s.rejected.push(format!("{id}: {text}"));
            if s.rejected.len() > 20 {
                s.rejected.remove(0);
            }
        });
        self.send(conn, ev, &y).await;
    }

    async fn send<M: tickwire_fix::AppMessage>(&self, conn: &mut C, ev: &mut Vec<AppEvent>, m: &M) {
        let _ = conn.send_app(m, ev).await;
    }

    fn release(&mut self, ch: &Channel) {
        if let Some(n) = self.channels.get_mut(ch) {
            *n -= 1;
            if *n == 0 {
                self.channels.remove(ch);
                self.books.remove(ch);
                let _ = self.hub.unsubscribe(ch);
            }
        }
    }
}
