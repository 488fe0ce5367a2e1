#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Behaviour of the log through its public API: segments, index, retention, concurrency.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tickwire_log::{Entry, Error, Log, LogConfig, Record};

fn value(offset: u64) -> Vec<u8> {
    format!("value-{offset:08}-{}", "x".repeat((offset % 50) as usize)).into_bytes()
}

fn append_n(log: &mut Log, n: u64, batch: u64) {
    let mut left = n;
    while left > 0 {
        let k = left.min(batch);
        let first = log.next_offset();
        let values: Vec<Vec<u8>> = (first..first + k).map(value).collect();
        let keys: Vec<Vec<u8>> = (first..first + k)
            .map(|o| o.to_be_bytes().to_vec())
            .collect();
        let entries: Vec<Entry<'_>> = (0..k as usize)
            .map(|i| Entry {
                timestamp: 1_000 + first + i as u64,
                key: &keys[i],
                value: &values[i],
            })
            .collect();
        assert_eq!(log.append(&entries).unwrap(), first);
        left -= k;
    }
}

fn check(r: &Record) {
    assert_eq!(&r.value[..], &value(r.offset)[..], "offset {}", r.offset);
    assert_eq!(&r.key[..], &r.offset.to_be_bytes()[..]);
    assert_eq!(r.timestamp, 1_000 + r.offset);
}

fn read_all(log: &Log, from: u64) -> Vec<Record> {
    let reader = log.reader();
    let mut out = Vec::new();
    let mut off = from;
    loop {
        let batch = reader.read(off, 1000, 1 << 20).unwrap();
        let Some(last) = batch.last() else { break };
        off = last.offset + 1;
        out.extend(batch);
    }
    out
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn fresh_log_is_empty_and_named_by_base_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(log.recovery().created);
    assert_eq!((log.start_offset(), log.next_offset()), (0, 0));
    assert!(log.reader().read(0, 10, 100).unwrap().is_empty());
    assert!(dir.path().join("00000000000000000000.log").exists());
}

#[test]
fn append_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    append_n(&mut log, 1000, 37);
    log.sync().unwrap();
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 1000);
    all.iter().enumerate().for_each(|(i, r)| {
        assert_eq!(r.offset, i as u64);
        check(r);
    });
    drop(log);
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.recovery().truncated_bytes, 0);
    assert_eq!(log.recovery().records_scanned, 1000);
    assert_eq!(log.next_offset(), 1000);
    append_n(&mut log, 10, 10);
    assert_eq!(read_all(&log, 995).len(), 15);
}

#[test]
fn read_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    append_n(&mut log, 100, 7);
    let r = log.reader();
    assert_eq!(r.read(10, 5, usize::MAX).unwrap().len(), 5);
    // Always at least one record, even when it alone exceeds max_bytes.
    let one = r.read(10, 100, 1).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].offset, 10);
    // Byte budget: payload never exceeds max_bytes beyond the first record.
    let some = r.read(0, 100, 200).unwrap();
    let payload: usize = some.iter().map(|r| r.key.len() + r.value.len()).sum();
    assert!(payload <= 200 && !some.is_empty());
    assert!(r.read(100, 10, 1000).unwrap().is_empty());
    assert!(r.read(5000, 10, 1000).unwrap().is_empty());
    assert!(r.read(0, 0, 1000).unwrap().is_empty());
    // Reads starting at every offset land exactly on it (index lookup + scan).
    for from in 0..100 {
        let got = r.read(from, 3, usize::MAX).unwrap();
        assert_eq!(got[0].offset, from);
        got.iter().for_each(check);
    }
}

#[test]
fn rejects_oversized_record_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_record_bytes: 100,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg).unwrap();
    let big = vec![0u8; 101];
    let ok = vec![0u8; 10];
    let err = log
        .append(&[
            Entry {
                timestamp: 0,
                key: b"",
                value: &ok,
            },
            Entry {
                timestamp: 0,
                key: b"",
                value: &big,
            },
        ])
        .unwrap_err();
    assert!(matches!(
        err,
        Error::RecordTooLarge {
            index: 1,
            size: 101,
            max: 100
        }
    ));
    // The batch is all-or-nothing.
    assert_eq!(log.next_offset(), 0);
    assert_eq!(
        log.append(&[Entry {
            timestamp: 0,
            key: b"",
            value: &ok
        }])
        .unwrap(),
        0
    );
    assert_eq!(log.append(&[]).unwrap(), 1);
}

#[test]
fn segments_roll_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    append_n(&mut log, 2000, 10);
    log.sync().unwrap();
    let segs = segment_files(dir.path(), "log");
    assert!(segs.len() > 10, "only {} segments", segs.len());
    // Every sealed segment got an index; the active one's lives in memory.
    assert_eq!(segment_files(dir.path(), "index").len(), segs.len() - 1);
    for s in &segs {
        assert!(std::fs::metadata(s).unwrap().len() <= 4096);
    }
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 2000);
    all.iter().enumerate().for_each(|(i, r)| {
        assert_eq!(r.offset, i as u64);
        check(r);
    });
    // One read spanning many segments.
    let span = log.reader().read(3, 1500, usize::MAX).unwrap();
    assert_eq!(span.len(), 1500);
    assert_eq!(span.last().unwrap().offset, 1502);

    drop(log);
    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(log.recovery().segments, segs.len());
    assert_eq!(log.recovery().indexes_rebuilt, 0);
    assert_eq!(log.next_offset(), 2000);
    assert_eq!(read_all(&log, 0).len(), 2000);
}

#[test]
fn oversized_batch_gets_its_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    append_n(&mut log, 3, 3);
    append_n(&mut log, 200, 200); // ~10 KiB, larger than segment_bytes
    append_n(&mut log, 3, 3);
    assert_eq!(segment_files(dir.path(), "log").len(), 3);
    assert_eq!(read_all(&log, 0).len(), 206);
}

#[test]
fn missing_or_damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    append_n(&mut log, 1000, 10);
    log.sync().unwrap();
    drop(log);
    let indexes = segment_files(dir.path(), "index");
    std::fs::remove_file(&indexes[0]).unwrap();
    std::fs::write(&indexes[1], b"garbage").unwrap();
    // A structurally valid index pointing to the wrong places must not be trusted either.
    let mut bytes = std::fs::read(&indexes[2]).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x40;
    std::fs::write(&indexes[2], &bytes).unwrap();

    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(log.recovery().indexes_rebuilt, 3);
    assert!(indexes[0].exists(), "rebuilt index is written back");
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 1000);
    all.iter().for_each(check);
    for from in [0, 1, 77, 500, 999] {
        assert_eq!(log.reader().read(from, 1, 1).unwrap()[0].offset, from);
    }
}

#[test]
fn corrupt_sealed_segment_is_an_error_not_a_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    append_n(&mut log, 500, 10);
    drop(log);
    let segs = segment_files(dir.path(), "log");
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0xff; // inside the last record of a sealed segment
    std::fs::write(&segs[1], &bytes).unwrap();
    let err = Log::open(dir.path(), small()).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { ref path, .. } if *path == segs[1]),
        "{err}"
    );
}

/// Damage early in a sealed segment, before the last index interval that open checks, is not
/// repaired either: the read that reaches it fails with the file and byte, and the records
/// before it still read.
#[test]
fn damage_early_in_a_sealed_segment_is_a_read_error_not_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    append_n(&mut log, 500, 10);
    drop(log);
    let segs = segment_files(dir.path(), "log");
    let base: u64 = segs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    bytes[16 + 30] ^= 0xff; // inside the segment's first record
    std::fs::write(&segs[1], &bytes).unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    assert!(log.recovery().quarantined.is_empty());
    assert_eq!(log.recovery().truncated_bytes, 0);
    let before = log.reader().read(0, base as usize, 1 << 20).unwrap();
    assert_eq!(before.len() as u64, base, "records before the damage");
    let err = log.reader().read(base, 10, 1 << 20).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { ref path, position: 16, .. } if *path == segs[1]),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&segs[1]).unwrap(),
        bytes,
        "nothing was rewritten"
    );
}

#[test]
fn retention_by_bytes_never_deletes_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(20_000),
        ..small()
    };
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    append_n(&mut log, 2000, 10);
    let reader = log.reader();
    let planned = log.retention_cutoff(0);
    assert_eq!(log.start_offset(), 0, "planning deletes nothing");
    let removed = log.enforce_retention(0).unwrap();
    assert!(removed > 0);
    assert_eq!(
        log.start_offset(),
        planned,
        "the plan is what enforcement did"
    );
    let total: u64 = segment_files(dir.path(), "log")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(total <= 20_000, "{total}");
    assert!(segment_files(dir.path(), "log").len() >= 2);
    let start = log.start_offset();
    assert!(start > 0);
    assert_eq!(reader.start_offset(), start);
    // Reads before the start are clamped up to it.
    let got = reader.read(0, 5, usize::MAX).unwrap();
    assert_eq!(got[0].offset, start);
    let all = read_all(&log, 0);
    assert_eq!(all.len() as u64, 2000 - start);
    all.iter().for_each(check);
    // A tiny bound deletes everything but the active segment.
    drop(log);
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            retention_bytes: Some(1),
            ..cfg
        },
    )
    .unwrap();
    assert_eq!(log.start_offset(), start);
    log.enforce_retention(0).unwrap();
    assert_eq!(segment_files(dir.path(), "log").len(), 1);
    assert_eq!(segment_files(dir.path(), "index").len(), 0);
    assert_eq!(log.next_offset(), 2000);
    append_n(&mut log, 5, 5);
    assert_eq!(read_all(&log, 0).last().unwrap().offset, 2004);
}

#[test]
fn retention_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_age: Some(Duration::from_nanos(100)),
        ..small()
    };
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    append_n(&mut log, 1000, 10); // timestamps 1000..2000
    let segs_before = segment_files(dir.path(), "log").len();
    // Nothing is older than 100 ns at t=1000+100.
    assert_eq!(log.enforce_retention(1_100).unwrap(), 0);
    assert_eq!(log.retention_cutoff(1_100), 0);
    // At t=1600 the segments whose newest record is < 1500 go.
    let planned = log.retention_cutoff(1_600);
    let removed = log.enforce_retention(1_600).unwrap();
    assert_eq!(log.start_offset(), planned);
    assert!(removed > 0 && removed < segs_before);
    let start = log.start_offset();
    let first = log.reader().read(0, 1, 1).unwrap();
    assert_eq!(first[0].offset, start);
    // The previous segment's newest record was older than the cut-off; this one's is not.
    assert!(1_000 + start > 1_400);
    // Sealed segments remember their newest timestamp across reopen (index header).
    drop(log);
    let mut log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.enforce_retention(1_600).unwrap(), 0);
    assert_eq!(
        log.enforce_retention(u64::MAX).unwrap(),
        segs_before - removed - 1
    );
    assert_eq!(log.start_offset(), read_all(&log, 0)[0].offset);
}

#[test]
fn reader_survives_segment_deleted_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            retention_bytes: Some(1),
            ..small()
        },
    )
    .unwrap();
    append_n(&mut log, 500, 10);
    let reader = log.reader();
    let before = reader.read(0, 10, usize::MAX).unwrap();
    assert_eq!(before[0].offset, 0);
    log.enforce_retention(0).unwrap();
    // Offset 10 is gone: the reader skips ahead to the oldest retained record, no error.
    let after = reader.read(10, 10, usize::MAX).unwrap();
    assert_eq!(after[0].offset, log.start_offset());
    after.iter().for_each(check);
}

#[test]
fn concurrent_readers_never_see_partial_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 512,
        retention_bytes: Some(256 * 1024),
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg).unwrap();
    const TOTAL: u64 = 50_000;
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let reader = log.reader();
            std::thread::spawn(move || {
                let mut next = 0u64;
                let mut seen = 0u64;
                while next < TOTAL {
                    let batch = reader.read(next, 256, 64 * 1024).unwrap();
                    assert!(reader.next_offset() >= next);
                    for r in &batch {
                        // Skips only happen by retention, and only forward.
                        assert!(r.offset >= next, "went back: {} < {next}", r.offset);
                        check(r);
                        next = r.offset + 1;
                        seen += 1;
                    }
                    if batch.is_empty() {
                        std::thread::yield_now();
                    }
                }
                seen
            })
        })
        .collect();
    let mut appended = 0;
    while appended < TOTAL {
        append_n(&mut log, 100.min(TOTAL - appended), 100);
        appended += 100;
        if (appended / 100) & 63 == 0 {
            log.enforce_retention(0).unwrap();
        }
    }
    for h in readers {
        assert!(h.join().unwrap() > 0);
    }
}

#[test]
fn log_and_reader_are_send_and_sync_as_promised() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Log>();
    send_sync::<tickwire_log::LogReader>();
}

/// Pipelined group commit: sync points run on another thread while the owner keeps appending
/// (and rolling segments); each covers exactly what was appended before it was taken.
#[test]
fn sync_points_run_on_another_thread_while_appending() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<tickwire_log::SyncPoint>();
    let syncer = std::thread::spawn(move || {
        let mut covered = Vec::new();
        while let Ok(p) = rx.recv() {
            covered.push(p.run().unwrap());
        }
        covered
    });
    let mut expected = Vec::new();
    for _ in 0..50 {
        append_n(&mut log, 37, 37);
        let p = log.sync_point().unwrap();
        assert_eq!(p.upto(), log.next_offset());
        expected.push(p.upto());
        tx.send(p).unwrap();
    }
    drop(tx);
    assert_eq!(syncer.join().unwrap(), expected);
    // Points merge: the newest keeps its own reach.
    append_n(&mut log, 5, 5);
    let older = log.sync_point().unwrap();
    append_n(&mut log, 5, 5);
    let mut newer = log.sync_point().unwrap();
    newer.absorb(older);
    assert_eq!(newer.run().unwrap(), log.next_offset());
    assert!(!log.is_poisoned());
    drop(log);
    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(log.next_offset(), 50 * 37 + 10);
    read_all(&log, 0).iter().for_each(check);
}
