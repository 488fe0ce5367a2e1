//! Results: one JSON object per run, and markdown tables of medians and spread over runs.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    stats::{Latency, ServerUsage},
    BenchError, RunArgs,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub scenario: String,
    pub target: String,
    pub label: String,
    pub params: RunArgs,
    /// Unix seconds at the start of the run.
    pub started: u64,
    /// Seconds measured.
    pub measured_s: f64,
    /// Messages published (ingest: acknowledged) in the measured window, per second.
    pub published_per_s: f64,
    /// Messages received by subscribers in the measured window, per second.
    pub delivered_per_s: f64,
    /// Payload megabytes per second (ingest: acknowledged; fanout: delivered).
    pub mb_per_s: f64,
    /// Tick-to-client (fanout) or publish-to-ack (ingest) latency.
    pub latency: Latency,
    pub server: Option<ServerUsage>,
    /// Scenario-specific figures (numbers), e.g. idle bytes per connection.
    pub extra: BTreeMap<String, f64>,
}

impl RunResult {
    pub fn new(args: &RunArgs) -> RunResult {
        RunResult {
            scenario: args.scenario.name().into(),
            target: args.target.name().into(),
            label: args.label(),
            params: args.clone(),
            started: crate::msg::now_micros() / 1_000_000,
            measured_s: 0.0,
            published_per_s: 0.0,
            delivered_per_s: 0.0,
            mb_per_s: 0.0,
            latency: Latency::default(),
            server: None,
            extra: BTreeMap::new(),
        }
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {} [{}]: published {:.0}/s delivered {:.0}/s {:.1} MB/s p50 {}us p99 {}us p99.9 {}us max {}us",
            self.scenario,
            self.label,
            params_key(&self.params),
            self.published_per_s,
            self.delivered_per_s,
            self.mb_per_s,
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.p999_us,
            self.latency.max_us
        );
        if let Some(u) = &self.server {
            s += &format!(
                " | server cpu {:.0}% rss {}->{} (max {}) MB",
                u.cpu_pct,
                u.rss_start_kb / 1024,
                u.rss_end_kb / 1024,
                u.rss_max_kb / 1024
            );
        }
        for (k, v) in &self.extra {
            s += &format!(" {k}={v:.3}");
        }
        s
    }
}

/// The parameters that distinguish runs worth comparing.
fn params_key(a: &RunArgs) -> String {
    use crate::Scenario::*;
    match a.scenario {
        Ingest => format!(
            "pubs={} batch={}{} size={} fsync={}",
            a.publishers,
            if a.target == crate::Target::JetStream && a.js_atomic_batch > 0 {
                format!(
                    "window {}, atomic batches of {}",
                    a.window, a.js_atomic_batch
                )
            } else if a.target == crate::Target::JetStream {
                format!("window {}", a.window)
            } else {
                a.batch.to_string()
            },
            if a.encoding == crate::Encoding::Binary {
                " binary"
            } else {
                ""
            },
            a.size,
            a.fsync.as_deref().unwrap_or("?")
        ),
        Fanout | Slow => format!(
            "C={} K={}/{} R={} size={}{}",
            a.clients,
            a.subs,
            a.symbols,
            a.rate,
            a.size,
            if a.scenario == Slow {
                format!(" slow={}%x{}", a.slow_pct, a.slow_factor)
            } else {
                String::new()
            }
        ),
        Idle => format!("C={}", a.clients),
        // Protocol first, so the rows of one protocol stand together in the table.
        WsPublish => format!(
            "{} R={}{}{}",
            match a.target {
                crate::Target::Mqtt => format!("mqtt qos={}", a.qos),
                crate::Target::TickwireGrpc => "grpc".to_string(),
                crate::Target::JetStream => "jetstream".to_string(),
                _ => "ws".to_string(),
            },
            if a.rate == 0 {
                "max".to_string()
            } else {
                a.rate.to_string()
            },
            if a.target == crate::Target::Mqtt && a.qos == 0 {
                String::new()
            } else {
                format!(" window={}", a.window)
            },
            if a.clients == 0 {
                String::new()
            } else {
                format!(" C={} K={}/{}", a.clients, a.subs, a.symbols)
            }
        ),
        Book => format!(
            "C={} K={}/{} R={} L={}",
            a.clients, a.subs, a.symbols, a.rate, a.levels
        ),
        Chat => format!(
            "C={} rooms={} R={} disconnect~{}ms",
            a.clients, a.rooms, a.rate, a.disconnect_ms
        ),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// "median (min–max)"
/// Runs without the figure (NaN) are left out; none at all is "–".
fn cell(mut v: Vec<f64>) -> String {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return "–".into();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let m = median(&mut v);
    if v.len() > 1 {
        format!("{} ({}–{})", fmt_num(m), fmt_num(lo), fmt_num(hi))
    } else {
        fmt_num(m)
    }
}

/// A latency cell: none ("–") when the run recorded no latency at all (idle, MQTT QoS 0
/// without subscribers), not 0 µs.
fn lat(r: &RunResult, us: u64) -> f64 {
    if r.latency.count == 0 {
        f64::NAN
    } else {
        us as f64
    }
}

/// A markdown table with one row per (label, parameters): medians and min–max over the runs.
pub fn markdown(title: &str, files: &[PathBuf]) -> Result<String, BenchError> {
    let mut groups: BTreeMap<(String, String, String), Vec<RunResult>> = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(BenchError::io(f.display().to_string()))?;
        let r: RunResult = serde_json::from_str(&text)?;
        groups
            .entry((r.scenario.clone(), params_key(&r.params), r.label.clone()))
            .or_default()
            .push(r);
    }
    let mut extras: Vec<String> = groups
        .values()
        .flatten()
        .flat_map(|r| r.extra.keys().cloned())
        .collect();
    extras.sort();
    extras.dedup();
    // Payload bytes (the quote's own 100 bytes, not each protocol's envelope around it), the
    // same quantity for every target; the book scenario's deltas have no fixed payload, and
    // its column counts the bytes of the pushes (docs/benchmarks.md).
    let books = groups.keys().all(|(scenario, _, _)| scenario == "book") && !groups.is_empty();
    let mb = if books { "push MB/s" } else { "payload MB/s" };
    let mut md = format!("### {title}\n\n| target | parameters | runs | published/s | delivered/s | {mb} | p50 µs | p99 µs | p99.9 µs | max µs | server CPU % | server RSS max MB |");
    for e in &extras {
        md += &format!(" {e} |");
    }
    md += "\n|---|---|---|---|---|---|---|---|---|---|---|---|";
    for _ in &extras {
        md += "---|";
    }
    md += "\n";
    for ((_, params, label), runs) in &groups {
        let col = |f: &dyn Fn(&RunResult) -> f64| cell(runs.iter().map(f).collect());
        md += &format!(
            "| {label} | {params} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            runs.len(),
            col(&|r| r.published_per_s),
            col(&|r| r.delivered_per_s),
            // Zero bytes for a run that delivered messages means the scenario counts no
            // bytes (chat): "–", not a measured 0.
            col(&|r| {
                if r.mb_per_s == 0.0 && r.delivered_per_s > 0.0 {
                    f64::NAN
                } else {
                    r.mb_per_s
                }
            }),
            col(&|r| lat(r, r.latency.p50_us)),
            col(&|r| lat(r, r.latency.p99_us)),
            col(&|r| lat(r, r.latency.p999_us)),
            col(&|r| lat(r, r.latency.max_us)),
            col(&|r| r.server.as_ref().map_or(f64::NAN, |s| s.cpu_pct)),
            col(&|r| r
                .server
                .as_ref()
                .map_or(f64::NAN, |s| s.rss_max_kb as f64 / 1024.0)),
        );
        for e in &extras {
            md += &format!(
                " {} |",
                col(&|r| r.extra.get(e).copied().unwrap_or(f64::NAN))
            );
        }
        md += "\n";
    }
    md += "\nCells: median of the runs (min–max). Latency in microseconds from HDR histograms.\n";
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(line: &str) -> String {
        params_key(&crate::test_args(line))
    }

    #[test]
    fn ws_publish_rows_name_their_protocol_first() {
        let max = "--scenario ws-publish --clients 0 --rate 0";
        assert_eq!(
            key(&format!(
                "{max} --target tickwire-grpc --addr 127.0.0.1:1 --window 1000"
            )),
            "grpc R=max window=1000"
        );
        assert_eq!(
            key(&format!(
                "{max} --target jetstream --addr 127.0.0.1:1 --window 4000"
            )),
            "jetstream R=max window=4000"
        );
        assert_eq!(
            key(&format!(
                "{max} --target tickwire-ws --addr 127.0.0.1:1 --window 1000"
            )),
            "ws R=max window=1000"
        );
        assert_eq!(
            key(&format!("{max} --target mqtt --addr 127.0.0.1:1 --qos 0")),
            "mqtt qos=0 R=max"
        );
    }
}
