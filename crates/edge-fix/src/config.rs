//! The `[fix]` section of the server configuration.

use serde::{Deserialize, Serialize};

use crate::FixEdgeError;

/// FIX 4.4 market data: upstream sessions we log on to, and a listener for downstream clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FixConfig {
    /// Sessions to providers (`[[fix.initiators]]`).
    pub initiators: Vec<InitiatorConfig>,
    /// The FIX listener for downstream clients (`[fix.acceptor]`); absent: no listener.
    pub acceptor: Option<AcceptorConfig>,
    /// Cluster mode: how long an initiator's lease outlives its holder, ms. Another node takes
    /// a dead node's sessions over after at most this long; a holder that cannot renew drops
    /// its connection after half of it. Fixed when the cluster's lease bucket is first made.
    pub lease_ttl_ms: u64,
}

impl Default for FixConfig {
    fn default() -> Self {
        FixConfig {
            initiators: Vec::new(),
            acceptor: None,
            lease_ttl_ms: 6000,
        }
    }
}

/// One upstream FIX session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InitiatorConfig {
    /// Name in logs and in `/v1/fix/sessions`; defaults to `SENDER-TARGET`.
    pub name: Option<String>,
    pub host: String,
    pub port: u16,
    /// Our SenderCompID (49).
    pub sender_comp_id: String,
    /// The provider's CompID, our TargetCompID (56).
    pub target_comp_id: String,
    /// HeartBtInt (108), seconds.
    pub heartbeat: u64,
    /// Instruments to subscribe; each becomes `quotes.<SYM>`, `trades.<SYM>`, `book.<SYM>`.
    pub symbols: Vec<String>,
    /// MarketDepth (264): 0 full book, 1 top of book, N best N levels.
    pub depth: u32,
    /// Send ResetSeqNumFlag=Y on every Logon (both sides restart at 1).
    pub reset_on_logon: bool,
    /// First reconnect delay, ms; doubles after each failure up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// fsync the sequence-number file on every change (survives power loss, costs a disk flush
    /// per read batch).
    pub fsync_seqnums: bool,
    /// Username (553) sent in our Logon, if the provider wants one.
    pub username: Option<String>,
    /// Password (554) sent in our Logon, if the provider wants one.
    pub password: Option<String>,
    /// Connect over TLS, verifying the provider's certificate.
    pub tls: bool,
    /// PEM CA certificates that may sign the provider's certificate (with `tls`); absent: the
    /// operating system's trust store. Read at start.
    pub ca_file: Option<std::path::PathBuf>,
    /// The name the provider's certificate must carry (a DNS name or an IP address; with
    /// `tls`); absent: `host`.
    pub server_name: Option<String>,
}

impl Default for InitiatorConfig {
    fn default() -> Self {
        InitiatorConfig {
            name: None,
            host: "127.0.0.1".into(),
            port: 0,
            sender_comp_id: String::new(),
            target_comp_id: String::new(),
            heartbeat: 30,
            symbols: Vec::new(),
            depth: 1,
            reset_on_logon: false,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            fsync_seqnums: true,
            username: None,
            password: None,
            tls: false,
            ca_file: None,
            server_name: None,
        }
    }
}

impl InitiatorConfig {
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.sender_comp_id, self.target_comp_id))
    }

    /// The name the provider's certificate is checked against.
    pub fn tls_server_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.host)
    }
}

/// The FIX listener for downstream clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcceptorConfig {
    /// Listen address, e.g. `0.0.0.0:9878`.
    pub listen: String,
    /// Our CompID: the TargetCompID (56) clients must send.
    pub sender_comp_id: String,
    /// SenderCompIDs allowed to log on; `"*"` allows any.
    pub allowed_comp_ids: Vec<String>,
    /// State namespace whose channels are served: `<namespace>.<Symbol>`.
    pub namespace: String,
    /// Concurrent FIX connections.
    pub max_connections: usize,
    /// A client that does not take a write within this long is disconnected, ms.
    pub write_timeout_ms: u64,
    /// fsync the per-client sequence-number files on every change. Off by default: they still
    /// survive a process crash (atomic rename); market data is never resent anyway.
    pub fsync_seqnums: bool,
    /// CompID → the identity it must log on as (`user:42`, `key:desk`): a CompID cannot be
    /// used with another principal's credential. CompIDs not listed may log on as anyone
    /// whose credential is valid.
    pub bind: std::collections::BTreeMap<String, String>,
    /// Speak FIX over TLS only, presenting the `[tls]` certificate.
    pub tls: bool,
}

impl Default for AcceptorConfig {
    fn default() -> Self {
        AcceptorConfig {
            listen: "127.0.0.1:9878".into(),
            sender_comp_id: "TICKWIRE".into(),
            allowed_comp_ids: Vec::new(),
            namespace: "quotes".into(),
            max_connections: 10_000,
            write_timeout_ms: 10_000,
            fsync_seqnums: false,
            bind: std::collections::BTreeMap::new(),
            tls: false,
        }
    }
}

impl AcceptorConfig {
    pub fn allows(&self, comp_id: &str) -> bool {
        self.allowed_comp_ids
            .iter()
            .any(|c| c == "*" || c == comp_id)
    }
}

fn comp_id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl FixConfig {
    /// Refuses what would only fail later, at connect time.
    pub fn validate(&self) -> Result<(), FixEdgeError> {
        let bad = |m: String| Err(FixEdgeError::Config(format!("fix: {m}")));
        if self.lease_ttl_ms < 300 {
            return bad(format!(
                "lease_ttl_ms = {}: at least 300 (renewals are a NATS round trip)",
                self.lease_ttl_ms
            ));
        }
        let mut names = std::collections::HashSet::new();
        for i in &self.initiators {
            let n = i.name();
            if !comp_id_ok(&i.sender_comp_id) || !comp_id_ok(&i.target_comp_id) {
                return bad(format!(
                    "initiator {n}: sender_comp_id and target_comp_id must be 1-64 letters, digits, `_-.`"
                ));
            }
            if i.port == 0 || i.host.is_empty() {
                return bad(format!("initiator {n}: host and port are required"));
            }
            if i.symbols.is_empty() {
                return bad(format!("initiator {n}: symbols is empty"));
            }
            for s in &i.symbols {
                if tickwire_model::Channel::parse(&tickwire_feed::names::quotes(s)).is_err() {
                    return bad(format!(
                        "initiator {n}: symbol {s:?} cannot be a channel name"
                    ));
                }
            }
            if !i.tls && (i.ca_file.is_some() || i.server_name.is_some()) {
                // Without this, a forgotten `tls = true` would send the Logon's password in
                // the clear to a provider the operator meant to verify.
                return bad(format!(
                    "initiator {n}: ca_file and server_name need tls = true"
                ));
            }
            if i.tls {
                if let Err(e) = tickwire_tls::server_name(i.tls_server_name()) {
                    return bad(format!("initiator {n}: server_name: {e}"));
                }
            }
            if !names.insert(n.clone()) {
                return bad(format!("two initiators are named {n}"));
            }
        }
        if let Some(a) = &self.acceptor {
            if !comp_id_ok(&a.sender_comp_id) {
                return bad("acceptor: sender_comp_id must be 1-64 letters, digits, `_-.`".into());
            }
            if a.allowed_comp_ids.is_empty() {
                return bad(
                    "acceptor: allowed_comp_ids is empty (use [\"*\"] to allow any)".into(),
                );
            }
            if a.listen.parse::<std::net::SocketAddr>().is_err() {
                return bad(format!("acceptor: listen {:?} is not host:port", a.listen));
            }
        }
        Ok(())
    }
}
