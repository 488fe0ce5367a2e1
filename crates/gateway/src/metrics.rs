//! Counters exported at `/metrics` in the Prometheus text format. Plain atomics, striped per
//! thread where every delivering connection adds to them (`Striped`): the set is small, and a
//! metrics crate would cost more than it saves. Every edge counts through the
//! same [`EdgeCounters`], so a number means the same thing whichever edge it comes from.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::RwLock;
use tickwire_hub::{
    metrics::{Histogram, Striped},
    CloseReason, Hub,
};

use crate::{Edge, Gateway};

/// One edge's counters.
#[derive(Debug, Default)]
pub struct EdgeCounters {
    connections: AtomicU64,
    /// Striped, as `delivered_bytes` and `lag`: added to once per batch a connection takes.
    delivered: Striped,
    /// Payload bytes (each message's `data`) of what `delivered` counts: the same measure on
    /// every edge, without its framing.
    delivered_bytes: Striped,
    published: AtomicU64,
    rejected: AtomicU64,
    rate_limited: AtomicU64,
    /// Open connections parked while idle (`crate::park`).
    parked: AtomicU64,
    /// Server-side delivery lag (see `Connection::drain`).
    pub(crate) lag: Histogram,
}

impl EdgeCounters {
    pub fn connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection unless `limit` are open already; whether it was counted.
    pub fn try_connect(&self, limit: usize) -> bool {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (usize::try_from(n).unwrap_or(usize::MAX) < limit).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn disconnected(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection of this edge was parked (`true`) or is served again (`false`).
    pub fn set_parked(&self, parked: bool) {
        if parked {
            self.parked.fetch_add(1, Ordering::Relaxed);
        } else {
            self.parked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn delivered(&self, n: u64) {
        self.delivered.add(n);
    }

    pub fn delivered_bytes(&self, n: u64) {
        self.delivered_bytes.add(n);
    }

    pub fn published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
    }

    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A publication or command refused by a rate limit (also counted as rejected).
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one namespace counts on the delivery side (the hub counts its publishes).
#[derive(Debug, Default)]
pub struct NamespaceCounters {
    /// Messages handed to a client connection, every edge (striped: see [`Striped`]).
    delivered: Striped,
    /// Their payload bytes.
    delivered_bytes: Striped,
}

impl NamespaceCounters {
    pub fn delivered(&self, messages: u64, bytes: u64) {
        self.delivered.add(messages);
        self.delivered_bytes.add(bytes);
    }
}

/// Renders more metric families (Prometheus text) at the end of `/metrics`: how parts the
/// gateway does not know (projections, the log) report without a dependency on them.
pub type MetricsSource = Box<dyn Fn(&mut String) + Send + Sync>;

/// Every counter the gateway keeps.
#[derive(Default)]
pub struct Metrics {
    edges: RwLock<BTreeMap<&'static str, Arc<EdgeCounters>>>,
    /// Keyed by namespace name; only namespaces the hub stores (configured ones) deliver, so
    /// the map stays as small as the configuration.
    namespaces: RwLock<BTreeMap<Box<str>, Arc<NamespaceCounters>>>,
    sources: RwLock<Vec<MetricsSource>>,
    /// HTTP publish requests (each may carry a batch).
    pub http_publish_requests: AtomicU64,
    slow_consumer_disconnects: AtomicU64,
    write_timeout_disconnects: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("edges", &self.edges)
            .field("sources", &self.sources.read().len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Adds families rendered after the gateway's own.
    pub fn add_source(&self, source: MetricsSource) {
        self.sources.write().push(source);
    }

    /// The counters of `edge`, created on first use.
    pub fn edge(&self, edge: Edge) -> Arc<EdgeCounters> {
        if let Some(c) = self.edges.read().get(edge.0) {
            return c.clone();
        }
        self.edges.write().entry(edge.0).or_default().clone()
    }

    /// The delivery counters of namespace `ns`, created on first use. Connections keep what
    /// they looked up, so this runs once per connection and namespace.
    pub fn namespace(&self, ns: &str) -> Arc<NamespaceCounters> {
        if let Some(c) = self.namespaces.read().get(ns) {
            return c.clone();
        }
        self.namespaces
            .write()
            .entry(ns.into())
            .or_default()
            .clone()
    }

    /// Counts a server-side close of a connection by its reason, the same for every edge.
    pub fn note_close(&self, reason: &CloseReason) {
        if matches!(reason, CloseReason::SlowConsumer { .. }) {
            self.slow_consumer_disconnects
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a connection dropped because its client took no data for the write timeout
    /// (a vanished client, or one reading too slowly for its socket to make progress).
    pub fn note_write_timeout(&self) {
        self.write_timeout_disconnects
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, hub: &Hub, gateway: &Gateway) -> String {
        let s = hub.stats();
        let edges: Vec<(&'static str, Arc<EdgeCounters>)> = self
            .edges
            .read()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let sum = |f: fn(&EdgeCounters) -> u64| -> u64 { edges.iter().map(|(_, c)| f(c)).sum() };
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "tickwire_published_total",
            "counter",
            "Publications appended to the log.",
            s.published,
        );
        one(
            "tickwire_delivered_total",
            "counter",
            "Messages written to clients, every edge.",
            sum(|c| c.delivered.get()),
        );
        one(
            "tickwire_http_publish_requests_total",
            "counter",
            "HTTP publish requests.",
            self.http_publish_requests.load(Ordering::Relaxed),
        );
        one(
            "tickwire_rejected_total",
            "counter",
            "Refused commands and publications, every edge.",
            sum(|c| c.rejected.load(Ordering::Relaxed)),
        );
        one(
            "tickwire_slow_consumer_disconnects_total",
            "counter",
            "Clients disconnected for falling too far behind.",
            self.slow_consumer_disconnects.load(Ordering::Relaxed),
        );
        one(
            "tickwire_write_timeout_disconnects_total",
            "counter",
            "Clients disconnected for taking no data for write_timeout_ms.",
            self.write_timeout_disconnects.load(Ordering::Relaxed),
        );
        // One edge's value of one of its counters (0 before the edge's first connection).
        let of = |edge: &str, f: fn(&EdgeCounters) -> u64| {
            edges
                .iter()
                .find(|(e, _)| *e == edge)
                .map_or(0, |(_, c)| f(c))
        };
        let gauge = |edge: &str| of(edge, |c| c.connections.load(Ordering::Relaxed));
        one(
            "tickwire_ws_connections",
            "gauge",
            "Open WebSocket connections.",
            gauge("websocket"),
        );
        one(
            "tickwire_ws_parked_connections",
            "gauge",
            "Open WebSocket connections parked while idle (holding neither a serving loop nor WebSocket buffers).",
            of("websocket", |c| c.parked.load(Ordering::Relaxed)),
        );
        one(
            "tickwire_mqtt_parked_connections",
            "gauge",
            "Open MQTT connections parked while idle (holding no serving loop).",
            of("mqtt", |c| c.parked.load(Ordering::Relaxed)),
        );
        one(
            "tickwire_sse_connections",
            "gauge",
            "Open SSE connections.",
            gauge("sse"),
        );
        one(
            "tickwire_sessions",
            "gauge",
            "Live delivery sessions.",
            gateway.live_connections() as u64,
        );
        one(
            "tickwire_channels",
            "gauge",
            "Channels known to the hub.",
            s.channels as u64,
        );
        let mut labelled = |name: &str, kind: &str, help: &str, f: fn(&EdgeCounters) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (edge, c) in &edges {
                let _ = writeln!(out, "{name}{{edge=\"{edge}\"}} {}", f(c));
            }
        };
        labelled(
            "tickwire_edge_connections",
            "gauge",
            "Open connections per edge.",
            |c| c.connections.load(Ordering::Relaxed),
        );
        labelled(
            "tickwire_edge_delivered_total",
            "counter",
            "Messages written to clients per edge.",
            |c| c.delivered.get(),
        );
        labelled(
            "tickwire_edge_delivered_bytes_total",
            "counter",
            "Payload bytes of the messages written to clients per edge (without framing).",
            |c| c.delivered_bytes.get(),
        );
        labelled(
            "tickwire_edge_published_total",
            "counter",
            "Publications acknowledged per edge.",
            |c| c.published.load(Ordering::Relaxed),
        );
        labelled(
            "tickwire_edge_rejected_total",
            "counter",
            "Refused commands and publications per edge.",
            |c| c.rejected.load(Ordering::Relaxed),
        );
        labelled(
            "tickwire_edge_rate_limited_total",
            "counter",
            "Publications and commands refused by a rate limit, per edge.",
            |c| c.rate_limited.load(Ordering::Relaxed),
        );
        // Subscriptions are counted at scrape time from the live sessions, so no subscribe,
        // unsubscribe or disconnect path (pattern attaches included) can leave a gauge wrong.
        let (by_edge, by_namespace) = gateway.subscriptions();
        let _ = writeln!(
            out,
            "# HELP tickwire_edge_subscriptions Channels subscribed per edge (explicitly or through a pattern), over its open connections.\n# TYPE tickwire_edge_subscriptions gauge"
        );
        for (edge, _) in &edges {
            let n = by_edge.get(edge).copied().unwrap_or(0);
            let _ = writeln!(out, "tickwire_edge_subscriptions{{edge=\"{edge}\"}} {n}");
        }
        let namespaces: Vec<(Box<str>, Arc<NamespaceCounters>)> = self
            .namespaces
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut names: std::collections::BTreeSet<&str> =
            namespaces.iter().map(|(ns, _)| &**ns).collect();
        names.extend(by_namespace.keys().map(String::as_str));
        let _ = writeln!(
            out,
            "# HELP tickwire_namespace_subscriptions Channel subscriptions per namespace over every open connection.\n# TYPE tickwire_namespace_subscriptions gauge"
        );
        for ns in &names {
            let n = by_namespace.get(*ns).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "tickwire_namespace_subscriptions{{namespace=\"{ns}\"}} {n}"
            );
        }
        let mut delivered = |name: &str, help: &str, f: fn(&NamespaceCounters) -> &Striped| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (ns, c) in &namespaces {
                let _ = writeln!(out, "{name}{{namespace=\"{ns}\"}} {}", f(c).get());
            }
        };
        delivered(
            "tickwire_namespace_delivered_total",
            "Messages handed to client connections per namespace, every edge.",
            |c| &c.delivered,
        );
        delivered(
            "tickwire_namespace_delivered_bytes_total",
            "Payload bytes of the messages handed to client connections per namespace.",
            |c| &c.delivered_bytes,
        );
        let _ = writeln!(
            out,
            "# HELP tickwire_delivery_lag_seconds Age of the newest live message in each batch an edge takes for a client (append to hand-over), per edge.\n# TYPE tickwire_delivery_lag_seconds histogram"
        );
        for (edge, c) in &edges {
            c.lag.render(
                &mut out,
                "tickwire_delivery_lag_seconds",
                &format!("edge=\"{edge}\""),
            );
        }
        hub.render_metrics(&mut out);
        // Per namespace: what the log's recovery did at start. A torn tail is what any crash
        // leaves; quarantined bytes and records are corruption, data lost, worth an alert.
        let recovery = hub.recovery_stats();
        let mut per_namespace =
            |name: &str, help: &str, f: fn(&tickwire_hub::RecoveryStats) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (ns, r) in &recovery {
                    let _ = writeln!(out, "{name}{{namespace=\"{ns}\"}} {}", f(r));
                }
            };
        per_namespace(
            "tickwire_log_recovery_truncated_bytes_total",
            "Bytes of torn tails (incomplete last writes) cut off the active log segment at start.",
            |r| r.truncated_bytes,
        );
        per_namespace(
            "tickwire_log_recovery_quarantined_bytes_total",
            "Bytes of corrupt log data with valid records after it, moved to quarantine at start.",
            |r| r.quarantined_bytes,
        );
        per_namespace(
            "tickwire_log_recovery_quarantined_records_total",
            "Records lost to corruption at start (their bytes quarantined, their offsets kept).",
            |r| r.quarantined_records,
        );
        per_namespace(
            "tickwire_log_recovery_indexes_rebuilt_total",
            "Sparse log index files rebuilt at start (a cache: nothing lost).",
            |r| r.indexes_rebuilt,
        );
        for source in self.sources.read().iter() {
            source(&mut out);
        }
        out
    }
}
