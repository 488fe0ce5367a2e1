//! Arbitrary bytes as the only segment file: open (recovery: torn tails cut, damage with valid
//! records after it quarantined) and a full read never panic, and whatever is served is
//! contiguous from offset 0 and survives a reopen unchanged, with nothing left to repair.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_log::{record, Entry, Log, LogConfig};

fuzz_target!(|data: &[u8]| {
    // Setup failures panic: a target that returned early here would pass while fuzzing nothing.
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Most inputs get a valid header and some valid records (checksums make those unreachable
    // by blind mutation), followed by raw fuzz bytes as the damaged tail.
    let mut bytes = Vec::new();
    let mode = data.first().copied().unwrap_or(0);
    if mode & 1 == 1 {
        bytes.extend_from_slice(b"TWLG");
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        let valid = usize::from(mode >> 1);
        let mut rest = &data[1..];
        for offset in 0..valid as u64 {
            let Some((&len, tail)) = rest.split_first() else {
                break;
            };
            let len = usize::from(len % 32).min(tail.len());
            let (value, tail) = tail.split_at(len);
            record::encode(
                offset,
                &Entry {
                    timestamp: offset,
                    key: b"",
                    value,
                },
                &mut bytes,
            );
            rest = tail;
        }
        bytes.extend_from_slice(rest);
    } else {
        bytes.extend_from_slice(data);
    }
    std::fs::write(dir.path().join("00000000000000000000.log"), &bytes).expect("writing the segment");
    let cfg = LogConfig {
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    // A lone segment is always recoverable (a bad header is a torn segment creation and is
    // recreated; a bad tail is truncated): failing to open it is a finding. The one exception
    // is on purpose: the segment magic with another format version is a newer build's data,
    // which recovery must refuse rather than "repair" (a torn header write of this build can
    // only leave a prefix of version 1).
    let other_version = bytes.len() >= 8
        && bytes[0..4] == *b"TWLG"
        && bytes[4..8] != 1u32.to_le_bytes();
    let opened = Log::open(dir.path(), cfg.clone());
    if other_version {
        match opened {
            Err(tickwire_log::Error::Corrupt { reason, .. }) => {
                assert!(reason.contains("segment format version"), "{reason}");
                return;
            }
            Err(e) => panic!("another format version refused with the wrong error: {e}"),
            Ok(_) => panic!("a segment of another format version was opened"),
        }
    }
    let mut log = opened.expect("recovery opens any single segment");
    let reader = log.reader();
    let mut next = 0;
    loop {
        let recs = reader.read(next, 100, 1 << 20).expect("reading what recovery kept");
        let Some(last) = recs.last() else { break };
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.offset, next + i as u64);
        }
        next = last.offset + 1;
    }
    assert_eq!(next, log.next_offset());
    // Appends continue after recovery, and a reopen finds nothing more to repair.
    let first = log
        .append(&[Entry {
            timestamp: 1,
            key: b"k",
            value: b"v",
        }])
        .ok();
    assert_eq!(first, Some(next));
    drop(log);
    let log = Log::open(dir.path(), cfg);
    let log = log.ok();
    assert_eq!(log.as_ref().map(|l| l.recovery().truncated_bytes), Some(0));
    assert_eq!(log.as_ref().map(|l| l.recovery().quarantined.len()), Some(0));
    assert_eq!(log.map(|l| l.next_offset()), Some(next + 1));
});
