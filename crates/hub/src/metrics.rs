//! Per-namespace counters and latency histograms for `/metrics`, kept in atomics on the paths
//! that already touch each namespace (one update per batch or fsync, never per item), and
//! rendered in the Prometheus text format.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

/// Upper bounds in seconds, from 50 µs (an fsync on a fast disk, an in-memory ack) to 10 s (a
/// stalled disk): the range an operator alerts on.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Stripes of a [`Striped`] value: more than the runtime's threads on the machines we run on,
/// so two threads seldom share one.
const STRIPES: usize = 8;

/// The stripe of the calling thread, given out in turn as threads first ask.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// One stripe, alone on its cache line (two, for the adjacent-line prefetcher).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// A value every delivering thread adds to at delivery rate (once per batch a connection
/// takes): each thread adds to its own stripe, and a read sums them. One shared atomic made
/// the cores pass its cache line back and forth on every batch of every connection, a
/// visible share of fan-out time (bench/results/fanout.md); striped, a thread's adds stay in
/// its own core's cache.
#[derive(Debug, Default)]
pub struct Striped<T = AtomicU64>([Padded<T>; STRIPES]);

impl<T> Striped<T> {
    /// The calling thread's stripe.
    fn mine(&self) -> &T {
        &self.0[stripe()].0
    }

    fn stripes(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|p| &p.0)
    }
}

impl Striped {
    pub fn add(&self, n: u64) {
        self.mine().fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.stripes()
            .map(|a| a.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// A fixed-bucket histogram of durations, striped (see [`Striped`]): observed on the delivery
/// path of every connection. Buckets hold their own counts (not cumulative); rendering
/// accumulates them.
#[derive(Debug, Default)]
pub struct Histogram(Striped<Counts>);

#[derive(Debug, Default)]
struct Counts {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let c = self.0.mine();
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            c.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        c.count.fetch_add(1, Ordering::Relaxed);
        c.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.sum(|c| &c.count)
    }

    fn sum(&self, f: impl Fn(&Counts) -> &AtomicU64) -> u64 {
        self.0
            .stripes()
            .map(|c| f(c).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// The `_bucket`, `_sum` and `_count` samples of `name` with `labels` (`key="value"` pairs,
    /// comma-separated, or empty). The family's HELP and TYPE lines are the caller's.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        // Read the count first: observations landing meanwhile can only make the buckets read
        // larger, and +Inf is the count, so the rendered buckets never exceed it.
        let count = self.count();
        let mut cumulative = 0u64;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative = (cumulative + self.sum(|c| &c.buckets[i])).min(count);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum(|c| &c.sum_nanos) as f64 / 1e9;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Adds and observations from many threads (more than the stripes, so some share one)
    /// all land in the sums a scrape reads.
    #[test]
    fn striped_counts_sum_every_threads_adds() {
        let c = Striped::default();
        let h = Histogram::default();
        std::thread::scope(|s| {
            for t in 0..(STRIPES as u64 + 3) {
                let (c, h) = (&c, &h);
                s.spawn(move || {
                    for _ in 0..1000 {
                        c.add(t + 1);
                        h.observe(Duration::from_micros(300));
                    }
                    h.observe(Duration::from_secs(60));
                });
            }
        });
        let threads = STRIPES as u64 + 3;
        assert_eq!(c.get(), 1000 * threads * (threads + 1) / 2);
        assert_eq!(h.count(), 1001 * threads);
        let mut out = String::new();
        h.render(&mut out, "lag", "");
        // 300 µs falls under 0.0005 s; 60 s above every bound, so only in +Inf and the count.
        assert!(out.contains("lag_bucket{le=\"0.00025\"} 0\n"));
        assert!(out.contains(&format!("lag_bucket{{le=\"0.0005\"}} {}\n", 1000 * threads)));
        assert!(out.contains(&format!("lag_bucket{{le=\"10\"}} {}\n", 1000 * threads)));
        assert!(out.contains(&format!("lag_bucket{{le=\"+Inf\"}} {}\n", 1001 * threads)));
        assert!(out.contains(&format!("lag_count {}\n", 1001 * threads)));
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("lag_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - threads as f64 * (0.3 + 60.0)).abs() < 1e-6, "{sum}");
    }
}
