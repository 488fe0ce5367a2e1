//! The `/metrics` families the composition root owns: build information, the process (the
//! standard `process_*` names Prometheus client libraries export, so existing dashboards and
//! alerts apply) and the live candle builder.

use std::{fmt::Write as _, sync::atomic::Ordering};

use tickwire_proj_candles::CandleStats;

/// `tickwire_build_info`: a constant 1 whose labels say what is running.
pub fn render_build_info(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP tickwire_build_info The running build (always 1; the labels carry the facts).\n# TYPE tickwire_build_info gauge\ntickwire_build_info{{version=\"{}\",os=\"{}\",arch=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
    );
}

/// What the process uses, read from `/proc/self` at scrape time. Families whose source cannot
/// be read (another OS, a restricted /proc) are left out rather than reported as 0.
pub fn render_process(out: &mut String) {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as f64;
    let mut one = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    if let Some(stat) = proc_stat() {
        // Fields after the command's closing parenthesis (it may contain spaces), numbered as
        // in proc(5) from 3 (state): utime 14, stime 15, starttime 22, vsize 23, rss 24.
        let field = |n: usize| -> Option<f64> { stat.get(n - 3).and_then(|v| v.parse().ok()) };
        if let (Some(u), Some(s)) = (field(14), field(15)) {
            one(
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent, in seconds.",
                (u + s) / ticks,
            );
        }
        if let Some(v) = field(23) {
            one(
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                v,
            );
        }
        if let Some(r) = field(24) {
            one(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                r * page,
            );
        }
        if let (Some(start), Some(boot)) = (field(22), boot_time()) {
            one(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch, in seconds.",
                boot + start / ticks,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        one(
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Some(max) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        one(
            "process_max_fds",
            "gauge",
            "The open-file limit (soft).",
            max as f64,
        );
    }
}

/// `/proc/self/stat` split after the command name.
fn proc_stat() -> Option<Vec<String>> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The machine's boot time (`btime` in /proc/stat), Unix seconds.
fn boot_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The live candle builder's counters.
pub fn render_candles(stats: &CandleStats, out: &mut String) {
    let mut one = |name: &str, help: &str, v: &std::sync::atomic::AtomicU64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    };
    one(
        "tickwire_candles_ticks_total",
        "Ticks applied to candles.",
        &stats.ticks,
    );
    one(
        "tickwire_candles_late_dropped_total",
        "Ticks older than the late tolerance, dropped (never merged into a closed bar).",
        &stats.late_dropped,
    );
    one(
        "tickwire_candles_bad_messages_total",
        "Messages the candle builder could not read as ticks.",
        &stats.bad_messages,
    );
    one(
        "tickwire_candles_bars_persisted_total",
        "Closed bars written to the candle store.",
        &stats.bars_persisted,
    );
}
