//! glibc's allocator, tuned for the server before it starts.
//!
//! glibc keeps a per-thread cache of freed chunks, 7 per size class by default. The server
//! allocates and frees in bursts of hundreds of same-sized objects per group commit (the items
//! of a batch, their acknowledgements, the frames read), so past the seventh every free and
//! allocation takes the arena's slower, locked path. 100 per size class measured +5–9 % acked
//! publishes on one WebSocket connection and +1–10 % on one gRPC stream, in A/B pairs
//! (bench/results/ws-publish.md, 2026-12-05), for a few MB more resident memory under load and
//! +3 % per idle MQTT connection (bench/results/idle.md); larger caches added memory and no
//! more speed.
//!
//! glibc reads that setting only from the `GLIBC_TUNABLES` environment variable at process
//! start (`mallopt` cannot set it), so `serve` executes itself again once with it set. An
//! operator's own `GLIBC_TUNABLES`, even an empty one, is left alone and nothing is re-executed.

/// The tunables `serve` runs with unless `GLIBC_TUNABLES` is already set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TUNABLES: &str = "glibc.malloc.tcache_count=100";

/// Re-executes this process with [`TUNABLES`] unless `GLIBC_TUNABLES` is set; returns only when
/// it did not (already tuned, an operator's setting, not glibc, or the exec failed: the server
/// then runs with glibc's defaults, and says so).
pub fn tune_or_continue() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const VAR: &str = "GLIBC_TUNABLES";
        if std::env::var_os(VAR).is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(VAR, TUNABLES)
            .exec();
        tracing::warn!("running with glibc's default allocator settings: re-executing with {VAR}={TUNABLES} failed: {err}");
    }
}
