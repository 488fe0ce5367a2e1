//! `[cluster]`: where the NATS servers are and how each namespace's JetStream stream is kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ClusterError;

/// `[cluster]` of the server configuration. Its presence turns cluster mode on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:4222`); the client fails over between them.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster (logs, FIX lease holder). Empty: the host name.
    pub node: String,
    /// JetStream replicas of every stream and bucket (1, 3 or 5). With 3, an acknowledged
    /// publish is stored on two of three NATS servers.
    pub replicas: usize,
    /// Prefix of every subject, stream and bucket, so several Tickwire clusters can share one
    /// NATS cluster.
    pub prefix: String,
    /// JetStream's duplicate window for `msg_id`s, seconds (see docs/cluster.md).
    pub duplicate_window_secs: u64,
    /// Namespaces each node keeps in its own embedded log: derived data every node computes
    /// from the shared streams itself (candles, books).
    pub local: Vec<String>,
    /// How long a publish waits for JetStream's acknowledgement before it fails, ms.
    pub ack_timeout_ms: u64,
    /// How long `serve` waits for the NATS servers at start, seconds.
    pub connect_timeout_secs: u64,
    /// Recent messages of each namespace a node keeps in memory from its tail (reads of older
    /// ones go to JetStream).
    pub tail_cache: usize,
    /// How long after its JetStream timestamp a message may still reach a node's tail
    /// (replication, the tail's pull, clocks of different NATS servers), ms. Projections that
    /// merge several streams by time (candles: quotes and trades) wait this long on a quiet
    /// one, so every node applies the same messages in the same order.
    pub visibility_lag_ms: u64,
    /// How long a node that stopped renewing its liveness (a kill -9, a lost NATS link) still
    /// counts its users present, seconds; then another node sweeps them out (presence).
    pub presence_ttl_secs: u64,
    /// NATS credentials, when the servers require them.
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Per-namespace overrides.
    pub namespaces: BTreeMap<String, NamespaceCluster>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats: vec!["nats://127.0.0.1:4222".into()],
            node: String::new(),
            replicas: 1,
            prefix: "tw".into(),
            duplicate_window_secs: 120,
            local: vec!["candles".into(), "book".into()],
            ack_timeout_ms: 5000,
            connect_timeout_secs: 30,
            tail_cache: 65536,
            visibility_lag_ms: 500,
            presence_ttl_secs: 10,
            user: None,
            password: None,
            token: None,
            namespaces: BTreeMap::new(),
        }
    }
}

/// `[cluster.namespaces.<name>]`: how one namespace's stream is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceCluster {
    /// Replicas of this namespace's stream (default: `[cluster] replicas`).
    pub replicas: Option<usize>,
    /// `file` (default) or `memory`: a memory stream never writes to disk, so its copies
    /// survive a server crash only on the other replicas.
    pub storage: Option<Storage>,
    /// `all` (default): every message, as the embedded log keeps them (projections read them);
    /// `latest`: only the newest message per channel (JetStream `max_msgs_per_subject = 1`),
    /// for state namespaces nothing is derived from.
    pub keep: Option<Keep>,
}

/// Where a stream's messages are stored on each NATS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    File,
    Memory,
}

/// What a namespace's stream keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    All,
    Latest,
}

impl ClusterConfig {
    /// Checks the settings; an error names the key.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |m: String| Err(ClusterError::Config(m));
        if self.nats.is_empty() {
            return bad("[cluster] nats: at least one NATS server URL".into());
        }
        let replicas_ok = |r: usize| (1..=5).contains(&r);
        if !replicas_ok(self.replicas) {
            return bad(format!(
                "[cluster] replicas = {}: JetStream keeps 1 to 5 replicas (1 or 3 usually)",
                self.replicas
            ));
        }
        if self.prefix.is_empty()
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad(format!(
                "[cluster] prefix {:?}: use letters, digits, `_` or `-`",
                self.prefix
            ));
        }
        for (name, ns) in &self.namespaces {
            if let Some(r) = ns.replicas {
                if !replicas_ok(r) {
                    return bad(format!(
                        "[cluster.namespaces.{name}] replicas = {r}: 1 to 5"
                    ));
                }
            }
        }
        if self.presence_ttl_secs == 0 {
            return bad("[cluster] presence_ttl_secs must be at least 1".into());
        }
        if self.tail_cache == 0 {
            return bad("[cluster] tail_cache must be at least 1".into());
        }
        Ok(())
    }

    /// The settings of one namespace's stream.
    pub fn namespace(&self, name: &str) -> NamespaceCluster {
        self.namespaces.get(name).cloned().unwrap_or_default()
    }

    /// Whether a namespace stays on each node's own log.
    pub fn is_local(&self, name: &str) -> bool {
        self.local.iter().any(|l| l == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(ClusterConfig::default().validate().is_ok());
        let c = ClusterConfig {
            replicas: 7,
            ..ClusterConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("replicas"));
        let c = ClusterConfig {
            prefix: "a.b".into(),
            ..ClusterConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("prefix"));
        let c = ClusterConfig {
            nats: vec![],
            ..ClusterConfig::default()
        };
        assert!(c.validate().is_err());
        assert!(ClusterConfig::default().is_local("candles"));
        assert!(!ClusterConfig::default().is_local("chat"));
    }
}
