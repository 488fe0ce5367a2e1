//! Distribution: downstream FIX clients log on, subscribe with V and get W (the state
//! channel's current value) then X (changes) as quotes move. Each connection has its own hub
//! session, so a slow client is conflated like any state subscriber: it gets the newest quote,
//! not a backlog.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use tickwire_feed::fields;
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
use tickwire_gateway::{Connection, Credentials, Event, Gateway, Principal};
use tickwire_hub::{Channel, Delivery, Offset};
use tickwire_model::DataDir;
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
}

pub(crate) async fn spawn(
    gateway: Arc<Gateway>,
    cfg: AcceptorConfig,
    data: DataDir,
    registry: FixRegistry,
    cancel: CancellationToken,
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
        "fix acceptor listening on {bound} as {}",
        cfg.sender_comp_id
    );
    let sh = Arc::new(Shared {
        gateway,
        cfg,
        data,
        registry,
        active: Mutex::new(HashSet::new()),
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

async fn first_message(
    stream: &mut TcpStream,
    sh: &Shared,
    peer: SocketAddr,
) -> Option<FirstLogon> {
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

async fn client(
    sh: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) {
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
    symbols: Vec<String>,
    full_refresh: bool,
    bid: bool,
    offer: bool,
    trade: bool,
    /// Per symbol: offset and value last sent.
    sent: HashMap<String, (Offset, Arc<QuoteView>)>,
}

struct Client {
    sh: Arc<Shared>,
    name: String,
    hub: Connection,
    /// Live subscriptions by MDReqID.
    subs: HashMap<String, Request>,
    /// Hub channel → number of requests using it.
    channels: HashMap<Channel, usize>,
}

type C = Conn<FileSeqStore>;

impl Client {
    async fn run(
        &mut self,
        stream: TcpStream,
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
                    for sym in &req.symbols {
                        if let Ok(ch) = Channel::parse(&format!("{ns}.{sym}")) {
                            self.release(&ch);
                        }
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
                // Quotes are top of book: a request for more depth is refused, not answered
                // with one level as if it had been served.
                if v.market_depth != 1 {
                    return self
                        .reject(
                            conn,
                            ev,
                            &id,
                            MdReqRejReason::UnsupportedMarketDepth,
                            &format!(
                                "MarketDepth {} is not served: this acceptor distributes top of book (MarketDepth 1)",
                                v.market_depth
                            ),
                        )
                        .await;
                }
                // Every symbol must be a channel with a value; otherwise the whole request is
                // refused, so a client never holds a half-working MDReqID.
                let mut chans = Vec::new();
                let mut unknown = Vec::new();
                for s in &v.symbols {
                    match Channel::parse(&format!("{ns}.{s}")) {
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
                    symbols: v.symbols.iter().map(|s| s.to_string()).collect(),
                    full_refresh: v.md_update_type == Some(MdUpdateType::FullRefresh),
                    bid,
                    offer,
                    trade,
                    sent: HashMap::new(),
                };
                for (&sym, ch) in v.symbols.iter().zip(&chans) {
                    let Ok(Some(msg)) = self.sh.gateway.hub().latest(ch) else {
                        continue;
                    };
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
                let _ = self.hub.unsubscribe(ch);
            }
        }
    }

    /// Per delivery, so per subscriber: the requests are updated in place, and nothing is
    /// copied but the symbol the first time a request is sent it. The messages are queued;
    /// the caller flushes and counts them once per batch of deliveries. Returns how many.
    async fn on_delivery(&mut self, d: Delivery, conn: &mut C, ev: &mut Vec<AppEvent>) -> u64 {
        let p = &d.message.publication;
        let sym = p.channel.name();
        let q = QuoteView::of(&d.message);
        let mut sent = 0;
        for (id, req) in self.subs.iter_mut() {
            if !req.symbols.iter().any(|s| s == sym) {
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
