#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Crash test: SIGKILL a syncing writer at random moments; every acknowledged offset must survive.
//!
//! `TICKWIRE_CRASH_ITERATIONS` raises the iteration count (default 50);
//! `TICKWIRE_CRASH_SEED` replays a run (the seed is printed on failure).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tickwire_log::{Log, LogConfig};

/// Must match the writer binary's `value_for`.
fn value_for(offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let len = 40 + (offset % 120) as usize;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64: good enough to spread kill times, and replayable from the seed.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

const SEGMENT_BYTES: &str = "262144";

#[test]
fn acknowledged_records_survive_sigkill() {
    let iterations: usize = std::env::var("TICKWIRE_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed = std::env::var("TICKWIRE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 262_144,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    };
    let started = Instant::now();
    let mut acked: Option<u64> = None;
    let mut truncations = 0;
    let mut kills_with_progress = 0;
    for iteration in 0..iterations {
        let batch = 1 + rng.next() % 128;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire-log-crash-writer"))
            .arg(dir.path())
            .arg(SEGMENT_BYTES)
            .arg(batch.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + rng.next() % 76));
        child.kill().unwrap(); // SIGKILL on unix
        let status = child.wait().unwrap();
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(
            status.code().is_none(),
            "seed {seed} iteration {iteration}: writer exited by itself ({status}): {stderr}"
        );
        // Only complete lines count: a line cut by the kill was never fully acknowledged.
        let complete = stdout.rfind('\n').map_or("", |i| &stdout[..i]);
        if let Some(last) = complete.lines().last() {
            let last: u64 = last.parse().unwrap();
            assert!(
                acked.is_none_or(|a| last > a),
                "seed {seed}: ack went backwards"
            );
            acked = Some(last);
            kills_with_progress += 1;
        }

        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        if log.recovery().truncated_bytes > 0 {
            truncations += 1;
        }
        let next = log.next_offset();
        if let Some(a) = acked {
            assert!(
                next > a,
                "seed {seed} iteration {iteration}: acked {a} but log ends at {next}"
            );
        }
        let reader = log.reader();
        let mut expect = log.start_offset();
        assert_eq!(expect, 0);
        loop {
            let recs = reader.read(expect, 4096, 1 << 20).unwrap();
            if recs.is_empty() {
                break;
            }
            for r in recs {
                assert_eq!(r.offset, expect, "seed {seed}: gap or reorder");
                assert_eq!(r.key, r.offset.to_be_bytes().to_vec(), "seed {seed}");
                assert_eq!(r.timestamp, r.offset, "seed {seed}");
                assert_eq!(
                    r.value,
                    value_for(r.offset),
                    "seed {seed}: bad value at {expect}"
                );
                expect += 1;
            }
        }
        assert_eq!(expect, next, "seed {seed}: reader stopped short");
    }
    eprintln!(
        "crash test: seed {seed}, {iterations} kills ({kills_with_progress} after progress), \
         {truncations} torn tails truncated, last ack {acked:?}, {:?}",
        started.elapsed()
    );
    assert!(
        kills_with_progress > 0,
        "writer never acknowledged anything"
    );
}
