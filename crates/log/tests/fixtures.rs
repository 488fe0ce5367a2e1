//! The log's raw v1 format, frozen in `tests/fixtures/log-v1/data/log/chat/` (a namespace log
//! the embedded stream wrote; see `tests/fixtures/README.md`): segment headers, the sealed
//! segment's index file and every record's framing, read with today's codec and today's
//! [`Log::open`]. The record values (the stream's msg_id header and data) are the stream
//! crate's and are checked in full by `crates/stream/tests/fixtures.rs`, which also holds the
//! generator. A failure here is a log format change: bump `FORMAT_VERSION`, keep reading v1
//! and add a new fixture beside this one.
//!
//! Also `tests/fixtures/log-v1-lost/`: a log after recovery quarantined a damaged record — the
//! lost-record placeholder it left in the segment and the quarantine copy — written by
//! `regenerate_lost_record_fixture` here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use tickwire_log::{record, Log, LogConfig};

/// 2025-01-01T00:00:00Z, Unix nanoseconds: the first batch's timestamp.
const T0: u64 = 1_735_689_600_000_000_000;

fn chat_log() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/log-v1/data/log/chat")
}

/// Per record: offset, timestamp, key, and the value's first two bytes (the stream's record
/// version 1 and the msg_id length).
fn expected() -> Vec<(u64, u64, &'static str, [u8; 2])> {
    let t1 = T0 + 1_000_000_000;
    let t2 = T0 + 2_500_000_123;
    vec![
        (0, T0, "chat.lobby", [1, 6]),
        (1, T0, "chat.support", [1, 0]),
        (2, T0, "chat.lobby", [1, 6]),
        (3, T0, "chat.room-7", [1, 6]),
        (4, T0, "chat.support", [1, 0]),
        (5, T0, "chat.lobby", [1, 0]),
        (6, t1, "chat.lobby", [1, 6]),
        (7, t1, "chat.room-7", [1, 0]),
        (8, t1, "chat.support", [1, 128]),
        (9, t2, "chat.lobby", [1, 0]),
        (10, t2, "chat.lobby", [1, 6]),
    ]
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap())
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap())
}

#[test]
fn log_v1_segments_index_and_records_decode_with_todays_codec() {
    let dir = chat_log();
    let mut decoded = Vec::new();
    // Two segments: 0..6 sealed (4 KiB segments; its first batch was larger), 6..11 active.
    for (base, len, count) in [(0u64, 5026usize, 6usize), (6, 539, 5)] {
        let bytes = std::fs::read(dir.join(format!("{base:020}.log"))).unwrap();
        assert_eq!(bytes.len(), len, "segment {base}");
        assert_eq!(&bytes[0..4], b"TWLG");
        assert_eq!(le32(&bytes[4..8]), 1, "format version");
        assert_eq!(le64(&bytes[8..16]), base);
        let mut at = 16;
        let mut n = 0;
        while at < bytes.len() {
            let d = record::decode(&bytes[at..]).unwrap();
            decoded.push((
                d.offset,
                d.timestamp,
                String::from_utf8(d.key.to_vec()).unwrap(),
                [d.value[0], d.value[1]],
                at,
            ));
            at += d.encoded_len;
            n += 1;
        }
        assert_eq!(at, len);
        assert_eq!(n, count, "segment {base}");
    }
    let got: Vec<(u64, u64, String, [u8; 2])> = decoded
        .iter()
        .map(|(o, t, k, v, _)| (*o, *t, k.clone(), *v))
        .collect();
    let want: Vec<(u64, u64, String, [u8; 2])> = expected()
        .into_iter()
        .map(|(o, t, k, v)| (o, t, k.to_string(), v))
        .collect();
    assert_eq!(got, want);

    // The sealed segment's index: header, then one (offset, position) entry for offset 5,
    // the first record after 4096 bytes of records.
    let index = std::fs::read(dir.join("00000000000000000000.index")).unwrap();
    assert_eq!(index.len(), 32 + 16);
    assert_eq!(&index[0..4], b"TWIX");
    assert_eq!(le32(&index[4..8]), 1, "format version");
    assert_eq!(le64(&index[8..16]), 0, "base offset");
    assert_eq!(le64(&index[16..24]), T0, "max timestamp");
    assert_eq!(le32(&index[24..28]), 1, "entries");
    assert_eq!(le32(&index[28..32]), crc32c_of(&index[32..]));
    let position_of_5 = decoded[5].4 as u64;
    assert_eq!(position_of_5, 4958);
    assert_eq!(le64(&index[32..40]), 5);
    assert_eq!(le64(&index[40..48]), position_of_5);
    assert!(!dir.join("00000000000000000006.index").exists(), "active");
}

/// CRC-32C (Castagnoli) bit by bit: an independent check of the index checksum.
fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn log_v1_opens_and_reads_with_todays_log() {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(chat_log()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let log = Log::open(tmp.path(), LogConfig::default()).unwrap();
    let r = log.recovery();
    assert_eq!(r.segments, 2);
    assert_eq!(r.truncated_bytes, 0, "{:?}", r.truncation_reason);
    assert_eq!(
        r.indexes_rebuilt, 0,
        "the v1 index must be read, not rebuilt"
    );
    assert!(!r.created);
    assert_eq!((log.start_offset(), log.next_offset()), (0, 11));
    let records = log.reader().read(0, 100, usize::MAX).unwrap();
    let got: Vec<(u64, u64, String, [u8; 2])> = records
        .iter()
        .map(|r| {
            (
                r.offset,
                r.timestamp,
                String::from_utf8(r.key.to_vec()).unwrap(),
                [r.value[0], r.value[1]],
            )
        })
        .collect();
    let want: Vec<(u64, u64, String, [u8; 2])> = expected()
        .into_iter()
        .map(|(o, t, k, v)| (o, t, k.to_string(), v))
        .collect();
    assert_eq!(got, want);
    // A read from offset 5 starts at the index entry.
    let from5 = log.reader().read(5, 1, usize::MAX).unwrap();
    assert_eq!(from5[0].offset, 5);
}

/// The log-v1-lost fixture: a segment whose record 2 was damaged and quarantined.
fn lost_log() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/log-v1-lost")
}

/// The records the lost-record fixture was written with.
fn lost_fixture_value(n: u64) -> Vec<u8> {
    format!("{{\"n\":{n},\"text\":\"record {n} of the lost-record fixture\"}}").into_bytes()
}

/// Copies a directory tree (the log may repair what it opens; fixtures are never changed).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn log_v1_lost_placeholder_and_quarantine_copy_read_with_todays_log() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&lost_log(), tmp.path());
    let seg = std::fs::read(tmp.path().join("00000000000000000000.log")).unwrap();
    // The placeholder's frozen shape: an ordinary v1 record with an empty key, timestamp
    // u64::MAX and a zero-padded value, exactly as long as the record it replaced.
    let mut at = 16;
    let mut layout = Vec::new();
    while at < seg.len() {
        let d = record::decode(&seg[at..]).unwrap();
        layout.push((
            d.offset,
            at,
            d.encoded_len,
            d.timestamp,
            d.key.to_vec(),
            d.value.to_vec(),
        ));
        at += d.encoded_len;
    }
    assert_eq!(layout.len(), 5);
    let (offset, position, len, ts, key, value) = layout[2].clone();
    assert_eq!((offset, ts), (2, u64::MAX));
    assert!(key.is_empty());
    assert!(value.iter().all(|&b| b == 0));
    assert_eq!(
        len,
        record::HEADER_LEN + b"chat.lobby".len() + lost_fixture_value(2).len()
    );
    // The quarantine copy holds the damaged record: its bytes, one bit flipped.
    let copy = tmp
        .path()
        .join("quarantine")
        .join(format!("00000000000000000000-{position:020}.bad"));
    let bad = std::fs::read(&copy).unwrap();
    assert_eq!(bad.len(), len);
    assert!(matches!(
        record::decode(&bad),
        Err(record::DecodeError::Corrupt(
            record::CorruptKind::Checksum { .. }
        ))
    ));
    let mut repaired = bad.clone();
    *repaired.last_mut().unwrap() ^= 0x01;
    let d = record::decode(&repaired).unwrap();
    assert_eq!(
        (d.offset, d.timestamp, d.key),
        (2, T0 + 2, &b"chat.lobby"[..])
    );
    assert_eq!(d.value, &lost_fixture_value(2)[..]);

    // Today's log reads it as it is: nothing to repair, offset 2 lost, the rest exact.
    let log = Log::open(tmp.path(), LogConfig::default()).unwrap();
    let r = log.recovery();
    assert_eq!(r.truncated_bytes, 0);
    assert!(r.quarantined.is_empty());
    assert_eq!(log.next_offset(), 5);
    let records = log.reader().read(0, 10, usize::MAX).unwrap();
    assert_eq!(records.len(), 5);
    for (n, rec) in records.iter().enumerate() {
        let n = n as u64;
        assert_eq!(rec.offset, n);
        assert_eq!(rec.is_lost(), n == 2);
        if n != 2 {
            assert_eq!((rec.timestamp, &rec.key[..]), (T0 + n, &b"chat.lobby"[..]));
            assert_eq!(rec.value[..], lost_fixture_value(n)[..]);
        }
    }
}

/// Writes `tests/fixtures/log-v1-lost`: five records, a flipped bit in record 2's last byte,
/// and what recovery made of it. Refuses to write into a directory that exists:
/// `cargo test -p tickwire-log --test fixtures -- --ignored regenerate_lost_record_fixture`
#[test]
#[ignore = "writes tests/fixtures; run only when adding a new format version"]
fn regenerate_lost_record_fixture() {
    let out = lost_log();
    assert!(
        !out.exists(),
        "{} exists: fixtures are frozen; write a new version beside it",
        out.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut log = Log::open(tmp.path(), LogConfig::default()).unwrap();
    for n in 0..5 {
        let value = lost_fixture_value(n);
        log.append(&[tickwire_log::Entry {
            timestamp: T0 + n,
            key: b"chat.lobby",
            value: &value,
        }])
        .unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let seg = tmp.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mut at = 16;
    for _ in 0..3 {
        at += record::decode(&bytes[at..]).unwrap().encoded_len;
    }
    bytes[at - 1] ^= 0x01; // the last byte of record 2
    std::fs::write(&seg, &bytes).unwrap();
    let log = Log::open(tmp.path(), LogConfig::default()).unwrap();
    assert_eq!(log.recovery().lost_records(), 1);
    drop(log);
    copy_tree(tmp.path(), &out);
    println!("wrote {}", out.display());
}
