//! The gateway: the one place every edge (HTTP publish and REST, WebSocket, SSE, MQTT, the FIX
//! acceptor, later gRPC) goes through to reach the hub.
//!
//! - **Who**: [`Gateway::authenticate`] turns what a client presented ([`Credentials`]) into a
//!   [`Principal`]; a bad credential is refused here, the same way for every edge.
//! - **What it may do**: [`Gateway::can_publish`], [`Gateway::can_subscribe`].
//! - **Connections**: [`Gateway::connect`] takes a connection permit (one limit across edges),
//!   opens a hub session, registers it for shutdown and kicks, and counts it per edge; the
//!   returned [`Connection`] gives all of that back when dropped.
//! - **Refusals**: every refused request is a [`Refusal`], mapped to each wire's error in one
//!   table ([`Refusal::http_status`], [`Refusal::mqtt_reason`], the WebSocket code itself).
//! - **Publishing** through a connection never waits for one acknowledgement before taking the
//!   next command: [`Connection::enqueue`] hands a batch to its namespace writer and returns
//!   the acknowledgements as a future the edge keeps in a window, answering in order.
//!
//! Edges stay thin: they decode their wire into these calls and encode the results.

mod auth;
mod chat;
mod connection;
pub mod deadline;
pub mod depth;
pub mod jwks;
mod limits;
mod metrics;
pub mod park;
mod presence;
pub mod proto;
mod refusal;
mod registry;
mod stamp;
pub mod trace;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use auth::Authenticator;
use parking_lot::Mutex;
use tickwire_hub::{
    Ack, Channel, Checked, CloseReason, Delivery, Epoch, Hub, HubError, Offset, Pattern,
    PublishRequest, Session, SubscribeInfo,
};
use tickwire_model::{Permission, SchemaFields};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use auth::{mint_hs256, ApiKeyConfig, AuthConfig, Claims, KeyIdentity, Scope, User};
pub use chat::{
    Amended, AmendedChange, Amendments, Change, MarkerStore, NamespaceScope, SearchHit,
    SearchResults, SearchService, Unread, MAX_UNREAD,
};
use connection::IpCount;
pub use connection::{AckFuture, Connection, Event};
pub use limits::{LimitsConfig, NamespaceLimits, PublishLimits, Rate};
pub use metrics::{EdgeCounters, Metrics, MetricsSource};
pub use presence::{presence_channel, PresenceMember};
pub use refusal::Refusal;
pub use registry::ConnectionInfo;
use registry::Registered;
pub use tickwire_wire::ErrorCode;

/// A client's address, put into each HTTP request's extensions by the listener so edges that
/// serve over HTTP (WebSocket, SSE, MQTT over WebSocket) can count connections per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The name an edge is counted and logged under (`websocket`, `sse`, `mqtt`, ...). Edges
/// declare their own; the gateway does not enumerate them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge(pub &'static str);

/// The gateway's settings (from the server configuration).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Identities: API keys and JWT verification. Nothing configured: development mode, every
    /// client may read and publish everything.
    pub auth: AuthConfig,
    /// Rate limits for clients (the server API is not limited).
    pub limits: LimitsConfig,
    /// Concurrent long-lived connections across every edge.
    pub max_connections: usize,
    /// A client that does not take a write within this long is disconnected.
    pub write_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            max_connections: 100_000,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// What a client presented to prove who it is: an API key or a JWT, however its wire carries
/// it (`Authorization: Bearer`, `?token=`, `?api_key=`, the MQTT password, FIX Password(554)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub secret: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    pub fn new(secret: Option<&'a str>) -> Credentials<'a> {
        Credentials {
            secret: secret.filter(|s| !s.is_empty()),
        }
    }
}

/// Who a connection or request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Presented nothing.
    Anonymous,
    /// Holds a configured API key.
    ApiKey(Arc<KeyIdentity>),
    /// A verified JWT.
    User(Arc<User>),
    /// No identities are configured: everyone may do everything (development mode).
    Open,
}

impl Principal {
    /// May publish to any namespace (an API key with the `publish` scope, or anyone in
    /// development mode).
    pub fn is_publisher(&self) -> bool {
        match self {
            Principal::ApiKey(k) => k.has(Scope::Publish),
            Principal::Open => true,
            _ => false,
        }
    }

    /// The JWT user, if that is who this is.
    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::User(u) => Some(u),
            _ => None,
        }
    }

    /// Unix seconds the credential expires at (JWT `exp`).
    pub fn expires_at(&self) -> Option<u64> {
        self.user().and_then(|u| u.exp)
    }

    /// A stable name for who this is (`user:42`, `key:feed`, `anonymous`, `open`): owners of
    /// MQTT sessions, log lines.
    pub fn identity(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::Open => "open".into(),
            Principal::ApiKey(k) => format!("key:{}", k.name),
            Principal::User(u) => format!("user:{}", u.sub),
        }
    }

    /// Whether `self` passes `perm` on `channel` (`publish`: the publish side).
    fn permits(&self, perm: Permission, channel: &Channel, publish: bool) -> bool {
        match self {
            Principal::Open => true,
            Principal::Anonymous => perm == Permission::Anyone,
            Principal::ApiKey(k) => {
                if publish {
                    // The `publish` scope is the server API: anywhere. Without it, a key is
                    // an authenticated client like any other.
                    k.has(Scope::Publish)
                        || matches!(perm, Permission::Anyone | Permission::Authenticated)
                } else {
                    k.has(Scope::SubscribeAll)
                        || matches!(
                            perm,
                            Permission::Anyone | Permission::Authenticated | Permission::ApiKey
                        )
                }
            }
            Principal::User(u) => {
                let claimed = if publish { &u.publish } else { &u.channels };
                // A token's patterns widen what the namespace allows (an operator's
                // `channels: ["user.*"]`); they never narrow it.
                claimed.iter().any(|p| p.matches(channel))
                    || match perm {
                        Permission::Anyone | Permission::Authenticated => true,
                        Permission::Owner => u.owns(channel),
                        Permission::Claim | Permission::ApiKey => false,
                    }
            }
        }
    }
}

/// The refusal for `principal` not passing `perm` on `channel`.
fn denied(principal: &Principal, action: &str, channel: &Channel, perm: Permission) -> Refusal {
    let who = principal.identity();
    let (code, hint) = match principal {
        Principal::Anonymous => (
            ErrorCode::Unauthorized,
            " — present an API key or a token".to_string(),
        ),
        _ => (ErrorCode::Forbidden, String::new()),
    };
    Refusal::new(
        code,
        format!(
            "{who} may not {action} `{channel}`: namespace `{}` allows {}{hint}",
            channel.namespace(),
            match perm {
                Permission::Anyone => "anyone",
                Permission::Authenticated => "authenticated clients",
                Permission::Owner => "only the user it belongs to (`<namespace>.<sub>`)",
                Permission::Claim => "only what the token's claims allow",
                Permission::ApiKey => "only API keys",
            }
        ),
    )
}

/// The edge contract's shared state. One per server, behind an `Arc`.
pub struct Gateway {
    hub: Arc<Hub>,
    config: GatewayConfig,
    auth: Authenticator,
    limiter: limits::Limiter,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    ready: AtomicBool,
    /// Set when a drain is announced ahead of it (`drain_delay_ms`): `/readyz` fails so load
    /// balancers stop sending new clients, while this server still takes them.
    draining: AtomicBool,
    /// Boxed: the map's table holds a slot per connection and then some (it doubles as it
    /// grows), so a slot is a pointer instead of the whole entry (bench/results/idle.md).
    sessions: Mutex<HashMap<u64, Box<Registered>>>,
    next_id: AtomicU64,
    /// Who is subscribed where (namespaces with presence), on this node.
    presence: presence::Tracker,
    /// Services the projections provide (set by the server once they run).
    amendments: OnceLock<Arc<dyn Amendments>>,
    search: OnceLock<Arc<dyn SearchService>>,
    markers: OnceLock<Arc<dyn MarkerStore>>,
    /// Set when `[tracing]` is configured; edges check it once per publish request.
    tracer: OnceLock<Arc<tickwire_otel::Tracer>>,
}

/// Checks an `[auth]` section the way [`Gateway::new`] does (key files readable, secrets long
/// enough) without a server: `tickwire check-config`.
pub fn check_auth(config: &AuthConfig) -> Result<(), String> {
    Authenticator::new(config).map(|_| ())
}

impl Gateway {
    /// The gateway over `hub`; fails when `config.auth` names a key file that cannot be read
    /// or a secret too short to be safe.
    pub fn new(hub: Arc<Hub>, config: GatewayConfig) -> Result<Arc<Gateway>, String> {
        let auth = Authenticator::new(&config.auth)?;
        if !config.auth.enabled() {
            tracing::warn!("no [auth] configured: every client may read and publish every channel (development mode)");
        }
        Ok(Arc::new(Gateway {
            presence: presence::Tracker::new(&hub),
            amendments: OnceLock::new(),
            search: OnceLock::new(),
            markers: OnceLock::new(),
            tracer: OnceLock::new(),
            hub,
            permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
            auth,
            limiter: limits::Limiter::new(config.limits.clone()),
            config,
            metrics: Arc::new(Metrics::default()),
            ready: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }))
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A client's write timeout (see [`GatewayConfig::write_timeout`]).
    pub fn write_timeout(&self) -> Duration {
        self.config.write_timeout.max(Duration::from_millis(1))
    }

    /// Whether no identity is configured (development mode: everything is open).
    pub fn publishing_is_open(&self) -> bool {
        !self.config.auth.enabled()
    }

    /// How long a connection whose token expired may send `refresh` before it is closed.
    pub fn token_grace(&self) -> Duration {
        Duration::from_secs(self.config.auth.token_grace_secs)
    }

    /// Who presented `creds`: an API key, a JWT user, or anonymous (nothing presented). A
    /// credential that was given but is not valid is refused (rather than treated as
    /// anonymous), so a client learns its key or token is wrong.
    pub fn authenticate(&self, creds: &Credentials<'_>) -> Result<Principal, Refusal> {
        if !self.config.auth.enabled() {
            return Ok(Principal::Open);
        }
        let Some(secret) = creds.secret.filter(|s| !s.is_empty()) else {
            return Ok(Principal::Anonymous);
        };
        if let Some(k) = self.auth.api_key(secret) {
            return Ok(Principal::ApiKey(k));
        }
        // Three base64url parts: a JWT. Anything else was meant as an API key.
        if secret.split('.').count() == 3 && self.auth.has_jwt() {
            return self
                .auth
                .verify(secret)
                .map(|u| Principal::User(Arc::new(u)));
        }
        Err(Refusal::new(
            ErrorCode::Unauthorized,
            if self.auth.has_jwt() {
                "the credential is neither a configured API key nor a valid token"
            } else {
                "the API key is not valid"
            },
        ))
    }

    /// For the server API (HTTP publish): a principal that may publish somewhere, or a
    /// refusal that says what to present. What it may publish is checked per item.
    pub fn server_api(&self, creds: &Credentials<'_>) -> Result<Principal, Refusal> {
        let p = self.authenticate(creds)?;
        match p {
            Principal::Anonymous => Err(Refusal::new(
                ErrorCode::Unauthorized,
                "publishing needs `Authorization: Bearer <api key or token>`",
            )),
            p => Ok(p),
        }
    }

    /// Whether `principal` may use the operator endpoints (`/metrics`, FIX sessions, channel
    /// and namespace listings): the `admin` scope, development mode, or `admin_open`.
    pub fn require_admin(&self, principal: &Principal) -> Result<(), Refusal> {
        let ok = self.config.auth.admin_open
            || match principal {
                Principal::Open => true,
                Principal::ApiKey(k) => k.has(Scope::Admin),
                _ => false,
            };
        if ok {
            Ok(())
        } else if *principal == Principal::Anonymous {
            Err(Refusal::new(
                ErrorCode::Unauthorized,
                "this endpoint needs an API key with the `admin` scope (`Authorization: Bearer`)",
            ))
        } else {
            Err(Refusal::new(
                ErrorCode::Forbidden,
                "this endpoint needs an API key with the `admin` scope",
            ))
        }
    }

    fn spec(&self, channel: &Channel) -> Result<&tickwire_hub::NamespaceSpec, Refusal> {
        self.hub
            .namespace_spec(channel.namespace())
            .ok_or_else(|| Refusal::unknown_namespace(&self.hub, channel.namespace()))
    }

    /// Whether `principal` may publish to `channel` (the namespace's `publish` permission).
    pub fn can_publish(&self, principal: &Principal, channel: &Channel) -> Result<(), Refusal> {
        let spec = self.spec(channel)?;
        if principal.permits(spec.publish, channel, true) {
            return Ok(());
        }
        Err(denied(principal, "publish to", channel, spec.publish))
    }

    /// Whether `principal` may subscribe to or read `channel` (the namespace's `subscribe`
    /// permission): WebSocket, SSE, MQTT, history, latest.
    pub fn can_subscribe(&self, principal: &Principal, channel: &Channel) -> Result<(), Refusal> {
        if channel.namespace() == tickwire_model::PRESENCE {
            // Who is in a channel is as private as what is said there.
            return match self.presence_base(channel) {
                Some(base) => self.can_subscribe(principal, &base),
                None => Err(Refusal::new(
                    ErrorCode::BadChannel,
                    format!("`{channel}` names no channel with presence (`presence.<channel>`)"),
                )),
            };
        }
        let spec = self.spec(channel)?;
        if principal.permits(spec.subscribe, channel, false) {
            return Ok(());
        }
        Err(denied(principal, "read", channel, spec.subscribe))
    }

    /// Whether `principal` may subscribe to a pattern: every channel it can match must be
    /// readable, so a pattern is allowed only where the namespace is readable as a whole.
    pub fn can_subscribe_pattern(
        &self,
        principal: &Principal,
        pattern: &Pattern,
    ) -> Result<(), Refusal> {
        if matches!(principal, Principal::Open) {
            return Ok(());
        }
        let check = |ns: &str| -> Result<(), Refusal> {
            let spec = self
                .hub
                .namespace_spec(ns)
                .ok_or_else(|| Refusal::unknown_namespace(&self.hub, ns))?;
            let wide = match (principal, spec.subscribe) {
                (Principal::ApiKey(k), _) if k.has(Scope::SubscribeAll) => true,
                (_, Permission::Anyone) => true,
                (Principal::Anonymous, _) => false,
                (_, Permission::Authenticated) => true,
                (Principal::ApiKey(_), Permission::ApiKey) => true,
                (Principal::User(u), _) => u.channels.iter().any(|c| c == pattern),
                _ => false,
            };
            if wide {
                Ok(())
            } else {
                Err(Refusal::new(
                    if *principal == Principal::Anonymous {
                        ErrorCode::Unauthorized
                    } else {
                        ErrorCode::Forbidden
                    },
                    format!(
                        "`{}` may match channels {} may not read (namespace `{ns}` is readable by {}); subscribe to your channels by name",
                        pattern.as_str(),
                        principal.identity(),
                        spec.subscribe.as_str()
                    ),
                ))
            }
        };
        match pattern.namespace() {
            Some(ns) => check(ns),
            None => self
                .hub
                .namespaces()
                .iter()
                .try_for_each(|s| check(&s.name)),
        }
    }

    /// The channel whose joins and leaves `presence_channel` carries, if its namespace has
    /// presence.
    fn presence_base(&self, presence_channel: &Channel) -> Option<Channel> {
        let base = Channel::parse(presence_channel.name()).ok()?;
        self.hub
            .namespace_spec(base.namespace())
            .is_some_and(|s| s.presence)
            .then_some(base)
    }

    /// Whether `channel`'s namespace tracks presence.
    pub fn has_presence(&self, channel: &Channel) -> bool {
        self.hub
            .namespace_spec(channel.namespace())
            .is_some_and(|s| s.presence)
            && self.hub.namespace_spec(tickwire_model::PRESENCE).is_some()
    }

    /// Cluster mode: presence counts the users of every node, shared through `kv`'s buckets;
    /// a node silent for `ttl` is taken for dead and its users leave. Call once, before
    /// connections come in.
    pub async fn share_presence(
        &self,
        kv: Arc<dyn tickwire_stream::kv::KvProvider>,
        ttl: Duration,
    ) -> Result<(), String> {
        self.presence.share(kv, ttl).await
    }

    /// Cluster mode: the cluster processes alive now, by holder name (`KvProvider::holder`),
    /// from presence's liveness keys; `None` on a single server. Blocking.
    pub fn live_holders(&self) -> Option<Result<std::collections::BTreeSet<String>, String>> {
        self.presence.live_holders()
    }

    /// Who is in `channel` (on any live node in cluster mode), for `principal` (who must be
    /// able to read it).
    pub async fn presence_of(
        &self,
        principal: &Principal,
        channel: &Channel,
    ) -> Result<Vec<PresenceMember>, Refusal> {
        self.can_subscribe(principal, channel)?;
        if !self.has_presence(channel) {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "namespace `{}` does not track presence (`presence = true` in its configuration)",
                    channel.namespace()
                ),
            ));
        }
        self.presence
            .members(channel)
            .await
            .map_err(|e| Refusal::new(ErrorCode::Unavailable, e))
    }

    /// Validates one publication for `principal` (permission, namespace, size, schema)
    /// without storing it. A user's message in a stream namespace is stamped with who sent
    /// it (`from`), which no client can forge.
    pub fn check(
        &self,
        principal: &Principal,
        request: PublishRequest,
    ) -> Result<Checked, Refusal> {
        self.check_scanned(principal, request, None)
    }

    /// [`Gateway::check`] with the quote/trade fields of `request.data` when a reader already
    /// found them (`tickwire_model::scan_flat_object` over exactly that text), so the schema
    /// check does not read the data again. They are dropped when the data is rewritten (a
    /// user's stream message gets its `from`).
    pub fn check_scanned(
        &self,
        principal: &Principal,
        mut request: PublishRequest,
        mut fields: Option<&SchemaFields<'_>>,
    ) -> Result<Checked, Refusal> {
        let spec = self.spec(&request.channel)?;
        if !principal.permits(spec.publish, &request.channel, true) {
            return Err(denied(
                principal,
                "publish to",
                &request.channel,
                spec.publish,
            ));
        }
        if spec.class == tickwire_hub::Class::Stream {
            match principal {
                Principal::User(u) => {
                    request.data = stamp::from_user(&request.data, u)?;
                    fields = None;
                }
                Principal::Anonymous => stamp::refuse_forged_from(&request.data)?,
                Principal::ApiKey(k) if !k.has(Scope::Publish) => {
                    stamp::refuse_reserved(&request.data)?
                }
                Principal::ApiKey(_) | Principal::Open => {}
            }
        }
        match fields {
            Some(f) => self.hub.check_scanned(request, f),
            None => self.hub.check(request),
        }
        .map_err(Refusal::from)
    }

    /// Opens a long-lived connection for `principal` on `edge`: a permit of the shared
    /// connection limit, a hub session, registration for shutdown and kicks, per-edge counts.
    pub fn connect(
        self: &Arc<Self>,
        edge: Edge,
        principal: Principal,
    ) -> Result<Connection, Refusal> {
        self.connect_limited(edge, principal, None)
    }

    /// [`Gateway::connect`] with a limit of this edge's own as well (the FIX acceptor's
    /// `max_connections`), checked in the same place as the shared one.
    pub fn connect_limited(
        self: &Arc<Self>,
        edge: Edge,
        principal: Principal,
        edge_limit: Option<usize>,
    ) -> Result<Connection, Refusal> {
        self.connect_from(edge, principal, None, edge_limit)
    }

    /// [`Gateway::connect_limited`] for a client at `ip`, counted against
    /// `[limits] max_connections_per_ip`.
    pub fn connect_from(
        self: &Arc<Self>,
        edge: Edge,
        principal: Principal,
        ip: Option<std::net::IpAddr>,
        edge_limit: Option<usize>,
    ) -> Result<Connection, Refusal> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(Refusal::new(ErrorCode::Unavailable, "server shutting down"));
        }
        if let Some(ip) = ip {
            if let Err(r) = self.limiter.connect_ip(ip) {
                self.metrics.edge(edge).rate_limited();
                return Err(r);
            }
        }
        // Undoes the IP count if anything below refuses the connection.
        let ip_guard = IpCount {
            gateway: self.clone(),
            ip,
        };
        let counters = self.metrics.edge(edge);
        if let Some(limit) = edge_limit {
            if !counters.try_connect(limit.max(1)) {
                return Err(Refusal::new(
                    ErrorCode::Unavailable,
                    format!("connection limit of the {} edge reached", edge.0),
                ));
            }
        } else {
            counters.connected();
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            counters.disconnected();
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                "connection limit reached",
            ));
        };
        let session = self.hub.session();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().insert(
            id,
            Box::new(Registered {
                edge,
                closer: session.closer(),
                identity: principal.identity().into(),
                ip,
                since_ms: tickwire_model::clock::now_nanos() / 1_000_000,
                client_id: None,
            }),
        );
        let shared = self.shared_buckets(&principal);
        Ok(Connection {
            gateway: self.clone(),
            edge,
            counters: self.metrics.edge(edge),
            namespaces: Vec::new(),
            principal,
            session,
            id,
            _permit: permit,
            buckets: Mutex::new(None),
            shared,
            rare: None,
            first_check: AtomicU64::new(0),
            _ip: ip_guard,
        })
    }

    /// Whether `principal` is rate-limited: clients are, the server API is not.
    fn limited(principal: &Principal) -> bool {
        !principal.is_publisher()
    }

    /// The buckets `principal` shares across its connections (users and API keys without the
    /// `publish` scope; anonymous clients have no identity to share).
    fn shared_buckets(&self, principal: &Principal) -> Option<Arc<Mutex<limits::Buckets>>> {
        match principal {
            Principal::User(_) | Principal::ApiKey(_) if Self::limited(principal) => {
                Some(self.limiter.principal(&principal.identity()))
            }
            _ => None,
        }
    }

    /// [`Gateway::check`] for a request without a connection (HTTP publish): the principal's
    /// shared publish limits apply.
    pub fn check_limited(
        &self,
        principal: &Principal,
        request: PublishRequest,
    ) -> Result<Checked, Refusal> {
        if let Some(b) = self.shared_buckets(principal) {
            // A request has no connection of its own: only the shared buckets count.
            let r = self.limiter.publish_shared(
                &b,
                request.channel.namespace(),
                request.data.len() as u64,
            );
            self.limiter.release_principal(&principal.identity(), b);
            if let Err(r) = r {
                self.metrics.edge(Edge("http")).rate_limited();
                return Err(r);
            }
        }
        self.check(principal, request)
    }

    /// An edit or delete over HTTP against `principal`'s shared publish limits (like
    /// [`Gateway::check_limited`]).
    pub fn check_limited_amend(
        &self,
        principal: &Principal,
        channel: &Channel,
    ) -> Result<(), Refusal> {
        if let Some(b) = self.shared_buckets(principal) {
            let r = self.limiter.publish_shared(&b, channel.namespace(), 0);
            self.limiter.release_principal(&principal.identity(), b);
            if let Err(r) = r {
                self.metrics.edge(Edge("http")).rate_limited();
                return Err(r);
            }
        }
        Ok(())
    }

    /// A REST read (history, latest) counted as a command of `principal` (anonymous reads
    /// are limited by the HTTP layer's connection limits, not here).
    pub fn read_command(&self, principal: &Principal) -> Result<(), Refusal> {
        let Some(b) = self.shared_buckets(principal) else {
            return Ok(());
        };
        let r = self.limiter.command(&b);
        self.limiter.release_principal(&principal.identity(), b);
        if r.is_err() {
            self.metrics.edge(Edge("http")).rate_limited();
        }
        r
    }

    /// Stores one checked publication and waits for its acknowledgement (edits, deletes,
    /// read markers: one record at a time, counted as published by `edge`).
    pub async fn store(&self, edge: Edge, checked: Checked) -> Result<Ack, Refusal> {
        let r = self
            .hub
            .publish_checked(vec![checked])
            .await
            .pop()
            .unwrap_or(Err(HubError::ShuttingDown))?;
        self.metrics.edge(edge).published(1);
        Ok(r)
    }

    /// Whether the server takes new work (false while draining, once a drain is announced, or
    /// while its cluster is unreachable).
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why the server does not take new work now, if it does not.
    pub fn not_ready(&self) -> Option<String> {
        if !self.ready.load(Ordering::Acquire) || self.draining.load(Ordering::Acquire) {
            return Some("draining".into());
        }
        self.hub.unavailable()
    }

    /// Announces a drain: not ready any more, but connections are still accepted and served
    /// until [`Gateway::shutdown`].
    pub fn announce_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Graceful drain: not ready any more, and every live connection is told to go.
    pub fn shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        self.close_all(CloseReason::Shutdown);
    }

    /// The Prometheus text of every counter (hub and edges).
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&self.hub, self)
    }
}

/// The protocol error code that tells a client why the server ended its session (the
/// `code` of a disconnect).
pub fn close_code(reason: &CloseReason) -> ErrorCode {
    match reason {
        CloseReason::SlowConsumer { .. } => ErrorCode::SlowConsumer,
        CloseReason::Shutdown => ErrorCode::Unavailable,
        CloseReason::Kicked(_) => ErrorCode::Forbidden,
        CloseReason::TokenExpired => ErrorCode::TokenExpired,
    }
}

impl From<HubError> for Refusal {
    fn from(e: HubError) -> Refusal {
        Refusal::from_hub(&e)
    }
}
