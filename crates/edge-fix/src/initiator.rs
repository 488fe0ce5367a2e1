//! An upstream session: log on to a provider, subscribe with V, turn W/X into quotes, trades
//! and book updates in the hub; reconnect with exponential backoff. Sequence gaps are recovered
//! by the session layer (ResendRequest; the provider gap-fills market data), and every logon
//! re-subscribes, so a fresh W repairs whatever a gap-fill skipped.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use tickwire_feed::{
    book::{push_json_str, Action, Delta, EntryKind, Level},
    depth::{DepthMessage, SideOrTrade, SnapshotLevel, Update},
    names, Book, Trade,
};
use tickwire_fix::{
    md::{
        recycle_entries, IncrementalEntry, MarketDataIncrementalRefresh, MarketDataRequest,
        MarketDataRequestReject, MarketDataSnapshotFullRefresh, MdEntryType, MdUpdateAction,
        MdUpdateType, SubscriptionRequestType,
    },
    tags::msg_type,
    Message, SeqStore, Session, SessionConfig, SessionEvent,
};
use tickwire_gateway::deadline::sleep_until;
use tickwire_hub::{Channel, Hub, PublishRequest};
use tickwire_model::DataDir;
use tickwire_tls::Stream;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::FixEdgeError;
use crate::{
    config::InitiatorConfig,
    lease::LeaseBuckets,
    open_store, store_path,
    transport::{now, AppEvent, Conn},
    FixRegistry,
};

/// SessionRejectReason 5: value is incorrect (out of range) for this tag.
const VALUE_IS_INCORRECT: u32 = 5;

/// Where a session's sequence numbers are kept: a file of this node, or the cluster's KV.
type Store = Box<dyn SeqStore + Send>;

/// How a session runs: always here, or only while this node holds its lease (cluster mode).
enum Mode {
    Local(Session<Store>),
    Leased {
        buckets: LeaseBuckets,
        scfg: SessionConfig,
    },
}

pub(crate) fn spawn(
    hub: Arc<Hub>,
    cfg: InitiatorConfig,
    data: DataDir,
    leases: Option<LeaseBuckets>,
    registry: FixRegistry,
    cancel: CancellationToken,
) -> Result<(), FixEdgeError> {
    let name = cfg.name();
    let mut scfg = SessionConfig::initiator(&cfg.sender_comp_id, &cfg.target_comp_id);
    scfg.heartbeat_interval = Duration::from_secs(cfg.heartbeat);
    scfg.reset_on_logon = cfg.reset_on_logon;
    scfg.username = cfg.username.clone();
    scfg.password = cfg.password.clone();
    let mode = match leases {
        // The numbers are read from the cluster when the lease is taken, not now: another
        // node may be running the session and moving them on.
        Some(buckets) => Mode::Leased { buckets, scfg },
        None => {
            let path = store_path(&data, "initiator", &cfg.sender_comp_id, &cfg.target_comp_id);
            let store = open_store(&path, cfg.fsync_seqnums)
                .map_err(|e| FixEdgeError::Config(format!("fix initiator {name}: {e}")))?;
            let session = Session::new(scfg, Box::new(store) as Store)
                .map_err(|e| FixEdgeError::Config(format!("fix initiator {name}: {e}")))?;
            Mode::Local(session)
        }
    };
    // Built once, at start: a CA file that cannot be read stops the server with its path,
    // instead of failing every reconnect.
    let tls = if cfg.tls {
        let name_err =
            |e: tickwire_tls::TlsError| FixEdgeError::Config(format!("fix initiator {name}: {e}"));
        Some((
            tickwire_tls::client_config(cfg.ca_file.as_deref()).map_err(name_err)?,
            tickwire_tls::server_name(cfg.tls_server_name()).map_err(name_err)?,
        ))
    } else {
        None
    };
    // Deltas go to the depth namespace when the server has one; the book projection builds
    // `book.<SYM>` from them, the same way as from any other feed.
    let depth_ns = hub.namespace_spec(names::DEPTH).is_some();
    registry.update(&name, |s| {
        s.role = "initiator";
        s.sender_comp_id = cfg.sender_comp_id.clone();
        s.target_comp_id = cfg.target_comp_id.clone();
        s.peer = format!("{}:{}", cfg.host, cfg.port);
        s.state = "connecting";
        s.subscriptions = cfg.symbols.len();
    });
    // Hub publishes run in their own task, so a slow group commit never holds up reading the
    // socket (heartbeats, TestRequests, gap handling). One consumer keeps batches in order; the
    // bound gives backpressure instead of dropping anything when the hub stays slow.
    let (publish_tx, publish_rx) = tokio::sync::mpsc::channel(PUBLISH_QUEUE);
    tokio::spawn(publisher(
        hub.clone(),
        name.clone(),
        registry.clone(),
        publish_rx,
    ));
    let ing = Ingest {
        publish_tx,
        books: HashMap::new(),
        symbols: cfg.symbols.iter().cloned().collect(),
        depth_ns,
        depth: HashMap::new(),
        x_entries: Vec::new(),
        source: format!("fix:{name}"),
        name,
        cfg,
        registry,
        tls,
    };
    tokio::spawn(run(ing, mode, cancel));
    Ok(())
}

/// How long a TCP connect, and then a TLS handshake, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the provider, over TLS when configured (the handshake verifies its
/// certificate).
async fn connect(
    addr: &str,
    tls: Option<(
        Arc<tickwire_tls::RustlsClientConfig>,
        tickwire_tls::ServerName,
    )>,
) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    // Market data is latency-sensitive and messages are small: don't wait for Nagle.
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Stream::Plain(tcp)),
        Some((config, name)) => {
            let s = tickwire_tls::connect(config, name, tcp, CONNECT_TIMEOUT)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("TLS: {e}")))?;
            Ok(Stream::from(s))
        }
    }
}

/// Read batches that may wait for the hub before the read loop waits too.
const PUBLISH_QUEUE: usize = 64;

/// One read's publications and how many of them are quotes (for the status counter).
struct PublishBatch {
    reqs: Vec<PublishRequest>,
    quotes: u64,
}

/// Publishes the batches in order, one at a time, as the read loop used to inline.
async fn publisher(
    hub: Arc<Hub>,
    name: String,
    registry: FixRegistry,
    mut rx: tokio::sync::mpsc::Receiver<PublishBatch>,
) {
    while let Some(b) = rx.recv().await {
        let mut failed = None;
        for r in hub.publish(b.reqs).await {
            if let Err(e) = r {
                failed = Some(e.to_string());
            }
        }
        if let Some(e) = &failed {
            tracing::warn!(session = %name, "fix: publish failed: {e}");
        }
        registry.update(&name, |s| {
            s.quotes_published += b.quotes;
            if failed.is_some() {
                s.last_error = failed;
            }
        });
    }
}

struct Ingest {
    publish_tx: tokio::sync::mpsc::Sender<PublishBatch>,
    cfg: InitiatorConfig,
    name: String,
    source: String,
    registry: FixRegistry,
    /// The provider's book per instrument: its top is what `quotes.<SYM>` carries.
    books: HashMap<String, Book>,
    symbols: BTreeSet<String>,
    /// Whether the server has a depth namespace to publish deltas to.
    depth_ns: bool,
    /// Depth messages (JSON) of this read per instrument, in order.
    depth: HashMap<String, Vec<String>>,
    /// The X entries buffer, reused from message to message so a decode allocates nothing.
    x_entries: Vec<IncrementalEntry<'static>>,
    /// With `tls = true`: whom to trust and the name the provider's certificate must carry.
    tls: Option<(
        Arc<tickwire_tls::RustlsClientConfig>,
        tickwire_tls::ServerName,
    )>,
}

async fn run(mut ing: Ingest, mode: Mode, cancel: CancellationToken) {
    match mode {
        Mode::Local(session) => {
            ing.sessions(session, &cancel, &CancellationToken::new())
                .await;
        }
        Mode::Leased { buckets, scfg } => ing.leased(buckets, scfg, &cancel).await,
    }
    ing.registry.update(&ing.name, |s| s.state = "stopped");
}

impl Ingest {
    /// Cluster mode: competes for the session's lease and runs the session while it holds it;
    /// competes again when it loses it.
    async fn leased(
        &mut self,
        buckets: LeaseBuckets,
        scfg: SessionConfig,
        cancel: &CancellationToken,
    ) {
        let key = LeaseBuckets::key(&self.cfg.sender_comp_id, &self.cfg.target_comp_id);
        // Often enough that a dead holder's session comes back soon after its lease expired.
        let retry = (buckets.ttl / 6).clamp(Duration::from_millis(100), Duration::from_secs(2));
        let mut said_standby = false;
        loop {
            let why = match buckets.try_acquire(&key).await {
                Ok(Ok(lease)) => {
                    said_standby = false;
                    tracing::info!(session = %self.name, "fix: this node holds the initiator lease");
                    let lost = CancellationToken::new();
                    let stop = CancellationToken::new();
                    let keeper = tokio::spawn(lease.keep(stop.clone(), lost.clone()));
                    let (b, k, l) = (buckets.clone(), key.clone(), lost.clone());
                    let store = tokio::task::spawn_blocking(move || b.seq_store(&k, l))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r);
                    let why = match store.and_then(|st| {
                        Session::new(scfg.clone(), Box::new(st) as Store).map_err(|e| e.to_string())
                    }) {
                        Ok(session) => {
                            self.sessions(session, cancel, &lost).await;
                            "lease lost".to_string()
                        }
                        Err(e) => format!("reading the session's sequence numbers: {e}"),
                    };
                    // Shutdown releases the lease (after the Logout went out); a lost one is
                    // not ours to release.
                    stop.cancel();
                    let _ = keeper.await;
                    if cancel.is_cancelled() {
                        return;
                    }
                    tracing::warn!(session = %self.name, "fix: session stopped on this node ({why})");
                    why
                }
                Ok(Err(holder)) => {
                    if !said_standby {
                        tracing::info!(session = %self.name, %holder, "fix: standing by, another node runs this session");
                        said_standby = true;
                    }
                    format!("standby: lease held by {holder}")
                }
                Err(e) => format!("cannot reach the lease bucket: {e}"),
            };
            self.registry.update(&self.name, |s| {
                s.state = "standby";
                s.last_error = Some(why);
            });
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }

    /// Connects, runs the session and reconnects with backoff until `cancel` (shutdown: logs
    /// out) or `lost` (the lease went to another node: drops the connection at once).
    async fn sessions(
        &mut self,
        mut session: Session<Store>,
        cancel: &CancellationToken,
        lost: &CancellationToken,
    ) {
        let min = Duration::from_millis(self.cfg.reconnect_min_ms.max(10));
        let max = Duration::from_millis(self.cfg.reconnect_max_ms).max(min);
        let mut backoff = min;
        let addr = format!("{}:{}", self.cfg.host, self.cfg.port);
        loop {
            self.registry.update(&self.name, |s| s.state = "connecting");
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, connect(&addr, self.tls.clone()));
            let r = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = lost.cancelled() => break,
                r = connect => r,
            };
            let err = match r {
                Ok(Ok(stream)) => {
                    tracing::info!(session = %self.name, %addr, "fix: connected");
                    let (s, logged_on, why) = self.connection(stream, session, cancel, lost).await;
                    session = s;
                    if logged_on {
                        backoff = min;
                    }
                    why
                }
                Ok(Err(e)) => format!("connect to {addr}: {e}"),
                Err(_) => format!("connect to {addr}: timed out"),
            };
            if cancel.is_cancelled() || lost.is_cancelled() {
                break;
            }
            tracing::warn!(session = %self.name, "fix: disconnected ({err}); reconnecting in {backoff:?}");
            self.registry.update(&self.name, |s| {
                s.state = "backoff";
                s.last_error = Some(err);
            });
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = lost.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(max);
        }
    }

    /// One TCP connection; returns the session, whether it logged on, and why it ended.
    async fn connection(
        &mut self,
        stream: Stream,
        session: Session<Store>,
        cancel: &CancellationToken,
        lost: &CancellationToken,
    ) -> (Session<Store>, bool, String) {
        let mut conn = Conn::new(stream, session, Duration::from_secs(10));
        let mut ev = Vec::new();
        let mut logged_on = false;
        let _ = conn.connected(&mut ev).await;
        self.registry.update(&self.name, |s| s.state = "logon_sent");
        let mut stopping: Option<tokio::time::Instant> = None;
        loop {
            let mut touched = BTreeSet::new();
            let mut trades = Vec::new();
            // Counted here, shown with the status update after the batch: one lock of the
            // shared registry per read instead of one per market-data message.
            let mut messages_in = 0;
            while !ev.is_empty() {
                for e in std::mem::take(&mut ev) {
                    match e {
                        AppEvent::LoggedOn => {
                            logged_on = true;
                            tracing::info!(session = %self.name, "fix: logged on");
                            self.registry.update(&self.name, |s| {
                                s.state = "active";
                                s.logons += 1;
                                s.rejected.clear();
                            });
                            self.subscribe(&mut conn, &mut ev).await;
                        }
                        AppEvent::LoggedOut => {
                            self.registry
                                .update(&self.name, |s| s.state = "disconnected");
                        }
                        AppEvent::Message(m) => {
                            messages_in += 1;
                            if let Err(text) = self.on_app(&m, &mut touched, &mut trades) {
                                tracing::warn!(session = %self.name, "fix: rejecting {}: {text}", m.msg_type());
                                let a =
                                    conn.session
                                        .reject(&m, VALUE_IS_INCORRECT, None, &text, now());
                                let _ = conn.run(a, &mut ev).await;
                            }
                        }
                        AppEvent::Session(e) => self.on_session_event(e),
                    }
                }
            }
            self.publish(touched, trades).await;
            let seqs = conn.session.seq_nums();
            let messages_out = conn.take_sent();
            self.registry.update(&self.name, |s| {
                s.next_sender_seq = seqs.next_sender;
                s.next_target_seq = seqs.next_target;
                s.messages_in += messages_in;
                s.messages_out += messages_out;
            });
            if let Some(why) = conn.closed.clone() {
                self.registry.update(&self.name, |s| {
                    s.state = "disconnected";
                    s.disconnects += 1;
                });
                return (conn.into_session(), logged_on, why);
            }
            let deadline = conn.deadline();
            tokio::select! {
                _ = cancel.cancelled(), if stopping.is_none() => {
                    // Log out politely; give the peer a moment to answer, then drop.
                    conn.logout("shutting down", &mut ev).await;
                    stopping = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                _ = sleep_until(stopping), if stopping.is_some() => {
                    return (conn.into_session(), logged_on, "shutdown".into());
                }
                // No Logout: its number could not be stored any more, and the node that
                // holds the lease now may already be logging on.
                _ = lost.cancelled() => {
                    self.registry.update(&self.name, |s| {
                        s.state = "disconnected";
                        s.disconnects += 1;
                    });
                    return (conn.into_session(), logged_on, "lease lost".into());
                }
                r = conn.read() => { let _ = conn.on_read(r, &mut ev).await; }
                _ = sleep_until(deadline) => { let _ = conn.on_timer(&mut ev).await; }
            }
        }
    }

    /// One V per symbol so a Y names the symbol it refuses (MDReqID `tw-<SYM>`).
    async fn subscribe(&self, conn: &mut Conn<Store>, ev: &mut Vec<AppEvent>) {
        for sym in &self.symbols {
            let id = format!("tw-{sym}");
            let v = MarketDataRequest {
                md_req_id: &id,
                subscription_request_type: SubscriptionRequestType::SnapshotPlusUpdates,
                market_depth: self.cfg.depth,
                md_update_type: Some(MdUpdateType::IncrementalRefresh),
                entry_types: vec![MdEntryType::Bid, MdEntryType::Offer, MdEntryType::Trade],
                symbols: vec![sym],
            };
            let _ = conn.send_app(&v, ev).await;
        }
    }

    fn on_session_event(&mut self, e: SessionEvent) {
        match &e {
            SessionEvent::GapDetected { expected, received } => {
                tracing::warn!(session = %self.name, "fix: sequence gap, expected {expected} got {received}; ResendRequest sent");
                self.registry.update(&self.name, |s| s.gaps += 1);
            }
            SessionEvent::ResendRequested { begin, end } => {
                tracing::info!(session = %self.name, "fix: peer asked to resend {begin}..{end}; gap-filled");
                self.registry
                    .update(&self.name, |s| s.resend_requests_answered += 1);
            }
            other => tracing::debug!(session = %self.name, "fix: {other:?}"),
        }
    }

    fn symbol_of_req<'a>(&self, id: Option<&'a str>) -> Option<&'a str> {
        id.and_then(|i| i.strip_prefix("tw-"))
            .filter(|s| self.symbols.contains(*s))
    }

    /// Applies W/X/Y; `Err(text)` when the message cannot be decoded (the caller rejects it).
    fn on_app(
        &mut self,
        m: &Message,
        touched: &mut BTreeSet<String>,
        trades: &mut Vec<(String, Trade)>,
    ) -> Result<(), String> {
        let raw = m.raw();
        match m.msg_type() {
            msg_type::MARKET_DATA_SNAPSHOT_FULL_REFRESH => {
                let w = MarketDataSnapshotFullRefresh::decode(&raw).map_err(|e| e.to_string())?;
                if !self.symbols.contains(w.symbol) {
                    return Ok(());
                }
                let levels: Vec<Level<'_>> = w
                    .entries
                    .iter()
                    .filter_map(|e| {
                        Some(Level {
                            kind: kind_of(Some(e.entry_type))?,
                            price: e.px.as_ref()?.as_str(),
                            size: e.size.as_ref().map(|z| z.as_str()),
                        })
                    })
                    .collect();
                self.books
                    .entry(w.symbol.to_string())
                    .or_default()
                    .apply_snapshot(&levels);
                if self.depth_ns {
                    let m = DepthMessage {
                        snapshot: Some(
                            levels
                                .iter()
                                .map(|l| SnapshotLevel {
                                    side: SideOrTrade::of(l.kind),
                                    price: l.price,
                                    size: l.size,
                                })
                                .collect(),
                        ),
                        updates: None,
                    };
                    if let Ok(json) = serde_json::to_string(&m) {
                        self.depth
                            .entry(w.symbol.to_string())
                            .or_default()
                            .push(json);
                    }
                }
                touched.insert(w.symbol.to_string());
            }
            msg_type::MARKET_DATA_INCREMENTAL_REFRESH => {
                let mut entries = recycle_entries(std::mem::take(&mut self.x_entries));
                let decoded = MarketDataIncrementalRefresh::decode_into(&raw, &mut entries);
                if let Ok(md_req_id) = decoded {
                    self.apply_x(md_req_id, &entries, touched, trades);
                }
                self.x_entries = recycle_entries(entries);
                decoded.map_err(|e| e.to_string())?;
            }
            msg_type::MARKET_DATA_REQUEST_REJECT => {
                let y = MarketDataRequestReject::decode(&raw).map_err(|e| e.to_string())?;
                let text = format!(
                    "{}: {:?} {}",
                    y.md_req_id,
                    y.reason,
                    y.text.unwrap_or_default()
                );
                tracing::warn!(session = %self.name, "fix: subscription refused: {text}");
                self.registry.update(&self.name, |s| s.rejected.push(text));
            }
            other => {
                tracing::debug!(session = %self.name, "fix: ignoring message type {other}");
            }
        }
        Ok(())
    }

    fn apply_x(
        &mut self,
        md_req_id: Option<&str>,
        entries: &[IncrementalEntry<'_>],
        touched: &mut BTreeSet<String>,
        trades: &mut Vec<(String, Trade)>,
    ) {
        let default_sym = self.symbol_of_req(md_req_id);
        let mut updates: BTreeMap<&str, Vec<Update<'_>>> = BTreeMap::new();
        for e in entries {
            let sym = match e.symbol {
                Some(s) if self.symbols.contains(s) => s,
                Some(_) => continue,
                None => match default_sym {
                    Some(s) => s,
                    None => continue,
                },
            };
            // Per entry: the symbol is copied only where it is new (a book, a touched
            // instrument) or kept (a trade), not three times for every entry.
            let book = match self.books.get_mut(sym) {
                Some(b) => b,
                None => self.books.entry(sym.to_string()).or_default(),
            };
            let delta = delta_of(e);
            if let Some(t) = book.apply(&delta) {
                trades.push((sym.to_string(), t));
            }
            if self.depth_ns {
                updates.entry(sym).or_default().push(Update::of(&delta));
            }
            if !touched.contains(sym) {
                touched.insert(sym.to_string());
            }
        }
        for (sym, updates) in updates {
            let m = DepthMessage {
                snapshot: None,
                updates: Some(updates),
            };
            if let Ok(json) = serde_json::to_string(&m) {
                self.depth.entry(sym.to_string()).or_default().push(json);
            }
        }
    }

    /// One hub publish for everything a read produced: the newest quote and depth of each
    /// touched instrument, and every trade. Handed to the publisher task; waits only when it
    /// is [`PUBLISH_QUEUE`] batches behind.
    async fn publish(&mut self, touched: BTreeSet<String>, trades: Vec<(String, Trade)>) {
        let mut reqs = Vec::new();
        let req = |ch: String, data: String| -> Option<PublishRequest> {
            Some(PublishRequest {
                channel: Channel::parse_cached(&ch).ok()?,
                msg_id: None,
                data: Bytes::from(data),
            })
        };
        let mut quotes = 0u64;
        for (sym, t) in trades {
            // Keys sorted, as serde_json wrote them before: price, size, source.
            let mut v = String::with_capacity(64);
            v.push_str("{\"price\":");
            push_json_str(&mut v, &t.price);
            if let Some(z) = &t.size {
                v.push_str(",\"size\":");
                push_json_str(&mut v, z);
            }
            v.push_str(",\"source\":");
            push_json_str(&mut v, &self.source);
            v.push('}');
            reqs.extend(req(names::trades(&sym), v));
        }
        for sym in touched {
            let Some(book) = self.books.get_mut(&sym) else {
                continue;
            };
            if let Some(q) = book.quote_if_changed(&self.source) {
                quotes += 1;
                reqs.extend(req(names::quotes(&sym), q));
            }
            for m in self.depth.remove(&sym).unwrap_or_default() {
                reqs.extend(req(names::depth(&sym), m));
            }
        }
        if reqs.is_empty() {
            return;
        }
        if self
            .publish_tx
            .send(PublishBatch { reqs, quotes })
            .await
            .is_err()
        {
            tracing::error!(session = %self.name, "fix: publisher task is gone; quotes dropped");
        }
    }
}

/// What a FIX MDEntryType is for the book: bid, ask, trade; other types are not book entries.
fn kind_of(t: Option<MdEntryType>) -> Option<EntryKind> {
    match t {
        Some(MdEntryType::Bid) => Some(EntryKind::Bid),
        Some(MdEntryType::Offer) => Some(EntryKind::Ask),
        Some(MdEntryType::Trade) => Some(EntryKind::Trade),
        _ => None,
    }
}

/// An X entry as a book delta (prices and sizes stay the provider's decimal text).
fn delta_of<'a>(e: &'a IncrementalEntry<'_>) -> Delta<'a> {
    Delta {
        action: match e.update_action {
            MdUpdateAction::New => Action::New,
            MdUpdateAction::Change => Action::Change,
            MdUpdateAction::Delete => Action::Delete,
        },
        kind: kind_of(e.entry_type),
        price: e.px.as_ref().map(|p| p.as_str()),
        size: e.size.as_ref().map(|z| z.as_str()),
        id: e.entry_id,
    }
}
