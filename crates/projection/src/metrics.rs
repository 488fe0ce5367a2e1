//! Projection metrics in the Prometheus text format: how far behind each projection runs, so
//! an operator sees a projection that falls behind (it runs at low priority and may) instead of
//! guessing from stale candles.

use std::{fmt::Write as _, sync::atomic::Ordering, sync::Arc};

use tickwire_hub::Hub;

use crate::RunnerStats;

/// Appends the families of every runner in `runners` to `out`, each family once.
pub fn render(hub: &Hub, runners: &[Arc<RunnerStats>], out: &mut String) {
    let mut family = |name: &str,
                      kind: &str,
                      help: &str,
                      per_source: bool,
                      value: &dyn Fn(&RunnerStats, usize) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in runners {
            if per_source {
                for (i, s) in r.sources.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}{{projection=\"{}\",namespace=\"{}\"}} {}",
                        r.name,
                        s.namespace,
                        value(r, i)
                    );
                }
            } else {
                let _ = writeln!(out, "{name}{{projection=\"{}\"}} {}", r.name, value(r, 0));
            }
        }
    };
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    family(
        "tickwire_projection_lag",
        "gauge",
        "Publications in a source stream the projection has not applied yet.",
        true,
        &|r, i| {
            let s = &r.sources[i];
            let end = hub.stream(&s.namespace).map_or(0, |st| st.next_offset());
            end.saturating_sub(load(&s.position))
        },
    );
    family(
        "tickwire_projection_position",
        "gauge",
        "The next offset the projection applies, per source stream.",
        true,
        &|r, i| load(&r.sources[i].position),
    );
    family(
        "tickwire_projection_skipped_by_retention_total",
        "counter",
        "Publications retention removed before the projection applied them.",
        true,
        &|r, i| load(&r.sources[i].skipped_by_retention),
    );
    family(
        "tickwire_projection_fed_total",
        "counter",
        "Publications applied from the namespace writer's newest batches in memory (the append feed) instead of read back from the log.",
        true,
        &|r, i| load(&r.sources[i].fed),
    );
    family(
        "tickwire_projection_live",
        "gauge",
        "1 once the projection caught up with its sources after starting.",
        false,
        &|r, _| u64::from(r.live.load(Ordering::Relaxed)),
    );
    family(
        "tickwire_projection_applied_total",
        "counter",
        "Publications applied since start.",
        false,
        &|r, _| load(&r.applied),
    );
    family(
        "tickwire_projection_replayed_total",
        "counter",
        "Publications applied while catching up at start.",
        false,
        &|r, _| load(&r.replayed),
    );
    family(
        "tickwire_projection_derived_published_total",
        "counter",
        "Derived publications (live bars, books) acknowledged by the hub.",
        false,
        &|r, _| load(&r.derived_published),
    );
    family(
        "tickwire_projection_derived_failed_total",
        "counter",
        "Derived publications the hub refused (a full disk, say).",
        false,
        &|r, _| load(&r.derived_failed),
    );
    family(
        "tickwire_projection_checkpoint_failures_total",
        "counter",
        "Failed checkpoints (each retried at the next interval).",
        false,
        &|r, _| load(&r.checkpoint_failures),
    );
    family(
        "tickwire_projection_panics_total",
        "counter",
        "Publications the projection panicked on (skipped, each logged).",
        false,
        &|r, _| load(&r.panics),
    );
}
