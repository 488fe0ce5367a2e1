//! FIX 4.4 market data over TCP or TLS, around the I/O-free engine in `tickwire-fix`:
//! initiators ingest quotes from providers, the acceptor distributes the hub's quotes to
//! downstream FIX clients through the gateway. See docs/fix.md.

mod acceptor;
pub mod config;
mod initiator;
mod lease;
pub mod sim;
mod transport;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{extract::State, routing::get, Json, Router};
use parking_lot::Mutex;
use serde::Serialize;
use tickwire_gateway::{Edge, Gateway};
use tickwire_model::DataDir;
use tickwire_stream::kv::KvProvider;
use tokio_util::sync::CancellationToken;

pub use config::{AcceptorConfig, FixConfig, InitiatorConfig};

/// The acceptor's edge name (metrics and logs).
pub const FIX: Edge = Edge("fix");

/// Why the FIX edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum FixEdgeError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr} (fix acceptor): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("fix: I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Hub(#[from] tickwire_hub::HubError),
    #[error("fix: {0}")]
    Tls(#[from] tickwire_tls::TlsError),
}

/// What `/v1/fix/sessions` shows of one session.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionStatus {
    pub name: String,
    /// `initiator` or `acceptor`.
    pub role: &'static str,
    pub sender_comp_id: String,
    pub target_comp_id: String,
    pub peer: String,
    /// `connecting`, `logon_sent`, `awaiting_logon`, `active`, `disconnected`, `backoff`;
    /// in cluster mode also `standby` (another node holds the session's lease).
    pub state: &'static str,
    pub next_sender_seq: u64,
    pub next_target_seq: u64,
    pub logons: u64,
    pub disconnects: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub gaps: u64,
    pub resend_requests_answered: u64,
    pub quotes_published: u64,
    pub subscriptions: usize,
    pub rejected: Vec<String>,
    pub last_error: Option<String>,
}

/// Every FIX session, by name, for the status endpoint.
#[derive(Clone, Default)]
pub struct FixRegistry {
    sessions: Arc<Mutex<BTreeMap<String, SessionStatus>>>,
}

impl FixRegistry {
    /// Called at most once per connection-loop turn (the loops count messages locally and
    /// skip the call when nothing shown changed), and the name is copied only the first time
    /// a session is seen (`entry` would allocate the key on every call).
    pub(crate) fn update(&self, name: &str, f: impl FnOnce(&mut SessionStatus)) {
        let mut m = self.sessions.lock();
        if let Some(s) = m.get_mut(name) {
            return f(s);
        }
        let s = m.entry(name.to_string()).or_insert_with(|| SessionStatus {
            name: name.to_string(),
            ..SessionStatus::default()
        });
        f(s);
    }

    pub fn snapshot(&self) -> Vec<SessionStatus> {
        self.sessions.lock().values().cloned().collect()
    }
}

/// The running FIX side of the server.
pub struct FixService {
    pub registry: FixRegistry,
    /// The acceptor's bound address, if one runs.
    pub acceptor_addr: Option<std::net::SocketAddr>,
    cancel: CancellationToken,
    /// For the admin check of `/v1/fix/sessions` (peer addresses, CompIDs).
    gateway: Arc<Gateway>,
}

impl FixService {
    /// FIX families for `/metrics` (Prometheus text), one series per session.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let sessions = self.registry.snapshot();
        let label = |s: &SessionStatus| {
            format!("session=\"{}\",role=\"{}\"", escape_label(&s.name), s.role)
        };
        let _ = writeln!(
            out,
            "# HELP tickwire_fix_session_state The state of each FIX session (1 for its current state).\n# TYPE tickwire_fix_session_state gauge"
        );
        for s in &sessions {
            let _ = writeln!(
                out,
                "tickwire_fix_session_state{{{},state=\"{}\"}} 1",
                label(s),
                s.state
            );
        }
        let mut family = |name: &str, kind: &str, help: &str, f: fn(&SessionStatus) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in &sessions {
                let _ = writeln!(out, "{name}{{{}}} {}", label(s), f(s));
            }
        };
        family(
            "tickwire_fix_session_active",
            "gauge",
            "1 while the FIX session is logged on.",
            |s| u64::from(s.state == "active"),
        );
        family(
            "tickwire_fix_next_sender_seq",
            "gauge",
            "The next MsgSeqNum this side sends.",
            |s| s.next_sender_seq,
        );
        family(
            "tickwire_fix_next_target_seq",
            "gauge",
            "The next MsgSeqNum expected from the peer.",
            |s| s.next_target_seq,
        );
        family(
            "tickwire_fix_logons_total",
            "counter",
            "Completed logons.",
            |s| s.logons,
        );
        family(
            "tickwire_fix_disconnects_total",
            "counter",
            "Connections lost or closed.",
            |s| s.disconnects,
        );
        family(
            "tickwire_fix_messages_in_total",
            "counter",
            "Messages received.",
            |s| s.messages_in,
        );
        family(
            "tickwire_fix_messages_out_total",
            "counter",
            "Messages sent.",
            |s| s.messages_out,
        );
        family(
            "tickwire_fix_gaps_total",
            "counter",
            "Sequence gaps detected (each answered with a ResendRequest).",
            |s| s.gaps,
        );
        family(
            "tickwire_fix_quotes_published_total",
            "counter",
            "Quotes an initiator published into the hub.",
            |s| s.quotes_published,
        );
    }

    /// Stops initiators (they log out) and the acceptor.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for FixService {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Where the sequence-number file of a session lives.
pub(crate) fn store_path(data: &DataDir, role: &str, sender: &str, target: &str) -> PathBuf {
    data.fix().join(role).join(format!("{sender}-{target}.seq"))
}

pub(crate) fn open_store(
    path: &Path,
    fsync: bool,
) -> Result<tickwire_fix::FileSeqStore, tickwire_fix::Error> {
    if let Some(dir) = path.parent() {
        tickwire_model::durable_dir::create_dir_durable(dir).map_err(|source| {
            tickwire_fix::Error::Io {
                path: dir.to_path_buf(),
                context: "creating the FIX store directory",
                source,
            }
        })?;
    }
    Ok(tickwire_fix::FileSeqStore::open(path)?.with_fsync(fsync))
}

/// Starts the configured initiators and the acceptor; `None` when nothing is configured.
///
/// With `cluster` (cluster mode), each initiator runs only while this node holds its lease in
/// the cluster's KV, and its sequence numbers live there too, so the session moves to another
/// node configured with it when this one dies.
///
/// `tls` handshakes the acceptor's connections (required when `[fix.acceptor] tls = true`).
pub async fn start(
    gateway: Arc<Gateway>,
    cfg: &FixConfig,
    data: &DataDir,
    cluster: Option<Arc<dyn KvProvider>>,
    tls: Option<tickwire_tls::Acceptor>,
) -> Result<Option<Arc<FixService>>, FixEdgeError> {
    if cfg.initiators.is_empty() && cfg.acceptor.is_none() {
        return Ok(None);
    }
    cfg.validate()?;
    let registry = FixRegistry::default();
    let cancel = CancellationToken::new();
    let leases = match (&cluster, cfg.initiators.is_empty()) {
        (Some(kv), false) => {
            let kv = kv.clone();
            let ttl = std::time::Duration::from_millis(cfg.lease_ttl_ms);
            Some(
                tokio::task::spawn_blocking(move || lease::LeaseBuckets::open(&*kv, ttl))
                    .await
                    .map_err(|e| FixEdgeError::Config(format!("fix: {e}")))??,
            )
        }
        _ => None,
    };
    for ic in &cfg.initiators {
        initiator::spawn(
            gateway.hub().clone(),
            ic.clone(),
            data.clone(),
            leases.clone(),
            registry.clone(),
            cancel.clone(),
        )?;
    }
    let acceptor_addr = match &cfg.acceptor {
        Some(ac) => {
            let tls = match (ac.tls, tls) {
                (true, Some(t)) => Some(t),
                (true, None) => {
                    return Err(FixEdgeError::Config(
                        "fix acceptor: tls = true needs [tls] cert_file and key_file".into(),
                    ))
                }
                (false, _) => None,
            };
            Some(
                acceptor::spawn(
                    gateway.clone(),
                    ac.clone(),
                    data.clone(),
                    registry.clone(),
                    cancel.clone(),
                    tls,
                )
                .await?,
            )
        }
        None => None,
    };
    Ok(Some(Arc::new(FixService {
        registry,
        acceptor_addr,
        cancel,
        gateway,
    })))
}

/// `GET /v1/fix/sessions`.
pub fn routes(svc: Arc<FixService>) -> Router {
    Router::new()
        .route("/v1/fix/sessions", get(sessions))
        .with_state(svc)
}

async fn sessions(
    State(svc): State<Arc<FixService>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // Peer addresses and CompIDs are operator data: the admin scope, as for /metrics.
    let secret = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let allowed = svc
        .gateway
        .authenticate(&tickwire_gateway::Credentials::new(secret))
        .and_then(|p| svc.gateway.require_admin(&p));
    if let Err(r) = allowed {
        let status = axum::http::StatusCode::from_u16(r.http_status())
            .unwrap_or(axum::http::StatusCode::FORBIDDEN);
        let body = serde_json::json!({
            "type": format!("/problems/{}", r.code.as_str()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(), "code": r.code.as_str(), "detail": r.reason,
        });
        return (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
    }
    let mut sessions = svc.registry.snapshot();
    // A failed publish or sequence-file write names a file under the data directory; the
    // server log has the whole text.
    for s in &mut sessions {
        if let Some(e) = &mut s.last_error {
            *e = tickwire_model::layout::redact_paths(e).into_owned();
        }
    }
    Json(serde_json::json!({
        "acceptor": svc.acceptor_addr.map(|a| a.to_string()),
        "sessions": sessions,
    }))
    .into_response()
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
