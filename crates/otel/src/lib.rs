//! OpenTelemetry traces for Tickwire, off unless `[tracing] otlp_endpoint` is set.
//!
//! An edge asks the [`Tracer`] for a [`Trace`] when a publish arrives (parent taken from a W3C
//! `traceparent`, see [`TraceParent`]), adds child spans with the times it measured or the hub
//! reported, and finishes it; the spans go to a bounded queue that a background task batches
//! into OTLP/HTTP protobuf requests (`<endpoint>/v1/traces`). A full queue drops spans rather
//! than slow a publisher; both outcomes are counted for `/metrics`.

mod config;
mod export;
pub mod otlp;
mod traceparent;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

pub use config::TracingConfig;
pub use traceparent::{hex, TraceParent};

use otlp::{KeyValue, SpanKind, Status, StatusCode};
use tokio::sync::{mpsc, oneshot};

/// What can go wrong setting tracing up (exporting never fails a caller: it logs and counts).
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("[tracing] otlp_endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("[tracing] sample_ratio must be between 0 and 1, not {0}")]
    SampleRatio(f64),
    #[error("[tracing] service_name must not be empty")]
    ServiceName,
}

impl TracingConfig {
    /// What [`Tracer::start`] would refuse, without starting anything (`tickwire
    /// check-config`).
    pub fn validate(&self) -> Result<(), OtelError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(OtelError::SampleRatio(self.sample_ratio));
        }
        if self.service_name.is_empty() {
            return Err(OtelError::ServiceName);
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            export::traces_url(endpoint)?;
        }
        Ok(())
    }
}

/// Spans exported and dropped since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct TraceStats {
    /// Spans the collector accepted (a 2xx answer).
    pub exported: AtomicU64,
    /// Spans lost: the queue was full, or the collector could not be reached or refused them.
    pub dropped: AtomicU64,
}

impl TraceStats {
    /// Appends the Prometheus text of these counters.
    pub fn render(&self, out: &mut String) {
        let e = self.exported.load(Ordering::Relaxed);
        let d = self.dropped.load(Ordering::Relaxed);
        out.push_str("# HELP tickwire_trace_spans_exported_total Trace spans the OTLP collector accepted.\n# TYPE tickwire_trace_spans_exported_total counter\n");
        out.push_str(&format!("tickwire_trace_spans_exported_total {e}\n"));
        out.push_str("# HELP tickwire_trace_spans_dropped_total Trace spans lost: the export queue was full, or the collector was unreachable or refused them.\n# TYPE tickwire_trace_spans_dropped_total counter\n");
        out.push_str(&format!("tickwire_trace_spans_dropped_total {d}\n"));
    }
}

/// Most spans waiting for the exporter. Past this a finished trace is dropped (and counted):
/// a collector that is down or slow must cost the server memory it can bound, never latency.
pub const QUEUE_SPANS: usize = 65_536;

pub(crate) enum Cmd {
    Spans(Vec<otlp::Span>),
    Flush(oneshot::Sender<()>),
}

/// Starts traces and hands finished ones to the exporter task.
pub struct Tracer {
    tx: mpsc::Sender<Cmd>,
    /// A new trace is kept when its random id's low 64 bits fall below this.
    threshold: u64,
    always: bool,
    stats: Arc<TraceStats>,
}

impl Tracer {
    /// The tracer `config` asks for, its exporter task spawned on the current Tokio runtime;
    /// `None` when tracing is off.
    pub fn start(config: &TracingConfig) -> Result<Option<Arc<Tracer>>, OtelError> {
        config.validate()?;
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let stats = Arc::new(TraceStats::default());
        // Bounded in messages (one per trace, five spans each for a publish).
        let (tx, rx) = mpsc::channel(QUEUE_SPANS / 5);
        let exporter = export::Exporter::new(endpoint, &config.service_name, stats.clone())?;
        tokio::spawn(exporter.run(rx));
        tracing::info!(endpoint = %endpoint, service = %config.service_name, ratio = config.sample_ratio, "exporting traces over OTLP/HTTP");
        Ok(Some(Arc::new(Tracer {
            tx,
            threshold: (config.sample_ratio * u64::MAX as f64) as u64,
            always: config.sample_ratio >= 1.0,
            stats,
        })))
    }

    /// The counters this tracer keeps.
    pub fn stats(&self) -> &Arc<TraceStats> {
        &self.stats
    }

    /// Starts a trace for one request at `start` (Unix nanoseconds), under the caller's
    /// `traceparent` header when it has a valid one. `None`: not sampled, record nothing.
    pub fn begin(&self, traceparent: Option<&[u8]>, start: u64) -> Option<Trace> {
        let parent = traceparent.and_then(TraceParent::parse);
        let trace_id = match parent {
            // Parent-based sampling: the caller decided.
            Some(p) if !p.sampled => return None,
            Some(p) => p.trace_id,
            None => {
                let id = new_trace_id();
                let low = u64::from_be_bytes([
                    id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15],
                ]);
                if !self.always && low >= self.threshold {
                    return None;
                }
                id
            }
        };
        Some(Trace {
            trace_id,
            parent: parent.map(|p| p.span_id),
            root: new_span_id(),
            start,
            children: Vec::with_capacity(4),
        })
    }

    /// Queues a finished trace's spans for export; drops them (counted) if the queue is full.
    fn submit(&self, spans: Vec<otlp::Span>) {
        let n = spans.len() as u64;
        if self.tx.try_send(Cmd::Spans(spans)).is_err() {
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Exports everything queued so far; waits at most `timeout`. Called at shutdown.
    pub async fn flush(&self, timeout: std::time::Duration) {
        let (done, wait) = oneshot::channel();
        let sent = tokio::time::timeout(timeout, self.tx.send(Cmd::Flush(done))).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = tokio::time::timeout(timeout, wait).await;
        }
    }
}

/// A trace being recorded: the root span's identity and its children so far.
pub struct Trace {
    trace_id: [u8; 16],
    /// The caller's span, from `traceparent`.
    parent: Option<[u8; 8]>,
    root: [u8; 8],
    start: u64,
    children: Vec<otlp::Span>,
}

impl Trace {
    /// The trace id (for logs and tests).
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// Adds a child of the root, `start` and `end` in Unix nanoseconds.
    pub fn child(&mut self, name: &str, start: u64, end: u64, attributes: Vec<KeyValue>) {
        let span = self.span(
            name,
            SpanKind::Internal,
            self.root.to_vec(),
            new_span_id(),
            (start, end.max(start)),
            attributes,
        );
        self.children.push(span);
    }

    /// Ends the root span at `end` and queues the trace. `error`: why the request failed.
    pub fn finish(
        self,
        tracer: &Tracer,
        name: &str,
        end: u64,
        attributes: Vec<KeyValue>,
        error: Option<String>,
    ) {
        let parent = self.parent.map(|p| p.to_vec()).unwrap_or_default();
        let mut root = self.span(
            name,
            SpanKind::Server,
            parent,
            self.root,
            (self.start, end.max(self.start)),
            attributes,
        );
        if self.parent.is_some() {
            root.flags |= FLAG_PARENT_REMOTE;
        }
        root.status = error.map(|message| Status {
            message,
            code: StatusCode::Error as i32,
        });
        let mut spans = self.children;
        spans.insert(0, root);
        tracer.submit(spans);
    }

    fn span(
        &self,
        name: &str,
        kind: SpanKind,
        parent: Vec<u8>,
        id: [u8; 8],
        (start, end): (u64, u64),
        attributes: Vec<KeyValue>,
    ) -> otlp::Span {
        otlp::Span {
            trace_id: self.trace_id.to_vec(),
            span_id: id.to_vec(),
            parent_span_id: parent,
            name: name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            status: None,
            // Sampled; "is the parent remote" known (false unless set for the root).
            flags: 0x01 | FLAG_HAS_IS_REMOTE,
        }
    }
}

const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_PARENT_REMOTE: u32 = 0x200;

fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tracer(ratio: f64) -> (Tracer, mpsc::Receiver<Cmd>) {
        let (tx, rx) = mpsc::channel(2);
        let t = Tracer {
            tx,
            threshold: (ratio * u64::MAX as f64) as u64,
            always: ratio >= 1.0,
            stats: Arc::default(),
        };
        (t, rx)
    }

    #[test]
    fn a_sampled_traceparent_becomes_the_roots_parent_and_an_unsampled_one_is_not_traced() {
        let (t, mut rx) = tracer(0.0);
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut trace = t.begin(Some(tp), 10).unwrap();
        trace.child("validate", 11, 12, vec![]);
        trace.finish(&t, "publish", 20, vec![KeyValue::int("items", 1)], None);
        let Ok(Cmd::Spans(spans)) = rx.try_recv() else {
            panic!("no spans queued")
        };
        assert_eq!(spans.len(), 2);
        assert_eq!(hex(&spans[0].trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&spans[0].parent_span_id), "00f067aa0ba902b7");
        assert_eq!(spans[0].flags, 0x301);
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        assert_eq!(spans[1].trace_id, spans[0].trace_id);
        // Ratio 0 keeps no new trace, and an unsampled caller is obeyed.
        assert!(t.begin(None, 0).is_none());
        assert!(t
            .begin(
                Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
                0
            )
            .is_none());
        // An invalid header starts a new trace (here: ratio 1).
        let (t1, _rx) = tracer(1.0);
        let fresh = t1.begin(Some(b"00-nonsense"), 0).unwrap();
        assert_ne!(hex(&fresh.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn the_config_is_checked_before_anything_starts() {
        let mut c = TracingConfig::default();
        assert!(c.validate().is_ok());
        c.otlp_endpoint = Some("https://collector:4318".into());
        assert!(c.validate().is_err());
        c.otlp_endpoint = Some("http://127.0.0.1:4318".into());
        assert!(c.validate().is_ok());
        c.sample_ratio = 1.5;
        assert!(c.validate().is_err());
        c.sample_ratio = 0.5;
        c.service_name.clear();
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (t, _rx) = tracer(1.0);
        for _ in 0..3 {
            let trace = t.begin(None, 1).unwrap();
            trace.finish(&t, "publish", 2, vec![], None);
        }
        // Capacity 2: the third trace (one span) is dropped.
        assert_eq!(t.stats.dropped.load(Ordering::Relaxed), 1);
    }
}
