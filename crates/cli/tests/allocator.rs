//! `serve` runs with glibc's per-thread allocation cache enlarged (crates/cli/src/alloc_tuning.rs)
//! and leaves an operator's own `GLIBC_TUNABLES` alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;

/// The server process's value of `var`, from /proc (the pid is the same after it re-executes).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn env_of(srv: &Server, var: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{}/environ", srv.pid())).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{var}=")).map(str::to_string))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn serve_runs_with_a_larger_allocation_cache_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    // The harness passes its own environment through: this test's is what the server starts with.
    assert!(
        std::env::var_os("GLIBC_TUNABLES").is_none(),
        "run this test without GLIBC_TUNABLES set"
    );
    let srv = Server::start(&dir.path().join("a"), &[], &[]);
    assert_eq!(
        env_of(&srv, "GLIBC_TUNABLES").as_deref(),
        Some("glibc.malloc.tcache_count=100")
    );
    // Re-executed, it still serves (the banner was read from the same pipe).
    assert_eq!(common::get_text(&srv, "/healthz").await, "ok\n");

    // An operator's setting wins, even an empty one.
    for own in ["glibc.malloc.arena_max=4", ""] {
        let srv = Server::start(&dir.path().join("b"), &[], &[("GLIBC_TUNABLES", own)]);
        assert_eq!(env_of(&srv, "GLIBC_TUNABLES").as_deref(), Some(own));
        drop(srv);
    }
}
