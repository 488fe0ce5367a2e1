#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Crash test: SIGKILL a syncing writer at random moments; every acknowledged offset must survive.
//! Then tear the tail the way a crash mid-write leaves it and check that recovery cuts exactly
//! the torn bytes and nothing acknowledged.
//!
//! `TICKWIRE_CRASH_ITERATIONS` raises the iteration count (default 50);
//! `TICKWIRE_CRASH_SEED` replays a run (the seed is printed on failure).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tickwire_log::{record, Entry, Log, LogConfig};

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

/// How long a writer may take to acknowledge its first batch (start, recovery, one fsync) on a
/// loaded machine before the test calls it stuck.
const FIRST_ACK_WAIT: Duration = Duration::from_secs(20);

/// Reads the whole log and checks every record against what the writer wrote; returns the
/// number of records.
fn verify(log: &Log, seed: u64, when: &str) -> u64 {
    let reader = log.reader();
    let mut expect = log.start_offset();
    assert_eq!(expect, 0);
    loop {
        let recs = reader.read(expect, 4096, 1 << 20).unwrap();
        if recs.is_empty() {
            break;
        }
        for r in recs {
            assert_eq!(r.offset, expect, "seed {seed} {when}: gap or reorder");
            assert_eq!(r.key, r.offset.to_be_bytes().to_vec(), "seed {seed} {when}");
            assert_eq!(r.timestamp, r.offset, "seed {seed} {when}");
            assert_eq!(
                r.value,
                value_for(r.offset),
                "seed {seed} {when}: bad value at {expect}"
            );
            expect += 1;
        }
    }
    assert_eq!(
        expect,
        log.next_offset(),
        "seed {seed} {when}: reader stopped short"
    );
    expect
}

/// The newest segment file (the one a torn write would end).
fn newest_segment(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a segment file")
}

/// Appends to the newest segment what a crash in the middle of writing the record at `next`
/// leaves: a strict prefix of it, or all of it with a byte the disk never got right (a bad
/// checksum). Returns the number of bytes appended.
fn tear_tail(dir: &Path, next: u64, rng: &mut Rng) -> u64 {
    let key = next.to_be_bytes();
    let value = value_for(next);
    let mut rec = Vec::new();
    record::encode(
        next,
        &Entry {
            timestamp: next,
            key: &key,
            value: &value,
        },
        &mut rec,
    );
    let torn: Vec<u8> = if rng.next().is_multiple_of(2) {
        let cut = 1 + (rng.next() as usize) % (rec.len() - 1);
        rec[..cut].to_vec()
    } else {
        let at = record::HEADER_LEN + (rng.next() as usize) % (rec.len() - record::HEADER_LEN);
        rec[at] ^= 0x5A;
        rec
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(newest_segment(dir))
        .unwrap();
    f.write_all(&torn).unwrap();
    f.sync_all().unwrap();
    torn.len() as u64
}

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
    let mut natural_tears = 0;
    let mut progress_kills_planned = 0;
    let mut kills_with_progress = 0;
    let mut tears_injected = 0;
    let mut tears_cut_exactly = 0;
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
        // Acknowledgements as the writer prints them; only complete lines count (a line cut
        // by the kill was never fully acknowledged).
        let stdout = child.stdout.take().unwrap();
        let (tx, acks) = mpsc::channel::<u64>();
        let lines = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.ends_with('\n') => {
                        let _ = tx.send(line.trim_end().parse().unwrap());
                    }
                    Ok(_) => break,
                }
            }
        });
        // One kill in five lands at any moment from the start, recovery and open included;
        // the others after the writer has acknowledged something, so most kills interrupt a
        // writer in full flow. A fixed schedule, so the counts asserted below are exact.
        let mut got = Vec::new();
        if iteration % 5 == 4 {
            std::thread::sleep(Duration::from_millis(rng.next() % 40));
        } else {
            progress_kills_planned += 1;
            match acks.recv_timeout(FIRST_ACK_WAIT) {
                Ok(a) => got.push(a),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let mut stderr = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                    panic!(
                        "seed {seed} iteration {iteration}: no acknowledgement in \
                         {FIRST_ACK_WAIT:?}: {stderr}"
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(rng.next() % 50));
        }
        child.kill().unwrap(); // SIGKILL on unix
        let status = child.wait().unwrap();
        lines.join().unwrap();
        got.extend(acks.try_iter());
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
        if let Some(&last) = got.last() {
            assert!(
                acked.is_none_or(|a| last > a),
                "seed {seed}: ack went backwards"
            );
            acked = Some(last);
            kills_with_progress += 1;
        }

        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        if log.recovery().truncated_bytes > 0 {
            natural_tears += 1;
        }
        let next = log.next_offset();
        if let Some(a) = acked {
            assert!(
                next > a,
                "seed {seed} iteration {iteration}: acked {a} but log ends at {next}"
            );
        }
        verify(&log, seed, &format!("iteration {iteration}"));
        drop(log);

        // One iteration in three: tear the tail, as a crash mid-write on a machine that lost
        // power would, and check that recovery cuts exactly the torn bytes.
        if iteration % 3 == 1 {
            tears_injected += 1;
            let segment = newest_segment(dir.path());
            let len_before = std::fs::metadata(&segment).unwrap().len();
            let torn = tear_tail(dir.path(), next, &mut rng);
            let log = Log::open(dir.path(), cfg.clone()).unwrap();
            let rep = log.recovery();
            assert_eq!(
                (rep.truncated_bytes, rep.truncated_at.clone()),
                (torn, Some((segment.clone(), len_before))),
                "seed {seed} iteration {iteration}: torn tail of {torn} bytes: {rep:?}"
            );
            assert_eq!(log.next_offset(), next, "seed {seed} iteration {iteration}");
            verify(&log, seed, &format!("iteration {iteration}, torn"));
            tears_cut_exactly += 1;
        }
    }
    eprintln!(
        "crash test: seed {seed}, {iterations} kills ({kills_with_progress} after progress, \
         {progress_kills_planned} planned so), {natural_tears} torn tails left by kills, \
         {tears_injected} injected and {tears_cut_exactly} cut exactly, last ack {acked:?}, {:?}",
        started.elapsed()
    );
    // Most kills must hit a writer that had acknowledged something since the last one: a run
    // where the writer never got going checks recovery of an empty log only.
    assert!(
        progress_kills_planned == iterations - iterations / 5
            && kills_with_progress >= progress_kills_planned,
        "seed {seed}: only {kills_with_progress} of {iterations} kills came after progress"
    );
    // And recovery must have cut real torn tails, every one of them exactly.
    assert!(
        tears_injected == (iterations + 1) / 3 && tears_cut_exactly == tears_injected,
        "seed {seed}: {tears_cut_exactly} of {tears_injected} torn tails cut exactly"
    );
}
