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
//!
//! glibc also keeps what threads free in their own arenas and rarely gives it back to the
//! system. The chat scenario's server (bench/results/chat.md) held 251 MB after three runs, and
//! `malloc_trim(0)` called from a debugger brought it to 96 MB at once. With the search index
//! off it held 56 MB. So `serve` trims from a thread of its own when more than
//! [`glibc::TRIM_ABOVE_FREE`] sits free in the arenas.

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

/// Starts the thread that returns glibc's free memory to the system once more than
/// [`glibc::TRIM_ABOVE_FREE`] of it sits in the arenas. The thread only sleeps, asks and trims;
/// it ends with the process.
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::thread::Builder::new()
            .name("tw-malloc-trim".into())
            .spawn(|| loop {
                std::thread::sleep(glibc::CHECK_EVERY);
                let free = glibc::free_in_arenas();
                if free > glibc::TRIM_ABOVE_FREE {
                    glibc::trim();
                    tracing::debug!(
                        free_mib = free >> 20,
                        "returned glibc's free memory to the system (malloc_trim)"
                    );
                }
            });
        if let Err(e) = started {
            tracing::warn!("freed memory stays with glibc: cannot start its trimming thread: {e}");
        }
    }
}

/// What the trimmer asks glibc, and when.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// How often the allocator's free memory is looked at.
    pub(super) const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// Free memory held inside glibc's arenas above which a check trims. A trim returns every
    /// free page, including ones the hot paths reuse at once and then fault in again: trimming
    /// every 10 s regardless, or whenever the resident size had grown by 64 MiB (as 1,000
    /// subscribers connecting make it grow), raised fan-out p99 at half load
    /// (bench/results/chat.md, "Memory given back"). Free memory, not resident size, is what a
    /// trim can give back.
    pub(super) const TRIM_ABOVE_FREE: usize = 64 * 1024 * 1024;

    /// Bytes free inside glibc's arenas, every arena's top included (`mallinfo2().fordblks`).
    #[allow(unsafe_code)]
    pub(super) fn free_in_arenas() -> usize {
        // SAFETY: mallinfo2 (glibc 2.33+) takes no arguments and returns a struct by value; it
        // reads the allocator's own state under its arena locks, from any thread.
        unsafe { libc::mallinfo2() }.fordblks
    }

    /// Releases the free memory of every glibc arena (whole free pages inside them too, not
    /// only at their tops).
    #[allow(unsafe_code)]
    pub(super) fn trim() {
        // SAFETY: malloc_trim takes a byte count and touches only the allocator's own state,
        // under its arena locks; it is safe to call from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn resident_kb() -> u64 {
            let pid = std::process::id();
            tickwire_bench::rss_kb(pid).unwrap_or_else(|| panic!("no VmRSS for {pid}"))
        }

        #[test]
        fn freed_memory_is_counted_and_a_trim_gives_it_back() {
            // ~100 MiB of small chunks; keeping one in 64 pins the arena (its top cannot shrink
            // past a chunk in use) while the whole pages between kept chunks are free.
            let mut chunks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 512]).collect();
            let before = free_in_arenas();
            let kept: Vec<Vec<u8>> = chunks.drain(..).step_by(64).collect();
            let freed = free_in_arenas();
            assert!(
                freed >= before + 64 * 1024 * 1024,
                "{before} bytes free before, {freed} after freeing ~100 MiB"
            );
            let resident = resident_kb();
            trim();
            let trimmed = resident_kb();
            assert!(
                trimmed + 40 * 1024 <= resident,
                "resident {resident} kB before the trim, {trimmed} kB after"
            );
            assert!(kept.iter().enumerate().all(|(i, c)| c[0] == (64 * i) as u8));
        }
    }
}
