//! The live-connection registry: every open connection, whatever its edge, registered by
//! [`Gateway::connect_from`] and removed when its [`Connection`](crate::Connection) drops. It
//! closes them all at shutdown, lists them for operators (`/v1/connections`), kicks one, and
//! counts subscriptions for the metrics.

use std::collections::HashMap;

use tickwire_hub::{CloseReason, SessionCloser};

use crate::{Edge, Gateway};

#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) edge: Edge,
    pub(crate) closer: SessionCloser,
    /// [`Principal::identity`], updated when a connection presents its credential late.
    pub(crate) identity: std::sync::Arc<str>,
    pub(crate) ip: Option<std::net::IpAddr>,
    /// Unix milliseconds.
    pub(crate) since_ms: u64,
    /// The client's own name for itself where its protocol has one (MQTT client id, FIX
    /// SenderCompID).
    pub(crate) client_id: Option<std::sync::Arc<str>>,
}

/// One live connection as the operator endpoints list it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionInfo {
    pub id: u64,
    pub edge: &'static str,
    pub identity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
    /// Unix milliseconds.
    pub connected_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Channels subscribed (explicitly or through a pattern).
    pub subscriptions: u64,
}
impl Gateway {
    /// Closes every live connection with `reason`.
    pub fn close_all(&self, reason: CloseReason) {
        for r in self.sessions.lock().values() {
            r.closer.close(reason.clone());
        }
    }

    /// Live connections, all edges.
    pub fn live_connections(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Live connections per edge, for metrics.
    pub fn connections_by_edge(&self) -> Vec<(Edge, usize)> {
        let mut m: HashMap<Edge, usize> = HashMap::new();
        for r in self.sessions.lock().values() {
            *m.entry(r.edge).or_default() += 1;
        }
        let mut v: Vec<(Edge, usize)> = m.into_iter().collect();
        v.sort();
        v
    }

    /// Every live connection, oldest first; only those of `edge` if given.
    pub fn connections(&self, edge: Option<&str>) -> Vec<ConnectionInfo> {
        let live: Vec<(u64, Registered)> = self
            .sessions
            .lock()
            .iter()
            .filter(|(_, r)| edge.is_none_or(|e| e == r.edge.0))
            .map(|(id, r)| (*id, Registered::clone(r)))
            .collect();
        let mut v: Vec<ConnectionInfo> = live
            .into_iter()
            .map(|(id, r)| {
                let mut subscriptions = 0;
                r.closer.each_subscription(|_| subscriptions += 1);
                ConnectionInfo {
                    id,
                    edge: r.edge.0,
                    identity: r.identity.to_string(),
                    ip: r.ip,
                    connected_at: r.since_ms,
                    client_id: r.client_id.as_deref().map(str::to_owned),
                    subscriptions,
                }
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Closes connection `id` as an operator asked (the client gets a disconnect with its
    /// resume points, as for any server-side close); false if no such connection is open.
    pub fn kick(&self, id: u64) -> bool {
        let closer = self.sessions.lock().get(&id).map(|r| r.closer.clone());
        match closer {
            Some(c) => {
                c.close(CloseReason::Kicked("closed by an operator".into()));
                true
            }
            None => false,
        }
    }

    /// Subscribed channels over the live connections, per edge and per namespace.
    pub fn subscriptions(&self) -> (HashMap<&'static str, u64>, HashMap<String, u64>) {
        // Taken out first, so connects and disconnects do not wait for the whole count.
        let live: Vec<(Edge, SessionCloser)> = self
            .sessions
            .lock()
            .values()
            .map(|r| (r.edge, r.closer.clone()))
            .collect();
        let (mut by_edge, mut by_ns) = (HashMap::new(), HashMap::<String, u64>::new());
        for (edge, closer) in &live {
            let mut n = 0;
            closer.each_subscription(|ns| {
                n += 1;
                match by_ns.get_mut(ns) {
                    Some(c) => *c += 1,
                    None => {
                        by_ns.insert(ns.to_owned(), 1);
                    }
                }
            });
            *by_edge.entry(edge.0).or_default() += n;
        }
        (by_edge, by_ns)
    }
}
