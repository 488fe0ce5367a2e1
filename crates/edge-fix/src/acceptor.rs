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

use crate::FixEdgeError;
use crate::{
    config::AcceptorConfig,
    open_store, store_path,
    transport::{now, sleep_until, AppEvent, Conn},
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
    conn.set_client_id(&their);
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

/// The last value sent for one symbol of one request: what X is computed against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct QuoteView {
    bid: Option<(String, Option<String>)>,
    ask: Option<(String, Option<String>)>,
    last: Option<String>,
}

impl QuoteView {
    /// The parsed quote of a hub message, built once per message and shared by every FIX
    /// subscriber (cached in the message like the other edges' encodings).
    fn of(msg: &tickwire_hub::Message) -> Arc<QuoteView> {
        static FIX_FORMAT: std::sync::OnceLock<tickwire_hub::Format> = std::sync::OnceLock::new();
        let format = *FIX_FORMAT.get_or_init(|| tickwire_hub::Format::register("fix-quote"));
        msg.encoded(format, |p| Arc::new(QuoteView::from_json(&p.data)))
    }

    /// The quote fields of a hub message (read by `tickwire_feed::fields`), keeping only
    /// exact decimals.
    fn from_json(data: &[u8]) -> QuoteView {
        let f = fields::read(fields::Kind::Quote, data).unwrap_or_default();
        let dec = |v: Option<&[u8]>| {
            v.and_then(|b| std::str::from_utf8(b).ok())
                .filter(|s| Decimal::new(s).is_ok())
                .map(str::to_string)
        };
        QuoteView {
            bid: dec(f.bid).map(|p| (p, dec(f.bid_size))),
            ask: dec(f.ask).map(|p| (p, dec(f.ask_size))),
            last: dec(f.last),
        }
    }
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
            let mut hub_ready = false;
            tokio::select! {
                _ = cancel.cancelled(), if stopping.is_none() => {
                    conn.logout("server shutting down", &mut ev).await;
                    stopping = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                // FIX has no way to refresh a credential: at expiry the session logs out, and
                // the client logs on again with a new one.
                _ = tokio::time::sleep_until(token_at.unwrap_or_else(tokio::time::Instant::now)), if token_at.is_some() => {
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

    async fn on_request(&mut self, m: &Message, conn: &mut C, ev: &mut Vec<AppEvent>) {
        let raw = m.raw();
        let v = match MarketDataRequest::decode(&raw) {
            Ok(v) => v,
            Err(e) => {
                let id = raw
                    .body_field(tags::MD_REQ_ID)
                    .ok()
                    .flatten()
                    .and_then(|f| f.as_str().ok().map(str::to_string));
                let unsupported = match &e {
                    FixError::InvalidValue { tag, .. } => match *tag {
                        tags::SUBSCRIPTION_REQUEST_TYPE => {
                            Some(MdReqRejReason::UnsupportedSubscriptionRequestType)
                        }
                        tags::MARKET_DEPTH => Some(MdReqRejReason::UnsupportedMarketDepth),
                        tags::MD_UPDATE_TYPE => Some(MdReqRejReason::UnsupportedMdUpdateType),
                        tags::MD_ENTRY_TYPE => Some(MdReqRejReason::UnsupportedMdEntryType),
                        _ => None,
                    },
                    _ => None,
                };
                match (id, unsupported) {
                    (Some(id), Some(reason)) => {
                        self.reject(conn, ev, &id, reason, &e.to_string()).await
                    }
                    _ => {
                        let (reason, tag) = match &e {
                            FixError::MissingField { tag, .. } => {
                                (REQUIRED_TAG_MISSING, Some(*tag))
                            }
                            FixError::InvalidValue { tag, .. } => (VALUE_IS_INCORRECT, Some(*tag)),
                            _ => (VALUE_IS_INCORRECT, None),
                        };
                        let a = conn.session.reject(m, reason, tag, &e.to_string(), now());
                        let _ = conn.run(a, ev).await;
                    }
                }
                return;
            }
        };
        let id = v.md_req_id.to_string();
        let ns = self.sh.cfg.namespace.clone();
        match v.subscription_request_type {
            SubscriptionRequestType::Unsubscribe => {
                if let Some(req) = self.subs.remove(&id) {
                    for ch in &req.channels {
                        self.release(ch);
                    }
                } else {
                    self.reject(
                        conn,
                        ev,
                        &id,
                        MdReqRejReason::UnknownSymbol,
                        "no subscription with this MDReqID",
                    )
                    .await;
                }
            }
            sub => {
                if self.subs.contains_key(&id) {
                    return self
                        .reject(
                            conn,
                            ev,
                            &id,
                            MdReqRejReason::DuplicateMdReqId,
                            "MDReqID already subscribed",
                        )
                        .await;
                }
                let (bid, offer, trade) = (
                    v.entry_types.contains(&MdEntryType::Bid),
                    v.entry_types.contains(&MdEntryType::Offer),
                    v.entry_types.contains(&MdEntryType::Trade),
                );
                if !(bid || offer || trade) {
                    return self
                        .reject(
                            conn,
                            ev,
                            &id,
                            MdReqRejReason::UnsupportedMdEntryType,
                            "only bid (0), offer (1) and trade (2) are served",
                        )
                        .await;
                }
                // MarketDepth 1 is the quote (its `last` is the trade entry); any other depth
                // is the book, which holds no trades: a request for both is refused rather
                // than answered without the trades as if they had been served.
                let book = v.market_depth != 1;
                if book && trade {
                    return self
                        .reject(
                            conn,
                            ev,
                            &id,
                            MdReqRejReason::UnsupportedMdEntryType,
                            &format!(
                                "MarketDepth {} serves the book's bid (0) and offer (1) levels; ask for trades (2) with MarketDepth 1",
                                v.market_depth
                            ),
                        )
                        .await;
                }
                // Every symbol must be a channel with a value (a book channel: a known book);
                // otherwise the whole request is refused, so a client never holds a
                // half-working MDReqID.
                let mut chans = Vec::new();
                let mut unknown = Vec::new();
                for s in &v.symbols {
                    let name = if book {
                        names::book(s)
                    } else {
                        format!("{ns}.{s}")
                    };
                    match Channel::parse(&name) {
                        Ok(ch) if matches!(self.sh.gateway.hub().latest(&ch), Ok(Some(_))) => {
                            chans.push(ch)
                        }
                        _ => unknown.push(*s),
                    }
                }
                if v.symbols.is_empty() || !unknown.is_empty() {
                    let text = format!("unknown symbol: {}", unknown.join(","));
                    return self
                        .reject(conn, ev, &id, MdReqRejReason::UnknownSymbol, &text)
                        .await;
                }
                let keep = sub == SubscriptionRequestType::SnapshotPlusUpdates;
                if keep {
                    // Subscribe before reading the snapshot: an update that lands in between
                    // arrives as a delivery with a newer offset and is sent as X.
                    for (k, ch) in chans.iter().enumerate() {
                        if !self.channels.contains_key(ch) {
                            if let Err(e) = self.hub.subscribe(ch, None, None) {
                                // The request is refused whole: give back what it already
                                // took, or those channels stay subscribed (and count toward
                                // the session's limit) with no request to release them.
                                for done in chans.iter().take(k) {
                                    self.release(done);
                                }
                                return self
                                    .reject(
                                        conn,
                                        ev,
                                        &id,
                                        MdReqRejReason::InsufficientBandwidth,
                                        &e.to_string(),
                                    )
                                    .await;
                            }
                        }
                        *self.channels.entry(ch.clone()).or_insert(0) += 1;
                    }
                }
                let mut req = Request {
                    channels: chans.clone(),
                    depth: v.market_depth,
                    full_refresh: v.md_update_type == Some(MdUpdateType::FullRefresh),
                    bid,
                    offer,
                    trade,
                    sent: HashMap::new(),
                    levels: HashMap::new(),
                };
                for (&sym, ch) in v.symbols.iter().zip(&chans) {
                    let Ok(Some(msg)) = self.sh.gateway.hub().latest(ch) else {
                        continue;
                    };
                    if book {
                        let Some(b) = book_of(&msg) else { continue };
                        let view = DepthView::of(&b, req.depth);
                        self.send(conn, ev, &book_snapshot(&id, sym, &req, &view))
                            .await;
                        req.levels.insert(sym.to_string(), view);
                        if keep {
                            // One copy per channel, whichever is newest: another request may
                            // have started it, and deliveries keep it current.
                            let held = self.books.entry(ch.clone()).or_default();
                            if !held.is_known() || held.seq() < b.seq() {
                                *held = b;
                            }
                        }
                        continue;
                    }
                    let q = QuoteView::of(&msg);
                    self.send(conn, ev, &snapshot(&id, sym, &req, &q)).await;
                    req.sent
                        .insert(sym.to_string(), (msg.publication.offset, q));
                }
                if keep {
                    self.subs.insert(id, req);
                }
            }
        }
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

    /// Per delivery, so per subscriber: the requests are updated in place, and nothing is
    /// copied but the symbol the first time a request is sent it. The messages are queued;
    /// the caller flushes and counts them once per batch of deliveries. Returns how many.
    async fn on_delivery(&mut self, d: Delivery, conn: &mut C, ev: &mut Vec<AppEvent>) -> u64 {
        if self.books.contains_key(&d.message.publication.channel) {
            return self.on_book_delivery(&d, conn, ev).await;
        }
        let p = &d.message.publication;
        let sym = p.channel.name();
        let q = QuoteView::of(&d.message);
        let mut sent = 0;
        for (id, req) in self.subs.iter_mut() {
            if req.serves_book() || !req.channels.contains(&p.channel) {
                continue;
            }
            let prev = match req.sent.get_mut(sym) {
                Some((o, _)) if p.offset <= *o => continue,
                Some(slot) => std::mem::replace(slot, (p.offset, q.clone())).1,
                None => {
                    req.sent.insert(sym.to_string(), (p.offset, q.clone()));
                    Arc::default()
                }
            };
            if req.full_refresh {
                conn.queue_app(&snapshot(id, sym, req, &q), ev).await;
            } else if let Some(x) = incremental(id, sym, req, &prev, &q) {
                conn.queue_app(&x, ev).await;
            } else {
                continue;
            }
            sent += 1;
        }
        sent
    }
}

impl Client {
    /// A book channel's value: the connection's copy of the book follows it, and each
    /// MarketDepth N request on it gets the levels of its best N that changed (X), or its
    /// best N again (W, when it asked for full refreshes). Nothing is sent to a request whose
    /// best N did not change. Returns how many messages were queued.
    async fn on_book_delivery(
        &mut self,
        d: &Delivery,
        conn: &mut C,
        ev: &mut Vec<AppEvent>,
    ) -> u64 {
        let ch = &d.message.publication.channel;
        let Some(book) = self.books.get_mut(ch) else {
            return 0;
        };
        let value = book_value(&d.message);
        let Some(m) = value.as_ref() else { return 0 };
        if !m.snapshot && book.is_known() && m.seq <= book.seq() {
            // Already in the copy (it was read from the channel's newest value after the
            // subscription started).
            return 0;
        }
        if book.apply(m) == tickwire_feed::l2::Applied::Gap {
            // The hub's conflation keeps a subscriber's deltas contiguous, so this is a book
            // the channel itself lost (a restart before its next snapshot): start again from
            // the channel's book, or send nothing until it has one.
            match self.sh.gateway.hub().latest(ch) {
                Ok(Some(msg)) => match book_of(&msg) {
                    Some(b) => *book = b,
                    None => return 0,
                },
                _ => return 0,
            }
        }
        let sym = ch.name();
        let mut sent = 0;
        for (id, req) in self.subs.iter_mut() {
            if !req.serves_book() || !req.channels.contains(ch) {
                continue;
            }
            let view = DepthView::of(book, req.depth);
            let prev = req.levels.get(sym).cloned().unwrap_or_default();
            if prev == view {
                continue;
            }
            if req.full_refresh {
                conn.queue_app(&book_snapshot(id, sym, req, &view), ev)
                    .await;
            } else {
                let x = book_incremental(id, sym, req, &prev, &view);
                if x.entries.is_empty() {
                    continue;
                }
                conn.queue_app(&x, ev).await;
            }
            req.levels.insert(sym.to_string(), view);
            sent += 1;
        }
        sent
    }
}

/// W of a book: up to N levels a side, best first, of the sides `req` asked for.
fn book_snapshot<'a>(
    id: &'a str,
    sym: &'a str,
    req: &Request,
    view: &'a DepthView,
) -> MarketDataSnapshotFullRefresh<'a> {
    let mut entries = Vec::new();
    if req.bid {
        entries.extend(
            view.bids()
                .filter_map(|(p, z)| snap_entry(MdEntryType::Bid, p, Some(z))),
        );
    }
    if req.offer {
        entries.extend(
            view.asks()
                .filter_map(|(p, z)| snap_entry(MdEntryType::Offer, p, Some(z))),
        );
    }
    MarketDataSnapshotFullRefresh {
        md_req_id: Some(id),
        symbol: sym,
        entries,
    }
}

/// X from the levels a client holds (`prev`) to the best N now (`view`): Delete for a level
/// that left the best N, Change for a new size, New for a level that came in. Deletes go
/// first, so a client that caps its book at N levels never holds N + 1. A price respelled
/// ("1.10" for "1.1") is Delete + New, right for clients that key levels by text and for
/// those that key them by value.
fn book_incremental<'a>(
    id: &'a str,
    sym: &'a str,
    req: &Request,
    prev: &'a DepthView,
    view: &'a DepthView,
) -> MarketDataIncrementalRefresh<'a> {
    use MdUpdateAction::{Change, Delete, New};
    let mut deletes = Vec::new();
    let mut rest = Vec::new();
    let changes = prev.changes(view);
    let sides = [
        (req.bid, MdEntryType::Bid, &changes.bids),
        (req.offer, MdEntryType::Offer, &changes.asks),
    ];
    for (want, t, side) in sides {
        if !want {
            continue;
        }
        let entry = |a, (p, z): &'a (String, String)| inc_entry(a, t, sym, p, Some(z));
        for c in side {
            match *c {
                LevelChange::Left(old) => deletes.extend(entry(Delete, old)),
                LevelChange::Entered(new) => rest.extend(entry(New, new)),
                LevelChange::Changed { old, new } if old.0 == new.0 => {
                    rest.extend(entry(Change, new));
                }
                LevelChange::Changed { old, new } => {
                    deletes.extend(entry(Delete, old));
                    rest.extend(entry(New, new));
                }
            }
        }
    }
    deletes.extend(rest);
    MarketDataIncrementalRefresh {
        md_req_id: Some(id),
        entries: deletes,
    }
}

/// W with the entry types `req` asked for.
fn snapshot<'a>(
    id: &'a str,
    sym: &'a str,
    req: &Request,
    q: &'a QuoteView,
) -> MarketDataSnapshotFullRefresh<'a> {
    let mut entries = Vec::new();
    if let (true, Some((p, z))) = (req.bid, &q.bid) {
        entries.extend(snap_entry(MdEntryType::Bid, p, z.as_deref()));
    }
    if let (true, Some((p, z))) = (req.offer, &q.ask) {
        entries.extend(snap_entry(MdEntryType::Offer, p, z.as_deref()));
    }
    if let (true, Some(p)) = (req.trade, &q.last) {
        entries.extend(snap_entry(MdEntryType::Trade, p, None));
    }
    MarketDataSnapshotFullRefresh {
        md_req_id: Some(id),
        symbol: sym,
        entries,
    }
}

/// X with the differences between what the client has and the new quote: a moved price is
/// Delete(old) + New(new), since level books are keyed by price; a size change is Change.
/// `None` when nothing the request asked for changed.
fn incremental<'a>(
    id: &'a str,
    sym: &'a str,
    req: &Request,
    prev: &'a QuoteView,
    q: &'a QuoteView,
) -> Option<MarketDataIncrementalRefresh<'a>> {
    let mut entries: Vec<IncrementalEntry<'_>> = Vec::new();
    let mk = |a, t, px, sz| inc_entry(a, t, sym, px, sz);
    let sides = [
        (req.bid, MdEntryType::Bid, &prev.bid, &q.bid),
        (req.offer, MdEntryType::Offer, &prev.ask, &q.ask),
    ];
    for (want, t, old, new) in sides {
        if !want || old == new {
            continue;
        }
        match (old, new) {
            (Some((op, _)), Some((np, nz))) if op == np => {
                entries.extend(mk(MdUpdateAction::Change, t, np, nz.as_deref()));
            }
            (old, new) => {
                if let Some((op, oz)) = old {
                    entries.extend(mk(MdUpdateAction::Delete, t, op, oz.as_deref()));
                }
                if let Some((np, nz)) = new {
                    entries.extend(mk(MdUpdateAction::New, t, np, nz.as_deref()));
                }
            }
        }
    }
    if req.trade && q.last != prev.last {
        if let Some(l) = &q.last {
            entries.extend(mk(MdUpdateAction::New, MdEntryType::Trade, l, None));
        }
    }
    if entries.is_empty() {
        return None;
    }
    Some(MarketDataIncrementalRefresh {
        md_req_id: Some(id),
        entries,
    })
}

fn snap_entry<'a>(t: MdEntryType, px: &'a str, sz: Option<&'a str>) -> Option<SnapshotEntry<'a>> {
    Some(SnapshotEntry {
        entry_type: t,
        px: Some(Decimal::new(px).ok()?),
        size: sz.and_then(|z| Decimal::new(z).ok()),
        date: None,
        time: None,
    })
}

fn inc_entry<'a>(
    a: MdUpdateAction,
    t: MdEntryType,
    sym: &'a str,
    px: &'a str,
    sz: Option<&'a str>,
) -> Option<IncrementalEntry<'a>> {
    let mut e = IncrementalEntry::new(a);
    e.entry_type = Some(t);
    e.symbol = Some(sym);
    e.px = Some(Decimal::new(px).ok()?);
    e.size = sz.and_then(|z| Decimal::new(z).ok());
    Some(e)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn view(bids: &[(&str, &str)], asks: &[(&str, &str)]) -> DepthView {
        let own = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(p, s)| (p.to_string(), s.to_string()))
                .collect()
        };
        let book = L2Book::from_snapshot(&tickwire_feed::l2::L2Msg {
            snapshot: true,
            bids: own(bids),
            asks: own(asks),
            ..Default::default()
        });
        DepthView::of(&book, 0)
    }

    fn request(depth: u32) -> Request {
        Request {
            channels: Vec::new(),
            depth,
            full_refresh: false,
            bid: true,
            offer: true,
            trade: false,
            sent: HashMap::new(),
            levels: HashMap::new(),
        }
    }

    /// (action, bid?, price, size) of each entry.
    fn entries(
        x: &MarketDataIncrementalRefresh<'_>,
    ) -> Vec<(MdUpdateAction, bool, String, String)> {
        x.entries
            .iter()
            .map(|e| {
                (
                    e.update_action,
                    e.entry_type == Some(MdEntryType::Bid),
                    e.px.unwrap().as_str().to_string(),
                    e.size.map(|z| z.as_str().to_string()).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// A level that left the best N is deleted before anything comes in; a new size is a
    /// Change; a respelled price is Delete + New; unchanged levels send nothing.
    #[test]
    fn x_takes_the_clients_levels_to_the_best_n() {
        use MdUpdateAction::{Change, Delete, New};
        let req = request(2);
        let prev = view(
            &[("1.10", "5"), ("1.09", "2")],
            &[("1.12", "3"), ("1.13", "1")],
        );
        let now = view(
            &[("1.09", "4"), ("1.08", "7")],
            &[("1.12", "3"), ("1.130", "1")],
        );
        let x = book_incremental("r", "S", &req, &prev, &now);
        assert_eq!(
            entries(&x),
            vec![
                (Delete, true, "1.10".into(), "5".into()),
                (Delete, false, "1.13".into(), "1".into()),
                (Change, true, "1.09".into(), "4".into()),
                (New, true, "1.08".into(), "7".into()),
                (New, false, "1.130".into(), "1".into()),
            ]
        );
        assert!(book_incremental("r", "S", &req, &now, &now)
            .entries
            .is_empty());
    }
}
