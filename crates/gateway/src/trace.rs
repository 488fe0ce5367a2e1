//! Traces of publishes (`[tracing]`, docs/tracing.md): one trace per publish request, the same
//! spans from every edge that traces: `publish` (the root, the edge's whole handling) with
//! `validate`, `append`, `fsync` and `ack` under it.

use std::sync::Arc;

use tickwire_hub::{Ack, Checked, HubError, NamespaceTiming};
use tickwire_otel::{otlp::KeyValue, Trace, Tracer};

pub use tickwire_otel::Trace as PublishTrace;

use crate::Gateway;

/// What a traced publish records on its way (only when it is traced).
#[derive(Debug, Default)]
pub struct PublishTiming {
    /// Publications checked and handed to the hub.
    pub items: usize,
    /// From the request being read to its publications being checked (Unix ns; 0: the
    /// request was refused before it got there).
    pub validated: (u64, u64),
    /// What the hub reported per namespace ([`tickwire_hub::Acks::timed`]).
    pub timings: Vec<NamespaceTiming>,
}

impl PublishTiming {
    /// Marks the start of the checks.
    pub fn validating(timing: &mut Option<&mut PublishTiming>) {
        if let Some(t) = timing.as_deref_mut() {
            t.validated.0 = tickwire_model::clock::now_nanos();
        }
    }
}

impl Gateway {
    /// Stores checked publications like [`tickwire_hub::Hub::publish_checked`]; a traced
    /// request (`timing` given) also learns when they were appended and fsynced.
    pub async fn publish_timed(
        &self,
        checked: Vec<Checked>,
        timing: Option<&mut PublishTiming>,
    ) -> Vec<Result<Ack, HubError>> {
        match timing {
            None => self.hub().publish_checked(checked).await,
            Some(t) => {
                t.validated.1 = tickwire_model::clock::now_nanos();
                t.items = checked.len();
                let (results, timings) = self.hub().enqueue(checked).await.timed().await;
                t.timings = timings;
                results
            }
        }
    }

    /// Turns tracing on (once, at start).
    pub fn set_tracer(&self, tracer: Arc<Tracer>) {
        let _ = self.tracer.set(tracer);
    }

    /// Starts the trace of a publish request arriving now, under the
    /// caller's `traceparent`. `None` (one branch) when tracing is off or the trace is not
    /// sampled: the request then pays nothing else.
    /// `traceparent` looks the header up: called only when tracing is on, so an untraced
    /// request does not even search its headers.
    pub fn trace_publish<'a>(
        &self,
        traceparent: impl FnOnce() -> Option<&'a [u8]>,
    ) -> Option<Trace> {
        self.tracer
            .get()?
            .begin(traceparent(), tickwire_model::clock::now_nanos())
    }

    /// Starts the trace of a publish request that began at `start` (Unix ns): a batch read
    /// from a WebSocket, an MQTT connection or a gRPC stream (whose `traceparent`, if any,
    /// comes from the stream's metadata).
    pub(crate) fn trace_publish_since(
        &self,
        start: u64,
        traceparent: Option<&[u8]>,
    ) -> Option<Trace> {
        self.tracer.get()?.begin(traceparent, start)
    }

    /// Ends a publish trace now: the `ack` span runs from the last namespace's durability to
    /// now (the edge's answer is ready). `error`: why the request failed, if it did.
    pub fn finish_publish_trace(
        &self,
        mut trace: Trace,
        edge: &str,
        timing: PublishTiming,
        error: Option<String>,
    ) {
        let Some(tracer) = self.tracer.get() else {
            return;
        };
        let end = tickwire_model::clock::now_nanos();
        let PublishTiming {
            items,
            validated,
            timings,
        } = timing;
        let mut durable = 0;
        if validated.0 != 0 {
            // Refused by the checks: they ended when the answer was ready.
            let checked = if validated.1 == 0 { end } else { validated.1 };
            trace.child("validate", validated.0, checked, Vec::new());
            durable = checked;
        }
        for t in &timings {
            let ns = || vec![KeyValue::str("namespace", t.namespace.clone())];
            let b = t.timing;
            if b.append_end != 0 {
                trace.child("append", b.append_start, b.append_end, ns());
                durable = durable.max(b.append_end);
            }
            if b.fsync_end != 0 {
                trace.child("fsync", b.fsync_start, b.fsync_end, ns());
                durable = durable.max(b.fsync_end);
            }
        }
        if !timings.is_empty() {
            trace.child("ack", durable, end, Vec::new());
        }
        let mut namespaces: Vec<&str> = timings.iter().map(|t| t.namespace.as_str()).collect();
        namespaces.dedup();
        let attributes = vec![
            KeyValue::str("edge", edge),
            KeyValue::int("items", i64::try_from(items).unwrap_or(i64::MAX)),
            KeyValue::str("namespace", namespaces.join(",")),
        ];
        trace.finish(tracer, "publish", end, attributes, error);
    }

    /// The tracer's counters, when tracing is on.
    pub fn trace_stats(&self) -> Option<&Arc<tickwire_otel::TraceStats>> {
        self.tracer.get().map(|t| t.stats())
    }

    /// Exports what is queued (shutdown).
    pub async fn flush_traces(&self) {
        if let Some(t) = self.tracer.get() {
            t.flush(std::time::Duration::from_secs(5)).await;
        }
    }
}
