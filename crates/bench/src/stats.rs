//! Latency histograms and the server's CPU and memory, sampled from /proc.

use std::{sync::Arc, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// Microsecond latencies from 1 µs to 100 s at 3 significant digits.
#[allow(clippy::expect_used)] // constant, valid bounds: this cannot fail
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// p50/p99/p99.9/max in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// What the sampler saw of the server process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerUsage {
    pub pid: u32,
    /// CPU over the measured window, in percent of one core (200 = both cores busy).
    pub cpu_pct: f64,
    pub rss_start_kb: u64,
    pub rss_max_kb: u64,
    pub rss_end_kb: u64,
    /// RSS at each sample, for "stays flat" checks.
    pub rss_samples_kb: Vec<u64>,
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    ticks_in(&format!("/proc/{pid}/stat"))
}

/// CPU seconds the calling thread has used (user + system).
pub fn thread_cpu_s() -> Option<f64> {
    Some(ticks_in("/proc/thread-self/stat")? as f64 / HZ)
}

fn ticks_in(path: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some(ut + st)
}

/// Resident memory of `pid` in KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples a process every `every` until stopped.
pub struct Sampler {
    pid: Option<u32>,
    state: Arc<Mutex<(Vec<u64>, bool)>>,
    start_ticks: u64,
    start: std::time::Instant,
}

/// Kernel clock ticks per second (USER_HZ): 100 on every Linux this runs on.
const HZ: f64 = 100.0;

impl Sampler {
    pub fn start(pid: Option<u32>, every: Duration) -> Sampler {
        let state = Arc::new(Mutex::new((Vec::new(), true)));
        if let Some(pid) = pid {
            let st = state.clone();
            tokio::spawn(async move {
                loop {
                    {
                        let mut g = st.lock().await;
                        if !g.1 {
                            break;
                        }
                        if let Some(r) = rss_kb(pid) {
                            g.0.push(r);
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            });
        }
        Sampler {
            pid,
            state,
            start_ticks: pid.and_then(cpu_ticks).unwrap_or(0),
            start: std::time::Instant::now(),
        }
    }

    pub async fn stop(self) -> Option<ServerUsage> {
        let pid = self.pid?;
        let ticks = cpu_ticks(pid).unwrap_or(self.start_ticks);
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let mut g = self.state.lock().await;
        g.1 = false;
        if let Some(r) = rss_kb(pid) {
            g.0.push(r);
        }
        let s = std::mem::take(&mut g.0);
        Some(ServerUsage {
            pid,
            cpu_pct: (ticks - self.start_ticks) as f64 / HZ / secs * 100.0,
            rss_start_kb: s.first().copied().unwrap_or(0),
            rss_max_kb: s.iter().copied().max().unwrap_or(0),
            rss_end_kb: s.last().copied().unwrap_or(0),
            rss_samples_kb: s,
        })
    }
}
