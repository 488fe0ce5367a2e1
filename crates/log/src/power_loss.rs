//! Power-loss simulation (issue 21, item 1). Every SIGKILL crash test keeps the page cache, so
//! none of them tests an fsync. Here the real log (append, pipelined sync points, rolls,
//! retention, recovery) runs over [`SimFs`]; the power fails at a random operation — in an
//! append, a roll, retention or the middle of recovery — and the disk comes back with what
//! fsyncs covered plus a seeded choice of the rest (torn writes, lost or reordered pages, lost
//! directory entries). After every restart:
//!
//! - `fsync = always`: every record acknowledged (its sync point completed) is there, exact, at
//!   its offset;
//! - `interval:N`: what a completed sync covered is there; a record acknowledged after it may
//!   be lost, and then it was appended within N ms plus one fsync of the power failure;
//! - every mode: offsets are contiguous from the recovered start; no record is served that was
//!   never appended at that offset (or whose offset was lost before); lost-record placeholders
//!   only past what was durable; recovery neither panics nor fails;
//! - an injected fsync failure (EIO) poisons the log: every later append and sync fails.
//!
//! Each test runs `TICKWIRE_SIM_SEEDS` seeds (default [`DEFAULT_SEEDS`]) from a time-based
//! start; a failure prints its seed and `TICKWIRE_SIM_SEED=<seed>` replays exactly that run.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::sim::{Rng, SimFs};
use crate::{Entry, Error, Log, LogConfig, Offset, SyncPoint};

/// Seeds per test when `TICKWIRE_SIM_SEEDS` is not set: a few seconds per test in a debug build.
const DEFAULT_SEEDS: u64 = 400;
/// Most a simulated fsync takes, from taking its point to completion, ms.
const MAX_SYNC_MS: u64 = 5;
/// Most the clock advances per step, ms.
const MAX_STEP_MS: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// A record is acknowledged when a sync point taken after it completes.
    Always,
    /// Acknowledged when written; a sync point every N ms (the hub's `interval:N`).
    Interval(u64),
    /// Acknowledged when written; synced only by rolls (and a clean shutdown).
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Record {
        timestamp: u64,
        key: Vec<u8>,
        value: Vec<u8>,
        appended_ms: u64,
    },
    /// Recovery made this offset a lost-record placeholder.
    Lost,
}

/// What the disk must hold, as the test knows it.
#[derive(Debug, Default)]
struct Model {
    expect: BTreeMap<Offset, Expect>,
    /// The log's start offset before the power failed (retention moves it up).
    start: Offset,
    next: Offset,
    /// Every offset below it was covered by a completed fsync (or read back by recovery).
    durable: Offset,
    /// Every offset below it was acknowledged.
    acked: Offset,
}

#[derive(Debug, Default)]
struct Stats {
    power_failures: u64,
    in_recovery: u64,
    appended: u64,
    checked_durable: u64,
    lost_acknowledged: u64,
    quarantines: u64,
    truncations: u64,
    failed_fsyncs: u64,
}

fn lost_at_most(n: u64) -> u64 {
    // A point is taken within N ms of a write (plus the step it falls in), and its fsync
    // completes within MAX_SYNC_MS (plus the step that sees it).
    n + MAX_SYNC_MS + 2 * MAX_STEP_MS
}

/// One seeded run: a few power failures with workloads between them, then a last restart.
fn run(seed: u64, mode: fn(&mut Rng) -> Durability, stats: &mut Stats) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let durability = mode(&mut rng);
    let cfg = LogConfig {
        segment_bytes: 1024 + rng.below(6000),
        index_interval_bytes: 16 + rng.below(600) as u32,
        max_record_bytes: 16 << 10,
        retention_bytes: rng.chance(1, 2).then(|| 3000 + rng.below(20_000)),
        retention_age: None,
    };
    let root = Path::new("/sim");
    let dir = root.join("log");
    let mut fs = SimFs::new(&[root]);
    let mut model = Model::default();
    let mut now_ms = 1_000;
    for _ in 0..1 + rng.below(3) {
        fs.fail_after(rng.below(400));
        match Log::open_with(&dir, cfg.clone(), fs.shared()) {
            Ok(log) => {
                check_recovered(&log, &mut model, durability, now_ms, stats)?;
                workload(
                    log,
                    &fs,
                    &mut model,
                    durability,
                    &mut rng,
                    &mut now_ms,
                    stats,
                )?;
            }
            Err(_) if fs.is_dead() => stats.in_recovery += 1,
            Err(e) => return Err(format!("recovery failed with the power on: {e}")),
        }
        stats.power_failures += 1;
        fs = fs.crash(&mut rng);
    }
    let log = Log::open_with(&dir, cfg, fs.shared())
        .map_err(|e| format!("recovery failed with the power on: {e}"))?;
    check_recovered(&log, &mut model, durability, now_ms, stats)
}

/// Appends, sync points completing on a simulated fsync thread, retention, until the power
/// fails (or the steps run out).
fn workload(
    mut log: Log,
    fs: &SimFs,
    model: &mut Model,
    durability: Durability,
    rng: &mut Rng,
    now_ms: &mut u64,
    stats: &mut Stats,
) -> Result<(), String> {
    let mut queue: VecDeque<(SyncPoint, u64)> = VecDeque::new();
    let mut last_point_ms = *now_ms;
    let steps = rng.below(250);
    let eio_at = rng.chance(1, 6).then(|| rng.below(steps.max(1)));
    for step in 0..steps {
        *now_ms += rng.below(MAX_STEP_MS + 1);
        if Some(step) == eio_at {
            fs.fail_next_sync();
        }
        // The fsync thread: points whose fsync is done by now complete in order, each batch
        // by one run of the newest absorbing the older ones (the hub's syncer).
        let ready = queue.iter().take_while(|(_, at)| *at <= *now_ms).count();
        let mut point: Option<SyncPoint> = None;
        for (p, _) in queue.drain(..ready) {
            point = Some(match point.take() {
                Some(older) => {
                    let mut p = p;
                    p.absorb(older);
                    p
                }
                None => p,
            });
        }
        if let Some(p) = point {
            match p.run() {
                Ok(upto) => {
                    model.durable = model.durable.max(upto);
                    if durability == Durability::Always {
                        model.acked = model.durable;
                    }
                }
                Err(e) => return stopped(fs, &mut log, "a sync point", e, stats),
            }
        }
        if let Durability::Interval(n) = durability {
            if *now_ms - last_point_ms >= n {
                match log.sync_point() {
                    Ok(p) => queue.push_back((p, *now_ms + rng.below(MAX_SYNC_MS + 1))),
                    Err(e) => return stopped(fs, &mut log, "taking a sync point", e, stats),
                }
                last_point_ms = *now_ms;
            }
        }
        match rng.below(10) {
            0..=6 => {
                let n = 1 + rng.below(6);
                let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                    .map(|_| {
                        let key = format!("ch{}", rng.below(5)).into_bytes();
                        let len = if rng.chance(1, 10) {
                            1000 + rng.below(7000)
                        } else {
                            rng.below(120)
                        };
                        (key, (0..len).map(|_| rng.next() as u8).collect())
                    })
                    .collect();
                let timestamp = *now_ms * 1_000_000;
                let entries: Vec<Entry<'_>> = batch
                    .iter()
                    .map(|(k, v)| Entry {
                        timestamp,
                        key: k,
                        value: v,
                    })
                    .collect();
                let first = match log.append(&entries) {
                    Ok(first) => first,
                    Err(e) => return stopped(fs, &mut log, "an append", e, stats),
                };
                if first != model.next {
                    return Err(format!(
                        "append returned offset {first}, expected {}",
                        model.next
                    ));
                }
                for (i, (key, value)) in batch.into_iter().enumerate() {
                    model.expect.insert(
                        first + i as u64,
                        Expect::Record {
                            timestamp,
                            key,
                            value,
                            appended_ms: *now_ms,
                        },
                    );
                }
                model.next += n;
                stats.appended += n;
                match durability {
                    Durability::Always => match log.sync_point() {
                        Ok(p) => queue.push_back((p, *now_ms + rng.below(MAX_SYNC_MS + 1))),
                        Err(e) => return stopped(fs, &mut log, "taking a sync point", e, stats),
                    },
                    Durability::Interval(_) | Durability::Never => model.acked = model.next,
                }
            }
            7 => {
                let done = log.enforce_retention(*now_ms * 1_000_000);
                // Even when the power failed in the middle: the segments it took out of the
                // log may be gone from the disk too.
                model.start = log.start_offset();
                if let Err(e) = done {
                    return stopped(fs, &mut log, "retention", e, stats);
                }
            }
            8 if durability == Durability::Never && rng.chance(1, 4) => {
                // What a clean shutdown does under `never`.
                match log.sync() {
                    Ok(()) => model.durable = model.next,
                    Err(e) => return stopped(fs, &mut log, "a sync", e, stats),
                }
            }
            _ => {}
        }
        if fs.is_dead() {
            break;
        }
    }
    Ok(())
}

/// Ends a workload on an error: the power failing, or an injected fsync failure, after which
/// the log must be poisoned; anything else is a bug.
fn stopped(
    fs: &SimFs,
    log: &mut Log,
    what: &str,
    e: Error,
    stats: &mut Stats,
) -> Result<(), String> {
    if fs.is_dead() {
        return Ok(());
    }
    if !log.is_poisoned() {
        return Err(format!(
            "{what} failed with the power on and no fsync failure: {e}"
        ));
    }
    stats.failed_fsyncs += 1;
    must_refuse_writes(log)
}

/// After a failed fsync the kernel may have dropped the pages: the log must refuse to go on.
fn must_refuse_writes(log: &mut Log) -> Result<(), String> {
    let e = Entry {
        timestamp: 1,
        key: b"k",
        value: b"v",
    };
    if !log.is_poisoned()
        || !matches!(log.append(&[e]), Err(Error::Poisoned))
        || !matches!(log.sync_point(), Err(Error::Poisoned))
        || !matches!(log.sync(), Err(Error::Poisoned))
    {
        return Err("the log accepted writes after a failed fsync".into());
    }
    Ok(())
}

/// Compares the recovered log with the model, then makes the model what is on disk now.
fn check_recovered(
    log: &Log,
    model: &mut Model,
    durability: Durability,
    power_failed_ms: u64,
    stats: &mut Stats,
) -> Result<(), String> {
    let (start, next) = (log.start_offset(), log.next_offset());
    let rep = log.recovery();
    stats.quarantines += rep.quarantined.len() as u64;
    stats.truncations += u64::from(rep.truncated_bytes > 0);
    if start > model.start {
        return Err(format!(
            "the start offset moved up from {} to {start}: records lost outside retention",
            model.start
        ));
    }
    if next < model.durable {
        return Err(format!(
            "offsets {next}..{} were covered by a completed fsync and are gone ({rep:?})",
            model.durable
        ));
    }
    let reader = log.reader();
    let mut records = Vec::new();
    while (start + records.len() as u64) < next {
        let from = start + records.len() as u64;
        let got = reader
            .read(from, 1000, usize::MAX)
            .map_err(|e| format!("reading from {from}: {e}"))?;
        if got.is_empty() {
            return Err(format!(
                "reading from {from} returned nothing before {next}"
            ));
        }
        records.extend(got);
    }
    for (i, r) in records.iter().enumerate() {
        let offset = start + i as u64;
        if r.offset != offset {
            return Err(format!("offset {} where {offset} belongs", r.offset));
        }
        if r.is_lost() {
            let earlier = model.expect.get(&offset) == Some(&Expect::Lost);
            if offset < model.durable && !earlier {
                return Err(format!(
                    "offset {offset} was covered by a completed fsync and is now a lost-record \
                     placeholder ({rep:?})"
                ));
            }
            continue;
        }
        match model.expect.get(&offset) {
            Some(Expect::Record {
                timestamp,
                key,
                value,
                ..
            }) => {
                if r.timestamp != *timestamp || r.key[..] != key[..] || r.value[..] != value[..] {
                    return Err(format!(
                        "offset {offset} holds a record other than the one appended there"
                    ));
                }
                if offset < model.durable {
                    stats.checked_durable += 1;
                }
            }
            Some(Expect::Lost) => {
                return Err(format!("offset {offset} was lost earlier and came back"));
            }
            None => return Err(format!("offset {offset} holds a record never appended")),
        }
    }
    // Acknowledged, not covered by a completed fsync, and gone (not by retention).
    for offset in model.durable.max(start)..model.acked {
        let gone = offset >= next
            || records
                .get((offset - start) as usize)
                .is_some_and(|r| r.is_lost());
        if !gone {
            continue;
        }
        stats.lost_acknowledged += 1;
        match durability {
            Durability::Always => {
                return Err(format!(
                    "fsync = always: offset {offset} was acknowledged and is gone"
                ))
            }
            Durability::Interval(n) => {
                let appended = match model.expect.get(&offset) {
                    Some(Expect::Record { appended_ms, .. }) => *appended_ms,
                    _ => power_failed_ms,
                };
                let age = power_failed_ms - appended;
                if age > lost_at_most(n) {
                    return Err(format!(
                        "interval:{n}ms lost offset {offset}, acknowledged {age} ms before the \
                         power failed (at most {} ms may be lost)",
                        lost_at_most(n)
                    ));
                }
            }
            Durability::Never => {}
        }
    }
    model.expect.split_off(&next);
    for r in records.iter().filter(|r| r.is_lost()) {
        model.expect.insert(r.offset, Expect::Lost);
    }
    model.start = start;
    model.next = next;
    model.durable = next;
    model.acked = next;
    Ok(())
}

/// Runs the seeds for one durability mode (chosen per seed by `mode`); a failure names its
/// seed.
fn simulate(name: &str, mode: fn(&mut Rng) -> Durability) -> Stats {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let (first, count) = match env("TICKWIRE_SIM_SEED") {
        Some(seed) => (seed, 1),
        None => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (t, env("TICKWIRE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS))
        }
    };
    let mut stats = Stats::default();
    for seed in first..first.saturating_add(count) {
        let outcome = catch_unwind(AssertUnwindSafe(|| run(seed, mode, &mut stats)));
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .map_or_else(|| "panic".into(), |p| format!("panic: {p}")),
        };
        panic!(
            "power-loss simulation ({name}) failed for seed {seed}: {failure}\n\
             replay: TICKWIRE_SIM_SEED={seed} cargo test -p tickwire-log --lib power_loss"
        );
    }
    eprintln!("{name}: {count} seeds from {first}: {stats:?}");
    stats
}

#[test]
fn fsync_always_keeps_every_acknowledged_record_through_power_loss() {
    let stats = simulate("fsync = always", |_| Durability::Always);
    // A run must exercise what it claims to check (not when replaying one seed).
    if std::env::var("TICKWIRE_SIM_SEED").is_err() {
        assert!(stats.checked_durable > 1000, "{stats:?}");
        assert!(stats.power_failures > 100, "{stats:?}");
        // Expected ~20, ~60 and ~50 in 400 seeds (6000-seed runs: 294, 987, 722). Quarantines
        // are too rare here (~5) to require; tests/recovery.rs covers them directly.
        assert!(stats.in_recovery > 0, "{stats:?}");
        assert!(
            stats.failed_fsyncs > 0 && stats.truncations > 0,
            "{stats:?}"
        );
    }
}

#[test]
fn fsync_interval_loses_at_most_its_window_through_power_loss() {
    let stats = simulate("fsync = interval:N", |rng| {
        Durability::Interval(1 + rng.below(50))
    });
    if std::env::var("TICKWIRE_SIM_SEED").is_err() {
        assert!(stats.lost_acknowledged > 0, "{stats:?}");
        assert!(stats.checked_durable > 1000, "{stats:?}");
    }
}

#[test]
fn fsync_never_recovers_a_consistent_log_through_power_loss() {
    let stats = simulate("fsync = never", |_| Durability::Never);
    if std::env::var("TICKWIRE_SIM_SEED").is_err() {
        assert!(
            stats.power_failures > 100 && stats.appended > 1000,
            "{stats:?}"
        );
    }
}

/// A new log, and directories created on the way to it, survive power loss once a sync has
/// acknowledged a record: fsyncing the log directory alone does not make its own entry in the
/// parent durable (the simulation found the log losing everything that way).
#[test]
fn a_new_log_and_the_directories_above_it_survive_power_loss() {
    let root = Path::new("/sim");
    let dir = root.join("data/log/chat");
    let e = Entry {
        timestamp: 1,
        key: b"k",
        value: b"v",
    };
    for seed in 0..64 {
        let fs = SimFs::new(&[root]);
        let mut log = Log::open_with(&dir, LogConfig::default(), fs.shared()).unwrap();
        log.append(&[e]).unwrap();
        log.sync().unwrap();
        let after = fs.crash(&mut Rng::new(seed));
        let log = Log::open_with(&dir, LogConfig::default(), after.shared()).unwrap();
        assert_eq!(log.next_offset(), 1, "seed {seed}: {:?}", log.recovery());
    }
}
