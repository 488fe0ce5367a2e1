#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Recovery of damaged tails: torn writes, overwritten bytes, trailing garbage.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tickwire_log::record::{self, HEADER_LEN};
use tickwire_log::{Entry, Log, LogConfig, Record};

const SEGMENT_HEADER: usize = 16;

fn value(offset: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (offset as usize * 31 + i) as u8).collect()
}

/// Appends records with the given value sizes in batches of `batch`, returns what was written.
fn write(log: &mut Log, sizes: &[usize], batch: usize) -> Vec<(u64, Vec<u8>)> {
    let mut written = Vec::new();
    for chunk in sizes.chunks(batch.max(1)) {
        let first = log.next_offset();
        let values: Vec<Vec<u8>> = chunk
            .iter()
            .enumerate()
            .map(|(i, &n)| value(first + i as u64, n))
            .collect();
        let entries: Vec<Entry<'_>> = values
            .iter()
            .map(|v| Entry {
                timestamp: 7,
                key: b"k",
                value: v,
            })
            .collect();
        assert_eq!(log.append(&entries).unwrap(), first);
        for (i, v) in values.into_iter().enumerate() {
            written.push((first + i as u64, v));
        }
    }
    written
}

fn read_all(log: &Log) -> Vec<Record> {
    let reader = log.reader();
    let mut out = Vec::new();
    let mut off = 0;
    loop {
        let batch = reader.read(off, 10_000, usize::MAX).unwrap();
        let Some(last) = batch.last() else { break };
        off = last.offset + 1;
        out.extend(batch);
    }
    out
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v.pop().unwrap()
}

/// (offset, start, end) of each record in a segment file, using the public codec.
fn layout(bytes: &[u8]) -> Vec<(u64, usize, usize)> {
    let mut pos = SEGMENT_HEADER;
    let mut out = Vec::new();
    while let Ok(d) = record::decode(&bytes[pos..]) {
        out.push((d.offset, pos, pos + d.encoded_len));
        pos += d.encoded_len;
    }
    out
}

#[derive(Debug, Clone)]
enum Damage {
    /// Cut the last segment at this fraction of its length.
    Truncate(f64),
    /// Overwrite bytes at this fraction of the last segment's length.
    Overwrite(f64, Vec<u8>),
    /// Append bytes after the last record.
    Garbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Damage::Truncate),
        (0.0..1.0f64, proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(f, b)| Damage::Overwrite(f, b)),
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(Damage::Garbage),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn damaged_tail_is_cut_at_the_first_bad_record(
        sizes in proptest::collection::vec(0usize..300, 1..120),
        batch in 1usize..20,
        small_segments: bool,
        damage in damage(),
        more in 1usize..20,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: if small_segments { 2048 } else { 64 << 20 },
            index_interval_bytes: 256,
            ..LogConfig::default()
        };
        let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
        let written = write(&mut log, &sizes, batch);
        log.sync().unwrap();
        drop(log);

        let seg = last_segment(dir.path());
        let original = std::fs::read(&seg).unwrap();
        let recs = layout(&original);
        let first_in_seg = recs.first().map_or(written.len() as u64, |r| r.0);
        let mut bytes = original.clone();
        match &damage {
            Damage::Truncate(f) => bytes.truncate((bytes.len() as f64 * f) as usize),
            Damage::Overwrite(f, b) => {
                let at = ((bytes.len() as f64 * f) as usize).max(SEGMENT_HEADER);
                for (i, x) in b.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) { *slot = *x; } else { bytes.push(*x); }
                }
            }
            Damage::Garbage(b) => bytes.extend_from_slice(b),
        }
        std::fs::write(&seg, &bytes).unwrap();

        // Records whose bytes are untouched and fully present before the first changed byte.
        let first_diff = original.iter().zip(&bytes).position(|(a, b)| a != b)
            .unwrap_or(original.len().min(bytes.len()));
        let intact = recs.iter().filter(|r| r.2 <= first_diff).count() as u64;
        let header_intact = first_diff >= SEGMENT_HEADER;
        let min_survivors = if header_intact { first_in_seg + intact } else { first_in_seg };
        // Anything from the first record that actually changed on is never served.
        let first_changed = recs.iter().find(|r| r.2 > first_diff).map_or(u64::MAX, |r| r.0);

        let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
        let got = read_all(&log);
        let n = got.len() as u64;
        prop_assert!(n >= min_survivors, "lost intact records: {n} < {min_survivors}");
        prop_assert!(n <= first_changed, "served past damage: {n} > {first_changed}");
        for (r, (off, v)) in got.iter().zip(&written) {
            prop_assert_eq!(r.offset, *off);
            prop_assert_eq!(&r.value[..], &v[..]);
            prop_assert_eq!(&r.key[..], b"k");
        }
        prop_assert_eq!(log.next_offset(), n);
        if matches!(damage, Damage::Garbage(_)) {
            prop_assert_eq!(n, written.len() as u64);
            prop_assert!(log.recovery().truncated_bytes > 0);
        }

        // Appends continue right after the survivors, and a second open finds nothing to fix.
        let extra: Vec<usize> = (0..more).map(|i| i * 7).collect();
        let appended = write(&mut log, &extra, 4);
        prop_assert_eq!(appended[0].0, n);
        log.sync().unwrap();
        drop(log);
        let log = Log::open(dir.path(), cfg).unwrap();
        prop_assert_eq!(log.recovery().truncated_bytes, 0);
        let again = read_all(&log);
        prop_assert_eq!(again.len() as u64, n + more as u64);
        for (r, (off, v)) in again.iter().skip(n as usize).zip(&appended) {
            prop_assert_eq!(r.offset, *off);
            prop_assert_eq!(&r.value[..], &v[..]);
        }
    }
}

#[test]
fn zero_filled_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    write(&mut log, &[10, 20, 30], 3);
    drop(log);
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let len = bytes.len();
    bytes.resize(len + 4096, 0); // what a crash after a size-extending write can leave
    std::fs::write(&seg, &bytes).unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let rep = log.recovery();
    assert_eq!(rep.truncated_bytes, 4096);
    assert_eq!(rep.truncated_at.as_ref().unwrap().1, len as u64);
    assert!(rep.truncation_reason.as_ref().unwrap().contains("length"));
    assert_eq!(read_all(&log).len(), 3);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len as u64);
}

#[test]
fn torn_segment_header_resets_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    write(&mut log, &[100; 30], 2);
    let next = log.next_offset();
    drop(log);
    // Simulate a crash right after a roll created the file but before its header landed.
    let seg = last_segment(dir.path());
    let kept = read_all(&Log::open(dir.path(), cfg.clone()).unwrap()).len() as u64;
    assert_eq!(kept, next);
    let base: u64 = seg.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    std::fs::write(&seg, [0x54, 0x57]).unwrap();
    let mut log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.next_offset(), base);
    assert_eq!(log.recovery().truncated_at.as_ref().unwrap().1, 0);
    write(&mut log, &[1], 1);
    assert_eq!(read_all(&log).len() as u64, base + 1);
}

#[test]
fn record_header_constant_matches_encoding() {
    let mut out = Vec::new();
    record::encode(
        0,
        &Entry {
            timestamp: 0,
            key: b"",
            value: b"",
        },
        &mut out,
    );
    assert_eq!(out.len(), HEADER_LEN);
}
