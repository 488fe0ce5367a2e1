//! Counters exported at `/metrics` in the Prometheus text format. Plain atomics: the set is
//! small and fixed, and a metrics crate would cost more than it saves.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use tickwire_hub::Hub;

#[derive(Default)]
pub struct Metrics {
    pub ws_connections: AtomicU64,
    pub sse_connections: AtomicU64,
    pub delivered: AtomicU64,
    pub http_publish_requests: AtomicU64,
    pub rejected: AtomicU64,
    pub slow_consumer_disconnects: AtomicU64,
}

impl Metrics {
    /// Counts a server-side close of a subscriber connection by its reason. Every edge
    /// (WebSocket, SSE, MQTT) calls this where it ends a session, so the slow-consumer counter
    /// means the same thing for all of them.
    pub fn note_close(&self, reason: &tickwire_hub::CloseReason) {
        if matches!(reason, tickwire_hub::CloseReason::SlowConsumer { .. }) {
            self.slow_consumer_disconnects
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self, hub: &Hub, live_sessions: usize) -> String {
        let s = hub.stats();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut m = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        m(
            "tickwire_published_total",
            "counter",
            "Publications appended to the log.",
            s.published,
        );
        m(
            "tickwire_delivered_total",
            "counter",
            "Messages written to WebSocket and SSE clients.",
            g(&self.delivered),
        );
        m(
            "tickwire_http_publish_requests_total",
            "counter",
            "HTTP publish requests.",
            g(&self.http_publish_requests),
        );
        m(
            "tickwire_rejected_total",
            "counter",
            "Refused commands and publications.",
            g(&self.rejected),
        );
        m(
            "tickwire_slow_consumer_disconnects_total",
            "counter",
            "Clients disconnected for falling too far behind.",
            g(&self.slow_consumer_disconnects),
        );
        m(
            "tickwire_ws_connections",
            "gauge",
            "Open WebSocket connections.",
            g(&self.ws_connections),
        );
        m(
            "tickwire_sse_connections",
            "gauge",
            "Open SSE connections.",
            g(&self.sse_connections),
        );
        m(
            "tickwire_sessions",
            "gauge",
            "Live delivery sessions.",
            live_sessions as u64,
        );
        m(
            "tickwire_channels",
            "gauge",
            "Channels known to the hub.",
            s.channels as u64,
        );
        out
    }
}
