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
    /// Overwrite bytes at this fraction of the last segment's length (may run past its end).
    Overwrite(f64, Vec<u8>),
    /// Flip one bit at this fraction of the last segment's length.
    Flip(f64, u8),
    /// Zero this many bytes from this fraction on (a lost page reads back as zeroes).
    Zeroes(f64, usize),
    /// Append bytes after the last record.
    Garbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Damage::Truncate),
        (0.0..1.0f64, proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(f, b)| Damage::Overwrite(f, b)),
        (0.0..1.0f64, 0u8..8).prop_map(|(f, bit)| Damage::Flip(f, bit)),
        (0.0..1.0f64, 1usize..600).prop_map(|(f, n)| Damage::Zeroes(f, n)),
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(Damage::Garbage),
    ]
}

/// Applies `damage` to a segment's bytes; never touches the 16-byte header except by cutting.
fn apply(original: &[u8], damage: &Damage) -> Vec<u8> {
    let mut bytes = original.to_vec();
    let at = |f: &f64| ((original.len() as f64 * f) as usize).max(SEGMENT_HEADER);
    match damage {
        Damage::Truncate(f) => bytes.truncate((bytes.len() as f64 * f) as usize),
        Damage::Overwrite(f, b) => {
            let at = at(f);
            for (i, x) in b.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = *x;
                } else {
                    bytes.push(*x);
                }
            }
        }
        Damage::Flip(f, bit) => {
            let at = at(f).min(bytes.len() - 1);
            bytes[at] ^= 1 << bit;
        }
        Damage::Zeroes(f, n) => {
            let at = at(f);
            let end = (at + n).min(bytes.len());
            bytes[at.min(end)..end].fill(0);
        }
        Damage::Garbage(b) => bytes.extend_from_slice(b),
    }
    bytes
}

/// What recovery must do to a segment whose records (`recs`, from the undamaged bytes) were
/// changed into `damaged`, derived from the bytes alone: every record with a changed byte is
/// lost; a run of such records followed by an intact record is quarantined (byte range from
/// the run's first record to the intact one, its offsets); a run that reaches the end of the
/// segment is a torn tail and cut, like anything past the original end.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    lost: Vec<u64>,
    quarantined: Vec<(std::ops::Range<u64>, std::ops::Range<u64>)>,
    cut_at: Option<usize>,
    next_offset: u64,
}

fn expected(original: &[u8], damaged: &[u8], recs: &[(u64, usize, usize)], base: u64) -> Expected {
    let changed =
        |r: &(u64, usize, usize)| r.2 > damaged.len() || original[r.1..r.2] != damaged[r.1..r.2];
    let mut e = Expected {
        next_offset: recs.last().map_or(base, |r| r.0 + 1),
        ..Expected::default()
    };
    if damaged.len() < SEGMENT_HEADER {
        e.cut_at = Some(0);
        e.next_offset = base;
        return e;
    }
    let mut run: Option<usize> = None; // index of the first record of the current damaged run
    for (i, r) in recs.iter().enumerate() {
        if changed(r) {
            run.get_or_insert(i);
            continue;
        }
        if let Some(first) = run.take() {
            let (f, g) = (recs[first], recs[i]);
            e.quarantined.push((f.1 as u64..g.1 as u64, f.0..g.0));
            e.lost.extend(f.0..g.0);
        }
    }
    let end = recs.last().map_or(SEGMENT_HEADER, |r| r.2);
    if let Some(first) = run {
        // Torn tail: cut at the run's first record; those offsets are simply gone.
        e.next_offset = recs[first].0;
        // A cut exactly at a record boundary leaves nothing to cut.
        e.cut_at = (recs[first].1 < damaged.len()).then_some(recs[first].1);
    } else if damaged.len() != end {
        e.cut_at = Some(end);
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn damage_in_the_active_segment_loses_exactly_the_records_it_touched(
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
        let base: u64 = seg.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let original = std::fs::read(&seg).unwrap();
        let recs = layout(&original);
        let damaged = apply(&original, &damage);
        std::fs::write(&seg, &damaged).unwrap();
        let want = expected(&original, &damaged, &recs, base);

        let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
        let rep = log.recovery().clone();
        let n = log.next_offset();
        prop_assert_eq!(n, want.next_offset);
        let got: Vec<(std::ops::Range<u64>, std::ops::Range<u64>)> = rep
            .quarantined
            .iter()
            .map(|q| (q.bytes.clone(), q.offsets.clone()))
            .collect();
        prop_assert_eq!(&got, &want.quarantined);
        for q in &rep.quarantined {
            // The quarantine copy holds exactly the damaged bytes.
            let copy = std::fs::read(&q.copy).unwrap();
            prop_assert_eq!(&copy[..], &damaged[q.bytes.start as usize..q.bytes.end as usize]);
            prop_assert_eq!(&q.segment, &seg);
        }
        prop_assert_eq!(rep.lost_records(), want.lost.len() as u64);
        prop_assert_eq!(rep.truncated_at.as_ref().map(|t| t.1 as usize), want.cut_at);
        let cut = want.cut_at.map_or(0, |at| damaged.len() - at);
        prop_assert_eq!(rep.truncated_bytes, cut as u64);

        // Every offset below next is readable: lost ones as placeholders, all others exactly as
        // written, at their own offsets.
        let all = read_all(&log);
        prop_assert_eq!(all.len() as u64, n);
        for (r, (off, v)) in all.iter().zip(&written) {
            prop_assert_eq!(r.offset, *off);
            if want.lost.contains(off) {
                prop_assert!(r.is_lost(), "offset {} should be a placeholder", off);
            } else {
                prop_assert!(!r.is_lost());
                prop_assert_eq!(&r.value[..], &v[..]);
                prop_assert_eq!(&r.key[..], b"k");
            }
        }

        // Appends continue right after the survivors, and a second open finds nothing to fix.
        let extra: Vec<usize> = (0..more).map(|i| i * 7).collect();
        let appended = write(&mut log, &extra, 4);
        prop_assert_eq!(appended[0].0, n);
        log.sync().unwrap();
        drop(log);
        let log = Log::open(dir.path(), cfg).unwrap();
        prop_assert_eq!(log.recovery().truncated_bytes, 0);
        prop_assert!(log.recovery().quarantined.is_empty());
        let again = read_all(&log);
        prop_assert_eq!(again.len() as u64, n + more as u64);
        prop_assert_eq!(
            again.iter().filter(|r| r.is_lost()).count(),
            want.lost.len()
        );
        for (r, (off, v)) in again.iter().skip(n as usize).zip(&appended) {
            prop_assert_eq!(r.offset, *off);
            prop_assert_eq!(&r.value[..], &v[..]);
        }
    }
}

/// Issue 14, defect 4: one flipped byte at 10 % of the active segment used to cut the segment
/// there, silently dropping every acknowledged record after it.
#[test]
fn one_flipped_byte_in_the_active_segment_loses_one_record_not_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let written = write(&mut log, &[60; 2000], 100);
    log.sync().unwrap();
    drop(log);
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let recs = layout(&bytes);
    let at = bytes.len() / 10;
    let hit = *recs.iter().find(|r| r.1 <= at && at < r.2).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let all = read_all(&log);
    assert_eq!(log.next_offset(), 2000, "records after the damage are kept");
    assert_eq!(all.len(), 2000);
    for (r, (off, v)) in all.iter().zip(&written) {
        assert_eq!(r.offset, *off);
        if *off == hit.0 {
            assert!(r.is_lost(), "the damaged record is a placeholder");
        } else {
            assert_eq!(&r.value[..], &v[..], "offset {off}");
        }
    }
    let rep = log.recovery();
    assert_eq!(rep.truncated_bytes, 0, "{rep:?}");
    assert_eq!(rep.quarantined.len(), 1, "{rep:?}");
    let q = &rep.quarantined[0];
    assert_eq!(q.offsets, hit.0..hit.0 + 1);
    assert_eq!(q.bytes, hit.1 as u64..hit.2 as u64);
    assert_eq!(rep.lost_records(), 1);
    assert_eq!(rep.quarantined_bytes(), (hit.2 - hit.1) as u64);
    assert!(q.reason.contains("checksum"), "{}", q.reason);
    assert_eq!(
        q.copy,
        dir.path()
            .join("quarantine")
            .join(format!("00000000000000000000-{:020}.bad", hit.1))
    );
    assert_eq!(std::fs::read(&q.copy).unwrap(), &bytes[hit.1..hit.2]);
    // The placeholder fills the damaged record's bytes exactly: positions did not move.
    let after = std::fs::read(&seg).unwrap();
    assert_eq!(after.len(), bytes.len());
    assert_eq!(after[hit.2..], bytes[hit.2..]);
}

/// Every single-byte flip in a small active segment: the record holding it is lost (a
/// placeholder, quarantined) unless it is the last one, which is indistinguishable from a torn
/// write and cut; nothing else changes.
#[test]
fn a_flip_anywhere_in_the_active_segment_loses_only_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let written = write(&mut log, &[0, 5, 40, 1, 13], 2);
    log.sync().unwrap();
    drop(log);
    let seg = last_segment(dir.path());
    let original = std::fs::read(&seg).unwrap();
    let recs = layout(&original);
    let last = *recs.last().unwrap();
    for at in SEGMENT_HEADER..original.len() {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&seg, &bytes).unwrap();
        let _ = std::fs::remove_dir_all(dir.path().join("quarantine"));
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let hit = *recs.iter().find(|r| r.1 <= at && at < r.2).unwrap();
        let rep = log.recovery();
        let all = read_all(&log);
        if hit == last {
            assert_eq!(log.next_offset(), last.0, "byte {at}");
            assert_eq!(rep.truncated_at.as_ref().unwrap().1, last.1 as u64);
            assert!(rep.quarantined.is_empty());
        } else {
            assert_eq!(log.next_offset(), written.len() as u64, "byte {at}");
            assert_eq!(rep.truncated_bytes, 0, "byte {at}: {rep:?}");
            assert_eq!(rep.quarantined.len(), 1, "byte {at}");
            assert_eq!(rep.quarantined[0].offsets, hit.0..hit.0 + 1, "byte {at}");
        }
        for (r, (off, v)) in all.iter().zip(&written) {
            assert_eq!(r.offset, *off);
            assert_eq!(r.is_lost(), *off == hit.0, "byte {at}, offset {off}");
            if !r.is_lost() {
                assert_eq!(&r.value[..], &v[..], "byte {at}, offset {off}");
            }
        }
        drop(log);
        std::fs::write(&seg, &original).unwrap();
    }
}

/// A second quarantine of the same range (new damage on a placeholder) keeps the first copy:
/// the evidence of the original loss is never overwritten.
#[test]
fn a_second_quarantine_at_the_same_place_keeps_the_first_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    write(&mut log, &[30; 10], 10);
    log.sync().unwrap();
    drop(log);
    let seg = last_segment(dir.path());
    let recs = layout(&std::fs::read(&seg).unwrap());
    let at = recs[3].1 + 20;
    let mut copies = Vec::new();
    for _ in 0..2 {
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[at] ^= 0x10;
        std::fs::write(&seg, &bytes).unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let q = &log.recovery().quarantined;
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].offsets, 3..4);
        assert_eq!(
            std::fs::read(&q[0].copy).unwrap(),
            &bytes[recs[3].1..recs[3].2]
        );
        copies.push((q[0].copy.clone(), bytes[recs[3].1..recs[3].2].to_vec()));
    }
    assert_ne!(copies[0].0, copies[1].0);
    assert!(copies[1].0.to_str().unwrap().ends_with(".1.bad"));
    for (path, bytes) in &copies {
        assert_eq!(&std::fs::read(path).unwrap(), bytes);
    }
}

/// A damaged segment header with records after it is corruption, not a torn segment creation:
/// the header is rewritten (its bytes quarantined) and the records kept.
#[test]
fn damaged_header_with_records_after_it_is_quarantined_not_reset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let written = write(&mut log, &[10, 20, 30], 3);
    log.sync().unwrap();
    drop(log);
    let seg = last_segment(dir.path());
    let original = std::fs::read(&seg).unwrap();
    let recs = layout(&original);

    // Only the header: no record is lost.
    let mut bytes = original.clone();
    bytes[1] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let rep = log.recovery();
    assert_eq!(rep.quarantined.len(), 1, "{rep:?}");
    assert_eq!(rep.quarantined[0].bytes, 0..SEGMENT_HEADER as u64);
    assert!(rep.quarantined[0].offsets.is_empty());
    assert_eq!(rep.truncated_bytes, 0);
    assert_eq!(read_all(&log).len(), 3);
    drop(log);
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        original,
        "the header is rewritten"
    );

    // The header and the first record zeroed (a lost page): that record is lost, not the rest.
    let mut bytes = original.clone();
    bytes[..recs[0].2].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let rep = log.recovery();
    assert_eq!(rep.quarantined.len(), 1, "{rep:?}");
    assert_eq!(rep.quarantined[0].bytes, 0..recs[1].1 as u64);
    assert_eq!(rep.quarantined[0].offsets, 0..1);
    let all = read_all(&log);
    assert_eq!(all.len(), 3);
    assert!(all[0].is_lost());
    assert_eq!(&all[1].value[..], &written[1].1[..]);
    assert_eq!(&all[2].value[..], &written[2].1[..]);
}

#[test]
fn another_format_version_is_refused_not_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    write(&mut log, &[10, 20], 2);
    drop(log);
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[4] = 2;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Log::open(dir.path(), LogConfig::default()).unwrap_err();
    assert!(err.to_string().contains("version 2"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was changed");
}

#[test]
fn an_entry_that_would_read_as_a_placeholder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let lost = Entry {
        timestamp: record::LOST_TIMESTAMP,
        key: b"",
        value: b"v",
    };
    let ok = Entry { key: b"k", ..lost };
    assert!(matches!(
        log.append(&[ok, lost]),
        Err(tickwire_log::Error::ReservedRecord { index: 1 })
    ));
    assert_eq!(
        log.append(&[ok]).unwrap(),
        0,
        "a key makes it an ordinary record"
    );
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
