//! Per-namespace counters and latency histograms for `/metrics`, kept in atomics on the paths
//! that already touch each namespace (one update per batch or fsync, never per item), and
//! rendered in the Prometheus text format.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds in seconds, from 50 µs (an fsync on a fast disk, an in-memory ack) to 10 s (a
/// stalled disk): the range an operator alerts on.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// A fixed-bucket histogram of durations. Buckets hold their own counts (not cumulative) so an
/// observation is two atomic adds; rendering accumulates them.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The `_bucket`, `_sum` and `_count` samples of `name` with `labels` (`key="value"` pairs,
    /// comma-separated, or empty). The family's HELP and TYPE lines are the caller's.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        // Read the count first: observations landing meanwhile can only make the buckets read
        // larger, and +Inf is the count, so the rendered buckets never exceed it.
        let count = self.count();
        let mut cumulative = 0u64;
        for (b, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative = (cumulative + n.load(Ordering::Relaxed)).min(count);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// What one namespace counts.
#[derive(Debug, Default)]
pub struct NamespaceMetrics {
    /// Publications stored (duplicates of a known `msg_id` not counted).
    pub published: AtomicU64,
    /// Bytes of data in acknowledged publish requests (duplicates included).
    pub published_bytes: AtomicU64,
    /// From a publish request handed to the hub to its acknowledgement (durable under the
    /// fsync policy): what a publisher waits for, minus its edge's decoding.
    pub ack: Histogram,
    /// One fdatasync of the namespace's log (group commit: one per batch of batches).
    pub fsync: Histogram,
    /// Log segments removed by retention.
    pub retention_segments: AtomicU64,
}
